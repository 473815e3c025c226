//! Which children are a controller's own: by the UID in their controller owner reference,
//! never by name or label.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// Whether the object's controller is the object with `uid`. Children are followed, changed or
/// deleted only when this holds: a name or a label can be chosen by anyone who may create
/// Jobs, Secrets or pods in the namespace, and an object made before its Dispatch existed
/// cannot name that Dispatch's UID.
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_controller_reference_with_the_uid_counts() {
        let meta = |refs: serde_json::Value| -> ObjectMeta {
            serde_json::from_value(json!({"name": "x", "ownerReferences": refs}))
                .unwrap_or_default()
        };
        let r = |uid: &str, controller: bool| json!({"apiVersion": "vexa.ai/v1", "kind": "Dispatch", "name": "d", "uid": uid, "controller": controller});
        assert!(is_controlled_by(&meta(json!([r("u1", true)])), "u1"));
        assert!(!is_controlled_by(&meta(json!([r("u1", false)])), "u1"));
        assert!(!is_controlled_by(&meta(json!([r("u2", true)])), "u1"));
        assert!(!is_controlled_by(&ObjectMeta::default(), "u1"));
    }
}
