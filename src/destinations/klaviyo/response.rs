//! Reading Klaviyo's answers: the import job, a page of its import errors, a page of the
//! profile lookup, and the message of a JSON:API error. Every reader takes the body as the
//! untrusted input it is: `Err` says what is missing, nothing panics.

use serde_json::{Map, Value};

use crate::redact;

/// A job's state, as `GET /api/profile-bulk-import-jobs/{id}` (or the POST's 202) says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Job {
    pub id: String,
    pub status: String,
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

pub(super) fn job(body: &[u8]) -> Result<Job, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v.get("data").ok_or("no `data`")?;
    if data.get("type").and_then(Value::as_str) != Some("profile-bulk-import-job") {
        return Err("`data.type` is not `profile-bulk-import-job`".into());
    }
    let id = data
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 200)
        .ok_or("no job `id`")?;
    let a = data.get("attributes").ok_or("no `attributes`")?;
    let count = |k: &str| a.get(k).and_then(Value::as_u64).unwrap_or(0);
    Ok(Job {
        id: id.to_owned(),
        status: a
            .get("status")
            .and_then(Value::as_str)
            .ok_or("no `status`")?
            .to_owned(),
        total: count("total_count"),
        completed: count("completed_count"),
        failed: count("failed_count"),
    })
}

/// One `import-error`: why, and the row it names (`original_payload`).
#[derive(Debug, Clone, PartialEq)]
pub(super) struct ImportError {
    pub reason: String,
    pub payload: Option<Map<String, Value>>,
}

/// A page of import errors and the link to the next one.
pub(super) fn import_errors(body: &[u8]) -> Result<(Vec<ImportError>, Option<String>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    let errors = data
        .iter()
        .map(|e| {
            let a = e.get("attributes");
            let text = |k: &str| a.and_then(|a| a.get(k)).and_then(Value::as_str);
            let reason = match (text("code"), text("detail").or(text("title"))) {
                (Some(c), Some(d)) => format!("{c}: {d}"),
                (Some(c), None) => c.to_owned(),
                (None, Some(d)) => d.to_owned(),
                (None, None) => "import error (no code)".to_owned(),
            };
            let payload = a
                .and_then(|a| a.get("original_payload"))
                .and_then(Value::as_object)
                .map(|p| match p.get("attributes").and_then(Value::as_object) {
                    // A whole `profile` resource: its attributes.
                    Some(attrs) => attrs.clone(),
                    None => p.clone(),
                });
            ImportError {
                reason: redact::scrub(&reason.chars().take(200).collect::<String>()).into_owned(),
                payload,
            }
        })
        .collect();
    Ok((errors, next_link(&v)))
}

/// A profile the lookup found: its id and identifiers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Profile {
    pub id: String,
    pub external_id: Option<String>,
    pub email: Option<String>,
    pub phone_number: Option<String>,
}

/// A page of `GET /api/profiles` and the link to the next one.
pub(super) fn profiles(body: &[u8]) -> Result<(Vec<Profile>, Option<String>), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let data = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or("no `data` array")?;
    let mut out = Vec::with_capacity(data.len());
    for (i, p) in data.iter().enumerate() {
        let id = p
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .ok_or_else(|| format!("data[{i}] has no `id`"))?;
        let a = p.get("attributes");
        let text = |k: &str| {
            a.and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        out.push(Profile {
            id: id.to_owned(),
            external_id: text("external_id"),
            email: text("email"),
            phone_number: text("phone_number"),
        });
    }
    Ok((out, next_link(&v)))
}

fn next_link(v: &Value) -> Option<String> {
    v.get("links")
        .and_then(|l| l.get("next"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
}

/// What a JSON:API error body says (`errors[0]`: code, detail), shortened and redacted.
pub(super) fn error_message(body: &[u8]) -> Option<String> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let e = v.get("errors")?.get(0)?;
    let text = |k: &str| e.get(k).and_then(Value::as_str);
    let said = match (text("code"), text("detail").or(text("title"))) {
        (Some(c), Some(d)) => format!("{c}: {d}"),
        (Some(c), None) => c.to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => return None,
    };
    Some(redact::scrub(&said.chars().take(300).collect::<String>()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_errors_and_profiles_are_read_or_refused_with_a_reason() {
        let j = job(br#"{"data":{"type":"profile-bulk-import-job","id":"J1","attributes":{"status":"complete","total_count":3,"completed_count":2,"failed_count":1}}}"#).unwrap();
        assert_eq!(
            (
                j.id.as_str(),
                j.status.as_str(),
                j.total,
                j.completed,
                j.failed
            ),
            ("J1", "complete", 3, 2, 1)
        );
        assert!(job(br#"{"data":{"type":"list","id":"x"}}"#).is_err());
        assert!(job(b"<html>").is_err());
        let (errors, next) = import_errors(br#"{"data":[{"type":"import-error","id":"e","attributes":{"code":"invalid","detail":"Bad email","original_payload":{"type":"profile","attributes":{"email":"x"}}}}],"links":{"next":"/n"}}"#).unwrap();
        assert_eq!(errors[0].reason, "invalid: Bad email");
        assert_eq!(errors[0].payload.as_ref().unwrap()["email"], "x");
        assert_eq!(next.as_deref(), Some("/n"));
        let (found, next) = profiles(br#"{"data":[{"type":"profile","id":"P","attributes":{"email":"a@b.co","external_id":null}}],"links":{"next":null}}"#).unwrap();
        assert_eq!(found[0].email.as_deref(), Some("a@b.co"));
        assert_eq!(found[0].external_id, None);
        assert_eq!(next, None);
        assert!(profiles(br#"{"data":[{"type":"profile"}]}"#).is_err());
        assert_eq!(
            error_message(br#"{"errors":[{"id":"1","code":"not_authenticated","title":"T","detail":"Missing key."}]}"#).as_deref(),
            Some("not_authenticated: Missing key.")
        );
    }
}
