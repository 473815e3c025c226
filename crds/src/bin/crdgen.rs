//! Writes the CRD YAML and runs the contract gates.
//!
//! ```text
//! crdgen [write]   write charts/vexa/crds/*.yaml
//! crdgen check     fail if the YAML is stale or a sealed version changed incompatibly
//! crdgen seal      snapshot every served version that has no snapshot yet, and move the
//!                  snapshot of a sealed version forward past compatible changes
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vexa_crds::contract::{self, CRD_DIR};

fn main() -> ExitCode {
    let root = repo_root();
    let crds = vexa_crds::all_crds();
    let command = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "write".to_owned());
    let result = match command.as_str() {
        "write" => write(&root, &crds),
        "check" => check(&root, &crds),
        "seal" => seal(&root, &crds),
        other => Err(format!(
            "unknown command '{other}': use write, check or seal"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crdgen: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The repository root: `VEXA_REPO_ROOT`, or the parent of this crate.
fn repo_root() -> PathBuf {
    std::env::var_os("VEXA_REPO_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default()
        })
}

type Crds = [k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition];

fn write(root: &Path, crds: &Crds) -> Result<(), String> {
    let dir = root.join(CRD_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    for crd in crds {
        let path = dir.join(contract::crd_file_name(crd));
        std::fs::write(&path, contract::render_crd(crd)?)
            .map_err(|e| format!("write {}: {e}", path.display()))?;
        println!("wrote {CRD_DIR}/{}", contract::crd_file_name(crd));
    }
    Ok(())
}

fn check(root: &Path, crds: &Crds) -> Result<(), String> {
    let mut findings = contract::check_generated(root, crds);
    findings.extend(contract::check_sealed(root, crds));
    if findings.is_empty() {
        println!(
            "crdgen: {} CRDs up to date; every sealed version compatible with its snapshot",
            crds.len()
        );
        // Compatible changes pass, but until re-sealed they are not part of the contract: a
        // later commit could still take them back.
        if let Ok(seals) = contract::plan_seal(root, crds) {
            for s in seals.iter().filter(|s| s.replaces) {
                println!(
                    "note: {} predates compatible changes; `crdgen seal` makes them part of the contract",
                    shown(root, &s.path)
                );
            }
        }
        return Ok(());
    }
    for f in &findings {
        eprintln!("- {}", f.0);
    }
    Err(format!("{} contract problem(s)", findings.len()))
}

fn seal(root: &Path, crds: &Crds) -> Result<(), String> {
    let seals = contract::plan_seal(root, crds).map_err(|findings| {
        for f in &findings {
            eprintln!("- {}", f.0);
        }
        format!(
            "nothing sealed: {} contract problem(s) (a snapshot only moves forward past compatible changes)",
            findings.len()
        )
    })?;
    for s in &seals {
        if let Some(parent) = s.path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&s.path, &s.schema)
            .map_err(|e| format!("write {}: {e}", s.path.display()))?;
        let verb = if s.replaces { "re-sealed" } else { "sealed" };
        println!("{verb} {}", shown(root, &s.path));
    }
    Ok(())
}

/// `path` relative to the repository root, for messages.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}
