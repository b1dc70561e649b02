//! Partner event files: what a path says (format, event type, queue date), and NDJSON to JSON
//! records (Avro has its own reader, `avro.rs`).
//!
//! NDJSON is read line by line and every line stands alone: a line that is not UTF-8, not JSON,
//! not an object or longer than the record limit is one bad record (quarantined with its line
//! number and why), and the lines after it are read as usual. Lines are handed over one at a
//! time, so a file never exists as a whole in parsed form.

use serde_json::{Map, Value};

use super::limits::MAX_RECORD_BYTES;

/// One record of a file: a JSON object, or why it is not one.
pub type RecordResult = Result<Map<String, Value>, String>;

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

/// NDJSON: one JSON object per line, each handed to `record` with its line number (1-based),
/// blank lines skipped. `record` returns `Err` to stop reading (with that reason); the result
/// is then where and why the file stopped.
pub fn ndjson(
    bytes: &[u8],
    mut record: impl FnMut(u64, RecordResult) -> Result<(), String>,
) -> Option<(u64, String)> {
    // A UTF-8 byte-order mark is not part of the first line.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        let n = n as u64 + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        if let Err(stop) = record(n, parse_line(n, line)) {
            return Some((n, stop));
        }
    }
    None
}

/// One line as a JSON object, or why it is not one.
fn parse_line(n: u64, line: &[u8]) -> RecordResult {
    if line.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "line {n}: record is too large ({} bytes, limit {MAX_RECORD_BYTES})",
            line.len()
        ));
    }
    let text = std::str::from_utf8(line).map_err(|e| {
        format!(
            "line {n}: not UTF-8 (an invalid byte at byte {} of the line)",
            e.valid_up_to() + 1
        )
    })?;
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(format!(
            "line {n}: an event must be a JSON object, got {}",
            kind(&other)
        )),
        Err(e) => Err(format!("line {n}: not JSON: {e}")),
    }
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

    fn all(bytes: &[u8]) -> Vec<(u64, RecordResult)> {
        let mut out = Vec::new();
        let stopped = ndjson(bytes, |n, r| {
            out.push((n, r));
            Ok(())
        });
        assert_eq!(stopped, None);
        out
    }

    #[test]
    fn ndjson_keeps_good_lines_and_names_bad_ones() {
        let d = all(b"{\"id\":\"a\"}\nnot json\n[1]\n\n{\"id\":\"b\"}\n");
        let bad: Vec<_> = d
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(bad, vec![2, 3]);
        assert_eq!(d.iter().filter(|(_, r)| r.is_ok()).count(), 2);
    }

    #[test]
    fn a_bad_byte_spoils_only_its_line() {
        let d = all(b"\xef\xbb\xbf{\"id\":\"a\"}\r\n{\"id\":\"\xff\"}\n{\"id\":\"c\"}");
        assert_eq!(d.len(), 3);
        assert!(d[0].1.is_ok() && d[2].1.is_ok(), "{d:?}");
        let why = d[1].1.as_ref().unwrap_err();
        assert!(why.starts_with("line 2: not UTF-8"), "{why}");

        let long = format!("{{\"id\":\"{}\"}}\n{{}}", "x".repeat(MAX_RECORD_BYTES));
        let d = all(long.as_bytes());
        assert!(d[0].1.as_ref().unwrap_err().contains("too large"));
        assert!(d[1].1.is_ok());
    }

    #[test]
    fn the_caller_can_stop_a_file() {
        let mut seen = 0;
        let stopped = ndjson(b"{}\n{}\n{}\n", |n, _| {
            seen += 1;
            if n == 2 { Err("enough".into()) } else { Ok(()) }
        });
        assert_eq!(stopped, Some((2, "enough".into())));
        assert_eq!(seen, 2);
    }
}
