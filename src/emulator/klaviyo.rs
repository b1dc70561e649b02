//! Klaviyo, as `docs/partners/klaviyo.md` describes it: profiles (matched or created by
//! `external_id`, `email` or `phone_number`), static lists holding profile ids, the bulk
//! profile import job (up to 10,000 profiles and 5 MB, processed asynchronously: `queued` →
//! `processing` → `complete`, its item errors read from `…/import-errors`), the profile lookup
//! (`GET /api/profiles?filter=any(…)`) and the list relationship endpoints (up to 1,000
//! profile ids). Auth is `Authorization: Klaviyo-API-Key …` plus a `revision` header; each
//! endpoint has its own fixed-window limits (burst per second, steady per minute) with
//! `RateLimit-*` on every answer but a 429, which carries `Retry-After` instead.
//!
//! Written from the contract page alone: it parses with `serde_json::Value` and shares no code
//! with the client (`src/destinations/`). Jobs complete lazily: every request first applies the
//! jobs whose processing time has passed, in creation order, so no background task is needed.

// The `Err` of a reader here is the answer itself (a JSON:API error), built at most once per
// request: boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{Map, Value, json};

use super::Shared;
use super::faults::{FaultKind, lock};
use super::server::{Abort, Resp, read_body};
use crate::hash::SplitMix64;

/// Profiles per import job ("Accepts up to 10,000 profiles per request").
pub const MAX_IMPORT_PROFILES: usize = 10_000;
/// Import job payload ("The maximum allowed payload size is 5MB").
pub const MAX_IMPORT_BYTES: usize = 5 * 1024 * 1024;
/// Profile ids per Add / Remove call ("accepts a maximum of 1000 profiles per call").
pub const MAX_RELATIONSHIPS: usize = 1_000;
/// Values in one `any(field,[…])` filter: undocumented, our choice (the page size).
pub const MAX_FILTER_VALUES: usize = 100;
/// `page[size]` of the profile lookup and the import errors: 1 to 100, default 20.
const MAX_PAGE: usize = 100;
const DEFAULT_PAGE: usize = 20;
/// The newest revision this emulator knows; a revision over two years older is retired (410).
pub const LATEST_REVISION: &str = "2026-10-15";
const JSON_API: &str = "application/vnd.api+json";

/// How the Klaviyo endpoints behave.
#[derive(Clone)]
pub struct KlaviyoConfig {
    /// The only valid private API key.
    pub api_key: String,
    /// Limits of the bulk import, job, import-errors and list relationship endpoints, each
    /// counted on its own (documented: burst 10/s, steady 150/m).
    pub rate: KlaviyoRate,
    /// Limits of `GET /api/profiles` (documented for 2026-10-15: burst 75/s, steady 750/m).
    pub lookup_rate: KlaviyoRate,
    /// A job is `queued` for half of this, `processing` for the other half, then `complete`.
    pub job_delay: Duration,
    /// Import rows whose identifier contains this text fail with an import error (code
    /// `invalid`), as a row Klaviyo cannot take (for testing dead letters).
    pub invalid_marker: Option<String>,
    /// The probability that an accepted job ends `cancelled` (nothing applied), drawn in job
    /// order from a generator seeded with `seed`.
    pub cancel_jobs: f64,
    pub seed: u64,
    /// The lists that exist; `None`: every list id exists.
    pub lists: Option<Vec<String>>,
}

impl Default for KlaviyoConfig {
    fn default() -> Self {
        Self {
            api_key: "emulator-klaviyo-key".to_owned(),
            rate: KlaviyoRate {
                burst: 10,
                steady: 150,
            },
            lookup_rate: KlaviyoRate {
                burst: 75,
                steady: 750,
            },
            job_delay: Duration::from_millis(200),
            invalid_marker: None,
            cancel_jobs: 0.0,
            seed: 0,
            lists: None,
        }
    }
}

impl std::fmt::Debug for KlaviyoConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KlaviyoConfig")
            .field("api_key", &"<redacted>")
            .field("rate", &self.rate)
            .field("lookup_rate", &self.lookup_rate)
            .field("job_delay", &self.job_delay)
            .finish_non_exhaustive()
    }
}

/// Fixed windows aligned to the epoch: at most `burst` a second and `steady` a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KlaviyoRate {
    pub burst: u64,
    pub steady: u64,
}

/// A profile as the inspection route shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct KlaviyoProfile {
    pub id: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
}

/// One endpoint's counters, as `klaviyo_rate_log` reports every request to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateEntry {
    pub at: SystemTime,
    /// `import`, `job`, `import-errors`, `profiles`, `list-add`, `list-remove`.
    pub endpoint: &'static str,
    pub allowed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Queued,
    Processing,
    Complete,
    Cancelled,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Processing => "processing",
            Status::Complete => "complete",
            Status::Cancelled => "cancelled",
        }
    }
}

/// One row of an import, once read.
#[derive(Debug, Clone)]
struct Row {
    external_id: Option<String>,
    email: Option<String>,
    phone_number: Option<String>,
}

#[derive(Debug)]
struct Job {
    id: String,
    created: SystemTime,
    created_at: Instant,
    lists: Vec<String>,
    rows: Vec<Row>,
    /// `import-error` resources for the rows that failed (revealed once complete).
    errors: Vec<Value>,
    cancel: bool,
}

impl Job {
    fn status(&self, now: Instant, delay: Duration) -> Status {
        let age = now.saturating_duration_since(self.created_at);
        if age < delay / 2 {
            Status::Queued
        } else if age < delay {
            Status::Processing
        } else if self.cancel {
            Status::Cancelled
        } else {
            Status::Complete
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    profiles: BTreeMap<String, KlaviyoProfile>,
    by_external: HashMap<String, String>,
    /// Lowercased email → profile id (matching ignores case: our assumption).
    by_email: HashMap<String, String>,
    by_phone: HashMap<String, String>,
    lists: HashMap<String, HashSet<String>>,
    jobs: Vec<Job>,
    /// Index of the first job not yet applied or cancelled.
    next_job: usize,
    next_profile: u64,
    cancel_rng: Option<SplitMix64>,
    requests_applied: u64,
}

impl Store {
    fn profile_for(&mut self, row: &Row) -> String {
        let found = row
            .external_id
            .as_ref()
            .and_then(|e| self.by_external.get(e))
            .or_else(|| {
                row.email
                    .as_ref()
                    .and_then(|e| self.by_email.get(&e.to_lowercase()))
            })
            .or_else(|| row.phone_number.as_ref().and_then(|p| self.by_phone.get(p)))
            .cloned();
        let id = match found {
            Some(id) => id,
            None => {
                self.next_profile += 1;
                let id = format!("01KLAV{:020}", self.next_profile);
                self.profiles.insert(
                    id.clone(),
                    KlaviyoProfile {
                        id: id.clone(),
                        ..KlaviyoProfile::default()
                    },
                );
                id
            }
        };
        // Fill identifiers the profile lacks, when no other profile holds them.
        let profile = self.profiles.get_mut(&id).expect("profile just found");
        if let Some(e) = &row.external_id
            && profile.external_id.is_none()
            && !self.by_external.contains_key(e)
        {
            profile.external_id = Some(e.clone());
            self.by_external.insert(e.clone(), id.clone());
        }
        if let Some(e) = &row.email
            && profile.email.is_none()
            && !self.by_email.contains_key(&e.to_lowercase())
        {
            profile.email = Some(e.clone());
            self.by_email.insert(e.to_lowercase(), id.clone());
        }
        if let Some(p) = &row.phone_number
            && profile.phone_number.is_none()
            && !self.by_phone.contains_key(p)
        {
            profile.phone_number = Some(p.clone());
            self.by_phone.insert(p.clone(), id.clone());
        }
        id
    }

    /// Applies, in creation order, every job whose processing is over (jobs all take the same
    /// time, so they end in creation order).
    fn advance(&mut self, now: Instant, delay: Duration) {
        while let Some(job) = self.jobs.get(self.next_job) {
            if matches!(job.status(now, delay), Status::Queued | Status::Processing) {
                break;
            }
            let i = self.next_job;
            self.next_job += 1;
            if job.cancel {
                continue;
            }
            let failed: HashSet<usize> = job
                .errors
                .iter()
                .filter_map(|e| e["meta"]["row"].as_u64().map(|r| r as usize))
                .collect();
            let lists = job.lists.clone();
            let rows = std::mem::take(&mut self.jobs[i].rows);
            for (r, row) in rows.iter().enumerate() {
                if failed.contains(&r) {
                    continue;
                }
                let id = self.profile_for(row);
                for list in &lists {
                    self.lists
                        .entry(list.clone())
                        .or_default()
                        .insert(id.clone());
                }
            }
            self.jobs[i].rows = rows;
        }
    }

    fn job(&self, id: &str) -> Option<&Job> {
        self.jobs.iter().rev().find(|j| j.id == id)
    }
}

/// The Klaviyo side of the emulator: its store and its limiter.
pub(crate) struct Klaviyo {
    store: Mutex<Store>,
    windows: Mutex<HashMap<&'static str, Windows>>,
    log: Mutex<Vec<RateEntry>>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Windows {
    second: u64,
    in_second: u64,
    minute: u64,
    in_minute: u64,
}

/// What the limiter decided for one request.
enum Rate {
    Allowed {
        limit: u64,
        remaining: u64,
        reset: u64,
    },
    Limited {
        retry_after: u64,
    },
}

const MAX_LOG: usize = 1_000_000;

impl Klaviyo {
    pub(crate) fn new(config: &KlaviyoConfig) -> Self {
        let store = Store {
            cancel_rng: (config.cancel_jobs > 0.0).then_some(SplitMix64(config.seed)),
            ..Store::default()
        };
        Klaviyo {
            store: Mutex::new(store),
            windows: Mutex::default(),
            log: Mutex::default(),
        }
    }

    fn check(&self, endpoint: &'static str, rate: KlaviyoRate) -> Rate {
        let now = SystemTime::now();
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let ms = since.as_millis() as u64;
        let (second, minute) = (ms / 1000, ms / 60_000);
        let decision = {
            let mut windows = lock(&self.windows);
            let w = windows.entry(endpoint).or_default();
            if w.second != second {
                w.second = second;
                w.in_second = 0;
            }
            if w.minute != minute {
                w.minute = minute;
                w.in_minute = 0;
            }
            let reset_minute = ((minute + 1) * 60_000 - ms).div_ceil(1000).max(1);
            if w.in_minute >= rate.steady {
                Rate::Limited {
                    retry_after: reset_minute,
                }
            } else if w.in_second >= rate.burst {
                Rate::Limited { retry_after: 1 }
            } else {
                w.in_second += 1;
                w.in_minute += 1;
                Rate::Allowed {
                    limit: rate.steady,
                    remaining: rate.steady - w.in_minute,
                    reset: reset_minute,
                }
            }
        };
        let mut log = lock(&self.log);
        if log.len() < MAX_LOG {
            log.push(RateEntry {
                at: now,
                endpoint,
                allowed: matches!(decision, Rate::Allowed { .. }),
            });
        }
        decision
    }

    /// Members of `list_id`, sorted by profile id; `None` if nothing was ever added to it.
    pub(crate) fn members(&self, list_id: &str, delay: Duration) -> Option<Vec<KlaviyoProfile>> {
        let mut store = lock(&self.store);
        store.advance(Instant::now(), delay);
        let ids = store.lists.get(list_id)?;
        let mut out: Vec<KlaviyoProfile> = ids
            .iter()
            .filter_map(|id| store.profiles.get(id).cloned())
            .collect();
        out.sort();
        Some(out)
    }

    /// Every profile, sorted by id.
    pub(crate) fn profiles(&self, delay: Duration) -> Vec<KlaviyoProfile> {
        let mut store = lock(&self.store);
        store.advance(Instant::now(), delay);
        store.profiles.values().cloned().collect()
    }

    pub(crate) fn rate_log(&self) -> Vec<RateEntry> {
        lock(&self.log).clone()
    }

    /// Jobs accepted, and requests applied (jobs created, lists changed).
    pub(crate) fn counts(&self) -> (usize, u64) {
        let store = lock(&self.store);
        (store.jobs.len(), store.requests_applied)
    }
}

/// A JSON:API error answer: `{"errors": [{id, status, code, title, detail, source}]}`.
fn error(status: StatusCode, code: &str, title: &str, detail: &str, pointer: Option<&str>) -> Resp {
    let mut e = json!({
        "id": format!("{:016x}", crate::hash::fnv1a64(detail.as_bytes())),
        "status": status.as_u16(),
        "code": code,
        "title": title,
        "detail": detail,
    });
    if let Some(p) = pointer {
        e["source"] = json!({ "pointer": p });
    }
    api_response(status, Some(&json!({ "errors": [e] })))
}

fn invalid(detail: &str, pointer: Option<&str>) -> Resp {
    error(
        StatusCode::BAD_REQUEST,
        "invalid",
        "Invalid input.",
        detail,
        pointer,
    )
}

fn api_response(status: StatusCode, body: Option<&Value>) -> Resp {
    let bytes = body.map_or_else(Vec::new, |b| serde_json::to_vec(b).unwrap_or_default());
    let mut resp = Response::new(Full::new(Bytes::from(bytes)));
    *resp.status_mut() = status;
    if body.is_some() {
        resp.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_API));
    }
    resp
}

fn with_rate(mut resp: Resp, limit: u64, remaining: u64, reset: u64) -> Resp {
    let h = resp.headers_mut();
    h.insert(HeaderName::from_static("ratelimit-limit"), limit.into());
    h.insert(
        HeaderName::from_static("ratelimit-remaining"),
        remaining.into(),
    );
    h.insert(HeaderName::from_static("ratelimit-reset"), reset.into());
    resp
}

/// Which endpoint a path and method name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Endpoint {
    Import,
    Job(String),
    ImportErrors(String),
    Profiles,
    ListAdd(String),
    ListRemove(String),
}

impl Endpoint {
    fn name(&self) -> &'static str {
        match self {
            Endpoint::Import => "import",
            Endpoint::Job(_) => "job",
            Endpoint::ImportErrors(_) => "import-errors",
            Endpoint::Profiles => "profiles",
            Endpoint::ListAdd(_) => "list-add",
            Endpoint::ListRemove(_) => "list-remove",
        }
    }

    /// The endpoint, or the answer to a path or method that names none.
    fn parse(method: &Method, path: &str) -> Result<Self, Resp> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (endpoint, allowed): (Option<Endpoint>, &[Method]) = match segments.as_slice() {
            ["api", "profile-bulk-import-jobs"] => (
                (method == Method::POST).then_some(Endpoint::Import),
                &[Method::POST],
            ),
            ["api", "profile-bulk-import-jobs", id] => (
                (method == Method::GET).then(|| Endpoint::Job((*id).to_owned())),
                &[Method::GET],
            ),
            ["api", "profile-bulk-import-jobs", id, "import-errors"] => (
                (method == Method::GET).then(|| Endpoint::ImportErrors((*id).to_owned())),
                &[Method::GET],
            ),
            ["api", "profiles"] => (
                (method == Method::GET).then_some(Endpoint::Profiles),
                &[Method::GET],
            ),
            ["api", "lists", id, "relationships", "profiles"] => (
                if method == Method::POST {
                    Some(Endpoint::ListAdd((*id).to_owned()))
                } else if method == Method::DELETE {
                    Some(Endpoint::ListRemove((*id).to_owned()))
                } else {
                    None
                },
                &[Method::POST, Method::DELETE],
            ),
            _ => {
                return Err(error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Not found.",
                    "No endpoint at this path.",
                    None,
                ));
            }
        };
        endpoint.ok_or_else(|| {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            let mut resp = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed.",
                &format!("Method \"{method}\" not allowed."),
                None,
            );
            if let Ok(v) = HeaderValue::from_str(&allow) {
                resp.headers_mut().insert(hyper::header::ALLOW, v);
            }
            resp
        })
    }
}

/// Whether `revision` names a revision this emulator serves: `YYYY-MM-DD` (optionally with a
/// `.suffix`), not after the newest; `Err` is the answer (400 malformed or unknown, 410
/// retired: over two years old).
fn check_revision(revision: Option<&str>) -> Result<(), Resp> {
    let Some(revision) = revision else {
        return Err(invalid("Missing required header: revision.", None));
    };
    let date = revision.split('.').next().unwrap_or_default();
    let parsed = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok();
    let latest =
        chrono::NaiveDate::parse_from_str(LATEST_REVISION, "%Y-%m-%d").expect("a valid date");
    match parsed {
        Some(d) if date.len() == 10 && d <= latest => {
            if d < latest - chrono::Days::new(2 * 365) {
                Err(error(
                    StatusCode::GONE,
                    "gone",
                    "Revision retired.",
                    &format!("The revision {date} is retired."),
                    None,
                ))
            } else {
                Ok(())
            }
        }
        _ => Err(invalid(
            &format!(
                "Invalid revision header: {}.",
                revision.chars().take(40).collect::<String>()
            ),
            None,
        )),
    }
}

/// Every `/api/…` request: route, authenticate, check the revision, rate-limit, inject
/// faults, validate, apply.
pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Abort> {
    let config = &shared.config.klaviyo;
    let endpoint = match Endpoint::parse(req.method(), req.uri().path()) {
        Ok(e) => e,
        Err(resp) => return Ok(resp),
    };
    let header = |name| {
        req.headers()
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let auth = header(AUTHORIZATION.as_str());
    let revision = header("revision");
    let content_type = header(CONTENT_TYPE.as_str());
    let query = req.uri().query().unwrap_or_default().to_owned();
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "Request too large.",
                "The request body is too large.",
                None,
            ));
        }
    };
    match auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Klaviyo-API-Key "))
    {
        Some(key) if key.trim() == config.api_key => {}
        Some(_) => {
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "authentication_failed",
                "Incorrect authentication credentials.",
                "Incorrect authentication credentials.",
                None,
            ));
        }
        None => {
            return Ok(error(
                StatusCode::UNAUTHORIZED,
                "not_authenticated",
                "Authentication credentials were not provided.",
                "Missing or invalid authorization scheme. Please use Klaviyo-API-Key.",
                None,
            ));
        }
    }
    if let Err(resp) = check_revision(revision.as_deref()) {
        return Ok(resp);
    }
    let tier = if endpoint == Endpoint::Profiles {
        config.lookup_rate
    } else {
        config.rate
    };
    let (limit, remaining, reset) = match shared.klaviyo.check(endpoint.name(), tier) {
        Rate::Limited { retry_after } => {
            shared.state.record_rate_limited();
            let mut resp = error(
                StatusCode::TOO_MANY_REQUESTS,
                "throttled",
                "Request was throttled.",
                &format!("Request was throttled. Expected available in {retry_after} seconds."),
                None,
            );
            resp.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after));
            return Ok(resp);
        }
        Rate::Allowed {
            limit,
            remaining,
            reset,
        } => (limit, remaining, reset),
    };
    let fault = shared.faults.decide();
    if fault.slow {
        tokio::time::sleep(shared.faults.slow_delay()).await;
    }
    let server_error = || {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "error",
            "A server error occurred.",
            "A server error occurred.",
            None,
        )
    };
    let resp = match fault.kind {
        FaultKind::Drop => return Err(Abort { fault: true }),
        FaultKind::Locked => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "Service unavailable.",
            "Service temporarily unavailable.",
            None,
        ),
        FaultKind::ErrorBeforeApply => server_error(),
        FaultKind::ErrorAfterApply | FaultKind::None => {
            let has_body = matches!(
                endpoint,
                Endpoint::Import | Endpoint::ListAdd(_) | Endpoint::ListRemove(_)
            );
            let resp = if has_body
                && !content_type
                    .as_deref()
                    .is_some_and(|t| t.trim().starts_with(JSON_API))
            {
                error(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Unsupported media type.",
                    &format!("Content-Type must be {JSON_API}."),
                    None,
                )
            } else {
                apply(shared, &endpoint, &query, &body)
            };
            if fault.kind == FaultKind::ErrorAfterApply && resp.status().is_success() {
                server_error()
            } else {
                resp
            }
        }
    };
    Ok(with_rate(resp, limit, remaining, reset))
}

fn apply(shared: &Shared, endpoint: &Endpoint, query: &str, body: &Bytes) -> Resp {
    let config = &shared.config.klaviyo;
    let klaviyo = &shared.klaviyo;
    let now = Instant::now();
    match endpoint {
        Endpoint::Import => {
            if body.len() > MAX_IMPORT_BYTES {
                return error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "too_large",
                    "Payload too large.",
                    "The maximum allowed payload size is 5MB.",
                    None,
                );
            }
            let (rows, lists, errors) = match parse_import(body, config) {
                Ok(parsed) => parsed,
                Err(resp) => return resp,
            };
            if let Some(known) = &config.lists
                && let Some(unknown) = lists.iter().find(|l| !known.contains(l))
            {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Not found.",
                    &format!("A list with id {unknown} does not exist."),
                    Some("/data/relationships/lists/data"),
                );
            }
            let mut store = lock(&klaviyo.store);
            store.advance(now, config.job_delay);
            let cancel = match &mut store.cancel_rng {
                Some(rng) => rng.next_f64() < config.cancel_jobs,
                None => false,
            };
            let id = format!("JOB{:013}", store.jobs.len() + 1);
            let job = Job {
                id,
                created: SystemTime::now(),
                created_at: now,
                lists,
                rows,
                errors,
                cancel,
            };
            let body = job_body(&job, Status::Queued, config.job_delay);
            store.jobs.push(job);
            store.requests_applied += 1;
            api_response(StatusCode::ACCEPTED, Some(&body))
        }
        Endpoint::Job(id) => {
            let mut store = lock(&klaviyo.store);
            store.advance(now, config.job_delay);
            match store.job(id) {
                Some(job) => {
                    let status = job.status(now, config.job_delay);
                    api_response(
                        StatusCode::OK,
                        Some(&job_body(job, status, config.job_delay)),
                    )
                }
                None => not_found_job(id),
            }
        }
        Endpoint::ImportErrors(id) => {
            let (size, cursor) = match page(query) {
                Ok(p) => p,
                Err(resp) => return resp,
            };
            let mut store = lock(&klaviyo.store);
            store.advance(now, config.job_delay);
            let Some(job) = store.job(id) else {
                return not_found_job(id);
            };
            let errors: &[Value] = if job.status(now, config.job_delay) == Status::Complete {
                &job.errors
            } else {
                &[]
            };
            let end = (cursor + size).min(errors.len());
            let data: Vec<Value> = errors
                .get(cursor..end)
                .unwrap_or_default()
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(o) = e.as_object_mut() {
                        o.remove("meta");
                    }
                    e
                })
                .collect();
            let base = format!("/api/profile-bulk-import-jobs/{id}/import-errors");
            api_response(
                StatusCode::OK,
                Some(
                    &json!({"data": data, "links": links(&base, size, cursor, end, errors.len())}),
                ),
            )
        }
        Endpoint::Profiles => lookup(shared, query, now),
        Endpoint::ListAdd(list) | Endpoint::ListRemove(list) => {
            let remove = matches!(endpoint, Endpoint::ListRemove(_));
            if let Some(known) = &config.lists
                && !known.contains(list)
            {
                return error(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "Not found.",
                    &format!("A list with id {list} does not exist."),
                    None,
                );
            }
            let ids = match parse_relationships(body) {
                Ok(ids) => ids,
                Err(resp) => return resp,
            };
            let mut store = lock(&klaviyo.store);
            store.advance(now, config.job_delay);
            if let Some((i, id)) = ids
                .iter()
                .enumerate()
                .find(|(_, id)| !store.profiles.contains_key(*id))
            {
                return invalid(
                    &format!("Profile {id} does not exist."),
                    Some(&format!("/data/{i}/id")),
                );
            }
            let members = store.lists.entry(list.clone()).or_default();
            for id in ids {
                if remove {
                    members.remove(&id);
                } else {
                    members.insert(id);
                }
            }
            store.requests_applied += 1;
            api_response(StatusCode::NO_CONTENT, None)
        }
    }
}

fn not_found_job(id: &str) -> Resp {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        "Not found.",
        &format!("A profile-bulk-import-job with id {id} does not exist."),
        None,
    )
}

fn job_body(job: &Job, status: Status, delay: Duration) -> Value {
    let time = |t: SystemTime| chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339();
    let total = job.rows.len();
    let failed = job.errors.len();
    let (completed, failed_count, started, completed_at) = match status {
        Status::Queued => (0, 0, Value::Null, Value::Null),
        Status::Processing => (0, 0, json!(time(job.created + delay / 2)), Value::Null),
        Status::Complete => (
            total - failed,
            failed,
            json!(time(job.created + delay / 2)),
            json!(time(job.created + delay)),
        ),
        Status::Cancelled => (0, 0, json!(time(job.created + delay / 2)), Value::Null),
    };
    json!({"data": {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": {
            "status": status.name(),
            "created_at": time(job.created),
            "total_count": total,
            "completed_count": completed,
            "failed_count": failed_count,
            "completed_at": completed_at,
            "expires_at": time(job.created + Duration::from_secs(7 * 86_400)),
            "started_at": started,
        },
        "relationships": {"lists": {"data": job.lists.iter()
            .map(|l| json!({"type": "list", "id": l})).collect::<Vec<_>>()}},
        "links": {"self": format!("/api/profile-bulk-import-jobs/{}", job.id)},
    }})
}

/// `page[size]` (1 to 100, default 20) and `page[cursor]` (ours: an offset).
fn page(query: &str) -> Result<(usize, usize), Resp> {
    let mut size = DEFAULT_PAGE;
    let mut cursor = 0;
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match k.as_ref() {
            "page[size]" => match v.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => size = n,
                _ => {
                    return Err(invalid(
                        &format!("page[size] must be an integer from 1 to {MAX_PAGE}."),
                        None,
                    ));
                }
            },
            "page[cursor]" => match v.strip_prefix('c').and_then(|n| n.parse().ok()) {
                Some(n) => cursor = n,
                None => return Err(invalid("Invalid page[cursor].", None)),
            },
            _ => {}
        }
    }
    Ok((size, cursor))
}

fn links(base: &str, size: usize, cursor: usize, end: usize, total: usize) -> Value {
    let at = |c: usize| format!("{base}?page%5Bsize%5D={size}&page%5Bcursor%5D=c{c}");
    json!({
        "self": at(cursor),
        "next": if end < total { json!(at(end)) } else { Value::Null },
        "prev": if cursor > 0 { json!(at(cursor.saturating_sub(size))) } else { Value::Null },
    })
}

/// `GET /api/profiles?filter=any(field,[…])|equals(field,"…")`: the profiles whose `field`
/// (`id`, `email`, `phone_number`, `external_id`) is one of the values, by id.
fn lookup(shared: &Shared, query: &str, now: Instant) -> Resp {
    let (size, cursor) = match page(query) {
        Ok(p) => p,
        Err(resp) => return resp,
    };
    let filter = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "filter")
        .map(|(_, v)| v.into_owned());
    let (field, values) = match filter.as_deref().map(parse_filter) {
        None => (None, Vec::new()),
        Some(Ok(f)) => (Some(f.0), f.1),
        Some(Err(why)) => return invalid(&why, Some("filter")),
    };
    let mut store = lock(&shared.klaviyo.store);
    store.advance(now, shared.config.klaviyo.job_delay);
    let mut ids: Vec<String> = match field.as_deref() {
        None => store.profiles.keys().cloned().collect(),
        Some(f) => values
            .iter()
            .filter_map(|v| match f {
                "id" => store.profiles.contains_key(v).then(|| v.clone()),
                "email" => store.by_email.get(&v.to_lowercase()).cloned(),
                "phone_number" => store.by_phone.get(v).cloned(),
                _ => store.by_external.get(v).cloned(),
            })
            .collect(),
    };
    ids.sort();
    ids.dedup();
    let end = (cursor + size).min(ids.len());
    let data: Vec<Value> = ids
        .get(cursor..end)
        .unwrap_or_default()
        .iter()
        .filter_map(|id| store.profiles.get(id))
        .map(|p| {
            json!({"type": "profile", "id": p.id, "attributes": {
                "email": p.email, "phone_number": p.phone_number, "external_id": p.external_id,
            }})
        })
        .collect();
    let mut body =
        json!({"data": data, "links": links("/api/profiles", size, cursor, end, ids.len())});
    if let Some(f) = &filter {
        // Keep the filter in the links, as a cursor page continues the same query.
        for key in ["self", "next", "prev"] {
            if let Some(s) = body["links"][key].as_str() {
                let with: String = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("filter", f)
                    .finish();
                body["links"][key] = json!(format!("{s}&{with}"));
            }
        }
    }
    api_response(StatusCode::OK, Some(&body))
}

/// `any(field,["a","b"])` or `equals(field,"a")`: the field and its values.
fn parse_filter(text: &str) -> Result<(String, Vec<String>), String> {
    let text = text.trim();
    let (op, rest) = text
        .split_once('(')
        .ok_or_else(|| format!("Invalid filter: `{}`.", short(text)))?;
    let inner = rest
        .strip_suffix(')')
        .ok_or_else(|| format!("Invalid filter: `{}`.", short(text)))?;
    let (field, arg) = inner
        .split_once(',')
        .ok_or_else(|| format!("Invalid filter: `{}`.", short(text)))?;
    let field = field.trim();
    if !["id", "email", "phone_number", "external_id"].contains(&field) {
        return Err(format!(
            "'{field}' is not a valid field for the resource 'profile'."
        ));
    }
    let values: Vec<String> = match op.trim() {
        "any" => serde_json::from_str::<Vec<String>>(arg.trim())
            .map_err(|e| format!("Invalid filter list for any: {e}."))?,
        "equals" => vec![
            serde_json::from_str::<String>(arg.trim())
                .map_err(|e| format!("Invalid filter value for equals: {e}."))?,
        ],
        other => {
            return Err(format!(
                "Operator '{other}' is not supported for '{field}'."
            ));
        }
    };
    if values.len() > MAX_FILTER_VALUES {
        return Err(format!(
            "Too many values for any: {} > {MAX_FILTER_VALUES}.",
            values.len()
        ));
    }
    Ok((field.to_owned(), values))
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

type Parsed = (Vec<Row>, Vec<String>, Vec<Value>);

/// The import body: its rows, the lists, and the import errors of the rows that cannot be
/// imported (bad email, non-E.164 phone, no identifier, a seeded marker). `Err` is a 400.
fn parse_import(body: &[u8], config: &KlaviyoConfig) -> Result<Parsed, Resp> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(&format!("Malformed JSON: {e}."), None))?;
    let data = v
        .get("data")
        .and_then(Value::as_object)
        .ok_or_else(|| invalid("`data` must be an object.", Some("/data")))?;
    if data.get("type").and_then(Value::as_str) != Some("profile-bulk-import-job") {
        return Err(invalid(
            "`type` must be `profile-bulk-import-job`.",
            Some("/data/type"),
        ));
    }
    let profiles = data
        .get("attributes")
        .and_then(|a| a.get("profiles"))
        .and_then(|p| p.get("data"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            invalid(
                "`profiles.data` must be an array.",
                Some("/data/attributes/profiles/data"),
            )
        })?;
    if profiles.is_empty() || profiles.len() > MAX_IMPORT_PROFILES {
        return Err(invalid(
            &format!(
                "Accepts 1 to {MAX_IMPORT_PROFILES} profiles per request, got {}.",
                profiles.len()
            ),
            Some("/data/attributes/profiles/data"),
        ));
    }
    let mut lists = Vec::new();
    if let Some(rel) = data.get("relationships").and_then(|r| r.get("lists")) {
        let items = rel.get("data").and_then(Value::as_array).ok_or_else(|| {
            invalid(
                "`relationships.lists.data` must be an array.",
                Some("/data/relationships/lists/data"),
            )
        })?;
        for (i, l) in items.iter().enumerate() {
            match (
                l.get("type").and_then(Value::as_str),
                l.get("id").and_then(Value::as_str),
            ) {
                (Some("list"), Some(id)) if !id.is_empty() => lists.push(id.to_owned()),
                _ => {
                    return Err(invalid(
                        "Each list must be {\"type\": \"list\", \"id\": …}.",
                        Some(&format!("/data/relationships/lists/data/{i}")),
                    ));
                }
            }
        }
    }
    let mut rows = Vec::with_capacity(profiles.len());
    let mut errors = Vec::new();
    for (i, p) in profiles.iter().enumerate() {
        let pointer = format!("/data/attributes/profiles/data/{i}");
        if p.get("type").and_then(Value::as_str) != Some("profile") {
            return Err(invalid(
                "`type` must be `profile`.",
                Some(&format!("{pointer}/type")),
            ));
        }
        let Some(attrs) = p.get("attributes").and_then(Value::as_object) else {
            return Err(invalid(
                "`attributes` must be an object.",
                Some(&format!("{pointer}/attributes")),
            ));
        };
        let field = |name: &str| -> Result<Option<String>, Resp> {
            match attrs.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(invalid(
                    &format!("`{name}` must be a string."),
                    Some(&format!("{pointer}/attributes/{name}")),
                )),
            }
        };
        let row = Row {
            external_id: field("external_id")?,
            email: field("email")?,
            phone_number: field("phone_number")?,
        };
        let problem = row_problem(&row, config.invalid_marker.as_deref());
        if let Some((code, title, detail, attr)) = problem {
            errors.push(import_error(i, code, title, &detail, &pointer, attr, attrs));
        }
        rows.push(row);
    }
    Ok((rows, lists, errors))
}

/// Why a row cannot be imported: (code, title, detail, the attribute at fault).
fn row_problem(
    row: &Row,
    marker: Option<&str>,
) -> Option<(&'static str, &'static str, String, Option<&'static str>)> {
    if row.external_id.as_deref().is_none_or(str::is_empty)
        && row.email.as_deref().is_none_or(str::is_empty)
        && row.phone_number.as_deref().is_none_or(str::is_empty)
    {
        return Some((
            "invalid",
            "Invalid input.",
            "One of email, phone_number or external_id is required.".into(),
            None,
        ));
    }
    if let Some(e) = &row.email
        && !valid_email(e)
    {
        return Some((
            "invalid",
            "Invalid input.",
            format!("Invalid email address: {}.", short(e)),
            Some("email"),
        ));
    }
    if let Some(p) = &row.phone_number
        && !valid_e164(p)
    {
        return Some((
            "invalid",
            "Invalid input.",
            format!("Invalid phone number: {} (E.164 expected).", short(p)),
            Some("phone_number"),
        ));
    }
    if let Some(m) = marker {
        for (name, v) in [
            ("external_id", &row.external_id),
            ("email", &row.email),
            ("phone_number", &row.phone_number),
        ] {
            if v.as_deref().is_some_and(|v| v.contains(m)) {
                return Some((
                    "invalid",
                    "Invalid input.",
                    format!("The profile cannot be imported ({name})."),
                    Some(name),
                ));
            }
        }
    }
    None
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn valid_e164(p: &str) -> bool {
    p.strip_prefix('+').is_some_and(|digits| {
        (8..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fn import_error(
    row: usize,
    code: &str,
    title: &str,
    detail: &str,
    pointer: &str,
    attr: Option<&str>,
    original: &Map<String, Value>,
) -> Value {
    let pointer = match attr {
        Some(a) => format!("{pointer}/attributes/{a}"),
        None => format!("{pointer}/attributes"),
    };
    json!({
        "type": "import-error",
        "id": format!("err-{row}-{:08x}", crate::hash::fnv1a64(detail.as_bytes()) >> 32),
        "attributes": {
            "code": code,
            "title": title,
            "detail": detail,
            "source": {"pointer": pointer},
            "original_payload": original,
        },
        // Ours, removed before it is served: the row, to apply the others.
        "meta": {"row": row},
    })
}

/// `{"data": [{"type": "profile", "id": …}, …]}` with 1 to 1,000 items: the profile ids.
fn parse_relationships(body: &[u8]) -> Result<Vec<String>, Resp> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| invalid(&format!("Malformed JSON: {e}."), None))?;
    let items = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("`data` must be an array.", Some("/data")))?;
    if items.is_empty() || items.len() > MAX_RELATIONSHIPS {
        return Err(invalid(
            &format!(
                "This endpoint accepts 1 to {MAX_RELATIONSHIPS} profiles per call, got {}.",
                items.len()
            ),
            Some("/data"),
        ));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            match (
                item.get("type").and_then(Value::as_str),
                item.get("id").and_then(Value::as_str),
            ) {
                (Some("profile"), Some(id)) if !id.is_empty() => Ok(id.to_owned()),
                _ => Err(invalid(
                    "Each item must be {\"type\": \"profile\", \"id\": …}.",
                    Some(&format!("/data/{i}")),
                )),
            }
        })
        .collect()
}

/// `GET /_emulator/klaviyo/stats`: jobs accepted, profiles, each list's size, and per endpoint
/// the requests allowed and refused (429) and when the first and last allowed one arrived
/// (epoch seconds), for benchmarks that measure a client's pace.
pub(super) fn stats(shared: &Shared) -> Resp {
    let k = &shared.klaviyo;
    let (jobs, lists, profiles) = {
        let mut store = lock(&k.store);
        store.advance(Instant::now(), shared.config.klaviyo.job_delay);
        let lists: BTreeMap<String, usize> = store
            .lists
            .iter()
            .map(|(id, m)| (id.clone(), m.len()))
            .collect();
        (store.jobs.len(), lists, store.profiles.len())
    };
    let mut endpoints: BTreeMap<&str, Value> = BTreeMap::new();
    for e in lock(&k.log).iter() {
        let at =
            e.at.duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
        let v = endpoints.entry(e.endpoint).or_insert_with(
            || json!({"allowed": 0, "limited": 0, "first": Value::Null, "last": Value::Null}),
        );
        if e.allowed {
            v["allowed"] = json!(v["allowed"].as_u64().unwrap_or(0) + 1);
            if v["first"].is_null() {
                v["first"] = json!(at);
            }
            v["last"] = json!(at);
        } else {
            v["limited"] = json!(v["limited"].as_u64().unwrap_or(0) + 1);
        }
    }
    api_response(
        StatusCode::OK,
        Some(&json!({"jobs": jobs, "profiles": profiles, "lists": lists, "endpoints": endpoints})),
    )
}

/// `GET /_emulator/klaviyo/lists/{id}`: the list's member profiles (404 if never written).
pub(super) fn report(shared: &Shared, list_id: &str) -> Resp {
    match shared
        .klaviyo
        .members(list_id, shared.config.klaviyo.job_delay)
    {
        Some(members) => api_response(
            StatusCode::OK,
            Some(&json!({"list_id": list_id, "members": members})),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            "not_found",
            "Not found.",
            "No such list.",
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::{EmulatorConfig, EmulatorHandle, FaultConfig, start};

    const KEY: &str = "pk_test";

    fn config(k: KlaviyoConfig) -> EmulatorConfig {
        EmulatorConfig {
            klaviyo: KlaviyoConfig {
                api_key: KEY.into(),
                job_delay: Duration::from_millis(60),
                ..k
            },
            ..EmulatorConfig::default()
        }
    }

    async fn emulator(k: KlaviyoConfig) -> EmulatorHandle {
        start("127.0.0.1:0".parse().unwrap(), config(k))
            .await
            .unwrap()
    }

    async fn call(
        h: &EmulatorHandle,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let client = reqwest::Client::new();
        let method = reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap();
        let mut req = client
            .request(method, format!("{}{path}", h.base_url()))
            .header("authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", LATEST_REVISION)
            .header("accept", JSON_API);
        if let Some(b) = body {
            req = req
                .header("content-type", JSON_API)
                .body(serde_json::to_vec(&b).unwrap());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, headers, v)
    }

    fn import(list: &str, rows: &[Value]) -> Value {
        json!({"data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": rows.iter()
                .map(|r| json!({"type": "profile", "attributes": r})).collect::<Vec<_>>()}},
            "relationships": {"lists": {"data": [{"type": "list", "id": list}]}},
        }})
    }

    async fn wait_complete(h: &EmulatorHandle, job: &str) -> Value {
        for _ in 0..100 {
            let (status, _, v) = call(
                h,
                Method::GET,
                &format!("/api/profile-bulk-import-jobs/{job}"),
                None,
            )
            .await;
            assert_eq!(status, 200, "{v}");
            if v["data"]["attributes"]["status"] != "queued"
                && v["data"]["attributes"]["status"] != "processing"
            {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("job {job} never completed");
    }

    fn labels(members: &[KlaviyoProfile]) -> Vec<String> {
        let mut out: Vec<String> = members
            .iter()
            .map(|p| {
                p.external_id
                    .clone()
                    .or_else(|| p.email.clone())
                    .or_else(|| p.phone_number.clone())
                    .unwrap()
            })
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn an_import_job_completes_later_adds_to_the_list_and_reports_its_row_errors() {
        let h = emulator(KlaviyoConfig {
            invalid_marker: Some("BAD".into()),
            ..KlaviyoConfig::default()
        })
        .await;
        let rows = [
            json!({"external_id": "u1"}),
            json!({"email": "a@example.com"}),
            json!({"phone_number": "+15005550006"}),
            json!({"email": "not-an-email"}),
            json!({"phone_number": "5550006"}),
            json!({"external_id": "uBAD"}),
        ];
        let (status, headers, v) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L1", &rows)),
        )
        .await;
        assert_eq!(status, 202, "{v}");
        assert_eq!(headers["content-type"], JSON_API);
        assert_eq!(headers["ratelimit-limit"], "150");
        assert_eq!(v["data"]["attributes"]["status"], "queued");
        // Nothing is in the list before the job completes.
        assert_eq!(h.klaviyo_members("L1"), None);
        let job = v["data"]["id"].as_str().unwrap().to_owned();
        let done = wait_complete(&h, &job).await;
        let a = &done["data"]["attributes"];
        assert_eq!(a["status"], "complete");
        assert_eq!(
            (
                a["total_count"].as_u64(),
                a["completed_count"].as_u64(),
                a["failed_count"].as_u64()
            ),
            (Some(6), Some(3), Some(3))
        );
        assert_eq!(
            labels(&h.klaviyo_members("L1").unwrap()),
            ["+15005550006", "a@example.com", "u1"]
        );
        // The errors, two per page, each with the row it came from.
        let path = format!("/api/profile-bulk-import-jobs/{job}/import-errors?page[size]=2");
        let (status, _, page1) = call(&h, Method::GET, &path, None).await;
        assert_eq!(status, 200);
        assert_eq!(page1["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            page1["data"][0]["attributes"]["original_payload"],
            json!({"email": "not-an-email"})
        );
        assert_eq!(
            page1["data"][0]["attributes"]["source"]["pointer"],
            "/data/attributes/profiles/data/3/attributes/email"
        );
        assert!(page1["data"][0].get("meta").is_none());
        let next = page1["links"]["next"].as_str().unwrap().to_owned();
        let (_, _, page2) = call(&h, Method::GET, &next, None).await;
        assert_eq!(page2["data"].as_array().unwrap().len(), 1);
        assert_eq!(
            page2["data"][0]["attributes"]["original_payload"],
            json!({"external_id": "uBAD"})
        );
        assert!(page2["links"]["next"].is_null());
        // Importing again is an upsert: the same profiles.
        let (_, _, v) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L1", &rows[..3])),
        )
        .await;
        wait_complete(&h, v["data"]["id"].as_str().unwrap()).await;
        assert_eq!(h.klaviyo_profiles().len(), 3);
    }

    #[tokio::test]
    async fn lookups_resolve_identifiers_and_removes_take_profile_ids() {
        let h = emulator(KlaviyoConfig::default()).await;
        let rows: Vec<Value> = (0..5)
            .map(|i| json!({"email": format!("m{i}@x.io")}))
            .collect();
        let (_, _, v) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L", &rows)),
        )
        .await;
        wait_complete(&h, v["data"]["id"].as_str().unwrap()).await;
        let filter = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "filter",
                r#"any(email,["m1@x.io","M3@X.io","nobody@x.io"])"#,
            )
            .append_pair("page[size]", "100")
            .finish();
        let (status, _, found) =
            call(&h, Method::GET, &format!("/api/profiles?{filter}"), None).await;
        assert_eq!(status, 200, "{found}");
        let data = found["data"].as_array().unwrap();
        assert_eq!(data.len(), 2);
        let ids: Vec<Value> = data
            .iter()
            .map(|p| json!({"type": "profile", "id": p["id"]}))
            .collect();
        let path = "/api/lists/L/relationships/profiles";
        let (status, _, body) = call(&h, Method::DELETE, path, Some(json!({"data": ids}))).await;
        assert_eq!((status, body), (204, Value::Null));
        assert_eq!(
            labels(&h.klaviyo_members("L").unwrap()),
            ["m0@x.io", "m2@x.io", "m4@x.io"]
        );
        // Removing again is a no-op; an unknown profile id is refused.
        assert_eq!(
            call(&h, Method::DELETE, path, Some(json!({"data": ids})))
                .await
                .0,
            204
        );
        let (status, _, v) = call(
            &h,
            Method::DELETE,
            path,
            Some(json!({"data": [{"type": "profile", "id": "nope"}]})),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(v["errors"][0]["source"]["pointer"], "/data/0/id");
        // Too many ids, too many filter values.
        let many: Vec<Value> = (0..1001)
            .map(|i| json!({"type": "profile", "id": format!("p{i}")}))
            .collect();
        assert_eq!(
            call(&h, Method::POST, path, Some(json!({"data": many})))
                .await
                .0,
            400
        );
        let values: Vec<String> = (0..101).map(|i| format!("{i}")).collect();
        let filter = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "filter",
                &format!(
                    "any(external_id,{})",
                    serde_json::to_string(&values).unwrap()
                ),
            )
            .finish();
        assert_eq!(
            call(&h, Method::GET, &format!("/api/profiles?{filter}"), None)
                .await
                .0,
            400
        );
    }

    #[tokio::test]
    async fn auth_revision_limits_and_media_type_are_enforced() {
        let h = emulator(KlaviyoConfig::default()).await;
        let client = reqwest::Client::new();
        let url = format!("{}/api/profile-bulk-import-jobs/x", h.base_url());
        for (auth, revision, want) in [
            (None, Some(LATEST_REVISION), 401),
            (Some("Bearer pk_test"), Some(LATEST_REVISION), 401),
            (Some("Klaviyo-API-Key nope"), Some(LATEST_REVISION), 401),
            (Some("Klaviyo-API-Key pk_test"), None, 400),
            (Some("Klaviyo-API-Key pk_test"), Some("2099-01-01"), 400),
            (Some("Klaviyo-API-Key pk_test"), Some("2020-01-01"), 410),
            (Some("Klaviyo-API-Key pk_test"), Some("2026-07-15"), 404),
        ] {
            let mut req = client.get(&url);
            if let Some(a) = auth {
                req = req.header("authorization", a);
            }
            if let Some(r) = revision {
                req = req.header("revision", r);
            }
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), want, "{auth:?} {revision:?}");
            let v: Value = resp.json().await.unwrap();
            assert!(v["errors"][0]["detail"].is_string(), "{v}");
        }
        let too_many: Vec<Value> = (0..10_001)
            .map(|i| json!({"external_id": format!("u{i}")}))
            .collect();
        let (status, _, _) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L", &too_many)),
        )
        .await;
        assert_eq!(status, 400);
        let resp = client
            .post(format!("{}/api/profile-bulk-import-jobs", h.base_url()))
            .header("authorization", format!("Klaviyo-API-Key {KEY}"))
            .header("revision", LATEST_REVISION)
            .header("content-type", "application/json")
            .body(import("L", &[json!({"external_id": "u"})]).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 415);
        assert_eq!(call(&h, Method::PUT, "/api/profiles", None).await.0, 405);
    }

    #[tokio::test]
    async fn each_endpoint_has_its_own_burst_and_steady_windows() {
        let h = emulator(KlaviyoConfig {
            rate: KlaviyoRate {
                burst: 2,
                steady: 3,
            },
            ..KlaviyoConfig::default()
        })
        .await;
        // Start just after a second begins, so the first two land in one burst window.
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_millis();
        tokio::time::sleep(Duration::from_millis(u64::from(1000 - ms) + 5)).await;
        let job = "/api/profile-bulk-import-jobs/none";
        let started = SystemTime::now();
        let (s1, h1, _) = call(&h, Method::GET, job, None).await;
        assert_eq!(
            (s1, h1["ratelimit-remaining"].to_str().unwrap()),
            (404, "2")
        );
        assert_eq!(call(&h, Method::GET, job, None).await.0, 404);
        let (s3, h3, v) = call(&h, Method::GET, job, None).await;
        assert_eq!(s3, 429, "{v}");
        assert_eq!(h3["retry-after"], "1");
        assert!(h3.get("ratelimit-remaining").is_none());
        // Another endpoint is counted on its own.
        assert_eq!(call(&h, Method::GET, "/api/profiles", None).await.0, 200);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        let (s4, h4, _) = call(&h, Method::GET, job, None).await;
        let minute = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() / 60;
        // Unless a new minute began since the first request: the steady window is spent.
        if minute(SystemTime::now()) == minute(started) {
            assert_eq!(
                (s4, h4["ratelimit-remaining"].to_str().unwrap()),
                (404, "0")
            );
            let (s5, h5, _) = call(&h, Method::GET, job, None).await;
            assert_eq!(s5, 429);
            let wait: u64 = h5["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
        }
        let log = h.klaviyo_rate_log();
        assert!(log.iter().any(|e| e.endpoint == "job" && !e.allowed));
        assert!(log.iter().all(|e| e.endpoint != "profiles" || e.allowed));
        assert!(h.stats().rate_limited >= 1);
    }

    #[tokio::test]
    async fn faults_and_cancelled_jobs_apply_nothing_or_everything() {
        let h = emulator(KlaviyoConfig {
            cancel_jobs: 1.0,
            ..KlaviyoConfig::default()
        })
        .await;
        let (_, _, v) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L", &[json!({"external_id": "u"})])),
        )
        .await;
        let done = wait_complete(&h, v["data"]["id"].as_str().unwrap()).await;
        assert_eq!(done["data"]["attributes"]["status"], "cancelled");
        assert_eq!(h.klaviyo_members("L"), None);

        let h = start(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorConfig {
                faults: FaultConfig {
                    error_after_apply: 1.0,
                    ..FaultConfig::default()
                },
                ..config(KlaviyoConfig::default())
            },
        )
        .await
        .unwrap();
        let (status, _, _) = call(
            &h,
            Method::POST,
            "/api/profile-bulk-import-jobs",
            Some(import("L", &[json!({"external_id": "u"})])),
        )
        .await;
        assert_eq!(status, 500);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(labels(&h.klaviyo_members("L").unwrap()), ["u"]);
        let (status, _, v) = call(&h, Method::GET, "/_emulator/klaviyo/lists/L", None).await;
        assert_eq!(status, 200);
        assert_eq!(v["members"][0]["external_id"], "u");
        let (_, _, v) = call(&h, Method::GET, "/_emulator/klaviyo/stats", None).await;
        assert_eq!(
            (v["jobs"].as_u64(), v["lists"]["L"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(v["endpoints"]["import"]["allowed"], 1);
    }

    #[test]
    fn filters_and_identifiers_are_read_as_documented() {
        assert_eq!(
            parse_filter(r#"any(email,["a@b.co","c@d.co"])"#).unwrap(),
            (
                "email".to_owned(),
                vec!["a@b.co".to_owned(), "c@d.co".to_owned()]
            )
        );
        assert_eq!(
            parse_filter(r#"equals(external_id,"x\"y")"#).unwrap().1,
            vec!["x\"y".to_owned()]
        );
        assert!(parse_filter("any(first_name,[\"a\"])").is_err());
        assert!(parse_filter("greater-than(email,\"a\")").is_err());
        assert!(valid_e164("+15005550006") && !valid_e164("15005550006") && !valid_e164("+1234"));
        assert!(valid_email("a.b@c.io") && !valid_email("a@b") && !valid_email("a b@c.io"));
        let debug = format!(
            "{:?}",
            KlaviyoConfig {
                api_key: "secret-k".into(),
                ..KlaviyoConfig::default()
            }
        );
        assert!(!debug.contains("secret-k"), "{debug}");
    }
}
