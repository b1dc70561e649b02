//! A token bucket shared by every request of a run, steered by the partner's `X-RateLimit-*`
//! headers: it slows down as `Remaining` falls and pauses until `Reset` when it reaches 0, so a
//! run paces itself by the limit instead of by 429s.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use super::retry::{header_str, reset_in};

pub struct Pacer {
    state: Mutex<State>,
}

struct State {
    /// The configured rate (requests per second).
    rate: f64,
    /// Bucket size: how many requests may leave back to back.
    burst: f64,
    tokens: f64,
    refilled: Instant,
    /// A lower rate the partner's headers asked for, until the instant given.
    partner_rate: Option<(f64, Instant)>,
    /// No request leaves before this instant (Remaining hit 0, or Retry-After).
    paused_until: Option<Instant>,
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
                partner_rate: None,
                paused_until: None,
            }),
        }
    }

    /// Waits until one request may leave. Every attempt takes a token, retries included: the
    /// partner counts every request against the workspace's limit.
    pub async fn acquire(&self) {
        loop {
            let wait = {
                let mut s = self.state.lock().expect("pacer lock");
                let now = Instant::now();
                match s.paused_until {
                    Some(until) if until > now => until - now,
                    _ => {
                        s.paused_until = None;
                        let rate = s.effective_rate(now);
                        let elapsed = (now - s.refilled).as_secs_f64();
                        s.tokens = (s.tokens + elapsed * rate).min(s.burst);
                        s.refilled = now;
                        if s.tokens >= 1.0 {
                            s.tokens -= 1.0;
                            return;
                        }
                        Duration::from_secs_f64((1.0 - s.tokens) / rate)
                    }
                }
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// Reads the partner's rate-limit headers from any answer.
    pub fn observe(&self, headers: &HeaderMap) {
        let Some(remaining) =
            header_str(headers, "x-ratelimit-remaining").and_then(|v| v.trim().parse::<f64>().ok())
        else {
            return;
        };
        let Some(until_reset) = reset_in(headers) else {
            return;
        };
        let now = Instant::now();
        let mut s = self.state.lock().expect("pacer lock");
        if remaining <= 0.0 {
            s.pause(now + until_reset);
            s.tokens = 0.0;
        } else {
            // Spread what is left of the window over the time left in it.
            let allowed = remaining / until_reset.as_secs_f64().max(0.001);
            s.partner_rate = (allowed < s.rate).then_some((allowed.max(0.1), now + until_reset));
        }
    }

    /// Holds every request for `delay` (a 429's `Retry-After`).
    pub fn pause_for(&self, delay: Duration) {
        let mut s = self.state.lock().expect("pacer lock");
        s.pause(Instant::now() + delay);
        s.tokens = 0.0;
    }
}

impl State {
    fn effective_rate(&mut self, now: Instant) -> f64 {
        match self.partner_rate {
            Some((rate, until)) if until > now => rate.min(self.rate),
            _ => {
                self.partner_rate = None;
                self.rate
            }
        }
    }

    fn pause(&mut self, until: Instant) {
        if self.paused_until.is_none_or(|p| p < until) {
            self.paused_until = Some(until);
        }
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
}
