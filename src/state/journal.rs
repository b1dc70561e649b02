//! The journal of acknowledged batches: group commit to small objects under
//! `pending/journal/`, so a run killed at any point is resumed without re-sending what the
//! journal holds. Writing one object per group (whatever was acked while the previous write was
//! in flight) keeps it cheap on S3 and prompt on local disk.

use std::collections::BTreeSet;

use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::paths::JOURNAL as DIR;
use super::{CohortState, PlanMeta};
use crate::error::{Error, Result};

/// How long a group waits for company. A kill loses at most this much of the journal (those
/// batches are sent again on resume, which set semantics make harmless).
const LINGER: std::time::Duration = std::time::Duration::from_millis(5);

/// Every batch number journaled so far for the pending plan. `format` is the plan's: from 2
/// on every object must end with its trailer (`end <count>`), so a truncated one is detected.
/// An unreadable object stops the run (exit 2) naming it and `state repair`, which drops it
/// (its batches are sent again: harmless).
pub async fn read(state: &CohortState, plan: &PlanMeta) -> Result<BTreeSet<u64>> {
    let mut acked = BTreeSet::new();
    for (path, parsed) in read_objects(state, plan).await? {
        match parsed {
            Ok(batches) => acked.extend(batches),
            Err(why) => return Err(state.unreadable(&path, &why, "repair")),
        }
    }
    Ok(acked)
}

/// The name prefix of the journal objects of plan `run_id`'s writers. Objects are named
/// `plan-<run_id>-by-<writer>-<seq>.acks`, so acks a fenced-off run flushes late for an older
/// plan are never taken for the pending plan's (objects of earlier releases name no plan and
/// count for the pending one, as they always did).
pub fn writer(plan_run_id: &str, writer: &str) -> String {
    format!("plan-{plan_run_id}-by-{writer}")
}

/// The plan a journal object was written for, when its name says (see [`writer`]).
pub fn plan_of(name: &str) -> Option<&str> {
    name.strip_prefix("plan-")?
        .split_once("-by-")
        .map(|(plan, _)| plan)
}

/// Each journal object of `plan` with its batch numbers, or why it cannot be trusted. Objects
/// of another plan are left out.
pub async fn read_objects(
    state: &CohortState,
    plan: &PlanMeta,
) -> Result<
    Vec<(
        object_store::path::Path,
        std::result::Result<Vec<u64>, String>,
    )>,
> {
    let listed: Vec<_> = state
        .store
        .list(Some(&state.path(DIR)))
        .try_collect()
        .await?;
    let format = plan.format;
    let mut out = Vec::new();
    for meta in listed {
        if let Some(other) = meta.location.filename().and_then(plan_of)
            && other != plan.run_id
        {
            tracing::debug!(object = %meta.location, "a journal object of another plan: ignored");
            continue;
        }
        let bytes = state.store.get(&meta.location).await?.bytes().await?;
        out.push((meta.location, parse(&bytes, format >= 2)));
    }
    Ok(out)
}

fn parse(bytes: &[u8], trailer_required: bool) -> std::result::Result<Vec<u64>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    let mut batches = Vec::new();
    let mut ended = None;
    for line in text.lines().filter(|l| !l.is_empty()) {
        if ended.is_some() {
            return Err("lines after the trailer".into());
        }
        if let Some(count) = line.strip_prefix("end ") {
            ended = Some(
                count
                    .parse::<usize>()
                    .map_err(|_| format!("bad trailer `{line}`"))?,
            );
            continue;
        }
        // Puts are atomic, so a torn object means damage or tampering; resuming from it
        // would be guessing.
        batches.push(
            line.parse::<u64>()
                .map_err(|_| format!("corrupt journal line `{line}`"))?,
        );
    }
    match ended {
        Some(n) if n != batches.len() => Err(format!(
            "the trailer counts {n} batches, the object holds {}",
            batches.len()
        )),
        None if trailer_required => Err("truncated: no trailer line".into()),
        _ => Ok(batches),
    }
}

/// Writes one journal object (with its trailer).
pub async fn write_object(
    state: &CohortState,
    name: &str,
    batches: &[u64],
) -> Result<object_store::path::Path> {
    let mut body: String = batches.iter().map(|n| format!("{n}\n")).collect();
    body.push_str(&format!("end {}\n", batches.len()));
    let path = state.path(&format!("{DIR}/{name}"));
    state
        .store
        .put(&path, body.into_bytes().into())
        .await
        .map_err(|e| Error::storage_at(format!("{path}: journal write failed"), e))?;
    Ok(path)
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
                write_object(&state, &format!("{writer}-{seq:08}.acks"), &group).await?;
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

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn an_object_names_its_plan() {
        let name = format!(
            "{}-00000001.acks",
            super::writer("20261127T120000.000Z-00ab", "w-1")
        );
        assert_eq!(super::plan_of(&name), Some("20261127T120000.000Z-00ab"));
        assert_eq!(
            super::plan_of("20261127T120000.000Z-00ab-00000001.acks"),
            None
        );
        assert_eq!(super::plan_of("repair-x.acks"), None);
    }

    #[test]
    fn a_truncated_object_is_detected_from_format_2() {
        assert_eq!(parse(b"1\n2\nend 2\n", true), Ok(vec![1, 2]));
        assert!(parse(b"1\n2\n", true).is_err());
        assert!(parse(b"1\n2\nend 3\n", true).is_err());
        assert!(parse(b"1\n2\nen", true).is_err());
        assert_eq!(
            parse(b"1\n2\n", false),
            Ok(vec![1, 2]),
            "format 1 had no trailer"
        );
        assert!(parse(b"1\nx2\n", false).is_err());
    }
}
