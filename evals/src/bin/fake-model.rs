//! fake-model: the evals' Anthropic Messages API endpoint on its own, to try an agent CLI by
//! hand. It answers from a script (a JSON list of steps, see `vexa_evals::fake_model::Step`)
//! and prints each request it gets as one JSON line.
//!
//! ```text
//! cargo run -p vexa-evals --bin fake-model -- 127.0.0.1:8089 script.json
//! ANTHROPIC_BASE_URL=http://127.0.0.1:8089 ANTHROPIC_API_KEY=x claude -p -- "edit a.md"
//! ```

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use vexa_evals::fake_model::{FakeModel, Step};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:8089".into());
    let script: Vec<Step> = match args.next() {
        Some(path) => serde_json::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{path}: {e}")),
        None => vec![Step::Text {
            text: "hello from the fake model".into(),
        }],
    };
    let model = FakeModel::start(&addr, script).await;
    eprintln!("fake model at {}", model.url);
    let mut printed = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        for seen in model.seen().iter().skip(printed) {
            let headers: serde_json::Map<String, serde_json::Value> = seen
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").into()))
                .collect();
            println!(
                "{}",
                serde_json::json!({"path": seen.path, "headers": headers, "body": seen.body})
            );
            printed += 1;
        }
    }
}
