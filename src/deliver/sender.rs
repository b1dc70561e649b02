//! The async sender: one reqwest client (one connection pool), a bounded number of requests in
//! flight, every attempt paced by the shared token bucket, and retries decided by `Verdict`.
//!
//! Order of the policy, per attempt: concurrency slot (held across retries, so a struggling
//! request does not let more pile up) → pacer token (every attempt spends partner quota) →
//! per-attempt timeout → verdict → backoff or ack.
//!
//! What a defensive client assumes: only the documented success acknowledges, redirects are
//! never followed (a 3xx ends the run, exit 2, naming where it pointed), no header makes a
//! request wait longer than `retry.max_backoff` at once or `retry.max_elapsed` in all (a
//! partner asking for more ends the request, quoting what it asked), every wait over 5 s is
//! logged with its reason, nothing starts after the run's deadline, and every text from the
//! partner is redacted before it goes anywhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Request;
use super::headers::Asked;
use super::ratelimit::{LOGGED_WAIT, Pacer, Ticket};
use super::requests::{Destination, Refused};
use super::retry::{Answer, Backoff, Verdict};
use crate::config::{DeliverySettings, human_duration};
use crate::error::{Error, Result};
use crate::redact;

/// Longest response body read (a success is a few bytes; an error is shown in part).
const MAX_BODY: usize = 64 * 1024;

/// What a sender asks before every attempt: may this run still start a request? (The run's
/// lock: a run fenced off by another must not send.)
pub trait Fence: Send + Sync {
    fn guard(&self) -> futures::future::BoxFuture<'_, Result<()>>;
}

pub struct Sender {
    client: reqwest::Client,
    /// Asked before every attempt; its error stops the run.
    fence: Option<Arc<dyn Fence>>,
    /// Headers of every request, and what an answer means.
    destination: Arc<dyn Destination>,
    /// One per lane of the destination (`Destination::lanes`).
    pacers: Vec<Pacer>,
    backoff: Backoff,
    max_in_flight: usize,
    /// No attempt starts after this (the destination's `deadline`, from the run's start).
    deadline: Instant,
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
    /// A sender delivering with `dest`'s settings, whose run must end by `deadline`.
    pub fn new(
        dest: &DeliverySettings,
        destination: Arc<dyn Destination>,
        deadline: Instant,
    ) -> Result<Self> {
        let client = reqwest::Client::builder()
            // Never follow a redirect: keys travel in the body (and headers) and must not
            // reach another host; a POST turned into a GET would be "acknowledged" unapplied.
            .redirect(reqwest::redirect::Policy::none())
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
        let pacers = (0..destination.lanes().max(1))
            .map(|_| {
                Pacer::new(
                    dest.requests_per_second,
                    destination
                        .burst()
                        .map_or(dest.max_in_flight, |b| b.clamp(1, dest.max_in_flight)),
                    dest.retry.max_backoff,
                )
            })
            .collect();
        Ok(Sender {
            client,
            fence: None,
            destination,
            pacers,
            backoff: Backoff::new(dest.retry.clone(), seed),
            max_in_flight: dest.max_in_flight,
            deadline,
            stats: Counters::default(),
        })
    }

    /// Asks `fence` before every attempt.
    pub fn fenced(mut self, fence: Arc<dyn Fence>) -> Self {
        self.fence = Some(fence);
        self
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
            if !self.send(&request).await?.is_empty() {
                return Err(Error::Internal(format!(
                    "{}: the partner refused items, and this caller records no dead letters",
                    describe(&request)
                )));
            }
            on_ack(&request);
            Ok(())
        })
        .await
    }

    /// Runs `f` for every request from `requests`, at most `max_in_flight` at once; the first
    /// error stops the run. `f` decides what sending and acknowledging mean. Past the run's
    /// deadline no new request is taken; those in flight finish (and are acknowledged), then
    /// the deadline is the error.
    pub async fn for_each<F, Fut>(&self, requests: mpsc::Receiver<Request>, f: F) -> Result<()>
    where
        F: Fn(Request) -> Fut,
        Fut: std::future::Future<Output = Result<()>>,
    {
        let stopped = std::sync::atomic::AtomicBool::new(false);
        let stopped = &stopped;
        futures::stream::unfold(requests, |mut rx| async move {
            if Instant::now() >= self.deadline {
                stopped.store(true, Ordering::Relaxed);
                return None;
            }
            rx.recv().await.map(|r| (Ok::<_, Error>(r), rx))
        })
        .try_for_each_concurrent(self.max_in_flight, f)
        .await?;
        if stopped.load(Ordering::Relaxed) {
            return Err(Error::Delivery(
                "the run reached its deadline (the destination's `deadline`) and stopped \
                 cleanly: requests in flight were answered and journaled, no new batch was \
                 sent; the next run resumes what is left"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Sends one request until it is acknowledged, permanently rejected, or out of retries —
    /// and, when its answer goes on (`Verdict::Continue`), each next step of its batch in turn.
    /// Returns the items of an acknowledged batch that the partner did not apply (usually none).
    pub async fn send(&self, request: &Request) -> Result<Vec<Refused>> {
        let mut refused = Vec::new();
        let mut step = std::borrow::Cow::Borrowed(request);
        loop {
            match self.send_step(&step).await? {
                Settled::Acked(mut r) => {
                    refused.append(&mut r);
                    self.stats
                        .acked_batches
                        .fetch_add(u64::from(request.ids > 0), Ordering::Relaxed);
                    self.stats
                        .acked_ids
                        .fetch_add(request.ids as u64, Ordering::Relaxed);
                    debug!(batch = request.batch, ids = request.ids, "acknowledged");
                    return Ok(refused);
                }
                Settled::Next {
                    next,
                    after,
                    refused: mut r,
                } => {
                    refused.append(&mut r);
                    if Instant::now() + after >= self.deadline {
                        return Err(self.past_deadline(&next));
                    }
                    tokio::time::sleep(after).await;
                    step = std::borrow::Cow::Owned(*next);
                }
            }
        }
    }

    /// One step of a batch, until the partner settles it or it fails for good.
    async fn send_step(&self, request: &Request) -> Result<Settled> {
        let first = Instant::now();
        let retry = self.backoff.config();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            if Instant::now() >= self.deadline {
                return Err(self.past_deadline(request));
            }
            let pacer = self.pacer(request);
            let ticket = pacer.acquire().await.map_err(|stall| {
                Error::Delivery(format!(
                    "{}: would have to wait {} ({}), longer than retry.max_backoff = {}; \
                     stopped instead of waiting (raise retry.max_backoff if the partner means it)",
                    describe(request),
                    human_duration(stall.wait),
                    stall.reason,
                    human_duration(retry.max_backoff)
                ))
            })?;
            if let Some(fence) = &self.fence {
                fence.guard().await?;
            }
            self.stats.requests.fetch_add(1, Ordering::Relaxed);
            let verdict = self.attempt(request, ticket).await;
            let (reason, asked) = match self.settled(request, attempt, verdict) {
                Ok(done) => return done,
                Err(retry) => retry,
            };
            let mut wait = self.backoff.delay(attempt);
            if let Some(asked) = &asked {
                if asked.wait > retry.max_backoff {
                    return Err(Error::Delivery(format!(
                        "{}: the partner asked to wait {} ({}), longer than retry.max_backoff = {}; \
                         stopped instead of waiting (raise retry.max_backoff if the partner means it). \
                         Last answer: {reason}",
                        describe(request),
                        human_duration(asked.wait),
                        asked.said,
                        human_duration(retry.max_backoff)
                    )));
                }
                // The partner said when: every request waits, not only this one.
                pacer.pause_for(asked.wait, &asked.said);
                wait = wait.max(asked.wait);
            }
            let elapsed = first.elapsed();
            if attempt >= retry.max_attempts || elapsed + wait > retry.max_elapsed {
                return Err(Error::Delivery(format!(
                    "{}: gave up after {attempt} attempts in {:.1}s (retry.max_attempts = {}, \
                     retry.max_elapsed = {}); last error: {reason}",
                    describe(request),
                    elapsed.as_secs_f64(),
                    retry.max_attempts,
                    human_duration(retry.max_elapsed)
                )));
            }
            if Instant::now() + wait >= self.deadline {
                return Err(self.past_deadline(request));
            }
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            let why = asked.as_ref().map_or(String::new(), |a| a.said.clone());
            if wait > LOGGED_WAIT {
                warn!(batch = request.batch, attempt, wait = %human_duration(wait), reason = %reason,
                    asked = %why, "transient failure, waiting before retrying");
            } else {
                warn!(batch = request.batch, attempt, wait_ms = wait.as_millis() as u64,
                    reason = %reason, "transient failure, retrying");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The pacer of a request's lane.
    fn pacer(&self, request: &Request) -> &Pacer {
        &self.pacers[request.lane.min(self.pacers.len() - 1)]
    }

    /// What an attempt's verdict settles: `Ok` ends the step (acknowledged, with the items
    /// the partner refused; going on with a next step; or failed for good), `Err` is a
    /// transient failure to retry (its reason, and the wait the partner asked for).
    fn settled(
        &self,
        request: &Request,
        attempt: u32,
        verdict: Verdict,
    ) -> std::result::Result<Result<Settled>, (String, Option<Asked>)> {
        match verdict {
            Verdict::Success => Ok(Ok(Settled::Acked(Vec::new()))),
            Verdict::Partial(refused) => Ok(Ok(Settled::Acked(refused))),
            Verdict::Continue {
                next,
                after,
                refused,
            } => {
                debug!(batch = request.batch, attempt, next = %next.url, "step answered, going on");
                Ok(Ok(Settled::Next {
                    next,
                    after,
                    refused,
                }))
            }
            Verdict::Reject { status, message } => Ok(Err(Error::PartnerRejected {
                what: describe(request),
                status,
                message,
            })),
            Verdict::Redirect { status, location } => Ok(Err(Error::config(
                None,
                format!(
                    "{}: the partner answered HTTP {status}, redirecting to {location}. \
                         Redirects are never followed (the keys would travel with them): \
                         the destination's base_url is wrong; set it to the URL the partner \
                         documents (e.g. https:// rather than http://)",
                    describe(request)
                ),
            ))),
            Verdict::Retry { reason, asked } => Err((reason, asked)),
        }
    }

    fn past_deadline(&self, request: &Request) -> Error {
        Error::Delivery(format!(
            "{}: the run reached its deadline (the destination's `deadline`); stopped cleanly, \
             and the next run resumes what is left",
            describe(request)
        ))
    }

    async fn attempt(&self, request: &Request, ticket: Ticket) -> Verdict {
        let mut builder = self.client.request(request.method.clone(), &*request.url);
        if !(request.method == reqwest::Method::GET && request.body.is_empty()) {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(request.body.clone());
        }
        let response = builder
            .headers(self.destination.headers().clone())
            .headers(request.headers.clone())
            .send()
            .await;
        let mut response = match response {
            Ok(r) => r,
            Err(e) => {
                return Verdict::Retry {
                    reason: transport_error(&e),
                    asked: None,
                };
            }
        };
        self.pacer(request).observe(response.headers(), ticket);
        // The body, up to MAX_BODY (a success is a few bytes; more is not a success).
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let room = MAX_BODY - body.len();
                    body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    if body.len() >= MAX_BODY {
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Verdict::Retry {
                        reason: transport_error(&e),
                        asked: None,
                    };
                }
            }
        }
        self.destination.acknowledge(&Answer {
            request,
            status: response.status(),
            headers: response.headers(),
            body: &body,
            sent: request.ids,
        })
    }
}

/// How a step of a batch ended.
enum Settled {
    /// The batch is acknowledged, with the items the partner refused.
    Acked(Vec<Refused>),
    /// The batch goes on with `next`.
    Next {
        next: Box<Request>,
        after: Duration,
        refused: Vec<Refused>,
    },
}

fn describe(request: &Request) -> String {
    if request.ids == 0 {
        format!("{} {}", request.method, request.url)
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
        format!("{kind}: {}", redact::scrub(&detail))
    }
}
