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

use super::faults::lock;
use super::{Abort, Resp, Shared, json_response, message, read_body};

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
    // Typed and borrowed: a 10M-id sync is 10M identity objects (a `Value` tree of each body
    // cost this shared machine more than the client's own work).
    #[derive(serde::Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        cohort_id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        op: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        identities: Vec<Identity<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Identity<'a> {
        #[serde(borrow)]
        user_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        alias_name: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        alias_label: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        device_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        braze_id: Option<std::borrow::Cow<'a, str>>,
    }
    let parsed: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return Ok(message(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a batch (cohort_id, op, identities[].user_id): {e}"),
            ));
        }
    };
    let (cohort, op) = (parsed.cohort_id.as_ref(), parsed.op.as_ref());
    // Members as the Cohort Import endpoints key them: `ID`, `alias:NAME:LABEL`, `device:ID`.
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
    let Some(ids) = ids else {
        return Ok(message(
            StatusCode::BAD_REQUEST,
            "each identity is one of {user_id}, {alias_name, alias_label}, {device_id}, {braze_id}",
        ));
    };
    let mut inner = lock(&receiver.inner);
    if !inner.keys.insert(key) {
        inner.repeats += 1;
        return Ok(message(StatusCode::OK, "already applied"));
    }
    let remove = match op {
        "add" => false,
        "remove" => true,
        _ => return Ok(message(StatusCode::BAD_REQUEST, "op must be add or remove")),
    };
    inner.batches += 1;
    inner.ids += ids.len() as u64;
    inner.log.push((cohort.to_owned(), remove, ids));
    Ok(message(StatusCode::OK, "applied"))
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
    use super::verify;
    use crate::deliver::destination::webhook::signature;

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
