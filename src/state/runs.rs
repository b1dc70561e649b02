//! Run history: one row per `sync` of a cohort (dry runs excepted), as a Parquet file under
//! `<state>/runs/run_date=YYYY-MM-DD/<run_id>.parquet`, registered as the `runs` table so it is
//! queryable like any lake table. This is how a team sees whether the integration is used and
//! healthy: how often it runs, how much it moves, how often it fails and why.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{
    ArrayRef, Int32Array, StringArray, TimestampMicrosecondArray, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};
use crate::storage::Location;

/// One row of the `runs` table.
#[derive(Debug, Clone, Default)]
pub struct RunRecord {
    pub run_id: String,
    pub command: String,
    pub cohort: Option<String>,
    pub destination: Option<String>,
    pub started_at: DateTime<Utc>,
    pub ended_at: DateTime<Utc>,
    /// The run's logical time (`--at`).
    pub run_at: Option<DateTime<Utc>>,
    pub members: Option<u64>,
    pub adds: Option<u64>,
    pub removes: Option<u64>,
    pub requests: Option<u64>,
    pub retries: Option<u64>,
    pub dead_letters: Option<u64>,
    /// `delivered`, `unchanged`, `failed`, `locked`, `interrupted` (SIGTERM/SIGINT), ...
    pub outcome: String,
    pub exit_code: i32,
    pub error: Option<String>,
}

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The file schema (the `run_date` partition column is added by the table).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("command", DataType::Utf8, false),
        Field::new("cohort", DataType::Utf8, true),
        Field::new("destination", DataType::Utf8, true),
        Field::new("started_at", ts(), false),
        Field::new("ended_at", ts(), false),
        Field::new("run_at", ts(), true),
        Field::new("members", DataType::UInt64, true),
        Field::new("adds", DataType::UInt64, true),
        Field::new("removes", DataType::UInt64, true),
        Field::new("requests", DataType::UInt64, true),
        Field::new("retries", DataType::UInt64, true),
        Field::new("dead_letters", DataType::UInt64, true),
        Field::new("outcome", DataType::Utf8, false),
        Field::new("exit_code", DataType::Int32, false),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// Appends one row (one small Parquet object; the run id makes it unique).
pub async fn append(state: &Location, r: &RunRecord) -> Result<()> {
    let tsa = |t: Option<DateTime<Utc>>| -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from(vec![t.map(|t| t.timestamp_micros())])
                .with_timezone("UTC"),
        )
    };
    let u = |v: Option<u64>| -> ArrayRef { Arc::new(UInt64Array::from(vec![v])) };
    let s = |v: Option<&str>| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let columns: Vec<ArrayRef> = vec![
        s(Some(&r.run_id)),
        s(Some(&r.command)),
        s(r.cohort.as_deref()),
        s(r.destination.as_deref()),
        tsa(Some(r.started_at)),
        tsa(Some(r.ended_at)),
        tsa(r.run_at),
        u(r.members),
        u(r.adds),
        u(r.removes),
        u(r.requests),
        u(r.retries),
        u(r.dead_letters),
        s(Some(&r.outcome)),
        Arc::new(Int32Array::from(vec![r.exit_code])),
        s(r.error.as_deref()),
    ];
    let batch = RecordBatch::try_new(schema(), columns)
        .map_err(|e| Error::Internal(format!("runs row: {e}")))?;
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema(), None)?;
    writer.write(&batch)?;
    writer.close()?;
    let path = state.child(&format!(
        "runs/run_date={}/{}.parquet",
        r.started_at.format("%Y-%m-%d"),
        r.run_id
    ));
    state.store.put(&path, Bytes::from(buf).into()).await?;
    Ok(())
}
