//! What the transport needs of a destination that takes requests: the request of each batch,
//! the headers every request carries, and what an answer means. Destinations (`src/destinations/`)
//! implement it; the sender and the plan know nothing else of them.

use std::ops::Range;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use reqwest::header::HeaderMap;

use super::Request;
use super::retry::{self, Answer, Verdict};
use crate::error::{Error, Result};

/// What a batch does to its ids' membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add,
    Remove,
}

impl Op {
    /// `add` or `remove`, as dead letters and history record it.
    pub fn name(self) -> &'static str {
        match self {
            Op::Add => "add",
            Op::Remove => "remove",
        }
    }
}

/// What a partner refused of a request it acknowledged (the transport's type: `retry` reads
/// answers without knowing any destination).
pub use super::retry::Refused;

/// Everything partner-specific about delivering a plan.
pub trait Destination: Send + Sync {
    /// Sent once per run before any batch (Cohort Import creates or renames the cohort).
    fn setup(&self, at: DateTime<Utc>) -> Option<Request>;

    /// The request applying `op` to `ids[range]`, numbered `batch` in the plan of `run_id` (the
    /// same on every retry and after a resume).
    fn batch(
        &self,
        run_id: &str,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Request;

    /// How many pacers the sender keeps, each at the destination's `requests_per_second`: one
    /// per endpoint the partner rate-limits on its own (`Request::lane` picks one).
    fn lanes(&self) -> usize {
        1
    }

    /// How many requests may leave back to back (each pacer's burst); `None`: `max_in_flight`.
    /// A partner that limits requests per second and sends no rate-limit headers to steer by
    /// wants a small burst, or the first second of a run (a burst, then the rate) overdraws it.
    fn burst(&self) -> Option<usize> {
        None
    }

    /// Headers every request carries besides `Content-Type: application/json`.
    fn headers(&self) -> &HeaderMap;

    /// What an answer means. The default: only the documented success JSON acknowledges.
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        retry::classify(answer)
    }

    /// Adds what the user can do about a refused key (401/403) to the error.
    fn explain(&self, e: Error) -> Error {
        e
    }

    /// Refuses, before anything is planned, members this destination cannot identify (sorted
    /// ids: see `cohort::identity`). The default accepts every kind.
    fn accepts(&self, _ids: &StringArray) -> Result<()> {
        Ok(())
    }
}
