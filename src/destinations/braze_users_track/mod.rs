//! Braze's REST `/users/track`, for any Braze customer: cohort membership as a custom attribute
//! on each profile, with a workspace REST API key (`Authorization: Bearer`).
//!
//! Membership is a boolean attribute per cohort (`"cohort_<id>": true`, `false` once the user
//! leaves) or one array attribute shared by cohorts (`"cohorts": {"add": ["<id>"]}`, `remove`).
//! At most 75 attribute objects per request; `_update_existing_only` (the default) keeps
//! unknown ids from creating profiles. A success may list items it did not apply
//! (`errors: [{type, input_array, index}]`): those become dead letters with the partner's type
//! (a removal refused because the profile does not exist is done instead: the member is gone).
//! A success acknowledges only when it accounts for every object sent: `attributes_processed`
//! plus the item errors, each naming an object of the batch.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

mod config;
mod response;

pub use config::{Config, DEFAULT_RPS, MAX_OBJECTS, Membership, credentials};

use super::{
    Destination, FromSettings, Op, Refused, base_of, body_for, push_identities, push_json_str,
};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::Request;
use crate::deliver::retry::{self, Answer, Verdict};
use crate::error::{Error, Result};
use response::accounted;

/// The registry's identity: the endpoint and the REST key's fingerprint.
pub fn identity(dest: &DestinationConfig, key: &str) -> String {
    format!("{}/users/track#workspace-{key}", base_of(dest))
}

/// A cohort's `/users/track` requests, with the constant parts encoded once.
pub struct UsersTrack {
    url: Arc<str>,
    headers: HeaderMap,
    /// What follows an object's id, for a member joining and one leaving, e.g.
    /// `,"cohort_x":true,"_update_existing_only":true}`.
    tail_add: Vec<u8>,
    tail_remove: Vec<u8>,
    key_var: String,
    destination: String,
}

impl FromSettings for UsersTrack {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let Some(api_key) = creds.secret("api_key_env") else {
            return Err(Error::Internal("/users/track needs a REST API key".into()));
        };
        let mut auth =
            HeaderValue::from_str(&format!("Bearer {}", api_key.expose())).map_err(|_| {
                Error::config(
                    None,
                    format!(
                        "destinations.{}.api_key_env: the key in {} is not a valid header value \
                         (control characters or non-ASCII)",
                        cohort.destination, dest.api_key_env
                    ),
                )
            })?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let tail = |joined: bool| {
            let mut t = Vec::new();
            t.push(b',');
            match dest.membership {
                Membership::Boolean => {
                    let name = dest
                        .attribute
                        .clone()
                        .unwrap_or_else(|| format!("cohort_{}", cohort.cohort_id));
                    push_json_str(&mut t, &name);
                    t.extend_from_slice(if joined { b":true" } else { b":false" });
                }
                Membership::Array => {
                    let name = dest.attribute.clone().unwrap_or_else(|| "cohorts".into());
                    push_json_str(&mut t, &name);
                    t.extend_from_slice(if joined {
                        b":{\"add\":["
                    } else {
                        b":{\"remove\":["
                    });
                    push_json_str(&mut t, &cohort.cohort_id);
                    t.extend_from_slice(b"]}");
                }
            }
            if dest.update_existing_only {
                t.extend_from_slice(b",\"_update_existing_only\":true");
            }
            t.push(b'}');
            t
        };
        let base = dest.base_url.trim_end_matches('/');
        Ok(UsersTrack {
            url: format!("{base}/users/track").into(),
            headers,
            tail_add: tail(true),
            tail_remove: tail(false),
            key_var: dest.api_key_env.clone(),
            destination: cohort.destination.clone(),
        })
    }
}

impl Destination for UsersTrack {
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
        let tail = match op {
            Op::Add => &self.tail_add,
            Op::Remove => &self.tail_remove,
        };
        let mut body = body_for(ids, &range, 32, tail.len() + 16);
        body.extend_from_slice(b"{\"attributes\":[");
        push_identities(
            &mut body,
            ids,
            range,
            "external_id",
            Some("user_alias"),
            tail,
        );
        body.extend_from_slice(b"]}");
        Request::post(self.url.clone(), Bytes::from(body), batch, count)
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// 201 or 200 with `{"message": "success", "attributes_processed": N}` acknowledges; the
    /// objects its `errors` list were not applied. A success that does not account for every
    /// object sent (`N` plus the item errors short of the batch, an error naming an object
    /// outside it, an `errors` list that cannot be read item by item) acknowledges nothing:
    /// the request is retried (re-sending an attribute is harmless), and the run fails if it
    /// never does.
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        let verdict = retry::classify(answer);
        if verdict != Verdict::Success {
            return verdict;
        }
        match accounted(answer.body, answer.sent) {
            Ok(refused) if refused.is_empty() => Verdict::Success,
            Ok(refused) => Verdict::Partial(refused),
            Err(why) => Verdict::Retry {
                reason: format!(
                    "HTTP {} success that does not account for the {} objects sent ({why}), so \
                     it acknowledges nothing: {}",
                    answer.status.as_u16(),
                    answer.sent,
                    retry::first_bytes(answer.body)
                ),
                asked: None,
            },
        }
    }

    /// `/users/track` identifies a user by external id, alias or Braze id, never by device id.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        use crate::cohort::identity::{Id, first_tagged, parse};
        if let Some(key) = first_tagged(ids, |id| matches!(id, Id::Email(_) | Id::Phone(_))) {
            return Err(crate::destinations::refused_kind(
                &self.destination,
                "braze_users_track",
                key,
                "user_id or alias",
            ));
        }
        let device = first_tagged(ids, |id| matches!(id, Id::Device(_))).map(|k| match parse(k) {
            Id::Device(d) => d,
            _ => k,
        });
        match device {
            None => Ok(()),
            Some(device) => Err(Error::config(
                None,
                format!(
                    "destination `{}` (braze_users_track) cannot identify users by device id, and \
                     the cohort has members known only by one (e.g. device `{device}`): select \
                     their user_id or alias, or send the cohort through Cohort Import (kind \
                     `braze`)",
                    self.destination
                ),
            )),
        }
    }

    fn explain(&self, e: Error) -> Error {
        super::explained(e, &[401, 403], || {
            format!(
                "check {} for destination `{}`: a workspace REST API key with \
                     the users.track permission",
                self.key_var, self.destination
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use proptest::strategy::Strategy;
    use reqwest::StatusCode;

    fn dest(extra: &str) -> Config {
        toml::from_str(&format!(
            "base_url = \"http://h:1/\"\napi_key_env = \"K\"\n{extra}"
        ))
        .unwrap()
    }

    fn cohort() -> Cohort {
        Cohort {
            name: "c".into(),
            sql_file: "c.sql".into(),
            destination: "track".into(),
            cohort_id: "vip\"s".into(),
            display_name: "VIPs".into(),
            holdout: crate::config::HoldoutShare {
                share: 0.0,
                salt: "vip".into(),
            },
            identifiers: crate::cohort::identity::DEFAULT_PRIORITY.to_vec(),
        }
    }

    fn track(extra: &str) -> UsersTrack {
        let creds = credentials(Secret::new("rest-key"));
        UsersTrack::new(&dest(extra), &creds, &cohort()).unwrap()
    }

    fn body(t: &UsersTrack, ids: &[&str], op: Op) -> serde_json::Value {
        let array = StringArray::from(ids.to_vec());
        let req = t.batch("run", 2, &array, 0..ids.len(), op);
        assert_eq!(&*req.url, "http://h:1/users/track");
        assert_eq!((req.batch, req.ids), (2, ids.len()));
        serde_json::from_slice(&req.body).unwrap()
    }

    #[test]
    fn boolean_membership_sets_and_clears_the_cohorts_attribute() {
        let t = track("");
        assert_eq!(
            body(&t, &["a", "b\"q"], Op::Add),
            serde_json::json!({"attributes": [
                {"external_id": "a", "cohort_vip\"s": true, "_update_existing_only": true},
                {"external_id": "b\"q", "cohort_vip\"s": true, "_update_existing_only": true},
            ]})
        );
        assert_eq!(
            body(&t, &["a"], Op::Remove)["attributes"][0]["cohort_vip\"s"],
            false
        );
        assert_eq!(
            t.headers()[AUTHORIZATION].to_str().unwrap(),
            "Bearer rest-key"
        );
        assert!(t.headers()[AUTHORIZATION].is_sensitive());
    }

    #[test]
    fn array_membership_adds_and_removes_the_cohort_id() {
        let t =
            track("membership = \"array\"\nattribute = \"segments\"\nupdate_existing_only = false");
        let v = body(&t, &["a"], Op::Add);
        assert_eq!(
            v,
            serde_json::json!({"attributes": [{"external_id": "a", "segments": {"add": ["vip\"s"]}}]})
        );
        let v = body(&t, &["a"], Op::Remove);
        assert_eq!(
            v["attributes"][0]["segments"],
            serde_json::json!({"remove": ["vip\"s"]})
        );
    }

    fn ack(t: &UsersTrack, status: u16, body: &str) -> Verdict {
        ack_of(t, status, body, 4)
    }

    fn ack_of(t: &UsersTrack, status: u16, body: &str, sent: usize) -> Verdict {
        t.acknowledge(&Answer {
            request: &Request::post("http://x/".into(), Default::default(), 0, 1),
            status: StatusCode::from_u16(status).unwrap(),
            headers: &HeaderMap::new(),
            body: body.as_bytes(),
            sent,
        })
    }

    #[test]
    fn item_level_errors_are_refusals_and_unreadable_ones_acknowledge_nothing() {
        let t = track("");
        assert_eq!(
            ack(&t, 201, r#"{"message":"success","attributes_processed":4}"#),
            Verdict::Success
        );
        assert_eq!(
            ack(
                &t,
                201,
                r#"{"message":"success","attributes_processed":2,"errors":[{"type":"'external_id' ... must identify an existing user when '_update_existing_only' is true","input_array":"attributes","index":3},{"type":"x","input_array":"events","index":0},{"type":"dup","index":1}]}"#
            ),
            Verdict::Partial(vec![
                Refused {
                    index: 1,
                    reason: "dup".into(),
                    no_profile: false,
                },
                Refused {
                    index: 3,
                    reason: "'external_id' ... must identify an existing user when \
                             '_update_existing_only' is true"
                        .into(),
                    no_profile: true,
                },
            ])
        );
        for bad in [
            r#"{"message":"success","attributes_processed":4,"errors":{"type":"x"}}"#,
            r#"{"message":"success","attributes_processed":4,"errors":[{"type":"x"}]}"#,
            r#"{"message":"success","attributes_processed":4,"errors":[{"type":"x","index":75}]}"#,
            r#"{"message":"success","attributes_processed":4,"errors":[{"type":"x","index":-1}]}"#,
        ] {
            assert!(matches!(ack(&t, 201, bad), Verdict::Retry { .. }), "{bad}");
        }
        // Not the documented success: as for every destination.
        assert!(matches!(ack(&t, 200, "<html>"), Verdict::Retry { .. }));
        assert!(matches!(
            ack(&t, 403, r#"{"message":"no users.track"}"#),
            Verdict::Reject { status: 403, .. }
        ));
    }

    #[test]
    fn a_success_that_does_not_account_for_every_object_sent_acknowledges_nothing() {
        let t = track("");
        let retried = |body: &str, sent: usize, why: &str| match ack_of(&t, 201, body, sent) {
            Verdict::Retry { reason, .. } => assert!(reason.contains(why), "{reason}"),
            other => panic!("{body} for {sent} objects: {other:?}"),
        };
        // Fewer processed than sent, nothing said about the rest.
        retried(
            r#"{"message":"success","attributes_processed":49}"#,
            50,
            "attributes_processed = 49 and 0 item errors for 50 objects",
        );
        retried(
            r#"{"message":"success","attributes_processed":47,"errors":[{"type":"x","index":3},{"type":"x","index":3}]}"#,
            50,
            "1 item errors for 50",
        );
        // No count at all.
        retried(r#"{"message":"success"}"#, 50, "attributes_processed");
        // An error naming an object the batch does not have (below the partner's 75).
        retried(
            r#"{"message":"success","attributes_processed":49,"errors":[{"type":"x","index":60}]}"#,
            50,
            "outside the batch of 50",
        );
        // Every object accounted for: acknowledged, with its refusals.
        assert_eq!(
            ack_of(
                &t,
                201,
                r#"{"message":"success","attributes_processed":49,"errors":[{"type":"x","index":49}]}"#,
                50
            ),
            Verdict::Partial(vec![Refused {
                index: 49,
                reason: "x".into(),
                no_profile: false,
            }])
        );
        assert_eq!(
            ack_of(
                &t,
                200,
                r#"{"message":"success","attributes_processed":50}"#,
                50
            ),
            Verdict::Success
        );
    }

    proptest::proptest! {
        /// Whatever a success body holds, reading it never panics, and every refusal it yields
        /// names an object a request can carry, once.
        #[test]
        fn any_success_body_is_read_without_panic(
            body in proptest::prop_oneof![
                proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                (proptest::collection::vec((0i64..200, "[a-z ]{0,12}", proptest::bool::ANY), 0..20), 0u64..100)
                    .prop_map(|(errors, processed)| {
                        let errors: Vec<_> = errors
                            .into_iter()
                            .map(|(i, t, attr)| serde_json::json!({
                                "type": t, "index": i - 20,
                                "input_array": if attr { "attributes" } else { "events" },
                            }))
                            .collect();
                        serde_json::to_vec(&serde_json::json!({
                            "message": "success", "attributes_processed": processed, "errors": errors,
                        })).unwrap()
                    }),
            ],
            sent in 1usize..=MAX_OBJECTS,
        ) {
            let t = track("");
            let verdict = t.acknowledge(&Answer {
                request: &Request::post("http://x/".into(), Default::default(), 0, 1),
                status: StatusCode::CREATED,
                headers: &HeaderMap::new(),
                body: &body,
                sent,
            });
            if let Verdict::Partial(refused) = verdict {
                proptest::prop_assert!(!refused.is_empty());
                proptest::prop_assert!(refused.windows(2).all(|w| w[0].index < w[1].index));
                proptest::prop_assert!(refused.iter().all(|r| r.index < sent));
            }
        }
    }
}
