//! What a dispatch token costs: mint and verify (p50/p95 over many runs), and as the baseline
//! measured in the same run, one HMAC-SHA256 over the same claims bytes. Also the detached
//! signature the audit log's checkpoints use. Plain `std::time`, no harness:
//! `cargo bench -p vexa-policy --bench token [-- RUNS]`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;
use vexa_core::WorkspaceMode;
use vexa_policy::token::{
    Actor, Confirmation, DispatchClaims, KeySet, Verifier, WorkspaceClaim, mint,
};

const NOW: u64 = 1_800_000_000;

fn claims() -> DispatchClaims {
    DispatchClaims {
        iss: "https://vexa-operator.vexa-system.svc".into(),
        sub: "alice".into(),
        act: Actor {
            sub: "schedule:team/nightly".into(),
        },
        aud: "vexa-gateway".into(),
        workspaces: vec![
            WorkspaceClaim {
                name: "notes".into(),
                mode: WorkspaceMode::ReadWrite,
            },
            WorkspaceClaim {
                name: "team-wiki".into(),
                mode: WorkspaceMode::ReadOnly,
            },
        ],
        tools: vec!["email-send".into(), "search".into(), "calendar".into()],
        gated_tools: vec!["email-send".into()],
        jti: "team/nightly-20261205-0300".into(),
        iat: NOW,
        exp: NOW + 600,
        cnf: Confirmation {
            spiffe_id: "spiffe://vexa.local/ns/team/dispatch/nightly-20261205-0300".into(),
        },
    }
}

/// p50 and p95 of `runs` timings of `f`, after a short warm-up.
fn measure(runs: usize, mut f: impl FnMut()) -> (Duration, Duration) {
    for _ in 0..runs / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed()
        })
        .collect();
    times.sort();
    (times[runs / 2], times[runs * 95 / 100])
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let runs: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(5000);
    let keys = KeySet::generate(NOW).unwrap();
    let verifier = Verifier::new(&keys.jwks(), claims().iss, claims().aud).unwrap();
    let c = claims();
    let bytes = serde_json::to_vec(&c).unwrap();
    let token = mint(&keys, &c).unwrap();

    let hmac = measure(runs, || {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"a 32-byte key for the baseline..").unwrap();
        mac.update(black_box(&bytes));
        black_box(mac.finalize().into_bytes());
    });
    let minted = measure(runs, || {
        black_box(mint(&keys, black_box(&c)).unwrap());
    });
    let verified = measure(runs, || {
        black_box(verifier.verify(black_box(&token), NOW + 1).unwrap());
    });
    let jwks = keys.jwks();
    let sig = keys.sign(&bytes).unwrap();
    let signed = measure(runs, || {
        black_box(keys.sign(black_box(&bytes)).unwrap());
    });
    let checked = measure(runs, || {
        jwks.verify_detached(black_box(&bytes), &sig).unwrap();
    });

    println!(
        "dispatch token: {} bytes ({} bytes of claims JSON); {runs} runs each",
        token.len(),
        bytes.len()
    );
    println!(
        "{:<34} {:>10} {:>10} {:>12}",
        "", "p50 µs", "p95 µs", "p50 / HMAC"
    );
    for (name, (p50, p95)) in [
        ("HMAC-SHA256 over the claims", hmac),
        ("mint (EdDSA JWT)", minted),
        ("verify (EdDSA JWT, all checks)", verified),
        ("detached sign (audit checkpoint)", signed),
        ("detached verify", checked),
    ] {
        println!(
            "{name:<34} {:>10.2} {:>10.2} {:>11.1}x",
            us(p50),
            us(p95),
            us(p50) / us(hmac.0)
        );
    }
}
