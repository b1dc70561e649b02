//! `POST /_webhook`: a receiver of the `webhook` destination's contract (README,
//! "Destinations"), for benchmarks and demos: it checks each body's HMAC-SHA256 signature
//! against the secret it was started with, applies each `Idempotency-Key` once, and keeps the
//! members per cohort. `GET /_emulator/webhook` reports what it holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use hmac::{KeyInit, Mac};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::json;

use super::Shared;
use super::faults::lock;
use super::server::{Abort, Resp, json_response, message, read_body};

#[derive(Default)]
pub(crate) struct Receiver {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    members: HashMap<String, HashSet<String>>,
    /// Batches applied since the last fold (cohort, remove, ids), folded when reported (as the
    /// Cohort Import endpoints do: the hot path only appends).
    log: Vec<(String, bool, Vec<String>)>,
    keys: HashSet<String>,
    batches: u64,
    ids: u64,
    repeats: u64,
    bad_signatures: u64,
}

pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Abort> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (signature, key) = (
        header("x-cohort-bridge-signature"),
        header("idempotency-key"),
    );
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    let receiver = &shared.webhook;
    let Some(secret) = &shared.config.webhook_secret else {
        return Ok(message(
            StatusCode::NOT_FOUND,
            "no webhook secret configured",
        ));
    };
    if !verify(secret.as_bytes(), &body, signature.as_deref()) {
        lock(&receiver.inner).bad_signatures += 1;
        return Ok(message(StatusCode::UNAUTHORIZED, "bad signature"));
    }
    let Some(key) = key else {
        return Ok(message(StatusCode::BAD_REQUEST, "no Idempotency-Key"));
    };
    let (cohort, op, ids) = match parse_batch(&body) {
        Ok(batch) => batch,
        Err(why) => return Ok(message(StatusCode::BAD_REQUEST, &why)),
    };
    let mut inner = lock(&receiver.inner);
    if !inner.keys.insert(key) {
        inner.repeats += 1;
        return Ok(message(StatusCode::OK, "already applied"));
    }
    let remove = match op.as_str() {
        "add" => false,
        "remove" => true,
        _ => return Ok(message(StatusCode::BAD_REQUEST, "op must be add or remove")),
    };
    inner.batches += 1;
    inner.ids += ids.len() as u64;
    inner.log.push((cohort, remove, ids));
    Ok(message(StatusCode::OK, "applied"))
}

/// A batch body's cohort, op and members (keyed as the Cohort Import endpoints key them:
/// `ID`, `alias:NAME:LABEL`, `device:ID`, `braze:ID`); `Err` is the 400 message.
fn parse_batch(body: &[u8]) -> Result<(String, String, Vec<String>), String> {
    match scan(body) {
        Some(batch) => Ok(batch),
        None => parse(body),
    }
}

/// Any body the contract allows, through a typed, borrowed parse.
fn parse(body: &[u8]) -> Result<(String, String, Vec<String>), String> {
    use std::borrow::Cow;
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        cohort_id: Cow<'a, str>,
        #[serde(borrow)]
        op: Cow<'a, str>,
        #[serde(borrow)]
        identities: Vec<Identity<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Identity<'a> {
        #[serde(borrow)]
        user_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        alias_name: Option<Cow<'a, str>>,
        #[serde(borrow)]
        alias_label: Option<Cow<'a, str>>,
        #[serde(borrow)]
        device_id: Option<Cow<'a, str>>,
        #[serde(borrow)]
        braze_id: Option<Cow<'a, str>>,
    }
    let parsed: Body = serde_json::from_slice(body).map_err(|e| {
        format!("the body is not a batch (cohort_id, op, identities[].user_id): {e}")
    })?;
    let ids: Option<Vec<String>> = parsed
        .identities
        .iter()
        .map(|i| {
            match (
                &i.user_id,
                &i.alias_name,
                &i.alias_label,
                &i.device_id,
                &i.braze_id,
            ) {
                (Some(u), None, None, None, None) => Some(u.to_string()),
                (None, Some(n), Some(l), None, None) => Some(format!("alias:{n}:{l}")),
                (None, None, None, Some(d), None) => Some(format!("device:{d}")),
                (None, None, None, None, Some(b)) => Some(format!("braze:{b}")),
                _ => None,
            }
        })
        .collect();
    let ids = ids.ok_or(
        "each identity is one of {user_id}, {alias_name, alias_label}, {device_id}, {braze_id}",
    )?;
    Ok((parsed.cohort_id.into_owned(), parsed.op.into_owned(), ids))
}

/// The common case without a JSON tree: a body whose `identities` come last and are all
/// `{"user_id":"..."}` with no escapes, as this crate's client writes external ids. `None`
/// for anything else, which `parse` then reads (a 10M-id sync is 10M identity objects, and a
/// typed parse of each cost this shared two-core machine more than the client's own work).
/// Whenever it answers, it answers as `parse` does (a property test holds it to that).
fn scan(body: &[u8]) -> Option<(String, String, Vec<String>)> {
    const KEY: &[u8] = b",\"identities\":[";
    const OPEN: &[u8] = b"{\"user_id\":\"";
    // Inside a JSON string a quote is escaped, so the first bare `,"identities":[` is the key.
    let at = body.windows(KEY.len()).position(|w| w == KEY)?;
    #[derive(serde::Deserialize)]
    struct Head {
        cohort_id: String,
        op: String,
        // Present only if the head repeats the key (a duplicate `parse` refuses).
        identities: Option<serde::de::IgnoredAny>,
    }
    let mut head = body[..at].to_vec();
    head.push(b'}');
    let head: Head = serde_json::from_slice(&head).ok()?;
    if head.identities.is_some() {
        return None;
    }
    let mut rest = &body[at + KEY.len()..];
    let mut ids = Vec::new();
    if let Some(after) = rest.strip_prefix(b"]") {
        rest = after;
    } else {
        loop {
            rest = rest.strip_prefix(OPEN)?;
            let end = rest.iter().position(|&b| b == b'"')?;
            let id = &rest[..end];
            if id.iter().any(|&b| b == b'\\' || b < 0x20) {
                return None;
            }
            ids.push(std::str::from_utf8(id).ok()?.to_owned());
            rest = rest[end..].strip_prefix(b"\"}")?;
            match rest.split_first()? {
                (b',', after) => rest = after,
                (b']', after) => {
                    rest = after;
                    break;
                }
                _ => return None,
            }
        }
    }
    (rest.trim_ascii() == b"}").then_some((head.cohort_id, head.op, ids))
}

impl Inner {
    /// Folds the batches applied since the last fold into the members.
    fn fold(&mut self) {
        for (cohort, remove, ids) in std::mem::take(&mut self.log) {
            let members = self.members.entry(cohort).or_default();
            if remove {
                for id in &ids {
                    members.remove(id);
                }
            } else {
                members.extend(ids);
            }
        }
    }
}

impl Receiver {
    /// The members of `cohort`, sorted (keyed as [`super::EmulatorHandle::members`] keys them,
    /// Braze ids `braze:ID`).
    pub(crate) fn members(&self, cohort: &str) -> Vec<String> {
        let mut inner = lock(&self.inner);
        inner.fold();
        let mut out: Vec<String> = inner
            .members
            .get(cohort)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default();
        out.sort_unstable();
        out
    }
}

/// `GET /_emulator/webhook`: batches applied, ids, repeats, bad signatures, members per cohort.
pub(super) fn report(shared: &Shared) -> Resp {
    let mut inner = lock(&shared.webhook.inner);
    inner.fold();
    let members: BTreeMap<&str, usize> = inner
        .members
        .iter()
        .map(|(c, m)| (c.as_str(), m.len()))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({
            "batches": inner.batches, "ids": inner.ids, "repeats": inner.repeats,
            "bad_signatures": inner.bad_signatures, "members": members,
        }),
    )
}

/// Whether `header` is `sha256=<hex HMAC-SHA256 of body>`, compared in constant time (as a
/// receiver should: an early-exit compare leaks how much of a forged tag was right).
fn verify(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    if hex.len() != 64 || !hex.is_ascii() {
        return false;
    }
    let tag: Option<Vec<u8>> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect();
    let Some(tag) = tag else { return false };
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes a key of any length");
    mac.update(body);
    mac.verify_slice(&tag).is_ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::{parse, parse_batch, scan, verify};
    use crate::destinations::webhook::signature;

    /// A JSON string literal for `s`, escaped the way a client other than ours might
    /// (`\u` escapes for some plain characters too).
    fn literal(s: &str, unicode: bool) -> String {
        if !unicode {
            return serde_json::to_string(s).unwrap();
        }
        let mut out = String::from("\"");
        for c in s.chars() {
            out.push_str(&format!("\\u{:04x}", c as u32 & 0xffff));
        }
        out + "\""
    }

    fn identity() -> impl Strategy<Value = String> {
        let text = "[a-z0-9\"\\\\é:_-]{0,6}";
        prop_oneof![
            6 => (text, any::<bool>()).prop_map(|(u, e)| format!("{{\"user_id\":{}}}", literal(&u, e))),
            1 => (text, text).prop_map(|(n, l)| format!(
                "{{\"alias_name\":{},\"alias_label\":{}}}", literal(&n, false), literal(&l, false))),
            1 => text.prop_map(|d| format!("{{\"device_id\":{}}}", literal(&d, false))),
            1 => text.prop_map(|u| format!("{{ \"user_id\" : {} }}", literal(&u, false))),
            1 => Just("{\"user_id\":1}".to_string()),
            1 => Just("{}".to_string()),
        ]
    }

    /// Bodies around the contract's shape: fields in any order, repeated or nested keys,
    /// odd spacing, escapes, and random bytes cut out or flipped.
    fn body() -> impl Strategy<Value = Vec<u8>> {
        let field = prop_oneof![
            Just("\"cohort_id\":\"vip\"".to_string()),
            Just("\"cohort_id\":\"v\\\"ip\"".to_string()),
            Just("\"op\":\"add\"".to_string()),
            Just("\"op\":\"remove\"".to_string()),
            Just("\"run_id\":\"r-1\"".to_string()),
            Just("\"batch\":7".to_string()),
            Just("\"meta\":{\"identities\":[]}".to_string()),
            Just("\"identit\\u0069es\":[]".to_string()),
            Just("\"cohort\":\",\\\"identities\\\":[\"".to_string()),
        ];
        (
            proptest::collection::vec(field, 0..7),
            proptest::collection::vec(identity(), 0..5),
            any::<bool>(),
            proptest::option::of((any::<prop::sample::Index>(), any::<u8>(), any::<bool>())),
        )
            .prop_map(|(mut fields, ids, last, damage)| {
                let identities = format!("\"identities\":[{}]", ids.join(","));
                if last {
                    fields.push(identities);
                } else {
                    fields.insert(0, identities);
                }
                let mut body = format!("{{{}}}", fields.join(",")).into_bytes();
                if let Some((at, byte, cut)) = damage {
                    let i = at.index(body.len());
                    if cut {
                        body.remove(i);
                    } else {
                        body[i] = byte;
                    }
                }
                body
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]
        /// The fast path never answers differently from the full parse.
        #[test]
        fn the_scan_answers_only_as_the_full_parse_does(body in body()) {
            if let Some(scanned) = scan(&body) {
                prop_assert_eq!(Ok(scanned), parse(&body), "{}", String::from_utf8_lossy(&body));
            }
        }
    }

    #[test]
    fn the_clients_external_id_batches_take_the_fast_path() {
        let hook = crate::destinations::webhook::tests::hook_named("V\"IPs, \"identities\":[");
        let ids = datafusion::arrow::array::StringArray::from(vec!["a", "6f1c-9e", "é", "b\"q"]);
        use crate::destinations::{Destination, Op};
        let plain = hook.batch("run-1", 3, &ids, 0..3, Op::Add);
        let expected = (
            "vip".to_string(),
            "add".to_string(),
            vec!["a".into(), "6f1c-9e".into(), "é".into()],
        );
        assert_eq!(scan(&plain.body), Some(expected.clone()));
        assert_eq!(parse_batch(&plain.body), Ok(expected));
        // An escaped id is not scanned; the full parse reads it.
        let escaped = hook.batch("run-1", 4, &ids, 3..4, Op::Remove);
        assert_eq!(scan(&escaped.body), None);
        assert_eq!(
            parse_batch(&escaped.body),
            Ok(("vip".into(), "remove".into(), vec!["b\"q".into()]))
        );
    }

    #[test]
    fn verifies_the_client_signature_and_nothing_else() {
        let sig = signature(b"secret", b"{\"a\":1}");
        assert!(verify(b"secret", b"{\"a\":1}", Some(&sig)));
        assert!(!verify(b"secret", b"{\"a\":2}", Some(&sig)));
        assert!(!verify(b"other", b"{\"a\":1}", Some(&sig)));
        assert!(!verify(b"secret", b"{\"a\":1}", Some(&sig[7..])));
        assert!(!verify(
            b"secret",
            b"{\"a\":1}",
            Some(&sig[..sig.len() - 2])
        ));
        assert!(!verify(b"secret", b"{\"a\":1}", None));
        let mut flipped = sig.clone().into_bytes();
        let last = flipped.last_mut().unwrap();
        *last = if *last == b'0' { b'1' } else { b'0' };
        assert!(!verify(
            b"secret",
            b"{\"a\":1}",
            Some(std::str::from_utf8(&flipped).unwrap())
        ));
    }
}
