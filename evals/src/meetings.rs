//! A meeting for the evals: the golden transcript (`evals/testdata/standup-transcript.jsonl`)
//! replayed into a meeting's Redis stream `tc:meeting:<id>`, as the transcription service
//! writes it.

use crate::{cluster_env, repo_root};

/// The meeting id the golden transcript was recorded with.
pub const GOLDEN_SESSION: &str = "kxq-mtng-std";

/// The golden transcript's payloads, with the meeting id `meeting` in place of the golden's.
pub fn golden(meeting: &str) -> Vec<String> {
    std::fs::read_to_string(repo_root().join("evals/testdata/standup-transcript.jsonl"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.replace(GOLDEN_SESSION, meeting))
        .collect()
}

/// Appends one entry (field `payload`) to `stream` in the cluster's Redis.
pub async fn xadd(stream: &str, payload: &str) {
    let redis = redis::Client::open(cluster_env("REDIS_URL")).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(stream)
        .arg("*")
        .arg("payload")
        .arg(payload)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// Replays the whole golden meeting into `tc:meeting:<meeting>`.
pub async fn replay(meeting: &str) {
    let stream = format!("tc:meeting:{meeting}");
    for entry in golden(meeting) {
        xadd(&stream, &entry).await;
    }
}
