//! The Partner Cohort Import endpoints (`POST /partners/{partner}/cohorts` and
//! `.../cohorts/users`): authentication by partner key and client secret, the wire format parsed
//! on its own (`serde_json::Value`), validation and apply; and the read-only
//! `/_emulator/cohorts` views of what they hold.

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use serde_json::{Map, Value, json};

use super::admission::{Admitted, admit, with_rate_headers};
use super::faults::FaultKind;
use super::server::{
    Abort, Reject, Resp, bad_request, json_response, message, parse_object, read_body,
};
use super::state::{Change, State};
use super::{EmulatorConfig, Shared};

/// Most ids (user ids + device ids + aliases, all change objects together) in one request.
const MAX_IDS_PER_REQUEST: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Endpoint {
    Cohorts,
    Users,
}

/// The partner API: parse, authenticate, rate-limit, inject faults, validate, apply.
pub(super) async fn partner_request(
    shared: &Shared,
    req: Request<Incoming>,
    partner: &str,
    endpoint: Endpoint,
) -> Result<Resp, Abort> {
    let body = match read_body(req.into_body()).await? {
        Ok(body) => body,
        Err(reject) => return Ok(reject.into_response()),
    };
    let mut obj = match parse_object(&body) {
        Ok(obj) => obj,
        Err(reject) => return Ok(reject.into_response()),
    };
    if endpoint == Endpoint::Users {
        shared
            .state
            .record_id_count(count_ids(obj.get("cohort_changes")) as u64);
    }
    if let Err(reject) = authenticate(&shared.config, partner, &obj) {
        return Ok(reject.into_response());
    }
    let (fault, rate) = match admit(shared).await? {
        Admitted::Answered(resp) => return Ok(resp),
        Admitted::Apply { fault, rate } => (fault, rate),
    };
    let applied = apply(
        &shared.state,
        endpoint,
        &mut obj,
        shared.config.invalid_id_marker.as_deref(),
    );
    Ok(with_rate_headers(answer(applied, fault), &rate))
}

fn authenticate(
    config: &EmulatorConfig,
    partner: &str,
    obj: &Map<String, Value>,
) -> Result<(), Reject> {
    let key = obj.get("partner_api_key").and_then(Value::as_str);
    let secret = obj.get("client_secret").and_then(Value::as_str);
    let refuse = |msg: &str| Err(Reject::new(StatusCode::UNAUTHORIZED, msg));
    if partner != config.partner {
        refuse("partner not enabled")
    } else if key != Some(config.partner_api_key.as_str()) {
        refuse("invalid partner key")
    } else if secret != Some(config.client_secret.as_str()) {
        refuse("invalid client secret")
    } else {
        Ok(())
    }
}

/// Validates and applies one request. `Err` is the 400 message.
fn apply(
    state: &State,
    endpoint: Endpoint,
    obj: &mut Map<String, Value>,
    invalid_marker: Option<&str>,
) -> Result<(), String> {
    match endpoint {
        Endpoint::Cohorts => {
            let (cohort_id, name) = parse_cohort(obj)?;
            let outcome = state.upsert_cohort(&cohort_id, &name);
            tracing::debug!(%cohort_id, ?outcome, "emulator cohort upsert");
            Ok(())
        }
        Endpoint::Users => {
            let (cohort_id, changes) = parse_users(obj)?;
            if let Some(marker) = invalid_marker {
                for (i, change) in changes.iter().enumerate() {
                    if let Some((j, id)) = change
                        .ids
                        .iter()
                        .enumerate()
                        .find(|(_, id)| id.contains(marker))
                    {
                        return Err(format!(
                            "cohort_changes[{i}].user_ids[{j}] \"{id}\" is not a valid external id"
                        ));
                    }
                }
            }
            if state.append_changes(&cohort_id, changes) {
                Ok(())
            } else {
                Err(format!("cohort_id \"{cohort_id}\" not found"))
            }
        }
    }
}

fn answer(applied: Result<(), String>, fault: FaultKind) -> Resp {
    match applied {
        Err(msg) => bad_request(&msg),
        Ok(()) if fault == FaultKind::ErrorAfterApply => {
            message(StatusCode::INTERNAL_SERVER_ERROR, "internal server error")
        }
        Ok(()) => message(StatusCode::CREATED, "success"),
    }
}

// ----- wire format -----

/// `cohort_id` and `name` of a valid `/cohorts` body; `created_at` is checked, not kept.
fn parse_cohort(obj: &mut Map<String, Value>) -> Result<(String, String), String> {
    let cohort_id = take_non_empty_string(obj, "cohort_id")?;
    let name = take_non_empty_string(obj, "name")?;
    match obj.get("created_at") {
        Some(Value::String(s)) if is_iso8601(s) => Ok((cohort_id, name)),
        _ => Err(
            "created_at must be an ISO-8601 timestamp string, e.g. 2026-01-31T12:00:00Z".to_owned(),
        ),
    }
}

fn is_iso8601(s: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(s).is_ok()
        || chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f").is_ok()
}

fn take_non_empty_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
        _ => Err(format!("{field} must be a non-empty string")),
    }
}

/// `cohort_id` and the changes of a valid `/cohorts/users` body.
fn parse_users(obj: &mut Map<String, Value>) -> Result<(String, Vec<Change>), String> {
    let cohort_id = take_non_empty_string(obj, "cohort_id")?;
    let changes = match obj.remove("cohort_changes") {
        Some(Value::Array(changes)) if !changes.is_empty() => changes,
        _ => return Err("cohort_changes must be a non-empty array".to_owned()),
    };
    let total: usize = changes.iter().map(ids_in_change).sum();
    if total > MAX_IDS_PER_REQUEST {
        return Err(format!("too many ids: {total} > {MAX_IDS_PER_REQUEST}"));
    }
    let changes = changes
        .into_iter()
        .enumerate()
        .map(|(i, change)| parse_change(i, change))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((cohort_id, changes))
}

/// Ids in `cohort_changes` as sent (array lengths), whether or not they are valid.
fn count_ids(changes: Option<&Value>) -> usize {
    match changes {
        Some(Value::Array(changes)) => changes.iter().map(ids_in_change).sum(),
        _ => 0,
    }
}

fn ids_in_change(change: &Value) -> usize {
    ["user_ids", "device_ids", "aliases"]
        .iter()
        .filter_map(|field| change.get(field).and_then(Value::as_array))
        .map(Vec::len)
        .sum()
}

fn parse_change(i: usize, change: Value) -> Result<Change, String> {
    let Value::Object(mut change) = change else {
        return Err(format!("cohort_changes[{i}] must be an object"));
    };
    let remove = match change.get("should_remove") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(format!(
                "cohort_changes[{i}].should_remove must be a boolean"
            ));
        }
    };
    let mut ids = take_strings(&mut change, i, "user_ids")?;
    let devices = take_strings(&mut change, i, "device_ids")?;
    ids.extend(devices.into_iter().map(|d| format!("device:{d}")));
    ids.extend(take_aliases(&mut change, i)?);
    if ids.is_empty() {
        return Err(format!(
            "cohort_changes[{i}] must carry at least one id in user_ids, device_ids or aliases"
        ));
    }
    Ok(Change { remove, ids })
}

/// An optional array of non-empty strings; `null` or absent is empty.
fn take_strings(
    change: &mut Map<String, Value>,
    i: usize,
    field: &str,
) -> Result<Vec<String>, String> {
    let items = match change.remove(field) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("cohort_changes[{i}].{field} must be an array")),
    };
    items
        .into_iter()
        .enumerate()
        .map(|(j, item)| match item {
            Value::String(s) if !s.is_empty() => Ok(s),
            Value::String(_) => Err(format!(
                "cohort_changes[{i}].{field}[{j}] must be a non-empty string"
            )),
            _ => Err(format!("cohort_changes[{i}].{field}[{j}] must be a string")),
        })
        .collect()
}

/// An optional array of `{alias_name, alias_label}`, as member keys `alias:NAME:LABEL`.
fn take_aliases(change: &mut Map<String, Value>, i: usize) -> Result<Vec<String>, String> {
    let items = match change.remove("aliases") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(format!("cohort_changes[{i}].aliases must be an array")),
    };
    items
        .iter()
        .enumerate()
        .map(|(j, item)| {
            let field = |name: &str| match item.get(name) {
                Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
                _ => Err(format!(
                    "cohort_changes[{i}].aliases[{j}].{name} must be a non-empty string"
                )),
            };
            if !item.is_object() {
                return Err(format!(
                    "cohort_changes[{i}].aliases[{j}] must be an object"
                ));
            }
            Ok(format!(
                "alias:{}:{}",
                field("alias_name")?,
                field("alias_label")?
            ))
        })
        .collect()
}

#[derive(serde::Serialize)]
struct CohortSummary<'a> {
    cohort_id: &'a str,
    name: &'a str,
    members: usize,
}

pub(super) fn list_cohorts(state: &State) -> Resp {
    let summaries = state.summaries();
    let body: Vec<CohortSummary<'_>> = summaries
        .iter()
        .map(|(cohort_id, name, members)| CohortSummary {
            cohort_id,
            name,
            members: *members,
        })
        .collect();
    json_response(StatusCode::OK, &body)
}

pub(super) fn cohort_members(state: &State, cohort_id: &str) -> Resp {
    match state.view(cohort_id) {
        Some(view) => json_response(
            StatusCode::OK,
            &json!({ "cohort_id": view.cohort_id, "name": view.name, "members": view.members }),
        ),
        None => message(StatusCode::NOT_FOUND, "cohort not found"),
    }
}
