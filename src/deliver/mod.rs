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
    /// `POST` unless a destination says otherwise (a `GET` with an empty body goes bodiless).
    pub method: reqwest::Method,
    pub url: Arc<str>,
    pub body: Bytes,
    /// Batch number within the plan (0 for one-off requests such as creating the cohort).
    pub batch: u64,
    /// How many ids the batch carries (every step of a batch says the batch's count).
    pub ids: usize,
    /// Headers of this request alone (a signature of its body), besides the destination's.
    pub headers: reqwest::header::HeaderMap,
    /// Which of the destination's pacers this request spends (`Destination::lanes`): a partner
    /// that limits endpoints separately gets one lane per limit.
    pub lane: usize,
    /// The destination's own state across the steps of one batch (`Verdict::Continue`).
    pub step: Option<Step>,
}

impl Request {
    /// A `POST` of `body` to `url`, carrying `ids` of batch `batch`, with no headers of its own.
    pub fn post(url: Arc<str>, body: Bytes, batch: u64, ids: usize) -> Request {
        Request {
            method: reqwest::Method::POST,
            url,
            body,
            batch,
            ids,
            headers: reqwest::header::HeaderMap::new(),
            lane: 0,
            step: None,
        }
    }
}

/// Requests are equal when they send the same thing (their steps are not compared).
impl PartialEq for Request {
    fn eq(&self, other: &Request) -> bool {
        (
            &self.method,
            &self.url,
            &self.body,
            self.batch,
            self.ids,
            self.lane,
        ) == (
            &other.method,
            &other.url,
            &other.body,
            other.batch,
            other.ids,
            other.lane,
        ) && self.headers == other.headers
    }
}

/// A destination's state carried from one step of a batch to the next (what a job poll
/// needs, the items left to send): opaque to the transport.
#[derive(Clone)]
pub struct Step(Arc<dyn std::any::Any + Send + Sync>);

impl Step {
    pub fn new<T: std::any::Any + Send + Sync>(value: T) -> Step {
        Step(Arc::new(value))
    }

    /// The state, when it is a `T`.
    pub fn get<T: std::any::Any>(&self) -> Option<&T> {
        self.0.downcast_ref()
    }
}

impl std::fmt::Debug for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Step(..)")
    }
}
