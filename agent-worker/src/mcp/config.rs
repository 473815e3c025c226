//! What the agent CLI is told about its tools: an MCP config file (Claude Code's
//! `--mcp-config` shape) naming the worker's card server ([`crate::proposals`]) and one HTTP
//! server per granted Tool at the worker's loopback endpoint, and the allow-list
//! (`${allowedTools}`). Neither holds a credential: the endpoint adds the dispatch token on the
//! way out.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};
use vexa_core::pod::GrantedTool;

/// The MCP config file's name in the agent's config folder.
pub const FILE_NAME: &str = "vexa-mcp.json";

/// `{"mcpServers": {"vexa_cards": {"type": "http", "url": <cards_url>}, "<tool>": {"type":
/// "http", "url": "http://127.0.0.1:<port>/tools/<tool>"}, …}}`: the card server always, the
/// granted Tools when `tools` reach the agent (the endpoint's address and the Tools).
pub fn mcp_config(cards_url: &str, tools: Option<(SocketAddr, &[GrantedTool])>) -> Value {
    let mut servers = Map::new();
    servers.insert(
        crate::proposals::SERVER.to_owned(),
        json!({"type": "http", "url": cards_url}),
    );
    for (addr, t) in tools
        .into_iter()
        .flat_map(|(a, ts)| ts.iter().map(move |t| (a, t)))
    {
        servers.insert(
            t.name.clone(),
            json!({"type": "http", "url": super::local_url(addr, &t.name)}),
        );
    }
    json!({ "mcpServers": servers })
}

/// Claude Code's names of the card tool and the granted tools, comma separated:
/// `mcp__<server>__<tool>` with every character outside `[A-Za-z0-9_-]` as `_` (its
/// normalisation of MCP names); a Tool whose MCP name is unknown allows its whole server
/// (`mcp__<server>`), which serves that one Tool.
pub fn allowed_tools(tools: &[GrantedTool]) -> String {
    let cards = format!(
        "mcp__{}__{}",
        crate::proposals::SERVER,
        crate::proposals::TOOL
    );
    std::iter::once(cards)
        .chain(tools.iter().map(|t| match &t.tool_name {
            Some(name) => format!("mcp__{}__{}", normalise(&t.name), normalise(name)),
            None => format!("mcp__{}", normalise(&t.name)),
        }))
        .collect::<Vec<_>>()
        .join(",")
}

fn normalise(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Writes `config` ([`mcp_config`]) into `dir` (the agent's config folder, which the agent
/// container reads); returns its path.
pub fn write(dir: &Path, config: &Value) -> std::io::Result<PathBuf> {
    // Before the agent's first turn: nothing of the agent's is in the folder yet.
    std::fs::create_dir_all(dir)?;
    let path = dir.join(FILE_NAME);
    let text = serde_json::to_string_pretty(config).map_err(std::io::Error::other)?;
    // Replace, never follow: the folder is shared with the agent, which could have left a link
    // there (a new file only; O_EXCL does not follow a link put back in between).
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn tools() -> Vec<GrantedTool> {
        vec![
            GrantedTool {
                name: "notes-append".into(),
                tool_name: Some("notes.append".into()),
            },
            GrantedTool {
                name: "legacy".into(),
                tool_name: None,
            },
        ]
    }

    #[test]
    fn one_server_per_tool_at_the_loopback_endpoint_and_no_credential() {
        let addr: SocketAddr = "127.0.0.1:7390".parse().unwrap();
        let config = mcp_config("http://127.0.0.1:7391/vexa/cards", Some((addr, &tools())));
        assert_eq!(
            config,
            json!({"mcpServers": {
                "vexa_cards": {"type": "http", "url": "http://127.0.0.1:7391/vexa/cards"},
                "notes-append": {"type": "http", "url": "http://127.0.0.1:7390/tools/notes-append"},
                "legacy": {"type": "http", "url": "http://127.0.0.1:7390/tools/legacy"},
            }})
        );
        let text = config.to_string().to_lowercase();
        for secret in ["authorization", "bearer", "token", "headers"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }

    #[test]
    fn allowed_tools_use_claude_codes_names() {
        assert_eq!(
            allowed_tools(&tools()),
            "mcp__vexa_cards__propose,mcp__notes-append__notes_append,mcp__legacy"
        );
        assert_eq!(allowed_tools(&[]), "mcp__vexa_cards__propose");
        assert_eq!(
            mcp_config("http://c", None),
            json!({"mcpServers": {"vexa_cards": {"type": "http", "url": "http://c"}}})
        );
    }

    #[test]
    fn a_link_left_in_the_folder_is_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(FILE_NAME)).unwrap();
        let config = mcp_config("http://127.0.0.1:1/vexa/cards", None);
        let path = write(dir.path(), &config).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert!(
            std::fs::read_to_string(path)
                .unwrap()
                .contains("mcpServers")
        );
    }
}
