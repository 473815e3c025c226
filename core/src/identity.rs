//! Pod identity: the SPIFFE ID of a dispatch pod and the shape of its SPIRE registration entry
//! (SPEC §5.3). The operator registers the entry and the worker asks for exactly this ID; the
//! gateway binds the dispatch token's `cnf` to it. One definition, so they never disagree.

/// The trust domain when the operator is told none (`--spire-trust-domain`).
pub const DEFAULT_TRUST_DOMAIN: &str = "vexa.local";
/// The scheduling gate a dispatch pod is created behind; the operator removes it once the pod's
/// entry exists, so no container of the pod starts before its identity can be issued.
pub const IDENTITY_GATE: &str = "vexa.ai/identity";
/// The path of the node alias: the parent ID of every dispatch entry. Each SPIRE agent of the
/// cluster is mapped to it (on the local cluster by its join token; in production by a node
/// alias entry over the `k8s_psat` cluster selector).
pub const NODE_ALIAS_PATH: &str = "/vexa/node";
/// The selector type of SPIRE's `k8s` workload attestor.
pub const SELECTOR_TYPE: &str = "k8s";
/// Every entry the operator makes has an ID with this prefix (then the pod's UID), so the
/// sweeper never touches an entry someone else made.
pub const ENTRY_ID_PREFIX: &str = "vexa-pod-";

/// `spiffe://<trust domain>/ns/<namespace>/dispatch/<name>`: the identity of a dispatch's pod.
pub fn spiffe_id(trust_domain: &str, namespace: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{namespace}/dispatch/{name}")
}

/// `spiffe://<trust domain>/vexa/node`: the parent ID of every dispatch entry.
pub fn node_alias(trust_domain: &str) -> String {
    format!("spiffe://{trust_domain}{NODE_ALIAS_PATH}")
}

/// The entry ID of a pod's registration: derived from its UID, so a retry or a second
/// operator replica never makes a second entry, and a pod that is gone names its entry.
pub fn entry_id(pod_uid: &str) -> String {
    format!("{ENTRY_ID_PREFIX}{pod_uid}")
}

/// The pod UID an entry ID of ours names, or `None` for an entry someone else made.
pub fn pod_uid_of_entry(entry_id: &str) -> Option<&str> {
    entry_id
        .strip_prefix(ENTRY_ID_PREFIX)
        .filter(|uid| !uid.is_empty())
}

/// The `k8s` selectors of a pod's entry, as (type, value): the pod by UID **and** the worker
/// container by name, so the agent container of the same pod can never obtain the identity.
pub fn selectors(pod_uid: &str) -> [(&'static str, String); 2] {
    [
        (SELECTOR_TYPE, format!("pod-uid:{pod_uid}")),
        (
            SELECTOR_TYPE,
            format!("container-name:{}", crate::pod::layout::WORKER_CONTAINER),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dispatch_pod_is_named_by_namespace_and_dispatch() {
        assert_eq!(
            spiffe_id("vexa.local", "team-a", "chat-1"),
            "spiffe://vexa.local/ns/team-a/dispatch/chat-1"
        );
        assert_eq!(node_alias("vexa.local"), "spiffe://vexa.local/vexa/node");
    }

    #[test]
    fn entry_ids_round_trip_to_the_pod_uid_and_only_ours_count() {
        let uid = "0b7c2a3e-1111-2222-3333-444455556666";
        assert_eq!(pod_uid_of_entry(&entry_id(uid)), Some(uid));
        assert_eq!(
            pod_uid_of_entry("db1fd96f-b58a-4a0a-8cdf-d5bfd0c2bb80"),
            None
        );
        assert_eq!(pod_uid_of_entry(ENTRY_ID_PREFIX), None);
        // SPIRE allows [A-Za-z0-9._-] in entry IDs.
        assert!(
            entry_id(uid)
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        );
    }

    #[test]
    fn the_entry_selects_the_pod_and_its_worker_container_only() {
        let [pod, container] = selectors("u1");
        assert_eq!(pod, ("k8s", "pod-uid:u1".to_string()));
        assert_eq!(container, ("k8s", "container-name:worker".to_string()));
    }
}
