//! What the operator serves and the CLI reads: every chain it holds with the keys that sign
//! them, and one dispatch's records. Typed once, here, for both sides.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::line::{Body, Line};

/// Every writer's chain as written, and the published keys (a JWKS) to verify them with.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Export {
    /// Writer → its chain's complete lines (a line being written is left out).
    pub chains: BTreeMap<String, String>,
    /// The JWKS the checkpoints verify against.
    pub jwks: vexa_policy::token::Jwks,
}

/// One dispatch's records, from every writer, in the order each writer wrote them.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct DispatchAudit {
    /// The Dispatch's namespace.
    pub namespace: String,
    /// Its name (records of earlier Dispatches of that name are included; their UIDs differ).
    pub name: String,
    /// The records.
    pub records: Vec<Line>,
}

/// The chains in `dir`: each `<writer>.jsonl`, cut after its last complete line.
pub fn read_chains(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut chains = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let Some(writer) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".jsonl"))
        else {
            continue;
        };
        let mut text = std::fs::read_to_string(&path)?;
        text.truncate(text.rfind('\n').map_or(0, |i| i + 1));
        chains.insert(writer.to_owned(), text);
    }
    Ok(chains)
}

/// The records of the Dispatch `namespace/name` in `chains`, every writer's interleaved by time
/// (each writer's own order kept for equal times), so a run's tool calls read between its
/// admission and its end. Lines that do not parse are left to `verify` to name.
pub fn records_of(chains: &BTreeMap<String, String>, namespace: &str, name: &str) -> Vec<Line> {
    let mut records: Vec<Line> = chains
        .values()
        .flat_map(|text| text.lines())
        .filter_map(|l| serde_json::from_str::<Line>(l).ok())
        .filter(|l| match &l.body {
            Body::Record { effect, .. } => {
                effect.dispatch.namespace == namespace && effect.dispatch.name == name
            }
            _ => false,
        })
        .collect();
    // Every writer stamps RFC 3339 UTC with milliseconds: the text sorts as the time does.
    records.sort_by(|a, b| a.time.cmp(&b.time));
    records
}
