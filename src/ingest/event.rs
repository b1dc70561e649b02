//! The canonical `partner_events` row: every partner event type normalised to one schema, with
//! the rest of the record kept as JSON so no field is lost.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{
    DataType, Field, Schema, SchemaRef, TimeUnit, TimestampMicrosecondType,
};
use serde_json::{Map, Value};

/// Records larger than this (as JSON) are quarantined rather than stored.
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// One normalised event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: String,
    pub event_type: String,
    pub partner_user_id: Option<String>,
    pub external_user_id: Option<String>,
    /// UTC microseconds.
    pub event_time: i64,
    pub campaign_id: Option<String>,
    pub campaign_name: Option<String>,
    pub message_variation_id: Option<String>,
    pub canvas_id: Option<String>,
    pub canvas_name: Option<String>,
    pub canvas_variation_id: Option<String>,
    pub canvas_step_id: Option<String>,
    pub platform: Option<String>,
    pub url: Option<String>,
    /// Every other field of the record, as a JSON object.
    pub properties: String,
    pub source_file: String,
}

impl Event {
    pub fn event_date(&self) -> NaiveDate {
        DateTime::<Utc>::from_timestamp_micros(self.event_time)
            .map(|t| t.date_naive())
            .unwrap_or_default()
    }
}

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

/// The file schema of the `partner_events` table (`event_date` is the partition column).
pub fn schema() -> SchemaRef {
    let mut fields = vec![
        Field::new("event_id", DataType::Utf8, false),
        Field::new("event_type", DataType::Utf8, false),
        Field::new(
            "event_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ];
    fields.extend(
        OPTIONAL
            .iter()
            .map(|(c, _)| Field::new(*c, DataType::Utf8, true)),
    );
    fields.push(Field::new("properties", DataType::Utf8, false));
    fields.push(Field::new("source_file", DataType::Utf8, false));
    Arc::new(Schema::new(fields))
}

/// The fields of a record that have no column of their own, serialised without copying.
struct Others<'a>(&'a Map<String, Value>);

impl serde::Serialize for Others<'_> {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let own = |k: &str| {
            matches!(k, "event_type" | "id" | "time") || OPTIONAL.iter().any(|(_, f)| *f == k)
        };
        let mut map = ser.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, _)| !own(k)) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// Normalises one record. `event_type` comes from the file's location or the record's own
/// `event_type` field. `Err` is the reason it is quarantined.
pub fn normalize(
    record: &Map<String, Value>,
    event_type: Option<&str>,
    source_file: &str,
) -> Result<Event, String> {
    let event_type = match (record.get("event_type"), event_type) {
        (Some(Value::String(t)), _) if !t.is_empty() => t.clone(),
        (_, Some(t)) => t.to_string(),
        (Some(other), None) => {
            return Err(format!("field `event_type` must be a string, got {other}"));
        }
        (None, None) => {
            return Err(
                "no event type: neither an `event_type` field nor an `event_type=` folder".into(),
            );
        }
    };
    let event_id = match record.get("id") {
        Some(Value::String(id)) if !id.is_empty() => id.clone(),
        Some(Value::Null) | None => return Err("required field `id` is missing".into()),
        Some(other) => {
            return Err(format!(
                "field `id` must be a non-empty string, got {other}"
            ));
        }
    };
    let time = match record.get("time") {
        Some(Value::Number(n)) => n
            .as_i64()
            .ok_or_else(|| format!("field `time` must be whole UNIX seconds, got {n}"))?,
        Some(Value::Null) | None => return Err("required field `time` is missing".into()),
        Some(other) => {
            return Err(format!(
                "field `time` must be an integer (UNIX seconds), got {other}"
            ));
        }
    };
    let event_time = time
        .checked_mul(1_000_000)
        .filter(|_| (0..=253_402_300_799).contains(&time))
        .ok_or_else(|| format!("field `time` is out of range: {time}"))?;
    let mut optional: Vec<Option<String>> = Vec::with_capacity(OPTIONAL.len());
    for (_, field) in OPTIONAL {
        optional.push(match record.get(field) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(format!("field `{field}` must be a string, got {other}")),
        });
    }
    let properties = serde_json::to_string(&Others(record)).map_err(|e| e.to_string())?;
    if properties.len() > MAX_RECORD_BYTES {
        return Err(format!(
            "record is too large ({} bytes of other fields, limit {MAX_RECORD_BYTES})",
            properties.len()
        ));
    }
    let mut o = optional.into_iter();
    let mut next = || o.next().flatten();
    Ok(Event {
        event_id,
        event_type,
        event_time,
        partner_user_id: next(),
        external_user_id: next(),
        campaign_id: next(),
        campaign_name: next(),
        message_variation_id: next(),
        canvas_id: next(),
        canvas_name: next(),
        canvas_variation_id: next(),
        canvas_step_id: next(),
        platform: next(),
        url: next(),
        properties,
        source_file: source_file.to_string(),
    })
}

/// Events to one Arrow batch (in the given order).
pub fn to_batch(events: &[Event]) -> RecordBatch {
    let strings = |f: &dyn Fn(&Event) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(events.len(), events.len() * 16);
        for e in events {
            b.append_option(f(e));
        }
        Arc::new(b.finish())
    };
    let columns: Vec<ArrayRef> = vec![
        strings(&|e| Some(&e.event_id)),
        strings(&|e| Some(&e.event_type)),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(events.iter().map(|e| e.event_time))
                .with_timezone("UTC"),
        ),
        strings(&|e| e.partner_user_id.as_deref()),
        strings(&|e| e.external_user_id.as_deref()),
        strings(&|e| e.campaign_id.as_deref()),
        strings(&|e| e.campaign_name.as_deref()),
        strings(&|e| e.message_variation_id.as_deref()),
        strings(&|e| e.canvas_id.as_deref()),
        strings(&|e| e.canvas_name.as_deref()),
        strings(&|e| e.canvas_variation_id.as_deref()),
        strings(&|e| e.canvas_step_id.as_deref()),
        strings(&|e| e.platform.as_deref()),
        strings(&|e| e.url.as_deref()),
        strings(&|e| Some(&e.properties)),
        strings(&|e| Some(&e.source_file)),
    ];
    RecordBatch::try_new(schema(), columns).expect("columns match the schema")
}

/// Rows of a stored partition back to events (to merge new ones into a day).
pub fn from_batch(batch: &RecordBatch) -> Result<Vec<Event>, String> {
    let col = |name: &str| -> Result<&StringArray, String> {
        batch
            .column_by_name(name)
            .and_then(|c| c.as_string_opt::<i32>())
            .ok_or_else(|| format!("stored partner events lack a string `{name}` column"))
    };
    let time = batch
        .column_by_name("event_time")
        .and_then(|c| c.as_primitive_opt::<TimestampMicrosecondType>())
        .ok_or("stored partner events lack `event_time`")?;
    let opt: Vec<&StringArray> = OPTIONAL
        .iter()
        .map(|(c, _)| col(c))
        .collect::<Result<_, _>>()?;
    let (id, ty, props, src) = (
        col("event_id")?,
        col("event_type")?,
        col("properties")?,
        col("source_file")?,
    );
    let get = |a: &StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_string());
    Ok((0..batch.num_rows())
        .map(|i| Event {
            event_id: id.value(i).to_string(),
            event_type: ty.value(i).to_string(),
            event_time: time.value(i),
            partner_user_id: get(opt[0], i),
            external_user_id: get(opt[1], i),
            campaign_id: get(opt[2], i),
            campaign_name: get(opt[3], i),
            message_variation_id: get(opt[4], i),
            canvas_id: get(opt[5], i),
            canvas_name: get(opt[6], i),
            canvas_variation_id: get(opt[7], i),
            canvas_step_id: get(opt[8], i),
            platform: get(opt[9], i),
            url: get(opt[10], i),
            properties: props.value(i).to_string(),
            source_file: src.value(i).to_string(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn known_fields_become_columns_and_the_rest_properties() {
        let e = normalize(
            &obj(
                json!({"id": "e1", "time": 1_764_000_000, "user_id": "b1", "external_user_id": "u1",
                       "campaign_id": "c1", "app_id": "a1", "new_field": [1, 2]}),
            ),
            Some("users.messages.pushnotification.Open"),
            "f.avro",
        )
        .unwrap();
        assert_eq!(e.event_time, 1_764_000_000_000_000);
        assert_eq!(e.external_user_id.as_deref(), Some("u1"));
        let props: Value = serde_json::from_str(&e.properties).unwrap();
        assert_eq!(props, json!({"app_id": "a1", "new_field": [1, 2]}));
        let back = from_batch(&to_batch(std::slice::from_ref(&e))).unwrap();
        assert_eq!(back, vec![e]);
    }

    #[test]
    fn bad_records_say_why() {
        let t = Some("x");
        assert!(
            normalize(&obj(json!({"time": 1})), t, "f")
                .unwrap_err()
                .contains("`id` is missing")
        );
        assert!(
            normalize(&obj(json!({"id": "a", "time": "soon"})), t, "f")
                .unwrap_err()
                .contains("`time` must be an integer")
        );
        assert!(
            normalize(&obj(json!({"id": "a", "time": 1, "url": 5})), t, "f")
                .unwrap_err()
                .contains("`url` must be a string")
        );
        assert!(
            normalize(&obj(json!({"id": "a", "time": 1})), None, "f")
                .unwrap_err()
                .contains("no event type")
        );
    }
}
