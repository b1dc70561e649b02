//! Reading `/users/track`'s success body: what it applied, and the item errors (dead letters,
//! or a removal that is already done because the profile is gone).

use super::{MAX_OBJECTS, Refused};
use crate::redact;

/// The objects of a batch of `sent` that a success response says it did not apply, once it
/// accounts for all of them: `attributes_processed` plus the refused objects (`errors[*]` with
/// `input_array` `"attributes"` or none, each with the `index` of an object of the batch) make
/// at least `sent`. Errors on other arrays (events, purchases: we send none) are ignored. `Err`
/// says why the answer does not account for the batch.
pub(super) fn accounted(body: &[u8], sent: usize) -> std::result::Result<Vec<Refused>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let refused = item_errors(&v, sent)?;
    let processed = v
        .get("attributes_processed")
        .and_then(serde_json::Value::as_u64)
        .ok_or("no `attributes_processed` count")?;
    if processed.saturating_add(refused.len() as u64) < sent as u64 {
        return Err(format!(
            "attributes_processed = {processed} and {} item errors for {sent} objects: the \
             rest were neither applied nor refused",
            refused.len()
        ));
    }
    Ok(refused)
}

/// The item errors of a success response to a batch of `sent` objects, sorted, one per object.
fn item_errors(v: &serde_json::Value, sent: usize) -> std::result::Result<Vec<Refused>, String> {
    let errors = match v.get("errors") {
        None | Some(serde_json::Value::Null) => return Ok(Vec::new()),
        Some(serde_json::Value::Array(errors)) => errors,
        Some(_) => return Err("`errors` is not an array".into()),
    };
    let mut refused = Vec::new();
    for (k, e) in errors.iter().enumerate() {
        let array = e.get("input_array").and_then(|a| a.as_str());
        if array.is_some_and(|a| a != "attributes") {
            continue;
        }
        let index = e
            .get("index")
            .and_then(|i| i.as_u64())
            .ok_or_else(|| format!("errors[{k}] has no index"))?;
        if index >= sent.min(MAX_OBJECTS) as u64 {
            return Err(format!(
                "errors[{k}] names object {index}, outside the batch of {sent}"
            ));
        }
        let kind = e
            .get("type")
            .and_then(|t| t.as_str())
            .unwrap_or("(no type)");
        refused.push(Refused {
            index: index as usize,
            reason: redact::scrub(&kind.chars().take(200).collect::<String>()).into_owned(),
            no_profile: no_profile(kind),
        });
    }
    refused.sort_by_key(|r| r.index);
    refused.dedup_by_key(|r| r.index);
    Ok(refused)
}

/// Whether an item error's type says the user has no profile. Under `_update_existing_only` (the
/// default) a well-formed object naming one user is refused for nothing else: the user is
/// unknown to the workspace, or was deleted there.
fn no_profile(kind: &str) -> bool {
    let kind = kind.to_ascii_lowercase();
    [
        "_update_existing_only",
        "does not exist",
        "no such user",
        "user not found",
        "profile not found",
    ]
    .iter()
    .any(|s| kind.contains(s))
}
