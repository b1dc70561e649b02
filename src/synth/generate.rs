//! Writing the lake: rows are built and encoded on the rayon pool, fed from `spawn_blocking`;
//! finished files travel over a bounded channel to the async side, which uploads a few at a time;
//! stale files of an earlier generation are removed and the marker is written last.

use std::collections::HashSet;
use std::sync::Arc;

use chrono::NaiveDate;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use rayon::prelude::*;

use super::plan::{Limits, Table, Task, TaskKind, plan_tasks};
use super::spec::validate;
use super::tables::{FileOut, GenContext, build_file};
use super::{GENERATOR, SynthError, SynthReport, SynthSpec, SynthSpecJson, marker_path};

/// Finished files waiting for upload (bounded, so generation can't run far ahead of uploads).
const CHANNEL_CAPACITY: usize = 2;
/// Concurrent `put`s.
const MAX_UPLOADS: usize = 4;

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

    let mut report = SynthReport {
        users: 0,
        events: 0,
        user_files,
        event_files,
    };
    write_files(&store, spec, tasks, &mut report).await?;
    remove_stale(store.as_ref(), root, &expected).await?;
    write_marker(store.as_ref(), &marker, spec, &report).await?;
    tracing::info!(
        users = report.users,
        events = report.events,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "synthetic lake written"
    );
    Ok(report)
}

/// Builds every file on the rayon pool (fed from `spawn_blocking`) and uploads it, at most
/// [`MAX_UPLOADS`] at a time, counting the rows written into `report`.
async fn write_files(
    store: &Arc<dyn ObjectStore>,
    spec: &SynthSpec,
    tasks: Vec<Task>,
    report: &mut SynthReport,
) -> Result<(), SynthError> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<FileOut, SynthError>>(CHANNEL_CAPACITY);
    let ctx = GenContext::new(spec);
    let producer = tokio::task::spawn_blocking(move || {
        // Runs on the rayon pool; a failed send means the consumer gave up: stop early.
        let _ = tasks.into_par_iter().try_for_each(|task| {
            let out = build_file(&ctx, task);
            tx.blocking_send(out).map_err(|_| ())
        });
    });

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
                        let store = Arc::clone(store);
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
    Ok(())
}

/// Writes `_generated.json`: the spec (defaults resolved) and the report.
async fn write_marker(
    store: &dyn ObjectStore,
    marker: &Path,
    spec: &SynthSpec,
    report: &SynthReport,
) -> Result<(), SynthError> {
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
        .put(marker, body.into())
        .await
        .map(|_| ())
        .map_err(|e| SynthError::store(marker, e))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::plan::events_on;
    use crate::synth::rng::midnight_micros;
    use crate::synth::{
        IdShape, MICROS_PER_DAY, MICROS_PER_SEC, events_schema, read_marker, user_id, users_schema,
    };
    use arrow::array::{Array, AsArray, RecordBatch};
    use arrow::datatypes::TimestampMicrosecondType;
    use bytes::Bytes;
    use chrono::Days;
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

    /// Rough timing: `cargo test --lib synth::generate::tests::timing_2m -- --ignored --nocapture`.
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
