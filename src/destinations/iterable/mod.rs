//! Iterable static lists (`docs/partners/iterable.md`): a cohort is the membership of one list,
//! adds are `POST /api/lists/subscribe`, removes `POST /api/lists/unsubscribe`, each with
//! `{"listId": N, "subscribers": [{"email": …} | {"userId": …}]}` and the project's key in an
//! `Api-Key` header.
//!
//! One identifier per subscriber, never both (Iterable lets `email` win, which would re-key a
//! hybrid project's user): a `user_id` member is sent as `userId`, an `email` member as `email`,
//! as the project type allows. A `userId` Iterable would call malformed is not sent: it is a
//! dead letter with the reason. The answer counts successes and failures and lists the failed
//! identifiers by cause (`failedUpdates`); those are item-level refusals, mapped back to their
//! place in the batch, and the batch is acknowledged only when the answer accounts for every
//! subscriber sent.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, StringArray};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

mod config;

pub use config::{
    Config, DEFAULT_BATCH, DEFAULT_RPS, EU_URL, MAX_BATCH, ProjectType, Region, US_URL, credentials,
};

use super::{Destination, FromSettings, Op, Refused, base_of, own, push_json_str};
use crate::cohort::identity::{Id, parse};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::retry::{self, Answer, Verdict};
use crate::deliver::{Request, Step};
use crate::error::{Error, Result};
use crate::redact;

/// The longest `userId` Iterable accepts.
pub const MAX_USER_ID_CHARS: usize = 52;

/// The registry's identity: the host, the list and the key's fingerprint.
pub fn identity(dest: &DestinationConfig, key: &str) -> String {
    let c: &Config = own(dest);
    format!("{}/api/lists#{}@project-{key}", base_of(dest), c.list_id)
}

/// Why Iterable would refuse this `userId` (its reference: empty, too long, non-ASCII or
/// non-printable characters, a trailing space), if it would.
pub fn user_id_problem(id: &str) -> Option<String> {
    let chars = id.chars().count();
    if chars > MAX_USER_ID_CHARS {
        Some(format!(
            "userId of {chars} characters: Iterable takes at most {MAX_USER_ID_CHARS}"
        ))
    } else if id.is_empty() {
        Some("empty userId".into())
    } else if !id.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
        Some("userId with non-ASCII or non-printable characters: Iterable refuses them".into())
    } else if id.ends_with(' ') {
        Some("userId with a trailing space: Iterable refuses it".into())
    } else {
        None
    }
}

/// A cohort's list requests, with the constant parts encoded once.
pub struct Iterable {
    subscribe_url: Arc<str>,
    unsubscribe_url: Arc<str>,
    headers: HeaderMap,
    /// `{"listId":N,"subscribers":[`
    head: Vec<u8>,
    /// `]` plus `,"updateExistingUsersOnly":…` on subscribe, then `}`.
    tail_subscribe: Vec<u8>,
    project_type: ProjectType,
    key_var: String,
    destination: String,
}

/// What one batch's request carried, for reading its answer: where each identifier sent sits
/// in the batch, and the members not sent (refused here).
#[derive(Debug, Default)]
struct Sent {
    emails: HashMap<String, usize>,
    user_ids: HashMap<String, usize>,
    withheld: Vec<Refused>,
}

impl Sent {
    fn count(&self) -> usize {
        self.emails.len() + self.user_ids.len()
    }
}

impl FromSettings for Iterable {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let Some(api_key) = creds.secret("api_key_env") else {
            return Err(Error::Internal("Iterable needs an API key".into()));
        };
        let mut key = HeaderValue::from_str(api_key.expose()).map_err(|_| {
            Error::config(
                None,
                format!(
                    "destinations.{}.api_key_env: the key in {} is not a valid header value \
                     (control characters or non-ASCII)",
                    cohort.destination, dest.api_key_env
                ),
            )
        })?;
        key.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::from_static("api-key"), key);
        let base = dest.url().trim_end_matches('/');
        let mut head = Vec::with_capacity(64);
        head.extend_from_slice(
            format!("{{\"listId\":{},\"subscribers\":[", dest.list_id).as_bytes(),
        );
        let mut tail_subscribe = b"]".to_vec();
        if dest.update_existing_only {
            tail_subscribe.extend_from_slice(b",\"updateExistingUsersOnly\":true");
        }
        tail_subscribe.push(b'}');
        Ok(Iterable {
            subscribe_url: format!("{base}/api/lists/subscribe").into(),
            unsubscribe_url: format!("{base}/api/lists/unsubscribe").into(),
            headers,
            head,
            tail_subscribe,
            project_type: dest.project_type,
            key_var: dest.api_key_env.clone(),
            destination: cohort.destination.clone(),
        })
    }
}

impl Destination for Iterable {
    fn setup(&self, _at: DateTime<Utc>) -> Option<Request> {
        None
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
        let mut body = super::body_for(ids, &range, self.head.len() + 48, 12);
        body.extend_from_slice(&self.head);
        let mut sent = Sent::default();
        let mut first = true;
        for (index, i) in range.enumerate() {
            let key = ids.value(i);
            let (field, value) = match parse(key) {
                Id::External(id) => match user_id_problem(id) {
                    None => ("userId", id),
                    Some(why) => {
                        sent.withheld.push(Refused {
                            index,
                            reason: redact::scrub(&why).into_owned(),
                            no_profile: false,
                        });
                        continue;
                    }
                },
                Id::Email(email) => ("email", email),
                // Refused before planning (`accepts`); a plan edited to hold one is not sent.
                _ => {
                    sent.withheld.push(Refused {
                        index,
                        reason: "Iterable identifies users by userId or email only".into(),
                        no_profile: false,
                    });
                    continue;
                }
            };
            if !std::mem::take(&mut first) {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"");
            body.extend_from_slice(field.as_bytes());
            body.extend_from_slice(b"\":");
            push_json_str(&mut body, value);
            body.push(b'}');
            match field {
                "email" => sent.emails.insert(value.to_owned(), index),
                _ => sent.user_ids.insert(value.to_owned(), index),
            };
        }
        let url = match op {
            Op::Add => {
                body.extend_from_slice(&self.tail_subscribe);
                self.subscribe_url.clone()
            }
            Op::Remove => {
                body.extend_from_slice(b"]}");
                self.unsubscribe_url.clone()
            }
        };
        let mut request = Request::post(url, Bytes::from(body), batch, count);
        // Iterable limits each endpoint on its own: one pacer each.
        request.lane = match op {
            Op::Add => 0,
            Op::Remove => 1,
        };
        request.step = Some(Step::new(sent));
        request
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn lanes(&self) -> usize {
        2
    }

    /// A 200 `UserBulkUpdateListResponse` that accounts for every subscriber sent acknowledges,
    /// its listed failures as refusals; anything else acknowledges nothing (see the module).
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        if !answer.status.is_success() {
            return retry::classify(answer);
        }
        let Some(sent) = answer.request.step.as_ref().and_then(|s| s.get::<Sent>()) else {
            return Verdict::Retry {
                reason: "an answer to a request this destination did not build".into(),
                asked: None,
            };
        };
        match accounted(answer.body, sent) {
            Ok(mut refused) => {
                refused.extend(sent.withheld.iter().cloned());
                refused.sort_by_key(|r| r.index);
                if refused.is_empty() {
                    Verdict::Success
                } else {
                    Verdict::Partial(refused)
                }
            }
            Err(why) => Verdict::Retry {
                reason: format!(
                    "HTTP {} that does not account for the {} subscribers sent ({why}), so it \
                     acknowledges nothing: {}",
                    answer.status.as_u16(),
                    sent.count(),
                    retry::first_bytes(answer.body)
                ),
                asked: None,
            },
        }
    }

    /// Iterable identifies users by `userId` or `email`, as the project type allows.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        use crate::cohort::identity::first_tagged;
        let project = self.project_type;
        let unfit = |id: Id<'_>| match id {
            Id::External(_) => project == ProjectType::Email,
            Id::Email(_) => project == ProjectType::UserId,
            _ => true,
        };
        // External ids are untagged: look at every member only when the project refuses them.
        let first = if project == ProjectType::Email {
            (0..ids.len())
                .map(|i| ids.value(i))
                .find(|k| unfit(parse(k)))
        } else {
            first_tagged(ids, unfit)
        };
        let Some(key) = first else { return Ok(()) };
        let (name, takes) = match project {
            ProjectType::Hybrid => ("hybrid", "user_id or email"),
            ProjectType::UserId => ("user_id", "user_id"),
            ProjectType::Email => ("email", "email"),
        };
        Err(super::refused_kind(
            &self.destination,
            &format!("iterable, project_type = \"{name}\""),
            key,
            takes,
        ))
    }

    fn explain(&self, e: Error) -> Error {
        super::explained(e, &[401, 403], || {
            format!(
                "check {} for destination `{}`: a server-side API key of the \
                     project, in its data center",
                self.key_var, self.destination
            )
        })
    }
}

/// The refusals a 200 lists, once it accounts for the batch: `successCount + failCount` is the
/// number sent, and the identifiers listed (`failedUpdates`, else the deprecated top-level
/// `invalidEmails` / `invalidUserIds`) are `failCount` subscribers of the batch. `Err` says why
/// it does not.
fn accounted(body: &[u8], sent: &Sent) -> std::result::Result<Vec<Refused>, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let count = |field: &str| {
        v.get(field)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("no `{field}` count"))
    };
    let (ok, failed) = (count("successCount")?, count("failCount")?);
    if ok.saturating_add(failed) != sent.count() as u64 {
        return Err(format!(
            "successCount {ok} + failCount {failed} for {} sent",
            sent.count()
        ));
    }
    let mut lists: Vec<(String, &Value)> = Vec::new();
    match v.get("failedUpdates") {
        Some(Value::Object(f)) => {
            lists.extend(f.iter().map(|(k, l)| (format!("failedUpdates.{k}"), l)))
        }
        None | Some(Value::Null) => {
            for k in ["invalidEmails", "invalidUserIds"] {
                if let Some(l) = v.get(k) {
                    lists.push((k.to_owned(), l));
                }
            }
        }
        Some(_) => return Err("`failedUpdates` is not an object".into()),
    }
    let mut refused: Vec<Refused> = Vec::new();
    for (field, list) in lists {
        let by_email = field.ends_with("Emails");
        if !by_email && !field.ends_with("UserIds") {
            continue;
        }
        let Value::Array(items) = list else {
            return Err(format!("`{field}` is not a list"));
        };
        for item in items {
            let Some(id) = item.as_str() else {
                return Err(format!("`{field}` holds a non-string"));
            };
            let index = if by_email {
                sent.emails
                    .get(id)
                    .or_else(|| sent.emails.get(&id.to_lowercase()))
            } else {
                sent.user_ids.get(id)
            };
            let Some(&index) = index else {
                return Err(format!(
                    "`{field}` names an identifier the batch did not carry"
                ));
            };
            let cause = field.rsplit('.').next().unwrap_or(&field);
            refused.push(Refused {
                index,
                reason: format!("Iterable {field}"),
                no_profile: cause.starts_with("notFound") || cause.starts_with("forgotten"),
            });
        }
    }
    refused.sort_by_key(|r| r.index);
    refused.dedup_by_key(|r| r.index);
    if refused.len() as u64 != failed {
        return Err(format!(
            "failCount {failed} but {} subscribers listed as failed",
            refused.len()
        ));
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::identity::{alias, email, phone};
    use crate::config::Secret;
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    fn dest(extra: &str) -> Config {
        toml::from_str(&format!(
            "base_url = \"http://h:1/\"\napi_key_env = \"K\"\nlist_id = 42\n{extra}"
        ))
        .unwrap()
    }

    fn cohort() -> Cohort {
        crate::destinations::test_cohort("it", "c", "C")
    }

    fn iterable(extra: &str) -> Iterable {
        let creds = credentials(Secret::new("it-key"));
        Iterable::new(&dest(extra), &creds, &cohort()).unwrap()
    }

    fn request(t: &Iterable, ids: &[&str], op: Op) -> Request {
        let array = StringArray::from(ids.to_vec());
        t.batch("run", 3, &array, 0..ids.len(), op)
    }

    fn ack(t: &Iterable, req: &Request, status: u16, body: Value) -> Verdict {
        let body = body.to_string();
        t.acknowledge(&Answer {
            request: req,
            status: StatusCode::from_u16(status).unwrap(),
            headers: &HeaderMap::new(),
            body: body.as_bytes(),
            sent: req.ids,
        })
    }

    #[test]
    fn members_are_sent_by_one_identifier_each_on_the_lane_of_their_endpoint() {
        let t = iterable("project_type = \"hybrid\"");
        let long = "u".repeat(53);
        let ids = [
            email("a@x.io"),
            "u\"1".to_owned(),
            long.clone(),
            "u2".to_owned(),
        ];
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let add = request(&t, &ids, Op::Add);
        assert_eq!(&*add.url, "http://h:1/api/lists/subscribe");
        assert_eq!((add.batch, add.ids, add.lane), (3, 4, 0));
        assert_eq!(
            serde_json::from_slice::<Value>(&add.body).unwrap(),
            json!({"listId": 42, "subscribers": [{"email": "a@x.io"}, {"userId": "u\"1"}, {"userId": "u2"}],
                   "updateExistingUsersOnly": true})
        );
        assert_eq!(t.headers()["api-key"], "it-key");
        assert!(t.headers()["api-key"].is_sensitive());
        let remove = request(&t, &ids[..2], Op::Remove);
        assert_eq!(&*remove.url, "http://h:1/api/lists/unsubscribe");
        assert_eq!(remove.lane, 1);
        assert_eq!(
            serde_json::from_slice::<Value>(&remove.body).unwrap(),
            json!({"listId": 42, "subscribers": [{"email": "a@x.io"}, {"userId": "u\"1"}]})
        );
        assert_eq!(t.lanes(), 2);
        // The long userId was not sent: a dead letter with the reason, even on a clean answer.
        let ok = json!({"successCount": 3, "failCount": 0, "failedUpdates": {}});
        match ack(&t, &add, 200, ok) {
            Verdict::Partial(r) => {
                assert_eq!(r.len(), 1);
                assert_eq!(r[0].index, 2);
                assert!(r[0].reason.contains("53 characters"), "{}", r[0].reason);
            }
            other => panic!("{other:?}"),
        }
        let no_update_only = iterable("project_type = \"hybrid\"\nupdate_existing_only = false");
        let body: Value =
            serde_json::from_slice(&request(&no_update_only, &["u"], Op::Add).body).unwrap();
        assert_eq!(
            body,
            json!({"listId": 42, "subscribers": [{"userId": "u"}]})
        );
    }

    #[test]
    fn listed_failures_are_refusals_at_their_place_and_unaccounted_answers_retry() {
        let t = iterable("project_type = \"hybrid\"");
        let ids = [
            email("a@x.io"),
            email("b@x.io"),
            "u1".to_owned(),
            "u2".to_owned(),
        ];
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let add = request(&t, &ids, Op::Remove);
        assert_eq!(
            ack(
                &t,
                &add,
                200,
                json!({"successCount": 4, "failCount": 0, "invalidEmails": [], "invalidUserIds": []})
            ),
            Verdict::Success
        );
        assert_eq!(
            ack(
                &t,
                &add,
                200,
                json!({"successCount": 2, "failCount": 2, "failedUpdates": {
                "notFoundUserIds": ["u2"], "invalidEmails": ["B@x.io"], "conflictEmails": []},
                "invalidEmails": ["B@x.io"], "invalidUserIds": ["u2"]})
            ),
            Verdict::Partial(vec![
                Refused {
                    index: 1,
                    reason: "Iterable failedUpdates.invalidEmails".into(),
                    no_profile: false
                },
                Refused {
                    index: 3,
                    reason: "Iterable failedUpdates.notFoundUserIds".into(),
                    no_profile: true
                },
            ])
        );
        // Without `failedUpdates`, the deprecated lists.
        assert_eq!(
            ack(
                &t,
                &add,
                200,
                json!({"successCount": 3, "failCount": 1, "invalidUserIds": ["u1"]})
            ),
            Verdict::Partial(vec![Refused {
                index: 2,
                reason: "Iterable invalidUserIds".into(),
                no_profile: false
            }])
        );
        for (bad, why) in [
            (json!({"successCount": 3, "failCount": 0}), "for 4 sent"),
            (
                json!({"successCount": 3, "failCount": 1, "failedUpdates": {}}),
                "failCount 1 but 0",
            ),
            (
                json!({"successCount": 3, "failCount": 1, "failedUpdates": {"notFoundUserIds": ["u9"]}}),
                "did not carry",
            ),
            (
                json!({"successCount": 3, "failCount": 1, "failedUpdates": {"notFoundUserIds": "u1"}}),
                "not a list",
            ),
            (json!({"failCount": 0}), "successCount"),
            (
                json!({"msg": "", "code": "Success", "params": null}),
                "successCount",
            ),
        ] {
            match ack(&t, &add, 200, bad.clone()) {
                Verdict::Retry { reason, .. } => assert!(reason.contains(why), "{bad}: {reason}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert!(matches!(
            t.acknowledge(&Answer {
                request: &add,
                status: StatusCode::OK,
                headers: &HeaderMap::new(),
                body: b"<html>",
                sent: 4
            }),
            Verdict::Retry { .. }
        ));
        assert!(matches!(
            ack(
                &t,
                &add,
                401,
                json!({"msg": "Invalid API key", "code": "BadApiKey", "params": null})
            ),
            Verdict::Reject { status: 401, .. }
        ));
        assert!(matches!(
            ack(
                &t,
                &add,
                429,
                json!({"msg": "Exceeded rate limit", "code": "RateLimitExceeded", "params": {}})
            ),
            Verdict::Retry { .. }
        ));
    }

    #[test]
    fn kinds_the_project_type_does_not_take_are_refused_by_name() {
        let ids =
            |v: &[String]| StringArray::from(v.iter().map(String::as_str).collect::<Vec<_>>());
        let mixed = ids(&[email("a@x.io"), "u1".into()]);
        assert!(
            iterable("project_type = \"hybrid\"")
                .accepts(&mixed)
                .is_ok()
        );
        let err = iterable("project_type = \"user_id\"")
            .accepts(&mixed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("by email") && err.contains("a@x.io"), "{err}");
        let err = iterable("project_type = \"email\"")
            .accepts(&mixed)
            .unwrap_err()
            .to_string();
        assert!(err.contains("by user_id") && err.contains("u1"), "{err}");
        for other in [alias("n", "l"), phone("+14155550100")] {
            let err = iterable("project_type = \"hybrid\"")
                .accepts(&ids(&[other, "u1".into()]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("cannot identify users by"), "{err}");
        }
    }

    #[test]
    fn config_checks_the_list_the_region_and_the_project_type() {
        use crate::config::KindConfig;
        let problems = |toml: &str| {
            let c: Config = toml::from_str(&format!("api_key_env = \"K\"\n{toml}")).unwrap();
            let mut out = Vec::new();
            c.problems("destinations.it", &mut out);
            (c, out)
        };
        let (c, out) = problems("list_id = 1\nproject_type = \"hybrid\"");
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(c.url(), US_URL);
        let (c, _) = problems("list_id = 1\nproject_type = \"hybrid\"\nregion = \"eu\"");
        assert_eq!(c.url(), EU_URL);
        let (_, out) = problems("list_id = 0\nproject_type = \"email\"\nregion = \"eu\"");
        assert!(
            out.iter().any(|p| p.starts_with("destinations.it.list_id")),
            "{out:?}"
        );
        assert!(
            out.iter()
                .any(|p| p.starts_with("destinations.it.project_type")),
            "{out:?}"
        );
        assert!(toml::from_str::<Config>("api_key_env = \"K\"\nlist_id = 1").is_err());
        assert_eq!(user_id_problem(&"u".repeat(52)), None);
        assert!(user_id_problem("é").is_some() && user_id_problem("a ").is_some());
    }
}
