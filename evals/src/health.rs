//! The Argo CD health checks of the chart (`charts/vexa/argocd/health/`), run as Argo CD runs
//! them: Lua 5.1 (Argo CD's gopher-lua speaks 5.1), the live object in the global `obj`, one
//! `{status, message}` table back. The `argocd-cm` snippet shipped in the chart's docs is built
//! here from the same files, so what is tested is what a cluster admin pastes.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use mlua::serde::SerializeOptions;
use mlua::{Lua, LuaSerdeExt, Table};
use serde_json::Value;

/// The kinds with a health check, in the order of the snippet.
pub const KINDS: [&str; 8] = [
    "AgentRunner",
    "Card",
    "Dispatch",
    "Identity",
    "Schedule",
    "Tool",
    "Transcript",
    "Workspace",
];

/// The committed `argocd-cm` snippet (checked against `snippet()` by `evals/tests/health.rs`).
pub fn snippet_path() -> PathBuf {
    crate::repo_root().join("charts/vexa/argocd/argocd-cm.yaml")
}

fn dir() -> PathBuf {
    crate::repo_root().join("charts/vexa/argocd/health")
}

/// The whole check of `kind`: the shared functions, then the kind's own script.
pub fn script(kind: &str) -> anyhow::Result<String> {
    let read = |name: &str| {
        let path = dir().join(name);
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
    };
    Ok(format!(
        "{}\n{}",
        read("common.lua")?,
        read(&format!("{kind}.lua"))?
    ))
}

/// What a health check answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// `Healthy`, `Progressing`, `Degraded`, `Suspended`, `Missing` or `Unknown`.
    pub status: String,
    /// What Argo CD shows next to it.
    pub message: String,
}

/// Runs the check of `obj`'s kind on `obj` (a live object as JSON).
pub fn check(obj: &Value) -> anyhow::Result<Health> {
    let kind = obj["kind"].as_str().context("the object has no kind")?;
    let lua = Lua::new();
    // A JSON null is an absent field to a Lua script, as in Argo CD.
    let options = SerializeOptions::new()
        .serialize_none_to_null(false)
        .serialize_unit_to_null(false);
    let value = lua.to_value_with(obj, options)?;
    lua.globals().set("obj", value)?;
    let answer: Table = lua
        .load(script(kind)?)
        .set_name(format!("{kind}.lua"))
        .eval()
        .with_context(|| format!("the {kind} health check failed"))?;
    let status: String = answer.get("status")?;
    let message: Option<String> = answer.get("message")?;
    const STATUSES: [&str; 6] = [
        "Healthy",
        "Progressing",
        "Degraded",
        "Suspended",
        "Missing",
        "Unknown",
    ];
    if !STATUSES.contains(&status.as_str()) {
        bail!("the {kind} health check answered {status:?}, which Argo CD does not know");
    }
    Ok(Health {
        status,
        message: message.unwrap_or_default(),
    })
}

/// The `argocd-cm` snippet: one `resource.customizations.health.vexa.ai_<Kind>` per kind.
pub fn snippet() -> anyhow::Result<String> {
    let mut out = String::from(
        "# Argo CD health checks for the Vexa kinds. Generated from charts/vexa/argocd/health/ by\n\
         # `VEXA_BLESS=1 cargo test -p vexa-evals --test health`; do not edit by hand.\n\
         # Merge into the argocd-cm ConfigMap of the Argo CD namespace (see charts/vexa/README.md).\n\
         apiVersion: v1\n\
         kind: ConfigMap\n\
         metadata:\n  name: argocd-cm\n  labels:\n    app.kubernetes.io/part-of: argocd\n\
         data:\n",
    );
    for kind in KINDS {
        out.push_str(&format!(
            "  resource.customizations.health.{}_{kind}: |\n",
            vexa_crds::GROUP
        ));
        for line in script(kind)?.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    Ok(out)
}
