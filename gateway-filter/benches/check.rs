//! `cargo bench -p vexa-gateway-filter --bench check`: what one authorization check costs.
//!
//! Part 1 (here): `decide()` on one core with the JWKS already held (a cache hit: no fetch), for
//! an allowed `tools/call` (Ed25519 verification of the dispatch token, binding, scope, Tool,
//! JSON-RPC parse, argument digest), a gated call (plus the Card's name) and a forged token
//! (refused at the key lookup), printed as checks per second and microseconds per check.
//!
//! Part 2 (with VEXA_ENVOY_BIN): the real Envoy + the filter (Keycloak faked, so every call
//! after the first is a token-cache hit) in front of a trivial upstream on loopback, over one
//! kept-alive mTLS connection, against the same upstream called directly over one kept-alive
//! connection: latency p50/p99 of each, the added latency and the ratio.

#[allow(unreachable_pub)]
#[path = "../tests/rig/mod.rs"]
mod rig;

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use vexa_gateway_filter::{Facts, Outcome, ToolView, Tools, Upstream, decide};
use vexa_policy::token::{Actor, Confirmation, DispatchClaims, KeySet, Verifier, mint};

const ISS: &str = "https://operator.vexa";
const AUD: &str = "vexa-gateway";
const POD: &str = "spiffe://vexa.local/ns/team/dispatch/d1";

struct OneNamespace;

/// A case: its label, path, `authorization` header, body and the outcome it must get.
type Case<'a> = (&'a str, &'a str, &'a str, &'a str, fn(&Outcome) -> bool);

impl Tools for OneNamespace {
    fn tool(&self, namespace: &str, name: &str) -> Option<ToolView> {
        (namespace == "team").then(|| ToolView {
            name: name.to_owned(),
            tool_name: format!("{name}.send"),
            scope: format!("{name}:send"),
            audience: format!("{name}-aud"),
            gated: false,
            upstream: Upstream {
                tls: false,
                authority: "10.0.0.5:8080".into(),
                path: "/mcp".into(),
            },
        })
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let keys = KeySet::generate(now - 60)?;
    let verifier = Verifier::new(&keys.jwks(), ISS, AUD)?;
    let claims = DispatchClaims {
        iss: ISS.into(),
        sub: "alice".into(),
        act: Actor {
            sub: "user:alice".into(),
        },
        aud: AUD.into(),
        workspaces: vec![],
        tools: vec!["notes".into(), "mail".into()],
        gated_tools: vec!["mail".into()],
        jti: "team/d1".into(),
        iat: now - 10,
        exp: now + 590,
        cnf: Confirmation {
            spiffe_id: POD.into(),
        },
    };
    let token = format!("Bearer {}", mint(&keys, &claims)?);
    let forged = format!("Bearer {}", mint(&KeySet::generate(now - 60)?, &claims)?);
    let body = |name: &str| {
        format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{{"name":"{name}","arguments":{{"text":"a note of some forty bytes, give or take"}}}}}}"#
        )
    };
    let notes = body("notes.send");
    let mail = body("mail.send");
    let cases: [Case<'_>; 3] = [
        (
            "allowed tools/call",
            "/tools/team/notes",
            &token,
            &notes,
            |o| matches!(o, Outcome::Forward { .. }),
        ),
        ("gated tools/call", "/tools/team/mail", &token, &mail, |o| {
            matches!(o, Outcome::Propose { .. })
        }),
        ("forged token", "/tools/team/notes", &forged, &notes, |o| {
            matches!(o, Outcome::Refuse(_))
        }),
    ];
    println!(
        "decide() on one core, JWKS held (cache hit), {} cases:",
        cases.len()
    );
    for (label, path, authorization, body, expected) in cases {
        let facts = Facts {
            path,
            authorization: Some(authorization),
            peer: Some(POD),
            body: body.as_bytes(),
        };
        let first = decide(&facts, &verifier, &OneNamespace, now);
        if !expected(&first.outcome) {
            return Err(format!("{label}: unexpected outcome {:?}", first.outcome).into());
        }
        // Warm up, then run for two seconds.
        for _ in 0..1_000 {
            black_box(decide(black_box(&facts), &verifier, &OneNamespace, now));
        }
        let (mut n, start) = (0u64, Instant::now());
        while start.elapsed() < Duration::from_secs(2) {
            for _ in 0..256 {
                black_box(decide(black_box(&facts), &verifier, &OneNamespace, now));
            }
            n += 256;
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "  {label:<20} {:>9.0} checks/s  {:>7.2} µs/check",
            n as f64 / secs,
            secs * 1e6 / n as f64
        );
    }
    match std::env::var("VEXA_ENVOY_BIN") {
        Ok(envoy) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(envoy_latency(envoy)),
        Err(_) => println!("part 2 skipped: VEXA_ENVOY_BIN is unset (hack/build-tools envoy)"),
    }
    Ok(())
}

/// Latency of a tools/call through Envoy + filter versus straight to the upstream.
async fn envoy_latency(envoy: String) {
    let rig = rig::Rig::start(envoy).await;
    let mut through = rig.through_envoy(rig::POD).await;
    let mut direct = rig.direct().await;
    let rounds = 3_000;
    let (mut via, mut straight) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
    for i in 0..rounds + 200 {
        let t = Instant::now();
        assert_eq!(
            rig::call(&mut through, "/tools/team/notes", &rig.token).await,
            200
        );
        let a = t.elapsed();
        let t = Instant::now();
        assert_eq!(rig::call(&mut direct, "/mcp", &rig.token).await, 200);
        let b = t.elapsed();
        // The first 200 warm the connections and the token cache.
        if i >= 200 {
            via.push(a);
            straight.push(b);
        }
    }
    let pct = |v: &mut Vec<Duration>, p: f64| {
        v.sort();
        v[((v.len() as f64 * p) as usize).min(v.len() - 1)].as_secs_f64() * 1e6
    };
    let (v50, v99) = (pct(&mut via, 0.50), pct(&mut via, 0.99));
    let (d50, d99) = (pct(&mut straight, 0.50), pct(&mut straight, 0.99));
    println!("Envoy + filter vs direct, {rounds} tools/call each, token cache hits, loopback:");
    println!("  direct          p50 {d50:>8.0} µs  p99 {d99:>8.0} µs");
    println!("  through gateway p50 {v50:>8.0} µs  p99 {v99:>8.0} µs");
    println!(
        "  added           p50 {:>8.0} µs  p99 {:>8.0} µs  (ratio p50 {:.1}x, p99 {:.1}x)",
        v50 - d50,
        v99 - d99,
        v50 / d50,
        v99 / d99
    );
}
