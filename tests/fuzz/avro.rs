//! The Avro reader (`ingest::formats::avro`, through `ingest::decode_file`): random bytes, and mutations
//! of valid files of every codec written by two implementations (apache-avro here, fastavro in
//! `tests/data/fastavro/`). No panic; every record read either lands or is quarantined; and
//! allocations stay within a constant times the input's size, with the file's limits scaled to
//! the input too (the production limits are constants: see `ingest::limits`).

use apache_avro::types::{Record, Value};
use apache_avro::{Codec, DeflateSettings, Schema, Writer};
use cohort_bridge::ingest::decode_file;
use cohort_bridge::ingest::formats::Format;
use cohort_bridge::ingest::limits::Limits;

use proptest::prelude::*;
use proptest::sample::Index;

use crate::{hostile_number, inputs, run, varint, within};

/// A varint where the container format has them: the `which`-th varint of a block (0: its
/// record count, 1: its size, then the first numbers of its data: a snappy block's claimed
/// length, a record's first string length, an array's count), replaced by a hostile value; the
/// block's size is kept true (unless it is the one replaced), so the lie reaches the decoder.
/// Blocks are found after the sync marker (a valid file ends with one).
fn block_varint(seed: &[u8], block: &Index, which: u8, value: i64) -> Vec<u8> {
    let mut b = seed.to_vec();
    let Some(sync) = seed.len().checked_sub(16).map(|at| seed[at..].to_vec()) else {
        return b;
    };
    let starts: Vec<usize> = (0..seed.len().saturating_sub(32))
        .filter(|&i| seed[i..i + 16] == sync[..])
        .map(|i| i + 16)
        .collect();
    if starts.is_empty() {
        return b;
    }
    // (value, end) of the varint at `p`.
    let read = |b: &[u8], mut p: usize| {
        let (mut n, mut shift) = (0u64, 0);
        while p < b.len() && shift < 64 {
            n |= u64::from(b[p] & 0x7f) << shift;
            p += 1;
            if b[p - 1] & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        (((n >> 1) as i64) ^ -((n & 1) as i64), p)
    };
    let count_at = starts[block.index(starts.len())];
    let (_, size_at) = read(&b, count_at);
    let (size, data_at) = read(&b, size_at);
    let mut p = [count_at, size_at, data_at][usize::from(which.min(2))];
    for _ in 2..which {
        p = read(&b, p).1;
    }
    if p >= b.len() {
        return b;
    }
    let end = read(&b, p).1;
    let new = varint(value);
    let delta = new.len() as i64 - (end - p) as i64;
    b.splice(p..end, new);
    if which >= 2 {
        b.splice(size_at..data_at, varint(size.wrapping_add(delta)));
    }
    b
}

/// Random bytes, generic mutations, and hostile numbers where the format keeps its numbers.
fn avro_inputs() -> impl Strategy<Value = Vec<u8>> {
    let structured = (
        proptest::sample::select(seeds()),
        proptest::collection::vec((any::<Index>(), 0u8..6, hostile_number()), 1..3),
    )
        .prop_map(|(seed, changes)| {
            changes.iter().fold(seed, |b, (block, which, value)| {
                block_varint(&b, block, *which, *value)
            })
        });
    prop_oneof![2 => inputs(seeds()), 1 => structured]
}

const SCHEMA: &str = r#"{"type":"record","name":"E","namespace":"f","fields":[
    {"name":"id","type":"string"},{"name":"time","type":"long"},
    {"name":"user_id","type":["null","string"]},
    {"name":"campaign_name","type":["null","string"]},
    {"name":"score","type":["null","double"]},
    {"name":"flag","type":"boolean"},
    {"name":"kind","type":{"type":"enum","name":"K","symbols":["A","B"]}},
    {"name":"raw","type":"bytes"},
    {"name":"fx","type":{"type":"fixed","name":"F","size":3}},
    {"name":"tags","type":{"type":"array","items":"string"}},
    {"name":"nulls","type":{"type":"array","items":"null"}},
    {"name":"attrs","type":{"type":"map","values":["null","long"]}},
    {"name":"inner","type":{"type":"record","name":"I","fields":[{"name":"k","type":"K"},{"name":"x","type":"float"}]}}]}"#;

fn file(codec: Codec, records: usize) -> Vec<u8> {
    let schema = Schema::parse_str(SCHEMA).unwrap();
    let mut w = Writer::with_codec(&schema, Vec::new(), codec).unwrap();
    for i in 0..records {
        let mut r = Record::new(&schema).unwrap();
        r.put("id", format!("e{i}"));
        r.put("time", 1_764_000_000i64 + i as i64);
        r.put(
            "user_id",
            Value::Union(1, Box::new(Value::String(format!("u{i}")))),
        );
        r.put("campaign_name", Value::Union(0, Box::new(Value::Null)));
        r.put(
            "score",
            Value::Union(1, Box::new(Value::Double(i as f64 / 3.0))),
        );
        r.put("flag", i % 2 == 0);
        r.put(
            "kind",
            Value::Enum((i % 2) as u32, ["A", "B"][i % 2].into()),
        );
        r.put("raw", Value::Bytes(vec![i as u8; i % 4]));
        r.put("fx", Value::Fixed(3, vec![1, 2, i as u8]));
        r.put("tags", Value::Array(vec![Value::String("t".into()); i % 3]));
        r.put("nulls", Value::Array(vec![Value::Null; i % 5]));
        r.put(
            "attrs",
            Value::Map(
                [(
                    "a".to_string(),
                    Value::Union(1, Box::new(Value::Long(i as i64))),
                )]
                .into_iter()
                .collect(),
            ),
        );
        r.put(
            "inner",
            Value::Record(vec![
                ("k".into(), Value::Enum(0, "A".into())),
                ("x".into(), Value::Float(0.5)),
            ]),
        );
        w.append_value(r).unwrap();
        if i % 3 == 2 {
            w.flush().unwrap();
        }
    }
    w.into_inner().unwrap()
}

fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        file(Codec::Null, 4),
        file(Codec::Null, 1),
        file(Codec::Deflate(DeflateSettings::default()), 5),
        file(Codec::Snappy, 5),
    ];
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fastavro");
    for codec in ["null", "deflate", "snappy", "zstandard"] {
        out.push(std::fs::read(fixtures.join(format!("open-{codec}.avro"))).unwrap());
    }
    out
}

#[test]
fn avro_reader() {
    run(avro_inputs(), |bytes| {
        let n = bytes.len();
        let limits = Limits {
            file_bytes: 64 * n + (64 << 10),
            block_bytes: 64 * n + (64 << 10),
        };
        let decoded = within("avro", bytes, 1024 * n + (16 << 20), || {
            decode_file(
                "event_type=users.messages.email.Open/date=2026-11-27-10/f.avro",
                Format::Avro,
                bytes,
                &limits,
            )
        });
        assert_eq!(
            decoded.batch.num_rows() as u64 + decoded.quarantine.len() as u64,
            decoded.records,
            "every record read lands or is quarantined"
        );
    });
}

#[test]
fn the_seeds_are_read_whole() {
    let _one = crate::exclusive();
    for seed in seeds() {
        let d = decode_file(
            "event_type=x.Y/f.avro",
            Format::Avro,
            &seed,
            &Limits::default(),
        );
        assert_eq!(d.broken, None);
        assert!(
            d.batch.num_rows() > 0 && d.quarantine.is_empty(),
            "{:?}",
            d.quarantine
        );
    }
}
