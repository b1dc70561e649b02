//! `POST /_webhook`: a receiver of the `webhook` destination's contract (README,
//! "Destinations"), for benchmarks and demos: it checks each body's HMAC-SHA256 signature
//! against the secret it was started with, applies each `Idempotency-Key` once, and keeps the
//! members per cohort. `GET /_emulator/webhook` reports what it holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use hmac::{KeyInit, Mac};
use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Value, json};

use super::faults::lock;
use super::{Abort, Resp, Shared, json_response, message, read_body};

#[derive(Default)]
pub(crate) struct Receiver {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    members: HashMap<String, HashSet<String>>,
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
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes a key of any length");
    mac.update(&body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if signature.as_deref() != Some(format!("sha256={expected}").as_str()) {
        lock(&receiver.inner).bad_signatures += 1;
        return Ok(message(StatusCode::UNAUTHORIZED, "bad signature"));
    }
    let Some(key) = key else {
        return Ok(message(StatusCode::BAD_REQUEST, "no Idempotency-Key"));
    };
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return Ok(message(StatusCode::BAD_REQUEST, "the body is not JSON"));
    };
    let (Some(cohort), Some(op), Some(identities)) = (
        v["cohort_id"].as_str(),
        v["op"].as_str(),
        v["identities"].as_array(),
    ) else {
        return Ok(message(
            StatusCode::BAD_REQUEST,
            "cohort_id, op and identities are required",
        ));
    };
    let ids: Option<Vec<&str>> = identities.iter().map(|i| i["user_id"].as_str()).collect();
    let Some(ids) = ids else {
        return Ok(message(
            StatusCode::BAD_REQUEST,
            "every identity needs a user_id",
        ));
    };
    let mut inner = lock(&receiver.inner);
    if !inner.keys.insert(key) {
        inner.repeats += 1;
        return Ok(message(StatusCode::OK, "already applied"));
    }
    inner.batches += 1;
    inner.ids += ids.len() as u64;
    let members = inner.members.entry(cohort.to_owned()).or_default();
    match op {
        "add" => members.extend(ids.into_iter().map(str::to_owned)),
        "remove" => {
            for id in ids {
                members.remove(id);
            }
        }
        _ => return Ok(message(StatusCode::BAD_REQUEST, "op must be add or remove")),
    }
    Ok(message(StatusCode::OK, "applied"))
}

/// `GET /_emulator/webhook`: batches applied, ids, repeats, bad signatures, members per cohort.
pub(super) fn report(shared: &Shared) -> Resp {
    let inner = lock(&shared.webhook.inner);
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
