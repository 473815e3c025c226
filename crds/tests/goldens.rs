//! Every golden under `goldens/` checked offline against the generated schema: the structural
//! part (types, enums, patterns, bounds, required and unknown fields) and the CEL rules.
//! Valid goldens must pass and deserialize into the Rust types; invalid ones must fail with
//! the message in their `# expect:` line. The same files are applied to a real API server by
//! the cluster evals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test fails by panicking

mod support;

use std::path::{Path, PathBuf};

use kube::core::cel::Validator;
use serde_json::Value;
use vexa_crds::all_crds;

fn goldens_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../goldens")
}

/// One golden file: its expected error (for invalid ones) and its documents.
struct Golden {
    path: PathBuf,
    expect: Option<String>,
    docs: Vec<Value>,
}

fn load(path: &Path) -> Golden {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let expect = text
        .lines()
        .find_map(|l| l.strip_prefix("# expect: "))
        .map(str::to_owned);
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()));
    Golden {
        path: path.to_owned(),
        expect,
        docs,
    }
}

fn goldens(category: &str) -> Vec<Golden> {
    let mut out = Vec::new();
    for kind_dir in std::fs::read_dir(goldens_dir())
        .expect("goldens/ exists")
        .flatten()
    {
        let dir = kind_dir.path().join(category);
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files.flatten() {
            if f.path().extension().is_some_and(|e| e == "yaml") {
                out.push(load(&f.path()));
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

/// The v1 schema of the CRD for `kind`.
fn schema_for(kind: &str) -> Value {
    let crd = all_crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).expect("schema serializes")
}

/// Every message the API server would give for `obj` (optionally as an update of `old`).
fn errors(obj: &Value, old: Option<&Value>) -> Vec<String> {
    assert_eq!(obj["apiVersion"], "vexa.ai/v1", "goldens use vexa.ai/v1");
    let kind = obj["kind"].as_str().expect("kind");
    let schema = schema_for(kind);
    let mut errs = support::structural::validate(&schema, obj);
    if errs.is_empty()
        && let Err(cel) = Validator::new().validate(&schema, obj, old)
    {
        errs.extend(cel.iter().map(ToString::to_string));
    }
    errs
}

fn deserializes(obj: &Value) -> Result<(), String> {
    use vexa_crds::*;
    let o = obj.clone();
    let r = match obj["kind"].as_str().unwrap_or_default() {
        "Dispatch" => serde_json::from_value::<Dispatch>(o).map(drop),
        "AgentRunner" => serde_json::from_value::<AgentRunner>(o).map(drop),
        "Workspace" => serde_json::from_value::<Workspace>(o).map(drop),
        "Tool" => serde_json::from_value::<Tool>(o).map(drop),
        "Schedule" => serde_json::from_value::<Schedule>(o).map(drop),
        "Identity" => serde_json::from_value::<Identity>(o).map(drop),
        "Transcript" => serde_json::from_value::<Transcript>(o).map(drop),
        "Card" => serde_json::from_value::<Card>(o).map(drop),
        other => return Err(format!("unknown kind {other}")),
    };
    r.map_err(|e| e.to_string())
}

#[test]
fn valid_goldens_are_accepted() {
    let all = goldens("valid");
    assert!(
        all.len() >= 15,
        "expected the full set of valid goldens, found {}",
        all.len()
    );
    for g in all {
        assert!(
            g.expect.is_none(),
            "{}: a valid golden has no '# expect:'",
            g.path.display()
        );
        let obj = &g.docs[0];
        let errs = errors(obj, None);
        assert!(
            errs.is_empty(),
            "{} should be valid, got:\n{}",
            g.path.display(),
            errs.join("\n")
        );
        deserializes(obj).unwrap_or_else(|e| panic!("{}: {e}", g.path.display()));
    }
}

#[test]
fn invalid_goldens_are_refused_with_their_message() {
    let all = goldens("invalid");
    assert!(
        all.len() >= 20,
        "expected the full set of invalid goldens, found {}",
        all.len()
    );
    for g in all {
        let expect = g
            .expect
            .as_deref()
            .unwrap_or_else(|| panic!("{}: no '# expect:' line", g.path.display()));
        let errs = errors(&g.docs[0], None);
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "{}: expected an error containing\n  {expect}\ngot:\n  {}",
            g.path.display(),
            if errs.is_empty() {
                "(accepted)".to_owned()
            } else {
                errs.join("\n  ")
            }
        );
    }
}

#[test]
fn update_goldens_apply_transition_rules() {
    let valid = goldens("valid-update");
    let invalid = goldens("invalid-update");
    assert!(!valid.is_empty() && invalid.len() >= 5);
    for g in valid {
        assert_eq!(
            g.docs.len(),
            2,
            "{}: old and new documents",
            g.path.display()
        );
        let errs = errors(&g.docs[1], Some(&g.docs[0]));
        assert!(
            errs.is_empty(),
            "{}: update should be allowed, got {errs:?}",
            g.path.display()
        );
    }
    for g in invalid {
        assert_eq!(
            g.docs.len(),
            2,
            "{}: old and new documents",
            g.path.display()
        );
        assert!(
            errors(&g.docs[0], None).is_empty(),
            "{}: the original must be valid",
            g.path.display()
        );
        let expect = g.expect.as_deref().expect("# expect:");
        let errs = errors(&g.docs[1], Some(&g.docs[0]));
        assert!(
            errs.iter().any(|e| e.contains(expect)),
            "{}: expected {expect:?}, got {errs:?}",
            g.path.display()
        );
    }
}

#[test]
fn every_kind_has_valid_and_invalid_goldens() {
    for crd in all_crds() {
        let dir = goldens_dir().join(&crd.spec.names.plural);
        for category in ["valid", "invalid"] {
            let n = std::fs::read_dir(dir.join(category))
                .map(|d| d.count())
                .unwrap_or(0);
            assert!(
                n > 0,
                "goldens/{}/{category} is empty",
                crd.spec.names.plural
            );
        }
    }
}
