//! A token bucket shared by every request of a run, steered by the partner's `X-RateLimit-*`
//! headers, so a run paces itself by the limit instead of by 429s.
//!
//! The headers describe the partner's current window: `Remaining` requests until `Reset` (epoch
//! seconds). The pacer keeps that as a *budget*: every request it lets through spends one, and
//! the answer to the latest request sent resets it to that answer's `Remaining` less the
//! requests let through after it (still on their way when the partner counted), so requests in
//! flight never overdraw the window and other clients' use is seen. The budget, less one request
//! kept in reserve for a request that reaches the partner after its window ended, is spread
//! over the time left in the window; when it is spent, everything waits for `Reset`. When a window ends, one
//! request goes first and its answer sets the new window's budget.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::time::Instant;
use tracing::info;

use super::headers::{self, header_str};
use crate::config::{RATE_RANGE, human_duration};

/// Waiting for a window to reset goes this much past its `Reset`, for clocks that differ.
const RESET_MARGIN: Duration = Duration::from_millis(10);

/// Requests of a window's budget kept unspent: a request let through at the very end of a
/// window may reach the partner in the next one, after that window's first answer was counted,
/// and would overdraw it (seen under load as one 429 a run). One request a window is a 1% cost
/// at 100 a window, 0.03% at `/users/track`'s 3,000.
const WINDOW_RESERVE: f64 = 1.0;

/// Waits longer than this are logged with their reason (nothing waits silently).
pub const LOGGED_WAIT: Duration = Duration::from_secs(5);

pub struct Pacer {
    state: Mutex<State>,
    /// The longest single wait a request accepts (`retry.max_backoff`).
    max_wait: Duration,
}

/// A wait longer than the run accepts: the request ends instead.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub wait: Duration,
    pub reason: String,
}

/// Which request a response answers: the count of requests let through when it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct State {
    /// The configured rate (requests per second).
    rate: f64,
    /// Bucket size: how many requests may leave back to back.
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// Requests let through so far.
    issued: u64,
    /// The partner's window, as its latest headers describe it.
    window: Option<Window>,
    /// No request leaves before this instant (a 429's Retry-After), and why.
    paused_until: Option<(Instant, String)>,
}

struct Window {
    /// `X-RateLimit-Reset` as sent: identifies the window.
    reset: String,
    ends: Instant,
    /// Requests the window still allows us.
    budget: f64,
    /// The request whose answer set `budget` (later answers know more).
    ticket: u64,
}

impl Pacer {
    /// A pacer for `rate` requests per second (kept within `RATE_RANGE` whatever it is
    /// given), `burst` at once, refusing any single wait longer than `max_wait`.
    pub fn new(rate: f64, burst: usize, max_wait: Duration) -> Self {
        let rate = if rate.is_nan() {
            *RATE_RANGE.start()
        } else {
            rate.clamp(*RATE_RANGE.start(), *RATE_RANGE.end())
        };
        let burst = (burst as f64).clamp(1.0, rate.max(1.0));
        Pacer {
            max_wait,
            state: Mutex::new(State {
                rate,
                burst,
                tokens: burst,
                refilled: Instant::now(),
                issued: 0,
                window: None,
                paused_until: None,
            }),
        }
    }

    /// Waits until one request may leave. Every attempt takes a token, retries included: the
    /// partner counts every request against the workspace's limit. A wait longer than
    /// `max_wait` is not waited: the caller gets why, to end the request.
    pub async fn acquire(&self) -> Result<Ticket, Stall> {
        loop {
            let (wait, reason) = {
                let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
                match s.try_acquire(Instant::now()) {
                    Ok(ticket) => return Ok(ticket),
                    Err(wait) => wait,
                }
            };
            if wait > self.max_wait {
                return Err(Stall { wait, reason });
            }
            if wait > LOGGED_WAIT {
                info!(wait = %human_duration(wait), reason = %reason, "waiting before the next request");
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads the partner's rate-limit headers from the answer to the request of `ticket`.
    /// Any value is accepted without panicking (see `headers`); garbage is ignored.
    pub fn observe(&self, headers: &HeaderMap, ticket: Ticket) {
        let (Some(remaining), Some(reset)) = (
            header_str(headers, "x-ratelimit-remaining").and_then(headers::number),
            header_str(headers, "x-ratelimit-reset"),
        ) else {
            return;
        };
        let Some(left) = headers::reset_in(reset, SystemTime::now()) else {
            return;
        };
        if left.is_zero() {
            return; // a reset in the past: the window is over already
        }
        let now = Instant::now();
        let Some(ends) = now.checked_add(left) else {
            return;
        };
        let remaining = remaining.max(0.0);
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Requests let through after this one may not have been counted yet.
        let budget = (remaining - (s.issued - ticket.0) as f64).max(0.0);
        match &mut s.window {
            Some(w) if w.reset == reset => {
                if ticket.0 > w.ticket {
                    w.budget = budget;
                    w.ticket = ticket.0;
                }
            }
            Some(w) if w.ends > ends => {} // an answer from a window that is over
            _ => {
                s.window = Some(Window {
                    reset: reset.chars().take(64).collect(),
                    ends,
                    budget,
                    ticket: ticket.0,
                })
            }
        }
    }

    /// Holds every request for `delay` (a 429's `Retry-After`), saying why when it is long.
    pub fn pause_for(&self, delay: Duration, reason: &str) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let Some(until) = Instant::now().checked_add(delay) else {
            return;
        };
        if s.paused_until.as_ref().is_none_or(|(p, _)| *p < until) {
            s.paused_until = Some((until, reason.to_string()));
        }
        s.tokens = 0.0;
    }
}

impl State {
    /// Lets one request through now, or says how long to wait and why.
    fn try_acquire(&mut self, now: Instant) -> Result<Ticket, (Duration, String)> {
        if let Some((until, why)) = &self.paused_until {
            if *until > now {
                return Err((*until - now, format!("the partner asked to wait ({why})")));
            }
            self.paused_until = None;
        }
        if self.window.as_ref().is_some_and(|w| w.ends <= now) {
            // A new window: one request goes first, and its answer sets the budget.
            self.window = None;
            self.tokens = self.tokens.min(1.0);
            self.refilled = now;
        }
        let mut rate = self.rate;
        if let Some(w) = &self.window {
            if w.budget < 1.0 + WINDOW_RESERVE {
                self.tokens = 0.0;
                return Err((
                    w.ends - now + RESET_MARGIN,
                    format!(
                        "the partner's rate-limit window is spent until X-RateLimit-Reset: {}",
                        w.reset
                    ),
                ));
            }
            // Spread what is left of the window over the time left in it.
            let left = (w.ends - now).as_secs_f64().max(0.001);
            rate = rate.min((w.budget - WINDOW_RESERVE) / left);
        }
        let elapsed = (now - self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Err((
                headers::clamp_secs((1.0 - self.tokens) / rate),
                format!("pacing at {rate:.2} requests per second"),
            ));
        }
        self.tokens -= 1.0;
        self.issued += 1;
        if let Some(w) = &mut self.window {
            w.budget -= 1.0;
        }
        Ok(Ticket(self.issued))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_configured_rate_after_the_burst() {
        let pacer = Pacer::new(10.0, 2, Duration::from_secs(60));
        let start = Instant::now();
        for _ in 0..12 {
            pacer.acquire().await.unwrap();
        }
        // 2 leave at once, the other 10 at 10/s.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pause_for_holds_requests() {
        let pacer = Pacer::new(1000.0, 10, Duration::from_secs(60));
        pacer.pause_for(Duration::from_secs(2), "test");
        let start = Instant::now();
        pacer.acquire().await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    fn window_headers(remaining: u64, reset_in_secs: f64) -> HeaderMap {
        let epoch = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", remaining.into());
        h.insert(
            "x-ratelimit-reset",
            format!("{:.3}", epoch.as_secs_f64() + reset_in_secs)
                .parse()
                .unwrap(),
        );
        h
    }

    #[tokio::test(start_paused = true)]
    async fn requests_in_flight_are_spent_from_the_window_and_an_empty_window_waits_for_reset() {
        let pacer = Pacer::new(1000.0, 1000, Duration::from_secs(60));
        let first = pacer.acquire().await.unwrap();
        for _ in 0..4 {
            pacer.acquire().await.unwrap();
        }
        // The answer to the first request: 10 left, but 4 more requests had already left, and
        // one is kept in reserve.
        let start = Instant::now();
        pacer.observe(&window_headers(10, 10.0), first);
        for _ in 0..5 {
            pacer.acquire().await.unwrap();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // The window is spent: the next request waits for its reset.
        pacer.acquire().await.unwrap();
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Answers from the window that ended change nothing.
        pacer.observe(&window_headers(0, -1.0), first);
        let again = Instant::now();
        pacer.acquire().await.unwrap();
        assert!(again.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_spread_over_the_time_left() {
        let pacer = Pacer::new(100_000.0, 1, Duration::from_secs(60));
        let first = pacer.acquire().await.unwrap();
        pacer.observe(&window_headers(100, 2.0), first);
        let start = Instant::now();
        for _ in 0..50 {
            pacer.acquire().await.unwrap();
        }
        // 100 over 2 s is 50/s: half the budget takes about a second, not a burst.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_longer_than_allowed_is_refused_with_its_reason() {
        let pacer = Pacer::new(100.0, 10, Duration::from_secs(30));
        let first = pacer.acquire().await.unwrap();
        // Remaining 0 with a reset a day away (epoch milliseconds, as some proxies send).
        let epoch = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", 0.into());
        let reset_ms = (epoch.as_secs() + 86_400) * 1000;
        h.insert("x-ratelimit-reset", reset_ms.into());
        pacer.observe(&h, first);
        let stall = pacer.acquire().await.unwrap_err();
        assert!(stall.wait > Duration::from_secs(86_000), "{stall:?}");
        assert!(stall.reason.contains(&reset_ms.to_string()), "{stall:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_rates_and_pauses_do_not_panic() {
        let pacer = Pacer::new(1e-30, 1, Duration::from_secs(30));
        pacer.acquire().await.unwrap();
        // The next token is 100 s away at the slowest rate allowed: refused, not slept.
        assert!(pacer.acquire().await.is_err());
        let pacer = Pacer::new(f64::NAN, 1, Duration::from_secs(30));
        pacer.pause_for(Duration::MAX, "test");
        pacer.pause_for(Duration::from_secs(u64::MAX), "test");
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-remaining", "-1e308".parse().unwrap());
        h.insert("x-ratelimit-reset", "1e308".parse().unwrap());
        pacer.observe(&h, Ticket(0));
    }
}
