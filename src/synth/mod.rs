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

mod feature_uses;
mod generate;
mod ids;
mod plan;
mod rng;
mod spec;
mod tables;

use arrow::error::ArrowError;
use object_store::path::Path;
use parquet::errors::ParquetError;

pub use feature_uses::{FeatureUse, remove_feature_uses, write_feature_uses};
pub use generate::generate;
pub use ids::{IdShape, user_id};
pub use spec::{SynthReport, SynthSpec, SynthSpecJson, marker_path, read_marker};
pub use tables::{events_schema, users_schema};

/// Maximum rows in one `users/part-NNNNN.parquet` file.
pub const USERS_PER_FILE: u64 = 1_000_000;
/// Maximum rows in one events file; a day with more events is split into several files.
pub const EVENTS_PER_FILE: u64 = 2_000_000;
/// File name of the marker written last.
pub const MARKER_FILE: &str = "_generated.json";
/// Identifies the generator algorithm in the marker; bump when the output changes.
pub const GENERATOR: &str = "cohort-bridge-synth/2";

const MICROS_PER_SEC: i64 = 1_000_000;
const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SEC;

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
