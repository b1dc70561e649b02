//! `webhook`: each batch as a JSON document POSTed to any URL, for tools without a native
//! destination.
//!
//! The body: `{"cohort_id", "cohort", "op": "add"|"remove", "run_id", "batch", "identities":
//! [{"user_id": …}, …]}`. Every request carries `X-Cohort-Bridge-Signature: sha256=<hex>`, the
//! HMAC-SHA256 of the exact body bytes under the secret in `secret_env`, and `Idempotency-Key:
//! <run_id>-<batch>`, the same on every retry and after a resume (the run id is the plan's, and
//! batches are numbered from the plan), so a receiver can drop what it already applied. Static
//! headers come from `headers`, secret ones from `header_env` (values read from the
//! environment). Any 2xx acknowledges; redirects are never followed; 408, 425, 429 and 5xx are
//! retried, other answers end the run.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::StringArray;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use sha2::Sha256;

mod config;

pub use config::{Config, DEFAULT_BATCH, MAX_BATCH, MIN_SECRET_BYTES, credentials};

use super::{Destination, FromSettings, Op, base_of, body_for, push_identities, push_json_str};
use crate::config::{Cohort, Credentials, DestinationConfig};
use crate::deliver::Request;
use crate::deliver::retry::{self, Answer, Verdict};
use crate::error::{Error, Result};

/// The registry's identity: a receiver is its URL (its query included: it may select a
/// tenant); the signing secret can rotate without making it another destination.
pub fn identity(dest: &DestinationConfig, _key: &str) -> String {
    format!("webhook:{}", base_of(dest))
}

/// The signature header.
pub const SIGNATURE: &str = "x-cohort-bridge-signature";
/// The idempotency header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

pub struct Webhook {
    url: Arc<str>,
    headers: HeaderMap,
    /// `{"cohort_id":…,"cohort":…,` — shared by every body.
    head: Vec<u8>,
    secret: crate::config::Secret,
    secret_var: String,
    destination: String,
}

impl FromSettings for Webhook {
    type Settings = Config;

    fn new(dest: &Config, creds: &Credentials, cohort: &Cohort) -> Result<Self> {
        let (Some(secret), headers) = (creds.secret("secret_env"), &creds.headers) else {
            return Err(Error::Internal("a webhook needs its signing secret".into()));
        };
        let key = |name: &str| format!("destinations.{}.{name}", cohort.destination);
        let mut map = HeaderMap::new();
        let bad = |what: String| Error::config(None, what);
        for (name, value, secret) in dest
            .headers
            .iter()
            .map(|(n, v)| (n, v.as_str(), false))
            .chain(headers.iter().map(|(n, v)| (n, v.expose(), true)))
        {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad(format!("{}: `{name}` is not a header name", key("headers"))))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                bad(format!(
                    "{}: the value of `{name}` is not a valid header value",
                    key(if secret { "header_env" } else { "headers" })
                ))
            })?;
            value.set_sensitive(secret);
            map.insert(header, value);
        }
        let mut head = Vec::with_capacity(128);
        head.extend_from_slice(b"{\"cohort_id\":");
        push_json_str(&mut head, &cohort.cohort_id);
        head.extend_from_slice(b",\"cohort\":");
        push_json_str(&mut head, &cohort.display_name);
        head.push(b',');
        Ok(Webhook {
            url: dest.base_url.as_str().into(),
            headers: map,
            head,
            secret: secret.clone(),
            secret_var: dest.secret_env.clone(),
            destination: cohort.destination.clone(),
        })
    }
}

/// `sha256=<hex>` of `body` under `secret`: what [`SIGNATURE`] carries.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// An HTML content type, or a body that opens with a tag.
fn looks_like_html(answer: &Answer<'_>) -> bool {
    let typed = crate::deliver::headers::header_str(answer.headers, "content-type")
        .is_some_and(|t| t.to_ascii_lowercase().contains("html"));
    typed || answer.body.trim_ascii_start().first() == Some(&b'<')
}

impl Destination for Webhook {
    fn setup(&self, _at: DateTime<Utc>) -> Option<Request> {
        None
    }

    fn batch(
        &self,
        run_id: &str,
        batch: u64,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Request {
        let count = range.len();
        let mut body = body_for(ids, &range, self.head.len() + 128, 13);
        body.extend_from_slice(&self.head);
        body.extend_from_slice(b"\"op\":");
        push_json_str(&mut body, op.name());
        body.extend_from_slice(b",\"run_id\":");
        push_json_str(&mut body, run_id);
        body.extend_from_slice(format!(",\"batch\":{batch},\"identities\":[").as_bytes());
        push_identities(&mut body, ids, range, "user_id", None, b"}");
        body.extend_from_slice(b"]}");
        let mut headers = HeaderMap::new();
        let mut sig = HeaderValue::from_str(&signature(self.secret.expose().as_bytes(), &body))
            .expect("hex is a valid header value");
        sig.set_sensitive(true);
        headers.insert(HeaderName::from_static(SIGNATURE), sig);
        headers.insert(
            HeaderName::from_static(IDEMPOTENCY_KEY),
            HeaderValue::from_str(&format!("{run_id}-{batch}"))
                .unwrap_or_else(|_| HeaderValue::from_static("invalid-run-id")),
        );
        Request {
            headers,
            ..Request::post(self.url.clone(), Bytes::from(body), batch, count)
        }
    }

    fn headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// A 2xx acknowledges (a receiver documents no body), unless its body is HTML: a login
    /// page, a captive portal or a proxy's error page answers so, never a receiver that
    /// applied the batch, and taking it for delivery would commit what nobody holds. It is
    /// retried, then fails the run. Everything else as for every destination.
    fn acknowledge(&self, answer: &Answer<'_>) -> Verdict {
        if !answer.status.is_success() {
            return retry::classify(answer);
        }
        if looks_like_html(answer) {
            return Verdict::Retry {
                reason: format!(
                    "HTTP {} with an HTML body ({}), not a receiver's acknowledgement: {}",
                    answer.status.as_u16(),
                    retry::content_type(answer.headers),
                    retry::first_bytes(answer.body)
                ),
                asked: None,
            };
        }
        Verdict::Success
    }

    fn explain(&self, e: Error) -> Error {
        super::explained(e, &[401, 403], || {
            format!(
                "the receiver refused the request: check destination `{}`'s \
                     header_env variables and the signing secret in {}",
                self.destination, self.secret_var
            )
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::config::Secret;

    fn hook() -> Webhook {
        hook_named("V\"IPs")
    }

    /// A webhook destination for a cohort shown as `display_name` (the emulator's receiver
    /// tests read its bodies too).
    pub(crate) fn hook_named(display_name: &str) -> Webhook {
        let dest: Config = toml::from_str(
            r#"base_url = "http://h:1/hook?x=1"
secret_env = "S"
headers = { "X-Team" = "growth" }
header_env = { "Authorization" = "A" }"#,
        )
        .unwrap();
        let creds = credentials(
            Secret::new("s3cret"),
            vec![("Authorization".into(), Secret::new("Bearer t0ken"))],
        );
        let cohort = Cohort {
            name: "c".into(),
            sql_file: "c.sql".into(),
            destination: "hook".into(),
            cohort_id: "vip".into(),
            display_name: display_name.into(),
            holdout: crate::config::HoldoutShare {
                share: 0.0,
                salt: "vip".into(),
            },
            identifiers: crate::cohort::identity::DEFAULT_PRIORITY.to_vec(),
        };
        Webhook::new(&dest, &creds, &cohort).unwrap()
    }

    #[test]
    fn bodies_are_signed_and_keyed_by_run_and_batch() {
        let h = hook();
        let ids = StringArray::from(vec!["a", "b\"q", "c"]);
        let req = h.batch("run-1", 7, &ids, 1..3, Op::Remove);
        assert_eq!(&*req.url, "http://h:1/hook?x=1");
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"cohort_id": "vip", "cohort": "V\"IPs", "op": "remove",
                "run_id": "run-1", "batch": 7,
                "identities": [{"user_id": "b\"q"}, {"user_id": "c"}]})
        );
        assert_eq!(req.headers[IDEMPOTENCY_KEY], "run-1-7");
        assert_eq!(
            req.headers[SIGNATURE].to_str().unwrap(),
            signature(b"s3cret", &req.body)
        );
        assert!(req.headers[SIGNATURE].is_sensitive());
        // The same batch again (a retry, a resume): the same bytes, key and signature.
        let again = h.batch("run-1", 7, &ids, 1..3, Op::Remove);
        assert_eq!(
            (again.body, &again.headers),
            (req.body.clone(), &req.headers)
        );
        assert_eq!(h.headers()["x-team"], "growth");
        assert!(h.headers()["authorization"].is_sensitive());
    }

    #[test]
    fn the_signature_is_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn a_2xx_acknowledges_unless_it_is_html() {
        let h = hook();
        let verdict = |status: u16, content_type: Option<&str>, body: &str| {
            let mut headers = HeaderMap::new();
            if let Some(t) = content_type {
                headers.insert("content-type", HeaderValue::from_str(t).unwrap());
            }
            h.acknowledge(&Answer {
                request: &Request::post("http://x/".into(), Default::default(), 0, 1),
                status: reqwest::StatusCode::from_u16(status).unwrap(),
                headers: &headers,
                body: body.as_bytes(),
                sent: 1,
            })
        };
        assert_eq!(verdict(200, None, ""), Verdict::Success);
        assert_eq!(verdict(204, None, ""), Verdict::Success);
        assert_eq!(
            verdict(202, Some("application/json"), "{\"ok\":true}"),
            Verdict::Success
        );
        assert_eq!(
            verdict(200, Some("text/plain"), "applied"),
            Verdict::Success
        );
        for (t, body) in [
            (Some("text/html; charset=utf-8"), "<html>sign in</html>"),
            (Some("TEXT/HTML"), ""),
            (None, "  <!doctype html><p>portal"),
        ] {
            assert!(
                matches!(verdict(200, t, body), Verdict::Retry { .. }),
                "{t:?} {body}"
            );
        }
        assert!(matches!(verdict(503, None, ""), Verdict::Retry { .. }));
        assert!(matches!(
            verdict(401, None, ""),
            Verdict::Reject { status: 401, .. }
        ));
    }
}
