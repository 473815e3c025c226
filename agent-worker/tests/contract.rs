//! The pod contract end to end: the environment of every golden Job the operator builds
//! (`operator/tests/fixtures/*/job.yaml`, pinned by the operator's own tests) goes through the
//! worker's parser and must say what the Job says. A new fixture is picked up on its own; a
//! change on one side that the other does not read the same way fails here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value;
use vexa_agent_worker::env::WorkerEnv;
use vexa_core::WorkspaceMode;
use vexa_core::pod::var;

/// Every `job.yaml` under the operator's fixtures.
fn golden_jobs() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/tests/fixtures");
    let mut jobs: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path().join("job.yaml"))
        .filter(|p| p.is_file())
        .collect();
    jobs.sort();
    jobs
}

/// The worker container: the pod's native sidecar (an init container).
fn worker(job: &Value) -> &Value {
    job["spec"]["template"]["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == vexa_core::pod::layout::WORKER_CONTAINER)
        .unwrap()
}

/// The worker container's plain variables, in order.
fn plain_env(job: &Value) -> Vec<(String, String)> {
    worker(job)["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?.to_owned(),
                e["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

#[test]
fn there_are_golden_jobs_to_check() {
    let jobs = golden_jobs();
    assert!(jobs.len() >= 4, "{jobs:?}");
}

#[test]
fn every_golden_job_is_read_by_the_worker_as_the_job_says() {
    for path in golden_jobs() {
        let name = path.display().to_string();
        let job: Value = serde_saphyr::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let vars = plain_env(&job);
        let value = |var: &str| {
            vars.iter()
                .find(|(n, _)| n == var)
                .map(|(_, v)| v.as_str())
                .unwrap_or_else(|| panic!("{name}: no {var}"))
        };
        let env = WorkerEnv::from_vars(vars.clone()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let pod = &env.pod;

        let meta = &job["metadata"];
        let annotations = &meta["annotations"];
        let id = format!(
            "{}/{}",
            meta["namespace"].as_str().unwrap(),
            annotations["vexa.ai/dispatch-name"].as_str().unwrap()
        );
        assert_eq!(pod.unit_id, id, "{name}");
        assert_eq!(pod.out_topic, format!("unit:{id}:out"), "{name}");
        assert_eq!(pod.in_topic, format!("unit:{id}:in"), "{name}");
        assert_eq!(pod.owner, annotations["vexa.ai/subject"], "{name}");
        assert_eq!(pod.launcher, annotations["vexa.ai/launcher"], "{name}");
        assert_eq!(pod.trigger.as_str(), value(var::UNIT_TRIGGER), "{name}");
        assert_eq!(pod.runner, value(var::RUNNER), "{name}");
        assert_eq!(pod.thread, value(var::CHAT_SESSION), "{name}");
        assert_eq!(
            pod.idle_timeout.as_secs().to_string(),
            value(var::IDLE_TIMEOUT_SEC),
            "{name}"
        );
        assert_eq!(pod.redis_url, value(var::REDIS_URL), "{name}");
        assert!(pod.start.first_prompt().is_some(), "{name}: no first turn");

        // Every workspace is mounted where the worker is told, read-only unless it is written,
        // and the agent runs in one of them.
        let mounts = worker(&job)["volumeMounts"].as_array().unwrap();
        for w in &pod.workspaces {
            let mount = mounts
                .iter()
                .find(|m| m["mountPath"].as_str() == w.path.to_str())
                .unwrap_or_else(|| panic!("{name}: {} is not mounted", w.path.display()));
            assert_eq!(
                mount["readOnly"],
                w.mode == WorkspaceMode::ReadOnly,
                "{name}: {}",
                w.name
            );
        }
        assert!(pod.primary().is_some(), "{name}");

        // Read back and written again, the contract is the Job's text: nothing is lost,
        // defaulted or reordered between the two sides.
        let contract: Vec<(String, String)> = vars
            .into_iter()
            .filter(|(n, _)| var::ALL.contains(&n.as_str()))
            .collect();
        assert_eq!(pod.to_env(), contract, "{name}");
    }
}
