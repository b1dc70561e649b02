//! Seeded fault injection (a tiny SplitMix64 PRNG drawn in arrival order) and the fixed-window rate limit.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::{FaultConfig, RateLimitConfig};
use crate::hash::SplitMix64;

/// Locks a mutex, ignoring poisoning: every critical section here leaves the data consistent.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a request's fault draw decided, before the request is validated and applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// No fault: validate, apply and answer normally.
    None,
    /// Close the connection without a response; nothing applied.
    Drop,
    /// Answer 423 "Resource locked"; nothing applied.
    Locked,
    /// Answer 500; nothing applied.
    ErrorBeforeApply,
    /// Apply the change, then answer 500.
    ErrorAfterApply,
}

/// The outcome of one draw: the fault, and whether to sleep before answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultDecision {
    pub(crate) kind: FaultKind,
    pub(crate) slow: bool,
}

impl FaultDecision {
    const NONE: Self = Self {
        kind: FaultKind::None,
        slow: false,
    };
}

/// Decides faults per request from a seeded PRNG, in arrival order.
#[derive(Debug)]
pub(crate) struct FaultInjector {
    config: FaultConfig,
    enabled: bool,
    rng: Mutex<SplitMix64>,
}

impl FaultInjector {
    pub(crate) fn new(config: FaultConfig) -> Self {
        let enabled = [
            config.drop_connection,
            config.locked,
            config.error_before_apply,
            config.error_after_apply,
            config.slow,
        ]
        .iter()
        .any(|p| *p > 0.0);
        let rng = Mutex::new(SplitMix64(config.seed));
        Self {
            config,
            enabled,
            rng,
        }
    }

    pub(crate) fn slow_delay(&self) -> Duration {
        self.config.slow_delay
    }

    /// Draws the next request's faults. Always five draws (one per kind, fixed order) so the
    /// sequence of decisions depends only on the seed and the number of requests before it.
    /// Precedence when several hit: drop, locked, error before apply, error after apply; `slow`
    /// combines with any of them.
    pub(crate) fn decide(&self) -> FaultDecision {
        if !self.enabled {
            return FaultDecision::NONE;
        }
        let draws: [f64; 5] = {
            let mut rng = lock(&self.rng);
            std::array::from_fn(|_| rng.next_f64())
        };
        let c = &self.config;
        let kind = if draws[0] < c.drop_connection {
            FaultKind::Drop
        } else if draws[1] < c.locked {
            FaultKind::Locked
        } else if draws[2] < c.error_before_apply {
            FaultKind::ErrorBeforeApply
        } else if draws[3] < c.error_after_apply {
            FaultKind::ErrorAfterApply
        } else {
            FaultKind::None
        };
        FaultDecision {
            kind,
            slow: draws[4] < c.slow,
        }
    }
}

/// The rate-limit verdict for one authenticated request, with what the headers must say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateDecision {
    pub(crate) allowed: bool,
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// UTC epoch seconds at which the current window ends, rounded up.
    pub(crate) reset_epoch: u64,
    /// Whole seconds until the window ends, rounded up, at least 1.
    pub(crate) retry_after: u64,
}

#[derive(Debug)]
struct Window {
    /// Which window: epoch time divided by the window length.
    index: u128,
    count: u64,
}

/// Decisions kept for `log` (16 MB): enough for any test or benchmark, bounded for a long-lived
/// emulator.
const MAX_LOG: usize = 1_000_000;

/// A fixed-window limiter for the (single) workspace: at most `requests` per `window`, the
/// windows aligned to the epoch (an hourly limit resets on the hour), as fixed-window limits
/// are. It keeps the time and verdict of every decision, for the tests and benchmarks that check
/// how a client paces itself.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: u64,
    window: Duration,
    state: Mutex<Window>,
    log: Mutex<Vec<(SystemTime, bool)>>,
}

impl RateLimiter {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        Self {
            limit: config.requests,
            window: config.window.max(Duration::from_millis(1)),
            state: Mutex::new(Window { index: 0, count: 0 }),
            log: Mutex::new(Vec::new()),
        }
    }

    /// Counts one request and says whether it is within the limit.
    pub(crate) fn check(&self) -> RateDecision {
        let now = SystemTime::now();
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let index = since_epoch.as_nanos() / self.window.as_nanos();
        let count = {
            let mut w = lock(&self.state);
            if w.index != index {
                *w = Window { index, count: 0 };
            }
            w.count = w.count.saturating_add(1);
            w.count
        };
        let allowed = count <= self.limit;
        let mut log = lock(&self.log);
        if log.len() < MAX_LOG {
            log.push((now, allowed));
        }
        drop(log);
        let end = self.window_end(index);
        let until_end = end.saturating_sub(since_epoch);
        RateDecision {
            allowed,
            limit: self.limit,
            remaining: self.limit.saturating_sub(count),
            reset_epoch: secs_ceil(end),
            retry_after: secs_ceil(until_end).max(1),
        }
    }

    fn window_end(&self, index: u128) -> Duration {
        let nanos = (index + 1) * self.window.as_nanos();
        Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        )
    }

    /// The first million rate-limited requests: when each arrived and whether it was allowed.
    pub(crate) fn log(&self) -> Vec<(SystemTime, bool)> {
        lock(&self.log).clone()
    }
}

fn secs_ceil(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_is_deterministic_and_in_range() {
        let mut a = SplitMix64(42);
        let mut b = SplitMix64(42);
        for _ in 0..1000 {
            let x = a.next_f64();
            assert_eq!(x, b.next_f64());
            assert!((0.0..1.0).contains(&x));
        }
        // Reference value of SplitMix64 with seed 0.
        assert_eq!(SplitMix64(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn fault_sequence_depends_only_on_seed() {
        let config = FaultConfig {
            seed: 7,
            locked: 0.3,
            slow: 0.2,
            ..FaultConfig::default()
        };
        let a = FaultInjector::new(config.clone());
        let b = FaultInjector::new(config);
        let seq_a: Vec<_> = (0..200).map(|_| a.decide()).collect();
        let seq_b: Vec<_> = (0..200).map(|_| b.decide()).collect();
        assert_eq!(seq_a, seq_b);
        let locked = seq_a.iter().filter(|d| d.kind == FaultKind::Locked).count();
        assert!((30..90).contains(&locked), "locked {locked} of 200");
    }

    #[test]
    fn no_faults_by_default() {
        let f = FaultInjector::new(FaultConfig::default());
        assert!((0..100).all(|_| f.decide() == FaultDecision::NONE));
    }

    #[test]
    fn rate_limiter_counts_and_resets() {
        let config = RateLimitConfig {
            requests: 2,
            window: Duration::from_millis(200),
        };
        let limiter = RateLimiter::new(&config);
        // Windows are aligned to the epoch: start just after one begins.
        let into = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 200;
        std::thread::sleep(Duration::from_millis((200 - into + 10) as u64));
        let first = limiter.check();
        assert!(first.allowed);
        assert_eq!(first.remaining, 1);
        assert!(limiter.check().allowed);
        let third = limiter.check();
        assert!(!third.allowed);
        assert_eq!(third.remaining, 0);
        assert_eq!(third.retry_after, 1);
        std::thread::sleep(Duration::from_millis(250));
        assert!(limiter.check().allowed);
    }
}
