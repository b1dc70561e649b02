//! What an ingest makes durable: the manifest of ingested files (path, size, e-tag) that lets a
//! rerun skip what was done, a backfill's progress (`backfill.json`, removed when it completes),
//! and the run's quarantine, all written at each checkpoint after the open days are switched.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use chrono::NaiveDate;
use object_store::ObjectStoreExt;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use tracing::info;

use super::IngestSummary;
use super::days::Days;
use super::event;
use super::limits::{QUARANTINE_BYTES, QUARANTINE_RECORD_BYTES};
use super::quarantine::{QUARANTINE_ENTRY_BYTES, Quarantined};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::storage::json::{read_json, write_json};
use crate::storage::objects::delete_if_exists;

/// One ingested file in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(super) struct FileEntry {
    pub(super) size: u64,
    pub(super) e_tag: Option<String>,
    records: u64,
    run_id: String,
}

pub(super) type Manifest = BTreeMap<String, FileEntry>;

/// A backfill in progress (`backfill.json` beside the manifest), removed when it completes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct BackfillState {
    pub(super) from: NaiveDate,
    pub(super) to: NaiveDate,
    pub(super) run_id: String,
    /// Files read, with the size and e-tag they had.
    pub(super) files: BTreeMap<String, (u64, Option<String>)>,
    /// Days already replaced: from now on they are merged into, not replaced.
    pub(super) replaced: BTreeSet<NaiveDate>,
}

/// The quarantine folder of run `run_id` into `table`, under the lake.
pub(super) fn quarantine_dir(table: &str, run_id: &str) -> String {
    format!("_quarantine/{table}/{run_id}")
}

fn manifest_path(lake: &Lake, name: &str) -> Path {
    lake.state.child(&format!("ingest/{name}/manifest.json"))
}

fn backfill_path(lake: &Lake, name: &str) -> Path {
    lake.state.child(&format!("ingest/{name}/backfill.json"))
}

/// The files source `name` has ingested.
pub(super) async fn manifest(lake: &Lake, name: &str) -> Result<Manifest> {
    Ok(
        read_json(lake.state.store.as_ref(), &manifest_path(lake, name))
            .await?
            .unwrap_or_default(),
    )
}

/// The backfill this run does (of `range`, if any), resuming an interrupted one of the same
/// days (`summary.resumed`). A pending backfill is finished before anything else: until then
/// its days may lack events of files it has not re-read yet, so any other run is refused.
pub(super) async fn backfill(
    lake: &Lake,
    name: &str,
    range: Option<(NaiveDate, NaiveDate)>,
    run_id: &str,
    summary: &mut IngestSummary,
) -> Result<Option<BackfillState>> {
    let pending: Option<BackfillState> =
        read_json(lake.state.store.as_ref(), &backfill_path(lake, name)).await?;
    Ok(match (range, pending) {
        (Some((from, to)), Some(p)) if p.from == from && p.to == to => {
            info!(source = %name, from = %from, to = %to, files_done = p.files.len(),
                days_replaced = p.replaced.len(), "resuming an interrupted backfill");
            summary.resumed = true;
            Some(p)
        }
        (_, Some(p)) => {
            return Err(Error::config(
                None,
                format!(
                    "source `{name}`: a backfill of {} to {} (run {}) was interrupted and must be \
                 finished first, or its days may lack events: run `cohort-bridge ingest \
                 --source {name} --from {} --to {}`",
                    p.from, p.to, p.run_id, p.from, p.to
                ),
            ));
        }
        (Some((from, to)), None) => Some(BackfillState {
            from,
            to,
            run_id: run_id.to_string(),
            ..BackfillState::default()
        }),
        (None, None) => None,
    })
}

/// What a run makes durable at each checkpoint: the files read since the last one (in the
/// manifest, and for a backfill in its state with the days it has replaced), and the quarantine.
pub(super) struct Ledger<'a> {
    lake: &'a Lake,
    run_id: String,
    manifest: Manifest,
    manifest_path: Path,
    pub(super) backfill: Option<BackfillState>,
    pub(super) backfill_path: Path,
    /// Files read since the last checkpoint: (path, metadata, records).
    pub(super) done: Vec<(String, object_store::ObjectMeta, u64)>,
    pub(super) quarantine: Vec<Quarantined>,
    /// Entries of `quarantine` already in `quarantine.jsonl`.
    quarantine_written: usize,
    /// Bytes of record texts in `quarantine` (at most [`QUARANTINE_RECORD_BYTES`]).
    record_bytes: usize,
    /// Bytes of the entries in `quarantine` (at most [`QUARANTINE_BYTES`]).
    entry_bytes: usize,
    /// Entries left out of the report (past [`QUARANTINE_BYTES`]).
    omitted: u64,
    pub(super) qdir: Path,
}

impl<'a> Ledger<'a> {
    /// The ledger of source `name`'s run `run_id` into `table`: its manifest and backfill,
    /// and the quarantine so far (files too large to read).
    pub(super) fn new(
        lake: &'a Lake,
        name: &str,
        table: &str,
        run_id: &str,
        manifest: Manifest,
        backfill: Option<BackfillState>,
        quarantine: Vec<Quarantined>,
    ) -> Self {
        Ledger {
            lake,
            run_id: run_id.to_string(),
            manifest,
            manifest_path: manifest_path(lake, name),
            backfill,
            backfill_path: backfill_path(lake, name),
            done: Vec::new(),
            quarantine,
            quarantine_written: 0,
            record_bytes: 0,
            entry_bytes: 0,
            omitted: 0,
            qdir: lake.location.child(&quarantine_dir(table, run_id)),
        }
    }

    /// Keeps the bytes of a file that could not be read to the end, with the quarantine.
    pub(super) async fn keep_broken(&self, rel: &str, bytes: Bytes) -> Result<()> {
        self.lake
            .location
            .store
            .put(
                &self.qdir.clone().join("files").join(rel.replace('/', "__")),
                bytes.into(),
            )
            .await?;
        Ok(())
    }

    /// Removes the state of a backfill that completed.
    pub(super) async fn backfill_done(&self) -> Result<()> {
        if self.backfill.is_some() {
            delete_if_exists(self.lake.state.store.as_ref(), &self.backfill_path).await?;
        }
        Ok(())
    }

    /// Adds a quarantine entry; past [`QUARANTINE_RECORD_BYTES`] of record texts in this run,
    /// without its record.
    pub(super) fn add_quarantined(&mut self, mut entry: Quarantined) {
        let len = entry.record.as_ref().map_or(0, String::len);
        if self.record_bytes + len > QUARANTINE_RECORD_BYTES {
            entry.record = None;
        } else {
            self.record_bytes += len;
        }
        let size = QUARANTINE_ENTRY_BYTES + entry.file.len() + entry.reason.len();
        if self.entry_bytes + size > QUARANTINE_BYTES {
            self.omitted += 1;
            return;
        }
        self.entry_bytes += size;
        self.quarantine.push(entry);
    }

    /// Switches the open days, then records what they now hold.
    pub(super) async fn checkpoint(&mut self, days: &mut Days) -> Result<()> {
        days.close_all().await?;
        if self.quarantine.len() + self.omitted as usize > self.quarantine_written {
            let mut lines: String = self.quarantine.iter().map(Quarantined::to_line).collect();
            if self.omitted > 0 {
                lines.push_str(
                    &Quarantined {
                        file: "*".into(),
                        position: 0,
                        reason: format!(
                            "{} more quarantined items are not listed: the report keeps at most \
                             {QUARANTINE_BYTES} bytes",
                            self.omitted
                        ),
                        record: None,
                    }
                    .to_line(),
                );
            }
            self.lake
                .location
                .store
                .put(
                    &self.qdir.clone().join("quarantine.jsonl"),
                    lines.into_bytes().into(),
                )
                .await?;
            self.quarantine_written = self.quarantine.len() + self.omitted as usize;
        }
        for (rel, meta, records) in self.done.drain(..) {
            if let Some(b) = self.backfill.as_mut() {
                b.files.insert(rel.clone(), (meta.size, meta.e_tag.clone()));
            }
            self.manifest.insert(
                rel,
                FileEntry {
                    size: meta.size,
                    e_tag: meta.e_tag,
                    records,
                    run_id: self.run_id.clone(),
                },
            );
        }
        let state = self.lake.state.store.as_ref();
        if let Some(b) = self.backfill.as_mut() {
            b.replaced
                .extend(days.opened.iter().map(|d| event::date_of_day(*d)));
            write_json(state, &self.backfill_path, b).await?;
        }
        write_json(state, &self.manifest_path, &self.manifest).await
    }
}
