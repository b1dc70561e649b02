//! Customer.io's Track API v1 manual segments (`docs/partners/customerio.md`): a cohort is the
//! membership of one manual segment (`segment_id`), changed with
//! `POST /api/v1/segments/{segment_id}/add_customers` and `/remove_customers`, HTTP Basic auth
//! with the workspace's Site ID and Track API key, `{"ids": [...]}` of at most 1,000 values of
//! the kind the query's `id_type` names.
//!
//! Members are external ids (`id_type=id`) or emails (`id_type=email`); the other kinds are
//! refused by name before planning (`accepts`). One request takes one kind, so a batch whose
//! sorted keys hold both is sent as one request per run of a kind, chained
//! (`Verdict::Continue`): the batch is acknowledged when its last run is. Every run is a set
//! operation, so a chain resent from its start after a crash changes nothing twice.
//!
//! Only 200 with `{}` acknowledges. Customer.io reports nothing per id: people unknown to the
//! workspace are ignored silently, so there are no item-level refusals to dead-letter. A 3xx
//! is never followed (the Basic credentials would travel with it): from the US host it means
//! the workspace is in the EU region.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

mod config;

pub use config::{BURST, Config, DEFAULT_RPS, EU_URL, MAX_BATCH, Region, US_URL, credentials};

use super::{Destination, FromSettings, Op, base_of, body_for, push_json_str};
use crate::cohort::identity::{Id, first_tagged, parse};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::retry::{self, Answer, Verdict};
use crate::deliver::{Request, Step};
use crate::error::{Error, Result};

/// The registry's identity: the endpoint, the segment and the Site ID's fingerprint.
pub fn identity(dest: &DestinationConfig, key: &str) -> String {
    let segment = super::own::<Config>(dest).segment_id;
    format!("{}/api/v1/segments/{segment}#site-{key}", base_of(dest))
}

/// The `id_type` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdType {
    Id,
    Email,
}

impl IdType {
    fn of(key: &str) -> IdType {
        match parse(key) {
            Id::Email(_) => IdType::Email,
            // `accepts` let nothing else through.
            _ => IdType::Id,
        }
    }
}

/// One request of a batch: the ids of one kind.
#[derive(Debug)]
struct Part {
    url: Arc<str>,
    body: Bytes,
}

/// Where a request is in its batch's chain: the batch's parts, and which one it sends.
#[derive(Debug)]
struct Chain {
    parts: Arc<[Part]>,
    index: usize,
}

/// A cohort's segment requests, with the constant parts built once.
pub struct Customerio {
    /// By op and `id_type`: `…/add_customers?id_type=id`, …
    add: [Arc<str>; 2],
    remove: [Arc<str>; 2],
    headers: HeaderMap,
    segment_id: i64,
    site_var: String,
    key_var: String,
    destination: String,
    eu: bool,
}

impl FromSettings for Customerio {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let (Some(site_id), Some(api_key)) =
            (creds.secret("site_id_env"), creds.secret("api_key_env"))
        else {
            return Err(Error::Internal(
                "customerio needs a Site ID and a Track API key".into(),
            ));
        };
        let basic = base64::engine::general_purpose::STANDARD.encode(format!(
            "{}:{}",
            site_id.expose(),
            api_key.expose()
        ));
        let mut auth = HeaderValue::from_str(&format!("Basic {basic}"))
            .map_err(|_| Error::Internal("a base64 header value is ASCII".into()))?;
        auth.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, auth);
        let base = format!("{}/api/v1/segments/{}", dest.endpoint(), dest.segment_id);
        let url = |op: &str, t: &str| -> Arc<str> { format!("{base}/{op}?id_type={t}").into() };
        Ok(Customerio {
            add: [url("add_customers", "id"), url("add_customers", "email")],
            remove: [
                url("remove_customers", "id"),
                url("remove_customers", "email"),
            ],
            headers,
            segment_id: dest.segment_id,
            site_var: dest.site_id_env.clone(),
            key_var: dest.api_key_env.clone(),
            destination: cohort.destination.clone(),
            eu: dest.region == Some(Region::Eu),
        })
    }
}

impl Customerio {
    fn url(&self, op: Op, t: IdType) -> Arc<str> {
        let urls = match op {
            Op::Add => &self.add,
            Op::Remove => &self.remove,
        };
        urls[usize::from(t == IdType::Email)].clone()
    }

    /// The request sending `chain`'s part at `index` (every part says the batch's count).
    fn request(&self, batch: u64, ids: usize, parts: Arc<[Part]>, index: usize) -> Request {
        let part = &parts[index];
        let mut request = Request::post(part.url.clone(), part.body.clone(), batch, ids);
        request.step = Some(Step::new(Chain { parts, index }));
        request
    }
}

/// `{"ids":[…]}` of `ids[range]`, all of kind `t`, as their values.
fn body(ids: &StringArray, range: Range<usize>, t: IdType) -> Bytes {
    let mut out = body_for(ids, &range, 16, 0);
    out.extend_from_slice(b"{\"ids\":[");
    for (n, i) in range.enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let key = ids.value(i);
        let value = match (t, parse(key)) {
            (IdType::Email, Id::Email(v)) | (IdType::Id, Id::External(v)) => v,
            // `accepts` let no other kind through, and runs hold one kind.
            _ => key,
        };
        push_json_str(&mut out, value);
    }
    out.extend_from_slice(b"]}");
    Bytes::from(out)
}

/// `range` cut into runs of one `id_type`, in order (sorted keys put each kind together, so a
/// batch is one run but for the batches at a boundary).
fn runs(ids: &StringArray, range: Range<usize>) -> Vec<(IdType, Range<usize>)> {
    let mut out: Vec<(IdType, Range<usize>)> = Vec::new();
    for i in range {
        let t = IdType::of(ids.value(i));
        match out.last_mut() {
            Some((last, r)) if *last == t => r.end = i + 1,
            _ => out.push((t, i..i + 1)),
        }
    }
    out
}

/// Whether `body` is the documented success: an empty JSON object.
fn empty_object(body: &[u8]) -> bool {
    matches!(
        serde_json::from_slice::<serde_json::Value>(body),
        Ok(serde_json::Value::Object(m)) if m.is_empty()
    )
}

impl Destination for Customerio {
    /// The segment must exist already (it is made in the dashboard or the App API).
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
        let parts: Arc<[Part]> = runs(ids, range)
            .into_iter()
            .map(|(t, r)| Part {
                url: self.url(op, t),
                body: body(ids, r, t),
            })
            .collect();
        self.request(batch, count, parts, 0)
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    fn burst(&self) -> Option<usize> {
        Some(BURST)
    }

    /// 200 with `{}` acknowledges a part; the batch is acknowledged when its last part is.
    /// Any other 2xx (an empty body, an HTML page) acknowledges nothing and is retried.
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        let status = answer.status.as_u16();
        if !answer.status.is_success() {
            return retry::classify(answer);
        }
        if status != 200 || !empty_object(answer.body) {
            return Verdict::Retry {
                reason: format!(
                    "HTTP {status} whose body is not the documented success `{{}}` ({}): {}",
                    retry::content_type(answer.headers),
                    retry::first_bytes(answer.body)
                ),
                asked: None,
            };
        }
        let chain = answer.request.step.as_ref().and_then(|s| s.get::<Chain>());
        match chain {
            Some(c) if c.index + 1 < c.parts.len() => Verdict::Continue {
                next: Box::new(self.request(
                    answer.request.batch,
                    answer.request.ids,
                    c.parts.clone(),
                    c.index + 1,
                )),
                after: Duration::ZERO,
                refused: Vec::new(),
            },
            _ => Verdict::Success,
        }
    }

    /// Customer.io's segment endpoints take ids (`id_type=id`) and emails; they do not take
    /// phone numbers (the Track v1 docs send those to v2), and Braze's aliases, device ids and
    /// Braze ids mean nothing there.
    fn accepts(&self, ids: &StringArray) -> Result<()> {
        match first_tagged(ids, |id| !matches!(id, Id::External(_) | Id::Email(_))) {
            None => Ok(()),
            Some(key) => Err(super::refused_kind(
                &self.destination,
                "customerio",
                key,
                "user_id or email",
            )),
        }
    }

    fn explain(&self, e: Error) -> Error {
        let e = super::explained(e, &[401], || {
            format!(
                "check {} and {} for destination `{}`: the workspace's Site ID \
                     and a Track API key of it, from Workspace Settings > API and webhook \
                     credentials",
                self.site_var, self.key_var, self.destination
            )
        });
        let e = super::explained(e, &[404], || {
            format!(
                "destination `{}`: segment_id {} must be a manual segment of this workspace; \
                 create it in Segments first",
                self.destination, self.segment_id
            )
        });
        match e {
            Error::Config { file, message } if message.contains("redirecting to") => {
                let region = if self.eu {
                    "the workspace may be in the US region: set `region = \"us\"`"
                } else {
                    "Customer.io redirects an EU workspace called on the US host: set \
                     `region = \"eu\"`"
                };
                Error::Config {
                    file,
                    message: format!("{message} (destination `{}`: {region})", self.destination),
                }
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::identity;
    use crate::config::Secret;
    use reqwest::StatusCode;

    fn settings(extra: &str) -> Config {
        toml::from_str(&format!(
            "site_id_env = \"S\"\napi_key_env = \"K\"\nsegment_id = 7\n{extra}"
        ))
        .unwrap()
    }

    fn cohort() -> Cohort {
        crate::destinations::test_cohort("cio", "c", "C")
    }

    fn cio(extra: &str) -> Customerio {
        let creds = credentials(Secret::new("site-1"), Secret::new("key-1"));
        Customerio::new(&settings(extra), &creds, &cohort()).unwrap()
    }

    fn keys(members: &[&str]) -> StringArray {
        let mut keys: Vec<String> = members
            .iter()
            .map(|m| match m.strip_prefix("email:") {
                Some(e) => identity::email(e),
                None => identity::external(m).into_owned(),
            })
            .collect();
        keys.sort();
        StringArray::from(keys)
    }

    fn answer<'a>(
        status: u16,
        body: &'a [u8],
        headers: &'a HeaderMap,
        request: &'a Request,
    ) -> Answer<'a> {
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers,
            body,
            sent: request.ids,
            request,
        }
    }

    fn json(request: &Request) -> serde_json::Value {
        serde_json::from_slice(&request.body).unwrap()
    }

    #[test]
    fn a_batch_of_one_kind_is_one_request() {
        let d = cio("region = \"us\"");
        let ids = keys(&["u2", "u1", "x\"y"]);
        let r = d.batch("run", 3, &ids, 0..3, Op::Add);
        assert_eq!(
            &*r.url,
            "https://track.customer.io/api/v1/segments/7/add_customers?id_type=id"
        );
        assert_eq!(json(&r), serde_json::json!({"ids": ["u1", "u2", "x\"y"]}));
        assert_eq!((r.batch, r.ids), (3, 3));
        let h = HeaderMap::new();
        assert_eq!(d.acknowledge(&answer(200, b"{}", &h, &r)), Verdict::Success);
        // The Basic credentials: base64 of `site:key`, marked sensitive.
        let auth = &d.headers()[AUTHORIZATION];
        assert_eq!(auth, "Basic c2l0ZS0xOmtleS0x");
        assert!(auth.is_sensitive());
    }

    #[test]
    fn a_mixed_batch_is_a_chain_of_one_request_per_kind() {
        let d = cio("region = \"eu\"");
        let ids = keys(&["u1", "email:a@b.c", "u2", "email:d@e.f"]);
        let first = d.batch("run", 1, &ids, 0..4, Op::Remove);
        // Emails (tagged keys) sort first.
        assert_eq!(
            &*first.url,
            "https://track-eu.customer.io/api/v1/segments/7/remove_customers?id_type=email"
        );
        assert_eq!(json(&first), serde_json::json!({"ids": ["a@b.c", "d@e.f"]}));
        let h = HeaderMap::new();
        let Verdict::Continue {
            next,
            after,
            refused,
        } = d.acknowledge(&answer(200, b"{ }", &h, &first))
        else {
            panic!("the first part continues");
        };
        assert_eq!((after, refused.len()), (Duration::ZERO, 0));
        assert_eq!(
            &*next.url,
            "https://track-eu.customer.io/api/v1/segments/7/remove_customers?id_type=id"
        );
        assert_eq!(json(&next), serde_json::json!({"ids": ["u1", "u2"]}));
        assert_eq!((next.batch, next.ids), (1, 4));
        // A retried part is the same request; the last part settles the batch.
        assert!(matches!(
            d.acknowledge(&answer(503, b"", &h, &next)),
            Verdict::Retry { .. }
        ));
        assert_eq!(
            d.acknowledge(&answer(200, b"{}", &h, &next)),
            Verdict::Success
        );
    }

    #[test]
    fn only_200_with_an_empty_object_acknowledges() {
        let d = cio("base_url = \"http://127.0.0.1:9/\"");
        let ids = keys(&["u1"]);
        let r = d.batch("run", 0, &ids, 0..1, Op::Add);
        assert_eq!(
            &*r.url,
            "http://127.0.0.1:9/api/v1/segments/7/add_customers?id_type=id"
        );
        let h = HeaderMap::new();
        for (status, body) in [
            (200, &b""[..]),
            (200, b"<html>maintenance</html>"),
            (200, b"{\"message\":\"success\"}"),
            (200, b"[]"),
            (201, b"{}"),
            (204, b""),
        ] {
            let v = d.acknowledge(&answer(status, body, &h, &r));
            assert!(
                matches!(&v, Verdict::Retry { reason, .. } if reason.contains("documented success")),
                "{status} {body:?}: {v:?}"
            );
        }
        assert!(matches!(
            d.acknowledge(&answer(401, b"", &h, &r)),
            Verdict::Reject { status: 401, .. }
        ));
        assert!(matches!(
            d.acknowledge(&answer(429, b"", &h, &r)),
            Verdict::Retry { .. }
        ));
        let mut loc = HeaderMap::new();
        loc.insert(
            "location",
            HeaderValue::from_static("https://track-eu.customer.io/x"),
        );
        assert!(matches!(
            d.acknowledge(&answer(302, b"", &loc, &r)),
            Verdict::Redirect { status: 302, .. }
        ));
    }

    #[test]
    fn kinds_other_than_ids_and_emails_are_refused_by_name() {
        let d = cio("region = \"us\"");
        assert!(d.accepts(&keys(&["u1", "email:a@b.c"])).is_ok());
        for (key, named) in [
            (identity::phone("+14155552671"), "by phone"),
            (identity::device("dev-1"), "by device_id"),
            (identity::alias("n", "l"), "by alias"),
            (identity::braze("b1"), "by braze_id"),
        ] {
            let ids = StringArray::from(vec![key, "u1".to_owned()]);
            let err = d.accepts(&ids).unwrap_err().to_string();
            assert!(err.contains(named) && err.contains("`cio`"), "{err}");
        }
    }

    #[test]
    fn a_redirect_names_the_region_and_a_refused_key_its_variables() {
        let d = cio("region = \"us\"");
        let e = d.explain(Error::config(
            None,
            "batch 1: the partner answered HTTP 302, redirecting to https://track-eu.customer.io",
        ));
        assert!(e.to_string().contains("region = \"eu\""), "{e}");
        let e = d.explain(Error::PartnerRejected {
            what: "batch 1".into(),
            status: 401,
            message: "Unauthorized".into(),
        });
        let text = e.to_string();
        assert!(text.contains(" S ") && text.contains(" K "), "{text}");
        assert!(
            !text.contains("site-1") && !text.contains("key-1"),
            "{text}"
        );
    }

    #[test]
    fn config_problems_name_their_keys() {
        let problems = |extra: &str| {
            let mut out = Vec::new();
            crate::config::KindConfig::problems(&settings(extra), "destinations.cio", &mut out);
            out.join("\n")
        };
        assert_eq!(problems("region = \"us\""), "");
        assert!(problems("").contains("destinations.cio.region: required"));
        assert!(problems("region = \"eu\"\nbase_url = \"http://x\"").contains("not both"));
        assert!(problems("base_url = \"ftp://x\"").contains("destinations.cio.base_url"));
        let bad: Config = toml::from_str(
            "region = \"us\"\nsite_id_env = \"S\"\napi_key_env = \"K\"\nsegment_id = 0",
        )
        .unwrap();
        let mut out = Vec::new();
        crate::config::KindConfig::problems(&bad, "destinations.cio", &mut out);
        assert!(out[0].contains("destinations.cio.segment_id"), "{out:?}");
        assert!(
            toml::from_str::<Config>(
                "region = \"mars\"\nsite_id_env = \"S\"\napi_key_env = \"K\"\nsegment_id = 1"
            )
            .is_err()
        );
    }
}
