//! The test agent's sessions, kept like Claude Code keeps its own: one JSON-lines transcript per
//! session in `.claude/projects/<project>/<session-id>.jsonl` under the working directory, where
//! `<project>` is the working directory with every character that is not a letter or digit
//! replaced by `-`.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// One exchange of a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// What the user asked.
    pub prompt: String,
    /// What the agent replied.
    pub reply: String,
}

/// The session folder of the working directory `cwd`.
pub fn project_dir(cwd: &Path) -> PathBuf {
    let key: String = cwd
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    cwd.join(".claude/projects").join(key)
}

/// The transcript of session `id`.
pub fn transcript(cwd: &Path, id: &str) -> PathBuf {
    project_dir(cwd).join(format!("{id}.jsonl"))
}

/// Whether `id` is a session id this agent could have made (it becomes a file name).
pub fn plausible_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// The exchanges of session `id`; `None` when there is no such session.
pub fn load(cwd: &Path, id: &str) -> Option<Vec<Exchange>> {
    if !plausible_id(id) {
        return None;
    }
    let text = fs::read_to_string(transcript(cwd, id)).ok()?;
    let mut out: Vec<Exchange> = Vec::new();
    for line in text.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["type"].as_str() {
            Some("user") => out.push(Exchange {
                prompt: v["message"]["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                reply: String::new(),
            }),
            Some("assistant") => {
                if let Some(last) = out.last_mut() {
                    last.reply = v["message"]["content"][0]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned();
                }
            }
            _ => {}
        }
    }
    Some(out)
}

/// Writes session `id` with all its exchanges.
pub fn save(cwd: &Path, id: &str, exchanges: &[Exchange]) -> io::Result<()> {
    let dir = project_dir(cwd);
    fs::create_dir_all(&dir)?;
    let mut file = fs::File::create(transcript(cwd, id))?;
    for (i, e) in exchanges.iter().enumerate() {
        let user = json!({"type": "user", "sessionId": id, "uuid": uuid(&[id, "user", &i.to_string()]),
            "message": {"role": "user", "content": e.prompt}});
        let assistant = json!({"type": "assistant", "sessionId": id, "uuid": uuid(&[id, "assistant", &i.to_string()]),
            "message": {"role": "assistant", "content": [{"type": "text", "text": e.reply}]}});
        writeln!(file, "{user}")?;
        writeln!(file, "{assistant}")?;
    }
    file.sync_all()
}

/// A new session id for `cwd`: derived from the inputs (so runs are reproducible), and distinct
/// from every session already there.
pub fn new_id(cwd: &Path, parent: Option<&str>, prompt: &str) -> String {
    let cwd_text = cwd.to_string_lossy();
    (0u32..)
        .map(|n| uuid(&[&cwd_text, parent.unwrap_or(""), prompt, &n.to_string()]))
        .find(|id| !transcript(cwd, id).exists())
        .unwrap_or_default()
}

/// A UUID-shaped (version 4 layout) id hashed from `parts` with FNV-1a.
pub fn uuid(parts: &[&str]) -> String {
    let hash = |seed: u64| {
        let mut h = seed;
        for p in parts {
            for b in p.bytes().chain([0xff]) {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
        h
    };
    let (a, b) = (hash(0xcbf2_9ce4_8422_2325), hash(0x8422_2325_cbf2_9ce4));
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0x0fff,
        0x8000 | ((b >> 48) & 0x3fff),
        b & 0xffff_ffff_ffff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_folders_are_named_after_the_working_directory() {
        assert_eq!(
            project_dir(Path::new("/workspaces/my.notes")),
            PathBuf::from("/workspaces/my.notes/.claude/projects/-workspaces-my-notes")
        );
    }

    #[test]
    fn ids_are_uuid_shaped_deterministic_and_distinct() {
        let a = uuid(&["x", "y"]);
        assert_eq!(a, uuid(&["x", "y"]));
        assert_ne!(a, uuid(&["xy", ""]));
        assert_eq!(a.len(), 36);
        assert_eq!(a.as_bytes()[14], b'4');
        assert!(plausible_id(&a));
        assert!(!plausible_id("../etc"));
    }

    #[test]
    fn sessions_round_trip_and_new_ids_avoid_existing_ones() {
        let dir = tempfile::tempdir().unwrap();
        let id = new_id(dir.path(), None, "hi");
        let exchanges = vec![Exchange {
            prompt: "hi\nthere".into(),
            reply: "hello".into(),
        }];
        save(dir.path(), &id, &exchanges).unwrap();
        assert_eq!(load(dir.path(), &id), Some(exchanges));
        assert_ne!(new_id(dir.path(), None, "hi"), id);
        assert_eq!(load(dir.path(), "0000"), None);
    }
}
