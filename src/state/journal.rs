//! The journal of acknowledged batches: group commit to small objects under
//! `pending/journal/`, so a run killed at any point is resumed without re-sending what the
//! journal holds. Writing one object per group (whatever was acked while the previous write was
//! in flight) keeps it cheap on S3 and prompt on local disk.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::CohortState;
use crate::error::{Error, Result};

const DIR: &str = "pending/journal";
/// How long a group waits for company. A kill loses at most this much of the journal (those
/// batches are sent again on resume, which set semantics make harmless).
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Every batch number journaled so far for the pending plan.
pub async fn read(state: &CohortState) -> Result<BTreeSet<u64>> {
    let listed: Vec<_> = state
        .store
        .list(Some(&state.path(DIR)))
        .try_collect()
        .await?;
    let mut acked = BTreeSet::new();
    for meta in listed {
        let bytes = state.store.get(&meta.location).await?.bytes().await?;
        let text = String::from_utf8_lossy(&bytes);
        for line in text.lines().filter(|l| !l.is_empty()) {
            // A torn object cannot happen (puts are atomic); anything unparsable is a bug or
            // tampering, and resuming from it would be guessing.
            let n = line.parse::<u64>().map_err(|_| {
                Error::Storage(format!("{}: corrupt journal line `{line}`", meta.location))
            })?;
            acked.insert(n);
        }
    }
    Ok(acked)
}

/// Appends acknowledged batch numbers in the background.
pub struct Journal {
    tx: mpsc::UnboundedSender<u64>,
    task: JoinHandle<Result<u64>>,
}

impl Journal {
    /// `writer` makes this process's object names unique (a resumed run never overwrites the
    /// journal of the run it resumes).
    /// With `after`, nothing is written until it resolves (the plan being journaled is
    /// durable); if it is dropped instead, nothing is journaled at all.
    pub fn start(
        state: CohortState,
        writer: String,
        after: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> Journal {
        let (tx, mut rx) = mpsc::unbounded_channel::<u64>();
        let task = tokio::spawn(async move {
            if let Some(after) = after
                && after.await.is_err()
            {
                return Ok(0);
            }
            let mut seq = 0u64;
            let mut written = 0u64;
            while let Some(first) = rx.recv().await {
                // Let a few more acks arrive: one object per few milliseconds, not per ack.
                tokio::time::sleep(LINGER).await;
                let mut group = vec![first];
                while let Ok(n) = rx.try_recv() {
                    group.push(n);
                }
                seq += 1;
                let body: String = group.iter().map(|n| format!("{n}\n")).collect();
                let path = state.path(&format!("{DIR}/{writer}-{seq:08}.acks"));
                state
                    .store
                    .put(&path, body.into_bytes().into())
                    .await
                    .map_err(|e| Error::Storage(format!("{path}: journal write failed: {e}")))?;
                written += group.len() as u64;
            }
            Ok(written)
        });
        Journal { tx, task }
    }

    pub fn ack(&self, batch: u64) {
        // If the writer task failed, `finish` reports it; the batch is then simply resent.
        let _ = self.tx.send(batch);
    }

    /// Flushes everything acknowledged so far; returns how many batches were journaled.
    pub async fn finish(self) -> Result<u64> {
        drop(self.tx);
        self.task
            .await
            .map_err(|e| Error::Internal(format!("journal writer: {e}")))?
    }
}
