//! Iterable's static lists, as `docs/partners/iterable.md` describes them: `POST
//! /api/lists/subscribe` and `POST /api/lists/unsubscribe` with `{"listId", "subscribers":
//! [{"email"} | {"userId"}]}`, the key in an `Api-Key` (or `Api_Key`) header, the project type
//! deciding how users are identified, item-level failures counted in `failCount` and listed in
//! `failedUpdates` (and the deprecated top-level `invalidEmails` / `invalidUserIds`), a
//! per-endpoint, per-project leaky bucket answering 429 `RateLimitExceeded` with no rate
//! headers, and the emulator's seeded faults.
//!
//! Written from the contract page, not from the client: it parses with `serde_json::Value` and
//! shares no code with `destinations::iterable`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Instant, SystemTime};

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};

use super::Shared;
use super::faults::{FaultKind, lock};
use super::server::{Abort, Resp, json_response, read_body};

/// Subscribers per request when the configuration does not say. Iterable documents no cap for
/// these endpoints: this figure is ours.
pub const DEFAULT_MAX_SUBSCRIBERS: usize = 10_000;

/// Requests per second per endpoint when the configuration does not say. Iterable documents no
/// rate for these endpoints: this figure is ours (its documented rate for the bulk user
/// endpoint, `/api/users/bulkUpdate`).
pub const DEFAULT_RATE: f64 = 5.0;

/// The longest `userId` a project accepts (Iterable: 52 characters).
pub const MAX_USER_ID_CHARS: usize = 52;

/// How an emulated project identifies users (fixed when an Iterable project is created).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ProjectType {
    /// `email` and `userId` both unique; either identifies a user.
    #[default]
    Hybrid,
    /// `userId` identifies users; emails are not unique.
    UserId,
    /// `email` identifies users (a `userId`-only request must name an existing user).
    Email,
}

/// The emulated Iterable project.
#[derive(Clone)]
pub struct IterableConfig {
    /// The one valid API key (header `Api-Key` or `Api_Key`).
    pub api_key: String,
    /// Named in rate-limit messages, as Iterable names the project.
    pub project_id: u64,
    pub project_type: ProjectType,
    /// The static lists that exist; empty: every positive list id exists.
    pub lists: Vec<u64>,
    /// Subscribers per request at most; more is a 400 `BatchTooLarge`.
    pub max_subscribers: usize,
    /// The leaky bucket of each endpoint: it drains `rate` requests per second and holds
    /// `burst`; a request that finds it full is answered 429.
    pub rate: f64,
    pub burst: f64,
    /// Identifiers containing this text name no user until one is created (`None`: every
    /// identifier names an existing user).
    pub unknown_marker: Option<String>,
}

impl Default for IterableConfig {
    fn default() -> Self {
        Self {
            api_key: "emulator-iterable-key".to_owned(),
            project_id: 1,
            project_type: ProjectType::Hybrid,
            lists: Vec::new(),
            max_subscribers: DEFAULT_MAX_SUBSCRIBERS,
            rate: DEFAULT_RATE,
            burst: 2.0 * DEFAULT_RATE,
            unknown_marker: None,
        }
    }
}

/// The key is a secret: `Debug` never prints it.
impl std::fmt::Debug for IterableConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IterableConfig")
            .field("api_key", &"<redacted>")
            .field("project_id", &self.project_id)
            .field("project_type", &self.project_type)
            .field("lists", &self.lists)
            .field("max_subscribers", &self.max_subscribers)
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .finish()
    }
}

/// A list's members, sorted: by `email` (stored lowercased) and by `userId`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IterableMembers {
    pub emails: Vec<String>,
    #[serde(rename = "userIds")]
    pub user_ids: Vec<String>,
}

/// Counters since start.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IterableStats {
    /// Requests applied (answered 200, or 500 after applying), by endpoint.
    pub subscribe_requests: u64,
    pub unsubscribe_requests: u64,
    /// Subscribers applied and failed (item level), over both endpoints.
    pub succeeded: u64,
    pub failed: u64,
    /// Largest subscriber count seen in one request, even if refused.
    pub max_subscribers_per_request: u64,
    /// 429 answers.
    pub rate_limited: u64,
    /// Every identifier a list request carried, by kind (to check what a client never sent).
    pub emails_seen: u64,
    pub user_ids_seen: u64,
}

/// Which endpoint: each has its own bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Endpoint {
    Subscribe,
    Unsubscribe,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Endpoint::Subscribe => "/api/lists/subscribe",
            Endpoint::Unsubscribe => "/api/lists/unsubscribe",
        }
    }
}

/// Shards of the project's users and list memberships: a subscriber locks its own shard only,
/// so a shard growing (a rehash of its share of a million members) stalls the requests that
/// touch it, not every request (one set of 1M members stalled the whole emulator, and the
/// requests it held back then reached the rate limit together).
const SHARDS: usize = 64;

/// One shard: of the users whose identifier hashes to it.
#[derive(Default)]
struct Shard {
    /// By list: the emails and userIds on it.
    members: HashMap<u64, (HashSet<String>, HashSet<String>)>,
    created_emails: HashSet<String>,
    created_user_ids: HashSet<String>,
    forgotten_emails: HashSet<String>,
    forgotten_user_ids: HashSet<String>,
}

struct Bucket {
    level: f64,
    at: Instant,
}

/// The emulated project's state: lists, users, buckets.
pub(crate) struct Project {
    shards: Vec<Mutex<Shard>>,
    /// Every identifier a request carried, as `email:RAW` / `userId:ID`, sharded by itself.
    seen: Vec<Mutex<HashSet<String>>>,
    /// The lists any request named.
    lists: Mutex<HashSet<u64>>,
    stats: Mutex<IterableStats>,
    buckets: Mutex<HashMap<Endpoint, Bucket>>,
    log: Mutex<Vec<(SystemTime, bool)>>,
}

impl Default for Project {
    fn default() -> Self {
        Project {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            seen: (0..SHARDS).map(|_| Mutex::default()).collect(),
            lists: Mutex::default(),
            stats: Mutex::default(),
            buckets: Mutex::default(),
            log: Mutex::default(),
        }
    }
}

/// Decisions kept for the rate log: bounded for a long-lived emulator.
const MAX_LOG: usize = 1_000_000;

fn shard_of<'a, T>(shards: &'a [Mutex<T>], key: &str) -> &'a Mutex<T> {
    &shards[(crate::hash::fnv1a64(key.as_bytes()) % shards.len() as u64) as usize]
}

impl Project {
    pub(crate) fn members(&self, list_id: u64) -> Option<IterableMembers> {
        if !lock(&self.lists).contains(&list_id) {
            return None;
        }
        let mut out = IterableMembers::default();
        for shard in &self.shards {
            if let Some((emails, ids)) = lock(shard).members.get(&list_id) {
                out.emails.extend(emails.iter().cloned());
                out.user_ids.extend(ids.iter().cloned());
            }
        }
        out.emails.sort_unstable();
        out.user_ids.sort_unstable();
        Some(out)
    }

    pub(crate) fn stats(&self) -> IterableStats {
        lock(&self.stats).clone()
    }

    /// Whether a request ever carried this identifier (`email:` or `userId:` prefixed).
    pub(crate) fn seen(&self, tagged: &str) -> bool {
        lock(shard_of(&self.seen, tagged)).contains(tagged)
    }

    fn saw(&self, tagged: String) {
        lock(shard_of(&self.seen, &tagged)).insert(tagged);
    }

    /// GDPR-forgets users: off every list, and refused (`forgotten…`) from now on.
    pub(crate) fn forget(&self, emails: &[String], user_ids: &[String]) {
        for e in emails {
            let e = e.to_lowercase();
            let mut shard = lock(shard_of(&self.shards, &e));
            for (list, _) in shard.members.values_mut() {
                list.remove(&e);
            }
            shard.created_emails.remove(&e);
            shard.forgotten_emails.insert(e);
        }
        for u in user_ids {
            let mut shard = lock(shard_of(&self.shards, u));
            for (_, list) in shard.members.values_mut() {
                list.remove(u);
            }
            shard.created_user_ids.remove(u);
            shard.forgotten_user_ids.insert(u.clone());
        }
    }

    /// Lets forgotten users be created again (as a new profile would be).
    pub(crate) fn unforget(&self) {
        for shard in &self.shards {
            let mut shard = lock(shard);
            shard.forgotten_emails.clear();
            shard.forgotten_user_ids.clear();
        }
    }

    pub(crate) fn rate_log(&self) -> Vec<(SystemTime, bool)> {
        lock(&self.log).clone()
    }

    /// The leaky bucket of `endpoint`: true if the request fits.
    fn admit(&self, endpoint: Endpoint, rate: f64, burst: f64) -> bool {
        let now = Instant::now();
        let allowed = {
            let mut buckets = lock(&self.buckets);
            let b = buckets.entry(endpoint).or_insert(Bucket {
                level: 0.0,
                at: now,
            });
            let drained = now.duration_since(b.at).as_secs_f64() * rate;
            b.level = (b.level - drained).max(0.0);
            b.at = now;
            if b.level + 1.0 <= burst.max(1.0) {
                b.level += 1.0;
                true
            } else {
                false
            }
        };
        let mut log = lock(&self.log);
        if log.len() < MAX_LOG {
            log.push((SystemTime::now(), allowed));
        }
        allowed
    }
}

/// Iterable's envelope for whole-request answers: `{"msg", "code", "params"}`.
fn envelope(status: StatusCode, code: &str, msg: &str) -> Resp {
    json_response(status, &json!({"msg": msg, "code": code, "params": null}))
}

/// The two endpoints: authenticate, rate-limit, inject faults, validate, apply.
pub(super) async fn handle(
    shared: &Shared,
    req: Request<Incoming>,
    endpoint: Endpoint,
) -> Result<Resp, Abort> {
    let config = &shared.config.iterable;
    let key = ["api-key", "api_key"]
        .iter()
        .find_map(|h| req.headers().get(*h))
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    if key.as_deref() != Some(config.api_key.as_str()) {
        return Ok(envelope(
            StatusCode::UNAUTHORIZED,
            "BadApiKey",
            "Invalid API key",
        ));
    }
    let project = &shared.iterable;
    if !project.admit(endpoint, config.rate, config.burst) {
        lock(&project.stats).rate_limited += 1;
        return Ok(json_response(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({
                "msg": format!(
                    "Exceeded rate limit for endpoint: {}, project: {} ",
                    endpoint.path(),
                    config.project_id
                ),
                "code": "RateLimitExceeded",
                "params": {},
            }),
        ));
    }
    let fault = shared.faults.decide();
    if fault.slow {
        tokio::time::sleep(shared.faults.slow_delay()).await;
    }
    match fault.kind {
        FaultKind::Drop => return Err(Abort { fault: true }),
        // Iterable documents 503 "Request timeout. Try again later." for its list reads.
        FaultKind::Locked => {
            return Ok(envelope(
                StatusCode::SERVICE_UNAVAILABLE,
                "GenericError",
                "Request timeout. Try again later.",
            ));
        }
        FaultKind::ErrorBeforeApply => {
            return Ok(envelope(
                StatusCode::INTERNAL_SERVER_ERROR,
                "GenericError",
                "internal error",
            ));
        }
        FaultKind::ErrorAfterApply | FaultKind::None => {}
    }
    let request = match parse(&body, config) {
        Ok(r) => r,
        Err((code, msg)) => return Ok(envelope(StatusCode::BAD_REQUEST, code, &msg)),
    };
    if !config.lists.is_empty() && !config.lists.contains(&request.list_id) {
        return Ok(envelope(
            StatusCode::BAD_REQUEST,
            "BadParams",
            &format!("error.lists.invalidListId: {}", request.list_id),
        ));
    }
    let answer = apply(project, config, endpoint, request);
    if fault.kind == FaultKind::ErrorAfterApply {
        return Ok(envelope(
            StatusCode::INTERNAL_SERVER_ERROR,
            "GenericError",
            "internal error",
        ));
    }
    Ok(json_response(StatusCode::OK, &answer))
}

/// One subscriber: by email or by userId (email wins when both are given, as Iterable does).
enum Who {
    Email(String),
    UserId(String),
}

struct ListRequest {
    list_id: u64,
    subscribers: Vec<Who>,
    update_existing_only: bool,
    prefer_user_id: Vec<bool>,
}

/// The request, or the 400's code and message.
fn parse(body: &[u8], config: &IterableConfig) -> Result<ListRequest, (&'static str, String)> {
    let mut obj: Map<String, Value> = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(o)) => o,
        Ok(_) => return Err(("BadJsonBody", "the body must be a JSON object".into())),
        Err(e) => return Err(("BadJsonBody", format!("malformed JSON: {e}"))),
    };
    let list_id = match obj.get("listId") {
        Some(Value::Number(n)) => match n.as_u64() {
            Some(id) if id > 0 => id,
            _ => return Err(("BadParams", "listId must be a positive integer".into())),
        },
        _ => return Err(("BadParams", "listId is required (a number)".into())),
    };
    let Some(Value::Array(items)) = obj.remove("subscribers") else {
        return Err(("BadParams", "subscribers is required (an array)".into()));
    };
    if items.len() > config.max_subscribers {
        return Err((
            "BatchTooLarge",
            format!(
                "{} subscribers in one request; at most {}",
                items.len(),
                config.max_subscribers
            ),
        ));
    }
    let update_existing_only = match obj.get("updateExistingUsersOnly") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err((
                "BadParams",
                "updateExistingUsersOnly must be a boolean".into(),
            ));
        }
    };
    let mut subscribers = Vec::with_capacity(items.len());
    let mut prefer_user_id = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(s) = item else {
            return Err(("BadParams", format!("subscribers[{i}] is not an object")));
        };
        prefer_user_id.push(s.get("preferUserId") == Some(&Value::Bool(true)));
        let who = match (s.get("email"), s.get("userId")) {
            (Some(Value::String(e)), _) => Who::Email(e.clone()),
            (None | Some(Value::Null), Some(Value::String(u))) => Who::UserId(u.clone()),
            _ => {
                return Err((
                    "BadParams",
                    format!("subscribers[{i}] needs an email or a userId (a string)"),
                ));
            }
        };
        subscribers.push(who);
    }
    Ok(ListRequest {
        list_id,
        subscribers,
        update_existing_only,
        prefer_user_id,
    })
}

/// Iterable validates emails with Apache Commons' validator (shape and a valid TLD); this is a
/// shape check of the same kind: one `@`, a non-empty local part, a dotted domain whose last
/// label is letters.
fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    let tld = domain.rsplit('.').next().unwrap_or_default();
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.contains("..")
        && tld.len() >= 2
        && tld.chars().all(|c| c.is_ascii_alphabetic())
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// Malformed `userId`s, as Iterable's reference lists them: empty, too long, non-ASCII or
/// non-printable characters, a trailing space.
fn valid_user_id(u: &str) -> bool {
    !u.is_empty()
        && u.chars().count() <= MAX_USER_ID_CHARS
        && u.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
        && !u.ends_with(' ')
}

/// The `failedUpdates` lists, by field name.
#[derive(Default)]
struct Failed(BTreeMap<&'static str, Vec<String>>);

impl Failed {
    fn add(&mut self, field: &'static str, id: &str) {
        self.0.entry(field).or_default().push(id.to_owned());
    }
}

fn apply(
    project: &Project,
    config: &IterableConfig,
    endpoint: Endpoint,
    request: ListRequest,
) -> Value {
    let unknown = |id: &str| {
        config
            .unknown_marker
            .as_deref()
            .is_some_and(|m| id.contains(m))
    };
    let list_id = request.list_id;
    lock(&project.lists).insert(list_id);
    let mut failed = Failed::default();
    let (mut all_emails, mut all_ids) = (Vec::new(), Vec::new());
    let (mut succeeded, mut emails_seen, mut ids_seen) = (0u64, 0u64, 0u64);
    for (who, prefer) in request.subscribers.iter().zip(&request.prefer_user_id) {
        match who {
            Who::Email(raw) => {
                emails_seen += 1;
                project.saw(format!("email:{raw}"));
                let email = raw.to_lowercase();
                let field = if !valid_email(&email) {
                    Some("invalidEmails")
                } else if config.project_type == ProjectType::UserId {
                    // userID-based projects identify users by userId only.
                    Some("notFoundEmails")
                } else {
                    let mut shard = lock(shard_of(&project.shards, &email));
                    let shard = &mut *shard;
                    if shard.forgotten_emails.contains(&email) {
                        Some("forgottenEmails")
                    } else {
                        let exists = shard.created_emails.contains(&email) || !unknown(&email);
                        let creates = endpoint == Endpoint::Subscribe
                            && (config.project_type == ProjectType::Email
                                || !request.update_existing_only);
                        if exists || creates {
                            let list = &mut shard.members.entry(list_id).or_default().0;
                            match endpoint {
                                Endpoint::Subscribe => list.insert(email.clone()),
                                Endpoint::Unsubscribe => list.remove(&email),
                            };
                            shard.created_emails.insert(email);
                            None
                        } else {
                            Some("notFoundEmails")
                        }
                    }
                };
                match field {
                    None => succeeded += 1,
                    Some(f) => {
                        failed.add(f, raw);
                        all_emails.push(raw.clone());
                    }
                }
            }
            Who::UserId(id) => {
                ids_seen += 1;
                project.saw(format!("userId:{id}"));
                let field = if !valid_user_id(id) {
                    Some("invalidUserIds")
                } else {
                    let mut shard = lock(shard_of(&project.shards, id));
                    let shard = &mut *shard;
                    if shard.forgotten_user_ids.contains(id) {
                        Some("forgottenUserIds")
                    } else {
                        let exists = shard.created_user_ids.contains(id) || !unknown(id);
                        let creates = endpoint == Endpoint::Subscribe
                            && match config.project_type {
                                // A userId-only request in an email-based project must name an
                                // existing user, unless it asks for one (`preferUserId`).
                                ProjectType::Email => *prefer,
                                _ => !request.update_existing_only,
                            };
                        if exists || creates {
                            let list = &mut shard.members.entry(list_id).or_default().1;
                            match endpoint {
                                Endpoint::Subscribe => list.insert(id.clone()),
                                Endpoint::Unsubscribe => list.remove(id),
                            };
                            shard.created_user_ids.insert(id.clone());
                            None
                        } else {
                            Some("notFoundUserIds")
                        }
                    }
                };
                match field {
                    None => succeeded += 1,
                    Some(f) => {
                        failed.add(f, id);
                        all_ids.push(id.clone());
                    }
                }
            }
        }
    }
    let fail_count = (all_emails.len() + all_ids.len()) as u64;
    {
        let mut stats = lock(&project.stats);
        match endpoint {
            Endpoint::Subscribe => stats.subscribe_requests += 1,
            Endpoint::Unsubscribe => stats.unsubscribe_requests += 1,
        }
        stats.max_subscribers_per_request = stats
            .max_subscribers_per_request
            .max(request.subscribers.len() as u64);
        stats.succeeded += succeeded;
        stats.failed += fail_count;
        stats.emails_seen += emails_seen;
        stats.user_ids_seen += ids_seen;
    }
    let mut failed_updates = Map::new();
    for field in [
        "conflictEmails",
        "conflictUserIds",
        "forgottenEmails",
        "forgottenUserIds",
        "invalidDataEmails",
        "invalidDataUserIds",
        "invalidEmails",
        "invalidUserIds",
        "notFoundEmails",
        "notFoundUserIds",
    ] {
        let listed = failed.0.remove(field).unwrap_or_default();
        failed_updates.insert(field.to_owned(), json!(listed));
    }
    json!({
        "successCount": succeeded,
        "failCount": fail_count,
        "failedUpdates": failed_updates,
        // Deprecated, still sent: every email / userId that failed.
        "invalidEmails": all_emails,
        "invalidUserIds": all_ids,
        "createdFields": [],
        "filteredOutFields": [],
    })
}

/// `GET /_emulator/iterable/lists/{listId}`: the list's members, or 404.
pub(super) fn members_route(shared: &Shared, list_id: &str) -> Resp {
    match list_id
        .parse::<u64>()
        .ok()
        .and_then(|id| shared.iterable.members(id))
    {
        Some(m) => json_response(StatusCode::OK, &m),
        None => envelope(StatusCode::NOT_FOUND, "NotFound", "no such list"),
    }
}

/// `GET /_emulator/iterable/stats`.
pub(super) fn stats_route(shared: &Shared) -> Resp {
    json_response(StatusCode::OK, &shared.iterable.stats())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::{EmulatorConfig, EmulatorHandle, FaultConfig, start};
    use std::time::Duration;

    const KEY: &str = "it-key";

    fn config(iterable: IterableConfig) -> EmulatorConfig {
        EmulatorConfig {
            iterable: IterableConfig {
                api_key: KEY.into(),
                ..iterable
            },
            ..EmulatorConfig::default()
        }
    }

    async fn emulator(iterable: IterableConfig) -> EmulatorHandle {
        start("127.0.0.1:0".parse().unwrap(), config(iterable))
            .await
            .unwrap()
    }

    async fn call(h: &EmulatorHandle, path: &str, header: &str, body: Value) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", h.base_url()))
            .header(header, KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(resp.headers().get("retry-after").is_none());
        assert!(resp.headers().get("x-ratelimit-limit").is_none());
        (status, resp.json().await.unwrap())
    }

    async fn subscribe(h: &EmulatorHandle, body: Value) -> (u16, Value) {
        call(h, "/api/lists/subscribe", "Api-Key", body).await
    }

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[tokio::test]
    async fn subscribe_and_unsubscribe_by_email_and_user_id_with_set_semantics() {
        let h = emulator(IterableConfig::default()).await;
        let (status, body) = subscribe(
            &h,
            json!({"listId": 7, "subscribers": [
                {"email": "A@Example.com"}, {"userId": "u1"}, {"userId": "u2"}, {"userId": "u1"},
            ]}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            (body["successCount"].as_u64(), body["failCount"].as_u64()),
            (Some(4), Some(0))
        );
        assert_eq!(body["failedUpdates"]["notFoundEmails"], json!([]));
        assert_eq!(
            h.iterable_members(7),
            Some(IterableMembers {
                emails: strings(&["a@example.com"]),
                user_ids: strings(&["u1", "u2"]),
            })
        );
        // `Api_Key` is accepted too; removing a non-member is a success (set semantics).
        let (status, body) = call(
            &h,
            "/api/lists/unsubscribe",
            "Api_Key",
            json!({"listId": 7, "subscribers": [{"userId": "u2"}, {"userId": "u9"}, {"email": "a@example.com"}]}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["successCount"], 3);
        assert_eq!(
            h.iterable_members(7),
            Some(IterableMembers {
                emails: vec![],
                user_ids: strings(&["u1"]),
            })
        );
        assert_eq!(h.iterable_members(8), None);
        let resp = reqwest::get(format!("{}/_emulator/iterable/lists/7", h.base_url()))
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"emails": [], "userIds": ["u1"]})
        );
        let stats = h.iterable_stats();
        assert_eq!(
            (stats.subscribe_requests, stats.unsubscribe_requests),
            (1, 1)
        );
        assert_eq!((stats.succeeded, stats.failed), (7, 0));
        assert!(h.iterable_saw("email:A@Example.com") && !h.iterable_saw("email:nobody@x.io"));
    }

    #[tokio::test]
    async fn item_level_failures_are_counted_and_listed_by_kind() {
        let h = emulator(IterableConfig {
            unknown_marker: Some("zz".into()),
            ..IterableConfig::default()
        })
        .await;
        h.iterable_forget(&["gone@x.io".into()], &["gone".into()]);
        let long = "x".repeat(MAX_USER_ID_CHARS + 1);
        let (status, body) = subscribe(
            &h,
            json!({"listId": 3, "updateExistingUsersOnly": true, "subscribers": [
                {"email": "ok@x.io"}, {"email": "not-an-email"}, {"userId": long},
                {"userId": "zz1"}, {"email": "zz@x.io"}, {"userId": "gone"}, {"email": "GONE@x.io"},
                {"userId": "trailing "}, {"userId": "ok"},
            ]}),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["successCount"], 2);
        assert_eq!(body["failCount"], 7);
        let f = &body["failedUpdates"];
        assert_eq!(f["invalidEmails"], json!(["not-an-email"]));
        assert_eq!(f["invalidUserIds"], json!([long, "trailing "]));
        assert_eq!(f["notFoundUserIds"], json!(["zz1"]));
        assert_eq!(f["notFoundEmails"], json!(["zz@x.io"]));
        assert_eq!(f["forgottenUserIds"], json!(["gone"]));
        assert_eq!(f["forgottenEmails"], json!(["GONE@x.io"]));
        assert_eq!(body["invalidUserIds"].as_array().unwrap().len(), 4);
        assert_eq!(body["invalidEmails"].as_array().unwrap().len(), 3);
        // Without updateExistingUsersOnly, unknown users are created (hybrid project).
        let (_, body) = subscribe(
            &h,
            json!({"listId": 3, "subscribers": [{"userId": "zz1"}, {"email": "zz@x.io"}]}),
        )
        .await;
        assert_eq!(
            (body["successCount"].as_u64(), body["failCount"].as_u64()),
            (Some(2), Some(0))
        );
        assert_eq!(
            h.iterable_members(3),
            Some(IterableMembers {
                emails: strings(&["ok@x.io", "zz@x.io"]),
                user_ids: strings(&["ok", "zz1"]),
            })
        );
    }

    #[tokio::test]
    async fn project_types_decide_which_identifiers_name_users() {
        let h = emulator(IterableConfig {
            project_type: ProjectType::UserId,
            ..IterableConfig::default()
        })
        .await;
        let (_, body) = subscribe(
            &h,
            json!({"listId": 1, "subscribers": [{"email": "a@x.io"}, {"userId": "u"}]}),
        )
        .await;
        assert_eq!(body["failedUpdates"]["notFoundEmails"], json!(["a@x.io"]));
        let h = emulator(IterableConfig {
            project_type: ProjectType::Email,
            unknown_marker: Some("new".into()),
            ..IterableConfig::default()
        })
        .await;
        let (_, body) = subscribe(
            &h,
            json!({"listId": 1, "updateExistingUsersOnly": true,
                   "subscribers": [{"email": "new@x.io"}, {"userId": "new1"}]}),
        )
        .await;
        // Email projects create users by email whatever the flag; a userId must exist.
        assert_eq!(body["successCount"], 1);
        assert_eq!(body["failedUpdates"]["notFoundUserIds"], json!(["new1"]));
    }

    #[tokio::test]
    async fn whole_request_refusals_use_the_envelope() {
        let h = emulator(IterableConfig {
            max_subscribers: 2,
            lists: vec![5],
            ..IterableConfig::default()
        })
        .await;
        let resp = reqwest::Client::new()
            .post(format!("{}/api/lists/subscribe", h.base_url()))
            .header("Api-Key", "wrong")
            .json(&json!({"listId": 5, "subscribers": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 401);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["code"], "BadApiKey");
        assert!(!body.to_string().contains("wrong"));
        let three = json!([{"userId": "a"}, {"userId": "b"}, {"userId": "c"}]);
        let (status, body) = subscribe(&h, json!({"listId": 5, "subscribers": three})).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("BatchTooLarge"))
        );
        assert_eq!(h.iterable_stats().max_subscribers_per_request, 0);
        let (status, body) =
            subscribe(&h, json!({"listId": 6, "subscribers": [{"userId": "a"}]})).await;
        assert_eq!(status, 400);
        assert!(body["msg"].as_str().unwrap().contains("invalidListId"));
        let (status, body) = subscribe(&h, json!({"subscribers": []})).await;
        assert_eq!((status, body["code"].as_str()), (400, Some("BadParams")));
        let (status, _) = subscribe(&h, json!({"listId": 5, "subscribers": [{}]})).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn each_endpoint_has_a_leaky_bucket_answering_429_without_rate_headers() {
        let h = emulator(IterableConfig {
            rate: 2.0,
            burst: 3.0,
            ..IterableConfig::default()
        })
        .await;
        let body = json!({"listId": 1, "subscribers": [{"userId": "a"}]});
        let mut statuses = Vec::new();
        for _ in 0..5 {
            statuses.push(subscribe(&h, body.clone()).await);
        }
        assert_eq!(statuses.iter().filter(|(s, _)| *s == 200).count(), 3);
        let (status, limited) = &statuses[4];
        assert_eq!(*status, 429);
        assert_eq!(limited["code"], "RateLimitExceeded");
        assert_eq!(
            limited["msg"],
            "Exceeded rate limit for endpoint: /api/lists/subscribe, project: 1 "
        );
        // The other endpoint has its own bucket.
        let (status, _) = call(&h, "/api/lists/unsubscribe", "Api-Key", body.clone()).await;
        assert_eq!(status, 200);
        // The bucket drains at 2/s: after 600 ms one more fits, and soon it is full again.
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(subscribe(&h, body.clone()).await.0, 200);
        let mut again = Vec::new();
        for _ in 0..3 {
            again.push(subscribe(&h, body.clone()).await.0);
        }
        assert!(again.contains(&429), "{again:?}");
        let limited = h.iterable_stats().rate_limited;
        assert!(limited >= 2, "{limited}");
        let log = h.iterable_rate_log();
        assert_eq!(log.iter().filter(|(_, ok)| !ok).count() as u64, limited);
    }

    #[tokio::test]
    async fn seeded_faults_answer_5xx_and_an_error_after_apply_keeps_the_change() {
        let h = start(
            "127.0.0.1:0".parse().unwrap(),
            EmulatorConfig {
                faults: FaultConfig {
                    seed: 1,
                    error_after_apply: 1.0,
                    ..FaultConfig::default()
                },
                ..config(IterableConfig::default())
            },
        )
        .await
        .unwrap();
        let (status, body) =
            subscribe(&h, json!({"listId": 2, "subscribers": [{"userId": "a"}]})).await;
        assert_eq!((status, body["code"].as_str()), (500, Some("GenericError")));
        assert_eq!(h.iterable_members(2).unwrap().user_ids, strings(&["a"]));
    }

    #[test]
    fn email_and_user_id_checks() {
        for ok in ["a@b.co", "first.last+tag@sub.example.org"] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "a@b", "@b.co", "a@b.c", "a@@b.co", "a b@c.co", "a@b.c0", "a@.b.co",
        ] {
            assert!(!valid_email(bad), "{bad}");
        }
        assert!(valid_user_id(&"u".repeat(52)));
        for bad in ["", "é", "a\u{7}", "a ", &"u".repeat(53)] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }
}
