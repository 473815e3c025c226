//! Recorded transcripts of an agent CLI's output and the unit events they must become.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use rstest::rstest;
use vexa_agent_worker::{TurnId, UnitEvent, parser};
use vexa_core::StreamFormat;

#[rstest]
#[case::claude_write_file("claude-write-file", StreamFormat::ClaudeStreamJson)]
fn transcripts_become_the_golden_events(#[case] name: &str, #[case] format: StreamFormat) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let input = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
    let golden = std::fs::read_to_string(dir.join(format!("{name}.events.jsonl"))).unwrap();
    let mut p = parser(format, TurnId(0));
    let mut got: Vec<UnitEvent> = input.lines().flat_map(|l| p.line(l)).collect();
    got.extend(p.finish(Some(0)));
    let want: Vec<UnitEvent> = golden
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(got, want);
    let encoded: Vec<String> = got.iter().map(UnitEvent::to_json).collect();
    assert_eq!(encoded.join("\n"), golden.trim_end(), "byte-exact JSON");
}
