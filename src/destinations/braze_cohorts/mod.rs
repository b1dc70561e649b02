//! Braze's Partner Cohort Import API: `POST /partners/{partner}/cohorts` to create or rename a
//! cohort, `POST /partners/{partner}/cohorts/users` with `cohort_changes` to add or remove
//! members. Both keys travel in the JSON body, so bodies are never logged.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use datafusion::arrow::array::StringArray;
use reqwest::header::HeaderMap;

mod config;

pub use config::{Config, DEFAULT_RPS, MAX_BATCH, credentials};

use super::{Destination, FromSettings, Op, base_of, body_for, own, push_ids, push_json_str};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::Request;
use crate::error::{Error, Result};

/// The registry's identity: the format earlier releases recorded in every snapshot, unchanged
/// (upgrading is not a change of workspace).
pub fn identity(dest: &DestinationConfig, key: &str) -> String {
    let c: &Config = own(dest);
    format!("{}/partners/{}#workspace-{key}", base_of(dest), c.partner)
}

/// A cohort's requests, with the constant part of every body encoded once.
pub struct Braze {
    cohorts_url: Arc<str>,
    users_url: Arc<str>,
    /// `{"partner_api_key":…,"client_secret":…,"cohort_id":…,` — shared by every body.
    head: Vec<u8>,
    display_name: String,
    /// The environment variables holding the keys (named when a key is refused).
    key_vars: (String, String),
    destination: String,
    headers: HeaderMap,
}

impl FromSettings for Braze {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let (Some(partner_api_key), Some(client_secret)) = (
            creds.secret("partner_api_key_env"),
            creds.secret("client_secret_env"),
        ) else {
            return Err(Error::Internal(
                "Cohort Import needs a partner_api_key and a client_secret".into(),
            ));
        };
        let base = dest.base_url.trim_end_matches('/');
        let partner = &dest.partner;
        let mut head = Vec::with_capacity(256);
        head.extend_from_slice(b"{\"partner_api_key\":");
        push_json_str(&mut head, partner_api_key.expose());
        head.extend_from_slice(b",\"client_secret\":");
        push_json_str(&mut head, client_secret.expose());
        head.extend_from_slice(b",\"cohort_id\":");
        push_json_str(&mut head, &cohort.cohort_id);
        head.push(b',');
        Ok(Braze {
            cohorts_url: format!("{base}/partners/{partner}/cohorts").into(),
            users_url: format!("{base}/partners/{partner}/cohorts/users").into(),
            head,
            display_name: cohort.display_name.clone(),
            key_vars: (
                dest.partner_api_key_env.clone(),
                dest.client_secret_env.clone(),
            ),
            destination: cohort.destination.clone(),
            headers: HeaderMap::new(),
        })
    }
}

impl Braze {
    /// Creates the cohort, or renames it when the display name changed (idempotent).
    pub fn create_cohort(&self, created_at: DateTime<Utc>) -> Request {
        let mut body = self.head.clone();
        body.extend_from_slice(b"\"name\":");
        push_json_str(&mut body, &self.display_name);
        body.extend_from_slice(b",\"created_at\":");
        push_json_str(
            &mut body,
            &created_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        );
        body.push(b'}');
        Request::post(self.cohorts_url.clone(), Bytes::from(body), 0, 0)
    }

    /// One `cohorts/users` request adding (or removing) `ids[range]`.
    pub fn change_members(
        &self,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        remove: bool,
    ) -> Request {
        let count = range.len();
        let mut body = body_for(ids, &range, self.head.len() + 64, 0);
        body.extend_from_slice(&self.head);
        if crate::cohort::identity::any_tagged(ids, range.clone()) {
            push_mixed(&mut body, ids, range);
        } else {
            body.extend_from_slice(b"\"cohort_changes\":[{\"user_ids\":[");
            push_ids(&mut body, ids, range, b"", b"");
            body.extend_from_slice(b"]");
        }
        if remove {
            body.extend_from_slice(b",\"should_remove\":true");
        }
        body.extend_from_slice(b"}]}");
        Request::post(self.users_url.clone(), Bytes::from(body), batch, count)
    }
}

/// `"cohort_changes":[{"user_ids":[…],"device_ids":[…],"aliases":[{…}]` (the object left open
/// for `should_remove`): the kinds of one batch, within its 1,000 ids in all.
fn push_mixed(body: &mut Vec<u8>, ids: &StringArray, range: Range<usize>) {
    use crate::cohort::identity::{Id, parse};
    let (mut users, mut devices, mut aliases) = (Vec::new(), Vec::new(), Vec::new());
    for i in range {
        match parse(ids.value(i)) {
            Id::External(id) => users.push(id),
            Id::Device(id) => devices.push(id),
            Id::Alias { name, label } => aliases.push((name, label)),
            // Refused before planning (`accepts`); a plan edited to hold one sends its raw
            // key, which names no user (Cohort Import ignores unknown ids). Malformed keys are
            // never built and refused when state is read: the same.
            Id::Braze(_) | Id::Email(_) | Id::Phone(_) | Id::Malformed(_) => {
                users.push(ids.value(i))
            }
        }
    }
    body.extend_from_slice(b"\"cohort_changes\":[{");
    let mut first = true;
    let mut field = |body: &mut Vec<u8>, name: &[u8]| {
        if !std::mem::take(&mut first) {
            body.push(b',');
        }
        body.extend_from_slice(name);
    };
    for (name, list) in [
        (&b"\"user_ids\":["[..], &users),
        (b"\"device_ids\":[", &devices),
    ] {
        if list.is_empty() {
            continue;
        }
        field(body, name);
        for (n, id) in list.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            push_json_str(body, id);
        }
        body.push(b']');
    }
    if !aliases.is_empty() {
        field(body, b"\"aliases\":[");
        for (n, (name, label)) in aliases.iter().enumerate() {
            if n > 0 {
                body.push(b',');
            }
            body.extend_from_slice(b"{\"alias_name\":");
            push_json_str(body, name);
            body.extend_from_slice(b",\"alias_label\":");
            push_json_str(body, label);
            body.push(b'}');
        }
        body.push(b']');
    }
}

impl Destination for Braze {
    fn setup(&self, at: DateTime<Utc>) -> Option<Request> {
        Some(self.create_cohort(at))
    }

    fn batch(
        &self,
        _run_id: &str,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Request {
        self.change_members(batch, ids, range, op == Op::Remove)
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// Cohort Import takes external ids, aliases and device ids, not Braze ids, emails or
    /// phone numbers.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        use crate::cohort::identity::{Id, first_tagged};
        if let Some(key) = first_tagged(ids, |id| matches!(id, Id::Email(_) | Id::Phone(_))) {
            return Err(crate::destinations::refused_kind(
                &self.destination,
                "Cohort Import",
                key,
                "user_id, alias or device id",
            ));
        }
        match first_tagged(ids, |id| matches!(id, Id::Braze(_))) {
            None => Ok(()),
            Some(key) => Err(Error::config(
                None,
                format!(
                    "destination `{}` (Cohort Import) cannot identify users by Braze id, and the \
                     cohort has members known only by one (`{}`): select their user_id, alias or \
                     device id, or send the cohort through /users/track (kind \
                     `braze_users_track`)",
                    self.destination,
                    match crate::cohort::identity::parse(key) {
                        Id::Braze(id) => id,
                        _ => key,
                    }
                    .escape_debug()
                ),
            )),
        }
    }

    /// A 401 names the environment variables that hold the keys, so the fix is obvious.
    fn explain(&self, e: Error) -> Error {
        super::explained(e, &[401], || {
            format!(
                "check {} and {} for destination `{}`",
                self.key_vars.0, self.key_vars.1, self.destination
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn braze() -> Braze {
        let dest: Config = toml::from_str(
            r#"base_url = "http://h:1/"
partner = "p"
partner_api_key_env = "A"
client_secret_env = "B""#,
        )
        .unwrap();
        let creds = credentials(Secret::new("pk\"1"), Secret::new("cs"));
        let cohort = Cohort {
            name: "c".into(),
            sql_file: "c.sql".into(),
            destination: "braze".into(),
            cohort_id: "cid".into(),
            display_name: "Nice \"name\"".into(),
            holdout: crate::config::HoldoutShare {
                share: 0.0,
                salt: "cid".into(),
            },
            identifiers: crate::cohort::identity::DEFAULT_PRIORITY.to_vec(),
        };
        Braze::new(&dest, &creds, &cohort).unwrap()
    }

    #[test]
    fn bodies_are_valid_json_with_the_right_fields() {
        let b = braze();
        let ids = StringArray::from(vec!["a", "b\"q", "c", "d"]);
        let req = b.change_members(3, &ids, 1..3, false);
        assert_eq!(&*req.url, "http://h:1/partners/p/cohorts/users");
        assert_eq!((req.batch, req.ids), (3, 2));
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["partner_api_key"], "pk\"1");
        assert_eq!(v["client_secret"], "cs");
        assert_eq!(v["cohort_id"], "cid");
        assert_eq!(
            v["cohort_changes"][0]["user_ids"],
            serde_json::json!(["b\"q", "c"])
        );
        assert!(v["cohort_changes"][0].get("should_remove").is_none());

        let rm = b.change_members(4, &ids, 0..1, true);
        let v: serde_json::Value = serde_json::from_slice(&rm.body).unwrap();
        assert_eq!(v["cohort_changes"][0]["should_remove"], true);

        let create = b.create_cohort("2026-11-28T00:00:00Z".parse().unwrap());
        assert_eq!(&*create.url, "http://h:1/partners/p/cohorts");
        let v: serde_json::Value = serde_json::from_slice(&create.body).unwrap();
        assert_eq!(v["name"], "Nice \"name\"");
        assert_eq!(v["created_at"], "2026-11-28T00:00:00Z");
    }

    proptest::proptest! {
        /// Any ids, any slice of the array (escaped or plain): the body is JSON holding exactly
        /// those ids in order.
        #[test]
        fn any_ids_round_trip_through_the_body(
            ids in proptest::collection::vec(
                proptest::prop_oneof![
                    "[0-9a-f-]{1,36}",
                    proptest::string::string_regex("(?s).{1,12}").unwrap(),
                ],
                1..40,
            ),
            cut in (0usize..40, 0usize..40),
        ) {
            let array = StringArray::from(ids.clone());
            let (a, b) = (cut.0 % (ids.len() + 1), cut.1 % (ids.len() + 1));
            let range = a.min(b)..a.max(b);
            let req = braze().change_members(1, &array, range.clone(), false);
            let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
            proptest::prop_assert_eq!(
                v["cohort_changes"][0]["user_ids"].clone(),
                serde_json::json!(ids[range].to_vec())
            );
        }
    }
}
