//! `ingest`: partner event exports (Braze Currents: Avro or NDJSON under a prefix) into the lake
//! as `partner_events`, Parquet partitioned by the `event_date` of each event's own time.
//!
//! - **Streaming.** Files are decoded a few at a time on rayon (Avro by a schema-compiled
//!   reader straight into columns, `avro.rs`), in queue-date order, and each day's rows are
//!   encoded into that day's Parquet object as they come: memory holds a handful of open days
//!   (their row group in progress and a 128-bit fingerprint per event id), not the run.
//! - **Exact and idempotent.** Events are de-duplicated by event id within a run and against
//!   what a day already holds; a manifest of ingested files (path, size, e-tag) lets a rerun skip
//!   what was done and pick up late files.
//! - **Atomic days.** Each `event_date` partition is one Parquet object, replaced as a whole (a
//!   single put, or a multipart upload completed at the end): a reader sees the old day or the
//!   new one, never half of one or both.
//! - **Backfills** (`--from/--to`) re-read every file that can hold events of those days (a file
//!   queued before `--from` cannot) and replace exactly the days that have events.
//! - **Resumable.** Progress is made durable every `checkpoint_every` (open days closed, files
//!   done recorded in the manifest, and for a backfill the days already replaced): a run that
//!   dies resumes from there; a pending backfill must be finished before other ingests.
//! - **Bad input never stops good data.** Corrupt or truncated files keep the records before the
//!   damage; bad records (missing or mistyped required fields, oversized) and bad NDJSON lines
//!   are quarantined with file, position and reason; the command exits 3 when anything was
//!   quarantined. A file that panics the decoder (a bug) is quarantined too.
//! - **Bounded by its limits, not by its input** (`limits.rs`): nothing a file claims is
//!   allocated before its bytes justify it, a file past a limit is quarantined and the run goes
//!   on, and peak memory stays within `engine.memory_limit` plus [`limits::MEMORY_OVERHEAD`]
//!   (640 MiB) plus about 40 bytes per distinct event id of the days being written.
//! - **One writer per table** (`lock.rs`): concurrent ingests into one table (two sources with
//!   the same `table`) would each rewrite the same days; the second one exits 5 instead.

pub mod avro;
#[doc(hidden)]
pub mod craft;
pub mod decode;
pub mod event;
pub mod limits;
mod lock;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use futures::{StreamExt, TryStreamExt};
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parallel::on_rayon;
use crate::progress::Progress;
use crate::state::lock::KeptLock;
use crate::storage::json::{read_json, write_json};
use crate::storage::objects::delete_if_exists;
use crate::storage::{Location, ObjectFile};
use event::{EventColumns, Parts};
use limits::{
    Limits, MAX_OPEN_DAYS, QUARANTINE_BYTES, QUARANTINE_RECORD_BYTES, READ_AHEAD, ROW_GROUP_BYTES,
    UPLOAD_CONCURRENCY, UPLOAD_PART_BYTES,
};

/// How often progress is made durable unless told otherwise.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(30);
/// Rows per Parquet row group (with [`ROW_GROUP_BYTES`], bounds the memory of an open day).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// What to ingest.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Backfill: replace the `event_date` partitions in `[from, to]` (inclusive).
    pub range: Option<(NaiveDate, NaiveDate)>,
    /// Draw a progress bar over the files read (only ever on a terminal).
    pub progress: bool,
    /// Make progress durable at most this often (`None`: [`DEFAULT_CHECKPOINT`]; zero: after
    /// every file).
    pub checkpoint_every: Option<Duration>,
}

/// The one-line JSON summary per source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    pub source: String,
    pub table: String,
    pub run_id: String,
    /// `incremental` or `backfill`.
    pub mode: &'static str,
    /// A backfill that picked up where an interrupted one stopped.
    pub resumed: bool,
    pub files_listed: u64,
    pub files_read: u64,
    pub files_skipped: u64,
    pub records_read: u64,
    /// Events new to the table (after de-duplication).
    pub events_added: u64,
    pub duplicates: u64,
    pub quarantined_records: u64,
    pub broken_files: u64,
    pub days_written: Vec<String>,
    pub seconds: f64,
}

/// One ingested file in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct FileEntry {
    size: u64,
    e_tag: Option<String>,
    records: u64,
    run_id: String,
}

type Manifest = BTreeMap<String, FileEntry>;

/// A backfill in progress (`backfill.json` beside the manifest), removed when it completes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct BackfillState {
    from: NaiveDate,
    to: NaiveDate,
    run_id: String,
    /// Files read, with the size and e-tag they had.
    files: BTreeMap<String, (u64, Option<String>)>,
    /// Days already replaced: from now on they are merged into, not replaced.
    replaced: BTreeSet<NaiveDate>,
}

/// What a quarantine entry takes besides its texts.
const QUARANTINE_ENTRY_BYTES: usize = std::mem::size_of::<Quarantined>();

/// One quarantined item, a line of `quarantine.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub file: String,
    /// Record index (Avro, 0-based) or line number (NDJSON, 1-based).
    pub position: u64,
    pub reason: String,
    /// The record as JSON text, when it could be read.
    pub record: Option<String>,
}

impl Quarantined {
    /// Its line of `quarantine.jsonl` (the record spliced in as the JSON text it already is),
    /// redacted.
    fn to_line(&self) -> String {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut line = format!(
            "{{\"file\":{},\"position\":{},\"reason\":{}",
            text(&self.file),
            self.position,
            text(&self.reason)
        );
        if let Some(record) = &self.record {
            line.push_str(",\"record\":");
            line.push_str(record);
        }
        line.push_str("}\n");
        // An event may carry anything, a configured secret included.
        crate::redact::scrubbed(line)
    }
}

pub async fn ingest_source(
    config: &Config,
    lake: &Lake,
    name: &str,
    source: &SourceConfig,
    options: &IngestOptions,
) -> Result<IngestSummary> {
    let run_id = crate::state::new_run_id();
    let table_lock = lock::acquire(lake, &source.table, &run_id, config.state.lock_ttl).await?;
    let result = ingest_locked(config, lake, name, source, options, run_id, &table_lock).await;
    let released = table_lock.release().await;
    let summary = result?;
    released?;
    Ok(summary)
}

/// The ingest of one source, holding its table's lock.
async fn ingest_locked(
    config: &Config,
    lake: &Lake,
    name: &str,
    source: &SourceConfig,
    options: &IngestOptions,
    run_id: String,
    table_lock: &KeptLock,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let limits = Limits::for_memory(config.engine.memory_limit);
    let src = Location::parse(&source.url, &config.base_dir(), &config.lake.options).map_err(
        |e| match e {
            Error::Config { message, .. } => Error::config(
                config.file.clone(),
                format!("sources.{name}.url: {message}"),
            ),
            other => other,
        },
    )?;
    let mut summary = IngestSummary {
        source: name.to_string(),
        table: source.table.clone(),
        run_id: run_id.clone(),
        mode: if options.range.is_some() {
            "backfill"
        } else {
            "incremental"
        },
        ..IngestSummary::default()
    };

    // 1. A pending backfill is finished before anything else: until then its days may lack
    //    events of files it has not re-read yet.
    let state_store = lake.state.store.clone();
    let manifest_path = lake.state.child(&format!("ingest/{name}/manifest.json"));
    let backfill_path = lake.state.child(&format!("ingest/{name}/backfill.json"));
    let pending: Option<BackfillState> = read_json(state_store.as_ref(), &backfill_path).await?;
    let backfill = match (options.range, pending) {
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
            run_id: run_id.clone(),
            ..BackfillState::default()
        }),
        (None, None) => None,
    };

    // 2. What is there, and what to read.
    let listed = list_source(
        src.store.as_ref(),
        &src.root,
        backfill.as_ref().map(|b| b.from),
    )
    .await
    .map_err(|e| Error::storage_at(format!("sources.{name}: cannot list {}", src.url), e))?;
    let manifest: Manifest = read_json(state_store.as_ref(), &manifest_path)
        .await?
        .unwrap_or_default();
    let mut todo = Vec::new();
    let mut too_big = Vec::new();
    for meta in listed {
        let rel = relative(&src.root, &meta.location);
        let Some(format) = decode::format_of(&rel) else {
            continue;
        };
        summary.files_listed += 1;
        let queued = decode::queued_date_of(&rel);
        let wanted = match &backfill {
            Some(b) => {
                queued.is_none_or(|q| q >= b.from)
                    && b.files.get(&rel) != Some(&(meta.size, meta.e_tag.clone()))
            }
            None => manifest
                .get(&rel)
                .is_none_or(|f| f.size != meta.size || f.e_tag != meta.e_tag),
        };
        if wanted && meta.size > limits.file_bytes as u64 {
            // Not read, and not recorded as read: a run with a larger limit picks it up.
            summary.broken_files += 1;
            too_big.push(Quarantined {
                reason: format!(
                    "the file is {} bytes, more than the per-file limit of {} bytes \
                     (engine.memory_limit / 20): it was not read, and will be tried again by \
                     every run; raise `engine.memory_limit` to ingest it",
                    meta.size, limits.file_bytes
                ),
                file: rel,
                position: 0,
                record: None,
            });
        } else if wanted {
            todo.push((queued, rel, meta, format));
        } else {
            summary.files_skipped += 1;
        }
    }
    // Queue-date order keeps the days being written few: most events land near their queue day.
    todo.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    info!(source = %name, listed = summary.files_listed, to_read = todo.len(), mode = summary.mode, "ingesting");

    // 3. Decode a few files ahead on rayon, in order; append each file's rows to its days.
    let progress = Progress::with_unit(options.progress, todo.len() as u64, name, "files");
    let store = src.store.clone();
    let mut files = futures::stream::iter(todo)
        .map(|(_, rel, meta, format)| {
            let store = store.clone();
            async move {
                let bytes = store
                    .get(&meta.location)
                    .await
                    .map_err(|e| Error::storage_at(&rel, e))?
                    .bytes()
                    .await
                    .map_err(|e| Error::storage_at(&rel, e))?;
                Ok::<_, Error>(on_rayon(move || read_file(rel, meta, format, bytes, &limits)).await)
            }
        })
        .buffered(READ_AHEAD);

    let range = options
        .range
        .map(|(from, to)| (event::day_of_date(from), event::day_of_date(to)));
    let mut days = Days::new(
        lake.location.store.clone(),
        lake.location.child(&source.table),
        backfill.as_ref(),
    );
    let quarantine_dir = format!("_quarantine/{}/{run_id}", source.table);
    let mut ledger = Ledger {
        lake,
        run_id: run_id.clone(),
        manifest,
        manifest_path,
        backfill,
        backfill_path,
        done: Vec::new(),
        quarantine: too_big,
        quarantine_written: 0,
        record_bytes: 0,
        entry_bytes: 0,
        omitted: 0,
        qdir: lake.location.child(&quarantine_dir),
    };
    let every = options.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT);
    let mut last_checkpoint = Instant::now();
    while let Some(file) = files.next().await {
        let file = file?;
        // Another run took the table over (this one stalled past its lock's expiry): stop
        // before writing anything more.
        table_lock.check()?;
        summary.files_read += 1;
        summary.records_read += file.records;
        summary.quarantined_records += file.quarantine.len() as u64;
        for entry in file.quarantine {
            ledger.add_quarantined(entry);
        }
        if let Some((position, reason, bytes)) = file.broken {
            summary.broken_files += 1;
            lake.location
                .store
                .put(
                    &ledger
                        .qdir
                        .clone()
                        .join("files")
                        .join(file.rel.replace('/', "__")),
                    bytes.into(),
                )
                .await?;
            ledger.add_quarantined(Quarantined {
                file: file.rel.clone(),
                position,
                reason,
                record: None,
            });
        }
        for (day, rows, fingerprints) in split_by_day(&file.batch, file.fingerprints)? {
            if range.is_none_or(|(from, to)| day >= from && day <= to) {
                days.append(day, rows, &fingerprints).await?;
            }
        }
        ledger.done.push((file.rel, file.meta, file.records));
        progress.inc();
        if last_checkpoint.elapsed() >= every {
            table_lock.check()?;
            ledger.checkpoint(&mut days).await?;
            last_checkpoint = Instant::now();
        }
    }
    drop(files);
    table_lock.check()?;
    ledger.checkpoint(&mut days).await?;
    progress.finish();
    if ledger.backfill.is_some() {
        delete_if_exists(state_store.as_ref(), &ledger.backfill_path).await?;
    }

    summary.events_added = days.added;
    summary.duplicates = days.duplicates;
    summary.days_written = days
        .written
        .iter()
        .map(|d| event::date_of_day(*d).to_string())
        .collect();
    if !ledger.quarantine.is_empty() {
        warn!(source = %name, records = summary.quarantined_records, broken_files = summary.broken_files,
            location = %lake.location.child_url(&quarantine_dir),
            "input quarantined");
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// Every object under `root`; for a backfill from `from`, only where events of `from` or later
/// can be: folders are walked level by level and `date=` folders of earlier queue dates are not
/// entered, so a backfill of one day does not list years of files.
async fn list_source(
    store: &dyn ObjectStore,
    root: &Path,
    from: Option<NaiveDate>,
) -> object_store::Result<Vec<object_store::ObjectMeta>> {
    let Some(from) = from else {
        return store.list(Some(root)).try_collect().await;
    };
    let mut out = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        let listing = store.list_with_delimiter(Some(&folder)).await?;
        out.extend(listing.objects);
        for sub in listing.common_prefixes {
            let name = sub.filename().unwrap_or_default();
            match decode::queued_date_of(name) {
                Some(queued) if queued < from => {}
                // A wanted queue hour: the rest of its subtree in one listing.
                Some(_) => out.extend(store.list(Some(&sub)).try_collect::<Vec<_>>().await?),
                None => folders.push(sub),
            }
        }
    }
    Ok(out)
}

/// What a run makes durable at each checkpoint: the files read since the last one (in the
/// manifest, and for a backfill in its state with the days it has replaced), and the quarantine.
struct Ledger<'a> {
    lake: &'a Lake,
    run_id: String,
    manifest: Manifest,
    manifest_path: Path,
    backfill: Option<BackfillState>,
    backfill_path: Path,
    /// Files read since the last checkpoint: (path, metadata, records).
    done: Vec<(String, object_store::ObjectMeta, u64)>,
    quarantine: Vec<Quarantined>,
    /// Entries of `quarantine` already in `quarantine.jsonl`.
    quarantine_written: usize,
    /// Bytes of record texts in `quarantine` (at most [`QUARANTINE_RECORD_BYTES`]).
    record_bytes: usize,
    /// Bytes of the entries in `quarantine` (at most [`QUARANTINE_BYTES`]).
    entry_bytes: usize,
    /// Entries left out of the report (past [`QUARANTINE_BYTES`]).
    omitted: u64,
    qdir: Path,
}

impl Ledger<'_> {
    /// Adds a quarantine entry; past [`QUARANTINE_RECORD_BYTES`] of record texts in this run,
    /// without its record.
    fn add_quarantined(&mut self, mut entry: Quarantined) {
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
    async fn checkpoint(&mut self, days: &mut Days) -> Result<()> {
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

/// One source file, read.
struct FileRead {
    rel: String,
    meta: object_store::ObjectMeta,
    records: u64,
    batch: RecordBatch,
    /// The fingerprint of each row's event id (computed here, off the writer's path).
    fingerprints: Vec<u128>,
    quarantine: Vec<Quarantined>,
    /// Where and why the file could not be read to the end, and its bytes (to keep).
    broken: Option<(u64, String, Bytes)>,
}

fn read_file(
    rel: String,
    meta: object_store::ObjectMeta,
    format: decode::Format,
    bytes: Bytes,
    limits: &Limits,
) -> FileRead {
    // Bad input must not panic; if a bug lets it, the file is quarantined and the run goes on.
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        decode_file(&rel, format, &bytes, limits)
    }))
    .unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        DecodedFile {
            batch: EventColumns::default().finish(),
            records: 0,
            quarantine: Vec::new(),
            broken: Some((
                0,
                format!("the decoder failed on this file (a bug, please report it): {message}"),
            )),
        }
    });
    FileRead {
        fingerprints: fingerprints_of(&decoded.batch),
        batch: decoded.batch,
        records: decoded.records,
        quarantine: decoded.quarantine,
        broken: decoded.broken.map(|(p, r)| (p, r, bytes)),
        rel,
        meta,
    }
}

/// The fingerprints of a batch's event ids, row by row.
fn fingerprints_of(batch: &RecordBatch) -> Vec<u128> {
    let fp = Fingerprints::new();
    event::ids(batch)
        .iter()
        .map(|id| fp.of(id.unwrap_or_default()))
        .collect()
}

/// One file decoded.
#[derive(Debug)]
pub struct DecodedFile {
    /// The good events, as rows of [`event::schema`].
    pub batch: RecordBatch,
    /// Records (or NDJSON lines) read, good and bad.
    pub records: u64,
    /// The bad ones.
    pub quarantine: Vec<Quarantined>,
    /// Where and why the file could not be read to the end.
    pub broken: Option<(u64, String)>,
}

/// Decodes one file (`rel`: its path under the source, for the event type of its folder and
/// the `source_file` column) within `limits`. Never panics on any bytes; what it allocates is
/// bounded by `limits` (see `limits.rs`).
pub fn decode_file(
    rel: &str,
    format: decode::Format,
    bytes: &[u8],
    limits: &Limits,
) -> DecodedFile {
    let folder = decode::event_type_of(rel);
    let mut columns = EventColumns::default();
    let mut quarantine = Vec::new();
    let mut records = 0u64;
    // What the quarantine entries of this file take; past the file's limit, the file stops.
    let mut kept = 0usize;
    let mut bad = |position: u64, reason: String, record: Option<String>| {
        kept += QUARANTINE_ENTRY_BYTES
            + rel.len()
            + reason.len()
            + record.as_ref().map_or(0, String::len);
        quarantine.push(Quarantined {
            file: rel.to_string(),
            position,
            reason,
            record,
        });
        if kept > limits.file_bytes {
            return Err(format!(
                "the file's bad records take more than {} bytes to report (the per-file limit, \
                 engine.memory_limit / 20) at {position}; the records before it are kept",
                limits.file_bytes
            ));
        }
        Ok(())
    };
    let broken = match format {
        decode::Format::Avro => avro::read_file(bytes, limits, |position, parts| {
            records += 1;
            match parts {
                Err(reason) => bad(position, reason, None),
                Ok(parts) => match columns.push(parts, folder, rel) {
                    Ok(()) => Ok(()),
                    Err(reason) => bad(position, reason, Some(event::parts_to_json_text(parts))),
                },
            }
        }),
        decode::Format::NdJson => decode::ndjson(bytes, |position, record| {
            records += 1;
            match record {
                Err(reason) => bad(position, reason, None),
                Ok(m) => {
                    let (canonical, properties) = event::json_parts(&m);
                    let parts = Parts {
                        canonical: &canonical,
                        properties: &properties,
                    };
                    match columns.push(&parts, folder, rel) {
                        Ok(()) => Ok(()),
                        Err(reason) => bad(position, reason, serde_json::to_string(&m).ok()),
                    }
                }
            }
        }),
    };
    DecodedFile {
        batch: columns.finish(),
        records,
        quarantine,
        broken,
    }
}

/// The rows of a batch (and their fingerprints) grouped by day; no copy when the batch holds
/// one day, as most do.
fn split_by_day(
    batch: &RecordBatch,
    fingerprints: Vec<u128>,
) -> Result<Vec<(i32, RecordBatch, Vec<u128>)>> {
    let days = event::days_of(batch);
    let Some(&first) = days.first() else {
        return Ok(Vec::new());
    };
    if days.iter().all(|&d| d == first) {
        return Ok(vec![(first, batch.clone(), fingerprints)]);
    }
    let mut rows: BTreeMap<i32, Vec<u32>> = BTreeMap::new();
    for (i, d) in days.iter().enumerate() {
        rows.entry(*d).or_default().push(i as u32);
    }
    rows.into_iter()
        .map(|(d, idx)| {
            let fp = idx.iter().map(|&i| fingerprints[i as usize]).collect();
            take_record_batch(batch, &UInt32Array::from(idx))
                .map(|rows| (d, rows, fp))
                .map_err(|e| Error::Internal(e.to_string()))
        })
        .collect()
}

/// Hashes a 128-bit fingerprint by its low half (it is already a hash).
#[derive(Default)]
struct Fingerprint(u64);

impl Hasher for Fingerprint {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = n as u64;
    }
}

type IdSet = HashSet<u128, BuildHasherDefault<Fingerprint>>;

/// 128-bit fingerprints of event ids: two independently seeded 64-bit hashes. Two distinct ids
/// of a day collide with a probability around n²/2¹²⁹ (≈10⁻²⁵ for ten million events).
struct Fingerprints(ahash::RandomState, ahash::RandomState);

impl Fingerprints {
    fn new() -> Self {
        Fingerprints(
            ahash::RandomState::with_seeds(0x9e37, 0x79b9, 0x7f4a, 0x7c15),
            ahash::RandomState::with_seeds(0xbf58, 0x476d, 0x1ce4, 0xe5b9),
        )
    }
    fn of(&self, id: &str) -> u128 {
        (u128::from(self.0.hash_one(id)) << 64) | u128::from(self.1.hash_one(id))
    }
}

/// The days being written: each an open Parquet upload and the fingerprints of its ids.
struct Days {
    store: Arc<dyn ObjectStore>,
    table_dir: Path,
    /// A backfill replaces a day the first time it opens it; otherwise (and afterwards) a day
    /// is merged with what it holds.
    backfill: bool,
    open: HashMap<i32, OpenDay>,
    clock: u64,
    fingerprints: Fingerprints,
    /// Days opened so far, with those an interrupted backfill had already replaced.
    opened: BTreeSet<i32>,
    /// Days switched by this run.
    written: BTreeSet<i32>,
    added: u64,
    duplicates: u64,
}

struct OpenDay {
    writer: AsyncArrowWriter<BufWriter>,
    seen: IdSet,
    last_use: u64,
}

impl Days {
    fn new(store: Arc<dyn ObjectStore>, table_dir: Path, backfill: Option<&BackfillState>) -> Self {
        Days {
            store,
            table_dir,
            backfill: backfill.is_some(),
            open: HashMap::new(),
            clock: 0,
            fingerprints: Fingerprints::new(),
            opened: backfill
                .iter()
                .flat_map(|b| b.replaced.iter().map(|d| event::day_of_date(*d)))
                .collect(),
            written: BTreeSet::new(),
            added: 0,
            duplicates: 0,
        }
    }

    fn path(&self, day: i32) -> Path {
        self.table_dir
            .clone()
            .join(format!("event_date={}", event::date_of_day(day)))
            .join("part-0.parquet")
    }

    /// Appends a day's new rows, leaving out ids the day already has.
    async fn append(&mut self, day: i32, rows: RecordBatch, fingerprints: &[u128]) -> Result<()> {
        self.clock += 1;
        if !self.open.contains_key(&day) {
            if self.open.len() >= MAX_OPEN_DAYS {
                let lru = *self
                    .open
                    .iter()
                    .min_by_key(|(_, d)| d.last_use)
                    .map(|(day, _)| day)
                    .expect("open days");
                self.close(lru).await?;
            }
            let open = self.open_day(day).await?;
            self.open.insert(day, open);
        }
        let open = self.open.get_mut(&day).expect("opened above");
        open.last_use = self.clock;
        let keep: BooleanArray = fingerprints
            .iter()
            .map(|fp| Some(open.seen.insert(*fp)))
            .collect();
        let kept = keep.true_count();
        self.added += kept as u64;
        self.duplicates += (rows.num_rows() - kept) as u64;
        let rows = if kept == rows.num_rows() {
            rows
        } else {
            filter_record_batch(&rows, &keep).map_err(|e| Error::Internal(e.to_string()))?
        };
        if rows.num_rows() > 0 {
            open.writer.write(&rows).await?;
            if open.writer.in_progress_size() > ROW_GROUP_BYTES {
                open.writer.flush().await?;
            }
        }
        Ok(())
    }

    /// Starts a day's new object: with what the day holds (merge) or empty (replace).
    async fn open_day(&mut self, day: i32) -> Result<OpenDay> {
        let path = self.path(day);
        let mut props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
        // Nearly unique per row: a dictionary would be built only to be abandoned.
        for column in event::UNIQUE_COLUMNS {
            props = props.set_column_dictionary_enabled(ColumnPath::from(column), false);
        }
        let props = props.build();
        let upload = BufWriter::with_capacity(self.store.clone(), path.clone(), UPLOAD_PART_BYTES)
            .with_max_concurrency(UPLOAD_CONCURRENCY);
        let mut writer = AsyncArrowWriter::try_new(upload, event::schema(), Some(props))?;
        let mut seen = IdSet::default();
        let replace = self.backfill && !self.opened.contains(&day);
        if !replace {
            let meta = match self.store.head(&path).await {
                Ok(meta) => Some(meta),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => return Err(Error::storage_at(&path, e)),
            };
            if let Some(meta) = meta {
                let stored = |e: &dyn std::fmt::Display| {
                    Error::storage(format!("stored day {path} cannot be read back: {e}"))
                };
                let reader = ObjectFile {
                    store: self.store.clone(),
                    path: path.clone(),
                    size: meta.size,
                };
                let mut stream = ParquetRecordBatchStreamBuilder::new(reader)
                    .await
                    .map_err(|e| stored(&e))?
                    .with_batch_size(16 * 1024)
                    .build()
                    .map_err(|e| stored(&e))?;
                while let Some(batch) = stream.next().await {
                    let batch = batch.map_err(|e| stored(&e))?;
                    if batch.schema().fields() != event::schema().fields() {
                        return Err(stored(&"its columns are not the partner_events schema"));
                    }
                    for id in event::ids(&batch).iter() {
                        seen.insert(self.fingerprints.of(id.unwrap_or_default()));
                    }
                    writer.write(&batch).await?;
                    if writer.in_progress_size() > ROW_GROUP_BYTES {
                        writer.flush().await?;
                    }
                }
            }
        }
        self.opened.insert(day);
        Ok(OpenDay {
            writer,
            seen,
            last_use: self.clock,
        })
    }

    /// Completes a day's object: the switch.
    async fn close(&mut self, day: i32) -> Result<()> {
        if let Some(open) = self.open.remove(&day) {
            open.writer.close().await?;
            self.written.insert(day);
        }
        Ok(())
    }

    async fn close_all(&mut self) -> Result<()> {
        let days: Vec<i32> = self.open.keys().copied().collect();
        for day in days {
            self.close(day).await?;
        }
        Ok(())
    }
}

/// `root/a/b` → `a/b`.
fn relative(root: &Path, path: &Path) -> String {
    path.prefix_match(root)
        .map(|parts| {
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_else(|| path.to_string())
}

/// Registers every source's table (unless the project declares it) with its fixed schema, so
/// it is queryable before the first ingest.
pub fn register_tables(lake: &Lake, config: &Config) -> Result<()> {
    let mut done = HashSet::new();
    for source in config.sources.values() {
        if config.tables.contains_key(&source.table) || !done.insert(source.table.clone()) {
            continue;
        }
        lake.register_fixed(
            &source.table,
            &lake.location.child_url(&source.table),
            event::schema(),
            vec![(
                "event_date".to_string(),
                datafusion::arrow::datatypes::DataType::Date32,
            )],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The events of `(id, unix seconds)` pairs as the decoder reads them from NDJSON, split
    /// by day with their fingerprints (what `ingest_locked` hands to `Days`).
    fn events(pairs: &[(&str, i64)]) -> Vec<(i32, RecordBatch, Vec<u128>)> {
        let lines: String = pairs
            .iter()
            .map(|(id, t)| {
                format!(
                    "{}\n",
                    serde_json::json!({"event_type": "users.messages.pushnotification.Open",
                        "id": id, "user_id": "b-1", "external_user_id": "u1", "time": t})
                )
            })
            .collect();
        let decoded = decode_file(
            "opens/f.ndjson",
            decode::Format::NdJson,
            lines.as_bytes(),
            &Limits::default(),
        );
        assert!(decoded.quarantine.is_empty() && decoded.broken.is_none());
        split_by_day(&decoded.batch, fingerprints_of(&decoded.batch)).unwrap()
    }

    /// The event ids stored for each day, sorted.
    async fn stored(store: &Arc<dyn ObjectStore>) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        let listed: Vec<_> = store.list(None).collect().await;
        for meta in listed {
            let meta = meta.unwrap();
            let bytes = store
                .get(&meta.location)
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            let reader =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
                    .unwrap()
                    .build()
                    .unwrap();
            let mut ids: Vec<String> = reader
                .flat_map(|b| {
                    let b = b.unwrap();
                    event::ids(&b)
                        .iter()
                        .flatten()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect();
            ids.sort();
            out.insert(meta.location.to_string(), ids);
        }
        out
    }

    async fn write(days: &mut Days, pairs: &[(&str, i64)]) {
        for (day, rows, fingerprints) in events(pairs) {
            days.append(day, rows, &fingerprints).await.unwrap();
        }
    }

    #[tokio::test]
    async fn days_merge_with_what_they_hold_drop_repeated_ids_and_a_backfill_replaces_once() {
        const DAY: i64 = 86_400;
        let t = 1_764_547_200; // 2025-12-01T00:00:00Z
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let table = Path::from("partner_events");
        let (first, second) = (
            "partner_events/event_date=2025-12-01/part-0.parquet".to_string(),
            "partner_events/event_date=2025-12-02/part-0.parquet".to_string(),
        );
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        // A run: two days, an id repeated within the run (a duplicate delivery).
        let mut days = Days::new(store.clone(), table.clone(), None);
        write(
            &mut days,
            &[("a", t), ("b", t + 60), ("a", t + 120), ("c", t + DAY)],
        )
        .await;
        // Nothing is visible before a day is closed: the switch is the close.
        assert!(stored(&store).await.is_empty());
        days.close_all().await.unwrap();
        assert_eq!((days.added, days.duplicates), (3, 1));
        assert_eq!(
            stored(&store).await,
            BTreeMap::from([
                (first.clone(), strings(&["a", "b"])),
                (second.clone(), strings(&["c"])),
            ])
        );

        // The next run merges into the stored day and leaves out what it already holds.
        let mut days = Days::new(store.clone(), table.clone(), None);
        write(&mut days, &[("b", t + 60), ("d", t + 300)]).await;
        days.close_all().await.unwrap();
        assert_eq!((days.added, days.duplicates), (1, 1));
        assert_eq!(stored(&store).await[&first], strings(&["a", "b", "d"]));

        // A backfill replaces a day the first time it opens it, then merges into it (a day
        // closed early to bound the open uploads is reopened, not replaced again).
        let backfill = BackfillState::default();
        let mut days = Days::new(store.clone(), table.clone(), Some(&backfill));
        write(&mut days, &[("e", t + 10)]).await;
        days.close_all().await.unwrap();
        write(&mut days, &[("f", t + 20)]).await;
        days.close_all().await.unwrap();
        let after = stored(&store).await;
        assert_eq!(after[&first], strings(&["e", "f"]));
        assert_eq!(
            after[&second],
            strings(&["c"]),
            "a day the backfill did not touch"
        );
        assert_eq!(
            days.written,
            BTreeSet::from([event::day_of_date(
                chrono::NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()
            )])
        );

        // A day an interrupted backfill already replaced is merged into, not replaced again.
        let resumed = BackfillState {
            replaced: BTreeSet::from([chrono::NaiveDate::from_ymd_opt(2025, 12, 1).unwrap()]),
            ..BackfillState::default()
        };
        let mut days = Days::new(store.clone(), table, Some(&resumed));
        write(&mut days, &[("g", t + 30)]).await;
        days.close_all().await.unwrap();
        assert_eq!(stored(&store).await[&first], strings(&["e", "f", "g"]));
    }

    #[test]
    fn a_file_of_bad_records_stops_at_the_file_limit() {
        let limits = Limits {
            file_bytes: 1 << 20,
            ..Limits::default()
        };
        let lines = "{}\n".repeat(100_000);
        let d = decode_file(
            "x/f.ndjson",
            decode::Format::NdJson,
            lines.as_bytes(),
            &limits,
        );
        let (at, why) = d.broken.unwrap();
        assert!(at > 1_000 && at < 100_000, "{at}");
        assert!(
            why.contains("bad records take more than 1048576 bytes"),
            "{why}"
        );
        assert_eq!(d.quarantine.len() as u64, d.records);
        assert_eq!(d.batch.num_rows(), 0);
    }

    #[test]
    fn quarantine_lines_are_json_with_the_record_spliced_in() {
        let q = Quarantined {
            file: "a/\"b\".ndjson".into(),
            position: 7,
            reason: "line 7: why\n".into(),
            record: Some(r#"{"id":"x","n":[1]}"#.into()),
        };
        let line: serde_json::Value = serde_json::from_str(&q.to_line()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"file": "a/\"b\".ndjson", "position": 7,
                "reason": "line 7: why\n", "record": {"id": "x", "n": [1]}})
        );
        let bare = Quarantined { record: None, ..q };
        assert!(!bare.to_line().contains("record"));
    }
}
