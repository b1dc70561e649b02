//! Customer.io's Track API v1 manual segments, as `docs/partners/customerio.md` describes them:
//! `POST /api/v1/segments/{segment_id}/add_customers` and `/remove_customers`, HTTP Basic auth
//! with the workspace's Site ID and Track API key, a body `{"ids": [...]}` of 1 to 1,000
//! strings of the kind the query's `id_type` names (`id`, `email` or `cio_id`; absent means
//! `id`), and 200 `{}` on success with no per-id report: people unknown to the workspace and
//! values that are not of the `id_type` are ignored silently. Errors are 400 with
//! `{"meta": {"errors": [...]}}` and 401; an unknown segment is 404 (an assumption: the docs
//! list no status for it). A sliding-window rate limit per workspace answers 429 with no header
//! (none is documented), and seeded faults (the shared ones, and a redirect to the EU host, a
//! 401 mid-run, an HTML 200, a 429 with a `Retry-After`) test the client.
//!
//! Written from the contract page alone: it parses with `serde_json::Value` and shares no code
//! with the `customerio` destination. `GET /_emulator/customerio` and
//! `/_emulator/customerio/segments/{id}` let tests read what the Track API cannot (membership).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use hyper::{Request, Response, StatusCode};
use serde_json::{Value, json};

use super::config::{CustomerioConfig, CustomerioFaults};
use super::faults::{FaultInjector, FaultKind, lock};
use super::server::{Abort, Resp, json_response, read_body};
use super::{FaultConfig, RateLimitConfig, Shared};
use crate::hash::SplitMix64;

/// Ids per request, at most (both endpoints: "You are limited to 1000 customer IDs per
/// request"; the schema says `string[] 1…1000`).
pub const MAX_IDS: usize = 1000;

/// The EU region's host, where the redirect fault points.
const EU_HOST: &str = "https://track-eu.customer.io";

/// Which endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    Add,
    Remove,
}

/// The `id_type` query parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    Id,
    Email,
    CioId,
}

/// What the emulator counts of the Track API's segment endpoints.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CustomerioStats {
    /// Requests to the two endpoints, whatever their answer.
    pub requests: u64,
    /// Their answers by status.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests whose ids were applied.
    pub applied: u64,
    /// Ids added to a segment they were not in, and removed from one they were in.
    pub ids_added: u64,
    pub ids_removed: u64,
    /// Ids added that were already members, removed that were not.
    pub redundant_adds: u64,
    pub redundant_removes: u64,
    /// Ids ignored silently: people unknown to the workspace, values not of the `id_type`.
    pub ignored: u64,
    /// The most ids seen in one request, even a refused one.
    pub max_ids_per_request: u64,
    /// 429 answers of the rate limit (not of the seeded faults).
    pub rate_limited: u64,
    /// Connections dropped by a seeded fault.
    pub dropped: u64,
}

/// One segment: its kind and members, keyed `i:ID`, `e:EMAIL` (lowercase), `c:CIO_ID`.
#[derive(Debug, Default)]
struct Segment {
    data_driven: bool,
    members: Members,
}

/// A segment's members in 64 sets by the key's hash: growing one set of a million rehashes it
/// under the workspace's lock, holding back every request meanwhile (they would then reach the
/// rate limit together, which a real edge, timing requests as they arrive, never does).
#[derive(Debug)]
struct Members(Vec<HashSet<String>>);

impl Default for Members {
    fn default() -> Self {
        Members((0..64).map(|_| HashSet::new()).collect())
    }
}

impl Members {
    fn shard(&mut self, key: &str) -> &mut HashSet<String> {
        let h = crate::hash::fnv1a64(key.as_bytes());
        &mut self.0[(h % 64) as usize]
    }

    fn insert(&mut self, key: String) -> bool {
        self.shard(&key).insert(key)
    }

    fn remove(&mut self, key: &str) -> bool {
        self.shard(key).remove(key)
    }

    fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter().flatten()
    }

    fn len(&self) -> usize {
        self.0.iter().map(HashSet::len).sum()
    }
}

/// The one workspace: its segments, rate limit, faults and counters.
pub(crate) struct Workspace {
    config: CustomerioConfig,
    segments: Mutex<HashMap<i32, Segment>>,
    limiter: SlidingWindow,
    faults: FaultInjector,
    own: Mutex<SplitMix64>,
    stats: Mutex<CustomerioStats>,
}

impl Workspace {
    pub(crate) fn new(config: &CustomerioConfig) -> Self {
        let mut segments = HashMap::new();
        for id in &config.manual_segments {
            segments.insert(*id, Segment::default());
        }
        for id in &config.data_driven_segments {
            segments.insert(
                *id,
                Segment {
                    data_driven: true,
                    ..Segment::default()
                },
            );
        }
        Workspace {
            segments: Mutex::new(segments),
            limiter: SlidingWindow::new(&config.rate_limit),
            // Customer.io documents no 423: the shared `locked` fault is off here.
            faults: FaultInjector::new(FaultConfig {
                locked: 0.0,
                ..config.faults.clone()
            }),
            own: Mutex::new(SplitMix64(config.own_faults.seed)),
            stats: Mutex::default(),
            config: config.clone(),
        }
    }

    /// A segment's members, sorted: ids as they are, `email:ADDRESS`, `cio_id:ID`. `None` if no
    /// such segment exists.
    pub(crate) fn members(&self, segment_id: i32) -> Option<Vec<String>> {
        let segments = lock(&self.segments);
        let segment = segments.get(&segment_id)?;
        let mut out: Vec<String> = segment.members.iter().map(|k| shown(k)).collect();
        out.sort_unstable();
        Some(out)
    }

    pub(crate) fn stats(&self) -> CustomerioStats {
        lock(&self.stats).clone()
    }

    /// Every rate-limited request's arrival and whether the limit let it through.
    pub(crate) fn rate_log(&self) -> Vec<(SystemTime, bool)> {
        lock(&self.limiter.log).clone()
    }

    fn count(&self, f: impl FnOnce(&mut CustomerioStats)) {
        f(&mut lock(&self.stats));
    }

    /// Whether `Authorization` is `Basic base64(site_id:api_key)` of this workspace.
    fn authorized(&self, header: Option<&str>) -> bool {
        let Some(encoded) = header.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        }) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return false;
        };
        let expected = format!("{}:{}", self.config.site_id, self.config.api_key);
        decoded == expected.as_bytes()
    }

    /// This API's own fault for the next authenticated request: always five draws.
    fn own_fault(&self) -> Option<OwnFault> {
        let c: &CustomerioFaults = &self.config.own_faults;
        if c.redirect <= 0.0 && c.unauthorized <= 0.0 && c.html <= 0.0 && c.too_many <= 0.0 {
            return None;
        }
        let draws: [f64; 4] = {
            let mut rng = lock(&self.own);
            std::array::from_fn(|_| rng.next_f64())
        };
        if draws[0] < c.redirect {
            Some(OwnFault::Redirect)
        } else if draws[1] < c.unauthorized {
            Some(OwnFault::Unauthorized)
        } else if draws[2] < c.html {
            Some(OwnFault::Html)
        } else if draws[3] < c.too_many {
            Some(OwnFault::TooMany)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OwnFault {
    Redirect,
    Unauthorized,
    Html,
    TooMany,
}

/// A member key as the inspection shows it.
fn shown(key: &str) -> String {
    match key.split_at(2) {
        ("i:", id) => id.to_owned(),
        ("e:", email) => format!("email:{email}"),
        (_, cio) => format!("cio_id:{cio}"),
    }
}

/// At most `limit` requests admitted in any `window` (a sliding log): the strictest reading of
/// "100 requests per second" — a client within it is within a fixed window or a token bucket of
/// the same figures too. Refused requests do not count.
struct SlidingWindow {
    limit: u64,
    window: Duration,
    admitted: Mutex<VecDeque<Instant>>,
    log: Mutex<Vec<(SystemTime, bool)>>,
}

/// Decisions kept for `rate_log`: enough for any test or benchmark, bounded.
const MAX_LOG: usize = 1_000_000;

impl SlidingWindow {
    fn new(config: &RateLimitConfig) -> Self {
        SlidingWindow {
            limit: config.requests,
            window: config.window.max(Duration::from_millis(1)),
            admitted: Mutex::default(),
            log: Mutex::default(),
        }
    }

    fn check(&self) -> bool {
        let now = Instant::now();
        let allowed = {
            let mut admitted = lock(&self.admitted);
            while admitted
                .front()
                .is_some_and(|t| now.duration_since(*t) >= self.window)
            {
                admitted.pop_front();
            }
            let allowed = (admitted.len() as u64) < self.limit;
            if allowed {
                admitted.push_back(now);
            }
            allowed
        };
        let mut log = lock(&self.log);
        if log.len() < MAX_LOG {
            log.push((SystemTime::now(), allowed));
        }
        allowed
    }
}

/// An error answer: `{"meta": {"errors": [message]}}` (the documented 400 shape; used for the
/// other statuses too, whose bodies are undocumented).
fn error(status: StatusCode, message: &str) -> Resp {
    json_response(status, &json!({"meta": {"errors": [message]}}))
}

/// The endpoints: a wrapper that counts each answer by status.
pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    segment: &str,
    op: Op,
) -> Result<Resp, Abort> {
    let ws = &shared.customerio;
    let result = answer(ws, req, segment, op).await;
    ws.count(|s| {
        s.requests += 1;
        match &result {
            Ok(resp) => *s.by_status.entry(resp.status().as_u16()).or_default() += 1,
            Err(abort) if abort.fault => s.dropped += 1,
            Err(_) => {}
        }
    });
    result
}

async fn answer(
    ws: &Workspace,
    req: Request<Incoming>,
    segment: &str,
    op: Op,
) -> Result<Resp, Abort> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned());
    let query = req.uri().query().map(str::to_owned);
    // Auth and the rate limit need only the headers: counted as the request arrives, before
    // its body is read (as an edge would).
    let authorized = ws.authorized(auth.as_deref());
    let admitted = authorized && ws.limiter.check();
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    if !authorized {
        return Ok(error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized request. Make sure that you provided the right credentials.",
        ));
    }
    if !admitted {
        ws.count(|s| s.rate_limited += 1);
        return Ok(error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded"));
    }
    match ws.own_fault() {
        Some(OwnFault::Redirect) => {
            let mut resp = error(StatusCode::FOUND, "this workspace is in the EU region");
            if let Ok(location) = HeaderValue::from_str(&format!("{EU_HOST}{path_and_query}")) {
                resp.headers_mut().insert(LOCATION, location);
            }
            return Ok(resp);
        }
        Some(OwnFault::Unauthorized) => {
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "Unauthorized request. Make sure that you provided the right credentials.",
            ));
        }
        Some(OwnFault::Html) => {
            let mut resp = Response::new(Full::new(Bytes::from_static(
                b"<html><body>Down for maintenance</body></html>",
            )));
            resp.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("text/html"));
            return Ok(resp);
        }
        Some(OwnFault::TooMany) => {
            let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate limit exceeded");
            if let Some(v) = ws.config.own_faults.retry_after.as_deref()
                && let Ok(v) = HeaderValue::from_str(v)
            {
                resp.headers_mut().insert(RETRY_AFTER, v);
            }
            return Ok(resp);
        }
        None => {}
    }
    let fault = ws.faults.decide();
    if fault.slow {
        tokio::time::sleep(ws.config.faults.slow_delay).await;
    }
    match fault.kind {
        FaultKind::Drop => return Err(Abort { fault: true }),
        FaultKind::ErrorBeforeApply => {
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal server error",
            ));
        }
        FaultKind::Locked | FaultKind::ErrorAfterApply | FaultKind::None => {}
    }
    let request = match parse(segment, query.as_deref(), &body, ws) {
        Ok(r) => r,
        Err((status, message)) => return Ok(error(status, &message)),
    };
    apply(ws, &request, op);
    if fault.kind == FaultKind::ErrorAfterApply {
        return Ok(error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal server error",
        ));
    }
    Ok(json_response(StatusCode::OK, &json!({})))
}

/// A valid request.
struct Parsed {
    segment_id: i32,
    id_type: IdType,
    ids: Vec<String>,
}

/// The segment, the `id_type` and the ids of a request, or the error answer's status and
/// message.
fn parse(
    segment: &str,
    query: Option<&str>,
    body: &[u8],
    ws: &Workspace,
) -> Result<Parsed, (StatusCode, String)> {
    let bad = |m: &str| (StatusCode::BAD_REQUEST, m.to_owned());
    // The docs list no status for an unknown segment or one that is not an int32: 404.
    let Some(segment_id) = segment.parse::<i32>().ok().filter(|id| *id > 0) else {
        return Err((
            StatusCode::NOT_FOUND,
            format!("segment `{segment}` not found"),
        ));
    };
    match lock(&ws.segments).get(&segment_id) {
        None => {
            return Err((
                StatusCode::NOT_FOUND,
                format!("segment {segment_id} not found"),
            ));
        }
        Some(s) if s.data_driven => {
            return Err(bad(&format!(
                "segment {segment_id} is data-driven: only manual segments can be changed through the API"
            )));
        }
        Some(_) => {}
    }
    let id_type = match query_value(query.unwrap_or(""), "id_type").as_deref() {
        None | Some("id") => IdType::Id,
        Some("email") => IdType::Email,
        Some("cio_id") => IdType::CioId,
        Some(other) => {
            return Err(bad(&format!(
                "id_type must be one of id, email, cio_id; got `{other}`"
            )));
        }
    };
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(bad("the body must be a JSON object"));
    };
    let Some(Value::Array(items)) = obj.remove("ids") else {
        return Err(bad("ids must be an array of strings"));
    };
    ws.count(|s| s.max_ids_per_request = s.max_ids_per_request.max(items.len() as u64));
    if items.is_empty() || items.len() > MAX_IDS {
        return Err(bad(&format!(
            "ids must hold 1 to {MAX_IDS} items, got {}",
            items.len()
        )));
    }
    let mut ids = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::String(s) => ids.push(s),
            _ => return Err(bad(&format!("ids[{i}] must be a string"))),
        }
    }
    Ok(Parsed {
        segment_id,
        id_type,
        ids,
    })
}

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(k) == name).then(|| decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(b) => {
                    out.push(b);
                    i += 3;
                }
                None => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The member key of a value of `id_type`, or `None` when the value is not of that kind (the
/// docs: "we'll ignore values in the ids array that don't match the id_type parameter"; what
/// "match" means is not said: an email is taken to be `local@domain`, a `cio_id` to be
/// alphanumeric with or without its `cio_` prefix, an id any non-empty string).
fn key(id_type: IdType, value: &str) -> Option<String> {
    match id_type {
        IdType::Id => (!value.is_empty()).then(|| format!("i:{value}")),
        IdType::Email => {
            let (local, domain) = value.split_once('@')?;
            let ok = !local.is_empty() && !domain.is_empty() && !domain.contains('@');
            // Emails match case-insensitively.
            ok.then(|| format!("e:{}", value.to_lowercase()))
        }
        IdType::CioId => {
            let bare = value.strip_prefix("cio_").unwrap_or(value);
            let ok = !bare.is_empty() && bare.bytes().all(|b| b.is_ascii_alphanumeric());
            ok.then(|| format!("c:{bare}"))
        }
    }
}

/// Applies a valid request: set semantics; people unknown to the workspace and values not of
/// the `id_type` are ignored silently.
fn apply(ws: &Workspace, request: &Parsed, op: Op) {
    let marker = ws.config.unknown_marker.as_deref();
    let (mut changed, mut redundant, mut ignored) = (0u64, 0u64, 0u64);
    {
        let mut segments = lock(&ws.segments);
        let Some(segment) = segments.get_mut(&request.segment_id) else {
            return;
        };
        for value in &request.ids {
            let known = marker.is_none_or(|m| !value.contains(m));
            let Some(key) = key(request.id_type, value).filter(|_| known) else {
                ignored += 1;
                continue;
            };
            let done = match op {
                Op::Add => segment.members.insert(key),
                Op::Remove => segment.members.remove(&key),
            };
            if done {
                changed += 1;
            } else {
                redundant += 1;
            }
        }
    }
    ws.count(|s| {
        s.applied += 1;
        s.ignored += ignored;
        match op {
            Op::Add => {
                s.ids_added += changed;
                s.redundant_adds += redundant;
            }
            Op::Remove => {
                s.ids_removed += changed;
                s.redundant_removes += redundant;
            }
        }
    });
}

/// What the rate log says of the pace: requests admitted and refused, the first and last
/// admitted (epoch milliseconds), and the most admitted in any rolling window.
fn pace(ws: &Workspace) -> Value {
    let log = lock(&ws.limiter.log);
    let admitted: Vec<SystemTime> = log.iter().filter(|(_, ok)| *ok).map(|(t, _)| *t).collect();
    let ms = |t: &SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    let (mut busiest, mut from) = (0usize, 0usize);
    for (to, t) in admitted.iter().enumerate() {
        while t.duration_since(admitted[from]).unwrap_or_default() >= ws.limiter.window {
            from += 1;
        }
        busiest = busiest.max(to + 1 - from);
    }
    json!({
        "admitted": admitted.len(),
        "refused": log.len() - admitted.len(),
        "first_ms": admitted.first().map(ms),
        "last_ms": admitted.last().map(ms),
        "busiest_window": busiest,
    })
}

/// `GET /_emulator/customerio`: the counters, the pace and every segment's size.
pub(super) fn report(shared: &Shared) -> Resp {
    let ws = &shared.customerio;
    let segments: BTreeMap<String, Value> = lock(&ws.segments)
        .iter()
        .map(|(id, s)| {
            (
                id.to_string(),
                json!({"data_driven": s.data_driven, "members": s.members.len()}),
            )
        })
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"stats": ws.stats(), "pace": pace(ws), "segments": segments}),
    )
}

/// `GET /_emulator/customerio/segments/{id}`: one segment's members, sorted.
pub(super) fn segment_members(shared: &Shared, segment: &str) -> Resp {
    match segment
        .parse::<i32>()
        .ok()
        .and_then(|id| shared.customerio.members(id).map(|m| (id, m)))
    {
        Some((id, members)) => json_response(
            StatusCode::OK,
            &json!({"segment_id": id, "members": members}),
        ),
        None => error(StatusCode::NOT_FOUND, "no such segment"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::{EmulatorConfig, EmulatorHandle, start};

    const SITE: &str = "site-1";
    const KEY: &str = "track-key-1";

    fn config(customerio: CustomerioConfig) -> EmulatorConfig {
        EmulatorConfig {
            customerio: CustomerioConfig {
                site_id: SITE.into(),
                api_key: KEY.into(),
                ..customerio
            },
            ..EmulatorConfig::default()
        }
    }

    async fn emulator(customerio: CustomerioConfig) -> EmulatorHandle {
        start("127.0.0.1:0".parse().unwrap(), config(customerio))
            .await
            .unwrap()
    }

    fn basic(site: &str, key: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{site}:{key}"))
        )
    }

    async fn post(
        h: &EmulatorHandle,
        path_and_query: &str,
        auth: Option<String>,
        body: &str,
    ) -> reqwest::Response {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut req = client
            .post(format!("{}{path_and_query}", h.base_url()))
            .header("content-type", "application/json")
            .body(body.to_owned());
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        req.send().await.unwrap()
    }

    async fn call(h: &EmulatorHandle, path_and_query: &str, ids: Value) -> (u16, Value) {
        let resp = post(
            h,
            path_and_query,
            Some(basic(SITE, KEY)),
            &json!({ "ids": ids }).to_string(),
        )
        .await;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn strings(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn adds_and_removes_by_each_id_type_with_set_semantics() {
        let h = emulator(CustomerioConfig::default()).await;
        let add = "/api/v1/segments/1/add_customers";
        assert_eq!(call(&h, add, json!(["u2", "u1"])).await, (200, json!({})));
        let by_email = format!("{add}?id_type=email");
        assert_eq!(
            call(&h, &by_email, json!(["Ann@Example.com", "not-an-email"])).await,
            (200, json!({}))
        );
        let by_cio = format!("{add}?id_type=cio_id");
        assert_eq!(
            call(&h, &by_cio, json!(["cio_0a1", "bad id!"])).await.0,
            200
        );
        // Again: set semantics, still 200.
        assert_eq!(call(&h, add, json!(["u1"])).await.0, 200);
        assert_eq!(
            h.customerio_members(1),
            Some(strings(&[
                "cio_id:0a1",
                "email:ann@example.com",
                "u1",
                "u2"
            ]))
        );
        let remove = "/api/v1/segments/1/remove_customers";
        assert_eq!(
            call(
                &h,
                &format!("{remove}?id_type=email"),
                json!(["ANN@example.com"])
            )
            .await,
            (200, json!({}))
        );
        // `id_type=id` explicitly, and a non-member: a no-op.
        assert_eq!(
            call(&h, &format!("{remove}?id_type=id"), json!(["u2", "ghost"]))
                .await
                .0,
            200
        );
        assert_eq!(
            h.customerio_members(1),
            Some(strings(&["cio_id:0a1", "u1"]))
        );
        let stats = h.customerio_stats();
        assert_eq!((stats.ids_added, stats.ids_removed), (4, 2));
        assert_eq!((stats.redundant_adds, stats.redundant_removes), (1, 1));
        assert_eq!(stats.ignored, 2);
        assert_eq!(stats.applied, 6);
        assert_eq!(stats.by_status, BTreeMap::from([(200, 6)]));

        let resp = reqwest::get(format!("{}/_emulator/customerio/segments/1", h.base_url()))
            .await
            .unwrap();
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"segment_id": 1, "members": ["cio_id:0a1", "u1"]})
        );
        let report: Value = reqwest::get(format!("{}/_emulator/customerio", h.base_url()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(report["segments"]["1"]["members"], 2);
        assert_eq!(report["pace"]["admitted"], 6);
        assert_eq!(report["pace"]["busiest_window"], 6);
        assert_eq!(report["stats"]["applied"], 6);
        assert_eq!(h.customerio_members(9), None);
    }

    #[tokio::test]
    async fn unknown_people_are_ignored_silently() {
        let h = emulator(CustomerioConfig {
            unknown_marker: Some("nobody".into()),
            ..CustomerioConfig::default()
        })
        .await;
        let add = "/api/v1/segments/2/add_customers";
        assert_eq!(
            call(&h, add, json!(["u1", "nobody-7"])).await,
            (200, json!({}))
        );
        assert_eq!(h.customerio_members(2), Some(strings(&["u1"])));
        assert_eq!(h.customerio_stats().ignored, 1);
    }

    #[tokio::test]
    async fn auth_is_basic_site_id_and_track_key() {
        let h = emulator(CustomerioConfig::default()).await;
        let path = "/api/v1/segments/1/add_customers";
        let body = r#"{"ids":["u1"]}"#;
        for auth in [
            None,
            Some(basic(SITE, "wrong")),
            Some(basic("other-site", KEY)),
            Some(format!("Bearer {KEY}")),
            Some("Basic %%%".to_owned()),
        ] {
            let resp = post(&h, path, auth.clone(), body).await;
            assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
            let text = resp.text().await.unwrap();
            assert!(text.contains("Unauthorized request"), "{text}");
        }
        // The scheme is case-insensitive.
        let lower = basic(SITE, KEY).replacen("Basic", "basic", 1);
        assert_eq!(
            post(&h, path, Some(lower), body).await.status().as_u16(),
            200
        );
        assert_eq!(h.customerio_members(1), Some(strings(&["u1"])));
        assert_eq!(h.customerio_stats().by_status.get(&401), Some(&5));
    }

    #[tokio::test]
    async fn invalid_requests_are_400_and_apply_nothing() {
        let h = emulator(CustomerioConfig::default()).await;
        let add = "/api/v1/segments/1/add_customers";
        let too_many: Vec<String> = (0..=MAX_IDS).map(|i| format!("u{i}")).collect();
        let (status, body) = call(&h, add, json!(too_many)).await;
        assert_eq!(status, 400);
        assert_eq!(
            body,
            json!({"meta": {"errors": ["ids must hold 1 to 1000 items, got 1001"]}})
        );
        assert_eq!(h.customerio_stats().max_ids_per_request, 1001);
        assert_eq!(call(&h, add, json!([])).await.0, 400);
        let (status, body) = call(&h, add, json!(["a", 7])).await;
        assert_eq!(
            (status, &body["meta"]["errors"][0]),
            (400, &json!("ids[1] must be a string"))
        );
        let (status, body) =
            call(&h, &format!("{add}?id_type=phone"), json!(["+14155552671"])).await;
        assert_eq!(status, 400);
        assert!(
            body["meta"]["errors"][0]
                .as_str()
                .unwrap()
                .contains("id_type")
        );
        let auth = Some(basic(SITE, KEY));
        assert_eq!(
            post(&h, add, auth.clone(), "{not json")
                .await
                .status()
                .as_u16(),
            400
        );
        assert_eq!(
            post(&h, add, auth.clone(), r#"{"id":["a"]}"#)
                .await
                .status()
                .as_u16(),
            400
        );
        // Data-driven and unknown segments.
        let (status, _) = call(&h, "/api/v1/segments/4/add_customers", json!(["a"])).await;
        assert_eq!(status, 400);
        for path in [
            "/api/v1/segments/99/add_customers",
            "/api/v1/segments/abc/remove_customers",
            "/api/v1/segments/-1/add_customers",
        ] {
            assert_eq!(call(&h, path, json!(["a"])).await.0, 404, "{path}");
        }
        // Only POST.
        let get = reqwest::get(format!("{}{add}", h.base_url()))
            .await
            .unwrap();
        assert_eq!(get.status().as_u16(), 405);
        assert_eq!(h.customerio_members(1), Some(vec![]));
        assert_eq!(h.customerio_stats().applied, 0);
    }

    #[tokio::test]
    async fn the_sliding_window_answers_429_without_headers_and_recovers() {
        let window = Duration::from_millis(600);
        let h = emulator(CustomerioConfig {
            rate_limit: RateLimitConfig {
                requests: 3,
                window,
            },
            ..CustomerioConfig::default()
        })
        .await;
        let add = "/api/v1/segments/1/add_customers";
        for i in 0..3 {
            assert_eq!(call(&h, add, json!([format!("u{i}")])).await.0, 200);
        }
        let resp = post(&h, add, Some(basic(SITE, KEY)), r#"{"ids":["u9"]}"#).await;
        assert_eq!(resp.status().as_u16(), 429);
        assert!(resp.headers().get(RETRY_AFTER).is_none());
        assert!(
            !resp
                .headers()
                .keys()
                .any(|k| k.as_str().starts_with("x-ratelimit"))
        );
        // Not counted: unauthenticated requests (no workspace to count them against).
        let anonymous = post(&h, add, None, r#"{"ids":["u9"]}"#).await;
        assert_eq!(anonymous.status().as_u16(), 401);
        tokio::time::sleep(window + Duration::from_millis(50)).await;
        assert_eq!(call(&h, add, json!(["u9"])).await.0, 200);
        assert_eq!(
            h.customerio_members(1),
            Some(strings(&["u0", "u1", "u2", "u9"]))
        );
        assert_eq!(h.customerio_stats().rate_limited, 1);
        let log: Vec<bool> = h
            .customerio_rate_log()
            .into_iter()
            .map(|(_, ok)| ok)
            .collect();
        assert_eq!(log, [true, true, true, false, true]);
    }

    #[test]
    fn the_window_slides() {
        let w = SlidingWindow::new(&RateLimitConfig {
            requests: 2,
            window: Duration::from_millis(200),
        });
        assert!(w.check());
        std::thread::sleep(Duration::from_millis(120));
        assert!(w.check());
        assert!(!w.check());
        // 120 ms later the first has left the window, the second not: one more fits.
        std::thread::sleep(Duration::from_millis(120));
        assert!(w.check());
        assert!(!w.check());
    }

    #[tokio::test]
    async fn seeded_faults() {
        let add = "/api/v1/segments/1/add_customers";
        let with = |own: CustomerioFaults, faults: FaultConfig| CustomerioConfig {
            own_faults: own,
            faults,
            ..CustomerioConfig::default()
        };
        // A redirect to the EU host, never applied.
        let h = emulator(with(
            CustomerioFaults {
                redirect: 1.0,
                ..CustomerioFaults::default()
            },
            FaultConfig::default(),
        ))
        .await;
        let resp = post(&h, add, Some(basic(SITE, KEY)), r#"{"ids":["u1"]}"#).await;
        assert_eq!(resp.status().as_u16(), 302);
        assert_eq!(
            resp.headers()[LOCATION],
            "https://track-eu.customer.io/api/v1/segments/1/add_customers"
        );
        assert_eq!(h.customerio_members(1), Some(vec![]));

        // An HTML 200 and a 401 mid-run apply nothing; a 429 carries the configured header.
        for (own, status) in [
            (
                CustomerioFaults {
                    html: 1.0,
                    ..CustomerioFaults::default()
                },
                200,
            ),
            (
                CustomerioFaults {
                    unauthorized: 1.0,
                    ..CustomerioFaults::default()
                },
                401,
            ),
            (
                CustomerioFaults {
                    too_many: 1.0,
                    retry_after: Some("garbage".into()),
                    ..CustomerioFaults::default()
                },
                429,
            ),
        ] {
            let h = emulator(with(own.clone(), FaultConfig::default())).await;
            let resp = post(&h, add, Some(basic(SITE, KEY)), r#"{"ids":["u1"]}"#).await;
            assert_eq!(resp.status().as_u16(), status, "{own:?}");
            if status == 200 {
                assert_eq!(resp.headers()[CONTENT_TYPE], "text/html");
            }
            if status == 429 {
                assert_eq!(resp.headers()[RETRY_AFTER], "garbage");
            }
            assert_eq!(h.customerio_members(1), Some(vec![]), "{own:?}");
        }

        // The shared faults: a 500 after applying applies; a drop or a 500 before does not.
        let h = emulator(with(
            CustomerioFaults::default(),
            FaultConfig {
                error_after_apply: 1.0,
                ..FaultConfig::default()
            },
        ))
        .await;
        assert_eq!(call(&h, add, json!(["u1"])).await.0, 500);
        assert_eq!(h.customerio_members(1), Some(strings(&["u1"])));
        let h = emulator(with(
            CustomerioFaults::default(),
            FaultConfig {
                error_before_apply: 1.0,
                locked: 1.0,
                ..FaultConfig::default()
            },
        ))
        .await;
        // `locked` has no meaning here: the 500 before applying is what is left.
        assert_eq!(call(&h, add, json!(["u1"])).await.0, 500);
        assert_eq!(h.customerio_members(1), Some(vec![]));
        let h = emulator(with(
            CustomerioFaults::default(),
            FaultConfig {
                drop_connection: 1.0,
                ..FaultConfig::default()
            },
        ))
        .await;
        let sent = reqwest::Client::new()
            .post(format!("{}{add}", h.base_url()))
            .header("authorization", basic(SITE, KEY))
            .body(r#"{"ids":["u1"]}"#)
            .send()
            .await;
        assert!(sent.is_err());
        assert_eq!(h.customerio_members(1), Some(vec![]));
        assert_eq!(h.customerio_stats().dropped, 1);
    }

    #[test]
    fn keys_and_queries() {
        assert_eq!(key(IdType::Email, "A@B.c").as_deref(), Some("e:a@b.c"));
        assert_eq!(key(IdType::Email, "a@b@c"), None);
        assert_eq!(key(IdType::Email, "@b"), None);
        assert_eq!(key(IdType::CioId, "cio_"), None);
        assert_eq!(key(IdType::Id, ""), None);
        assert_eq!(
            query_value("a=1&id_type=e%6Dail", "id_type").as_deref(),
            Some("email")
        );
        assert_eq!(query_value("id_type", "id_type").as_deref(), Some(""));
        assert_eq!(query_value("x=%zz", "x").as_deref(), Some("%zz"));
        assert_eq!(query_value("", "id_type"), None);
    }

    #[test]
    fn config_debug_hides_keys() {
        let text = format!("{:?}", config(CustomerioConfig::default()));
        assert!(!text.contains(SITE) && !text.contains(KEY), "{text}");
    }
}
