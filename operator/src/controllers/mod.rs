//! One folder per kind the operator reconciles, and `run_all`, which runs them together.

pub mod card;
pub mod dispatch;
pub mod identity;
pub mod runner;
pub mod schedule;
pub mod subjects;
pub mod tool;
pub mod transcript;
pub mod workspace;

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;

use crate::runtime::context::Context;
use crate::runtime::keycloak::Keycloak;

/// Runs every controller until `shutdown` resolves and each has stopped. `ready` turns true
/// once the Dispatch controller's caches are filled. With `keycloak`, Identities' subjects are
/// linked in it and Tools' audiences checked; without, Identities have nothing to link and
/// `AudienceKnown` stays Unknown.
pub async fn run_all(
    ctx: Context,
    ready: tokio::sync::watch::Sender<bool>,
    keycloak: Option<Arc<Keycloak>>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = Box::pin(shutdown).shared();
    futures::join!(
        dispatch::run(ctx.clone(), ready, shutdown.clone()),
        workspace::run(ctx.clone(), shutdown.clone()),
        runner::run(ctx.clone(), shutdown.clone()),
        card::run(ctx.clone(), shutdown.clone()),
        tool::run(
            ctx.clone(),
            keycloak.clone().map(|k| k as Arc<dyn tool::Audiences>),
            shutdown.clone()
        ),
        transcript::run(ctx.clone(), shutdown.clone()),
        schedule::run(ctx.clone(), shutdown.clone()),
        subjects::run(
            ctx,
            keycloak.map(|k| k as Arc<dyn subjects::Directory>),
            shutdown
        ),
    );
}
