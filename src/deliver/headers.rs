//! The partner's rate-limit headers, read as the untrusted input they are.
//!
//! `Retry-After` (seconds or an HTTP date) and `X-RateLimit-Reset` may be huge, negative,
//! fractional, in milliseconds or garbage. Nothing here can panic or overflow: every value is a
//! finite number clamped to `MAX_WAIT` before it becomes a `Duration`, and what the partner
//! literally said is kept (`Asked::said`) so a refusal can quote it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// No wait read from a header is longer than this (far longer than any limit a run accepts;
/// it only keeps arithmetic on instants finite).
pub const MAX_WAIT: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// An `X-RateLimit-Reset` at or above this is epoch *milliseconds* (1e11 seconds is the year
/// 5138); below `DELTA_BELOW` it is seconds from now (some partners send a countdown).
const MILLIS_FROM: f64 = 1e11;
const DELTA_BELOW: f64 = 1e9;

/// A wait the partner asked for, and the header text that asked.
#[derive(Debug, Clone, PartialEq)]
pub struct Asked {
    pub wait: Duration,
    /// e.g. `Retry-After: 86400`.
    pub said: String,
}

/// A header's value as text, if it is printable ASCII (anything else is garbage).
pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// A finite number, or nothing.
pub fn number(text: &str) -> Option<f64> {
    text.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Seconds as a `Duration`, negative as zero, clamped to `MAX_WAIT`.
pub fn clamp_secs(secs: f64) -> Duration {
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())).unwrap_or(MAX_WAIT)
}

fn epoch_now(now: SystemTime) -> f64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long until the window of `X-RateLimit-Reset` ends: epoch seconds, epoch milliseconds
/// or a countdown in seconds (see `MILLIS_FROM`); `None` for garbage.
pub fn reset_in(value: &str, now: SystemTime) -> Option<Duration> {
    let v = number(value)?;
    let secs = if v >= MILLIS_FROM {
        v / 1000.0 - epoch_now(now)
    } else if v < DELTA_BELOW {
        v
    } else {
        v - epoch_now(now)
    };
    Some(clamp_secs(secs))
}

/// `Retry-After`: delay-seconds or an HTTP date.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Asked> {
    let raw = header_str(headers, "retry-after")?;
    let wait = match number(raw) {
        Some(secs) => clamp_secs(secs),
        None => {
            let at = httpdate::parse_http_date(raw).ok()?;
            at.duration_since(now).unwrap_or_default().min(MAX_WAIT)
        }
    };
    Some(Asked {
        wait,
        said: format!("Retry-After: {}", quote(raw)),
    })
}

/// What the answer asks for before the next request: `Retry-After`, else the time until
/// `X-RateLimit-Reset` when `X-RateLimit-Remaining` is 0 (or less).
pub fn server_delay(headers: &HeaderMap, now: SystemTime) -> Option<Asked> {
    if let Some(asked) = retry_after(headers, now) {
        return Some(asked);
    }
    let remaining = number(header_str(headers, "x-ratelimit-remaining")?)?;
    if remaining >= 1.0 {
        return None;
    }
    let raw = header_str(headers, "x-ratelimit-reset")?;
    Some(Asked {
        wait: reset_in(raw, now)?,
        said: format!(
            "X-RateLimit-Remaining: {remaining}, X-RateLimit-Reset: {}",
            quote(raw)
        ),
    })
}

/// A header value for a message: at most 64 characters.
fn quote(raw: &str) -> String {
    let mut s: String = raw.chars().take(64).collect();
    if raw.chars().count() > 64 {
        s.push('…');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    const NOW: u64 = 1_800_000_000;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn reset_is_read_as_epoch_seconds_milliseconds_or_a_countdown() {
        let now = at(NOW);
        assert_eq!(
            reset_in(&(NOW + 5).to_string(), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            reset_in(&((NOW + 5) * 1000).to_string(), now),
            Some(Duration::from_secs(5))
        );
        assert_eq!(reset_in("7", now), Some(Duration::from_secs(7)));
        assert_eq!(reset_in(&(NOW - 60).to_string(), now), Some(Duration::ZERO));
        assert_eq!(reset_in("-3", now), Some(Duration::ZERO));
        assert_eq!(reset_in("soon", now), None);
        assert_eq!(reset_in("NaN", now), None);
        assert_eq!(reset_in("inf", now), None);
        assert_eq!(
            reset_in("18446744073709551615", now).unwrap(),
            clamp_secs(1e30)
        );
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date_and_quotes_itself() {
        let now = at(NOW);
        let a = retry_after(&headers(&[("retry-after", "3")]), now).unwrap();
        assert_eq!(a.wait, Duration::from_secs(3));
        assert_eq!(a.said, "Retry-After: 3");
        let date = httpdate::fmt_http_date(at(NOW + 10));
        let a = retry_after(&headers(&[("retry-after", &date)]), now).unwrap();
        assert_eq!(a.wait, Duration::from_secs(10));
        assert_eq!(
            retry_after(&headers(&[("retry-after", "18446744073709551615")]), now)
                .unwrap()
                .wait,
            MAX_WAIT
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "-5")]), now)
                .unwrap()
                .wait,
            Duration::ZERO
        );
        assert_eq!(
            retry_after(&headers(&[("retry-after", "later")]), now),
            None
        );
    }

    #[test]
    fn an_empty_window_asks_to_wait_for_its_reset() {
        let now = at(NOW);
        let reset = (NOW + 30).to_string();
        let h = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", &reset),
        ]);
        let a = server_delay(&h, now).unwrap();
        assert_eq!(a.wait, Duration::from_secs(30));
        assert!(a.said.contains(&reset), "{}", a.said);
        let h = headers(&[
            ("x-ratelimit-remaining", "4"),
            ("x-ratelimit-reset", &reset),
        ]);
        assert_eq!(server_delay(&h, now), None);
        let h = headers(&[
            ("x-ratelimit-remaining", "zero"),
            ("x-ratelimit-reset", &reset),
        ]);
        assert_eq!(server_delay(&h, now), None);
    }
}
