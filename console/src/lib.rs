//! The Vexa web console: one server that renders pages for people, and streams a dispatch's
//! output to their browser live.
//!
//! Who you are is what the cluster says of the token you sign in with ([`cluster`]); every
//! page and action is then a request to the API server *as you*, so RBAC and admission decide
//! exactly as they would for `kubectl`, and the console needs no rights of its own. The browser
//! holds only a session cookie ([`session`]); every write carries the session's CSRF token and
//! comes from the console's own origin ([`guard`]). Agent output reaches the page as data and
//! is painted as text, never as HTML ([`pages`], `assets/console.js`), under a Content Security
//! Policy that allows only the console's own script.
//!
//! Layers: [`cluster`] (the API server as the person), [`session`], [`guard`] (headers, origin,
//! CSRF, who is signed in), [`oidc`] (sign-in at the cluster's OpenID provider), [`pages`]
//! (HTML), [`live`] (a dispatch's stream as server-sent
//! events, resumable by `Last-Event-ID`), [`knowledge`] (a workspace's files, history, diffs
//! and uploads, through the streams API), [`routes`] (the handlers).

pub mod cluster;
pub mod cookie;
pub mod guard;
pub mod health;
pub mod knowledge;
pub mod live;
pub mod oidc;
pub mod pages;
pub mod routes;
pub mod session;

use std::sync::Arc;

/// What every handler needs.
#[derive(Clone, Debug)]
pub struct App {
    /// Where the API server is.
    pub api: cluster::ApiServer,
    /// Who is signed in.
    pub sessions: session::Sessions,
    /// The namespace pages open on when none is chosen.
    pub default_namespace: Arc<str>,
    /// Sign-in at the cluster's OpenID provider, if the console has one.
    pub oidc: Option<Arc<oidc::Oidc>>,
}

pub use routes::router;
