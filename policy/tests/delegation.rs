//! Property tests of `delegation::authorize`: whatever a schedule or integration asks for and
//! whatever its grant says, an accepted scope is never wider than the grant, and asking for
//! exactly the grant is accepted.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use proptest::prelude::*;
use vexa_core::{Grant, WorkspaceMode};
use vexa_policy::delegation::authorize;
use vexa_policy::token::MAX_TOKEN_LIFETIME;
use vexa_policy::{DelegatedWorkspace, DelegationRequest, GrantFacts, ToolFacts};

const WORKSPACES: [&str; 4] = ["notes", "drafts", "inbox", "secrets"];
const TOOLS: [&str; 5] = ["search", "email-send", "calendar", "shell", "wiki"];
const LAUNCHERS: [&str; 2] = ["schedule:team/nightly", "integration:email"];

fn mode() -> impl Strategy<Value = WorkspaceMode> {
    prop_oneof![
        Just(WorkspaceMode::ReadOnly),
        Just(WorkspaceMode::ReadWrite)
    ]
}

fn rank(m: WorkspaceMode) -> u8 {
    match m {
        WorkspaceMode::ReadOnly => 0,
        WorkspaceMode::ReadWrite => 1,
    }
}

fn names(pool: &'static [&'static str]) -> impl Strategy<Value = Vec<String>> {
    proptest::sample::subsequence(pool, 0..=pool.len())
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

fn grant() -> impl Strategy<Value = GrantFacts> {
    (
        proptest::sample::select(&LAUNCHERS[..]),
        proptest::sample::subsequence(&WORKSPACES[..], 1..=WORKSPACES.len()),
        proptest::collection::vec(mode(), WORKSPACES.len()),
        names(&TOOLS),
        proptest::option::of(0u64..20_000),
        proptest::option::of(60u64..=86_400),
    )
        .prop_map(|(launcher, ws, modes, tools, expires, max)| GrantFacts {
            name: "g".into(),
            launcher: launcher.into(),
            workspaces: ws.into_iter().map(String::from).zip(modes).collect(),
            tools,
            expires: expires.map(|e| 10_000 + e),
            max_token_lifetime: max.map(Duration::from_secs),
        })
}

fn request() -> impl Strategy<Value = DelegationRequest> {
    (
        proptest::sample::select(&LAUNCHERS[..]),
        proptest::collection::vec(
            (
                proptest::sample::select(&WORKSPACES[..]),
                mode(),
                any::<bool>(),
            ),
            0..5,
        ),
        proptest::collection::vec(proptest::sample::select(&TOOLS[..]), 0..6),
        proptest::option::of(0u64..100_000),
    )
        .prop_map(|(launcher, ws, tools, lifetime)| DelegationRequest {
            launcher: launcher.into(),
            workspaces: ws
                .into_iter()
                .map(|(name, mode, asked)| DelegatedWorkspace {
                    name: name.into(),
                    mode,
                    asked,
                })
                .collect(),
            tools: tools.into_iter().map(String::from).collect(),
            lifetime: lifetime.map(Duration::from_secs),
        })
}

/// Facts for some of the tools (the others are unknown to the policy).
fn facts() -> impl Strategy<Value = Vec<ToolFacts>> {
    proptest::collection::vec(proptest::option::of(any::<bool>()), TOOLS.len()).prop_map(|v| {
        TOOLS
            .iter()
            .zip(v)
            .filter_map(|(name, gate)| {
                gate.map(|gate| ToolFacts {
                    name: name.to_string(),
                    grant: if gate { Grant::Gate } else { Grant::Auto },
                    irreversible: gate,
                })
            })
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4096,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn an_accepted_scope_is_never_wider_than_the_grant(
        r in request(),
        g in grant(),
        tools in facts(),
        now in 0u64..40_000,
    ) {
        let Ok(scope) = authorize(&r, &g, &tools, now) else { return Ok(()) };
        prop_assert_eq!(&r.launcher, &g.launcher);
        prop_assert!(g.expires.is_none_or(|e| now < e));
        prop_assert_eq!(scope.workspaces.len(), r.workspaces.len());
        for (claim, asked) in scope.workspaces.iter().zip(&r.workspaces) {
            prop_assert_eq!(&claim.name, &asked.name);
            let allowed = g.workspaces.iter().find(|(w, _)| *w == claim.name).map(|(_, m)| *m);
            prop_assert!(allowed.is_some(), "{} is not in the grant", claim.name);
            prop_assert!(rank(claim.mode) <= rank(allowed.unwrap()), "wider than the grant");
            prop_assert!(rank(claim.mode) <= rank(asked.mode), "wider than the trust rules");
        }
        for t in &scope.tools {
            prop_assert!(g.tools.contains(t), "{t} is not in the grant");
        }
        for t in &scope.gated_tools {
            prop_assert!(scope.tools.contains(t));
        }
        for t in &scope.tools {
            let auto = tools.iter().any(|f| &f.name == t && f.grant == Grant::Auto);
            prop_assert!(auto || scope.gated_tools.contains(t), "{t} lost its gate");
        }
        let max = g.max_token_lifetime.unwrap_or(MAX_TOKEN_LIFETIME).min(MAX_TOKEN_LIFETIME);
        prop_assert_eq!(scope.iat, now);
        prop_assert!(scope.exp <= now + max.as_secs());
        prop_assert!(g.expires.is_none_or(|e| scope.exp <= e));
        prop_assert!(scope.exp > scope.iat || r.lifetime == Some(Duration::ZERO));
    }

    #[test]
    fn asking_for_exactly_the_grant_is_accepted(g in grant(), tools in facts(), now in 0u64..10_000) {
        // Every generated grant expires at 10 000 or later.
        let r = DelegationRequest {
            launcher: g.launcher.clone(),
            workspaces: g
                .workspaces
                .iter()
                .map(|(name, mode)| DelegatedWorkspace { name: name.clone(), mode: *mode, asked: true })
                .collect(),
            tools: g.tools.clone(),
            lifetime: Some(g.max_token_lifetime()),
        };
        let scope = authorize(&r, &g, &tools, now).unwrap();
        let modes: Vec<_> = scope.workspaces.iter().map(|w| (w.name.clone(), w.mode)).collect();
        prop_assert_eq!(modes, g.workspaces.clone());
        prop_assert_eq!(&scope.tools, &g.tools);
    }
}
