//! Feature uses a campaign caused, logged into the lake's `events` table next to the generated
//! files (the lift the emulator plants, for the analysis queries to recover).

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray};
use chrono::{DateTime, NaiveDate, Utc};
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

use super::SynthError;
use super::tables::{encode, events_schema, writer_props};

/// One feature use as the product logs it: `(user_id, feature, time)`. Whatever converts into
/// one can be written (the emulator's planted uses do), so synth names no caller's type.
pub type FeatureUse<'a> = (&'a str, &'a str, DateTime<Utc>);

/// Writes feature uses caused by a campaign (the emulator's planted lift,
/// `emulator::currents::Lift`) into the lake's `events` table, as the product would have logged
/// them: one `<name>.parquet` per `event_date` partition, next to the generated part files
/// (which `generate` never touches). The same `name` replaces what an earlier call wrote;
/// [`remove_feature_uses`] takes it away. Returns the rows written.
pub async fn write_feature_uses<'a, U>(
    store: &dyn ObjectStore,
    root: &Path,
    uses: &'a [U],
    name: &str,
) -> Result<u64, SynthError>
where
    FeatureUse<'a>: From<&'a U>,
{
    remove_feature_uses(store, root, name).await?;
    let mut by_day: BTreeMap<NaiveDate, Vec<FeatureUse<'a>>> = BTreeMap::new();
    for u in uses.iter().map(<FeatureUse<'a>>::from) {
        by_day.entry(u.2.date_naive()).or_default().push(u);
    }
    for (date, mut day) in by_day {
        day.sort_by_key(|&(_, _, time)| time);
        let path = root
            .clone()
            .join("events")
            .join(format!("event_date={date}"))
            .join(format!("{name}.parquet"));
        let n = day.len();
        let mut user_id = StringBuilder::with_capacity(n, n * 36);
        let mut feature = StringBuilder::with_capacity(n, n * 10);
        for &(id, used, _) in &day {
            user_id.append_value(id);
            feature.append_value(used);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(user_id.finish()),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    day.iter().map(|&(_, _, time)| time.timestamp_micros()),
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
