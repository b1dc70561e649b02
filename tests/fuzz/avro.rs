//! The Avro reader (`ingest::avro`, through `ingest::decode_file`): random bytes, and mutations
//! of valid files of every codec written by two implementations (apache-avro here, fastavro in
//! `tests/data/fastavro/`). No panic; every record read either lands or is quarantined; and
//! allocations stay within a constant times the input's size, with the file's limits scaled to
//! the input too (the production limits are constants: see `ingest::limits`).

use apache_avro::types::{Record, Value};
use apache_avro::{Codec, DeflateSettings, Schema, Writer};
use cohort_bridge::ingest::decode::Format;
use cohort_bridge::ingest::decode_file;
use cohort_bridge::ingest::limits::Limits;

use crate::{inputs, run, within};

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
    run(inputs(seeds()), |bytes| {
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
