//! Partner event files to JSON records: Avro object container files (any codec the build
//! supports) and NDJSON. A file that cannot be read to the end still yields the records before
//! the damage, and says where and why it stopped.

use apache_avro::types::Value as Avro;
use serde_json::{Map, Number, Value};

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

pub fn decode(format: Format, bytes: &[u8]) -> Decoded {
    match format {
        Format::Avro => decode_avro(bytes),
        Format::NdJson => decode_ndjson(bytes),
    }
}

fn decode_avro(bytes: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let reader = match apache_avro::Reader::new(bytes) {
        Ok(r) => r,
        Err(e) => {
            out.broken = Some((0, format!("not a readable Avro file: {e}")));
            return out;
        }
    };
    for (i, item) in reader.enumerate() {
        let i = i as u64;
        match item {
            Ok(value) => out.records.push((i, record_to_json(value))),
            Err(e) => {
                out.broken = Some((
                    i,
                    format!("corrupt or truncated Avro data at record {i}: {e}"),
                ));
                break;
            }
        }
    }
    out
}

fn record_to_json(value: Avro) -> Result<Map<String, Value>, String> {
    match to_json(value) {
        Value::Object(m) => Ok(m),
        other => Err(format!("an event must be a record, got {other}")),
    }
}

/// Avro values as JSON: unions unwrapped, bytes and fixed as hex, logical types as numbers.
fn to_json(v: Avro) -> Value {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    match v {
        Avro::Null => Value::Null,
        Avro::Boolean(b) => Value::Bool(b),
        Avro::Int(i) | Avro::Date(i) | Avro::TimeMillis(i) => Value::from(i),
        Avro::Long(i)
        | Avro::TimeMicros(i)
        | Avro::TimestampMillis(i)
        | Avro::TimestampMicros(i)
        | Avro::TimestampNanos(i)
        | Avro::LocalTimestampMillis(i)
        | Avro::LocalTimestampMicros(i)
        | Avro::LocalTimestampNanos(i) => Value::from(i),
        Avro::Float(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
        Avro::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
        Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(hex(&b)),
        Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
        Avro::Union(_, inner) => to_json(*inner),
        Avro::Array(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Avro::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, to_json(v))).collect()),
        Avro::Record(fields) => {
            Value::Object(fields.into_iter().map(|(k, v)| (k, to_json(v))).collect())
        }
        Avro::Uuid(u) => Value::String(u.to_string()),
        other => Value::String(format!("{other:?}")),
    }
}

fn decode_ndjson(bytes: &[u8]) -> Decoded {
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
        let d = decode(
            Format::NdJson,
            b"{\"id\":\"a\"}\nnot json\n[1]\n\n{\"id\":\"b\"}\n",
        );
        let bad: Vec<_> = d
            .records
            .iter()
            .filter(|(_, r)| r.is_err())
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(bad, vec![2, 3]);
        assert_eq!(d.records.iter().filter(|(_, r)| r.is_ok()).count(), 2);
        assert!(decode(Format::Avro, b"garbage").broken.is_some());
    }
}
