//! Partner event files: what a path says (format, event type, queue date), and NDJSON to JSON
//! records (Avro has its own reader, `avro.rs`). A file that cannot be read to the end still
//! yields the records before the damage, and says where and why it stopped.

use serde_json::{Map, Value};

/// One record of a file: a JSON object, or why it is not one.
pub type RecordResult = Result<Map<String, Value>, String>;

/// What one file held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// (position, record or the reason it is bad). Position: record index for Avro (0-based),
    /// line number for NDJSON (1-based).
    pub records: Vec<(u64, RecordResult)>,
    /// The file could not be read past `position`: (position, reason).
    pub broken: Option<(u64, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Avro,
    NdJson,
}

/// The format of a file, by extension; `None` for files that are not events (skipped).
pub fn format_of(path: &str) -> Option<Format> {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    if name.ends_with(".avro") {
        Some(Format::Avro)
    } else if name.ends_with(".json") || name.ends_with(".ndjson") || name.ends_with(".jsonl") {
        Some(Format::NdJson)
    } else {
        None
    }
}

/// The `event_type=...` folder of a Currents path, if any.
pub fn event_type_of(path: &str) -> Option<&str> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("event_type="))
        .filter(|t| !t.is_empty())
}

/// The `date=YYYY-MM-DD-HH` folder (the hour the events were queued), if any.
pub fn queued_date_of(path: &str) -> Option<chrono::NaiveDate> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("date="))
        .and_then(|d| chrono::NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok())
}

/// NDJSON: one JSON object per line; a bad line is a bad record, invalid UTF-8 ends the file.
pub fn ndjson(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            // Keep the valid prefix's complete lines.
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() as u64 + 1;
            out.broken = Some((line, format!("not UTF-8 from line {line}: {e}")));
            let cut = valid.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
            std::str::from_utf8(&valid[..cut]).unwrap_or("")
        }
    };
    for (n, line) in text.lines().enumerate() {
        let n = n as u64 + 1;
        if line.trim().is_empty() {
            continue;
        }
        let record = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(other) => Err(format!(
                "line {n}: an event must be a JSON object, got {}",
                kind(&other)
            )),
            Err(e) => Err(format!("line {n}: not JSON: {e}")),
        };
        out.records.push((n, record));
    }
    out
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_tell_format_type_and_queue_date() {
        let p = "pre/dataexport.prod-01.S3.integration.x/event_type=users.messages.email.Click/date=2026-11-27-13/1/z/a+0+1.avro";
        assert_eq!(format_of(p), Some(Format::Avro));
        assert_eq!(event_type_of(p), Some("users.messages.email.Click"));
        assert_eq!(
            queued_date_of(p),
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
        );
        assert_eq!(format_of("x/events.ndjson"), Some(Format::NdJson));
        assert_eq!(format_of("x/_SUCCESS"), None);
    }

    #[test]
    fn ndjson_keeps_good_lines_and_names_bad_ones() {
        let d = ndjson(b"{\"id\":\"a\"}\nnot json\n[1]\n\n{\"id\":\"b\"}\n");
        let bad: Vec<_> = d
            .records
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(bad, vec![2, 3]);
        assert_eq!(d.records.iter().filter(|(_, r)| r.is_ok()).count(), 2);
        let cut = ndjson(b"{\"id\":\"a\"}\n{\"id\":\"\xff\"}\n");
        assert_eq!(cut.records.len(), 1);
        assert_eq!(cut.broken.unwrap().0, 2);
    }
}
