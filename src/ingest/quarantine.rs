//! Quarantined input: a bad record, a bad line or a broken file, with where and why, as a line
//! of the run's `quarantine.jsonl`.

/// What a quarantine entry takes besides its texts.
pub(super) const QUARANTINE_ENTRY_BYTES: usize = std::mem::size_of::<Quarantined>();

/// One quarantined item, a line of `quarantine.jsonl`.
#[derive(Debug, Clone, PartialEq)]
pub struct Quarantined {
    pub file: String,
    /// Record index (Avro, 0-based) or line number (NDJSON, 1-based).
    pub position: u64,
    pub reason: String,
    /// The record as JSON text, when it could be read.
    pub record: Option<String>,
}

impl Quarantined {
    /// Its line of `quarantine.jsonl` (the record spliced in as the JSON text it already is),
    /// redacted.
    pub(super) fn to_line(&self) -> String {
        let text = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
        let mut line = format!(
            "{{\"file\":{},\"position\":{},\"reason\":{}",
            text(&self.file),
            self.position,
            text(&self.reason)
        );
        if let Some(record) = &self.record {
            line.push_str(",\"record\":");
            line.push_str(record);
        }
        line.push_str("}\n");
        // An event may carry anything, a configured secret included.
        crate::redact::scrubbed(line)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quarantine_lines_are_json_with_the_record_spliced_in() {
        let q = Quarantined {
            file: "a/\"b\".ndjson".into(),
            position: 7,
            reason: "line 7: why\n".into(),
            record: Some(r#"{"id":"x","n":[1]}"#.into()),
        };
        let line: serde_json::Value = serde_json::from_str(&q.to_line()).unwrap();
        assert_eq!(
            line,
            serde_json::json!({"file": "a/\"b\".ndjson", "position": 7,
                "reason": "line 7: why\n", "record": {"id": "x", "n": [1]}})
        );
        let bare = Quarantined { record: None, ..q };
        assert!(!bare.to_line().contains("record"));
    }
}
