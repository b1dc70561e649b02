//! Delivery: a plan of numbered batches, request bodies encoded in parallel with rayon, and an
//! async sender (tokio + reqwest) that paces, bounds concurrency, retries and acknowledges.
//!
//! The chain: `Plan` → `encode_in_background` (rayon, bounded channel) → `Sender::send_all`
//! (token bucket → attempt → verdict → retry or ack).

pub mod headers;
pub mod plan;
pub mod ratelimit;
pub mod requests;
pub mod retry;
pub mod sender;

use bytes::Bytes;
use std::sync::Arc;

/// One encoded HTTP request, ready to send (and to re-send: the body is cheap to clone).
#[derive(Debug, Clone)]
pub struct Request {
    pub url: Arc<str>,
    pub body: Bytes,
    /// Batch number within the plan (0 for one-off requests such as creating the cohort).
    pub batch: u64,
    /// How many ids the body carries.
    pub ids: usize,
    /// Headers of this request alone (a signature of its body), besides the destination's.
    pub headers: reqwest::header::HeaderMap,
}
