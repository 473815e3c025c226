//! Whether a user may do something to a Dispatch or a Workspace, asked of the cluster's own RBAC
//! (or whatever authorizer the cluster runs) with a SubjectAccessReview: `get` on the Dispatch
//! to read its stream, `create` on `dispatches/turns` to send it a turn or a stop; `get` on the
//! Workspace to read its files, `create` on `workspaces/uploads` to propose one.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::front_proxy::User;

/// What is asked of a Dispatch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read its stream: `get` on `dispatches`.
    Read,
    /// Send a turn or a stop: `create` on `dispatches/turns`.
    Send,
    /// Read a workspace's files, history and diffs: `get` on `workspaces`.
    ReadWorkspace,
    /// Propose a file for a workspace: `create` on `workspaces/uploads`.
    Upload,
}

impl Access {
    /// The verb and subresource the review asks about.
    pub fn verb_and_subresource(self) -> (&'static str, Option<&'static str>) {
        match self {
            Access::Read | Access::ReadWorkspace => ("get", None),
            Access::Send => ("create", Some("turns")),
            Access::Upload => ("create", Some("uploads")),
        }
    }

    /// The kind of object asked about: `dispatches` or `workspaces`.
    pub fn resource(self) -> &'static str {
        match self {
            Access::Read | Access::Send => "dispatches",
            Access::ReadWorkspace | Access::Upload => "workspaces",
        }
    }

    /// What is done, for a refusal's message (`user may not <doing> <kind> ns/name`).
    pub fn doing(self) -> &'static str {
        match self {
            Access::Read => "read the stream or audit records of dispatch",
            Access::Send => "send turns to dispatch",
            Access::ReadWorkspace => "read the files of workspace",
            Access::Upload => "upload files to workspace",
        }
    }

    /// The permission, as a person would grant it in a Role.
    pub fn permission(self) -> &'static str {
        match self {
            Access::Read => "get on dispatches.vexa.ai",
            Access::Send => "create on dispatches/turns (group vexa.ai)",
            Access::ReadWorkspace => "get on workspaces.vexa.ai",
            Access::Upload => "create on workspaces/uploads (group vexa.ai)",
        }
    }
}

/// The review for `user` doing `access` to the Dispatch or Workspace `namespace/name`.
pub fn review(user: &User, access: Access, namespace: &str, name: &str) -> SubjectAccessReview {
    let (verb, subresource) = access.verb_and_subresource();
    SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            uid: user.uid.clone(),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                group: Some(vexa_crds::GROUP.to_owned()),
                resource: Some(access.resource().to_owned()),
                subresource: subresource.map(str::to_owned),
                verb: Some(verb.to_owned()),
                namespace: Some(namespace.to_owned()),
                name: Some(name.to_owned()),
                ..ResourceAttributes::default()
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    }
}

/// The review for `user` reading every audit chain: `get` on the cluster-scoped `auditlog` of
/// `streams.vexa.ai`.
pub fn audit_log_review(user: &User) -> SubjectAccessReview {
    let mut r = review(user, Access::Read, "", "");
    if let Some(attrs) = r.spec.resource_attributes.as_mut() {
        *attrs = ResourceAttributes {
            group: Some(vexa_stream::api::GROUP.to_owned()),
            resource: Some(vexa_stream::api::AUDIT_LOG.to_owned()),
            verb: Some("get".to_owned()),
            ..ResourceAttributes::default()
        };
    }
    r
}

/// Whether the cluster allows it; `Err` when the review itself failed.
pub async fn allowed(
    client: &Client,
    user: &User,
    access: Access,
    namespace: &str,
    name: &str,
) -> Result<bool, kube::Error> {
    allowed_by(client, &review(user, access, namespace, name)).await
}

/// Whether the cluster allows `review`.
pub async fn allowed_by(
    client: &Client,
    review: &SubjectAccessReview,
) -> Result<bool, kube::Error> {
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), review)
        .await?;
    Ok(answer
        .status
        .is_some_and(|s| s.allowed && s.denied != Some(true)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn the_review_names_the_user_and_the_dispatch() {
        let user = User {
            name: "bob".into(),
            uid: Some("u-1".into()),
            groups: vec!["team-a".into()],
            extra: BTreeMap::new(),
        };
        let r = review(&user, Access::Send, "team-a", "agent-x");
        let spec = serde_json::to_value(&r.spec).unwrap();
        assert_eq!(
            spec,
            serde_json::json!({
                "user": "bob", "uid": "u-1", "groups": ["team-a"],
                "resourceAttributes": {
                    "group": "vexa.ai", "resource": "dispatches", "subresource": "turns",
                    "verb": "create", "namespace": "team-a", "name": "agent-x"
                }
            })
        );
        let all = serde_json::to_value(&audit_log_review(&user).spec).unwrap();
        assert_eq!(
            all["resourceAttributes"],
            serde_json::json!({"group": "streams.vexa.ai", "resource": "auditlog", "verb": "get"}),
            "cluster-scoped, not a Dispatch"
        );
        let read = review(&user, Access::Read, "team-a", "agent-x");
        let attrs = read.spec.resource_attributes.unwrap();
        assert_eq!(
            (attrs.verb.as_deref(), attrs.subresource),
            (Some("get"), None)
        );
    }
}
