//! A schema-compiled reader of Avro object container files, straight into event columns.
//!
//! The generic route (`apache_avro::Reader` → `Value` → JSON map → event) allocates every field
//! name and value of every record; at millions of events it is the whole cost of an ingest.
//! Here the writer's schema is compiled once per file: each top-level field is either one of
//! the canonical columns, decoded as a borrowed slice of the block, or one of the record's
//! other fields, written straight to its JSON text for the `properties` column. Blocks are
//! decompressed one at a time (null, deflate, snappy with its CRC, zstandard), the sync marker
//! after every block is checked, and a block or record that cannot be read stops the file
//! there: every record before it is kept (the caller quarantines the file with the position).
//!
//! The values are the same as the generic route's: unions unwrapped, enums as their symbol,
//! bytes and fixed as lower-case hex, logical types as their underlying numbers, NaN as null,
//! and nested records and maps as JSON objects with sorted keys.
//!
//! **Hostile bytes.** Nothing the file says is allocated before the bytes present justify it
//! (see `limits.rs`): a block's record count, an array's or map's item count and a string's
//! length are checked against the bytes left (by the least size of an item, from the schema;
//! items of no size at all are capped), a block's decompressed size is capped (snappy's claimed
//! length is checked before its buffer exists), the schema's expanded size and depth are capped,
//! a record stops being built past [`MAX_RECORD_BYTES`] of JSON (its bytes are then only skipped,
//! and it is quarantined as too large), and all the JSON a file produces, kept or not, counts
//! against [`Limits::file_bytes`]. Every loop consumes input or that budget, so time is bounded
//! too.

use super::{Decoder, Record, Sink};
use crate::ingest::event::{CANONICAL, Field, Parts};
use crate::ingest::limits::{Limits, MAX_RECORD_BYTES};
use container::{Header, decompress, read_header};
use cursor::Cursor;
use schema::Layout;
use values::Scratch;

mod container;
mod cursor;
mod schema;
mod values;

/// The Avro object container format (`.avro` files).
pub struct Avro;

impl Decoder for Avro {
    fn extensions(&self) -> &'static [&'static str] {
        &[".avro"]
    }

    fn decode(&self, bytes: &[u8], limits: &Limits, sink: &mut Sink<'_>) -> Option<(u64, String)> {
        read_file(bytes, limits, |position, parts| {
            sink(position, parts.map(|p| p as &dyn Record))
        })
    }
}

/// Why decoding stopped.
#[derive(Debug)]
pub(super) enum Fail {
    /// The bytes are not what the schema says.
    Corrupt(String),
    /// The record being built passed [`MAX_RECORD_BYTES`].
    RecordTooLarge,
    /// The file passed [`Limits::file_bytes`].
    FileTooLarge,
}

impl From<String> for Fail {
    fn from(e: String) -> Self {
        Fail::Corrupt(e)
    }
}

impl From<&str> for Fail {
    fn from(e: &str) -> Self {
        Fail::Corrupt(e.to_string())
    }
}

/// What decoding may still spend: JSON bytes of the record being built, and work (JSON bytes
/// and schema nodes visited) of the whole file.
pub(super) struct Budget {
    pub(super) record: usize,
    pub(super) file: usize,
}

impl Budget {
    pub(super) fn spend(&mut self, n: usize) -> Result<(), Fail> {
        self.file = self.file.checked_sub(n).ok_or(Fail::FileTooLarge)?;
        self.record = self.record.checked_sub(n).ok_or(Fail::RecordTooLarge)?;
        Ok(())
    }

    /// One step of skipping (no JSON is built, but time is spent).
    pub(super) fn visit(&mut self) -> Result<(), Fail> {
        self.file = self.file.checked_sub(1).ok_or(Fail::FileTooLarge)?;
        Ok(())
    }
}

/// A record of a file is handed over as its parts (borrowing the block being read).
impl Record for Parts<'_> {
    fn parts(&self) -> Parts<'_> {
        Parts {
            canonical: self.canonical,
            properties: self.properties,
        }
    }

    fn json_text(&self) -> Option<String> {
        Some(crate::ingest::event::parts_to_json_text(self))
    }
}

/// Reads one file, calling `record` for every record with its position (0-based index in the
/// file) and its parts, or why it cannot be an event (too large). `record` returns `Err` to
/// stop reading the file (with that reason). Returns where and why the file could not be read
/// to the end, if so.
pub fn read_file(
    bytes: &[u8],
    limits: &Limits,
    mut record: impl FnMut(u64, Result<&Parts<'_>, String>) -> Result<(), String>,
) -> Option<(u64, String)> {
    let mut cur = Cursor { buf: bytes, pos: 0 };
    let header = match read_header(&mut cur) {
        Ok(h) => h,
        Err(e) => return Some((0, format!("not a readable Avro file: {e}"))),
    };
    let layout = match Layout::compile(&header.schema) {
        Ok(l) => l,
        Err(e) => return Some((0, format!("not a readable Avro file: {e}"))),
    };
    let mut records = Records {
        layout: &layout,
        scratch: Scratch::new(&layout),
        budget: Budget {
            record: 0,
            file: limits.file_bytes,
        },
        index: 0,
        limits,
    };
    let mut block = Vec::new();
    while cur.pos < cur.buf.len() {
        let at = records.index;
        let (count, data) = match next_block(&mut cur, &header, layout.min_size, &mut block, limits)
        {
            Ok(b) => b,
            Err(e) => return Some(damage(at, e)),
        };
        if let Some(stop) = records.read_block(count, data, &mut record) {
            return Some(stop);
        }
    }
    None
}

/// The next block of the file: its record count and its (decompressed) bytes, checked against
/// its sync marker, the block limit and the least size of a record; or why it cannot be read.
fn next_block<'s, 'd: 's>(
    cur: &mut Cursor<'d>,
    header: &Header,
    min_size: usize,
    block: &'s mut Vec<u8>,
    limits: &Limits,
) -> Result<(u64, &'s [u8]), String> {
    let (count, size) = match (cur.long(), cur.long()) {
        (Ok(c), Ok(s)) if c >= 0 && s >= 0 => (c as u64, s as u64),
        (Ok(c), Ok(s)) => return Err(format!("bad block header (count {c}, size {s})")),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    let data = match usize::try_from(size).map(|s| cur.take(s)) {
        Ok(Ok(d)) => d,
        _ => return Err(format!("a block of {size} bytes is cut short")),
    };
    match cur.take(16) {
        Ok(sync) if sync == header.sync => {}
        Ok(_) => return Err("the sync marker after a block does not match".into()),
        Err(_) => return Err("the file ends before the sync marker of a block".into()),
    }
    let data: &[u8] = match decompress(header.codec, data, block, limits.block_bytes) {
        Ok(true) => block,
        Ok(false) => data,
        Err(e) => return Err(e),
    };
    // Every record takes at least `min_size` bytes: a count the block cannot hold is a lie.
    let fits = data.len().checked_div(min_size).unwrap_or(0);
    if count > fits as u64 {
        return Err(format!(
            "a block claims {count} records but its {} bytes can hold at most {fits}",
            data.len()
        ));
    }
    Ok((count, data))
}

/// The records of a file being read: its layout, what decoding may still spend, and the
/// index of the next record.
struct Records<'l> {
    layout: &'l Layout,
    scratch: Scratch,
    budget: Budget,
    index: u64,
    limits: &'l Limits,
}

impl Records<'_> {
    /// Reads the `count` records of a block, handing each to `record`; returns where and why
    /// the file stops, if it does.
    fn read_block(
        &mut self,
        count: u64,
        data: &[u8],
        record: &mut impl FnMut(u64, Result<&Parts<'_>, String>) -> Result<(), String>,
    ) -> Option<(u64, String)> {
        let mut rec = Cursor { buf: data, pos: 0 };
        let mut canonical = vec![Field::Missing; CANONICAL.len()];
        for _ in 0..count {
            let start = rec.pos;
            self.budget.record = MAX_RECORD_BYTES;
            let outcome =
                match self
                    .scratch
                    .decode(self.layout, &mut rec, &mut canonical, &mut self.budget)
                {
                    Ok(()) => Ok(()),
                    Err(Fail::RecordTooLarge) => {
                        // Only skip the rest of its bytes: it is quarantined, not built.
                        rec.pos = start;
                        match self.layout.skip(&mut rec, &mut self.budget) {
                            Ok(()) => Err(format!(
                                "record is too large (its fields take more than \
                                 {MAX_RECORD_BYTES} bytes as JSON)"
                            )),
                            Err(Fail::Corrupt(e)) => return Some(damage(self.index, e)),
                            Err(_) => return self.too_large(),
                        }
                    }
                    Err(Fail::FileTooLarge) => return self.too_large(),
                    Err(Fail::Corrupt(e)) => return Some(damage(self.index, e)),
                };
            let parts = Parts {
                canonical: &canonical,
                properties: &self.scratch.properties,
            };
            if let Err(stop) = record(self.index, outcome.map(|()| &parts)) {
                return Some((self.index, stop));
            }
            self.index += 1;
        }
        if rec.pos != data.len() {
            return Some((
                self.index,
                format!(
                    "corrupt Avro data after record {}: {} bytes left over at the end of a block",
                    self.index.saturating_sub(1),
                    data.len() - rec.pos
                ),
            ));
        }
        None
    }

    /// The file stops at the current record: past the per-file limit.
    fn too_large(&self) -> Option<(u64, String)> {
        let at = self.index;
        Some((
            at,
            format!(
                "the file decodes to more than {} bytes of records (the per-file limit, \
                 engine.memory_limit / 20) at record {at}; the records before it are kept: \
                 raise `engine.memory_limit` and backfill its days to read the rest",
                self.limits.file_bytes
            ),
        ))
    }
}

/// Where and why a file stops being readable.
pub(super) fn damage(at: u64, e: String) -> (u64, String) {
    (
        at,
        format!("corrupt or truncated Avro data at record {at}: {e}"),
    )
}

#[cfg(test)]
mod tests {
    use super::values::json_str;
    use super::*;
    use apache_avro::types::{Record, Value as Avro};
    use apache_avro::{Codec as AvroCodec, DeflateSettings, Schema, Writer};
    use serde_json::{Map, Number, Value};

    const SCHEMA: &str = r#"{"type":"record","name":"E","namespace":"t","fields":[
        {"name":"id","type":"string"},{"name":"time","type":"long"},
        {"name":"user_id","type":["null","string"]},
        {"name":"zeta","type":["null","double"]},
        {"name":"flag","type":"boolean"},
        {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
        {"name":"raw","type":"bytes"},
        {"name":"fx","type":{"type":"fixed","name":"F","size":2}},
        {"name":"tags","type":{"type":"array","items":"string"}},
        {"name":"attrs","type":{"type":"map","values":["null","long"]}},
        {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"b","type":"K"},{"name":"a","type":"float"}]}},
        {"name":"url","type":["null","string"]},
        {"name":"note","type":"string"}]}"#;

    fn file(codec: AvroCodec, n: usize) -> Vec<u8> {
        let schema = Schema::parse_str(SCHEMA).unwrap();
        let mut w = Writer::with_codec(&schema, Vec::new(), codec).unwrap();
        for i in 0..n {
            let mut r = Record::new(&schema).unwrap();
            r.put("id", format!("e{i}"));
            r.put("time", 1_764_000_000i64 + i as i64);
            r.put(
                "user_id",
                Avro::Union(
                    if i % 3 == 0 { 0 } else { 1 },
                    Box::new(if i % 3 == 0 {
                        Avro::Null
                    } else {
                        Avro::String(format!("b{i}"))
                    }),
                ),
            );
            r.put(
                "zeta",
                Avro::Union(
                    1,
                    Box::new(Avro::Double(if i == 1 { f64::NAN } else { i as f64 / 4.0 })),
                ),
            );
            r.put("flag", i % 2 == 0);
            r.put("kind", Avro::Enum((i % 2) as u32, ["A", "B"][i % 2].into()));
            r.put("raw", Avro::Bytes(vec![i as u8, 0xff]));
            r.put("fx", Avro::Fixed(2, vec![0xab, i as u8]));
            r.put(
                "tags",
                Avro::Array(vec![Avro::String("x\"y".into()); i % 3]),
            );
            r.put(
                "attrs",
                Avro::Map(
                    [
                        (
                            "k2".to_string(),
                            Avro::Union(1, Box::new(Avro::Long(i as i64))),
                        ),
                        ("k1".to_string(), Avro::Union(0, Box::new(Avro::Null))),
                    ]
                    .into_iter()
                    .collect(),
                ),
            );
            r.put(
                "inner",
                Avro::Record(vec![
                    ("b".into(), Avro::Enum(1, "B".into())),
                    ("a".into(), Avro::Float(0.5)),
                ]),
            );
            r.put("url", Avro::Union(0, Box::new(Avro::Null)));
            r.put("note", format!("ünïcode \n {i}"));
            w.append_value(r).unwrap();
            if i % 7 == 6 {
                w.flush().unwrap(); // several blocks
            }
        }
        w.into_inner().unwrap()
    }

    /// Every record as the generic reader sees it: `apache_avro::Reader` values to JSON.
    fn reference(bytes: &[u8]) -> Vec<Map<String, Value>> {
        fn json(v: Avro) -> Value {
            let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
            match v {
                Avro::Null => Value::Null,
                Avro::Boolean(b) => Value::Bool(b),
                Avro::Int(i) => Value::from(i),
                Avro::Long(i) => Value::from(i),
                Avro::Float(f) => Number::from_f64(f64::from(f)).map_or(Value::Null, Value::Number),
                Avro::Double(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
                Avro::Bytes(b) | Avro::Fixed(_, b) => Value::String(hex(&b)),
                Avro::String(s) | Avro::Enum(_, s) => Value::String(s),
                Avro::Union(_, inner) => json(*inner),
                Avro::Array(items) => Value::Array(items.into_iter().map(json).collect()),
                Avro::Map(m) => Value::Object(m.into_iter().map(|(k, v)| (k, json(v))).collect()),
                Avro::Record(f) => {
                    Value::Object(f.into_iter().map(|(k, v)| (k, json(v))).collect())
                }
                other => panic!("{other:?}"),
            }
        }
        apache_avro::Reader::new(bytes)
            .unwrap()
            .map(|r| match json(r.unwrap()) {
                Value::Object(m) => m,
                _ => unreachable!(),
            })
            .collect()
    }

    type Records = Vec<Map<String, Value>>;

    /// What `read_file` saw, rebuilt as one JSON object per record.
    fn ours(bytes: &[u8]) -> (Records, Option<(u64, String)>) {
        let mut out = Vec::new();
        let broken = read_file(bytes, &Limits::default(), |i, parts| {
            assert_eq!(i as usize, out.len());
            match crate::ingest::event::parts_to_json(parts.unwrap()) {
                Value::Object(m) => out.push(m),
                _ => unreachable!(),
            }
            Ok(())
        });
        (out, broken)
    }

    #[test]
    fn every_codec_reads_the_same_values_as_the_generic_reader() {
        for codec in [
            AvroCodec::Null,
            AvroCodec::Deflate(DeflateSettings::default()),
            AvroCodec::Snappy,
        ] {
            let bytes = file(codec, 40);
            let (got, broken) = ours(&bytes);
            assert_eq!(broken, None, "{codec:?}");
            assert_eq!(got, reference(&bytes), "{codec:?}");
        }
    }

    #[test]
    fn properties_keys_are_sorted_and_nested_objects_too() {
        let bytes = file(AvroCodec::Null, 3);
        let mut first = None;
        read_file(&bytes, &Limits::default(), |i, p| {
            if i == 2 {
                first = Some(p.unwrap().properties.to_string());
            }
            Ok(())
        });
        let p = first.unwrap();
        let keys: Vec<&str> = [
            "\"attrs\"",
            "\"flag\"",
            "\"fx\"",
            "\"inner\"",
            "\"kind\"",
            "\"note\"",
            "\"raw\"",
            "\"tags\"",
            "\"zeta\"",
        ]
        .into_iter()
        .collect();
        let mut at = 0;
        for k in keys {
            let found = p[at..]
                .find(k)
                .unwrap_or_else(|| panic!("{k} in order in {p}"));
            at += found;
        }
        assert!(p.contains(r#""attrs":{"k1":null,"k2":2}"#), "{p}");
        assert!(p.contains(r#""inner":{"a":0.5,"b":"B"}"#), "{p}");
    }

    #[test]
    fn strings_are_escaped_as_serde_json_does() {
        let all: String = (0u8..0x80).map(char::from).collect::<String>() + "é✓\u{2028}";
        for s in [all.as_str(), "", "plain", "a\"b\\c\nd"] {
            let mut out = String::new();
            json_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap());
        }
    }

    #[test]
    fn damage_keeps_the_records_before_it() {
        let bytes = file(AvroCodec::Snappy, 20);
        // Cut in the third block (records 14..20).
        let cut = &bytes[..bytes.len() - 30];
        let (got, broken) = ours(cut);
        assert_eq!(got.len(), 14);
        let (at, why) = broken.unwrap();
        assert_eq!(at, 14);
        assert!(why.contains("at record 14"), "{why}");

        // A flipped byte inside a compressed block fails its checksum (or its decoding).
        let mut flipped = bytes.clone();
        let n = flipped.len();
        flipped[n - 25] ^= 0x55;
        let (got, broken) = ours(&flipped);
        assert_eq!(got.len(), 14);
        assert!(broken.is_some());

        let (_, broken) = ours(b"Obj\x01 this is not avro");
        assert!(broken.unwrap().1.starts_with("not a readable Avro file"));
        let (_, broken) = ours(b"PAR1");
        assert!(broken.unwrap().1.contains("magic"));
    }

    use crate::ingest::craft::{container, varint};

    fn outcome(bytes: &[u8], limits: &Limits) -> (Vec<Result<String, String>>, Option<String>) {
        let mut seen = Vec::new();
        let broken = read_file(bytes, limits, |_, parts| {
            seen.push(parts.map(|p| p.properties.to_string()));
            Ok(())
        });
        (seen, broken.map(|(_, why)| why))
    }

    const EVENT: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},
        {"name":"time","type":"long"},{"name":"tags","type":{"type":"array","items":"null"}}]}"#;

    #[test]
    fn crafted_counts_are_refused_before_anything_is_allocated() {
        let huge = 1i64 << 61;
        // 2^61 records of no size at all.
        let nothing = r#"{"type":"record","name":"N","fields":[{"name":"n","type":"null"}]}"#;
        let (seen, why) = outcome(
            &container(nothing, "null", &[(huge, vec![])]),
            &Limits::default(),
        );
        assert!(seen.is_empty());
        assert!(why.unwrap().contains("take no bytes"));
        // 2^61 records in a few bytes.
        let (_, why) = outcome(
            &container(EVENT, "null", &[(huge, vec![2, b'a', 2, 0])]),
            &Limits::default(),
        );
        assert!(why.unwrap().contains("can hold at most 1"));
        // A record with an array of 2^61 nulls.
        let mut data = vec![2, b'a', 2];
        data.extend(varint(huge));
        data.push(0);
        let (seen, why) = outcome(&container(EVENT, "null", &[(1, data)]), &Limits::default());
        assert!(seen.is_empty());
        assert!(why.unwrap().contains("claims 2305843009213693952 items"));
        // A map of 2^61 entries, a string of 2^61 bytes.
        let map = r#"{"type":"record","name":"M","fields":[{"name":"m","type":{"type":"map","values":"null"}}]}"#;
        let mut data = varint(huge);
        data.push(0);
        let (_, why) = outcome(&container(map, "null", &[(1, data)]), &Limits::default());
        assert!(why.unwrap().contains("claims"));
        let mut data = varint(huge);
        data.push(b'a');
        let (_, why) = outcome(&container(EVENT, "null", &[(1, data)]), &Limits::default());
        assert!(why.unwrap().contains("needs 2305843009213693952 bytes"));
        // A snappy block claiming 4 GiB.
        let mut block = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0, 0];
        block.extend([0, 0, 0, 0]);
        let (_, why) = outcome(
            &container(EVENT, "snappy", &[(1, block)]),
            &Limits::default(),
        );
        let why = why.unwrap();
        assert!(why.contains("claims 4294967295 bytes"), "{why}");
        // And one that claims more than its bytes can encode.
        let mut block = vec![0x80, 0x80, 0x40];
        block.extend([0; 4]);
        let (_, why) = outcome(
            &container(EVENT, "snappy", &[(1, block)]),
            &Limits::default(),
        );
        assert!(why.unwrap().contains("more than snappy can encode"));
    }

    #[test]
    fn decompression_stops_at_the_block_limit() {
        let limits = Limits {
            block_bytes: 1 << 20,
            ..Limits::default()
        };
        let zeros = vec![0u8; 4 << 20];
        let zstd = zstd::encode_all(zeros.as_slice(), 3).unwrap();
        let (_, why) = outcome(&container(EVENT, "zstandard", &[(1, zstd)]), &limits);
        assert!(
            why.unwrap()
                .contains("more than the limit of 1048576 bytes")
        );
        let mut deflate = Vec::new();
        {
            use std::io::Write;
            let mut w =
                flate2::write::DeflateEncoder::new(&mut deflate, flate2::Compression::default());
            w.write_all(&zeros).unwrap();
            w.finish().unwrap();
        }
        let (_, why) = outcome(&container(EVENT, "deflate", &[(1, deflate)]), &limits);
        assert!(why.unwrap().contains("more than the limit"));
    }

    #[test]
    fn a_record_past_the_limit_is_skipped_and_the_next_one_read() {
        let schema = Schema::parse_str(EVENT).unwrap();
        let mut w = Writer::new(&schema, Vec::new()).unwrap();
        for nulls in [60_000, 2] {
            let mut r = Record::new(&schema).unwrap();
            r.put("id", "a");
            r.put("time", 1i64);
            r.put("tags", Avro::Array(vec![Avro::Null; nulls]));
            w.append_value(r).unwrap();
        }
        let (seen, why) = outcome(&w.into_inner().unwrap(), &Limits::default());
        assert_eq!(why, None);
        assert!(
            seen[0].as_ref().unwrap_err().contains("too large"),
            "{seen:?}"
        );
        assert_eq!(seen[1].as_ref().unwrap(), r#"{"tags":[null,null]}"#);
    }

    #[test]
    fn the_file_budget_stops_a_file_with_the_records_before_it() {
        let bytes = file(AvroCodec::Null, 40);
        let limits = Limits {
            file_bytes: 2_000,
            ..Limits::default()
        };
        let (seen, why) = outcome(&bytes, &limits);
        assert!(!seen.is_empty() && seen.len() < 40);
        assert!(why.unwrap().contains("more than 2000 bytes of records"));
    }

    #[test]
    fn schema_bombs_are_refused() {
        // An enum of 6,000 symbols, used twice.
        let symbols: Vec<String> = (0..6_000).map(|i| format!("\"S{i}\"")).collect();
        let schema = format!(
            r#"{{"type":"record","name":"Top","fields":[{{"name":"a","type":{{"type":"enum","name":"K","symbols":[{}]}}}},{{"name":"b","type":"K"}}]}}"#,
            symbols.join(",")
        );
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("more than 10000 types"));
        // Each type holds the previous one twice: 2^40 nodes once expanded.
        let mut fields = String::from(
            r#"{"name":"t0","type":{"type":"record","name":"T0","fields":[{"name":"x","type":"int"}]}}"#,
        );
        for i in 1..40 {
            fields.push_str(&format!(
                r#",{{"name":"t{i}","type":{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":"T{p}"}},{{"name":"b","type":"T{p}"}}]}}}}"#,
                p = i - 1
            ));
        }
        let schema = format!(r#"{{"type":"record","name":"Top","fields":[{fields}]}}"#);
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("more than 10000 types"));
        // A chain of named types 100 deep.
        let mut fields = String::from(
            r#"{"name":"t0","type":{"type":"record","name":"T0","fields":[{"name":"x","type":"int"}]}}"#,
        );
        for i in 1..100 {
            fields.push_str(&format!(
                r#",{{"name":"t{i}","type":{{"type":"record","name":"T{i}","fields":[{{"name":"a","type":"T{p}"}}]}}}}"#,
                p = i - 1
            ));
        }
        let schema = format!(r#"{{"type":"record","name":"Top","fields":[{fields}]}}"#);
        let (_, why) = outcome(&container(&schema, "null", &[]), &Limits::default());
        assert!(why.unwrap().contains("deeper than 32"));
    }
}
