//! The operator's audit log (`vexa-audit`, writer `operator`): what every controller records
//! about a dispatch, before it acts where that matters.
//!
//! Each event is recorded once per dispatch ([`vexa_audit::Event::once_key`], keyed by the
//! Dispatch's UID and read back from the file at startup), so reconciling again, retrying after
//! a failed status write, or restarting never records it twice. A record that cannot be written
//! fails the reconcile (it is retried with backoff): the action it precedes does not happen
//! unaudited.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kube::ResourceExt;
use vexa_audit::{
    AuditLog, DispatchRef, Effect, Event, LogError, ScopeRecord, Signer, WorkspaceGrant,
};
use vexa_crds::{Dispatch, DispatchStatus};

/// The operator's writer name (its chain is `<audit dir>/operator.jsonl`).
pub const WRITER: &str = "operator";

/// The audit log, shared by the controllers.
#[derive(Clone)]
pub struct Audit {
    dir: PathBuf,
    log: Arc<Mutex<AuditLog>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why a record was not written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log itself failed (disk, volume, damage).
    #[error(transparent)]
    Log(#[from] LogError),
    /// The writing task died (a bug).
    #[error("the audit log's writer task failed: {0}")]
    Task(String),
}

impl Audit {
    /// Opens the operator's chain in `dir`, continuing it; with a `signer`, a checkpoint is
    /// signed every `checkpoint_every` records.
    pub fn open(
        dir: &Path,
        signer: Option<Box<dyn Signer>>,
        checkpoint_every: u64,
    ) -> Result<Self, LogError> {
        let mut log = AuditLog::open(dir, WRITER)?;
        if let Some(signer) = signer {
            log = log.with_signer(signer, checkpoint_every);
        }
        Ok(Self {
            dir: dir.to_owned(),
            log: Arc::new(Mutex::new(log)),
        })
    }

    /// Signs checkpoints with `signer` from now on (the token key set, once loaded: its JWKS is
    /// what `kubectl vexa audit verify` checks them against), one every `checkpoint_every`
    /// records; the records so far are signed at once.
    pub async fn sign_with(
        &self,
        signer: Box<dyn Signer>,
        checkpoint_every: u64,
    ) -> Result<Option<u64>, AuditError> {
        self.blocking(move |log| {
            log.set_signer(signer, checkpoint_every);
            log.checkpoint()
        })
        .await
    }

    /// The folder of the chains (every writer's file the operator holds).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records `event` of `d` with `scope`, once (see the module docs); the seq written, or
    /// `None` when it was already recorded. Returns once the line is on disk.
    pub async fn record(
        &self,
        d: &Dispatch,
        scope: ScopeRecord,
        event: Event,
    ) -> Result<Option<u64>, AuditError> {
        let effect = effect(d, scope);
        let kind = event.kind();
        let written = self
            .blocking(move |log| log.append_once(&effect, event))
            .await?;
        if let Some(seq) = written {
            tracing::debug!(dispatch = %d.name_any(), event = kind, seq, "audit record written");
        }
        Ok(written)
    }

    /// Signs the chain so far (on shutdown), if there is anything new and a signer.
    pub async fn checkpoint(&self) -> Result<Option<u64>, AuditError> {
        self.blocking(AuditLog::checkpoint).await
    }

    /// Signs whatever is unsigned every `period`, so a quiet operator's last records are not
    /// left deletable without a trace until the next `checkpoint_every` records arrive.
    pub fn sign_periodically(&self, period: std::time::Duration) -> tokio::task::JoinHandle<()> {
        let audit = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period).await;
                if let Err(e) = audit.checkpoint().await {
                    tracing::error!(error = %e, "the audit log's periodic checkpoint failed");
                }
            }
        })
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut AuditLog) -> Result<T, LogError> + Send + 'static,
    ) -> Result<T, AuditError> {
        let log = self.log.clone();
        // A write syncs to disk: off the async threads.
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock leaves the log as consistent as a crash would.
            let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut log)
        })
        .await
        .map_err(|e| AuditError::Task(e.to_string()))?
        .map_err(AuditError::Log)
    }
}

/// `d` resolved to subject · launcher · `scope`.
pub fn effect(d: &Dispatch, scope: ScopeRecord) -> Effect {
    Effect {
        dispatch: DispatchRef {
            namespace: d.namespace().unwrap_or_default(),
            name: d.name_any(),
            uid: d.uid().unwrap_or_default(),
        },
        subject: d.spec.identity.subject.clone(),
        launcher: d.spec.identity.launcher.clone(),
        scope,
    }
}

/// The dispatch's scope: the workspaces with the modes it was authorized (from `status`, once
/// the run is described), else as its spec asks; its tools.
pub fn scope(d: &Dispatch, status: &DispatchStatus) -> ScopeRecord {
    let workspaces = if status.provenance.is_empty() {
        d.spec
            .workspaces
            .iter()
            .map(|w| WorkspaceGrant {
                name: w.name.clone(),
                mode: w.mode,
            })
            .collect()
    } else {
        status
            .provenance
            .iter()
            .map(|p| WorkspaceGrant {
                name: p.workspace.clone(),
                mode: Some(p.mode),
            })
            .collect()
    };
    ScopeRecord {
        workspaces,
        tools: d.spec.tools.clone(),
    }
}
