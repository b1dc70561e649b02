//! `POST /users/track`, as `../shared/partner-api.md` describes it: custom attributes on user
//! profiles, a workspace REST API key as `Authorization: Bearer`, at most 75 attribute objects
//! per request, item-level `errors` in a success response (unknown ids under
//! `_update_existing_only`, objects that do not name exactly one user), the rate-limit headers
//! and the same seeded faults as the Cohort Import endpoints.
//!
//! Written from the contract page, not from the client: it parses with `serde_json::Value` and
//! shares no request code with `deliver`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};

use super::Shared;
use super::admission::{Admitted, admit, with_rate_headers};
use super::faults::{FaultKind, lock};
use super::server::{Abort, Resp, json_response, message, read_body};

/// Attribute objects per request.
pub const MAX_OBJECTS: usize = 75;

/// Shards of the profile map: a request locks one shard per object, and a shard growing (a
/// rehash of its part of 10M profiles) stalls only the requests that touch it (one map of 10M
/// stalled every request for the whole rehash, several times per 10M-member sync).
const SHARDS: usize = 64;

type Shard = HashMap<String, Map<String, Value>>;

/// Profiles by user key (`external_id`, `alias:NAME:LABEL` or `braze:ID`): their attributes.
pub(crate) struct Profiles {
    shards: Vec<Mutex<Shard>>,
    /// Users whose profile was deleted (`EmulatorHandle::delete_profiles`, as a workspace
    /// deletes users on request): unknown again, so an update-only object naming one is an
    /// item-level error, until a write that may create profiles creates it anew.
    deleted: Mutex<HashSet<String>>,
}

impl Default for Profiles {
    fn default() -> Self {
        Profiles {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            deleted: Mutex::default(),
        }
    }
}

impl Profiles {
    fn shard(&self, user: &str) -> &Mutex<Shard> {
        &self.shards[(crate::hash::fnv1a64(user.as_bytes()) % SHARDS as u64) as usize]
    }

    /// Users whose boolean `attribute` is true, sorted.
    pub(crate) fn with_true(&self, attribute: &str) -> Vec<String> {
        self.select(|attrs| attrs.get(attribute) == Some(&Value::Bool(true)))
    }

    /// Users whose array `attribute` holds `value`, sorted.
    pub(crate) fn with_element(&self, attribute: &str, value: &str) -> Vec<String> {
        self.select(|attrs| {
            attrs
                .get(attribute)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(value)))
        })
    }

    /// Deletes the profiles of `users` (user keys as `all` names them): they are unknown from
    /// now on.
    pub(crate) fn delete(&self, users: &[String]) {
        for user in users {
            let mut shard = lock(self.shard(user));
            shard.remove(user);
            lock(&self.deleted).insert(user.clone());
        }
    }

    /// Every profile's attributes.
    pub(crate) fn all(&self) -> BTreeMap<String, Map<String, Value>> {
        self.shards
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn select(&self, keep: impl Fn(&Map<String, Value>) -> bool) -> Vec<String> {
        let mut users: Vec<String> = self
            .shards
            .iter()
            .flat_map(|s| {
                lock(s)
                    .iter()
                    .filter(|(_, attrs)| keep(attrs))
                    .map(|(user, _)| user.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        users.sort_unstable();
        users
    }
}

/// One object that names a user and the attributes to write.
struct Object {
    user: String,
    update_only: bool,
    attributes: Vec<(String, Value)>,
}

/// The endpoint: authenticate, rate-limit, inject faults, validate, apply.
pub(super) async fn handle(shared: &Shared, req: Request<Incoming>) -> Result<Resp, Abort> {
    let auth = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    match auth.as_deref().and_then(|a| a.strip_prefix("Bearer ")) {
        None => return Ok(message(StatusCode::UNAUTHORIZED, "missing Bearer token")),
        Some(key) if key != shared.config.rest_api_key => {
            return Ok(message(StatusCode::UNAUTHORIZED, "invalid API key"));
        }
        Some(_) => {}
    }
    let (fault, rate) = match admit(shared).await? {
        Admitted::Answered(resp) => return Ok(resp),
        Admitted::Apply { fault, rate } => (fault, rate),
    };
    let resp = match parse(&body) {
        Err(why) => message(StatusCode::BAD_REQUEST, &why),
        Ok(objects) => {
            let (processed, errors) =
                apply(shared, objects, shared.config.unknown_id_marker.as_deref());
            shared.state.record_track(processed as u64);
            if fault == FaultKind::ErrorAfterApply {
                message(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
            } else {
                let mut body = json!({"message": "success", "attributes_processed": processed});
                if !errors.is_empty() {
                    body["errors"] = Value::Array(errors);
                }
                json_response(StatusCode::CREATED, &body)
            }
        }
    };
    Ok(with_rate_headers(resp, &rate))
}

/// The objects of a valid body; `Err` is the 400 message. An object that names no user, or
/// more than one, is kept as `Err` (an item-level error), not a 400.
fn parse(body: &[u8]) -> Result<Vec<Result<Object, String>>, String> {
    let Ok(Value::Object(mut obj)) = serde_json::from_slice::<Value>(body) else {
        return Err("the body must be a JSON object".into());
    };
    let attributes = match obj.remove("attributes") {
        None => Vec::new(),
        Some(Value::Array(a)) => a,
        Some(_) => return Err("attributes must be an array".into()),
    };
    for field in ["events", "purchases"] {
        match obj.get(field) {
            None => {}
            Some(Value::Array(a)) if a.len() <= MAX_OBJECTS => {}
            Some(Value::Array(_)) => {
                return Err(format!("more than {MAX_OBJECTS} {field}"));
            }
            Some(_) => return Err(format!("{field} must be an array")),
        }
    }
    if attributes.len() > MAX_OBJECTS {
        return Err(format!(
            "too many attributes: {} > {MAX_OBJECTS}",
            attributes.len()
        ));
    }
    if attributes.is_empty() && !obj.contains_key("events") && !obj.contains_key("purchases") {
        return Err("nothing to track: attributes, events and purchases are all empty".into());
    }
    Ok(attributes.into_iter().map(object).collect())
}

fn object(value: Value) -> Result<Object, String> {
    let Value::Object(mut o) = value else {
        return Err("attribute object is not an object".into());
    };
    let mut users = Vec::new();
    if let Some(v) = o.remove("external_id") {
        match v {
            Value::String(s) if !s.is_empty() => users.push(s),
            _ => return Err("external_id must be a non-empty string".into()),
        }
    }
    if let Some(v) = o.remove("user_alias") {
        let name = v.get("alias_name").and_then(Value::as_str);
        let label = v.get("alias_label").and_then(Value::as_str);
        match (name, label) {
            (Some(n), Some(l)) if !n.is_empty() && !l.is_empty() => {
                users.push(format!("alias:{n}:{l}"));
            }
            _ => return Err("user_alias needs a non-empty alias_name and alias_label".into()),
        }
    }
    if let Some(v) = o.remove("braze_id") {
        match v {
            Value::String(s) if !s.is_empty() => users.push(format!("braze:{s}")),
            _ => return Err("braze_id must be a non-empty string".into()),
        }
    }
    if users.len() != 1 {
        return Err(
            "each object must identify exactly one user (external_id, user_alias or braze_id)"
                .into(),
        );
    }
    let user = users.pop().expect("one user");
    // An alias updates existing profiles only unless told otherwise.
    let default_update_only = user.starts_with("alias:");
    let update_only = match o.remove("_update_existing_only") {
        None => default_update_only,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err("_update_existing_only must be a boolean".into()),
    };
    let mut attributes = Vec::new();
    for (name, value) in o {
        if name.is_empty() || name.starts_with('$') {
            return Err(format!("invalid attribute name `{name}`"));
        }
        if let Value::Object(change) = &value
            && !change
                .iter()
                .all(|(k, v)| (k == "add" || k == "remove") && v.is_array())
        {
            return Err(format!(
                "attribute `{name}`: an object value must be {{\"add\": [...]}} and/or {{\"remove\": [...]}}"
            ));
        }
        attributes.push((name, value));
    }
    Ok(Object {
        user,
        update_only,
        attributes,
    })
}

/// Applies the valid objects; returns how many were applied and the item-level errors.
fn apply(
    shared: &Shared,
    objects: Vec<Result<Object, String>>,
    unknown_marker: Option<&str>,
) -> (usize, Vec<Value>) {
    let mut errors = Vec::new();
    let mut processed = 0;
    for (index, object) in objects.into_iter().enumerate() {
        let object = match object {
            Ok(o) => o,
            Err(why) => {
                errors.push(json!({"type": why, "input_array": "attributes", "index": index}));
                continue;
            }
        };
        let mut profiles = lock(shared.profiles.shard(&object.user));
        // A profile exists if it was written before, or (with no marker) always: a marker
        // names ids this workspace has never seen, and a deleted profile is gone until created
        // anew.
        let unknown = !profiles.contains_key(&object.user)
            && (unknown_marker.is_some_and(|m| object.user.contains(m))
                || lock(&shared.profiles.deleted).contains(&object.user));
        if unknown && object.update_only {
            errors.push(json!({
                "type": "'external_id' or 'braze_id' or 'user_alias' is required and must identify an existing user when '_update_existing_only' is true",
                "input_array": "attributes",
                "index": index,
            }));
            continue;
        }
        if unknown {
            lock(&shared.profiles.deleted).remove(&object.user);
        }
        let attrs = profiles.entry(object.user).or_default();
        for (name, value) in object.attributes {
            match value {
                Value::Object(change) => {
                    let mut items = match attrs.remove(&name) {
                        Some(Value::Array(items)) => items,
                        _ => Vec::new(),
                    };
                    for v in change
                        .get("add")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        if !items.contains(v) {
                            items.push(v.clone());
                        }
                    }
                    if let Some(remove) = change.get("remove").and_then(Value::as_array) {
                        items.retain(|v| !remove.contains(v));
                    }
                    attrs.insert(name, Value::Array(items));
                }
                Value::Null => {
                    attrs.remove(&name);
                }
                other => {
                    attrs.insert(name, other);
                }
            }
        }
        processed += 1;
    }
    (processed, errors)
}

/// `GET /_emulator/profiles`: every profile and its attributes.
pub(super) fn list(shared: &Shared) -> Resp {
    json_response(StatusCode::OK, &shared.profiles.all())
}
