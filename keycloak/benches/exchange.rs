//! `cargo bench -p vexa-keycloak --bench exchange`: what the MCP gateway's token-cache miss costs
//! against the local cluster's Keycloak (`eval "$(hack/cluster env)"` first; without
//! VEXA_KEYCLOAK_URL it prints SKIPPED and exits 0).
//!
//! For a dispatch token it has not seen, the gateway makes two calls with one
//! [`TokenClient`] (kept-alive HTTP/1 connections): the JWT grant (RFC 7523) and the exchange to
//! the notes tool's audience (RFC 8693). After a warm-up, each of a bounded number of fresh
//! dispatch tokens (a distinct `jti` each) is traded sequentially, and the latency of the grant,
//! the exchange and the pair is printed as p50/p90/p99/max (nearest rank), with the pairs per
//! second. Minting is outside the timings.
//!
//! Like tests/keycloak.rs, it (re)points the realm's `vexa-dispatch` identity provider at its own
//! issuer, whose JWKS it serves on loopback. No cache-hit baseline: the gateway's cache
//! (gateway-filter's `TokenCache`) depends on this crate, so using it here would be a cycle.

#[allow(unreachable_pub, dead_code)]
#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{NOTES, claims, env, now, trusted_issuer};
use vexa_keycloak::TokenClient;
use vexa_policy::token::mint;

/// Pairs before measuring (connections, Keycloak's JIT and key cache).
const WARMUP: usize = 10;
/// Pairs measured, unless the time budget runs out first.
const PAIRS: usize = 200;
/// Measuring stops after this long, whatever the count.
const BUDGET: Duration = Duration::from_secs(50);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("VEXA_KEYCLOAK_URL").is_none() {
        println!("SKIPPED: VEXA_KEYCLOAK_URL is unset (eval \"$(hack/cluster env)\")");
        return Ok(());
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(cache_miss())
}

/// One pair's timings: the grant, the exchange.
type Pair = (Duration, Duration);

async fn cache_miss() -> Result<(), Box<dyn std::error::Error>> {
    let e = env();
    let issuer = trusted_issuer(&e, "alice").await;
    let gateway = TokenClient::new(&e.url, &e.realm, &e.client, &e.secret)?;
    let run = format!("{}", now());
    let mut measured: Vec<Pair> = Vec::with_capacity(PAIRS);
    let mut start = Instant::now();
    for i in 0..WARMUP + PAIRS {
        if i == WARMUP {
            start = Instant::now();
        } else if i > WARMUP && start.elapsed() > BUDGET {
            println!("time budget of {BUDGET:?} spent after {} pairs", i - WARMUP);
            break;
        }
        let t = now();
        let mut c = claims(&issuer.issuer, &issuer.audience, "alice", t, t + 600);
        c.jti = format!("bench/{run}/{i}");
        let token = mint(&issuer.keys, &c)?;

        let t0 = Instant::now();
        let subject = gateway.jwt_grant(&token).await?;
        let t1 = Instant::now();
        let tool = gateway
            .exchange(&subject.access_token, NOTES, Some(NOTES))
            .await?;
        let t2 = Instant::now();
        if tool.access_token.is_empty() || tool.expires_in.is_zero() {
            return Err("the exchange answered no usable token".into());
        }
        if i >= WARMUP {
            measured.push((t1 - t0, t2 - t1));
        }
    }
    let wall = start.elapsed();

    let n = measured.len();
    println!(
        "token-cache miss against Keycloak at {} (realm {}), {n} fresh dispatch tokens after \
         {WARMUP} warm-up pairs, sequential, one kept-alive client:",
        e.url, e.realm
    );
    let grant: Vec<Duration> = measured.iter().map(|p| p.0).collect();
    let exchange: Vec<Duration> = measured.iter().map(|p| p.1).collect();
    let pair: Vec<Duration> = measured.iter().map(|p| p.0 + p.1).collect();
    for (label, v) in [
        ("JWT grant (RFC 7523)", grant),
        ("exchange (RFC 8693)", exchange),
        ("pair", pair.clone()),
    ] {
        print_percentiles(label, v);
    }
    let busy: Duration = pair.iter().sum();
    println!(
        "  {:.1} pairs/s sequentially ({:.1} counting minting and the loop: {n} in {:.2} s)",
        n as f64 / busy.as_secs_f64(),
        n as f64 / wall.as_secs_f64(),
        wall.as_secs_f64()
    );
    Ok(())
}

fn print_percentiles(label: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rank = |p: f64| {
        let r = (p * v.len() as f64).ceil() as usize;
        ms(v[r.clamp(1, v.len()) - 1])
    };
    println!(
        "  {label:<22} p50 {:>7.2} ms  p90 {:>7.2} ms  p99 {:>7.2} ms  max {:>7.2} ms",
        rank(0.50),
        rank(0.90),
        rank(0.99),
        ms(v[v.len() - 1])
    );
}
