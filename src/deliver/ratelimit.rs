//! A token bucket shared by every request of a run, steered by the partner's `X-RateLimit-*`
//! headers, so a run paces itself by the limit instead of by 429s.
//!
//! The headers describe the partner's current window: `Remaining` requests until `Reset` (epoch
//! seconds). The pacer keeps that as a *budget*: every request it lets through spends one, and
//! the answer to the latest request sent resets it to that answer's `Remaining` less the
//! requests let through after it (still on their way when the partner counted), so requests in
//! flight never overdraw the window and other clients' use is seen. The budget is spread over
//! the time left in the window; at 0, everything waits for `Reset`. When a window ends, one
//! request goes first and its answer sets the new window's budget.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::retry::header_str;

/// Waiting for a window to reset goes this much past its `Reset`, for clocks that differ.
const RESET_MARGIN: Duration = Duration::from_millis(10);

pub struct Pacer {
    state: Mutex<State>,
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
    /// No request leaves before this instant (a 429's Retry-After).
    paused_until: Option<Instant>,
}

struct Window {
    /// `X-RateLimit-Reset` as sent: identifies the window.
    reset: f64,
    ends: Instant,
    /// Requests the window still allows us.
    budget: f64,
    /// The request whose answer set `budget` (later answers know more).
    ticket: u64,
}

impl Pacer {
    pub fn new(rate: f64, burst: usize) -> Self {
        let burst = (burst as f64).clamp(1.0, rate.max(1.0));
        Pacer {
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
    /// partner counts every request against the workspace's limit.
    pub async fn acquire(&self) -> Ticket {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("pacer lock");
                match s.try_acquire(Instant::now()) {
                    Ok(ticket) => return ticket,
                    Err(wait) => wait,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads the partner's rate-limit headers from the answer to the request of `ticket`.
    pub fn observe(&self, headers: &HeaderMap, ticket: Ticket) {
        let number = |name| header_str(headers, name).and_then(|v| v.trim().parse::<f64>().ok());
        let (Some(remaining), Some(reset)) =
            (number("x-ratelimit-remaining"), number("x-ratelimit-reset"))
        else {
            return;
        };
        let Ok(epoch) = SystemTime::now().duration_since(UNIX_EPOCH) else {
            return;
        };
        let Ok(left) = Duration::try_from_secs_f64(reset - epoch.as_secs_f64()) else {
            return; // a reset in the past: the window is over already
        };
        let now = Instant::now();
        let mut s = self.state.lock().expect("pacer lock");
        // Requests let through after this one may not have been counted yet.
        let budget = (remaining - (s.issued - ticket.0) as f64).max(0.0);
        match &mut s.window {
            Some(w) if w.reset == reset => {
                if ticket.0 > w.ticket {
                    w.budget = budget;
                    w.ticket = ticket.0;
                }
            }
            Some(w) if w.reset > reset => {} // an answer from a window that is over
            _ => {
                s.window = Some(Window {
                    reset,
                    ends: now + left,
                    budget,
                    ticket: ticket.0,
                })
            }
        }
    }

    /// Holds every request for `delay` (a 429's `Retry-After`).
    pub fn pause_for(&self, delay: Duration) {
        let mut s = self.state.lock().expect("pacer lock");
        let until = Instant::now() + delay;
        if s.paused_until.is_none_or(|p| p < until) {
            s.paused_until = Some(until);
        }
        s.tokens = 0.0;
    }
}

impl State {
    /// Lets one request through now, or says how long to wait.
    fn try_acquire(&mut self, now: Instant) -> Result<Ticket, Duration> {
        if let Some(until) = self.paused_until {
            if until > now {
                return Err(until - now);
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
            if w.budget < 1.0 {
                self.tokens = 0.0;
                return Err(w.ends - now + RESET_MARGIN);
            }
            // Spread what is left of the window over the time left in it.
            let left = (w.ends - now).as_secs_f64().max(0.001);
            rate = rate.min(w.budget / left);
        }
        let elapsed = (now - self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(self.burst);
        self.refilled = now;
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - self.tokens) / rate));
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
        let pacer = Pacer::new(10.0, 2);
        let start = Instant::now();
        for _ in 0..12 {
            pacer.acquire().await;
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
        let pacer = Pacer::new(1000.0, 10);
        pacer.pause_for(Duration::from_secs(2));
        let start = Instant::now();
        pacer.acquire().await;
        assert!(start.elapsed() >= Duration::from_secs(2));
    }

    fn window_headers(remaining: u64, reset_in_secs: f64) -> HeaderMap {
        let epoch = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
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
        let pacer = Pacer::new(1000.0, 1000);
        let first = pacer.acquire().await;
        for _ in 0..4 {
            pacer.acquire().await;
        }
        // The answer to the first request: 10 left, but 4 more requests had already left.
        let start = Instant::now();
        pacer.observe(&window_headers(10, 10.0), first);
        for _ in 0..6 {
            pacer.acquire().await;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // The window is spent: the next request waits for its reset.
        pacer.acquire().await;
        assert!(
            start.elapsed() >= Duration::from_secs(10),
            "{:?}",
            start.elapsed()
        );
        // Answers from the window that ended change nothing.
        pacer.observe(&window_headers(0, -1.0), first);
        let again = Instant::now();
        pacer.acquire().await;
        assert!(again.elapsed() < Duration::from_millis(10));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_spread_over_the_time_left() {
        let pacer = Pacer::new(1_000_000.0, 1);
        let first = pacer.acquire().await;
        pacer.observe(&window_headers(100, 2.0), first);
        let start = Instant::now();
        for _ in 0..50 {
            pacer.acquire().await;
        }
        // 100 over 2 s is 50/s: half the budget takes about a second, not a burst.
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(900) && took <= Duration::from_millis(1100),
            "{took:?}"
        );
    }
}
