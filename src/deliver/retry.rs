//! Retry decisions as data: every attempt ends in a `Verdict`; transient failures back off
//! exponentially with jitter, honouring the partner's `Retry-After` and `X-RateLimit-Reset`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use crate::config::RetryConfig;

/// What one attempt's outcome means for the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// Transient (423, 429, 5xx, 408, timeouts, connection errors): try again, after at least
    /// `after` when the partner said how long.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// Permanent for this request (400) or the whole run (401, 403, 404): stop.
    Reject {
        status: u16,
        message: String,
    },
}

/// Classifies an HTTP answer. `body` is the (possibly truncated) response text.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Verdict {
    if status.is_success() {
        return Verdict::Success;
    }
    let message = partner_message(body);
    match status.as_u16() {
        408 | 423 | 425 | 429 | 500..=599 => Verdict::Retry {
            reason: format!("HTTP {} {message}", status.as_u16()),
            after: server_delay(headers),
        },
        code => Verdict::Reject {
            status: code,
            message,
        },
    }
}

/// The partner's `{"message": …}`, or the raw text, shortened.
fn partner_message(body: &str) -> String {
    let text = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string());
    let mut text: String = text.chars().take(300).collect();
    if text.is_empty() {
        text = "(empty body)".to_string();
    }
    text
}

/// How long the partner asked us to wait: `Retry-After` (seconds or an HTTP date), else the
/// time until `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0.
pub fn server_delay(headers: &HeaderMap) -> Option<Duration> {
    if let Some(v) = header_str(headers, "retry-after") {
        if let Ok(secs) = v.trim().parse::<f64>() {
            return Duration::try_from_secs_f64(secs.max(0.0)).ok();
        }
        if let Ok(at) = httpdate::parse_http_date(v) {
            return Some(at.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    let remaining = header_str(headers, "x-ratelimit-remaining")?
        .trim()
        .parse::<f64>()
        .ok()?;
    if remaining > 0.0 {
        return None;
    }
    reset_in(headers)
}

/// Time until the `X-RateLimit-Reset` epoch second.
pub fn reset_in(headers: &HeaderMap) -> Option<Duration> {
    let reset = header_str(headers, "x-ratelimit-reset")?
        .trim()
        .parse::<f64>()
        .ok()?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Duration::try_from_secs_f64((reset - now).max(0.0)).ok()
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Exponential backoff with "equal jitter": half the step is fixed, half random, so retries of
/// many requests spread out but never collapse to zero.
pub struct Backoff {
    config: RetryConfig,
    rng: Mutex<SplitMix64>,
}

impl Backoff {
    pub fn new(config: RetryConfig, seed: u64) -> Self {
        Backoff {
            config,
            rng: Mutex::new(SplitMix64(seed)),
        }
    }

    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// The wait before attempt `attempt + 1`, after `attempt` failed attempts (1-based).
    pub fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .config
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
        let step = exp.min(self.config.max_backoff);
        let unit = self.rng.lock().map(|mut r| r.next_f64()).unwrap_or(0.5);
        step / 2 + step.mul_f64(unit / 2.0)
    }
}

/// A tiny deterministic generator for jitter (seeded, so tests can pin it).
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        assert_eq!(classify(StatusCode::CREATED, &h, ""), Verdict::Success);
        assert_eq!(
            classify(StatusCode::ACCEPTED, &h, r#"{"message":"queued"}"#),
            Verdict::Success
        );
        for code in [423u16, 429, 500, 502, 503] {
            let s = StatusCode::from_u16(code).unwrap();
            assert!(
                matches!(classify(s, &h, ""), Verdict::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(
            classify(
                StatusCode::UNAUTHORIZED,
                &h,
                r#"{"message":"invalid client secret"}"#
            ),
            Verdict::Reject {
                status: 401,
                message: "invalid client secret".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, &h, "x"),
            Verdict::Reject { status: 400, .. }
        ));
    }

    #[test]
    fn retry_after_and_reset_are_honoured() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(server_delay(&h), Some(Duration::from_secs(3)));
        let mut h = HeaderMap::new();
        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 5;
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("0"));
        h.insert(
            "x-ratelimit-reset",
            HeaderValue::from_str(&reset.to_string()).unwrap(),
        );
        let d = server_delay(&h).unwrap();
        assert!(
            d > Duration::from_secs(3) && d <= Duration::from_secs(5),
            "{d:?}"
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("7"));
        assert_eq!(server_delay(&h), None);
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let cfg = RetryConfig {
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        let b = Backoff::new(cfg, 7);
        let d1 = b.delay(1);
        assert!(
            d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
            "{d1:?}"
        );
        let d3 = b.delay(3);
        assert!(
            d3 >= Duration::from_millis(200) && d3 <= Duration::from_millis(400),
            "{d3:?}"
        );
        let d30 = b.delay(30);
        assert!(
            d30 >= Duration::from_millis(500) && d30 <= Duration::from_secs(1),
            "{d30:?}"
        );
    }
}
