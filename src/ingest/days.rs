//! The days being written: each `event_date` partition one Parquet object, opened with what the
//! day holds (or empty, when a backfill replaces it), appended to with the events it lacks (by a
//! 128-bit fingerprint of each event id), and switched whole when it is closed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{filter_record_batch, take_record_batch};
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::async_writer::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::event;
use super::ledger::BackfillState;
use super::limits::{MAX_OPEN_DAYS, ROW_GROUP_BYTES, UPLOAD_CONCURRENCY, UPLOAD_PART_BYTES};
use crate::error::{Error, Result};
use crate::storage::ObjectFile;

/// Rows per Parquet row group (with [`ROW_GROUP_BYTES`], bounds the memory of an open day).
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// The fingerprints of a batch's event ids, row by row.
pub(super) fn fingerprints_of(batch: &RecordBatch) -> Vec<u128> {
    let fp = Fingerprints::new();
    event::ids(batch)
        .iter()
        .map(|id| fp.of(id.unwrap_or_default()))
        .collect()
}

/// The rows of a batch (and their fingerprints) grouped by day; no copy when the batch holds
/// one day, as most do.
pub(super) fn split_by_day(
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
pub(super) struct Days {
    store: Arc<dyn ObjectStore>,
    table_dir: Path,
    /// A backfill replaces a day the first time it opens it; otherwise (and afterwards) a day
    /// is merged with what it holds.
    backfill: bool,
    open: HashMap<i32, OpenDay>,
    clock: u64,
    fingerprints: Fingerprints,
    /// Days opened so far, with those an interrupted backfill had already replaced.
    pub(super) opened: BTreeSet<i32>,
    /// Days switched by this run.
    pub(super) written: BTreeSet<i32>,
    pub(super) added: u64,
    pub(super) duplicates: u64,
}

struct OpenDay {
    writer: AsyncArrowWriter<BufWriter>,
    seen: IdSet,
    last_use: u64,
}

impl Days {
    pub(super) fn new(
        store: Arc<dyn ObjectStore>,
        table_dir: Path,
        backfill: Option<&BackfillState>,
    ) -> Self {
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
    pub(super) async fn append(
        &mut self,
        day: i32,
        rows: RecordBatch,
        fingerprints: &[u128],
    ) -> Result<()> {
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

    pub(super) async fn close_all(&mut self) -> Result<()> {
        let days: Vec<i32> = self.open.keys().copied().collect();
        for day in days {
            self.close(day).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::decode_file;
    use crate::ingest::formats::Format;
    use crate::ingest::limits::Limits;

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
            Format::NdJson,
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
}
