//! Klaviyo (`docs/partners/klaviyo.md`): a cohort is the membership of a static list, whose id
//! is the cohort's `cohort_id`; members are profiles known by `external_id` (our user id),
//! `email` or `phone_number` (E.164), mixed freely in one batch.
//!
//! Each batch is a chain of steps (`Verdict::Continue`), each on the lane of its endpoint, as
//! Klaviyo limits every endpoint on its own:
//! - **adds**: one bulk import job (`POST /api/profile-bulk-import-jobs`, up to 10,000
//!   profiles, upserted and added to the list), then polls of the job
//!   (`GET …/{id}`, waits doubling from `poll_interval` up to 30 s) until `complete`; when
//!   `failed_count > 0`, the pages of `…/{id}/import-errors`, each error a refusal of the row
//!   its `original_payload` names. The batch is acknowledged only then, and only when the counts
//!   add up; a `cancelled` or vanished job is imported again (at most three times);
//! - **removes**: the list endpoint takes profile ids only, so the batch's identifiers are
//!   resolved 100 at a time (`GET /api/profiles?filter=any(<field>,[…])`), then removed 1,000
//!   at a time (`DELETE /api/lists/{id}/relationships/profiles`). An identifier with no profile
//!   is a removal already done (`no_profile`).
//!
//! Every step can be repeated (an import is an upsert, a lookup reads, a removal of a
//! non-member changes nothing), so a batch cut short is simply sent again from its start.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};

mod config;
mod response;

pub use config::{Config, DEFAULT_BATCH, DEFAULT_RPS, MAX_BATCH, credentials};

use super::{Destination, FromSettings, Op, Refused, base_of, push_json_str};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::retry::{self, Answer, Verdict};
use crate::deliver::{Request, Step};
use crate::error::{Error, Result};

/// The lanes, one per endpoint (Klaviyo counts each endpoint's requests on their own).
const LANE_IMPORT: usize = 0;
const LANE_JOB: usize = 1;
const LANE_ERRORS: usize = 2;
const LANE_LOOKUP: usize = 3;
const LANE_REMOVE: usize = 4;
const LANES: usize = 5;

/// Identifiers per lookup: the page size's maximum (so one page answers), and our cap on the
/// values of one `any()` filter (Klaviyo documents none).
const LOOKUP_CHUNK: usize = 100;
/// Profile ids per removal ("accepts a maximum of 1000 profiles per call").
const REMOVE_CHUNK: usize = 1000;
/// Import errors per page (`page[size]` at most 100).
const ERRORS_PAGE: usize = 100;
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// Imports of one batch after its job was cancelled or vanished, before the batch fails.
const MAX_IMPORTS: u32 = 3;
const JSON_API: &str = "application/vnd.api+json";

/// The registry's identity: the API host and the key's fingerprint.
pub fn identity(dest: &DestinationConfig, key: &str) -> String {
    format!("{}/api/lists#account-{key}", base_of(dest))
}

/// A cohort's Klaviyo list.
pub struct Klaviyo {
    base: Arc<str>,
    /// `/api/lists/{list}/relationships/profiles`, whole.
    remove_url: Arc<str>,
    import_url: Arc<str>,
    /// The import body's head up to the profiles, and its tail (the list relationship).
    list_tail: Vec<u8>,
    headers: HeaderMap,
    poll: Duration,
    key_var: String,
    destination: String,
}

/// Which identifier a member is known by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    ExternalId,
    Email,
    Phone,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::ExternalId => "external_id",
            Field::Email => "email",
            Field::Phone => "phone_number",
        }
    }
}

/// A member's identifier: the field and its value (`accepts` refused every other kind).
fn member(key: &str) -> (Field, &str) {
    use crate::cohort::identity::{Id, parse};
    match parse(key) {
        Id::External(v) => (Field::ExternalId, v),
        Id::Email(v) => (Field::Email, v),
        Id::Phone(v) => (Field::Phone, v),
        _ => (Field::ExternalId, key),
    }
}

/// A batch's members, in batch order.
type Members = Vec<(Field, String)>;

/// What one lookup page found: (batch index, profile id).
type Found = Vec<(usize, String)>;

/// What every step of one batch shares.
enum Batch {
    Add {
        members: Members,
        /// The import request (without its step), to send again when a job is lost.
        post: Request,
    },
    Remove(Removal),
}

struct Removal {
    members: Members,
    /// The lookups: a field and the batch indexes of up to 100 members known by it.
    chunks: Vec<(Field, Vec<usize>)>,
    /// What each lookup page found: (chunk, page) → (batch index, profile id). Keyed, so an
    /// answer read twice counts once.
    found: Mutex<BTreeMap<(usize, usize), Found>>,
    /// The profile ids to remove, in chunks of 1,000, once every lookup is answered.
    deletes: OnceLock<Vec<Vec<String>>>,
}

/// Where a request stands in its batch's chain.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Import {
        imports: u32,
    },
    Poll {
        job: String,
        polls: u32,
        imports: u32,
    },
    Errors {
        job: String,
        failed: u64,
        read: u64,
        page: u32,
        imports: u32,
    },
    Lookup {
        chunk: usize,
        page: usize,
    },
    Delete {
        chunk: usize,
    },
}

struct State {
    batch: Arc<Batch>,
    stage: Stage,
}

impl FromSettings for Klaviyo {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let Some(api_key) = creds.secret("api_key_env") else {
            return Err(Error::Internal("klaviyo needs a private API key".into()));
        };
        let header = |value: String, what: &str| {
            HeaderValue::from_str(&value).map_err(|_| {
                Error::config(
                    None,
                    format!(
                        "destinations.{}.{what}: not a valid header value (control characters \
                         or non-ASCII)",
                        cohort.destination
                    ),
                )
            })
        };
        let mut auth = header(
            format!("Klaviyo-API-Key {}", api_key.expose()),
            &format!("api_key_env (the key in {})", dest.api_key_env),
        )?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            HeaderName::from_static("revision"),
            header(dest.revision.clone(), "revision")?,
        );
        headers.insert(ACCEPT, HeaderValue::from_static(JSON_API));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(JSON_API));
        let base = dest.base_url.trim_end_matches('/');
        let list = url_segment(&cohort.cohort_id);
        let mut list_tail =
            b"]}},\"relationships\":{\"lists\":{\"data\":[{\"type\":\"list\",\"id\":".to_vec();
        push_json_str(&mut list_tail, &cohort.cohort_id);
        list_tail.extend_from_slice(b"}]}}}}");
        Ok(Klaviyo {
            base: base.into(),
            remove_url: format!("{base}/api/lists/{list}/relationships/profiles").into(),
            import_url: format!("{base}/api/profile-bulk-import-jobs").into(),
            list_tail,
            headers,
            poll: dest.poll(),
            key_var: dest.api_key_env.clone(),
            destination: cohort.destination.clone(),
        })
    }
}

/// A path segment, percent-encoded.
fn url_segment(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

fn request(
    method: Method,
    url: Arc<str>,
    body: Bytes,
    like: &Request,
    lane: usize,
    state: State,
) -> Request {
    let mut r = Request::post(url, body, like.batch, like.ids);
    r.method = method;
    r.lane = lane;
    r.step = Some(Step::new(state));
    r
}

impl Klaviyo {
    /// The import of `members` (in order) into the list.
    fn import_body(&self, ids: &StringArray, range: Range<usize>) -> Vec<u8> {
        let mut body = super::body_for(ids, &range, 160, 60);
        body.extend_from_slice(
            b"{\"data\":{\"type\":\"profile-bulk-import-job\",\"attributes\":{\"profiles\":{\"data\":[",
        );
        for (n, i) in range.enumerate() {
            if n > 0 {
                body.push(b',');
            }
            let (field, value) = member(ids.value(i));
            body.extend_from_slice(b"{\"type\":\"profile\",\"attributes\":{\"");
            body.extend_from_slice(field.name().as_bytes());
            body.extend_from_slice(b"\":");
            push_json_str(&mut body, value);
            body.extend_from_slice(b"}}");
        }
        body.extend_from_slice(&self.list_tail);
        body
    }

    fn import(&self, batch: &Arc<Batch>, imports: u32) -> Request {
        let Batch::Add { post, .. } = &**batch else {
            unreachable!("only adds import")
        };
        let mut r = post.clone();
        r.step = Some(Step::new(State {
            batch: Arc::clone(batch),
            stage: Stage::Import { imports },
        }));
        r
    }

    fn get(&self, url: String, like: &Request, lane: usize, state: State) -> Request {
        request(Method::GET, url.into(), Bytes::new(), like, lane, state)
    }

    fn job_url(&self, job: &str) -> String {
        format!(
            "{}/api/profile-bulk-import-jobs/{}",
            self.base,
            url_segment(job)
        )
    }

    fn lookup_url(&self, field: Field, values: &[&str]) -> String {
        let mut list = Vec::new();
        list.push(b'[');
        for (n, v) in values.iter().enumerate() {
            if n > 0 {
                list.push(b',');
            }
            push_json_str(&mut list, v);
        }
        list.push(b']');
        let filter = format!(
            "any({},{})",
            field.name(),
            String::from_utf8(list).expect("JSON is UTF-8")
        );
        let query = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("filter", &filter)
            .append_pair("page[size]", &LOOKUP_CHUNK.to_string())
            .append_pair("fields[profile]", "external_id,email,phone_number")
            .finish();
        format!("{}/api/profiles?{query}", self.base)
    }

    /// A `links.next` to follow: relative links are on our host; an absolute one must be too
    /// (the key travels with it).
    fn follow(&self, link: &str) -> std::result::Result<String, String> {
        if link.starts_with('/') {
            return Ok(format!("{}{link}", self.base));
        }
        let origin = |u: &str| url::Url::parse(u).ok().map(|u| u.origin());
        match (origin(link), origin(&self.base)) {
            (Some(a), Some(b)) if a == b => Ok(link.to_owned()),
            _ => Err(format!(
                "a `links.next` that points away from {} (not followed: the key would travel \
                 with it)",
                self.base
            )),
        }
    }

    fn poll_wait(&self, polls: u32) -> Duration {
        self.poll
            .saturating_mul(1u32 << polls.min(10))
            .min(MAX_POLL_WAIT)
    }

    /// The lookup request of `chunk`, or the first removal once every chunk is answered.
    fn lookup(&self, batch: &Arc<Batch>, r: &Removal, chunk: usize, like: &Request) -> Request {
        let (field, indexes) = &r.chunks[chunk];
        let values: Vec<&str> = indexes.iter().map(|&i| r.members[i].1.as_str()).collect();
        self.get(
            self.lookup_url(*field, &values),
            like,
            LANE_LOOKUP,
            State {
                batch: Arc::clone(batch),
                stage: Stage::Lookup { chunk, page: 0 },
            },
        )
    }

    fn delete(&self, batch: &Arc<Batch>, ids: &[String], chunk: usize, like: &Request) -> Request {
        let mut body = Vec::with_capacity(ids.len() * 48 + 16);
        body.extend_from_slice(b"{\"data\":[");
        for (n, id) in ids.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"type\":\"profile\",\"id\":");
            push_json_str(&mut body, id);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        request(
            Method::DELETE,
            self.remove_url.clone(),
            Bytes::from(body),
            like,
            LANE_REMOVE,
            State {
                batch: Arc::clone(batch),
                stage: Stage::Delete { chunk },
            },
        )
    }

    /// Reads a 2xx answer to a step of `batch` at `stage`.
    fn step(&self, answer: &Answer<'_>, batch: &Arc<Batch>, stage: &Stage) -> Verdict {
        let req = answer.request;
        let unreadable = |why: String| Verdict::Retry {
            reason: format!(
                "HTTP {} from {} that cannot be read ({why}), so it acknowledges nothing: {}",
                answer.status.as_u16(),
                answer.request.url,
                retry::first_bytes(answer.body)
            ),
            asked: None,
        };
        match (stage, &**batch) {
            (Stage::Import { imports }, Batch::Add { .. }) => match response::job(answer.body) {
                Ok(job) => Verdict::Continue {
                    after: self.poll_wait(0),
                    next: Box::new(self.get(
                        self.job_url(&job.id),
                        req,
                        LANE_JOB,
                        State {
                            batch: Arc::clone(batch),
                            stage: Stage::Poll {
                                job: job.id,
                                polls: 0,
                                imports: *imports,
                            },
                        },
                    )),
                    refused: Vec::new(),
                },
                Err(why) => unreadable(why),
            },
            (
                Stage::Poll {
                    job: id,
                    polls,
                    imports,
                },
                Batch::Add { members, .. },
            ) => {
                let job = match response::job(answer.body) {
                    Ok(job) => job,
                    Err(why) => return unreadable(why),
                };
                match job.status.as_str() {
                    "queued" | "processing" => Verdict::Continue {
                        after: self.poll_wait(polls + 1),
                        next: Box::new(self.get(
                            self.job_url(id),
                            req,
                            LANE_JOB,
                            State {
                                batch: Arc::clone(batch),
                                stage: Stage::Poll {
                                    job: id.clone(),
                                    polls: polls + 1,
                                    imports: *imports,
                                },
                            },
                        )),
                        refused: Vec::new(),
                    },
                    "complete" => {
                        let sent = members.len() as u64;
                        if job.total != sent || job.completed + job.failed != sent {
                            return Verdict::Retry {
                                reason: format!(
                                    "import job {id} is complete but its counts do not add up to \
                                     the {sent} profiles sent (total_count {}, completed_count \
                                     {}, failed_count {}), so it acknowledges nothing",
                                    job.total, job.completed, job.failed
                                ),
                                asked: None,
                            };
                        }
                        if job.failed == 0 {
                            return Verdict::Success;
                        }
                        Verdict::Continue {
                            after: Duration::ZERO,
                            next: Box::new(self.get(
                                format!(
                                    "{}/import-errors?page%5Bsize%5D={ERRORS_PAGE}",
                                    self.job_url(id)
                                ),
                                req,
                                LANE_ERRORS,
                                State {
                                    batch: Arc::clone(batch),
                                    stage: Stage::Errors {
                                        job: id.clone(),
                                        failed: job.failed,
                                        read: 0,
                                        page: 0,
                                        imports: *imports,
                                    },
                                },
                            )),
                            refused: Vec::new(),
                        }
                    }
                    other => self.reimport(
                        batch,
                        *imports,
                        req,
                        &format!("import job {id} is `{other}`"),
                    ),
                }
            }
            (
                Stage::Errors {
                    job,
                    failed,
                    read,
                    page,
                    imports,
                },
                Batch::Add { members, .. },
            ) => {
                let (errors, next) = match response::import_errors(answer.body) {
                    Ok(page) => page,
                    Err(why) => return unreadable(why),
                };
                let mut refused = Vec::with_capacity(errors.len());
                for e in &errors {
                    match e.payload.as_ref().and_then(|p| row_of(members, p)) {
                        Some(index) => refused.push(Refused {
                            index,
                            reason: e.reason.clone(),
                            no_profile: false,
                        }),
                        None => {
                            return Verdict::Retry {
                                reason: format!(
                                    "import job {job}: an import error names no profile of the \
                                     batch ({}), so the batch acknowledges nothing",
                                    e.reason
                                ),
                                asked: None,
                            };
                        }
                    }
                }
                let read = read + errors.len() as u64;
                refused.sort_by_key(|r| r.index);
                refused.dedup_by_key(|r| r.index);
                match next {
                    Some(link) if read < *failed => match self.follow(&link) {
                        Ok(url) => Verdict::Continue {
                            after: Duration::ZERO,
                            next: Box::new(self.get(
                                url,
                                req,
                                LANE_ERRORS,
                                State {
                                    batch: Arc::clone(batch),
                                    stage: Stage::Errors {
                                        job: job.clone(),
                                        failed: *failed,
                                        read,
                                        page: page + 1,
                                        imports: *imports,
                                    },
                                },
                            )),
                            refused,
                        },
                        Err(why) => unreadable(why),
                    },
                    _ if read != *failed => Verdict::Retry {
                        reason: format!(
                            "import job {job}: failed_count is {failed} but its import errors \
                             list {read}, so the batch acknowledges nothing"
                        ),
                        asked: None,
                    },
                    _ if refused.is_empty() => Verdict::Success,
                    _ => Verdict::Partial(refused),
                }
            }
            (Stage::Lookup { chunk, page }, Batch::Remove(r)) => {
                let (profiles, next) = match response::profiles(answer.body) {
                    Ok(p) => p,
                    Err(why) => return unreadable(why),
                };
                let (field, indexes) = &r.chunks[*chunk];
                let mut by_value: HashMap<String, usize> = indexes
                    .iter()
                    .map(|&i| (fold(*field, &r.members[i].1), i))
                    .collect();
                let mut found = Vec::new();
                for p in profiles {
                    let value = match field {
                        Field::ExternalId => p.external_id,
                        Field::Email => p.email,
                        Field::Phone => p.phone_number,
                    };
                    if let Some(i) = value.and_then(|v| by_value.remove(&fold(*field, &v))) {
                        found.push((i, p.id));
                    }
                }
                r.found
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert((*chunk, *page), found);
                if let Some(link) = next {
                    return match self.follow(&link) {
                        Ok(url) => Verdict::Continue {
                            after: Duration::ZERO,
                            next: Box::new(self.get(
                                url,
                                req,
                                LANE_LOOKUP,
                                State {
                                    batch: Arc::clone(batch),
                                    stage: Stage::Lookup {
                                        chunk: *chunk,
                                        page: page + 1,
                                    },
                                },
                            )),
                            refused: Vec::new(),
                        },
                        Err(why) => unreadable(why),
                    };
                }
                if chunk + 1 < r.chunks.len() {
                    return Verdict::Continue {
                        after: Duration::ZERO,
                        next: Box::new(self.lookup(batch, r, chunk + 1, req)),
                        refused: Vec::new(),
                    };
                }
                // Every lookup answered: who has no profile, and the removals.
                let found = r
                    .found
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let mut ids_of: Vec<Option<&str>> = vec![None; r.members.len()];
                for (i, id) in found.values().flatten() {
                    ids_of[*i] = Some(id);
                }
                let refused: Vec<Refused> = ids_of
                    .iter()
                    .enumerate()
                    .filter(|(_, id)| id.is_none())
                    .map(|(index, _)| Refused {
                        index,
                        reason: format!(
                            "no Klaviyo profile has this {}: nothing to remove",
                            r.members[index].0.name()
                        ),
                        no_profile: true,
                    })
                    .collect();
                let mut ids: Vec<String> =
                    ids_of.iter().flatten().map(|s| (*s).to_owned()).collect();
                drop(found);
                ids.sort_unstable();
                ids.dedup();
                let deletes = r
                    .deletes
                    .get_or_init(|| ids.chunks(REMOVE_CHUNK).map(<[String]>::to_vec).collect());
                match deletes.first() {
                    None => Verdict::Partial(refused),
                    Some(first) => Verdict::Continue {
                        after: Duration::ZERO,
                        next: Box::new(self.delete(batch, first, 0, req)),
                        refused,
                    },
                }
            }
            (Stage::Delete { chunk }, Batch::Remove(r)) => {
                let deletes = r.deletes.get().map(Vec::as_slice).unwrap_or_default();
                match deletes.get(chunk + 1) {
                    Some(ids) => Verdict::Continue {
                        after: Duration::ZERO,
                        next: Box::new(self.delete(batch, ids, chunk + 1, req)),
                        refused: Vec::new(),
                    },
                    None => Verdict::Success,
                }
            }
            _ => Verdict::Retry {
                reason: "a Klaviyo step that belongs to no batch of its kind (a bug)".into(),
                asked: None,
            },
        }
    }

    /// The job was lost (cancelled, vanished): import the batch again, a few times.
    fn reimport(&self, batch: &Arc<Batch>, imports: u32, like: &Request, why: &str) -> Verdict {
        if imports + 1 >= MAX_IMPORTS {
            return Verdict::Retry {
                reason: format!(
                    "{why}, after {} imports of this batch: it acknowledges nothing",
                    imports + 1
                ),
                asked: None,
            };
        }
        tracing::warn!(
            batch = like.batch,
            reason = why,
            "importing the batch again"
        );
        Verdict::Continue {
            after: self.poll,
            next: Box::new(self.import(batch, imports + 1)),
            refused: Vec::new(),
        }
    }
}

/// A value as Klaviyo matches it: emails ignore case (our assumption), the rest exactly.
fn fold(field: Field, v: &str) -> String {
    match field {
        Field::Email => v.to_lowercase(),
        _ => v.to_owned(),
    }
}

/// The batch index of the member an import error's `original_payload` names.
fn row_of(
    members: &Members,
    payload: &serde_json::Map<String, serde_json::Value>,
) -> Option<usize> {
    for field in [Field::ExternalId, Field::Email, Field::Phone] {
        let Some(v) = payload.get(field.name()).and_then(|v| v.as_str()) else {
            continue;
        };
        let v = fold(field, v);
        if let Some(i) = members
            .iter()
            .position(|(f, m)| *f == field && fold(field, m) == v)
        {
            return Some(i);
        }
    }
    None
}

impl Destination for Klaviyo {
    fn setup(&self, _at: DateTime<Utc>) -> Option<Request> {
        None
    }

    fn lanes(&self) -> usize {
        LANES
    }

    fn batch(
        &self,
        _run_id: &str,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Request {
        let count = range.len();
        let members: Members = range
            .clone()
            .map(|i| {
                let (f, v) = member(ids.value(i));
                (f, v.to_owned())
            })
            .collect();
        match op {
            Op::Add => {
                let mut post = Request::post(
                    self.import_url.clone(),
                    Bytes::from(self.import_body(ids, range)),
                    batch,
                    count,
                );
                post.lane = LANE_IMPORT;
                let batch = Arc::new(Batch::Add { members, post });
                self.import(&batch, 0)
            }
            Op::Remove => {
                let mut by_field: BTreeMap<Field, Vec<usize>> = BTreeMap::new();
                for (i, (f, _)) in members.iter().enumerate() {
                    by_field.entry(*f).or_default().push(i);
                }
                let chunks = by_field
                    .into_iter()
                    .flat_map(|(f, idx)| {
                        idx.chunks(LOOKUP_CHUNK)
                            .map(|c| (f, c.to_vec()))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let removal = Removal {
                    members,
                    chunks,
                    found: Mutex::default(),
                    deletes: OnceLock::new(),
                };
                let like = Request::post(self.remove_url.clone(), Bytes::new(), batch, count);
                let batch = Arc::new(Batch::Remove(removal));
                let Batch::Remove(r) = &*batch else {
                    unreachable!()
                };
                self.lookup(&batch, r, 0, &like)
            }
        }
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        let Some(state) = answer.request.step.as_ref().and_then(|s| s.get::<State>()) else {
            return retry::classify(answer);
        };
        if answer.status.is_success() {
            return self.step(answer, &state.batch, &state.stage);
        }
        let said = response::error_message(answer.body);
        match (&state.stage, answer.status.as_u16()) {
            // The job is gone (expired, or never kept): import again.
            (Stage::Poll { job, imports, .. } | Stage::Errors { job, imports, .. }, 404) => self
                .reimport(
                    &state.batch,
                    *imports,
                    answer.request,
                    &format!("import job {job} is not found"),
                ),
            (Stage::Import { .. }, 413) => Verdict::Reject {
                status: 413,
                message: format!(
                    "{} (an import job takes at most 5 MB: lower batch_size for destination `{}`)",
                    said.unwrap_or_else(|| "payload too large".into()),
                    self.destination
                ),
            },
            _ => match retry::classify(answer) {
                Verdict::Reject { status, message } => Verdict::Reject {
                    status,
                    message: said.unwrap_or(message),
                },
                Verdict::Retry { reason, asked } => Verdict::Retry {
                    reason: match said {
                        Some(s) => format!("HTTP {} {s}", answer.status.as_u16()),
                        None => reason,
                    },
                    asked,
                },
                other => other,
            },
        }
    }

    /// Klaviyo identifies a profile by external id, email or phone number only.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        use crate::cohort::identity::{Id, first_tagged};
        match first_tagged(ids, |id| {
            !matches!(id, Id::External(_) | Id::Email(_) | Id::Phone(_))
        }) {
            None => Ok(()),
            Some(key) => Err(super::refused_kind(
                &self.destination,
                "klaviyo",
                key,
                "user_id, email or phone",
            )),
        }
    }

    fn explain(&self, e: Error) -> Error {
        super::explained(e, &[401, 403], || {
            format!(
                "check {} for destination `{}`: a Klaviyo private API key with \
                     the scopes lists:write, profiles:write, lists:read and profiles:read",
                self.key_var, self.destination
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::identity;
    use crate::config::Secret;
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    fn klaviyo() -> Klaviyo {
        let dest: Config = toml::from_str(
            "base_url = \"http://h:1/\"\napi_key_env = \"K\"\npoll_interval = \"100ms\"",
        )
        .unwrap();
        let cohort = Cohort {
            name: "c".into(),
            sql_file: "c.sql".into(),
            destination: "kl".into(),
            cohort_id: "Li st".into(),
            display_name: "VIPs".into(),
            holdout: crate::config::HoldoutShare {
                share: 0.0,
                salt: "vip".into(),
            },
            identifiers: crate::cohort::identity::DEFAULT_PRIORITY.to_vec(),
        };
        Klaviyo::new(&dest, &credentials(Secret::new("pk_secret")), &cohort).unwrap()
    }

    fn keys() -> StringArray {
        let mut keys = vec![
            identity::email("a@x.io"),
            identity::phone("+15005550006"),
            "u\"1".to_owned(),
            "u2".to_owned(),
        ];
        keys.sort();
        StringArray::from(keys)
    }

    fn answer(k: &Klaviyo, req: &Request, status: u16, body: &Value) -> Verdict {
        let bytes = serde_json::to_vec(body).unwrap();
        k.acknowledge(&Answer {
            request: req,
            status: StatusCode::from_u16(status).unwrap(),
            headers: &HeaderMap::new(),
            body: &bytes,
            sent: req.ids,
        })
    }

    fn next(v: Verdict) -> (Request, Duration, Vec<Refused>) {
        match v {
            Verdict::Continue {
                next,
                after,
                refused,
            } => (*next, after, refused),
            other => panic!("expected a next step, got {other:?}"),
        }
    }

    fn job(status: &str, total: u64, completed: u64, failed: u64) -> Value {
        json!({"data": {"type": "profile-bulk-import-job", "id": "J/1", "attributes": {
            "status": status, "total_count": total, "completed_count": completed,
            "failed_count": failed}}})
    }

    #[test]
    fn an_add_batch_imports_mixed_identifiers_into_the_list_and_carries_the_headers() {
        let k = klaviyo();
        let ids = keys();
        let req = k.batch("run", 7, &ids, 0..4, Op::Add);
        assert_eq!(
            (&*req.url, req.method.as_str(), req.lane, req.batch, req.ids),
            (
                "http://h:1/api/profile-bulk-import-jobs",
                "POST",
                LANE_IMPORT,
                7,
                4
            )
        );
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        let rows: Vec<Value> = body["data"]["attributes"]["profiles"]["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["attributes"].clone())
            .collect();
        let mut want = vec![
            json!({"email": "a@x.io"}),
            json!({"phone_number": "+15005550006"}),
            json!({"external_id": "u\"1"}),
            json!({"external_id": "u2"}),
        ];
        want.sort_by_key(|v| v.to_string());
        let mut got = rows.clone();
        got.sort_by_key(|v| v.to_string());
        assert_eq!(got, want);
        assert_eq!(body["data"]["type"], "profile-bulk-import-job");
        assert_eq!(
            body["data"]["relationships"]["lists"]["data"],
            json!([{"type": "list", "id": "Li st"}])
        );
        let h = k.headers();
        assert_eq!(h[AUTHORIZATION], "Klaviyo-API-Key pk_secret");
        assert!(h[AUTHORIZATION].is_sensitive());
        assert_eq!(h["revision"], "2026-10-15");
        assert_eq!(h[CONTENT_TYPE], JSON_API);
        assert_eq!(k.lanes(), LANES);
    }

    #[test]
    fn an_import_is_polled_until_complete_and_its_errors_become_refusals_of_their_rows() {
        let k = klaviyo();
        let ids = keys();
        let post = k.batch("run", 1, &ids, 0..4, Op::Add);
        let rows: Value = serde_json::from_slice(&post.body).unwrap();
        let row =
            |i: usize| rows["data"]["attributes"]["profiles"]["data"][i]["attributes"].clone();
        let (poll, after, _) = next(answer(&k, &post, 202, &job("queued", 4, 0, 0)));
        assert_eq!(after, Duration::from_millis(100));
        assert_eq!(
            (
                &*poll.url,
                poll.method.as_str(),
                poll.lane,
                poll.batch,
                poll.ids
            ),
            (
                "http://h:1/api/profile-bulk-import-jobs/J%2F1",
                "GET",
                LANE_JOB,
                1,
                4
            )
        );
        let (poll, after, _) = next(answer(&k, &poll, 200, &job("processing", 4, 1, 0)));
        assert_eq!(after, Duration::from_millis(200));
        // Counts that do not add up acknowledge nothing.
        assert!(matches!(
            answer(&k, &poll, 200, &job("complete", 4, 2, 1)),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            answer(&k, &poll, 200, &job("complete", 4, 4, 0)),
            Verdict::Success
        );
        let (errors, _, _) = next(answer(&k, &poll, 200, &job("complete", 4, 2, 2)));
        assert_eq!(errors.lane, LANE_ERRORS);
        assert!(
            errors
                .url
                .ends_with("/J%2F1/import-errors?page%5Bsize%5D=100")
        );
        let error = |payload: Value| {
            json!({"type": "import-error", "id": "e", "attributes": {
                "code": "invalid", "title": "Invalid input.", "detail": "Bad.",
                "source": {"pointer": "/x"}, "original_payload": payload}})
        };
        let page1 =
            json!({"data": [error(row(2))], "links": {"next": "/api/next?page%5Bcursor%5D=c1"}});
        let (page2, _, refused) = next(answer(&k, &errors, 200, &page1));
        assert_eq!(&*page2.url, "http://h:1/api/next?page%5Bcursor%5D=c1");
        assert_eq!(
            refused,
            [Refused {
                index: 2,
                reason: "invalid: Bad.".into(),
                no_profile: false
            }]
        );
        let last = json!({"data": [error(json!({"type": "profile", "attributes": row(0)}))], "links": {"next": null}});
        assert_eq!(
            answer(&k, &page2, 200, &last),
            Verdict::Partial(vec![Refused {
                index: 0,
                reason: "invalid: Bad.".into(),
                no_profile: false
            }])
        );
        // Fewer errors than failed_count, or one naming no row: nothing acknowledged.
        let short = json!({"data": [], "links": {"next": null}});
        assert!(matches!(
            answer(&k, &page2, 200, &short),
            Verdict::Retry { .. }
        ));
        let stranger = json!({"data": [error(json!({"email": "nobody@x.io"}))]});
        assert!(matches!(
            answer(&k, &page2, 200, &stranger),
            Verdict::Retry { .. }
        ));
        // A next link to another host is not followed.
        let away = json!({"data": [error(row(2))], "links": {"next": "https://evil.example/x"}});
        assert!(matches!(
            answer(&k, &errors, 200, &away),
            Verdict::Retry { .. }
        ));
        // A cancelled or vanished job is imported again, a few times.
        let (again, _, _) = next(answer(&k, &poll, 200, &job("cancelled", 4, 0, 0)));
        assert_eq!(again, post);
        let (poll2, _, _) = next(answer(&k, &again, 202, &job("queued", 4, 0, 0)));
        let (again2, _, _) = next(answer(&k, &poll2, 404, &json!({"errors": []})));
        assert_eq!(again2, post);
        let (poll3, _, _) = next(answer(&k, &again2, 202, &job("queued", 4, 0, 0)));
        assert!(matches!(
            answer(&k, &poll3, 200, &job("cancelled", 4, 0, 0)),
            Verdict::Retry { .. }
        ));
        // An HTML 200 acknowledges nothing; a 401 is refused with Klaviyo's words.
        let html = k.acknowledge(&Answer {
            request: &post,
            status: StatusCode::OK,
            headers: &HeaderMap::new(),
            body: b"<html>",
            sent: 4,
        });
        assert!(matches!(html, Verdict::Retry { .. }));
        let denied = json!({"errors": [{"id": "1", "code": "not_authenticated", "title": "T", "detail": "Bad key."}]});
        assert_eq!(
            answer(&k, &post, 401, &denied),
            Verdict::Reject {
                status: 401,
                message: "not_authenticated: Bad key.".into()
            }
        );
    }

    #[test]
    fn a_remove_batch_resolves_profile_ids_then_removes_them_and_the_unknown_are_gone() {
        let k = klaviyo();
        let ids = keys();
        let first = k.batch("run", 3, &ids, 0..4, Op::Remove);
        // Lookups by field, in field order: external ids first.
        assert_eq!((first.method.as_str(), first.lane), ("GET", LANE_LOOKUP));
        let query = |r: &Request| {
            let u = url::Url::parse(&r.url).unwrap();
            u.query_pairs()
                .find(|(k, _)| k == "filter")
                .unwrap()
                .1
                .into_owned()
        };
        assert_eq!(query(&first), r#"any(external_id,["u\"1","u2"])"#);
        let found = json!({"data": [
            {"type": "profile", "id": "P1", "attributes": {"external_id": "u\"1"}},
            {"type": "profile", "id": "P9", "attributes": {"external_id": "someone else"}},
        ], "links": {"next": null}});
        let (emails, _, refused) = next(answer(&k, &first, 200, &found));
        assert!(refused.is_empty());
        assert_eq!(query(&emails), r#"any(email,["a@x.io"])"#);
        let found =
            json!({"data": [{"type": "profile", "id": "P2", "attributes": {"email": "A@x.io"}}]});
        let (phones, _, _) = next(answer(&k, &emails, 200, &found));
        assert_eq!(query(&phones), r#"any(phone_number,["+15005550006"])"#);
        // Read twice (a repeated answer), counted once.
        let none = json!({"data": []});
        let _ = answer(&k, &phones, 200, &none);
        let (delete, _, refused) = next(answer(&k, &phones, 200, &none));
        let index = |key: &str| (0..4).find(|&i| ids.value(i) == key).unwrap();
        let mut gone: Vec<usize> = refused.iter().map(|r| r.index).collect();
        gone.sort();
        let mut want = vec![index("u2"), index(&identity::phone("+15005550006"))];
        want.sort();
        assert_eq!(gone, want);
        assert!(refused.iter().all(|r| r.no_profile), "{refused:?}");
        assert_eq!(
            (&*delete.url, delete.method.as_str(), delete.lane),
            (
                "http://h:1/api/lists/Li%20st/relationships/profiles",
                "DELETE",
                LANE_REMOVE
            )
        );
        let body: Value = serde_json::from_slice(&delete.body).unwrap();
        assert_eq!(
            body,
            json!({"data": [{"type": "profile", "id": "P1"}, {"type": "profile", "id": "P2"}]})
        );
        assert_eq!(
            k.acknowledge(&Answer {
                request: &delete,
                status: StatusCode::NO_CONTENT,
                headers: &HeaderMap::new(),
                body: b"",
                sent: 4,
            }),
            Verdict::Success
        );
    }

    #[test]
    fn kinds_klaviyo_cannot_identify_are_refused_by_name() {
        let k = klaviyo();
        assert!(k.accepts(&keys()).is_ok());
        let ids = StringArray::from(vec![identity::device("d-1"), "u".to_owned()]);
        let e = k.accepts(&ids).unwrap_err().to_string();
        assert!(
            e.contains("(klaviyo) cannot identify users by device_id") && e.contains("d-1"),
            "{e}"
        );
    }
}
