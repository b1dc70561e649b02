//! A Braze-compatible partner emulator over real HTTP: the Partner Cohort Import API (see
//! `/work/shared/partner-api.md`, "Outbound") with auth, a fixed-window rate limit, seeded fault
//! injection and read-only `/_emulator/...` endpoints for the demo, tests and benchmarks.
//!
//! It parses the wire format on its own (`serde_json::Value`) and shares no request types with
//! the client side. Accepted changes are appended to a per-cohort log under a short lock and
//! folded into the member set lazily, when a reader asks.

pub mod currents;
mod faults;
mod state;
mod users_track;
mod webhook;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use faults::{FaultInjector, FaultKind, RateDecision, RateLimiter};
use state::{Change, State};

/// Most ids (user ids + device ids + aliases, all change objects together) in one request.
const MAX_IDS_PER_REQUEST: usize = 1_000;
/// Bodies above this are refused with 413 before parsing.
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How the emulator behaves: the one partner and workspace it accepts, its rate limit and faults.
#[derive(Clone)]
pub struct EmulatorConfig {
    /// The `{partner}` path segment accepted, e.g. `"cohort-bridge"`.
    pub partner: String,
    /// The only valid `partner_api_key`.
    pub partner_api_key: String,
    /// The only valid `client_secret` (one workspace).
    pub client_secret: String,
    pub rate_limit: RateLimitConfig,
    pub faults: FaultConfig,
    /// User ids containing this text are refused with a 400 naming the id, as a partner
    /// refuses an id it considers invalid (for testing dead letters). `None`: no such ids.
    pub invalid_id_marker: Option<String>,
    /// The only valid workspace REST API key (`/users/track`, `Authorization: Bearer`).
    pub rest_api_key: String,
    /// `/users/track`: ids containing this text have no profile until one is created, so an
    /// update-only object naming one is an item-level error. `None`: every id has a profile.
    pub unknown_id_marker: Option<String>,
    /// `POST /_webhook` verifies signatures with this secret; `None`: the endpoint is off.
    pub webhook_secret: Option<String>,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        Self {
            partner: "cohort-bridge".to_owned(),
            partner_api_key: "emulator-partner-key".to_owned(),
            client_secret: "emulator-client-secret".to_owned(),
            rate_limit: RateLimitConfig::default(),
            faults: FaultConfig::default(),
            invalid_id_marker: None,
            rest_api_key: "emulator-rest-api-key".to_owned(),
            unknown_id_marker: None,
            webhook_secret: None,
        }
    }
}

/// Keys are secrets: `Debug` never prints them.
impl fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorConfig")
            .field("partner", &self.partner)
            .field("partner_api_key", &"<redacted>")
            .field("client_secret", &"<redacted>")
            .field("rest_api_key", &"<redacted>")
            .field("rate_limit", &self.rate_limit)
            .field("faults", &self.faults)
            .finish()
    }
}

/// A fixed window per workspace: at most `requests` per `window`.
#[derive(Clone, Debug)]
pub struct RateLimitConfig {
    pub requests: u64,
    pub window: Duration,
}

impl Default for RateLimitConfig {
    /// Braze's default: 250,000 requests per hour.
    fn default() -> Self {
        Self {
            requests: 250_000,
            window: Duration::from_secs(3600),
        }
    }
}

/// Per-request fault probabilities, drawn from a PRNG seeded with `seed` in arrival order.
#[derive(Clone, Debug)]
pub struct FaultConfig {
    pub seed: u64,
    /// Answer 500 without applying.
    pub error_before_apply: f64,
    /// Apply the change, then answer 500.
    pub error_after_apply: f64,
    /// Answer 423 "Resource locked" without applying.
    pub locked: f64,
    /// Sleep `slow_delay` before answering (then answer as otherwise decided).
    pub slow: f64,
    pub slow_delay: Duration,
    /// Close the connection without any response; nothing applied.
    pub drop_connection: f64,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            error_before_apply: 0.0,
            error_after_apply: 0.0,
            locked: 0.0,
            slow: 0.0,
            slow_delay: Duration::from_secs(2),
            drop_connection: 0.0,
        }
    }
}

/// Counters since start. Redundant adds/removes are counted when the logs are folded, in
/// arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Every HTTP request received (read-only endpoints included).
    pub requests: u64,
    /// Responses sent, by status code.
    pub by_status: BTreeMap<u16, u64>,
    /// Connections closed by the `drop_connection` fault.
    pub dropped_connections: u64,
    pub cohorts_created: u64,
    pub cohorts_renamed: u64,
    /// `/cohorts/users` requests whose changes were applied.
    pub user_requests_applied: u64,
    /// Ids in applied add changes.
    pub ids_added: u64,
    /// Ids in applied remove changes.
    pub ids_removed: u64,
    /// Ids added that were already members when applied.
    pub redundant_adds: u64,
    /// Ids removed that were not members when applied.
    pub redundant_removes: u64,
    /// Largest id count seen in one `/cohorts/users` request, even if rejected.
    pub max_ids_per_request: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// `/users/track` requests applied, and the attribute objects they applied.
    #[serde(default)]
    pub track_requests_applied: u64,
    #[serde(default)]
    pub track_objects_applied: u64,
}

/// Everything the connection tasks share.
struct Shared {
    config: EmulatorConfig,
    state: State,
    profiles: users_track::Profiles,
    webhook: webhook::Receiver,
    limiter: RateLimiter,
    faults: FaultInjector,
    shutdown: watch::Sender<bool>,
}

/// A running emulator. Cheap to clone; the server keeps running when every handle is dropped.
#[derive(Clone)]
pub struct EmulatorHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl fmt::Debug for EmulatorHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmulatorHandle")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl EmulatorHandle {
    /// The address actually bound.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`; an unspecified bind address becomes loopback.
    pub fn base_url(&self) -> String {
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Current members, sorted; `None` if the cohort was never created. User ids are plain,
    /// device ids `device:ID`, aliases `alias:NAME:LABEL`.
    pub fn members(&self, cohort_id: &str) -> Option<Vec<String>> {
        self.shared.state.members(cohort_id)
    }

    pub fn cohort_name(&self, cohort_id: &str) -> Option<String> {
        self.shared.state.cohort_name(cohort_id)
    }

    pub fn stats(&self) -> Stats {
        self.shared.state.stats()
    }

    /// `/users/track`: the users whose boolean `attribute` is true, sorted (external ids plain,
    /// aliases `alias:NAME:LABEL`, Braze ids `braze:ID`).
    pub fn attribute_true(&self, attribute: &str) -> Vec<String> {
        self.shared.profiles.with_true(attribute)
    }

    /// `/users/track`: deletes these users' profiles (external ids plain, aliases
    /// `alias:NAME:LABEL`), as a workspace does on a deletion request. Update-only objects
    /// naming them are item-level errors from now on, removals included.
    pub fn delete_profiles(&self, users: &[String]) {
        self.shared.profiles.delete(users);
    }

    /// `POST /_webhook`: the members the signed batches left in `cohort_id`, sorted.
    pub fn webhook_members(&self, cohort_id: &str) -> Vec<String> {
        self.shared.webhook.members(cohort_id)
    }

    /// `/users/track`: the users whose array `attribute` holds `value`, sorted.
    pub fn attribute_holds(&self, attribute: &str, value: &str) -> Vec<String> {
        self.shared.profiles.with_element(attribute, value)
    }

    /// Every authenticated partner request so far, in arrival order: when it arrived and whether
    /// the rate limit let it through (false: answered 429).
    pub fn rate_log(&self) -> Vec<(std::time::SystemTime, bool)> {
        self.shared.limiter.log()
    }

    /// Stops accepting connections and closes idle keep-alive connections (best effort).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}

/// Binds `addr`, spawns the accept loop on the current tokio runtime and returns at once.
pub async fn start(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        state: State::default(),
        profiles: users_track::Profiles::default(),
        webhook: webhook::Receiver::default(),
        limiter: RateLimiter::new(&config.rate_limit),
        faults: FaultInjector::new(config.faults.clone()),
        config,
        shutdown,
    });
    tokio::spawn(accept_loop(listener, Arc::clone(&shared), shutdown_rx));
    tracing::debug!(addr = %local, "partner emulator listening");
    Ok(EmulatorHandle {
        addr: local,
        shared,
    })
}

/// For the CLI: start, log the URL, serve until ctrl-c.
pub async fn serve_forever(addr: SocketAddr, config: EmulatorConfig) -> std::io::Result<()> {
    let handle = start(addr, config).await?;
    tracing::info!(url = %handle.base_url(), "partner emulator ready; ctrl-c to stop");
    tokio::signal::ctrl_c().await?;
    handle.shutdown();
    let stats = handle.stats();
    tracing::info!(
        requests = stats.requests,
        user_requests_applied = stats.user_requests_applied,
        ids_added = stats.ids_added,
        ids_removed = stats.ids_removed,
        "partner emulator stopped"
    );
    Ok(())
}

async fn accept_loop(
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
struct Abort {
    /// `true` for the `drop_connection` fault, `false` when the request body could not be read.
    fault: bool,
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

type Resp = Response<Full<Bytes>>;

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
    Cohorts { partner: String },
    CohortUsers { partner: String },
    UsersTrack,
    Profiles,
    Webhook,
    WebhookReport,
    Stats,
    ListCohorts,
    Members { cohort_id: String },
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
            ["_emulator", "profiles"] => Route::Profiles,
            ["_webhook"] => Route::Webhook,
            ["_emulator", "webhook"] => Route::WebhookReport,
            ["_emulator", "stats"] => Route::Stats,
            ["_emulator", "cohorts"] => Route::ListCohorts,
            ["_emulator", "cohorts", id, "members"] => Route::Members {
                cohort_id: percent_decode(id),
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
            | Route::Webhook => Some(Method::POST),
            Route::Stats
            | Route::ListCohorts
            | Route::Members { .. }
            | Route::Profiles
            | Route::WebhookReport => Some(Method::GET),
            Route::NotFound => None,
        }
    }
}

async fn route(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Abort> {
    let route = Route::parse(req.uri().path());
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
        Route::Profiles => Ok(users_track::list(shared)),
        Route::Webhook => webhook::handle(shared, req).await,
        Route::WebhookReport => Ok(webhook::report(shared)),
        Route::Stats => Ok(json_response(StatusCode::OK, &shared.state.stats())),
        Route::ListCohorts => Ok(list_cohorts(&shared.state)),
        Route::Members { cohort_id } => Ok(cohort_members(&shared.state, &cohort_id)),
        Route::NotFound => Ok(message(StatusCode::NOT_FOUND, "not found")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    Cohorts,
    Users,
}

/// The partner API: parse, authenticate, rate-limit, inject faults, validate, apply.
async fn partner_request(
    shared: &Shared,
    req: Request<Incoming>,
    partner: &str,
    endpoint: Endpoint,
) -> Result<Resp, Abort> {
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    let mut obj = match parse_object(&body) {
        Ok(obj) => obj,
        Err(reject) => return Ok(reject.into_response()),
    };
    if endpoint == Endpoint::Users {
        shared
            .state
            .record_id_count(count_ids(obj.get("cohort_changes")) as u64);
    }
    if let Err(reject) = authenticate(&shared.config, partner, &obj) {
        return Ok(reject.into_response());
    }
    let (fault, rate) = match admit(shared).await? {
        Admitted::Answered(resp) => return Ok(resp),
        Admitted::Apply { fault, rate } => (fault, rate),
    };
    let applied = apply(
        &shared.state,
        endpoint,
        &mut obj,
        shared.config.invalid_id_marker.as_deref(),
    );
    Ok(with_rate_headers(answer(applied, fault), &rate))
}

/// What the rate limit and the seeded faults leave of an authenticated request.
enum Admitted {
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
async fn admit(shared: &Shared) -> Result<Admitted, Abort> {
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

/// A refusal before validation: status and message.
#[derive(Debug)]
struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn into_response(self) -> Resp {
        message(self.status, &self.message)
    }
}

/// Reads the whole body. The inner `Err` is a refusal to send (413); the outer one aborts the
/// connection because the client broke it.
async fn read_body(body: Incoming) -> Result<Result<Bytes, Reject>, Abort> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(Ok(collected.to_bytes())),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => Ok(Err(Reject::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body too large",
        ))),
        Err(_) => Err(Abort { fault: false }),
    }
}

fn parse_object(body: &[u8]) -> Result<Map<String, Value>, Reject> {
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

fn authenticate(
    config: &EmulatorConfig,
    partner: &str,
    obj: &Map<String, Value>,
) -> Result<(), Reject> {
    let key = obj.get("partner_api_key").and_then(Value::as_str);
    let secret = obj.get("client_secret").and_then(Value::as_str);
    let refuse = |msg: &str| Err(Reject::new(StatusCode::UNAUTHORIZED, msg));
    if partner != config.partner {
        refuse("partner not enabled")
    } else if key != Some(config.partner_api_key.as_str()) {
        refuse("invalid partner key")
    } else if secret != Some(config.client_secret.as_str()) {
        refuse("invalid client secret")
    } else {
        Ok(())
    }
}

/// Validates and applies one request. `Err` is the 400 message.
fn apply(
    state: &State,
    endpoint: Endpoint,
    obj: &mut Map<String, Value>,
    invalid_marker: Option<&str>,
) -> Result<(), String> {
    match endpoint {
        Endpoint::Cohorts => {
            let (cohort_id, name) = parse_cohort(obj)?;
            let outcome = state.upsert_cohort(&cohort_id, &name);
            tracing::debug!(%cohort_id, ?outcome, "emulator cohort upsert");
            Ok(())
        }
        Endpoint::Users => {
            let (cohort_id, changes) = parse_users(obj)?;
            if let Some(marker) = invalid_marker {
                for (i, change) in changes.iter().enumerate() {
                    if let Some((j, id)) = change
                        .ids
                        .iter()
                        .enumerate()
                        .find(|(_, id)| id.contains(marker))
                    {
                        return Err(format!(
                            "cohort_changes[{i}].user_ids[{j}] \"{id}\" is not a valid external id"
                        ));
                    }
                }
            }
            if state.append_changes(&cohort_id, changes) {
                Ok(())
            } else {
                Err(format!("cohort_id \"{cohort_id}\" not found"))
            }
        }
    }
}

fn answer(applied: Result<(), String>, fault: FaultKind) -> Resp {
    match applied {
        Err(msg) => bad_request(&msg),
        Ok(()) if fault == FaultKind::ErrorAfterApply => {
            message(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
        Ok(()) => message(StatusCode::CREATED, "success"),
    }
}

// ----- wire format -----

/// `cohort_id` and `name` of a valid `/cohorts` body; `created_at` is checked, not kept.
fn parse_cohort(obj: &mut Map<String, Value>) -> Result<(String, String), String> {
    let cohort_id = take_non_empty_string(obj, "cohort_id")?;
    let name = take_non_empty_string(obj, "name")?;
    match obj.get("created_at") {
        Some(Value::String(s)) if is_iso8601(s) => Ok((cohort_id, name)),
        _ => Err(
            "created_at must be an ISO-8601 timestamp string, e.g. 2026-01-31T12:00:00Z".to_owned(),
        ),
    }
}

fn is_iso8601(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
}

fn take_non_empty_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{field} must be a non-empty string")),
    }
}

/// `cohort_id` and the changes of a valid `/cohorts/users` body.
fn parse_users(obj: &mut Map<String, Value>) -> Result<(String, Vec<Change>), String> {
    let cohort_id = take_non_empty_string(obj, "cohort_id")?;
    let changes = match obj.remove("cohort_changes") {
        Some(Value::Array(changes)) if !changes.is_empty() => changes,
        _ => return Err("cohort_changes must be a non-empty array".to_owned()),
    };
    let total: usize = changes.iter().map(ids_in_change).sum();
    if total > MAX_IDS_PER_REQUEST {
        return Err(format!("too many ids: {total} > {MAX_IDS_PER_REQUEST}"));
    }
    let changes = changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| parse_change(i, change))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cohort_id, changes))
}

/// Ids in `cohort_changes` as sent (array lengths), whether or not they are valid.
fn count_ids(changes: Option<&Value>) -> usize {
    match changes {
        Some(Value::Array(changes)) => changes.iter().map(ids_in_change).sum(),
        _ => 0,
    }
}

fn ids_in_change(change: &Value) -> usize {
    ["user_ids", "device_ids", "aliases"]
        .iter()
        .filter_map(|field| change.get(field).and_then(Value::as_array))
        .map(Vec::len)
        .sum()
}

fn parse_change(i: usize, change: Value) -> Result<Change, String> {
    let Value::Object(mut change) = change else {
        return Err(format!("cohort_changes[{i}] must be an object"));
    };
    let remove = match change.get("should_remove") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(format!(
                "cohort_changes[{i}].should_remove must be a boolean"
            ));
        }
    };
    let mut ids = take_strings(&mut change, i, "user_ids")?;
    let devices = take_strings(&mut change, i, "device_ids")?;
    ids.extend(devices.into_iter().map(|d| format!("device:{d}")));
    ids.extend(take_aliases(&mut change, i)?);
    if ids.is_empty() {
        return Err(format!(
            "cohort_changes[{i}] must carry at least one id in user_ids, device_ids or aliases"
        ));
    }
    Ok(Change { remove, ids })
}

/// An optional array of non-empty strings; `null` or absent is empty.
fn take_strings(
    change: &mut Map<String, Value>,
    i: usize,
    field: &str,
) -> Result<Vec<String>, String> {
    let items = match change.remove(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("cohort_changes[{i}].{field} must be an array")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| match item {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(format!(
                "cohort_changes[{i}].{field}[{j}] must be a non-empty string"
            )),
            _ => Err(format!("cohort_changes[{i}].{field}[{j}] must be a string")),
        })
        .collect()
}

/// An optional array of `{alias_name, alias_label}`, as member keys `alias:NAME:LABEL`.
fn take_aliases(change: &mut Map<String, Value>, i: usize) -> Result<Vec<String>, String> {
    let items = match change.remove("aliases") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("cohort_changes[{i}].aliases must be an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            let field = |name: &str| match item.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
                _ => Err(format!(
                    "cohort_changes[{i}].aliases[{j}].{name} must be a non-empty string"
                )),
            };
            if !item.is_object() {
                return Err(format!(
                    "cohort_changes[{i}].aliases[{j}] must be an object"
                ));
            }
            Ok(format!(
                "alias:{}:{}",
                field("alias_name")?,
                field("alias_label")?
            ))
        })
        .collect()
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

// ----- responses -----

fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Resp {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn message(status: StatusCode, msg: &str) -> Resp {
    json_response(status, &json!({ "message": msg }))
}

fn bad_request(msg: &str) -> Resp {
    message(StatusCode::BAD_REQUEST, msg)
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

fn with_rate_headers(mut resp: Resp, rate: &RateDecision) -> Resp {
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

#[derive(serde::Serialize)]
struct CohortSummary<'a> {
    cohort_id: &'a str,
    name: &'a str,
    members: usize,
}

fn list_cohorts(state: &State) -> Resp {
    let summaries = state.summaries();
    let body: Vec<CohortSummary<'_>> = summaries
        .iter()
        .map(|(cohort_id, name, members)| CohortSummary {
            cohort_id,
            name,
            members: *members,
        })
        .collect();
    json_response(StatusCode::OK, &body)
}

fn cohort_members(state: &State, cohort_id: &str) -> Resp {
    match state.view(cohort_id) {
        Some(view) => json_response(
            StatusCode::OK,
            &json!({ "cohort_id": view.cohort_id, "name": view.name, "members": view.members }),
        ),
        None => message(StatusCode::NOT_FOUND, "cohort not found"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Instant, SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const KEY: &str = "pk-test";
    const SECRET: &str = "cs-test";

    fn config() -> EmulatorConfig {
        EmulatorConfig {
            partner: "cohort-bridge".to_owned(),
            partner_api_key: KEY.to_owned(),
            client_secret: SECRET.to_owned(),
            ..EmulatorConfig::default()
        }
    }

    fn faulty(faults: FaultConfig) -> EmulatorConfig {
        EmulatorConfig { faults, ..config() }
    }

    async fn emulator(config: EmulatorConfig) -> EmulatorHandle {
        start("127.0.0.1:0".parse().unwrap(), config).await.unwrap()
    }

    fn create_body(cohort_id: &str, name: &str) -> Value {
        json!({
            "partner_api_key": KEY, "client_secret": SECRET,
            "cohort_id": cohort_id, "name": name, "created_at": "2026-01-31T12:00:00Z",
        })
    }

    fn users_body(cohort_id: &str, changes: Value) -> Value {
        json!({
            "partner_api_key": KEY, "client_secret": SECRET,
            "cohort_id": cohort_id, "cohort_changes": changes,
        })
    }

    async fn post(h: &EmulatorHandle, path: &str, body: &Value) -> reqwest::Response {
        let url = format!("{}/partners/cohort-bridge{path}", h.base_url());
        reqwest::Client::new()
            .post(url)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn status_and_message(resp: reqwest::Response) -> (u16, String) {
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        (
            status,
            body["message"].as_str().unwrap_or_default().to_owned(),
        )
    }

    async fn create(h: &EmulatorHandle, cohort_id: &str, name: &str) -> (u16, String) {
        status_and_message(post(h, "/cohorts", &create_body(cohort_id, name)).await).await
    }

    async fn users(h: &EmulatorHandle, cohort_id: &str, changes: Value) -> (u16, String) {
        status_and_message(post(h, "/cohorts/users", &users_body(cohort_id, changes)).await).await
    }

    async fn get_json(h: &EmulatorHandle, path: &str) -> (u16, Value) {
        let resp = reqwest::get(format!("{}{path}", h.base_url()))
            .await
            .unwrap();
        (resp.status().as_u16(), resp.json().await.unwrap())
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn create_add_remove_and_read_members() {
        let h = emulator(config()).await;
        let resp = post(&h, "/cohorts", &create_body("c1", "High value")).await;
        assert_eq!(resp.status().as_u16(), 201);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(resp.headers()["x-ratelimit-limit"], "250000");
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"message": "success"})
        );
        assert_eq!(h.members("c1"), Some(vec![]));

        let changes = json!([
            {"user_ids": ["u3", "u1", "u2"]},
            {"device_ids": ["d1"], "aliases": [{"alias_name": "n", "alias_label": "l"}]},
        ]);
        assert_eq!(users(&h, "c1", changes).await, (201, "success".to_owned()));
        let removal = json!([{"user_ids": ["u2", "ghost"], "should_remove": true}]);
        assert_eq!(users(&h, "c1", removal).await.0, 201);
        assert_eq!(
            h.members("c1"),
            Some(strings(&["alias:n:l", "device:d1", "u1", "u3"]))
        );

        assert_eq!(create(&h, "c1", "High value").await.0, 201);
        assert_eq!(create(&h, "c1", "Very high value").await.0, 201);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("Very high value"));
        assert_eq!(h.members("nope"), None);
        assert_eq!(h.cohort_name("nope"), None);

        let (status, body) = get_json(&h, "/_emulator/cohorts/c1/members").await;
        assert_eq!(status, 200);
        assert_eq!(body["name"], "Very high value");
        assert_eq!(
            body["members"],
            json!(["alias:n:l", "device:d1", "u1", "u3"])
        );
        assert_eq!(get_json(&h, "/_emulator/cohorts/nope/members").await.0, 404);
        let (_, list) = get_json(&h, "/_emulator/cohorts").await;
        assert_eq!(
            list,
            json!([{"cohort_id": "c1", "name": "Very high value", "members": 4}])
        );
        let (_, stats) = get_json(&h, "/_emulator/stats").await;
        let stats: Stats = serde_json::from_value(stats).unwrap();
        assert_eq!((stats.cohorts_created, stats.cohorts_renamed), (1, 1));
        assert_eq!(stats.user_requests_applied, 2);
        assert_eq!((stats.ids_added, stats.ids_removed), (5, 2));
        assert_eq!(stats.redundant_removes, 1);
        assert_eq!(stats.max_ids_per_request, 5);
        assert_eq!(stats.by_status.get(&201), Some(&5));
        h.shutdown();
    }

    #[tokio::test]
    async fn validation_errors_name_the_field() {
        let h = emulator(config()).await;
        assert_eq!(create(&h, "c1", "One").await.0, 201);

        let ids: Vec<String> = (0..1001).map(|i| format!("u{i}")).collect();
        let too_many =
            json!([{"user_ids": ids[..600]}, {"user_ids": ids[600..], "should_remove": true}]);
        assert_eq!(
            users(&h, "c1", too_many).await,
            (400, "too many ids: 1001 > 1000".to_owned())
        );
        assert_eq!(h.stats().max_ids_per_request, 1001);
        assert_eq!(h.members("c1"), Some(vec![]));

        assert_eq!(
            create(&h, "c2", "").await,
            (400, "name must be a non-empty string".to_owned())
        );
        let mut bad_time = create_body("c2", "Two");
        bad_time["created_at"] = json!("yesterday");
        let (status, msg) = status_and_message(post(&h, "/cohorts", &bad_time).await).await;
        assert_eq!(status, 400);
        assert!(msg.starts_with("created_at must be"), "{msg}");
        assert_eq!(h.cohort_name("c2"), None);

        let non_string = json!([{"user_ids": ["a"]}, {"user_ids": ["b", "c", 7]}]);
        let expected = "cohort_changes[1].user_ids[2] must be a string".to_owned();
        assert_eq!(users(&h, "c1", non_string).await, (400, expected));
        let bad_alias = json!([{"aliases": [{"alias_name": "n"}]}]);
        let expected =
            "cohort_changes[0].aliases[0].alias_label must be a non-empty string".to_owned();
        assert_eq!(users(&h, "c1", bad_alias).await, (400, expected));
        let no_ids = json!([{"user_ids": [], "should_remove": true}]);
        assert!(
            users(&h, "c1", no_ids)
                .await
                .1
                .starts_with("cohort_changes[0] must carry")
        );
        let empty = users(&h, "c1", json!([])).await;
        assert_eq!(
            empty,
            (400, "cohort_changes must be a non-empty array".to_owned())
        );
        let unknown = users(&h, "c9", json!([{"user_ids": ["a"]}])).await;
        assert_eq!(unknown, (400, "cohort_id \"c9\" not found".to_owned()));

        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let resp = reqwest::Client::new()
            .post(url)
            .body("{not json")
            .send()
            .await
            .unwrap();
        let (status, msg) = status_and_message(resp).await;
        assert_eq!(status, 400);
        assert!(msg.starts_with("malformed JSON body: "), "{msg}");
        assert_eq!(h.members("c1"), Some(vec![]));
        assert_eq!(h.stats().user_requests_applied, 0);
    }

    #[tokio::test]
    async fn auth_errors_and_routing() {
        let h = emulator(config()).await;
        let mut wrong_key = create_body("c1", "One");
        wrong_key["partner_api_key"] = json!("nope");
        let resp = post(&h, "/cohorts", &wrong_key).await;
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
        assert_eq!(
            status_and_message(resp).await,
            (401, "invalid partner key".to_owned())
        );
        let mut wrong_secret = create_body("c1", "One");
        wrong_secret["client_secret"] = json!("nope");
        let resp = post(&h, "/cohorts", &wrong_secret).await;
        assert_eq!(
            status_and_message(resp).await,
            (401, "invalid client secret".to_owned())
        );
        let url = format!("{}/partners/someone-else/cohorts", h.base_url());
        let resp = reqwest::Client::new()
            .post(url)
            .json(&create_body("c1", "One"))
            .send()
            .await
            .unwrap();
        assert_eq!(
            status_and_message(resp).await,
            (401, "partner not enabled".to_owned())
        );
        assert_eq!(h.cohort_name("c1"), None);

        let client = reqwest::Client::new();
        let base = h.base_url();
        let get = client
            .get(format!("{base}/partners/cohort-bridge/cohorts"))
            .send()
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 405);
        assert_eq!(get.headers()[ALLOW], "POST");
        let missing = client
            .post(format!("{base}/partners/cohort-bridge/other"))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status().as_u16(), 404);
        let stats = h.stats();
        assert_eq!(stats.requests, 5);
        assert_eq!(
            stats.by_status,
            BTreeMap::from([(401, 3), (404, 1), (405, 1)])
        );
    }

    #[tokio::test]
    async fn rate_limit_answers_429_then_recovers() {
        let window = Duration::from_secs(2);
        let h = emulator(EmulatorConfig {
            rate_limit: RateLimitConfig {
                requests: 3,
                window,
            },
            ..config()
        })
        .await;
        // Windows are aligned to the epoch: start just after one begins, so all four requests
        // fall in the same window.
        let into = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis()
            % 2000;
        tokio::time::sleep(Duration::from_millis((2000 - into + 20) as u64)).await;
        for remaining in ["2", "1", "0"] {
            let resp = post(&h, "/cohorts", &create_body("c1", "One")).await;
            assert_eq!(resp.status().as_u16(), 201);
            assert_eq!(resp.headers()["x-ratelimit-limit"], "3");
            assert_eq!(resp.headers()["x-ratelimit-remaining"], remaining);
        }
        let resp = post(&h, "/cohorts", &create_body("c1", "Renamed")).await;
        assert_eq!(resp.status().as_u16(), 429);
        let headers = resp.headers();
        assert_eq!(headers["x-ratelimit-remaining"], "0");
        let retry: u64 = headers[RETRY_AFTER].to_str().unwrap().parse().unwrap();
        assert!((1..=2).contains(&retry), "retry-after {retry}");
        let reset: u64 = headers["x-ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!(
            reset >= now && reset <= now + 2 && reset.is_multiple_of(2),
            "reset {reset}, now {now}"
        );
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"message": "rate limit exceeded"})
        );
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
        assert_eq!(h.stats().rate_limited, 1);
        let log: Vec<bool> = h
            .rate_log()
            .into_iter()
            .map(|(_, allowed)| allowed)
            .collect();
        assert_eq!(log, [true, true, true, false]);

        tokio::time::sleep(window + Duration::from_millis(100)).await;
        assert_eq!(create(&h, "c1", "Renamed").await.0, 201);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("Renamed"));
    }

    #[tokio::test]
    async fn fault_error_before_apply_and_locked_do_not_apply() {
        let h = emulator(faulty(FaultConfig {
            error_before_apply: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        let resp = post(&h, "/cohorts", &create_body("c1", "One")).await;
        assert!(resp.headers().get("x-ratelimit-remaining").is_some());
        assert_eq!(resp.status().as_u16(), 500);
        assert_eq!(h.cohort_name("c1"), None);

        let h = emulator(faulty(FaultConfig {
            locked: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        assert_eq!(
            create(&h, "c1", "One").await,
            (423, "Resource locked".to_owned())
        );
        assert_eq!(h.cohort_name("c1"), None);
        assert_eq!(h.stats().by_status, BTreeMap::from([(423, 1)]));
    }

    #[tokio::test]
    async fn fault_error_after_apply_applies_and_answers_500() {
        let h = emulator(faulty(FaultConfig {
            error_after_apply: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        assert_eq!(create(&h, "c1", "One").await.0, 500);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
        assert_eq!(
            users(&h, "c1", json!([{"user_ids": ["b", "a"]}])).await.0,
            500
        );
        assert_eq!(h.members("c1"), Some(strings(&["a", "b"])));
        // Invalid requests are still refused, not applied.
        assert_eq!(users(&h, "c1", json!([{"user_ids": [1]}])).await.0, 400);
        assert_eq!(h.stats().user_requests_applied, 1);
    }

    #[tokio::test]
    async fn fault_slow_delays_then_answers_normally() {
        let slow_delay = Duration::from_millis(300);
        let h = emulator(faulty(FaultConfig {
            slow: 1.0,
            slow_delay,
            ..FaultConfig::default()
        }))
        .await;
        let started = Instant::now();
        assert_eq!(create(&h, "c1", "One").await.0, 201);
        assert!(started.elapsed() >= slow_delay);
        assert_eq!(h.cohort_name("c1").as_deref(), Some("One"));
    }

    #[tokio::test]
    async fn fault_drop_closes_the_connection_without_a_response() {
        let h = emulator(faulty(FaultConfig {
            drop_connection: 1.0,
            ..FaultConfig::default()
        }))
        .await;
        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let result = reqwest::Client::new()
            .post(url)
            .json(&create_body("c1", "One"))
            .send()
            .await;
        let error = result.expect_err("a dropped connection must not produce a response");
        assert!(!error.is_status(), "{error}");

        // The same over a raw socket: the server closes without writing a single byte.
        let body = create_body("c1", "One").to_string();
        let request = format!(
            "POST /partners/cohort-bridge/cohorts HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        let mut stream = TcpStream::connect(h.addr()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let read =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut received)).await;
        let read = read.expect("the server must close the connection");
        assert!(
            read.is_err() || received.is_empty(),
            "got {:?}",
            String::from_utf8_lossy(&received)
        );
        assert_eq!(h.cohort_name("c1"), None);
        let stats = h.stats();
        assert_eq!(stats.dropped_connections, 2);
        assert!(stats.by_status.is_empty());
    }

    #[tokio::test]
    async fn redundant_adds_and_removes_are_counted() {
        let h = emulator(config()).await;
        create(&h, "c1", "One").await;
        users(&h, "c1", json!([{"user_ids": ["a", "b"]}])).await;
        users(
            &h,
            "c1",
            json!([{"user_ids": ["b", "c"]}, {"user_ids": ["z", "a"], "should_remove": true}]),
        )
        .await;
        users(&h, "c1", json!([{"user_ids": ["a"]}])).await;
        assert_eq!(h.members("c1"), Some(strings(&["a", "b", "c"])));
        let stats = h.stats();
        assert_eq!((stats.ids_added, stats.ids_removed), (5, 2));
        assert_eq!((stats.redundant_adds, stats.redundant_removes), (1, 1));
    }

    #[tokio::test]
    async fn concurrent_keep_alive_requests_all_apply() {
        let h = emulator(config()).await;
        create(&h, "c1", "One").await;
        let client = reqwest::Client::new();
        let url = format!("{}/partners/cohort-bridge/cohorts/users", h.base_url());
        let tasks = (0..40).map(|t| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                let ids: Vec<String> = (0..250).map(|i| format!("u{t}-{i}")).collect();
                let body = users_body("c1", json!([{"user_ids": ids}]));
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        });
        for task in tasks.collect::<Vec<_>>() {
            assert_eq!(task.await.unwrap(), 201);
        }
        assert_eq!(h.members("c1").map(|m| m.len()), Some(40 * 250));
    }

    #[tokio::test]
    async fn shutdown_stops_accepting() {
        let h = emulator(config()).await;
        assert_eq!(create(&h, "c1", "One").await.0, 201);
        h.shutdown();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let url = format!("{}/partners/cohort-bridge/cohorts", h.base_url());
        let result = reqwest::Client::new()
            .post(url)
            .json(&create_body("c2", "Two"))
            .send()
            .await;
        assert!(result.is_err());
    }

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

    #[test]
    fn config_debug_hides_keys() {
        let text = format!("{:?}", config());
        assert!(!text.contains(KEY) && !text.contains(SECRET), "{text}");
    }
}
