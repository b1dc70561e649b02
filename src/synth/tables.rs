//! What the `users` and `events` tables hold: their schemas, the distributions their values are
//! drawn from, and the builders of one file's rows (CPU work, run on rayon).

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Array, RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use bytes::Bytes;
use chrono::NaiveDate;
use object_store::path::Path;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::errors::ParquetError;
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use super::ids::append_user_id;
use super::plan::{Table, Task, TaskKind};
use super::rng::{Rng, TAG_EVENTS, TAG_USER, cumulative, date_key, midnight_micros};
use super::{GENERATOR, IdShape, MICROS_PER_DAY, MICROS_PER_SEC, SynthError, SynthSpec};

/// Rows per Parquet row group (several row groups per file help parallel scans and pruning).
const ROW_GROUP_ROWS: usize = 256 * 1024;

/// Of users ever seen: share seen in the last 7 days, and in the last 30 (before clamping to
/// the account's lifetime, which pushes a few more recent signups into the recent buckets).
const P_SEEN_7D: f64 = 0.185;
const P_SEEN_30D: f64 = 0.49;

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
pub(super) struct GenContext {
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
    pub(super) fn new(spec: &SynthSpec) -> Self {
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

pub(super) fn writer_props(
    sorted_column: Option<i32>,
    user_id_dictionary: bool,
) -> WriterProperties {
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

pub(super) struct FileOut {
    pub(super) table: Table,
    pub(super) path: Path,
    pub(super) rows: u64,
    pub(super) bytes: Bytes,
}

// ---------------------------------------------------------------------------------------------
// File builders (CPU; run on rayon)

pub(super) fn build_file(ctx: &GenContext, task: Task) -> Result<FileOut, SynthError> {
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

pub(super) fn encode(batch: &RecordBatch, props: WriterProperties) -> Result<Bytes, ParquetError> {
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
