//! What to generate ([`SynthSpec`]), what was written ([`SynthReport`]) and the marker that
//! records both ([`SynthSpecJson`], `_generated.json`).

use chrono::{Days, NaiveDate};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::{IdShape, MARKER_FILE, SynthError};

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

pub(super) fn validate(spec: &SynthSpec) -> Result<(), SynthError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_from_before_id_shapes_read_as_sorted() {
        let old = r#"{"generator":"cohort-bridge-synth/1","users":10,"days":1,"seed":1,
            "end_date":"2026-01-02","start_date":"2026-01-02","events_per_day":100,
            "report":{"users":10,"events":100,"user_files":1,"event_files":1}}"#;
        let m: SynthSpecJson = serde_json::from_str(old).unwrap();
        assert_eq!(m.spec().unwrap().ids, IdShape::Sorted);
    }
}
