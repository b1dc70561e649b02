//! The HTTP server: the accept loop, one keep-alive connection per task, the router and the
//! request and response helpers every endpoint shares.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::cohorts::{Endpoint, cohort_members, list_cohorts, partner_request};
use super::{Shared, customerio, iterable, klaviyo, users_track, webhook};

/// Bodies above this are refused with 413 before parsing.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

pub(super) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tokio::spawn(serve_connection(stream, peer, Arc::clone(&shared), shutdown.clone()));
                }
                Err(error) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "emulator accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    tracing::debug!(addr = ?listener.local_addr().ok(), "partner emulator stopped accepting");
}

/// Serves one HTTP/1.1 keep-alive connection until the client closes it or shutdown.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    if let Err(error) = stream.set_nodelay(true) {
        tracing::debug!(%peer, %error, "set_nodelay failed");
    }
    let service = service_fn(move |req| handle(Arc::clone(&shared), req));
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%peer, %error, "emulator connection closed");
    }
}

/// Why the connection is closed without a response. Returning it from the service makes hyper
/// abort the connection.
#[derive(Debug)]
pub(super) struct Abort {
    /// `true` for the `drop_connection` fault, `false` when the request body could not be read.
    pub(super) fault: bool,
}

impl fmt::Display for Abort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.fault {
            f.write_str("connection dropped by fault injection")
        } else {
            f.write_str("request body could not be read")
        }
    }
}

impl std::error::Error for Abort {}

pub(super) type Resp = Response<Full<Bytes>>;

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Result<Resp, Abort> {
    shared.state.record_request();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let result = route(&shared, req).await;
    match &result {
        Ok(resp) => {
            let status = resp.status().as_u16();
            shared.state.record_status(status);
            tracing::debug!(%method, %path, status, "emulator request");
        }
        Err(abort) => {
            if abort.fault {
                shared.state.record_dropped();
            }
            tracing::debug!(%method, %path, reason = %abort, "emulator dropped connection");
        }
    }
    result
}

/// The endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Cohorts {
        partner: String,
    },
    CohortUsers {
        partner: String,
    },
    UsersTrack,
    Profiles,
    Webhook,
    WebhookReport,
    Stats,
    ListCohorts,
    Members {
        cohort_id: String,
    },
    /// Klaviyo's endpoints: their own routing and methods.
    Klaviyo,
    KlaviyoStats,
    KlaviyoList {
        list_id: String,
    },
    CustomerioAdd {
        segment: String,
    },
    CustomerioRemove {
        segment: String,
    },
    CustomerioReport,
    CustomerioSegment {
        segment: String,
    },
    IterableSubscribe,
    IterableUnsubscribe,
    IterableList {
        list_id: String,
    },
    IterableStats,
    NotFound,
}

impl Route {
    fn parse(path: &str) -> Self {
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segments.as_slice() {
            ["partners", p, "cohorts"] => Route::Cohorts {
                partner: percent_decode(p),
            },
            ["partners", p, "cohorts", "users"] => Route::CohortUsers {
                partner: percent_decode(p),
            },
            ["users", "track"] => Route::UsersTrack,
            ["api", "lists", "subscribe"] => Route::IterableSubscribe,
            ["api", "lists", "unsubscribe"] => Route::IterableUnsubscribe,
            ["_emulator", "iterable", "lists", id] => Route::IterableList {
                list_id: percent_decode(id),
            },
            ["_emulator", "iterable", "stats"] => Route::IterableStats,
            ["_emulator", "profiles"] => Route::Profiles,
            ["_webhook"] => Route::Webhook,
            ["_emulator", "webhook"] => Route::WebhookReport,
            ["_emulator", "stats"] => Route::Stats,
            ["_emulator", "cohorts"] => Route::ListCohorts,
            ["_emulator", "cohorts", id, "members"] => Route::Members {
                cohort_id: percent_decode(id),
            },
            // Klaviyo's own paths only (other partners serve `/api/…` too).
            ["api", "profile-bulk-import-jobs", ..]
            | ["api", "profiles"]
            | ["api", "lists", _, "relationships", "profiles"] => Route::Klaviyo,
            ["_emulator", "klaviyo", "stats"] => Route::KlaviyoStats,
            ["_emulator", "klaviyo", "lists", id] => Route::KlaviyoList {
                list_id: percent_decode(id),
            },
            ["api", "v1", "segments", id, "add_customers"] => Route::CustomerioAdd {
                segment: percent_decode(id),
            },
            ["api", "v1", "segments", id, "remove_customers"] => Route::CustomerioRemove {
                segment: percent_decode(id),
            },
            ["_emulator", "customerio"] => Route::CustomerioReport,
            ["_emulator", "customerio", "segments", id] => Route::CustomerioSegment {
                segment: percent_decode(id),
            },
            _ => Route::NotFound,
        }
    }

    /// The one method the route accepts.
    fn method(&self) -> Option<Method> {
        match self {
            Route::Cohorts { .. }
            | Route::CohortUsers { .. }
            | Route::UsersTrack
            | Route::Webhook
            | Route::IterableSubscribe
            | Route::IterableUnsubscribe
            | Route::CustomerioAdd { .. }
            | Route::CustomerioRemove { .. } => Some(Method::POST),
            Route::Stats
            | Route::ListCohorts
            | Route::Members { .. }
            | Route::Profiles
            | Route::KlaviyoList { .. }
            | Route::KlaviyoStats
            | Route::IterableList { .. }
            | Route::IterableStats
            | Route::WebhookReport
            | Route::CustomerioReport
            | Route::CustomerioSegment { .. } => Some(Method::GET),
            Route::NotFound | Route::Klaviyo => None,
        }
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Abort> {
    let route = Route::parse(req.uri().path());
    if route == Route::Klaviyo {
        return klaviyo::handle(shared, req).await;
    }
    let Some(allowed) = route.method() else {
        return Ok(message(StatusCode::NOT_FOUND, "not found"));
    };
    if req.method() != allowed {
        let mut resp = message(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
        let allow = if allowed == Method::POST {
            "POST"
        } else {
            "GET"
        };
        resp.headers_mut()
            .insert(ALLOW, HeaderValue::from_static(allow));
        return Ok(resp);
    }
    match route {
        Route::Cohorts { partner } => {
            partner_request(shared, req, &partner, Endpoint::Cohorts).await
        }
        Route::CohortUsers { partner } => {
            partner_request(shared, req, &partner, Endpoint::Users).await
        }
        Route::UsersTrack => users_track::handle(shared, req).await,
        Route::IterableSubscribe => {
            iterable::handle(shared, req, iterable::Endpoint::Subscribe).await
        }
        Route::IterableUnsubscribe => {
            iterable::handle(shared, req, iterable::Endpoint::Unsubscribe).await
        }
        Route::IterableList { list_id } => Ok(iterable::members_route(shared, &list_id)),
        Route::IterableStats => Ok(iterable::stats_route(shared)),
        Route::Profiles => Ok(users_track::list(shared)),
        Route::Webhook => webhook::handle(shared, req).await,
        Route::WebhookReport => Ok(webhook::report(shared)),
        Route::Stats => Ok(json_response(StatusCode::OK, &shared.state.stats())),
        Route::ListCohorts => Ok(list_cohorts(&shared.state)),
        Route::Members { cohort_id } => Ok(cohort_members(&shared.state, &cohort_id)),
        Route::KlaviyoList { list_id } => Ok(klaviyo::report(shared, &list_id)),
        Route::KlaviyoStats => Ok(klaviyo::stats(shared)),
        Route::CustomerioAdd { segment } => {
            customerio::handle(shared, req, &segment, customerio::Op::Add).await
        }
        Route::CustomerioRemove { segment } => {
            customerio::handle(shared, req, &segment, customerio::Op::Remove).await
        }
        Route::CustomerioReport => Ok(customerio::report(shared)),
        Route::CustomerioSegment { segment } => Ok(customerio::segment_members(shared, &segment)),
        Route::NotFound | Route::Klaviyo => Ok(message(StatusCode::NOT_FOUND, "not found")),
    }
}

/// A refusal before validation: status and message.
#[derive(Debug)]
pub(super) struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(super) fn into_response(self) -> Resp {
        message(self.status, &self.message)
    }
}

/// Reads the whole body. The inner `Err` is a refusal to send (413); the outer one aborts the
/// connection because the client broke it.
pub(super) async fn read_body(body: Incoming) -> Result<Result<Bytes, Reject>, Abort> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(Ok(collected.to_bytes())),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Ok(Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ))),
        Err(_) => Err(Abort { fault: false }),
    }
}

pub(super) fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reject> {
    let malformed = |detail: String| {
        Reject::new(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON body: {detail}"),
        )
    };
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(malformed("expected a JSON object".to_owned())),
        Err(error) => Err(malformed(error.to_string())),
    }
}

/// Decodes `%XX` escapes in a path segment; malformed escapes are kept as they are.
fn percent_decode(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_owned();
    }
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

pub(super) fn message(status: StatusCode, msg: &str) -> Resp {
    json_response(status, &json!({ "message": msg }))
}

pub(super) fn bad_request(msg: &str) -> Resp {
    message(StatusCode::BAD_REQUEST, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_percent_decoding() {
        assert_eq!(
            Route::parse("/partners/p/cohorts"),
            Route::Cohorts {
                partner: "p".to_owned()
            }
        );
        assert_eq!(
            Route::parse("/_emulator/cohorts/a%20b/members"),
            Route::Members {
                cohort_id: "a b".to_owned()
            }
        );
        assert_eq!(Route::parse("/partners/p/cohorts/users/x"), Route::NotFound);
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }
}
