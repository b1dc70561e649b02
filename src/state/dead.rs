//! Dead letters: ids the partner refused permanently (400), isolated by splitting their batch.
//! While a run is pending they are kept per batch under `pending/dead/`; when it commits they
//! are written as `dead_letters/<run_id>.parquet` and left out of the committed snapshot (an
//! add the partner refused is not a member there), so the next run tries them again.
//!
//! A removal the partner answered with "no such profile" is kept beside them as change
//! [`GONE`] until the commit: it is no dead letter (the member is gone from the partner, so the
//! removal is done), but its reason goes into the history.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};

use super::CohortState;
use crate::error::{Error, Result};
use crate::storage::json::{Read, try_read_json, write_json};

pub use super::paths::DEAD_PENDING as PENDING;

/// The `change` of a removal the partner did not need: it has no such profile.
pub const GONE: &str = "gone";

/// The batch number of a pending dead-letter object (`pending/dead/<batch>.json`).
pub fn batch_of(path: &object_store::path::Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeadLetter {
    pub user_id: String,
    /// `add` or `remove`; [`GONE`] for a removal done because the profile does not exist.
    pub change: String,
    /// The partner's message.
    pub reason: String,
    pub batch: u64,
}

/// Records the dead letters of one batch (before the batch is journaled as done).
pub async fn record(state: &CohortState, batch: u64, dead: &[DeadLetter]) -> Result<()> {
    write_json(
        state.store.as_ref(),
        &state.path(&format!("{PENDING}/{batch:010}.json")),
        &dead,
    )
    .await
}

/// Every dead letter recorded for the pending plan.
pub async fn pending(state: &CohortState) -> Result<Vec<DeadLetter>> {
    let listed: Vec<_> = state
        .store
        .list(Some(&state.path(PENDING)))
        .try_collect()
        .await?;
    let mut out = Vec::new();
    for meta in listed {
        match try_read_json::<Vec<DeadLetter>>(state.store.as_ref(), &meta.location).await? {
            Read::Ok(batch) => out.extend(batch),
            Read::Missing => {}
            Read::Corrupt(why) => return Err(state.unreadable(&meta.location, &why, "repair")),
        }
    }
    out.sort_by(|a, b| (&a.change, &a.user_id).cmp(&(&b.change, &b.user_id)));
    Ok(out)
}

/// The refusals among a plan's pending dead letters: all but the removals of profiles gone.
pub fn refusals(pending: &[DeadLetter]) -> Vec<DeadLetter> {
    pending
        .iter()
        .filter(|d| d.change != GONE)
        .cloned()
        .collect()
}

/// Writes `dead_letters/<run_id>.parquet` (idempotent: same run, same file).
pub async fn write(
    state: &CohortState,
    run_id: &str,
    cohort_id: &str,
    at: DateTime<Utc>,
    dead: &[DeadLetter],
) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("cohort_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("change", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, false),
        Field::new(
            "run_at",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let n = dead.len();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run_id; n])),
        Arc::new(StringArray::from(vec![cohort_id; n])),
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| d.user_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| d.change.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            dead.iter().map(|d| crate::redact::scrub(&d.reason)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(vec![at.timestamp_micros(); n]).with_timezone("UTC"),
        ),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    let path = state.path(&super::paths::dead_letters(run_id));
    state.store.put(&path, Bytes::from(buf).into()).await?;
    Ok(())
}
