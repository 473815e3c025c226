//! Reads what a Tool's decision depends on: whether its MCP server answers and whether its
//! audience is a client (and its scope a client scope) of the gateway's Keycloak realm. I/O only; both run at once, each
//! bounded by its own timeout.

use vexa_crds::Tool;

use super::Reconciler;
use super::decide::{AudienceCheck, Observed};

/// Probes `tool`'s server and looks up its audience.
pub async fn observe(ctx: &Reconciler, tool: &Tool) -> Observed {
    let reach = ctx.prober.probe(&tool.spec.server.url);
    let audience = async {
        let Some(audiences) = &ctx.audiences else {
            return AudienceCheck::NotConfigured;
        };
        let scope = &tool.spec.scope;
        let lookup = async {
            if !audiences.client_exists(&tool.spec.audience).await? {
                return Ok(AudienceCheck::Unknown);
            }
            if !scope.is_empty() && !audiences.scope_exists(scope).await? {
                return Ok(AudienceCheck::ScopeUnknown);
            }
            Ok(AudienceCheck::Known)
        };
        match tokio::time::timeout(ctx.probe_timeout, lookup).await {
            Ok(Ok(check)) => check,
            Ok(Err(why)) => AudienceCheck::Failed(why),
            Err(_) => AudienceCheck::Failed(format!(
                "no answer within {} s",
                ctx.probe_timeout.as_secs_f64()
            )),
        }
    };
    let (reach, audience) = futures::join!(reach, audience);
    Observed {
        reach,
        audience,
        directory: ctx
            .audiences
            .as_ref()
            .map_or_else(|| "no directory".to_owned(), |a| a.describe()),
    }
}
