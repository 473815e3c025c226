//! The run's dispatch token: what it claims (pure) and minting it into the run's Secret, first
//! with the Secret and then again before each token expires, for as long as the run lasts.
//!
//! The next token is minted from a fresh authorization: a grant that was narrowed, revoked or
//! has expired since the start is not renewed, and the run's token then lapses (its tools stop
//! answering; the run itself is not killed here).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use vexa_audit::Event;
use vexa_crds::Dispatch;
use vexa_policy::token::{DispatchClaims, RunIdentity, UnixTime};
use vexa_policy::{Authorization, Scope, dispatch_id, person_scope};

use super::Reconciler;
use super::error::Error;
use super::observe::Resolved;
use vexa_core::pod::layout::secret_key;

/// What the run's token claims: its identity, and its scope — the grant's (for a schedule or
/// integration) with the gated tools marked, or the person's own — never longer than the
/// operator's token lifetime.
pub fn claims(
    ctx: &Reconciler,
    d: &Dispatch,
    resolved: &Resolved,
    auth: &Authorization,
    grant: Option<Scope>,
    now: UnixTime,
) -> DispatchClaims {
    let c = &ctx.base.config;
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let tools = resolved.tool_facts();
    let lifetime = Duration::from_secs(c.token_lifetime_seconds);
    let mut scope = person_scope(auth, &d.spec.tools, &tools, now, lifetime);
    if let Some(grant) = grant {
        // The grant's modes and expiry. Its tools are the requested ones, which the person's
        // scope above already marks gated as their Tools say.
        scope.workspaces = grant.workspaces;
        scope.exp = scope.exp.min(grant.exp);
    }
    DispatchClaims::new(
        &c.token_issuer,
        &c.token_audience,
        RunIdentity {
            subject: d.spec.identity.subject.clone(),
            launcher: d.spec.identity.launcher.clone(),
            dispatch_id: dispatch_id(&ns, &name),
            spiffe_id: vexa_core::identity::spiffe_id(&c.spire_trust_domain, &ns, &name),
        },
        scope,
    )
}

/// When each live run's token is due again (by Dispatch UID). Kept in memory: after a restart
/// every live run gets a fresh token on its first reconcile, which is harmless.
#[derive(Debug, Default)]
pub struct Renewals(Mutex<HashMap<String, UnixTime>>);

impl Renewals {
    /// When `uid`'s token is due, if one was minted by this process.
    pub fn due(&self, uid: &str) -> Option<UnixTime> {
        self.0.lock().ok()?.get(uid).copied()
    }

    /// Records when `uid`'s next token is due.
    pub fn set(&self, uid: &str, at: UnixTime) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(uid.to_owned(), at);
        }
    }

    /// Forgets a run that is over.
    pub fn forget(&self, uid: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.remove(uid);
        }
    }
}

/// Mints the run's token (audited before it is handed out); `None` when the operator has no
/// signing keys. Remembers when the next one is due.
pub async fn mint(
    ctx: &Reconciler,
    d: &Dispatch,
    claims: &DispatchClaims,
    scope: vexa_audit::ScopeRecord,
) -> Result<Option<String>, Error> {
    let Some(keys) = &ctx.base.signing_keys else {
        return Ok(None);
    };
    let (token, kid) = keys.mint(claims)?;
    ctx.base
        .audit
        .record(
            d,
            scope,
            Event::TokenMinted {
                kid,
                exp: i64::try_from(claims.exp).unwrap_or(i64::MAX),
            },
        )
        .await?;
    if let Some(uid) = d.metadata.uid.as_deref() {
        ctx.renewals.set(uid, claims.refresh_at());
    }
    Ok(Some(token))
}

/// Puts a fresh token into the run's Secret (only that key: a merge patch).
pub async fn renew(ctx: &Reconciler, d: &Dispatch, token: String) -> Result<(), Error> {
    let ns = d.namespace().ok_or(Error::Malformed)?;
    let patch = Secret {
        data: Some(std::collections::BTreeMap::from([(
            secret_key::DISPATCH_TOKEN.to_owned(),
            ByteString(token.into_bytes()),
        )])),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(ctx.base.client.clone(), &ns)
        .patch(
            &vexa_policy::secret_name(&d.name_any()),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(())
}
