//! The canonical `partner_events` row: every partner event type normalised to one schema, with
//! the rest of the record kept as JSON so no field is lost.

use std::borrow::Cow;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field as ArrowField, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use serde_json::{Map, Value};

pub use super::limits::MAX_RECORD_BYTES;

/// The optional string columns, in schema order, with the record field each comes from.
const OPTIONAL: [(&str, &str); 11] = [
    ("partner_user_id", "user_id"),
    ("external_user_id", "external_user_id"),
    ("campaign_id", "campaign_id"),
    ("campaign_name", "campaign_name"),
    ("message_variation_id", "message_variation_id"),
    ("canvas_id", "canvas_id"),
    ("canvas_name", "canvas_name"),
    ("canvas_variation_id", "canvas_variation_id"),
    ("canvas_step_id", "canvas_step_id"),
    ("platform", "platform"),
    ("url", "url"),
];

/// Columns with (nearly) a distinct value per row.
pub const UNIQUE_COLUMNS: [&str; 4] = [
    "event_id",
    "partner_user_id",
    "external_user_id",
    "properties",
];

/// The file schema of the `partner_events` table (`event_date` is the partition column).
pub fn schema() -> SchemaRef {
    let mut fields = vec![
        ArrowField::new("event_id", DataType::Utf8, false),
        ArrowField::new("event_type", DataType::Utf8, false),
        ArrowField::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        OPTIONAL
            .iter()
            .map(|(c, _)| ArrowField::new(*c, DataType::Utf8, true)),
    );
    fields.push(ArrowField::new("properties", DataType::Utf8, false));
    fields.push(ArrowField::new("source_file", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The record fields that have columns of their own, in the order of [`Parts::canonical`]:
/// the event type, id and time, then the optional string columns.
pub const CANONICAL: [&str; 3 + OPTIONAL.len()] = [
    "event_type",
    "id",
    "time",
    "user_id",
    "external_user_id",
    "campaign_id",
    "campaign_name",
    "message_variation_id",
    "canvas_id",
    "canvas_name",
    "canvas_variation_id",
    "canvas_step_id",
    "platform",
    "url",
];

/// One field of a record as read, before it is checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Field<'a> {
    /// Not in the record at all.
    Missing,
    Null,
    Str(Cow<'a, str>),
    Int(i64),
    /// A number that is not an integer (its JSON text).
    Number(String),
    /// Anything else (its JSON text).
    Other(String),
}

impl Field<'_> {
    fn of(v: Option<&Value>) -> Field<'_> {
        match v {
            None => Field::Missing,
            Some(Value::Null) => Field::Null,
            Some(Value::String(s)) => Field::Str(Cow::Borrowed(s)),
            Some(Value::Number(n)) => match n.as_i64() {
                Some(i) => Field::Int(i),
                None => Field::Number(n.to_string()),
            },
            Some(other) => Field::Other(other.to_string()),
        }
    }
}

impl Field<'_> {
    /// The length of its JSON text (escapes aside).
    fn json_len(&self) -> usize {
        match self {
            Field::Missing => 0,
            Field::Null => 4,
            Field::Str(s) => s.len() + 2,
            Field::Int(i) => {
                i.unsigned_abs()
                    .checked_ilog10()
                    .map_or(1, |d| d as usize + 1)
                    + usize::from(*i < 0)
            }
            Field::Number(t) | Field::Other(t) => t.len(),
        }
    }
}

impl std::fmt::Display for Field<'_> {
    /// As JSON, for messages.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Field::Missing | Field::Null => f.write_str("null"),
            Field::Str(s) => write!(f, "{}", Value::String(s.to_string())),
            Field::Int(i) => write!(f, "{i}"),
            Field::Number(t) | Field::Other(t) => f.write_str(t),
        }
    }
}

/// One record, split: the canonical fields (by [`CANONICAL`]) and the JSON object of the rest.
#[derive(Debug)]
pub struct Parts<'a> {
    pub canonical: &'a [Field<'a>],
    pub properties: &'a str,
}

/// A JSON record's parts: its canonical fields and the rest serialised (keys sorted).
pub fn json_parts(record: &Map<String, Value>) -> (Vec<Field<'_>>, String) {
    let canonical = CANONICAL
        .iter()
        .map(|k| Field::of(record.get(*k)))
        .collect();
    let properties = serde_json::to_string(&Others(record)).expect("a JSON map serialises");
    (canonical, properties)
}

/// A record's parts back to one JSON object (for the quarantine).
pub fn parts_to_json(parts: &Parts<'_>) -> Value {
    let mut m: Map<String, Value> = serde_json::from_str(parts.properties).unwrap_or_default();
    for (name, f) in CANONICAL.iter().zip(parts.canonical) {
        let v = match f {
            Field::Missing => continue,
            Field::Null => Value::Null,
            Field::Str(s) => Value::String(s.to_string()),
            Field::Int(n) => Value::from(*n),
            Field::Number(t) | Field::Other(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        };
        m.insert(name.to_string(), v);
    }
    Value::Object(m)
}

/// A record's parts back to one JSON object's text, without building it as a `Value` (for the
/// quarantine, which keeps records as text).
pub fn parts_to_json_text(parts: &Parts<'_>) -> String {
    let mut out = String::with_capacity(parts.properties.len() + 256);
    out.push('{');
    for (name, f) in CANONICAL.iter().zip(parts.canonical) {
        if matches!(f, Field::Missing) {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        // Canonical names need no escaping; a field's Display is its JSON.
        out.push_str(&format!("\"{name}\":{f}"));
    }
    let others = parts
        .properties
        .trim()
        .strip_prefix('{')
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_default();
    if !others.trim().is_empty() {
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(others);
    }
    out.push('}');
    out
}

/// The fields of a record that have no column of their own, serialised without copying.
struct Others<'a>(&'a Map<String, Value>);

impl serde::Serialize for Others<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = ser.serialize_map(None)?;
        for (k, v) in self
            .0
            .iter()
            .filter(|(k, _)| !CANONICAL.contains(&k.as_str()))
        {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Normalised events, column by column, for one file.
pub struct EventColumns {
    strings: Vec<StringBuilder>,
    times: Vec<i64>,
}

/// Column positions in [`EventColumns::strings`] (schema order without `event_time`).
const ID: usize = 0;
const TYPE: usize = 1;
const FIRST_OPTIONAL: usize = 2;
const PROPERTIES: usize = FIRST_OPTIONAL + OPTIONAL.len();
const SOURCE: usize = PROPERTIES + 1;

impl Default for EventColumns {
    fn default() -> Self {
        EventColumns {
            strings: (0..=SOURCE).map(|_| StringBuilder::new()).collect(),
            times: Vec::new(),
        }
    }
}

impl EventColumns {
    pub fn len(&self) -> usize {
        self.times.len()
    }

    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Checks one record and appends it; `Err` is the reason it is quarantined (nothing is
    /// appended then). `folder_type` is the `event_type=` of the file's location.
    pub fn push(
        &mut self,
        parts: &Parts<'_>,
        folder_type: Option<&str>,
        source_file: &str,
    ) -> Result<(), String> {
        let c = parts.canonical;
        // The limit is on the whole record: every canonical field counts, not only the others.
        let size = parts.properties.len()
            + CANONICAL
                .iter()
                .zip(c)
                .filter(|(_, f)| !matches!(f, Field::Missing))
                .map(|(name, f)| name.len() + 4 + f.json_len())
                .sum::<usize>();
        if size > MAX_RECORD_BYTES {
            return Err(format!(
                "record is too large ({size} bytes of fields as JSON, limit {MAX_RECORD_BYTES})"
            ));
        }
        let event_type: &str = match (&c[0], folder_type) {
            (Field::Str(t), _) if !t.is_empty() => t,
            (_, Some(t)) => t,
            (Field::Missing, None) => {
                return Err(
                    "no event type: neither an `event_type` field nor an `event_type=` folder"
                        .into(),
                );
            }
            (other, None) => {
                return Err(format!("field `event_type` must be a string, got {other}"));
            }
        };
        let event_id: &str = match &c[1] {
            Field::Str(id) if !id.is_empty() => id,
            Field::Null | Field::Missing => return Err("required field `id` is missing".into()),
            other => {
                return Err(format!(
                    "field `id` must be a non-empty string, got {other}"
                ));
            }
        };
        let time = match &c[2] {
            Field::Int(t) => *t,
            Field::Number(n) => {
                return Err(format!("field `time` must be whole UNIX seconds, got {n}"));
            }
            Field::Null | Field::Missing => return Err("required field `time` is missing".into()),
            other => {
                return Err(format!(
                    "field `time` must be an integer (UNIX seconds), got {other}"
                ));
            }
        };
        let event_time = time
            .checked_mul(1_000_000)
            .filter(|_| (0..=253_402_300_799).contains(&time))
            .ok_or_else(|| format!("field `time` is out of range: {time}"))?;
        for (i, (_, field)) in OPTIONAL.iter().enumerate() {
            match &c[3 + i] {
                Field::Missing | Field::Null | Field::Str(_) => {}
                other => return Err(format!("field `{field}` must be a string, got {other}")),
            }
        }
        self.strings[ID].append_value(event_id);
        self.strings[TYPE].append_value(event_type);
        for i in 0..OPTIONAL.len() {
            let b = &mut self.strings[FIRST_OPTIONAL + i];
            match &c[3 + i] {
                Field::Str(s) => b.append_value(s),
                _ => b.append_null(),
            }
        }
        self.strings[PROPERTIES].append_value(parts.properties);
        self.strings[SOURCE].append_value(source_file);
        self.times.push(event_time);
        Ok(())
    }

    /// The rows so far as one batch of [`schema`].
    pub fn finish(mut self) -> RecordBatch {
        let mut strings = self
            .strings
            .iter_mut()
            .map(|b| Arc::new(b.finish()) as ArrayRef);
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(SOURCE + 2);
        columns.extend(strings.by_ref().take(2));
        columns.push(Arc::new(
            TimestampMicrosecondArray::from(std::mem::take(&mut self.times)).with_timezone("UTC"),
        ));
        columns.extend(strings);
        RecordBatch::try_new(schema(), columns).expect("columns match the schema")
    }
}

/// The day (days since 1970-01-01) of each row of a batch of [`schema`].
pub fn days_of(batch: &RecordBatch) -> Vec<i32> {
    const DAY_US: i64 = 86_400 * 1_000_000;
    batch
        .column(2)
        .as_primitive::<TimestampMicrosecondType>()
        .values()
        .iter()
        .map(|t| t.div_euclid(DAY_US) as i32)
        .collect()
}

/// Days since 1970-01-01 as a date.
pub fn date_of_day(day: i32) -> NaiveDate {
    NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch") + chrono::Days::new(day as u64)
}

/// A date as days since 1970-01-01.
pub fn day_of_date(date: NaiveDate) -> i32 {
    (date - NaiveDate::from_ymd_opt(1970, 1, 1).expect("epoch")).num_days() as i32
}

/// The `event_id` column of a batch of [`schema`].
pub fn ids(batch: &RecordBatch) -> &StringArray {
    batch.column(0).as_string::<i32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Array;
    use serde_json::json;

    fn push(record: Value, folder: Option<&str>) -> Result<RecordBatch, String> {
        let record = record.as_object().unwrap().clone();
        let (canonical, properties) = json_parts(&record);
        let mut cols = EventColumns::default();
        cols.push(
            &Parts {
                canonical: &canonical,
                properties: &properties,
            },
            folder,
            "f.avro",
        )?;
        Ok(cols.finish())
    }

    #[test]
    fn known_fields_become_columns_and_the_rest_properties() {
        let b = push(
            json!({"id": "e1", "time": 1_764_000_000, "user_id": "b1", "external_user_id": "u1",
                   "campaign_id": "c1", "app_id": "a1", "new_field": [1, 2]}),
            Some("users.messages.pushnotification.Open"),
        )
        .unwrap();
        assert_eq!(b.num_rows(), 1);
        let col = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
        assert_eq!(col("event_id").value(0), "e1");
        assert_eq!(
            col("event_type").value(0),
            "users.messages.pushnotification.Open"
        );
        assert_eq!(col("partner_user_id").value(0), "b1");
        assert_eq!(col("external_user_id").value(0), "u1");
        assert!(col("url").is_null(0));
        assert_eq!(col("source_file").value(0), "f.avro");
        let props: Value = serde_json::from_str(col("properties").value(0)).unwrap();
        assert_eq!(props, json!({"app_id": "a1", "new_field": [1, 2]}));
        assert_eq!(days_of(&b), vec![day_of_date(date_of_day(20_416))]);
        assert_eq!(date_of_day(20_416).to_string(), "2025-11-24");
        // The record's own event_type wins over the folder's.
        let own = push(
            json!({"id": "e", "time": 1, "event_type": "x.Y"}),
            Some("z"),
        )
        .unwrap();
        assert_eq!(own.column(1).as_string::<i32>().value(0), "x.Y");
    }

    #[test]
    fn bad_records_say_why() {
        let t = Some("x");
        let why = |v: Value, folder| push(v, folder).unwrap_err();
        assert!(why(json!({"time": 1}), t).contains("`id` is missing"));
        assert!(why(json!({"id": "a", "time": "soon"}), t).contains("`time` must be an integer"));
        assert!(why(json!({"id": "a", "time": 1.5}), t).contains("whole UNIX seconds, got 1.5"));
        assert!(why(json!({"id": "a", "time": -1}), t).contains("out of range"));
        assert!(why(json!({"id": "a", "time": 1, "url": 5}), t).contains("`url` must be a string"));
        assert!(why(json!({"id": "a", "time": 1}), None).contains("no event type"));
        assert!(why(json!({"id": "", "time": 1}), t).contains("non-empty string, got \"\""));
        let big = "x".repeat(MAX_RECORD_BYTES);
        assert!(why(json!({"id": "a", "time": 1, "blob": big}), t).contains("too large"));
        // Every field counts, the canonical ones too.
        for field in ["id", "campaign_name", "url", "event_type"] {
            let mut record = json!({"id": "a", "time": 1});
            record[field] = json!(big);
            assert!(why(record, t).contains("too large"), "{field}");
        }
        let half = "x".repeat(MAX_RECORD_BYTES / 2);
        let split = json!({"id": "a", "time": 1, "campaign_name": half, "blob": half});
        assert!(why(split, t).contains("too large"));
        assert!(push(json!({"id": "a", "time": 1, "url": "x".repeat(1000)}), t).is_ok());
    }

    #[test]
    fn quarantined_records_are_kept_as_json_text() {
        let record = json!({"id": "a", "time": 1.5, "url": null, "extra": {"b": [1, "x\"y"]}});
        let (canonical, properties) = json_parts(record.as_object().unwrap());
        let text = parts_to_json_text(&Parts {
            canonical: &canonical,
            properties: &properties,
        });
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), record);
        let empty = json!({});
        let (canonical, properties) = json_parts(empty.as_object().unwrap());
        let text = parts_to_json_text(&Parts {
            canonical: &canonical,
            properties: &properties,
        });
        assert_eq!(text, "{}");
    }
}
