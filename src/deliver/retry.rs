//! Retry decisions as data: every attempt ends in a `Verdict`. Only the partner's documented
//! success acknowledges; transient failures back off exponentially with jitter, honouring
//! `Retry-After` and `X-RateLimit-Reset` (read by `headers`); redirects are never followed.

use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

use super::headers::{self, Asked};
use crate::config::RetryConfig;
use crate::redact;

/// One item of an acknowledged request that the partner did not apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The item's position in the request's batch (0-based).
    pub index: usize,
    /// The partner's reason (its error type), redacted.
    pub reason: String,
    /// The partner says it has no such profile: a removal of it is done (the member is gone),
    /// not refused.
    pub no_profile: bool,
}

/// What one attempt's outcome means for the request.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Success,
    /// Acknowledged, but the partner says it did not apply these items of the batch.
    Partial(Vec<Refused>),
    /// Not settled yet: the batch goes on with `next` (a job to poll, the rest of the batch),
    /// sent after `after` with its own pacing and retries; `refused` (items of the batch this
    /// step refused) are kept for the batch's final verdict. A batch is acknowledged only when
    /// a step answers `Success` or `Partial`, so every step must be safe to repeat: a run that
    /// stops mid-chain sends the whole batch again.
    Continue {
        next: Box<super::Request>,
        after: Duration,
        refused: Vec<Refused>,
    },
    /// Transient (423, 429, 5xx, 408, timeouts, connection errors, a 2xx that is not the
    /// documented success): try again, after at least what the partner asked for.
    Retry {
        reason: String,
        asked: Option<Asked>,
    },
    /// Permanent for this request (400) or the whole run (401, 403, 404): stop.
    Reject {
        status: u16,
        message: String,
    },
    /// A 3xx: not followed (keys travel in the body and must never reach another host).
    Redirect {
        status: u16,
        location: String,
    },
}

/// One answer, as read: status, headers, content type and the first bytes of the body.
pub struct Answer<'a> {
    /// The request this answers (its method, URL and step).
    pub request: &'a super::Request,
    pub status: StatusCode,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    /// Items the request carried (its batch's ids; 0 for a request of no batch): what a
    /// success must account for.
    pub sent: usize,
}

/// Classifies an HTTP answer. A 2xx acknowledges only when its body is the documented success
/// (`{"message":"success"}`, or `"queued"` with 202).
pub fn classify(answer: &Answer<'_>) -> Verdict {
    let status = answer.status;
    if status.is_success() {
        return if documented_success(answer.body) {
            Verdict::Success
        } else {
            Verdict::Retry {
                reason: format!(
                    "HTTP {} whose body is not the documented success ({}): {}",
                    status.as_u16(),
                    content_type(answer.headers),
                    first_bytes(answer.body)
                ),
                asked: None,
            }
        };
    }
    if status.is_redirection() {
        return Verdict::Redirect {
            status: status.as_u16(),
            location: location_host(answer.headers),
        };
    }
    let message = partner_message(answer.body);
    match status.as_u16() {
        408 | 423 | 425 | 429 | 500..=599 => Verdict::Retry {
            reason: format!("HTTP {} {message}", status.as_u16()),
            asked: headers::server_delay(answer.headers, SystemTime::now()),
        },
        code => Verdict::Reject {
            status: code,
            message,
        },
    }
}

/// `{"message": "success"}` or `{"message": "queued"}` (extra fields allowed).
pub fn documented_success(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Reply<'a> {
        #[serde(borrow)]
        message: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_slice::<Reply>(body)
        .ok()
        .and_then(|r| r.message)
        .is_some_and(|m| m == "success" || m == "queued")
}

pub fn content_type(headers: &HeaderMap) -> String {
    match headers::header_str(headers, "content-type") {
        Some(t) => format!("content type `{}`", redact::scrub(&printable(t, 80))),
        None => "no content type".to_string(),
    }
}

/// Where a redirect points: the `Location` host, or what it says when it is not a URL.
fn location_host(headers: &HeaderMap) -> String {
    let Some(raw) = headers::header_str(headers, "location") else {
        return "(no Location header)".to_string();
    };
    match url::Url::parse(raw) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            (None, _) => format!("`{}`", redact::scrub(&printable(raw, 80))),
        },
        // A relative Location: the same host, another path.
        Err(_) => format!(
            "the same host, path `{}`",
            redact::scrub(&printable(raw, 80))
        ),
    }
}

/// The first bytes of a body, printable and redacted, for a message.
pub fn first_bytes(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty body)".to_string();
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(240)]);
    let mut shown = format!("`{}`", redact::scrub(&printable(&text, 120)));
    if body.len() > 120 {
        shown.push_str(&format!(" ({} bytes)", body.len()));
    }
    shown
}

/// `text` with control characters shown as spaces, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars()
        .take(max)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The partner's `{"message": …}`, or the raw text, shortened and redacted.
fn partner_message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .and_then(|m| m.as_str())
                .map(str::to_string)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    // Scrub before shortening, so a cut cannot leave part of a key behind.
    let text = printable(&redact::scrub(&text), 300);
    if text.trim().is_empty() {
        "(empty body)".to_string()
    } else {
        text
    }
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

/// The jitter's generator (seeded, so tests can pin it).
pub use crate::hash::SplitMix64;

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn classify_raw(code: u16, headers: &HeaderMap, body: &str) -> Verdict {
        classify(&Answer {
            request: &crate::deliver::Request::post("http://x/".into(), Default::default(), 0, 1),
            status: StatusCode::from_u16(code).unwrap(),
            headers,
            body: body.as_bytes(),
            sent: 1,
        })
    }

    #[test]
    fn only_the_documented_success_acknowledges() {
        let h = HeaderMap::new();
        assert_eq!(
            classify_raw(201, &h, r#"{"message":"success"}"#),
            Verdict::Success
        );
        assert_eq!(
            classify_raw(202, &h, r#"{"message":"queued"}"#),
            Verdict::Success
        );
        for body in [
            "",
            "<html>maintenance</html>",
            "{}",
            r#"{"message":"error"}"#,
            "null",
        ] {
            let v = classify_raw(200, &h, body);
            assert!(
                matches!(&v, Verdict::Retry { reason, .. } if reason.contains("not the documented success")),
                "{body:?}: {v:?}"
            );
        }
    }

    #[test]
    fn statuses_are_classified() {
        let h = HeaderMap::new();
        for code in [423u16, 429, 500, 502, 503] {
            assert!(
                matches!(classify_raw(code, &h, ""), Verdict::Retry { .. }),
                "{code}"
            );
        }
        assert_eq!(
            classify_raw(401, &h, r#"{"message":"invalid client secret"}"#),
            Verdict::Reject {
                status: 401,
                message: "invalid client secret".into()
            }
        );
        assert!(matches!(
            classify_raw(400, &h, "x"),
            Verdict::Reject { status: 400, .. }
        ));
    }

    #[test]
    fn redirects_name_the_location_host() {
        let mut h = HeaderMap::new();
        h.insert(
            "location",
            HeaderValue::from_static("https://evil.example:8443/x?y=1"),
        );
        for code in [301u16, 302, 303, 307, 308] {
            assert_eq!(
                classify_raw(code, &h, ""),
                Verdict::Redirect {
                    status: code,
                    location: "https://evil.example:8443".into()
                }
            );
        }
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
