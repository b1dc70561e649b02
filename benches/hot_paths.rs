//! Criterion micro-benchmarks of the hot paths, on seeded data, each checking its counts before
//! it is timed: `cargo bench --bench hot_paths` (add a name to run some: `-- diff`).
//!
//! - `members/…`: the cohort's ids from the query's arrays, sorted and de-duplicated (rayon):
//!   `shuffled` (`u000000000`-style ids in no order, 5% repeated), `sorted` (the same ids
//!   arriving in order, the best case) and `uuid_shuffled` (UUID v4 ids in no order, as product
//!   lakes hold them) — the cost should not depend on the order.
//! - `diff/merge`: the change between a snapshot and the cohort (one merge pass).
//! - `plan/encode`: cutting sorted ids into 1,000-id batches and encoding their request bodies with
//!   rayon, through the bounded channel the sender reads.
//! - `ingest/avro_decode`: Currents Avro files (the emulator's export) decoded block by block.
//! - `ingest/normalise`: decode plus normalising every record into `partner_events` columns.
//!
//! The end-to-end benchmark (20M users, the emulator in its own process) is `benches/e2e.py`.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cohort_bridge::cohort::diff::diff;
use cohort_bridge::cohort::distinct_sorted;
use cohort_bridge::deliver::plan::{batches, encode_in_background};
use cohort_bridge::destinations::braze_cohorts::{self, Braze};
use cohort_bridge::destinations::{Destination, FromSettings, Op, parse_config};
use cohort_bridge::emulator::currents::{EngagementSpec, PushCampaign, write_engagement};
use cohort_bridge::ingest::event::EventColumns;
use cohort_bridge::ingest::formats::avro::read_file;
use cohort_bridge::ingest::limits::Limits;
use cohort_bridge::synth::{IdShape, user_id};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use datafusion::arrow::array::{Array, StringArray};
use futures::TryStreamExt;
use object_store::memory::InMemory;
use object_store::{ObjectStore, ObjectStoreExt};

const SEED: u64 = 42;
const IDS: usize = 1_000_000;

/// SplitMix64: the same seeded sequence on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn id(n: u64) -> String {
    format!("u{n:09}")
}

/// Sorted, distinct ids `u…` of every number in `range` whose `keep` is true.
fn sorted_ids(range: std::ops::Range<u64>, keep: impl Fn(u64) -> bool) -> StringArray {
    StringArray::from_iter_values(range.filter(|n| keep(*n)).map(id))
}

fn members(c: &mut Criterion) {
    // The query's output: 8 arrays in no order, 1M rows of which 5% repeat an earlier id.
    let mut rng = Rng(SEED);
    let mut rows: Vec<u64> = (0..IDS as u64 * 95 / 100).collect();
    let distinct = rows.len();
    for i in 0..IDS - distinct {
        rows.push(i as u64 * 19 % distinct as u64);
    }
    for i in (1..rows.len()).rev() {
        rows.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let columns: Vec<StringArray> = rows
        .chunks(rows.len().div_ceil(8))
        .map(|c| StringArray::from_iter_values(c.iter().map(|n| id(*n))))
        .collect();
    let once = distinct_sorted(&columns);
    assert_eq!(once.ids.len(), distinct);
    assert_eq!(once.duplicates_removed, (IDS - distinct) as u64);

    let sorted_columns: Vec<StringArray> = {
        let mut all: Vec<u64> = rows.clone();
        all.sort_unstable();
        all.chunks(all.len().div_ceil(8))
            .map(|c| StringArray::from_iter_values(c.iter().map(|n| id(*n))))
            .collect()
    };
    assert_eq!(distinct_sorted(&sorted_columns).ids, once.ids);
    let uuid_columns: Vec<StringArray> = rows
        .chunks(rows.len().div_ceil(8))
        .map(|c| StringArray::from_iter_values(c.iter().map(|n| user_id(IdShape::Uuid, *n))))
        .collect();
    assert_eq!(distinct_sorted(&uuid_columns).ids.len(), distinct);

    let mut g = c.benchmark_group("members");
    g.throughput(Throughput::Elements(IDS as u64))
        .sample_size(10);
    for (name, columns) in [
        ("shuffled", &columns),
        ("sorted", &sorted_columns),
        ("uuid_shuffled", &uuid_columns),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| assert_eq!(distinct_sorted(black_box(columns)).ids.len(), distinct))
        });
    }
    g.finish();
}

fn diffs(c: &mut Criterion) {
    // 1% churn each way: the snapshot lacks ids ≡ 0 (mod 100), the cohort lacks ≡ 1.
    let n = IDS as u64;
    let before = sorted_ids(0..n, |i| i % 100 != 0);
    let now = sorted_ids(0..n, |i| i % 100 != 1);
    let once = diff(&before, &now);
    assert_eq!(
        (once.adds.len(), once.removes.len()),
        (IDS / 100, IDS / 100)
    );

    let mut g = c.benchmark_group("diff");
    g.throughput(Throughput::Elements((before.len() + now.len()) as u64));
    g.sample_size(20);
    g.bench_function("merge", |b| {
        b.iter(|| {
            let d = diff(black_box(&before), black_box(&now));
            assert_eq!(d.adds.len() + d.removes.len(), IDS / 50);
        })
    });
    g.finish();
}

fn plan(c: &mut Criterion) {
    let config = parse_config(
        r#"
[lake]
url = "lake"
[destinations.partner]
kind = "braze"
base_url = "http://127.0.0.1:9"
partner = "cohort-bridge"
partner_api_key_env = "PK"
client_secret_env = "CS"
[cohorts.bench]
"#,
        Path::new("bench.toml"),
    )
    .expect("the bench project parses");
    let cohort = config.cohort("bench").expect("cohort");
    let creds = config
        .credentials("partner", &|v| Some(format!("{v}-secret-value")))
        .expect("credentials");
    let Some(kind) = config
        .destination("partner")
        .expect("destination")
        .settings::<braze_cohorts::Config>()
    else {
        panic!("the bench destination is a Cohort Import one");
    };
    let braze: Arc<dyn Destination> =
        Arc::new(Braze::new(kind, &creds, &cohort).expect("a Cohort Import destination"));
    let ids = Arc::new(sorted_ids(0..IDS as u64, |_| true));
    let encode = || {
        let mut rx = encode_in_background(
            braze.clone(),
            "bench".into(),
            ids.clone(),
            batches(ids.len(), 1000),
            Op::Add,
            64,
        );
        let (mut requests, mut sent, mut bytes) = (0, 0, 0);
        while let Some(r) = rx.blocking_recv() {
            requests += 1;
            sent += r.ids;
            bytes += r.body.len();
        }
        (requests, sent, bytes)
    };
    let (requests, sent, bytes) = encode();
    assert_eq!((requests, sent), (IDS / 1000, IDS));

    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(IDS as u64))
        .sample_size(10);
    g.bench_function("encode", |b| {
        b.iter(|| assert_eq!(encode().2, bytes));
    });
    g.finish();
}

/// The emulator's Currents export for `users` members: every Avro file's path and bytes.
fn currents(users: u64) -> (Vec<(String, Bytes)>, u64) {
    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    runtime.block_on(async {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let spec = EngagementSpec {
            seed: SEED,
            at: "2026-11-20T10:00:00Z".parse().expect("time"),
            push_campaigns: vec![PushCampaign {
                cohort_id: None,
                campaign_id: "camp".into(),
                campaign_name: "Campaign".into(),
                feature: None,
            }],
            lift: Default::default(),
        };
        let members = (0..users).map(id).collect();
        let report = write_engagement(
            store.clone(),
            &object_store::path::Path::from("currents"),
            &[("bench".into(), members)],
            &spec,
        )
        .await
        .expect("export");
        let metas: Vec<_> = store.list(None).try_collect().await.expect("list");
        let mut files = Vec::new();
        for m in metas {
            let bytes = store.get(&m.location).await.expect("get");
            files.push((m.location.to_string(), bytes.bytes().await.expect("bytes")));
        }
        files.sort();
        (files, report.events)
    })
}

fn ingest(c: &mut Criterion) {
    let (files, events) = currents(100_000);
    let size: usize = files.iter().map(|(_, b)| b.len()).sum();
    let decode = || {
        let mut records = 0u64;
        for (_, bytes) in &files {
            let broken = read_file(bytes, &Limits::default(), |_, parts| {
                records += 1;
                black_box(parts.map(|p| p.properties.len())).map(|_| ())
            });
            assert!(broken.is_none(), "{broken:?}");
        }
        records
    };
    let normalise = || {
        let mut rows = 0usize;
        for (path, bytes) in &files {
            let mut columns = EventColumns::default();
            let folder = cohort_bridge::ingest::listing::event_type_of(path);
            read_file(bytes, &Limits::default(), |_, parts| {
                columns.push(parts?, folder, path)
            });
            rows += columns.finish().num_rows();
        }
        rows as u64
    };
    assert_eq!(decode(), events);
    assert_eq!(normalise(), events);

    let mut g = c.benchmark_group("ingest");
    g.throughput(Throughput::Elements(events)).sample_size(10);
    g.bench_function("avro_decode", |b| b.iter(|| assert_eq!(decode(), events)));
    g.bench_function("normalise", |b| b.iter(|| assert_eq!(normalise(), events)));
    g.finish();
    eprintln!(
        "ingest input: {} Avro files, {events} records, {size} bytes",
        files.len()
    );
}

criterion_group!(benches, members, diffs, plan, ingest);
criterion_main!(benches);
