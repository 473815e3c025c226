//! redis-acl-bench: what a dispatch's own Redis user costs the operator, against the cluster's
//! Redis (append-only, fsync on every write, as `hack/cluster` runs it). Prints figures; asserts
//! nothing.
//!
//! ```text
//! eval "$(hack/cluster env)"
//! cargo run --release -p vexa-evals --bin redis-acl-bench -- --users 200
//! ```
//!
//! For each of `--users` dispatches, one after the other: the create (library, `ACL SETUSER`,
//! `PERSIST` of its streams: one round trip, what a dispatch's start waits for), then the
//! remove (`ACL DELUSER`, `EXPIRE`); p50/p95/max of each. The users are the bench's own
//! (namespace `acl-bench-<pid>`) and all removed at the end.

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::{Duration, Instant};

use clap::Parser;
use vexa_evals::cluster_env;
use vexa_operator::redis_users::{DispatchKey, RedisUsers};

/// Benchmark of the dispatches' Redis users.
#[derive(Parser, Debug)]
struct Args {
    /// How many dispatches' users to create and remove.
    #[arg(long, default_value_t = 200)]
    users: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort();
    println!(
        "{what}: n={} p50={:.2} ms p95={:.2} ms max={:.2} ms",
        times.len(),
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.95).as_secs_f64() * 1e3,
        times.last().unwrap().as_secs_f64() * 1e3,
    );
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let client = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let users = RedisUsers::new(
        client,
        b"redis-acl-bench".to_vec(),
        Some(Duration::from_secs(60)),
    );
    let namespace = format!("acl-bench-{}", std::process::id());
    let dispatches: Vec<DispatchKey> = (0..args.users)
        .map(|i| DispatchKey {
            namespace: namespace.clone(),
            name: format!("d{i}"),
            uid: format!("uid-{i}"),
        })
        .collect();
    // One warm-up: the admin connection is made once per operator, not per dispatch.
    users.create(&dispatches[0]).await.unwrap();
    let mut created = Vec::with_capacity(args.users);
    for d in &dispatches {
        let started = Instant::now();
        users.create(d).await.unwrap();
        created.push(started.elapsed());
    }
    let mut removed = Vec::with_capacity(args.users);
    for d in &dispatches {
        let started = Instant::now();
        users.remove(d).await.unwrap();
        removed.push(started.elapsed());
    }
    report(
        "create a dispatch's Redis user (as a start waits for it)",
        created,
    );
    report(
        "remove it at the end (user and its connections, stream retention)",
        removed,
    );
}
