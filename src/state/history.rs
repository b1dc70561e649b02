//! Membership history (issue 16): what every committed sync changed at the partner, kept as
//! Parquet id lists under `<state>/history/` and registered as the `cohort_changes` table.
//!
//! ```text
//! history/destination=<d>/cohort=<cohort_id>/run_at_ms=<ms>/committed_at_ms=<ms>/
//!     op=<add|remove|held_out|held_out_left>/ids.parquet
//! ```
//!
//! Every path segment but the file is a Hive partition, so the table's columns are `user_id`
//! (from the file) and `destination`, `cohort`, `run_at_ms` (the run's logical time, `--at`, in
//! milliseconds since the epoch), `committed_at_ms` (when the partner was known to hold the
//! change: the commit; commits of one cohort are serialized by its lock, and a shard's are its
//! own ids, so this orders every change of an id) and `op`: `add` and `remove` were sent to the
//! partner; `held_out` and `held_out_left` are members entering and leaving the cohort's
//! control group (`cohort::holdout`), never sent, recorded after the run's commit. A `reason`
//! column (null almost always) says why a `remove` needed no request to take effect: the partner
//! answered that it has no such profile (the member is gone). Keys stay short (about 130
//! characters under the state area): some S3-compatible servers limit them well below S3's
//! 1,024 bytes. The files are the run's own plan lists (copied: a hard link on local
//! disk, a server-side copy on object stores), so keeping history costs no rewrite of the ids.
//! `queries/analysis/members_as_of.sql` answers "members of each cohort as of `--at`".

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;

use crate::error::{Error, Result};

/// The folder under the state area.
pub const DIR: &str = "history";

/// The partition columns, in path order.
pub fn partitions() -> Vec<(String, DataType)> {
    [
        ("destination", DataType::Utf8),
        ("cohort", DataType::Utf8),
        ("run_at_ms", DataType::Int64),
        ("committed_at_ms", DataType::Int64),
        ("op", DataType::Utf8),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

/// The files' schema: the id lists of plans and snapshots, and, in a list written with
/// [`write_with_reasons`], why a change took effect without the partner applying it (files
/// without the column read it as null).
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("user_id", DataType::Utf8, false),
        Field::new("reason", DataType::Utf8, true),
    ]))
}

/// Writes `ids` to `path` with a `reason` column: `reasons[id]`, or null.
pub async fn write_with_reasons(
    store: &dyn ObjectStore,
    path: &Path,
    ids: &StringArray,
    reasons: &HashMap<&str, &str>,
) -> Result<()> {
    let reason: StringArray = ids
        .iter()
        .map(|id| id.and_then(|id| reasons.get(id).copied()))
        .collect();
    let schema = schema();
    let columns: Vec<ArrayRef> = vec![Arc::new(ids.clone()), Arc::new(reason)];
    let batch = RecordBatch::try_new(schema.clone(), columns)
        .map_err(|e| Error::Internal(format!("history with reasons: {e}")))?;
    let mut buf = Vec::new();
    let mut writer = ArrowWriter::try_new(&mut buf, schema, None)?;
    writer.write(&batch)?;
    writer.close()?;
    store.put(path, Bytes::from(buf).into()).await?;
    Ok(())
}

/// The folder of one committed run's changes.
pub fn run_dir(
    history: &Path,
    destination: &str,
    cohort_id: &str,
    at: DateTime<Utc>,
    committed_at: DateTime<Utc>,
) -> Path {
    history
        .clone()
        .join(format!("destination={destination}"))
        .join(format!("cohort={cohort_id}"))
        .join(format!("run_at_ms={}", at.timestamp_millis()))
        .join(format!(
            "committed_at_ms={}",
            committed_at.timestamp_millis()
        ))
}

/// The id list of `op` in a run's folder.
pub fn file(run_dir: &Path, op: &str) -> Path {
    run_dir.clone().join(format!("op={op}")).join("ids.parquet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_partition_is_a_path_segment_in_order() {
        let at: DateTime<Utc> = "2026-11-26T12:00:00Z".parse().unwrap();
        let p = file(
            &run_dir(&Path::from("s/history"), "braze", "active", at, at),
            "add",
        );
        let names: Vec<String> = p
            .parts()
            .filter_map(|part| part.as_ref().split_once('=').map(|(k, _)| k.to_string()))
            .collect();
        let want: Vec<String> = partitions().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, want);
        assert!(p.as_ref().ends_with("op=add/ids.parquet"), "{p}");
    }
}
