//! NDJSON: one JSON object per line, read line by line. Every line stands alone: a line that is
//! not UTF-8, not JSON, not an object or longer than the record limit is one bad record
//! (quarantined with its line number and why), and the lines after it are read as usual. Lines
//! are handed over one at a time, so a file never exists as a whole in parsed form.

use serde_json::{Map, Value};

use super::{Decoder, Record, Sink};
use crate::ingest::event::{self, Field, Parts};
use crate::ingest::limits::{Limits, MAX_RECORD_BYTES};

/// One record of a file: a JSON object, or why it is not one.
pub type RecordResult = Result<Map<String, Value>, String>;

/// Newline-delimited JSON (`.json`, `.ndjson`, `.jsonl` files).
pub struct NdJson;

impl Decoder for NdJson {
    fn extensions(&self) -> &'static [&'static str] {
        &[".json", ".ndjson", ".jsonl"]
    }

    fn decode(&self, bytes: &[u8], _limits: &Limits, sink: &mut Sink<'_>) -> Option<(u64, String)> {
        ndjson(bytes, |position, record| match record {
            Err(reason) => sink(position, Err(reason)),
            Ok(m) => sink(position, Ok(&JsonRecord::of(&m))),
        })
    }
}

/// A JSON object with its parts.
struct JsonRecord<'a> {
    record: &'a Map<String, Value>,
    canonical: Vec<Field<'a>>,
    properties: String,
}

impl<'a> JsonRecord<'a> {
    fn of(record: &'a Map<String, Value>) -> Self {
        let (canonical, properties) = event::json_parts(record);
        JsonRecord {
            record,
            canonical,
            properties,
        }
    }
}

impl Record for JsonRecord<'_> {
    fn parts(&self) -> Parts<'_> {
        Parts {
            canonical: &self.canonical,
            properties: &self.properties,
        }
    }

    fn json_text(&self) -> Option<String> {
        serde_json::to_string(self.record).ok()
    }
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
