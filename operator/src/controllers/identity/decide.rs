//! Pure decisions of the identity controller: is a gated pod really the pod of a dispatch's Job,
//! which entry it gets, and the patch that releases its gate.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use serde_json::{Value, json};
use vexa_core::identity::{self, IDENTITY_GATE};
use vexa_crds::Dispatch;

use crate::runtime::owned::is_controlled_by;

/// How long past the run's deadline SPIRE keeps an entry whose operator never removed it.
pub const EXPIRY_SLACK_SECONDS: i64 = 600;
/// The expiry when the Job has no deadline (it always has one; this is a bound, not a policy).
pub const EXPIRY_WITHOUT_DEADLINE_SECONDS: i64 = 24 * 3600;

/// Where a pod stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PodState {
    /// Waiting behind our gate: register, then release.
    Gated,
    /// Over (succeeded, failed) or being deleted: its entry goes.
    Finished,
    /// Anything else: nothing to do.
    Other,
}

/// The state of `pod` as the identity controller sees it.
pub fn pod_state(pod: &Pod) -> PodState {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    if pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Succeeded" | "Failed")) {
        return PodState::Finished;
    }
    if gates(pod).iter().any(|g| g == IDENTITY_GATE) {
        PodState::Gated
    } else {
        PodState::Other
    }
}

fn gates(pod: &Pod) -> Vec<String> {
    pod.spec
        .as_ref()
        .and_then(|s| s.scheduling_gates.as_ref())
        .map(|gs| gs.iter().map(|g| g.name.clone()).collect())
        .unwrap_or_default()
}

/// The pod's controller, when it is a Job.
pub fn job_owner(pod: &Pod) -> Option<&OwnerReference> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Job" && o.api_version == "batch/v1")
}

/// The Job's controller, when it is a Dispatch.
pub fn dispatch_owner(job: &Job) -> Option<&OwnerReference> {
    job.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "Dispatch")
}

/// Why a gated pod gets no identity (it stays gated: it never starts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotOurs(pub String);

/// What a verified pod gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// The dispatch's name (its namespace is the pod's).
    pub dispatch: String,
    /// `spiffe://<td>/ns/<namespace>/dispatch/<name>`.
    pub spiffe_id: String,
    /// SPIRE's entry ID, from the pod's UID.
    pub entry_id: String,
    /// The pod's UID (the entry selects it).
    pub pod_uid: String,
    /// Seconds after `now` at which SPIRE drops the entry by itself.
    pub lifetime_seconds: i64,
}

/// Checks that `pod` is the pod of `job`, and `job` the Job of `dispatch`, each by the UID in
/// its controller reference, and that the pod is what the Job's template says (a tenant who
/// may create pods can copy any owner reference; only the Job controller makes a pod from
/// the operator's template). Returns the entry it gets.
pub fn verify(
    pod: &Pod,
    job: Option<&Job>,
    dispatch: Option<&Dispatch>,
    trust_domain: &str,
) -> Result<Registration, NotOurs> {
    let refuse = |why: &str| Err(NotOurs(why.to_string()));
    let Some(owner) = job_owner(pod) else {
        return refuse("it is not controlled by a Job");
    };
    let Some(job) = job else {
        return refuse("the Job that controls it does not exist");
    };
    if job.uid().as_deref() != Some(owner.uid.as_str()) || job.name_any() != owner.name {
        return refuse("its controller reference names no Job that exists (UID differs)");
    }
    let Some(dispatch) = dispatch else {
        return refuse("its Job is controlled by no Dispatch that exists");
    };
    let Some(dispatch_uid) = dispatch.uid() else {
        return refuse("its Dispatch has no UID");
    };
    if !is_controlled_by(&job.metadata, &dispatch_uid) {
        return refuse("its Job is not controlled by the Dispatch it names (UID differs)");
    }
    if pod.namespace() != job.namespace() || job.namespace() != dispatch.namespace() {
        return refuse("it is not in its Job's and Dispatch's namespace");
    }
    if let Some(field) = differs_from_template(pod, job) {
        return refuse(&format!(
            "its {field} differ from its Job's pod template (the Job controller makes pods exactly from it)"
        ));
    }
    let Some(pod_uid) = pod.uid() else {
        return refuse("it has no UID");
    };
    let namespace = pod.namespace().unwrap_or_default();
    let deadline = job
        .spec
        .as_ref()
        .and_then(|s| s.active_deadline_seconds)
        .unwrap_or(EXPIRY_WITHOUT_DEADLINE_SECONDS);
    Ok(Registration {
        dispatch: dispatch.name_any(),
        spiffe_id: identity::spiffe_id(trust_domain, &namespace, &dispatch.name_any()),
        entry_id: identity::entry_id(&pod_uid),
        pod_uid,
        lifetime_seconds: deadline + EXPIRY_SLACK_SECONDS,
    })
}

/// The first part of the pod's spec that is not its Job's template: what runs (containers,
/// init containers: images, commands, environment, mounts) and what it mounts (volumes).
fn differs_from_template(pod: &Pod, job: &Job) -> Option<&'static str> {
    let spec = pod.spec.as_ref()?;
    let template = job.spec.as_ref()?.template.spec.as_ref();
    let Some(template) = template else {
        return Some("containers");
    };
    let same = |a: Value, b: Value| a == b;
    if !same(json!(spec.containers), json!(template.containers)) {
        return Some("containers");
    }
    if !same(
        json!(spec.init_containers.clone().unwrap_or_default()),
        json!(template.init_containers.clone().unwrap_or_default()),
    ) {
        return Some("init containers");
    }
    if !same(
        json!(spec.volumes.clone().unwrap_or_default()),
        json!(template.volumes.clone().unwrap_or_default()),
    ) {
        return Some("volumes");
    }
    // The API server's ServiceAccount admission names `default` in a pod whose template names
    // none: that is the same account.
    let account = |a: &Option<String>| a.clone().unwrap_or_else(|| "default".into());
    if account(&spec.service_account_name) != account(&template.service_account_name)
        || spec.automount_service_account_token != template.automount_service_account_token
        || spec.host_network != template.host_network
        || spec.host_pid != template.host_pid
        || spec.host_ipc != template.host_ipc
        || spec.share_process_namespace != template.share_process_namespace
        || spec.security_context != template.security_context
    {
        return Some("service account, host namespaces or security context");
    }
    None
}

/// The JSON patch that removes our gate (and keeps any other), guarded by the pod's UID so it
/// never lands on a different pod of the same name.
pub fn release_gate_patch(pod: &Pod) -> Value {
    let others: Vec<Value> = gates(pod)
        .into_iter()
        .filter(|g| g != IDENTITY_GATE)
        .map(|name| json!({ "name": name }))
        .collect();
    json!([
        { "op": "test", "path": "/metadata/uid", "value": pod.uid().unwrap_or_default() },
        { "op": "replace", "path": "/spec/schedulingGates", "value": others },
    ])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn job(uid: &str, dispatch_uid: &str) -> Job {
        serde_json::from_value(json!({
            "metadata": {"name": "vexa-chat-1", "namespace": "team", "uid": uid,
                "ownerReferences": [{"apiVersion": "vexa.ai/v1", "kind": "Dispatch", "name": "chat-1",
                    "uid": dispatch_uid, "controller": true}]},
            "spec": {"activeDeadlineSeconds": 3600, "template": {"spec": {
                "containers": [{"name": "agent", "image": "runner:1"}],
                "initContainers": [{"name": "worker", "image": "worker:1", "restartPolicy": "Always"}],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "automountServiceAccountToken": false,
                "schedulingGates": [{"name": IDENTITY_GATE}]}}}
        }))
        .unwrap()
    }

    fn dispatch(uid: &str) -> Dispatch {
        serde_json::from_value(json!({
            "apiVersion": "vexa.ai/v1", "kind": "Dispatch",
            "metadata": {"name": "chat-1", "namespace": "team", "uid": uid},
            "spec": {"identity": {"subject": "alice", "launcher": "user:alice"}, "runner": "r",
                "workspaces": [{"name": "w", "mode": "ro"}], "trigger": "message",
                "start": {"entrypoint": {"inline": "hi"}}}
        }))
        .unwrap()
    }

    /// A pod as the Job controller makes it from `job(job_uid, …)`'s template.
    fn pod(job_uid: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "vexa-chat-1-abcde", "namespace": "team", "uid": "pod-1",
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "vexa-chat-1",
                    "uid": job_uid, "controller": true}]},
            "spec": {
                "containers": [{"name": "agent", "image": "runner:1"}],
                "initContainers": [{"name": "worker", "image": "worker:1", "restartPolicy": "Always"}],
                "volumes": [{"name": "tmp", "emptyDir": {}}],
                "automountServiceAccountToken": false,
                "schedulingGates": [{"name": IDENTITY_GATE}, {"name": "other.example/gate"}]}
        }))
        .unwrap()
    }

    #[test]
    fn the_jobs_own_pod_gets_the_dispatchs_identity_until_past_its_deadline() {
        let r = verify(
            &pod("job-1"),
            Some(&job("job-1", "d-1")),
            Some(&dispatch("d-1")),
            "vexa.local",
        )
        .unwrap();
        assert_eq!(r.spiffe_id, "spiffe://vexa.local/ns/team/dispatch/chat-1");
        assert_eq!(r.entry_id, "vexa-pod-pod-1");
        assert_eq!(r.lifetime_seconds, 3600 + EXPIRY_SLACK_SECONDS);
        assert_eq!(pod_state(&pod("job-1")), PodState::Gated);
        // As the API server admits it: the ServiceAccount admission names `default`.
        let mut admitted = pod("job-1");
        admitted.spec.as_mut().unwrap().service_account_name = Some("default".into());
        let j = job("job-1", "d-1");
        assert!(verify(&admitted, Some(&j), Some(&dispatch("d-1")), "vexa.local").is_ok());
        // Another account is not the template's.
        admitted.spec.as_mut().unwrap().service_account_name = Some("builder".into());
        assert!(verify(&admitted, Some(&j), Some(&dispatch("d-1")), "vexa.local").is_err());
    }

    #[test]
    fn look_alike_pods_get_nothing() {
        let (j, d) = (job("job-1", "d-1"), dispatch("d-1"));
        // No owner at all.
        let mut p = pod("job-1");
        p.metadata.owner_references = None;
        assert!(verify(&p, Some(&j), Some(&d), "vexa.local").is_err());
        // An owner reference with another UID (a Job of the same name made earlier).
        assert!(verify(&pod("job-0"), Some(&j), Some(&d), "vexa.local").is_err());
        // The Job is not the Dispatch's (another UID).
        assert!(
            verify(
                &pod("job-1"),
                Some(&job("job-1", "d-0")),
                Some(&d),
                "vexa.local"
            )
            .is_err()
        );
        // The right owner reference, copied by a tenant, with their own image in the worker.
        let mut p = pod("job-1");
        p.spec.as_mut().unwrap().init_containers.as_mut().unwrap()[0].image = Some("evil:1".into());
        let NotOurs(why) = verify(&p, Some(&j), Some(&d), "vexa.local").unwrap_err();
        assert!(why.contains("init containers"), "{why}");
        // … or an extra volume (say, a hostPath).
        let mut p = pod("job-1");
        p.spec
            .as_mut()
            .unwrap()
            .volumes
            .as_mut()
            .unwrap()
            .push(serde_json::from_value(json!({"name": "x", "hostPath": {"path": "/"}})).unwrap());
        assert!(verify(&p, Some(&j), Some(&d), "vexa.local").is_err());
        // The account the API server names on the pod is fine; another one is not.
        let mut p = pod("job-1");
        p.spec.as_mut().unwrap().service_account_name = Some("default".into());
        assert!(verify(&p, Some(&j), Some(&d), "vexa.local").is_ok());
        p.spec.as_mut().unwrap().service_account_name = Some("builder".into());
        assert!(verify(&p, Some(&j), Some(&d), "vexa.local").is_err());
        // … or a service-account token.
        let mut p = pod("job-1");
        p.spec.as_mut().unwrap().automount_service_account_token = Some(true);
        assert!(verify(&p, Some(&j), Some(&d), "vexa.local").is_err());
        // Job or Dispatch gone.
        assert!(verify(&pod("job-1"), None, Some(&d), "vexa.local").is_err());
        assert!(verify(&pod("job-1"), Some(&j), None, "vexa.local").is_err());
    }

    #[test]
    fn releasing_the_gate_keeps_other_gates_and_is_guarded_by_the_uid() {
        let patch = release_gate_patch(&pod("job-1"));
        assert_eq!(
            patch,
            json!([
                {"op": "test", "path": "/metadata/uid", "value": "pod-1"},
                {"op": "replace", "path": "/spec/schedulingGates", "value": [{"name": "other.example/gate"}]},
            ])
        );
    }

    #[test]
    fn finished_or_deleted_pods_lose_their_entry() {
        let mut p = pod("job-1");
        p.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
        assert_eq!(pod_state(&p), PodState::Finished);
        let mut p = pod("job-1");
        p.spec.as_mut().unwrap().scheduling_gates = None;
        assert_eq!(pod_state(&p), PodState::Other);
    }
}
