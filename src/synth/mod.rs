//! A deterministic synthetic lake: a `users` table and an `events` table partitioned by
//! `event_date`, written as Parquet through `object_store` (local disk or S3 alike).
//!
//! Determinism: every user row is generated from its own PRNG stream seeded from
//! `(seed, user index)`, every event file from `(seed, date, file index)`; no transcendental
//! floating-point functions are used (only `+ - * / sqrt`, which IEEE 754 rounds exactly), so the
//! output is byte-for-byte identical whatever the thread scheduling, machine or chunking.
//!
//! User ids ([`IdShape`]): by default UUID v4 strings in no order, as product lakes hold them;
//! `numeric` gives scrambled decimal strings of mixed length, `sorted` today's best case
//! `u000000000`… in order. A user's id is a function of its index and the shape alone
//! ([`user_id`]), so the emulator's engagement export (`export-engagement`) names the same users.
//!
//! Layout under `root`:
//! - `users/part-00000.parquet` … (at most [`USERS_PER_FILE`] rows each, by user index: sorted by
//!   `user_id` only for [`IdShape::Sorted`])
//! - `events/event_date=YYYY-MM-DD/part-00000.parquet` … (at most [`EVENTS_PER_FILE`] rows each,
//!   sorted by `event_time`)
//! - `_generated.json`, written last: the spec and the counts ([`SynthSpecJson`]).
//!
//! CPU work (row generation and Parquet encoding) runs on the rayon pool, fed from
//! `spawn_blocking`; finished files travel over a bounded channel to the async side, which
//! uploads a few at a time. Memory stays bounded by (rayon threads + channel capacity + uploads
//! in flight) files.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Array, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use bytes::Bytes;
use chrono::{Datelike, Days, NaiveDate, Weekday};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Maximum rows in one `users/part-NNNNN.parquet` file.
pub const USERS_PER_FILE: u64 = 1_000_000;
/// Maximum rows in one events file; a day with more events is split into several files.
pub const EVENTS_PER_FILE: u64 = 2_000_000;
/// File name of the marker written last.
pub const MARKER_FILE: &str = "_generated.json";
/// Identifies the generator algorithm in the marker; bump when the output changes.
pub const GENERATOR: &str = "cohort-bridge-synth/2";

/// Rows per Parquet row group (several row groups per file help parallel scans and pruning).
const ROW_GROUP_ROWS: usize = 256 * 1024;
/// Finished files waiting for upload (bounded, so generation can't run far ahead of uploads).
const CHANNEL_CAPACITY: usize = 2;
/// Concurrent `put`s.
const MAX_UPLOADS: usize = 4;

/// Of users ever seen: share seen in the last 7 days, and in the last 30 (before clamping to
/// the account's lifetime, which pushes a few more recent signups into the recent buckets).
const P_SEEN_7D: f64 = 0.185;
const P_SEEN_30D: f64 = 0.49;

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthSpec {
    /// Number of users (rows of the users table); at least 1.
    pub users: u64,
    /// Number of event partitions (days ending at `end_date`, inclusive); at least 1.
    pub days: u32,
    /// PRNG seed; the same spec always yields the same bytes.
    pub seed: u64,
    /// Last day of data (UTC). `last_seen_at` is never after `end_date 23:59:59`.
    pub end_date: NaiveDate,
    /// Weekday events per day; weekends get ~20% fewer. Default: `max(users / 5, 100)`.
    pub events_per_day: Option<u64>,
    /// The shape and order of user ids.
    pub ids: IdShape,
}

/// The shape (and so the order) of generated user ids; see [`user_id`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdShape {
    /// UUID v4 strings (`8c4f0e1a-…`), 36 bytes, in no order.
    #[default]
    Uuid,
    /// Scrambled decimal strings of mixed length (mostly 12 digits, some 13, 11, fewer), in no
    /// order.
    Numeric,
    /// `u` and the index zero-padded to 9 digits (`u000000042`), in order: the best case.
    Sorted,
}

impl IdShape {
    pub const ALL: [IdShape; 3] = [IdShape::Uuid, IdShape::Numeric, IdShape::Sorted];

    pub fn as_str(self) -> &'static str {
        match self {
            IdShape::Uuid => "uuid",
            IdShape::Numeric => "numeric",
            IdShape::Sorted => "sorted",
        }
    }
}

impl std::fmt::Display for IdShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for IdShape {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        IdShape::ALL
            .into_iter()
            .find(|shape| shape.as_str() == s)
            .ok_or_else(|| format!("unknown id shape `{s}` (expected uuid, numeric or sorted)"))
    }
}

/// The id of user `idx` in `shape`: a function of the two alone (not of the seed), distinct for
/// distinct indices (each shape is a bijection of the index below 2^40).
pub fn user_id(shape: IdShape, idx: u64) -> String {
    let mut buf = [0u8; 40];
    let n = write_user_id(shape, idx, &mut buf);
    // Every shape writes ASCII only.
    std::str::from_utf8(&buf[..n]).expect("ascii").to_string()
}

/// Writes the id of user `idx` into `buf`, returning its length (at most 36 bytes, or 21 for
/// `sorted` indices of 10^9 and more).
fn write_user_id(shape: IdShape, idx: u64, buf: &mut [u8; 40]) -> usize {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    match shape {
        IdShape::Sorted => {
            buf[0] = b'u';
            let digits = decimal(idx, &mut buf[1..]);
            if digits >= 9 {
                return 1 + digits;
            }
            // Zero-pad to 9 digits: shift right.
            let pad = 9 - digits;
            buf.copy_within(1..1 + digits, 1 + pad);
            buf[1..1 + pad].fill(b'0');
            10
        }
        IdShape::Numeric => {
            // A bijection of the 40-bit index space (xor-shift and odd multiplications modulo
            // 2^40), so ids are distinct and in no order; written without padding, so lengths
            // vary (13 digits above 10^12, mostly 12, some 11 and fewer).
            const MASK: u64 = (1 << 40) - 1;
            let mut x = (idx ^ 0x5A_C3E1_9B27) & MASK;
            x = (x ^ (x >> 21)) & MASK;
            x = x.wrapping_mul(0x9E37_79B9_7F4B) & MASK;
            x = (x ^ (x >> 19)) & MASK;
            x = x.wrapping_mul(0xBF58_476D_1CE5) & MASK;
            x = (x ^ (x >> 23)) & MASK;
            decimal(x, &mut buf[..])
        }
        IdShape::Uuid => {
            // 64 bits that are a bijection of the index (SplitMix64's finaliser is invertible)
            // spread over the UUID around its version and variant bits, so ids are distinct;
            // the other 58 bits from a second stream.
            let b = splitmix_finalize(idx ^ 0x2545_F491_4F6C_DD1D);
            let r =
                splitmix_finalize(idx.wrapping_add(0x9E37_79B9_7F4A_7C15) ^ 0x1234_5678_9ABC_DEF1);
            let hi: u64 = (b >> 16) << 16 | 0x4000 | ((b >> 4) & 0xFFF);
            let lo: u64 = (0b10 << 62) | ((b & 0xF) << 58) | (r & ((1 << 58) - 1));
            let mut pos = 0;
            for (i, byte) in hi
                .to_be_bytes()
                .into_iter()
                .chain(lo.to_be_bytes())
                .enumerate()
            {
                if matches!(i, 4 | 6 | 8 | 10) {
                    buf[pos] = b'-';
                    pos += 1;
                }
                buf[pos] = HEX[usize::from(byte >> 4)];
                buf[pos + 1] = HEX[usize::from(byte & 0xF)];
                pos += 2;
            }
            pos
        }
    }
}

/// Writes `n` in decimal at the start of `out`; returns the number of digits.
fn decimal(mut n: u64, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

impl SynthSpec {
    /// A spec with the default events per day.
    pub fn new(users: u64, days: u32, seed: u64, end_date: NaiveDate) -> Self {
        SynthSpec {
            users,
            days,
            seed,
            end_date,
            events_per_day: None,
            ids: IdShape::default(),
        }
    }

    /// `events_per_day`, or the default `max(users / 5, 100)`.
    pub fn effective_events_per_day(&self) -> u64 {
        self.events_per_day
            .unwrap_or_else(|| (self.users / 5).max(100))
    }

    /// The first day of event data.
    pub fn start_date(&self) -> NaiveDate {
        self.end_date - Days::new(u64::from(self.days.saturating_sub(1)))
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthReport {
    pub users: u64,
    pub events: u64,
    pub user_files: usize,
    pub event_files: usize,
}

/// Contents of `_generated.json`: the spec (with defaults resolved) and the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynthSpecJson {
    pub generator: String,
    pub users: u64,
    pub days: u32,
    pub seed: u64,
    /// `YYYY-MM-DD`
    pub end_date: String,
    /// `YYYY-MM-DD`
    pub start_date: String,
    /// Weekday events per day (resolved default).
    pub events_per_day: u64,
    /// The id shape (markers written before there was a choice: `sorted`).
    #[serde(default = "sorted_ids")]
    pub ids: IdShape,
    pub report: SynthReport,
}

fn sorted_ids() -> IdShape {
    IdShape::Sorted
}

impl SynthSpecJson {
    /// The spec this marker describes (`events_per_day` resolved), or `None` if the date is bad.
    pub fn spec(&self) -> Option<SynthSpec> {
        let end_date = NaiveDate::parse_from_str(&self.end_date, "%Y-%m-%d").ok()?;
        Some(SynthSpec {
            users: self.users,
            days: self.days,
            seed: self.seed,
            end_date,
            events_per_day: Some(self.events_per_day),
            ids: self.ids,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synth spec: {0}")]
    InvalidSpec(String),
    #[error("object store error on {path}: {source}")]
    Store {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("parquet encoding error for {path}: {source}")]
    Parquet {
        path: String,
        #[source]
        source: ParquetError,
    },
    #[error("arrow error building {path}: {source}")]
    Arrow {
        path: String,
        #[source]
        source: ArrowError,
    },
    #[error("bad marker {path}: {source}")]
    Marker {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("generator task failed: {0}")]
    Task(String),
}

impl SynthError {
    fn store(path: &Path, source: object_store::Error) -> Self {
        SynthError::Store {
            path: path.to_string(),
            source,
        }
    }
}

/// `root/_generated.json`.
pub fn marker_path(root: &Path) -> Path {
    root.clone().join(MARKER_FILE)
}

/// Reads the marker; `Ok(None)` if there is none (no lake, or a half-written one).
pub async fn read_marker(
    store: &dyn ObjectStore,
    root: &Path,
) -> Result<Option<SynthSpecJson>, SynthError> {
    let path = marker_path(root);
    let bytes = match store.get(&path).await {
        Ok(got) => got.bytes().await.map_err(|e| SynthError::store(&path, e))?,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(SynthError::store(&path, e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| SynthError::Marker {
            path: path.to_string(),
            source,
        })
}

/// Generates the lake under `root`.
///
/// Deletes any existing marker first and writes the new one last, so a half-written lake has
/// no marker. Generator-named Parquet files from an earlier, larger run (`users/part-*.parquet`,
/// `events/event_date=*/part-*.parquet`) that this run did not write are deleted before the
/// marker is written; no other object is touched.
pub async fn generate(
    store: Arc<dyn ObjectStore>,
    root: &Path,
    spec: &SynthSpec,
) -> Result<SynthReport, SynthError> {
    generate_with(store, root, spec, Limits::default()).await
}

/// File-size limits (constants in production; small in tests).
#[derive(Debug, Clone, Copy)]
struct Limits {
    users_per_file: u64,
    events_per_file: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            users_per_file: USERS_PER_FILE,
            events_per_file: EVENTS_PER_FILE,
        }
    }
}

async fn generate_with(
    store: Arc<dyn ObjectStore>,
    root: &Path,
    spec: &SynthSpec,
    limits: Limits,
) -> Result<SynthReport, SynthError> {
    validate(spec)?;
    let started = std::time::Instant::now();
    let marker = marker_path(root);
    match store.delete(&marker).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(SynthError::store(&marker, e)),
    }

    let tasks = plan_tasks(root, spec, limits);
    let user_files = tasks
        .iter()
        .filter(|t| matches!(t.kind, TaskKind::Users { .. }))
        .count();
    let event_files = tasks.len() - user_files;
    let expected: HashSet<Path> = tasks.iter().map(|t| t.path.clone()).collect();
    tracing::info!(
        users = spec.users,
        days = spec.days,
        seed = spec.seed,
        user_files,
        event_files,
        "generating synthetic lake (store prefix `{root}`)"
    );

    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<FileOut, SynthError>>(CHANNEL_CAPACITY);
    let ctx = GenContext::new(spec);
    let producer = tokio::task::spawn_blocking(move || {
        // Runs on the rayon pool; a failed send means the consumer gave up: stop early.
        let _ = tasks.into_par_iter().try_for_each(|task| {
            let out = build_file(&ctx, task);
            tx.blocking_send(out).map_err(|_| ())
        });
    });

    let mut report = SynthReport {
        users: 0,
        events: 0,
        user_files,
        event_files,
    };
    let mut inflight = FuturesUnordered::new();
    let mut open = true;
    while open || !inflight.is_empty() {
        tokio::select! {
            done = inflight.next(), if !inflight.is_empty() => {
                let done: Option<Result<(), SynthError>> = done;
                if let Some(res) = done { res?; }
            }
            msg = rx.recv(), if open && inflight.len() < MAX_UPLOADS => {
                match msg {
                    None => open = false,
                    Some(out) => {
                        let out = out?;
                        match out.table {
                            Table::Users => report.users += out.rows,
                            Table::Events => report.events += out.rows,
                        }
                        let store = Arc::clone(&store);
                        inflight.push(async move {
                            tracing::debug!(path = %out.path, rows = out.rows, bytes = out.bytes.len(), "upload");
                            store
                                .put(&out.path, out.bytes.into())
                                .await
                                .map(|_| ())
                                .map_err(|e| SynthError::store(&out.path, e))
                        });
                    }
                }
            }
        }
    }
    producer
        .await
        .map_err(|e| SynthError::Task(e.to_string()))?;

    remove_stale(store.as_ref(), root, &expected).await?;

    let json = SynthSpecJson {
        generator: GENERATOR.to_string(),
        users: spec.users,
        days: spec.days,
        seed: spec.seed,
        end_date: spec.end_date.format("%Y-%m-%d").to_string(),
        start_date: spec.start_date().format("%Y-%m-%d").to_string(),
        events_per_day: spec.effective_events_per_day(),
        ids: spec.ids,
        report: report.clone(),
    };
    let body = serde_json::to_vec_pretty(&json).map_err(|source| SynthError::Marker {
        path: marker.to_string(),
        source,
    })?;
    store
        .put(&marker, body.into())
        .await
        .map_err(|e| SynthError::store(&marker, e))?;
    tracing::info!(
        users = report.users,
        events = report.events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "synthetic lake written"
    );
    Ok(report)
}

fn validate(spec: &SynthSpec) -> Result<(), SynthError> {
    if spec.users == 0 {
        return Err(SynthError::InvalidSpec("users must be at least 1".into()));
    }
    if spec.days == 0 {
        return Err(SynthError::InvalidSpec("days must be at least 1".into()));
    }
    if spec
        .end_date
        .checked_sub_days(Days::new(u64::from(spec.days) + 800))
        .is_none()
    {
        return Err(SynthError::InvalidSpec(
            "end_date too early for the requested days".into(),
        ));
    }
    Ok(())
}

/// Deletes generator-named Parquet files under `users/` and `events/` not in `expected`.
async fn remove_stale(
    store: &dyn ObjectStore,
    root: &Path,
    expected: &HashSet<Path>,
) -> Result<(), SynthError> {
    for table in ["users", "events"] {
        let prefix = root.clone().join(table);
        let mut listing = store.list(Some(&prefix));
        let mut stale = Vec::new();
        while let Some(meta) = listing.next().await {
            let meta = match meta {
                Ok(m) => m,
                Err(object_store::Error::NotFound { .. }) => break,
                Err(e) => return Err(SynthError::store(&prefix, e)),
            };
            if expected.contains(&meta.location) {
                continue;
            }
            let rel: Vec<String> = meta
                .location
                .prefix_match(&prefix)
                .map(|parts| parts.map(|p| p.as_ref().to_string()).collect())
                .unwrap_or_default();
            let ours = match (table, rel.as_slice()) {
                ("users", [file]) => is_part_file(file),
                ("events", [dir, file]) => {
                    dir.strip_prefix("event_date=")
                        .is_some_and(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok())
                        && is_part_file(file)
                }
                _ => false,
            };
            if ours {
                stale.push(meta.location);
            }
        }
        for path in stale {
            tracing::info!(%path, "removing stale file from an earlier generation");
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(SynthError::store(&path, e)),
            }
        }
    }
    Ok(())
}

fn is_part_file(name: &str) -> bool {
    name.strip_prefix("part-")
        .and_then(|s| s.strip_suffix(".parquet"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Task planning

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Users,
    Events,
}

#[derive(Debug, Clone)]
enum TaskKind {
    Users {
        start: u64,
        len: u64,
    },
    Events {
        date: NaiveDate,
        file_index: u64,
        len: u64,
    },
}

#[derive(Debug, Clone)]
struct Task {
    path: Path,
    kind: TaskKind,
}

struct FileOut {
    table: Table,
    path: Path,
    rows: u64,
    bytes: Bytes,
}

fn part_name(i: u64) -> String {
    format!("part-{i:05}.parquet")
}

/// Events on `date`: weekday base, weekends ~20% lower, ±3% deterministic day-to-day jitter.
fn events_on(spec: &SynthSpec, date: NaiveDate) -> u64 {
    let base = spec.effective_events_per_day() as f64;
    let weekly = match date.weekday() {
        Weekday::Sat | Weekday::Sun => 0.8,
        _ => 1.0,
    };
    let mut rng = Rng::from_key(spec.seed, &[TAG_DAY, date_key(date)]);
    let jitter = 0.97 + 0.06 * rng.f64();
    (base * weekly * jitter).round() as u64
}

fn plan_tasks(root: &Path, spec: &SynthSpec, limits: Limits) -> Vec<Task> {
    let mut tasks = Vec::new();
    let users_dir = root.clone().join("users");
    let mut start = 0;
    let mut i = 0;
    while start < spec.users {
        let len = limits.users_per_file.min(spec.users - start);
        tasks.push(Task {
            path: users_dir.clone().join(part_name(i)),
            kind: TaskKind::Users { start, len },
        });
        start += len;
        i += 1;
    }
    let events_dir = root.clone().join("events");
    let first = spec.start_date();
    for d in 0..spec.days {
        let date = first + Days::new(u64::from(d));
        let total = events_on(spec, date);
        let files = total.div_ceil(limits.events_per_file).max(1);
        let dir = events_dir
            .clone()
            .join(format!("event_date={}", date.format("%Y-%m-%d")));
        for f in 0..files {
            // Even split: the first `total % files` files get one more row.
            let len = total / files + u64::from(f < total % files);
            tasks.push(Task {
                path: dir.clone().join(part_name(f)),
                kind: TaskKind::Events {
                    date,
                    file_index: f,
                    len,
                },
            });
        }
    }
    // Biggest first keeps both cores busy until the end.
    tasks.sort_by_key(|t| std::cmp::Reverse(task_rows(t)));
    tasks
}

fn task_rows(t: &Task) -> u64 {
    match t.kind {
        TaskKind::Users { len, .. } | TaskKind::Events { len, .. } => len,
    }
}

// ---------------------------------------------------------------------------------------------
// PRNG: SplitMix64 (Steele, Lea, Flood 2014); small, fast, stable forever.

const TAG_USER: u64 = 0x5553_4552; // "USER"
const TAG_EVENTS: u64 = 0x4556_4e54; // "EVNT"
const TAG_DAY: u64 = 0x0044_4159; // "DAY"

#[derive(Debug, Clone)]
struct Rng(u64);

use crate::hash::mix64 as splitmix_finalize;

impl Rng {
    /// A stream keyed by `(seed, key…)`.
    fn from_key(seed: u64, key: &[u64]) -> Self {
        let mut h = splitmix_finalize(seed ^ 0x6A09_E667_F3BC_C908);
        for &k in key {
            h = splitmix_finalize(h ^ splitmix_finalize(k.wrapping_add(0x9E37_79B9_7F4A_7C15)));
        }
        Rng(h)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        splitmix_finalize(self.0)
    }

    /// Uniform in [0, 1).
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in [0, n) (Lemire's multiply-shift; the tiny bias is irrelevant here).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Picks from a cumulative-weight table (last entry is the total; weights need not sum to 1).
    fn pick<T: Copy>(&mut self, table: &[(f64, T)]) -> T {
        let total = table.last().map(|e| e.0).unwrap_or(1.0);
        let r = self.f64() * total;
        for &(c, v) in table {
            if r < c {
                return v;
            }
        }
        table[table.len() - 1].1
    }
}

/// Turns `(weight, value)` pairs into a cumulative table.
fn cumulative<T: Copy>(weights: &[(f64, T)]) -> Vec<(f64, T)> {
    let mut acc = 0.0;
    weights
        .iter()
        .map(|&(w, v)| {
            acc += w;
            (acc, v)
        })
        .collect()
}

fn date_key(date: NaiveDate) -> u64 {
    date.num_days_from_ce() as u64
}

fn midnight_micros(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .expect("midnight exists")
        .and_utc()
        .timestamp_micros()
}

// ---------------------------------------------------------------------------------------------
// Distributions

const PLATFORMS: &[(f64, &str)] = &[(0.40, "ios"), (0.45, "android"), (0.15, "web")];
const PLANS: &[(f64, Option<&str>)] = &[
    (0.70, Some("free")),
    (0.15, Some("basic")),
    (0.12, Some("pro")),
    (0.03, None),
];
const COUNTRIES: &[(f64, Option<&str>)] = &[
    (0.35, Some("US")),
    (0.15, Some("IN")),
    (0.10, Some("BR")),
    (0.08, Some("GB")),
    (0.07, Some("DE")),
    (0.05, Some("FR")),
    (0.05, Some("JP")),
    (0.025, Some("CA")),
    (0.02, Some("MX")),
    (0.015, Some("ES")),
    (0.015, Some("IT")),
    (0.01, Some("AU")),
    (0.01, Some("KR")),
    (0.005, Some("NL")),
    (0.005, Some("SE")),
    (0.005, Some("PL")),
    (0.04, None),
];
const EVENT_NAMES: &[(f64, &str)] = &[
    (0.45, "session_start"),
    (0.30, "screen_view"),
    (0.15, "feature_used"),
    (0.07, "push_open"),
    (0.03, "purchase"),
];
const FEATURES: &[(f64, &str)] = &[
    (0.35, "playlists"),
    (0.25, "dark_mode"),
    (0.20, "sharing"),
    (0.12, "export"),
    (0.08, "offline_mode"),
];
/// Relative activity by UTC hour: quiet nights, an evening peak.
const HOUR_WEIGHTS: [f64; 24] = [
    2.0, 1.5, 1.0, 0.8, 0.8, 1.0, 1.6, 2.6, 3.4, 3.8, 4.0, 4.3, 4.8, 4.9, 4.8, 4.8, 5.2, 5.8, 6.6,
    7.4, 7.8, 7.0, 5.2, 3.2,
];

/// Cumulative tables and the time frame, shared by all tasks.
struct GenContext {
    seed: u64,
    users: u64,
    ids: IdShape,
    /// `end_date 23:59:59` in UTC micros.
    end_ts: i64,
    platforms: Vec<(f64, &'static str)>,
    plans: Vec<(f64, Option<&'static str>)>,
    countries: Vec<(f64, Option<&'static str>)>,
    event_names: Vec<(f64, &'static str)>,
    features: Vec<(f64, &'static str)>,
    hours: Vec<(f64, i64)>,
    users_props: WriterProperties,
    events_props: WriterProperties,
}

impl GenContext {
    fn new(spec: &SynthSpec) -> Self {
        let hours: Vec<(f64, i64)> = HOUR_WEIGHTS
            .iter()
            .enumerate()
            .map(|(h, &w)| (w, h as i64))
            .collect();
        GenContext {
            seed: spec.seed,
            users: spec.users,
            ids: spec.ids,
            end_ts: midnight_micros(spec.end_date) + (MICROS_PER_DAY - MICROS_PER_SEC),
            platforms: cumulative(PLATFORMS),
            plans: cumulative(PLANS),
            countries: cumulative(COUNTRIES),
            event_names: cumulative(EVENT_NAMES),
            features: cumulative(FEATURES),
            hours: cumulative(&hours),
            // Users files are in index order: sorted by user_id only for the sorted shape.
            users_props: writer_props((spec.ids == IdShape::Sorted).then_some(0), false),
            events_props: writer_props(Some(1), true),
        }
    }

    fn user_rng(&self, idx: u64) -> Rng {
        Rng::from_key(self.seed, &[TAG_USER, idx])
    }

    /// A user's platform: the first draw of the user's stream (events reuse it).
    fn user_platform(&self, rng: &mut Rng) -> &'static str {
        rng.pick(&self.platforms)
    }
}

fn writer_props(sorted_column: Option<i32>, user_id_dictionary: bool) -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_created_by(GENERATOR.to_string())
        // Unique ids gain nothing from a dictionary; skewed event user ids do.
        .set_column_dictionary_enabled(ColumnPath::from("user_id"), user_id_dictionary)
        .set_sorting_columns(sorted_column.map(|column_idx| {
            vec![SortingColumn {
                column_idx,
                descending: false,
                nulls_first: false,
            }]
        }))
        .build()
}

fn ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Schema of `users/*.parquet`.
pub fn users_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("plan", DataType::Utf8, true),
        Field::new("country", DataType::Utf8, true),
        Field::new("platform", DataType::Utf8, false),
        Field::new("signup_at", ts_type(), false),
        Field::new("last_seen_at", ts_type(), true),
        Field::new("email_opt_in", DataType::Boolean, true),
        Field::new("lifetime_value", DataType::Float64, false),
    ]))
}

/// Schema of `events/event_date=*/*.parquet` (without the `event_date` partition column).
pub fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, true),
        Field::new("event_time", ts_type(), false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("feature", DataType::Utf8, true),
        Field::new("platform", DataType::Utf8, false),
    ]))
}

/// Writes feature uses caused by a campaign (the emulator's planted lift,
/// `emulator::currents::Lift`) into the lake's `events` table, as the product would have logged
/// them: one `<name>.parquet` per `event_date` partition, next to the generated part files
/// (which `generate` never touches). The same `name` replaces what an earlier call wrote;
/// [`remove_feature_uses`] takes it away. Returns the rows written.
pub async fn write_feature_uses(
    store: &dyn ObjectStore,
    root: &Path,
    uses: &[crate::emulator::currents::PlantedUse],
    name: &str,
) -> Result<u64, SynthError> {
    remove_feature_uses(store, root, name).await?;
    let mut by_day: std::collections::BTreeMap<
        NaiveDate,
        Vec<&crate::emulator::currents::PlantedUse>,
    > = Default::default();
    for u in uses {
        by_day.entry(u.time.date_naive()).or_default().push(u);
    }
    for (date, mut day) in by_day {
        day.sort_by_key(|u| u.time);
        let path = root
            .clone()
            .join("events")
            .join(format!("event_date={date}"))
            .join(format!("{name}.parquet"));
        let n = day.len();
        let mut user_id = StringBuilder::with_capacity(n, n * 36);
        let mut feature = StringBuilder::with_capacity(n, n * 10);
        for u in &day {
            user_id.append_value(&u.user_id);
            feature.append_value(&u.feature);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(user_id.finish()),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    day.iter().map(|u| u.time.timestamp_micros()),
                )
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n(
                "feature_used",
                n,
            ))),
            Arc::new(feature.finish()),
            // The pushes go to the app.
            Arc::new(StringArray::from_iter_values(std::iter::repeat_n("ios", n))),
        ];
        let batch =
            RecordBatch::try_new(events_schema(), columns).map_err(|source| SynthError::Arrow {
                path: path.to_string(),
                source,
            })?;
        let bytes =
            encode(&batch, writer_props(None, true)).map_err(|source| SynthError::Parquet {
                path: path.to_string(),
                source,
            })?;
        store
            .put(&path, bytes.into())
            .await
            .map_err(|e| SynthError::store(&path, e))?;
    }
    Ok(uses.len() as u64)
}

/// Removes every `events/event_date=*/<name>.parquet` (what [`write_feature_uses`] wrote).
pub async fn remove_feature_uses(
    store: &dyn ObjectStore,
    root: &Path,
    name: &str,
) -> Result<(), SynthError> {
    let prefix = root.clone().join("events");
    let file = format!("{name}.parquet");
    let mut listing = store.list(Some(&prefix));
    let mut found = Vec::new();
    while let Some(meta) = listing.next().await {
        match meta {
            Ok(m) if m.location.filename() == Some(file.as_str()) => found.push(m.location),
            Ok(_) => {}
            Err(object_store::Error::NotFound { .. }) => break,
            Err(e) => return Err(SynthError::store(&prefix, e)),
        }
    }
    for path in found {
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(SynthError::store(&path, e)),
        }
    }
    Ok(())
}

/// Appends the id of user `idx` ([`user_id`]) without allocating.
fn append_user_id(b: &mut StringBuilder, shape: IdShape, idx: u64) {
    let mut buf = [0u8; 40];
    let n = write_user_id(shape, idx, &mut buf);
    b.append_value(std::str::from_utf8(&buf[..n]).expect("ascii"));
}

// ---------------------------------------------------------------------------------------------
// File builders (CPU; run on rayon)

fn build_file(ctx: &GenContext, task: Task) -> Result<FileOut, SynthError> {
    let (table, batch, props) = match task.kind {
        TaskKind::Users { start, len } => {
            (Table::Users, users_batch(ctx, start, len), &ctx.users_props)
        }
        TaskKind::Events {
            date,
            file_index,
            len,
        } => (
            Table::Events,
            events_batch(ctx, date, file_index, len),
            &ctx.events_props,
        ),
    };
    let batch = batch.map_err(|source| SynthError::Arrow {
        path: task.path.to_string(),
        source,
    })?;
    let rows = batch.num_rows() as u64;
    let bytes = encode(&batch, props.clone()).map_err(|source| SynthError::Parquet {
        path: task.path.to_string(),
        source,
    })?;
    Ok(FileOut {
        table,
        path: task.path,
        rows,
        bytes,
    })
}

fn encode(batch: &RecordBatch, props: WriterProperties) -> Result<Bytes, ParquetError> {
    // Rough pre-size: compressed output is usually well under 8 bytes a row.
    let buf = Vec::with_capacity(batch.num_rows() * 8 + 4096);
    let mut writer = ArrowWriter::try_new(buf, batch.schema(), Some(props))?;
    writer.write(batch)?;
    Ok(Bytes::from(writer.into_inner()?))
}

fn users_batch(ctx: &GenContext, start: u64, len: u64) -> Result<RecordBatch, ArrowError> {
    let n = len as usize;
    let two_years = 730 * MICROS_PER_DAY;
    let day = MICROS_PER_DAY;
    let mut user_id = StringBuilder::with_capacity(n, n * 36);
    let mut plan = StringBuilder::with_capacity(n, n * 5);
    let mut country = StringBuilder::with_capacity(n, n * 2);
    let mut platform = StringBuilder::with_capacity(n, n * 7);
    let mut signup = Vec::with_capacity(n);
    let mut last_seen: Vec<Option<i64>> = Vec::with_capacity(n);
    let mut opt_in = BooleanBuilder::with_capacity(n);
    let mut ltv = Vec::with_capacity(n);

    for idx in start..start + len {
        let mut rng = ctx.user_rng(idx);
        append_user_id(&mut user_id, ctx.ids, idx);
        platform.append_value(ctx.user_platform(&mut rng));
        let p = rng.pick(&ctx.plans);
        plan.append_option(p);
        country.append_option(rng.pick(&ctx.countries));

        // Signups over the last two years, mildly skewed toward recent (growth).
        let u = rng.f64();
        let age = ((u + u * u) * 0.5 * two_years as f64) as i64;
        let signup_at = ctx.end_ts - age;
        signup.push(signup_at);

        // Last seen: 5% never; ~20% of all users within 7 days, ~50% within 30 days. Drawn
        // inside the account's lifetime, so never before signup nor after end_date 23:59:59.
        let life = ctx.end_ts - signup_at;
        let r = rng.f64();
        let v = rng.f64();
        let within = |lo: i64, hi: i64| lo + (v * (hi - lo) as f64) as i64;
        let ago = if r < P_SEEN_7D {
            within(0, life.min(7 * day))
        } else if r < P_SEEN_30D && life > 7 * day {
            within(7 * day, life.min(30 * day))
        } else if r >= P_SEEN_30D && life > 30 * day {
            30 * day + (v * v * (life.min(730 * day) - 30 * day) as f64) as i64
        } else {
            within(0, life)
        };
        let seen = ctx.end_ts - ago;
        last_seen.push(if rng.f64() < 0.05 { None } else { Some(seen) });

        let e = rng.f64();
        opt_in.append_option(if e < 0.10 {
            None
        } else {
            Some(e < 0.10 + 0.90 * 0.55)
        });

        // Long-tailed value: Pareto(alpha=2) via scale / sqrt(u) (sqrt is exactly rounded).
        let w = 1.0 - rng.f64(); // (0, 1]
        let x = rng.f64();
        let value = match p {
            Some("basic") => 4.99 * (1.0 / w.sqrt()),
            Some("pro") => 14.99 * (1.0 / w.sqrt()),
            Some(_) if x < 0.08 => 0.99 * (1.0 / w.sqrt()),
            _ => 0.0,
        };
        ltv.push((value.min(10_000.0) * 100.0).round() / 100.0);
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(user_id.finish()),
        Arc::new(plan.finish()),
        Arc::new(country.finish()),
        Arc::new(platform.finish()),
        Arc::new(TimestampMicrosecondArray::from(signup).with_timezone("UTC")),
        Arc::new(TimestampMicrosecondArray::from(last_seen).with_timezone("UTC")),
        Arc::new(opt_in.finish()),
        Arc::new(Float64Array::from(ltv)),
    ];
    RecordBatch::try_new(users_schema(), columns)
}

fn events_batch(
    ctx: &GenContext,
    date: NaiveDate,
    file_index: u64,
    len: u64,
) -> Result<RecordBatch, ArrowError> {
    let n = len as usize;
    let mut rng = Rng::from_key(ctx.seed, &[TAG_EVENTS, date_key(date), file_index]);
    let day_start = midnight_micros(date);
    let hour = 3_600 * MICROS_PER_SEC;

    // Times first, sorted, so files are ordered by event_time (good row-group pruning).
    let mut times: Vec<i64> = (0..n)
        .map(|_| day_start + rng.pick(&ctx.hours) * hour + rng.below(hour as u64) as i64)
        .collect();
    times.sort_unstable();

    let mut user_id = StringBuilder::with_capacity(n, n * 10);
    let mut event_name = StringBuilder::with_capacity(n, n * 12);
    let mut feature = StringBuilder::with_capacity(n, n);
    let mut platform = StringBuilder::with_capacity(n, n * 7);
    for _ in 0..n {
        let anon = rng.f64() < 0.02;
        let u = rng.f64();
        let primary = if anon {
            user_id.append_null();
            rng.pick(&ctx.platforms)
        } else {
            // Heavy skew toward a head of active users.
            let idx = ((ctx.users as f64 * (u * u * u)) as u64).min(ctx.users - 1);
            append_user_id(&mut user_id, ctx.ids, idx);
            ctx.user_platform(&mut ctx.user_rng(idx))
        };
        // Mostly the user's own platform; sometimes a second device.
        let p = if rng.f64() < 0.9 {
            primary
        } else {
            rng.pick(&ctx.platforms)
        };
        platform.append_value(p);
        let name = rng.pick(&ctx.event_names);
        event_name.append_value(name);
        if name == "feature_used" {
            feature.append_value(rng.pick(&ctx.features));
        } else {
            feature.append_null();
        }
    }

    let columns: Vec<ArrayRef> = vec![
        Arc::new(user_id.finish()),
        Arc::new(TimestampMicrosecondArray::from(times).with_timezone("UTC")),
        Arc::new(event_name.finish()),
        Arc::new(feature.finish()),
        Arc::new(platform.finish()),
    ];
    RecordBatch::try_new(events_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::TimestampMicrosecondType;
    use object_store::memory::InMemory;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use std::collections::BTreeMap;

    fn date(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    async fn all_files(store: &dyn ObjectStore) -> BTreeMap<String, Bytes> {
        let metas: Vec<_> = store.list(None).map(|m| m.unwrap()).collect().await;
        let mut out = BTreeMap::new();
        for m in metas {
            let b = store.get(&m.location).await.unwrap().bytes().await.unwrap();
            out.insert(m.location.to_string(), b);
        }
        out
    }

    fn read_batches(bytes: &Bytes) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect()
    }

    fn spec() -> SynthSpec {
        SynthSpec {
            users: 30_000,
            days: 9,
            seed: 42,
            end_date: date("2026-03-15"),
            events_per_day: None,
            ids: IdShape::Uuid,
        }
    }

    #[test]
    fn generate_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let root = Path::from("lake");
        let s = spec();
        let fut = generate(store, &root, &s);
        assert_send(&fut);
    }

    #[test]
    fn prng_is_stable() {
        // Pinned values: changing these changes every generated lake.
        let mut r = Rng(0);
        assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut a = Rng::from_key(7, &[1, 2]);
        let mut b = Rng::from_key(7, &[1, 2]);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_ne!(
            Rng::from_key(7, &[1, 2]).next_u64(),
            Rng::from_key(7, &[2, 1]).next_u64()
        );
        let mut user_ids = StringBuilder::new();
        append_user_id(&mut user_ids, IdShape::Sorted, 42);
        append_user_id(&mut user_ids, IdShape::Sorted, 1_234_567_890);
        let ids = user_ids.finish();
        assert_eq!(ids.value(0), "u000000042");
        assert_eq!(ids.value(1), "u1234567890");
        // Pinned: changing these changes every generated lake and its engagement exports.
        assert_eq!(user_id(IdShape::Sorted, 0), "u000000000");
        assert_eq!(user_id(IdShape::Uuid, 0), user_id(IdShape::Uuid, 0));
        assert_eq!(
            [user_id(IdShape::Uuid, 0), user_id(IdShape::Numeric, 0)],
            [UUID_0, NUMERIC_0]
        );
    }

    const UUID_0: &str = "952f14f1-e8dd-4c49-8523-3eaac5e5d24d";
    const NUMERIC_0: &str = "617099431508";

    #[test]
    fn id_shapes_are_distinct_unordered_and_well_formed() {
        let n = 200_000u64;
        for shape in IdShape::ALL {
            assert_eq!(shape.as_str().parse::<IdShape>(), Ok(shape));
            let ids: Vec<String> = (0..n).map(|i| user_id(shape, i)).collect();
            let distinct: HashSet<&str> = ids.iter().map(String::as_str).collect();
            assert_eq!(distinct.len(), ids.len(), "{shape}: ids repeat");
            let ascending = ids.windows(2).filter(|w| w[0] < w[1]).count();
            if shape == IdShape::Sorted {
                assert_eq!(ascending, ids.len() - 1);
            } else {
                // In no order: about half of neighbours ascend.
                let share = ascending as f64 / n as f64;
                assert!((share - 0.5).abs() < 0.01, "{shape}: {share}");
            }
        }
        for i in [0, 1, 7, 1 << 33, u64::from(u32::MAX)] {
            let u = user_id(IdShape::Uuid, i);
            let b = u.as_bytes();
            assert_eq!(b.len(), 36, "{u}");
            assert!([8, 13, 18, 23].iter().all(|&p| b[p] == b'-'), "{u}: dashes");
            assert_eq!(b[14], b'4', "{u}: version 4");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{u}: variant");
            assert!(
                u.bytes()
                    .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
            );
        }
        let lengths: HashSet<usize> = (0..10_000)
            .map(|i| user_id(IdShape::Numeric, i).len())
            .collect();
        assert!(lengths.len() >= 3, "mixed lengths: {lengths:?}");
        assert!((0..10_000).all(|i| {
            user_id(IdShape::Numeric, i)
                .bytes()
                .all(|c| c.is_ascii_digit())
        }));
        assert_eq!(
            "uuids".parse::<IdShape>().unwrap_err(),
            "unknown id shape `uuids` (expected uuid, numeric or sorted)"
        );
    }

    #[tokio::test]
    async fn deterministic_and_consistent() {
        let root = Path::from("lake");
        let s1: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let s2: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let r1 = generate(Arc::clone(&s1), &root, &spec()).await.unwrap();
        let r2 = generate(Arc::clone(&s2), &root, &spec()).await.unwrap();
        assert_eq!(r1, r2);
        let f1 = all_files(s1.as_ref()).await;
        let f2 = all_files(s2.as_ref()).await;
        assert_eq!(f1.keys().collect::<Vec<_>>(), f2.keys().collect::<Vec<_>>());
        for (k, v) in &f1 {
            assert_eq!(v, &f2[k], "{k} differs between runs");
        }

        // A different seed gives different data.
        let s3: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let mut other = spec();
        other.seed = 43;
        generate(Arc::clone(&s3), &root, &other).await.unwrap();
        let f3 = all_files(s3.as_ref()).await;
        assert_ne!(
            f1["lake/users/part-00000.parquet"],
            f3["lake/users/part-00000.parquet"]
        );

        // Marker.
        let m = read_marker(s1.as_ref(), &root)
            .await
            .unwrap()
            .expect("marker");
        assert_eq!(m.report, r1);
        assert_eq!(m.users, 30_000);
        assert_eq!(m.days, 9);
        assert_eq!(m.seed, 42);
        assert_eq!(m.end_date, "2026-03-15");
        assert_eq!(m.start_date, "2026-03-07");
        assert_eq!(m.events_per_day, 6_000);
        assert_eq!(m.spec().unwrap().end_date, spec().end_date);
        assert!(f1.contains_key("lake/_generated.json"));
        assert!(
            read_marker(s1.as_ref(), &Path::from("nowhere"))
                .await
                .unwrap()
                .is_none()
        );

        // Users: counts, uniqueness, non-null ids, null shares, time bounds.
        assert_eq!(r1.user_files, 1);
        let users = read_batches(&f1["lake/users/part-00000.parquet"]);
        let end_ts = midnight_micros(date("2026-03-15")) + 86_399 * MICROS_PER_SEC;
        let (mut rows, mut plan_null, mut country_null, mut seen_null, mut opt_null) =
            (0, 0, 0, 0, 0);
        let (mut seen7, mut seen30, mut us, mut free, mut free_zero) = (0, 0, 0, 0, 0);
        let mut ids = HashSet::new();
        for b in &users {
            assert_eq!(b.schema(), users_schema());
            let id = b.column(0).as_string::<i32>();
            let plan = b.column(1).as_string::<i32>();
            let country = b.column(2).as_string::<i32>();
            let signup = b.column(4).as_primitive::<TimestampMicrosecondType>();
            let seen = b.column(5).as_primitive::<TimestampMicrosecondType>();
            let ltv = b.column(7).as_primitive::<arrow::datatypes::Float64Type>();
            assert_eq!(id.null_count(), 0);
            for i in 0..b.num_rows() {
                assert!(
                    ids.insert(id.value(i).to_string()),
                    "duplicate {}",
                    id.value(i)
                );
                assert!(
                    signup.value(i) <= end_ts && signup.value(i) >= end_ts - 730 * MICROS_PER_DAY
                );
                if seen.is_valid(i) {
                    let t = seen.value(i);
                    assert!(t >= signup.value(i) && t <= end_ts);
                    seen7 += usize::from(t > end_ts - 7 * MICROS_PER_DAY);
                    seen30 += usize::from(t > end_ts - 30 * MICROS_PER_DAY);
                }
                us += usize::from(country.is_valid(i) && country.value(i) == "US");
                if plan.is_valid(i) && plan.value(i) == "free" {
                    free += 1;
                    free_zero += usize::from(ltv.value(i) == 0.0);
                }
                assert!(ltv.value(i) >= 0.0);
            }
            rows += b.num_rows();
            plan_null += plan.null_count();
            country_null += country.null_count();
            seen_null += seen.null_count();
            opt_null += b.column(6).null_count();
        }
        assert_eq!(rows as u64, r1.users);
        assert_eq!(ids.len(), 30_000);
        assert!(
            ids.contains(&user_id(IdShape::Uuid, 0))
                && ids.contains(&user_id(IdShape::Uuid, 29_999))
        );
        assert_eq!(m.ids, IdShape::Uuid);
        let share = |c: usize| c as f64 / rows as f64;
        let near = |c: usize, want: f64, tol: f64| {
            let got = share(c);
            assert!(
                (got - want).abs() <= tol,
                "share {got} not within {tol} of {want}"
            );
        };
        near(plan_null, 0.03, 0.006);
        near(country_null, 0.04, 0.006);
        near(seen_null, 0.05, 0.008);
        near(opt_null, 0.10, 0.01);
        near(us, 0.35, 0.02);
        near(seen7, 0.20, 0.025);
        near(seen30, 0.50, 0.03);
        assert!(free_zero as f64 / free as f64 > 0.85);

        // Events: exactly `days` partitions with the right dates, times inside the day.
        let mut event_rows = 0u64;
        let mut dirs = std::collections::BTreeSet::new();
        let (mut anon, mut feature_used, mut feature_set, mut offline) = (0, 0, 0, 0);
        for (k, v) in &f1 {
            let Some(rest) = k.strip_prefix("lake/events/event_date=") else {
                continue;
            };
            let (d, file) = rest.split_once('/').unwrap();
            assert_eq!(file, "part-00000.parquet");
            dirs.insert(d.to_string());
            let day_start = midnight_micros(date(d));
            let mut prev = i64::MIN;
            for b in read_batches(v) {
                assert_eq!(b.schema(), events_schema());
                let uid = b.column(0).as_string::<i32>();
                let t = b.column(1).as_primitive::<TimestampMicrosecondType>();
                let name = b.column(2).as_string::<i32>();
                let feat = b.column(3).as_string::<i32>();
                for i in 0..b.num_rows() {
                    let ts = t.value(i);
                    assert!(ts >= day_start && ts < day_start + MICROS_PER_DAY);
                    assert!(ts >= prev, "events sorted by time");
                    prev = ts;
                    if uid.is_valid(i) {
                        assert!(ids.contains(uid.value(i)), "unknown user {}", uid.value(i));
                    }
                    let is_feature = name.value(i) == "feature_used";
                    feature_used += usize::from(is_feature);
                    assert_eq!(feat.is_valid(i), is_feature);
                    if feat.is_valid(i) {
                        feature_set += 1;
                        offline += usize::from(feat.value(i) == "offline_mode");
                    }
                }
                anon += uid.null_count();
                event_rows += b.num_rows() as u64;
            }
        }
        assert_eq!(event_rows, r1.events);
        assert_eq!(r1.event_files, 9);
        let want: Vec<String> = (0..9)
            .map(|i| {
                (date("2026-03-07") + Days::new(i))
                    .format("%Y-%m-%d")
                    .to_string()
            })
            .collect();
        assert_eq!(dirs.into_iter().collect::<Vec<_>>(), want);
        let ev = event_rows as f64;
        assert!((anon as f64 / ev - 0.02).abs() < 0.005);
        assert!((feature_used as f64 / ev - 0.15).abs() < 0.01);
        assert_eq!(feature_used, feature_set);
        assert!((offline as f64 / feature_set as f64 - 0.08).abs() < 0.015);
        // 2026-03-07/08 are a weekend: ~20% fewer events than weekdays.
        assert!(
            events_on(&spec(), date("2026-03-07"))
                < events_on(&spec(), date("2026-03-09")) * 9 / 10
        );
    }

    #[tokio::test]
    async fn local_files_split_and_stale_cleanup() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let root = Path::from("out");
        let mut s = SynthSpec::new(2_500, 5, 1, date("2026-01-31"));
        s.events_per_day = Some(2_200); // weekdays ~2,130..2,270: two files; Saturday ~1,800: one
        let limits = Limits {
            users_per_file: 1_000,
            events_per_file: 2_000,
        };
        // A leftover from an earlier, longer generation, and an unrelated file.
        let stale = root
            .clone()
            .join("events")
            .join("event_date=2020-01-01")
            .join("part-00000.parquet");
        store
            .put(&stale, Bytes::from_static(b"old").into())
            .await
            .unwrap();
        let keep = root.clone().join("events").join("README.txt");
        store
            .put(&keep, Bytes::from_static(b"keep").into())
            .await
            .unwrap();

        let r = generate_with(Arc::clone(&store), &root, &s, limits)
            .await
            .unwrap();
        assert_eq!(r.users, 2_500);
        assert_eq!(r.user_files, 3);
        // 2026-01-27..31 are Tue..Sat: four weekdays split in two, Saturday in one.
        assert_eq!(r.event_files, 9);
        assert!(store.head(&stale).await.is_err(), "stale partition removed");
        assert!(store.head(&keep).await.is_ok(), "unrelated file kept");
        let files = all_files(store.as_ref()).await;
        let mut total = 0;
        for (k, v) in &files {
            if k.contains("/event_date=") {
                let n: usize = read_batches(v).iter().map(|b| b.num_rows()).sum();
                assert!(n as u64 <= limits.events_per_file);
                total += n as u64;
            }
        }
        assert_eq!(total, r.events);
        assert!(
            files
                .keys()
                .any(|k| k.ends_with("event_date=2026-01-28/part-00001.parquet"))
        );
        // Users across files: 1000 + 1000 + 500, in index order.
        let firsts: Vec<String> = (0..3)
            .map(|i| {
                let b = &read_batches(&files[&format!("out/users/part-{i:05}.parquet")])[0];
                b.column(0).as_string::<i32>().value(0).to_string()
            })
            .collect();
        let want: Vec<String> = [0, 1000, 2000]
            .into_iter()
            .map(|i| user_id(IdShape::Uuid, i))
            .collect();
        assert_eq!(firsts, want);
        // Regenerating smaller removes the now-surplus user file and partitions.
        let smaller = SynthSpec::new(1_500, 2, 1, date("2026-01-31"));
        let r2 = generate_with(Arc::clone(&store), &root, &smaller, limits)
            .await
            .unwrap();
        assert_eq!(r2.user_files, 2);
        let files = all_files(store.as_ref()).await;
        assert!(!files.contains_key("out/users/part-00002.parquet"));
        assert_eq!(
            files.keys().filter(|k| k.contains("event_date=")).count(),
            r2.event_files
        );
        assert!(read_marker(store.as_ref(), &root).await.unwrap().is_some());
    }

    #[test]
    fn markers_from_before_id_shapes_read_as_sorted() {
        let old = r#"{"generator":"cohort-bridge-synth/1","users":10,"days":1,"seed":1,
            "end_date":"2026-01-02","start_date":"2026-01-02","events_per_day":100,
            "report":{"users":10,"events":100,"user_files":1,"event_files":1}}"#;
        let m: SynthSpecJson = serde_json::from_str(old).unwrap();
        assert_eq!(m.spec().unwrap().ids, IdShape::Sorted);
    }

    #[tokio::test]
    async fn rejects_bad_specs() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let root = Path::from("x");
        let bad = SynthSpec::new(0, 3, 1, date("2026-01-01"));
        assert!(matches!(
            generate(Arc::clone(&store), &root, &bad).await,
            Err(SynthError::InvalidSpec(_))
        ));
        let bad = SynthSpec::new(10, 0, 1, date("2026-01-01"));
        assert!(matches!(
            generate(store, &root, &bad).await,
            Err(SynthError::InvalidSpec(_))
        ));
    }

    /// Rough timing: `cargo test --lib synth::tests::timing_2m -- --ignored --nocapture`.
    #[tokio::test(flavor = "multi_thread")]
    #[ignore]
    async fn timing_2m() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let days: u32 = std::env::var("SYNTH_DAYS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(30);
        let spec = SynthSpec::new(2_000_000, days, 7, date("2026-03-15"));
        let t = std::time::Instant::now();
        let r = generate(store, &Path::from("lake"), &spec).await.unwrap();
        eprintln!("{r:?} in {:.1?}", t.elapsed());
    }
}
