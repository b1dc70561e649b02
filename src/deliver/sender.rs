//! The async sender: one reqwest client (one connection pool), a bounded number of requests in
//! flight, every attempt paced by the shared token bucket, and retries decided by `Verdict`.
//!
//! Order of the policy, per attempt: concurrency slot (held across retries, so a struggling
//! request does not let more pile up) → pacer token (every attempt spends partner quota) →
//! per-attempt timeout → verdict → backoff or ack.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Request;
use super::ratelimit::{Pacer, Ticket};
use super::retry::{Backoff, Verdict, classify};
use crate::config::DestinationConfig;
use crate::error::{Error, Result};

/// Longest response body kept for error messages.
const MAX_ERROR_BODY: usize = 4096;

pub struct Sender {
    client: reqwest::Client,
    pacer: Pacer,
    backoff: Backoff,
    max_in_flight: usize,
    stats: Counters,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    retries: AtomicU64,
    acked_batches: AtomicU64,
    acked_ids: AtomicU64,
}

/// What a sender did so far.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SendStats {
    /// HTTP attempts, retries included.
    pub requests: u64,
    pub retries: u64,
    pub acked_batches: u64,
    pub acked_ids: u64,
}

impl Sender {
    pub fn new(dest: &DestinationConfig) -> Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(dest.request_timeout)
            .connect_timeout(dest.request_timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(dest.max_in_flight)
            .tcp_nodelay(true)
            .user_agent(concat!("cohort-bridge/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Internal(format!("cannot build the HTTP client: {e}")))?;
        // Jitter seed from the clock: concurrent runs should not retry in lockstep.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(Sender {
            client,
            pacer: Pacer::new(dest.requests_per_second, dest.max_in_flight),
            backoff: Backoff::new(dest.retry.clone(), seed),
            max_in_flight: dest.max_in_flight,
            stats: Counters::default(),
        })
    }

    pub fn stats(&self) -> SendStats {
        SendStats {
            requests: self.stats.requests.load(Ordering::Relaxed),
            retries: self.stats.retries.load(Ordering::Relaxed),
            acked_batches: self.stats.acked_batches.load(Ordering::Relaxed),
            acked_ids: self.stats.acked_ids.load(Ordering::Relaxed),
        }
    }

    /// Sends every request from `requests` with at most `max_in_flight` at once; `on_ack` runs
    /// for each acknowledged one. The first permanent failure stops the run (requests in
    /// flight are abandoned: their batches are simply not acknowledged).
    pub async fn send_all(
        &self,
        requests: mpsc::Receiver<Request>,
        on_ack: impl Fn(&Request) + Sync,
    ) -> Result<()> {
        let on_ack = &on_ack;
        self.for_each(requests, |request| async move {
            self.send(&request).await?;
            on_ack(&request);
            Ok(())
        })
        .await
    }

    /// Runs `f` for every request from `requests`, at most `max_in_flight` at once; the first
    /// error stops the run. `f` decides what sending and acknowledging mean.
    pub async fn for_each<F, Fut>(&self, requests: mpsc::Receiver<Request>, f: F) -> Result<()>
    where
        F: Fn(Request) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        futures::stream::unfold(requests, |mut rx| async move {
            rx.recv().await.map(|r| (Ok::<_, Error>(r), rx))
        })
        .try_for_each_concurrent(self.max_in_flight, f)
        .await
    }

    /// Sends one request until it is acknowledged, permanently rejected, or out of retries.
    pub async fn send(&self, request: &Request) -> Result<()> {
        let first = Instant::now();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let ticket = self.pacer.acquire().await;
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let verdict = self.attempt(request, ticket).await;
            let (reason, after) = match verdict {
                Verdict::Success => {
                    self.stats
                        .acked_batches
                        .fetch_add(u64::from(request.ids > 0), Ordering::Relaxed);
                    self.stats
                        .acked_ids
                        .fetch_add(request.ids as u64, Ordering::Relaxed);
                    debug!(
                        batch = request.batch,
                        ids = request.ids,
                        attempt,
                        "acknowledged"
                    );
                    return Ok(());
                }
                Verdict::Reject { status, message } => {
                    return Err(Error::PartnerRejected {
                        what: describe(request),
                        status,
                        message,
                    });
                }
                Verdict::Retry { reason, after } => (reason, after),
            };
            let retry = self.backoff.config();
            let mut wait = self.backoff.delay(attempt);
            if let Some(after) = after {
                // The partner said when: every request waits, not only this one.
                self.pacer.pause_for(after);
                wait = wait.max(after);
            }
            let elapsed = first.elapsed();
            if attempt >= retry.max_attempts || elapsed + wait > retry.max_elapsed {
                return Err(Error::Delivery(format!(
                    "{}: gave up after {attempt} attempts in {:.1}s; last error: {reason}",
                    describe(request),
                    elapsed.as_secs_f64()
                )));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            warn!(
                batch = request.batch,
                attempt,
                wait_ms = wait.as_millis() as u64,
                reason = %reason,
                "transient failure, retrying"
            );
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(&self, request: &Request, ticket: Ticket) -> Verdict {
        let response = self
            .client
            .post(&*request.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(request.body.clone())
            .send()
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Retry {
                    reason: transport_error(&e),
                    after: None,
                };
            }
        };
        self.pacer.observe(response.headers(), ticket);
        let status = response.status();
        let headers = response.headers().clone();
        if status.is_success() {
            // Drain the body so the connection goes back to the pool.
            return match response.bytes().await {
                Ok(_) => Verdict::Success,
                Err(e) => Verdict::Retry {
                    reason: transport_error(&e),
                    after: None,
                },
            };
        }
        let body = match response.bytes().await {
            Ok(b) => String::from_utf8_lossy(&b[..b.len().min(MAX_ERROR_BODY)]).into_owned(),
            Err(e) => transport_error(&e),
        };
        classify(status, &headers, &body)
    }
}

fn describe(request: &Request) -> String {
    if request.ids == 0 {
        format!("POST {}", request.url)
    } else {
        format!(
            "batch {} ({} ids) to {}",
            request.batch, request.ids, request.url
        )
    }
}

/// A transport failure in words, without the URL's query (which carries nothing secret here,
/// but may elsewhere).
fn transport_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "response body error"
    } else {
        "connection error"
    };
    let mut source = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}
