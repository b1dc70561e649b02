//! `ingest`: partner event exports (Braze Currents: Avro or NDJSON under a prefix) into the lake
//! as `partner_events`, Parquet partitioned by the `event_date` of each event's own time.
//!
//! - **Streaming.** Files are decoded a few at a time on rayon (each by its format's decoder,
//!   `formats/`: Avro by a schema-compiled reader straight into columns), in queue-date order,
//!   and each day's rows are encoded into that day's Parquet object as they come: memory holds
//!   a handful of open days (their row group in progress and a 128-bit fingerprint per event
//!   id), not the run.
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
//!
//! The life of an ingest (`ingest_locked`): the backfill to finish or start (`ledger.rs`), the
//! listing and what of it to read (`listing.rs`), each file decoded (`decode.rs`, by its format
//! in `formats/`), its rows appended to their days (`days.rs`), and at each checkpoint the days
//! switched and the manifest, backfill and quarantine written (`ledger.rs`).

#[doc(hidden)]
pub mod craft;
mod days;
pub mod decode;
pub mod event;
pub mod formats;
mod ledger;
pub mod limits;
pub mod listing;
mod lock;
mod quarantine;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use futures::StreamExt;
use object_store::ObjectStoreExt;
use serde::Serialize;
use tracing::{info, warn};

use crate::config::{Config, SourceConfig};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parallel::on_rayon;
use crate::progress::Progress;
use crate::state::lock::KeptLock;
use crate::storage::Location;
use days::{Days, split_by_day};
pub use decode::{DecodedFile, decode_file};
use ledger::Ledger;
use limits::{Limits, READ_AHEAD};
use listing::ToRead;
pub use quarantine::Quarantined;

/// How often progress is made durable unless told otherwise.
pub const DEFAULT_CHECKPOINT: Duration = Duration::from_secs(30);

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
    let src = source_location(config, name, source)?;
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
    let backfill = ledger::backfill(lake, name, options.range, &run_id, &mut summary).await?;

    // 2. What is there, and what to read.
    let listed = listing::list_source(
        src.store.as_ref(),
        &src.root,
        backfill.as_ref().map(|b| b.from),
    )
    .await
    .map_err(|e| Error::storage_at(format!("sources.{name}: cannot list {}", src.url), e))?;
    let manifest = ledger::manifest(lake, name).await?;
    let (todo, too_big) = listing::select(
        listed,
        &src.root,
        backfill.as_ref(),
        &manifest,
        &limits,
        &mut summary,
    );
    info!(source = %name, listed = summary.files_listed, to_read = todo.len(), mode = summary.mode, "ingesting");

    // 3. Decode a few files ahead on rayon, in order; append each file's rows to its days.
    let mut days = Days::new(
        lake.location.store.clone(),
        lake.location.child(&source.table),
        backfill.as_ref(),
    );
    let mut ledger = Ledger::new(
        lake,
        name,
        &source.table,
        &run_id,
        manifest,
        backfill,
        too_big,
    );
    let run = Run {
        src: &src,
        limits,
        options,
        table_lock,
    };
    run.ingest_files(name, todo, &mut days, &mut ledger, &mut summary)
        .await?;
    ledger.backfill_done().await?;

    // 4. What the run did.
    summary.events_added = days.added;
    summary.duplicates = days.duplicates;
    summary.days_written = days
        .written
        .iter()
        .map(|d| event::date_of_day(*d).to_string())
        .collect();
    if !ledger.quarantine.is_empty() {
        let quarantine_dir = ledger::quarantine_dir(&source.table, &run_id);
        warn!(source = %name, records = summary.quarantined_records, broken_files = summary.broken_files,
            location = %lake.location.child_url(&quarantine_dir),
            "input quarantined");
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The source's location; a bad URL is an error of `sources.<name>.url`.
fn source_location(config: &Config, name: &str, source: &SourceConfig) -> Result<Location> {
    Location::parse(&source.url, &config.base_dir(), &config.lake.options).map_err(|e| match e {
        Error::Config { message, .. } => Error::config(
            config.file.clone(),
            format!("sources.{name}.url: {message}"),
        ),
        other => other,
    })
}

/// What reading a source's files takes, besides the days and the ledger it fills.
struct Run<'a> {
    src: &'a Location,
    limits: Limits,
    options: &'a IngestOptions,
    table_lock: &'a KeptLock,
}

impl Run<'_> {
    /// Reads the files `todo`, a few ahead on rayon and in order, appending each file's rows to
    /// its days (within a backfill's days only) and its bad input to the ledger; makes progress
    /// durable every `checkpoint_every` and at the end.
    async fn ingest_files(
        &self,
        name: &str,
        todo: Vec<ToRead>,
        days: &mut Days,
        ledger: &mut Ledger<'_>,
        summary: &mut IngestSummary,
    ) -> Result<()> {
        let progress = Progress::with_unit(self.options.progress, todo.len() as u64, name, "files");
        let store = self.src.store.clone();
        let limits = self.limits;
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
                    Ok::<_, Error>(
                        on_rayon(move || decode::read_file(rel, meta, format, bytes, &limits))
                            .await,
                    )
                }
            })
            .buffered(READ_AHEAD);

        let range = self
            .options
            .range
            .map(|(from, to)| (event::day_of_date(from), event::day_of_date(to)));
        let every = self.options.checkpoint_every.unwrap_or(DEFAULT_CHECKPOINT);
        let mut last_checkpoint = Instant::now();
        while let Some(file) = files.next().await {
            let file = file?;
            // Another run took the table over (this one stalled past its lock's expiry): stop
            // before writing anything more.
            self.table_lock.check()?;
            summary.files_read += 1;
            summary.records_read += file.records;
            summary.quarantined_records += file.quarantine.len() as u64;
            for entry in file.quarantine {
                ledger.add_quarantined(entry);
            }
            if let Some((position, reason, bytes)) = file.broken {
                summary.broken_files += 1;
                ledger.keep_broken(&file.rel, bytes).await?;
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
                self.table_lock.check()?;
                ledger.checkpoint(days).await?;
                last_checkpoint = Instant::now();
            }
        }
        drop(files);
        self.table_lock.check()?;
        ledger.checkpoint(days).await?;
        progress.finish();
        Ok(())
    }
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
