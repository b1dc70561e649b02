//! `ingest`: partner event exports (Braze Currents: Avro or NDJSON under a prefix) into the lake
//! as `partner_events`, Parquet partitioned by the `event_date` of each event's own time.
//!
//! - **Exact and idempotent.** Events are de-duplicated by event id within a run and against
//!   what a day already holds; a manifest of ingested files (path, size, e-tag) lets a rerun skip
//!   what was done and pick up late files.
//! - **Atomic days.** Each `event_date` partition is one Parquet object, replaced by a single
//!   put: a reader sees the old day or the new one, never half of one or both.
//! - **Backfills** (`--from/--to`) re-read every file that can hold events of those days (a file
//!   queued before `--from` cannot) and replace exactly the days that have events.
//! - **Bad input never stops good data.** Corrupt or truncated files keep the records before the
//!   damage; bad records (missing or mistyped required fields, oversized) are quarantined with
//!   file, position and reason; the command exits 3 when anything was quarantined.

pub mod decode;
pub mod event;

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use chrono::NaiveDate;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::{Lake, Location};
use crate::parallel::on_rayon;
use crate::progress::Progress;
use crate::state::{read_json, write_json};
use event::Event;

/// What to ingest.
#[derive(Debug, Clone, Default)]
pub struct IngestOptions {
    /// Backfill: replace the `event_date` partitions in `[from, to]` (inclusive).
    pub range: Option<(NaiveDate, NaiveDate)>,
    /// Draw a progress bar over the days written (only ever on a terminal).
    pub progress: bool,
}

/// The one-line JSON summary per source.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestSummary {
    pub source: String,
    pub table: String,
    pub run_id: String,
    /// `incremental` or `backfill`.
    pub mode: &'static str,
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

/// One quarantined item, a line of `quarantine.jsonl`.
#[derive(Debug, Serialize)]
struct Quarantined {
    file: String,
    position: u64,
    reason: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<serde_json::Value>,
}

pub async fn ingest_source(
    config: &Config,
    lake: &Lake,
    name: &str,
    source: &SourceConfig,
    options: &IngestOptions,
) -> Result<IngestSummary> {
    let started = Instant::now();
    let run_id = crate::state::new_run_id();
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

    // 1. What is there, and what to read.
    let listed: Vec<_> = src
        .store
        .list(Some(&src.root))
        .try_collect()
        .await
        .map_err(|e| Error::Storage(format!("sources.{name}: cannot list {}: {e}", src.url)))?;
    let manifest_path = lake.state.child(&format!("ingest/{name}/manifest.json"));
    let mut manifest: Manifest = read_json(lake.state.store.as_ref(), &manifest_path)
        .await?
        .unwrap_or_default();
    let mut todo = Vec::new();
    for meta in listed {
        let rel = relative(&src.root, &meta.location);
        let Some(format) = decode::format_of(&rel) else {
            continue;
        };
        summary.files_listed += 1;
        let wanted = match options.range {
            Some((from, _)) => decode::queued_date_of(&rel).is_none_or(|q| q >= from),
            None => manifest
                .get(&rel)
                .is_none_or(|f| f.size != meta.size || f.e_tag != meta.e_tag),
        };
        if wanted {
            todo.push((rel, meta, format));
        } else {
            summary.files_skipped += 1;
        }
    }
    todo.sort_by(|a, b| a.0.cmp(&b.0));
    info!(source = %name, listed = summary.files_listed, to_read = todo.len(), mode = summary.mode, "ingesting");

    // 2. Read, decode and normalise, a few files at a time (on rayon), keeping only the
    //    normalised events: a file's raw records are dropped as soon as it is done.
    let store = src.store.clone();
    let files: Vec<FileResult> = futures::stream::iter(todo)
        .map(|(rel, meta, format)| {
            let store = store.clone();
            async move {
                let bytes = store
                    .get(&meta.location)
                    .await
                    .map_err(|e| Error::Storage(format!("{rel}: {e}")))?
                    .bytes()
                    .await
                    .map_err(|e| Error::Storage(format!("{rel}: {e}")))?;
                Ok::<_, Error>(on_rayon(move || read_file(rel, meta, format, bytes)).await)
            }
        })
        .buffered(4)
        .try_collect()
        .await?;

    // 3. Quarantine what could not be read; note every file read in the manifest.
    let mut quarantine: Vec<Quarantined> = Vec::new();
    let mut broken_files: Vec<(String, Bytes)> = Vec::new();
    let mut events: Vec<Event> = Vec::new();
    for f in files {
        summary.files_read += 1;
        summary.records_read += f.records;
        summary.quarantined_records += f.quarantine.len() as u64;
        quarantine.extend(f.quarantine);
        if let Some((position, reason, bytes)) = f.broken {
            summary.broken_files += 1;
            quarantine.push(Quarantined {
                file: f.rel.clone(),
                position,
                reason,
                record: None,
            });
            broken_files.push((f.rel.clone(), bytes));
        }
        events.extend(f.events);
        manifest.insert(
            f.rel,
            FileEntry {
                size: f.meta.size,
                e_tag: f.meta.e_tag,
                records: f.records,
                run_id: run_id.clone(),
            },
        );
    }
    // 4. Group by the day of each event's own time; a backfill keeps only its days.
    let mut days: BTreeMap<NaiveDate, Vec<Event>> = BTreeMap::new();
    for e in events {
        let day = e.event_date();
        if options
            .range
            .is_none_or(|(from, to)| day >= from && day <= to)
        {
            days.entry(day).or_default().push(e);
        }
    }

    // 5. Each day: merge with what it holds (incremental) or replace it (backfill), dedupe,
    //    and switch it with one put.
    //    Days are independent: two at a time (each is decoded, merged and encoded on rayon).
    let table_dir = lake.location.child(&source.table);
    let backfill = options.range.is_some();
    let progress = Progress::with_unit(options.progress, days.len() as u64, name, "days");
    let store = lake.location.store.clone();
    let written: Vec<(NaiveDate, u64, u64)> = futures::stream::iter(days)
        .map(|(day, new)| {
            let (store, progress) = (store.clone(), &progress);
            let path = table_dir
                .clone()
                .join(format!("event_date={day}"))
                .join("part-0.parquet");
            async move {
                let existing = if backfill {
                    Vec::new()
                } else {
                    read_day(store.as_ref(), &path).await?
                };
                let had = existing.len() as u64;
                let incoming = new.len() as u64;
                let rows =
                    on_rayon(move || dedupe(existing.into_iter().chain(new).collect())).await;
                let total = rows.len() as u64;
                // A backfill starts from nothing (`had` = 0): every row is (re)added.
                let added = total.saturating_sub(had);
                let duplicates = incoming.saturating_sub(added);
                let bytes = on_rayon(move || encode_day(&rows)).await?;
                store.put(&path, bytes.into()).await?;
                progress.inc();
                Ok::<_, Error>((day, added, duplicates))
            }
        })
        .buffer_unordered(2)
        .try_collect()
        .await?;
    progress.finish();
    let mut written = written;
    written.sort_by_key(|w| w.0);
    for (day, added, duplicates) in written {
        summary.events_added += added;
        summary.duplicates += duplicates;
        summary.days_written.push(day.to_string());
    }

    // 6. Quarantine, then the manifest (a crash before it only means re-reading files, which
    //    the de-duplication absorbs).
    if !quarantine.is_empty() {
        let qdir = lake
            .location
            .child(&format!("_quarantine/{}/{run_id}", source.table));
        let lines: String = quarantine
            .iter()
            .map(|q| serde_json::to_string(q).expect("quarantine entry is JSON") + "\n")
            .collect();
        lake.location
            .store
            .put(
                &qdir.clone().join("quarantine.jsonl"),
                lines.into_bytes().into(),
            )
            .await?;
        for (rel, bytes) in &broken_files {
            let name = rel.replace('/', "__");
            lake.location
                .store
                .put(&qdir.clone().join("files").join(name), bytes.clone().into())
                .await?;
        }
        warn!(source = %name, records = summary.quarantined_records, broken_files = summary.broken_files,
            location = %lake.location.child_url(&format!("_quarantine/{}/{run_id}", source.table)),
            "input quarantined");
    }
    write_json(lake.state.store.as_ref(), &manifest_path, &manifest).await?;
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// One source file, read.
struct FileResult {
    rel: String,
    meta: object_store::ObjectMeta,
    records: u64,
    events: Vec<Event>,
    quarantine: Vec<Quarantined>,
    /// Where and why the file could not be read to the end, and its bytes (to keep).
    broken: Option<(u64, String, Bytes)>,
}

fn read_file(
    rel: String,
    meta: object_store::ObjectMeta,
    format: decode::Format,
    bytes: Bytes,
) -> FileResult {
    let decoded = decode::decode(format, &bytes);
    let event_type = decode::event_type_of(&rel);
    let mut out = FileResult {
        records: decoded.records.len() as u64,
        events: Vec::with_capacity(decoded.records.len()),
        quarantine: Vec::new(),
        broken: None,
        rel: rel.clone(),
        meta,
    };
    for (position, record) in decoded.records {
        let result = match &record {
            Ok(m) => event::normalize(m, event_type, &rel),
            Err(reason) => Err(reason.clone()),
        };
        match result {
            Ok(e) => out.events.push(e),
            Err(reason) => out.quarantine.push(Quarantined {
                file: rel.clone(),
                position,
                reason,
                record: record.ok().map(serde_json::Value::Object),
            }),
        }
    }
    out.broken = decoded.broken.map(|(p, r)| (p, r, bytes));
    out
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

/// Sorted by time then id; the first of each event id is kept.
fn dedupe(mut rows: Vec<Event>) -> Vec<Event> {
    let mut seen = HashSet::with_capacity(rows.len());
    rows.retain(|e| seen.insert(e.event_id.clone()));
    rows.sort_by(|a, b| (a.event_time, &a.event_id).cmp(&(b.event_time, &b.event_id)));
    rows
}

async fn read_day(store: &dyn ObjectStore, path: &Path) -> Result<Vec<Event>> {
    let bytes = match store.get(path).await {
        Ok(got) => got.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(Error::Storage(format!("{path}: {e}"))),
    };
    let name = path.to_string();
    on_rayon(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(|e| Error::Storage(format!("{name}: {e}")))?;
        let mut out = Vec::new();
        for batch in reader {
            let batch = batch.map_err(|e| Error::Storage(format!("{name}: {e}")))?;
            out.extend(
                event::from_batch(&batch).map_err(|e| Error::Storage(format!("{name}: {e}")))?,
            );
        }
        Ok(out)
    })
    .await
}

fn encode_day(rows: &[Event]) -> Result<Bytes> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::default()))
        .build();
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, event::schema(), Some(props))?;
    for chunk in rows.chunks(64 * 1024) {
        writer.write(&event::to_batch(chunk))?;
    }
    writer.close()?;
    Ok(Bytes::from(buf))
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
            ("event_date", datafusion::arrow::datatypes::DataType::Date32),
        )?;
    }
    Ok(())
}
