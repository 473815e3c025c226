//! A workspace's folder on its storage, and the write lock keyed on it. Two Workspace objects
//! that name the same claim and folder are one folder: they share one lock, a Lease named from
//! the storage, never from either object. Folders nested in one another are refused (the outer
//! one could write the inner one's files), so the lock of one folder never needs another's.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use sha2::{Digest, Sha256};
use vexa_crds::{Workspace, WorkspaceSpec};

/// Label on every workspace lock.
pub const LOCK_LABEL: &str = "vexa.ai/workspace-lock";
/// Annotation of a lock: the claim it locks a folder of.
pub const CLAIM_ANNOTATION: &str = "vexa.ai/claim";
/// Annotation of a lock: the folder on the claim.
pub const PATH_ANNOTATION: &str = "vexa.ai/path";
/// Annotation of a lock: the folder's head commit, as the last writer left it.
pub const HEAD_ANNOTATION: &str = "vexa.ai/head-commit";

/// Where a workspace's files live: a claim and a normalised folder on it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Storage {
    /// The PersistentVolumeClaim's name (in the Workspace's namespace).
    pub claim: String,
    /// The folder on the claim, `/`-separated, without `.` segments or trailing `/`.
    pub path: String,
}

impl Storage {
    /// The storage of a workspace (the folder defaults to the workspace's id).
    pub fn of(spec: &WorkspaceSpec) -> Self {
        let pvc = &spec.storage.persistent_volume_claim;
        let raw = pvc.sub_path.as_deref().unwrap_or(&spec.id);
        let path = raw
            .split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect::<Vec<_>>()
            .join("/");
        Self {
            claim: pvc.claim_name.clone(),
            path,
        }
    }

    /// Whether the two folders are the same, or one holds the other.
    pub fn overlaps(&self, other: &Storage) -> bool {
        let nested = |outer: &str, inner: &str| {
            inner
                .strip_prefix(outer)
                .is_some_and(|rest| rest.starts_with('/'))
        };
        self.claim == other.claim
            && (self.path == other.path
                || nested(&self.path, &other.path)
                || nested(&other.path, &self.path))
    }

    /// The name of this folder's lock (a Lease in the workspace's namespace).
    pub fn lock_name(&self) -> String {
        // A claim name cannot hold a line break, so the first one separates claim and path.
        let digest = Sha256::digest(format!("{}\n{}", self.claim, self.path).as_bytes());
        let hash: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
        format!("vexa-workspace-{hash}")
    }

    /// The annotations that say, on the lock, what it locks.
    pub fn annotations(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (CLAIM_ANNOTATION.to_owned(), self.claim.clone()),
            (PATH_ANNOTATION.to_owned(), self.path.clone()),
        ])
    }
}

/// Who holds a lock for writing, if anyone.
pub fn holder(lock: &Lease) -> Option<&str> {
    lock.spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref())
        .filter(|h| !h.is_empty())
}

/// The head commit the last writer left on a lock.
pub fn head_commit(lock: &Lease) -> Option<&str> {
    lock.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HEAD_ANNOTATION))
        .map(String::as_str)
}

/// The Workspace that keeps the folder `ws` overlaps, if `ws` may not be used: Workspaces are
/// taken oldest first (creation time, then name), and each one whose folder overlaps the
/// different folder of one already taken is refused. Same folder under another name (an alias)
/// is allowed: it shares the lock. A refused Workspace keeps no folder from anyone.
pub fn overlapping_elder<'a>(
    ws: &'a Workspace,
    siblings: impl IntoIterator<Item = &'a Workspace>,
) -> Option<&'a Workspace> {
    let key = |w: &Workspace| {
        (
            w.metadata.creation_timestamp.clone().map(|t| t.0),
            w.metadata.name.clone(),
        )
    };
    let mut all: Vec<&Workspace> = siblings
        .into_iter()
        .filter(|o| o.metadata.name != ws.metadata.name && o.metadata.deletion_timestamp.is_none())
        .collect();
    all.push(ws);
    all.sort_by_key(|w| key(w));
    let mut kept: Vec<(&Workspace, Storage)> = Vec::new();
    for w in all {
        let folder = Storage::of(&w.spec);
        let keeper = kept
            .iter()
            .find(|(_, k)| *k != folder && k.overlaps(&folder))
            .map(|(k, _)| *k);
        if w.metadata.name == ws.metadata.name {
            return keeper;
        }
        if keeper.is_none() {
            kept.push((w, folder));
        }
    }
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spec(claim: &str, sub_path: Option<&str>, id: &str) -> WorkspaceSpec {
        serde_json::from_value(serde_json::json!({
            "id": id, "owner": "alice",
            "storage": {"persistentVolumeClaim": {"claimName": claim, "subPath": sub_path}},
        }))
        .unwrap()
    }

    #[test]
    fn the_folder_is_the_sub_path_or_else_the_id_normalised() {
        assert_eq!(
            Storage::of(&spec("c", Some("alice/notes/"), "x")).path,
            "alice/notes"
        );
        assert_eq!(
            Storage::of(&spec("c", Some("./alice//notes"), "x")).path,
            "alice/notes"
        );
        assert_eq!(Storage::of(&spec("c", None, "notes")).path, "notes");
    }

    #[test]
    fn the_lock_is_named_by_the_storage_not_the_object() {
        let a = Storage::of(&spec("data", Some("alice/notes"), "a"));
        let b = Storage::of(&spec("data", Some("./alice/notes/"), "b"));
        let other_claim = Storage::of(&spec("data2", Some("alice/notes"), "a"));
        assert_eq!(a.lock_name(), b.lock_name());
        assert_ne!(a.lock_name(), other_claim.lock_name());
        assert!(a.lock_name().len() <= 63);
    }

    #[rstest]
    #[case("data", "alice", "data", "alice", true)]
    #[case("data", "alice", "data", "alice/notes", true)]
    #[case("data", "alice/notes", "data", "alice", true)]
    #[case("data", "alice", "data", "alice2", false)]
    #[case("data", "alice/notes", "data", "alice/notes2", false)]
    #[case("data", "alice", "other", "alice", false)]
    fn folders_overlap_when_equal_or_nested(
        #[case] c1: &str,
        #[case] p1: &str,
        #[case] c2: &str,
        #[case] p2: &str,
        #[case] overlap: bool,
    ) {
        let a = Storage {
            claim: c1.into(),
            path: p1.into(),
        };
        let b = Storage {
            claim: c2.into(),
            path: p2.into(),
        };
        assert_eq!(a.overlaps(&b), overlap);
        assert_eq!(b.overlaps(&a), overlap);
    }

    fn ws(name: &str, sub_path: &str, created: i64) -> Workspace {
        let mut w = Workspace::new(name, spec("data", Some(sub_path), name));
        w.metadata.namespace = Some("t".into());
        w.metadata.creation_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::from_second(created).unwrap(),
        ));
        w
    }

    #[test]
    fn a_younger_workspace_nested_in_an_older_one_is_refused_not_the_older() {
        let outer = ws("outer", "alice", 1);
        let inner = ws("inner", "alice/notes", 2);
        let alias = ws("alias", "alice", 3);
        let all = [outer.clone(), inner.clone(), alias.clone()];
        assert_eq!(
            overlapping_elder(&inner, &all).and_then(|w| w.metadata.name.clone()),
            Some("outer".into())
        );
        assert!(overlapping_elder(&outer, &all).is_none());
        // Same folder under another name: an alias, allowed (it shares the lock), and the
        // refused `inner` keeps nothing from it.
        assert!(overlapping_elder(&alias, &all).is_none());
        let deeper = ws("deeper", "alice/notes/today", 0);
        let all = [outer, inner, alias.clone(), deeper.clone()];
        assert!(overlapping_elder(&deeper, &all).is_none());
        assert_eq!(
            overlapping_elder(&alias, &all).and_then(|w| w.metadata.name.clone()),
            Some("deeper".into())
        );
    }
}
