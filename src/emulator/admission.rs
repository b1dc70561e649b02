//! What every partner endpoint does once a request is authenticated: the rate limit's window and
//! the seeded faults, as answers (429, 423, 500, a dropped connection) or a go-ahead, and the
//! rate-limit headers on every answer.

use hyper::StatusCode;
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER};

use super::Shared;
use super::faults::{FaultKind, RateDecision};
use super::server::{Abort, Resp, message};

/// What the rate limit and the seeded faults leave of an authenticated request.
pub(super) enum Admitted {
    /// Answered without applying: 429, 423, or a 500 before the change is applied.
    Answered(Resp),
    /// Apply it; `fault` is `None` or `ErrorAfterApply` (answer 500 once applied).
    Apply {
        fault: FaultKind,
        rate: RateDecision,
    },
}

/// The window and the seeded faults, the same for every partner endpoint. `Err` drops the
/// connection (a seeded `Drop`).
pub(super) async fn admit(shared: &Shared) -> Result<Admitted, Abort> {
    let rate = shared.limiter.check();
    if !rate.allowed {
        shared.state.record_rate_limited();
        return Ok(Admitted::Answered(rate_limited(&rate)));
    }
    let fault = shared.faults.decide();
    if fault.slow {
        tokio::time::sleep(shared.faults.slow_delay()).await;
    }
    let refused = match fault.kind {
        FaultKind::Drop => return Err(Abort { fault: true }),
        FaultKind::Locked => message(StatusCode::LOCKED, "Resource locked"),
        FaultKind::ErrorBeforeApply => {
            message(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
        FaultKind::ErrorAfterApply | FaultKind::None => {
            return Ok(Admitted::Apply {
                fault: fault.kind,
                rate,
            });
        }
    };
    Ok(Admitted::Answered(with_rate_headers(refused, &rate)))
}

fn rate_limited(rate: &RateDecision) -> Resp {
    let mut resp = with_rate_headers(
        message(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded"),
        rate,
    );
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(rate.retry_after));
    resp
}

pub(super) fn with_rate_headers(mut resp: Resp, rate: &RateDecision) -> Resp {
    let headers = resp.headers_mut();
    headers.insert(
        HeaderName::from_static("x-ratelimit-limit"),
        HeaderValue::from(rate.limit),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-remaining"),
        HeaderValue::from(rate.remaining),
    );
    headers.insert(
        HeaderName::from_static("x-ratelimit-reset"),
        HeaderValue::from(rate.reset_epoch),
    );
    resp
}
