//! Hostile input to `ingest`, through the real binary: crafted Avro that claims absurd sizes
//! (each file about 150 bytes), NDJSON with bad lines among good ones, a file over the per-file
//! limit. Each must be quarantined with its reason while every good event lands, and no rerun
//! may trip on them again.

use cohort_bridge::ingest::craft::{container, varint};
use cohort_bridge::ingest::limits::MEMORY_OVERHEAD;

use crate::ingest::{Lakeside, OPEN, T0, opens, write};
use crate::support::{BIN, Run};

/// The process's own memory besides what an ingest's limits allow (code, runtime, a debug
/// build's baseline is about 50 MB).
const BASELINE: usize = 128 << 20;

/// `ingest` with `engine.memory_limit` set to `memory_limit` MiB, in a process whose data
/// (heap and private mappings: `ulimit -d`) may not pass that plus [`MEMORY_OVERHEAD`] plus
/// [`BASELINE`]: an allocation past it fails and aborts the process.
fn ingest_within_limits(l: &Lakeside, memory_limit: usize) -> Run {
    let config = l.dir.path().join("cohort-bridge.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("{base}\n[engine]\nmemory_limit = \"{memory_limit}MiB\"\n"),
    )
    .unwrap();
    let kib = ((memory_limit << 20) + MEMORY_OVERHEAD + BASELINE) >> 10;
    let out = std::process::Command::new("sh")
        .current_dir(l.dir.path())
        .args(["-c", &format!("ulimit -d {kib} && exec \"$0\" ingest"), BIN])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    std::fs::write(&config, base).unwrap();
    Run(out)
}

const NULLS: &str = r#"{"type":"record","name":"N","fields":[{"name":"n","type":"null"}]}"#;
const TAGS: &str = r#"{"type":"record","name":"E","fields":[{"name":"id","type":"string"},{"name":"time","type":"long"},{"name":"tags","type":{"type":"array","items":"null"}}]}"#;

/// The quarantine report of the only run that quarantined something.
fn quarantine(l: &Lakeside) -> Vec<serde_json::Value> {
    let root = l.dir.path().join("lake/_quarantine/partner_events");
    let runs: Vec<_> = std::fs::read_dir(&root).unwrap().flatten().collect();
    assert_eq!(runs.len(), 1, "one run quarantined something");
    std::fs::read_to_string(runs[0].path().join("quarantine.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn reason_of<'a>(q: &'a [serde_json::Value], file: &str) -> Vec<(u64, &'a str)> {
    q.iter()
        .filter(|e| e["file"].as_str().unwrap().ends_with(file))
        .map(|e| {
            (
                e["position"].as_u64().unwrap(),
                e["reason"].as_str().unwrap(),
            )
        })
        .collect()
}

#[test]
fn crafted_avro_is_quarantined_and_the_run_goes_on() {
    let l = Lakeside::new();
    let hour = "2026-11-27-10";
    let huge = 1i64 << 61;
    // 2^61 records of no size in one block.
    let zero_size = container(NULLS, "null", &[(huge, vec![])]);
    // One record whose array claims 2^61 nulls.
    let mut record = vec![4, b'x', b'1', 2];
    record.extend(varint(huge));
    record.push(0);
    let array = container(TAGS, "null", &[(1, record)]);
    // A snappy block whose header claims 4 GiB (u32::MAX bytes).
    let mut block = vec![0xff, 0xff, 0xff, 0xff, 0x0f, 0x00, 0x00];
    block.extend([0; 4]);
    let snappy = container(TAGS, "snappy", &[(1, block)]);
    // A real zstandard block of 64 MiB of zeros (a few KiB): past the block limit.
    let zeros = zstd::encode_all(vec![0u8; 64 << 20].as_slice(), 3).unwrap();
    let bomb = container(TAGS, "zstandard", &[(1, zeros)]);
    for (name, bytes) in [
        ("1-zero-size.avro", &zero_size),
        ("2-array.avro", &array),
        ("3-snappy.avro", &snappy),
        ("4-zstd.avro", &bomb),
    ] {
        write(&l.currents(OPEN, hour, name), bytes);
    }
    for crafted in [&zero_size, &array, &snappy] {
        assert!(crafted.len() < 256, "{} bytes", crafted.len());
    }
    // Read after them: the run must get there.
    write(
        &l.currents(OPEN, hour, "9-good.avro"),
        &opens(&[("g1", T0), ("g2", T0 + 1)]),
    );

    // Peak memory stays within `engine.memory_limit` plus the documented constant.
    let run = ingest_within_limits(&l, 64);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let s = run.summary_any();
    assert_eq!(s["broken_files"], 4, "{s}");
    assert_eq!(s["events_added"], 2, "{s}");
    assert_eq!(l.rows().keys().cloned().collect::<Vec<_>>(), ["g1", "g2"]);

    let q = quarantine(&l);
    let one = |file: &str, what: &str| {
        let found = reason_of(&q, file);
        assert!(
            found.len() == 1 && found[0].1.contains(what),
            "{file}: {found:?}"
        );
    };
    one("1-zero-size.avro", "records take no bytes");
    one("2-array.avro", "claims 2305843009213693952 items");
    one("3-snappy.avro", "claims 4294967295 bytes decompressed");
    one(
        "4-zstd.avro",
        "more than the limit of 16777216 bytes per block",
    );
    // The files themselves are kept for inspection.
    let qrun = std::fs::read_dir(l.dir.path().join("lake/_quarantine/partner_events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(std::fs::read_dir(qrun.join("files")).unwrap().count(), 4);

    // A rerun does not trip on them again: they were read (and quarantined).
    let again = l.ingest(&[]);
    assert_eq!(again.code(), 0, "{}", again.stderr());
    assert_eq!(again.summary()["files_read"], 0);
}

#[test]
fn a_bad_ndjson_line_spoils_only_itself() {
    let l = Lakeside::new();
    let mut text = Vec::new();
    for n in 1..=1000 {
        let line = match n {
            // An invalid UTF-8 byte inside a string.
            2 => {
                let mut b = format!(
                    "{{\"event_type\":\"{OPEN}\",\"id\":\"n2\",\"time\":{T0},\"note\":\"caf"
                )
                .into_bytes();
                b.push(0xe9); // Latin-1 é: not UTF-8
                b.extend(b"\"}");
                b
            }
            700 => b"{\"id\":\"n700\",\"time\":".to_vec(),
            _ => {
                format!("{{\"event_type\":\"{OPEN}\",\"id\":\"n{n}\",\"time\":{T0}}}").into_bytes()
            }
        };
        text.extend(line);
        text.push(b'\n');
    }
    let file = l.dir.path().join("currents/events.ndjson");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, &text).unwrap();

    let run = l.ingest(&[]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let s = run.summary_any();
    assert_eq!(
        (
            s["records_read"].as_u64(),
            s["events_added"].as_u64(),
            s["quarantined_records"].as_u64(),
            s["broken_files"].as_u64()
        ),
        (Some(1000), Some(998), Some(2), Some(0)),
        "{s}"
    );
    let rows = l.rows();
    assert_eq!(rows.len(), 998);
    assert!(rows.contains_key("n1") && rows.contains_key("n3") && rows.contains_key("n1000"));

    let q = quarantine(&l);
    let found = reason_of(&q, "events.ndjson");
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0].0, 2);
    assert!(found[0].1.starts_with("line 2: not UTF-8"), "{found:?}");
    assert_eq!(found[1].0, 700);
    assert!(found[1].1.starts_with("line 700: not JSON"), "{found:?}");
}

#[test]
fn a_file_over_the_per_file_limit_is_left_for_a_run_with_more_memory() {
    let l = Lakeside::new();
    let config = l.dir.path().join("cohort-bridge.toml");
    let base = std::fs::read_to_string(&config).unwrap();
    // 16 MiB of memory: files of up to 4 MiB (the floor of the per-file limit).
    std::fs::write(
        &config,
        format!("{base}\n[engine]\nmemory_limit = \"16MiB\"\n"),
    )
    .unwrap();
    let pad = "p".repeat(200);
    let text: String = (0..25_000)
        .map(|i| {
            format!(
                "{{\"event_type\":\"{OPEN}\",\"id\":\"big{i}\",\"time\":{T0},\"pad\":\"{pad}\"}}\n"
            )
        })
        .collect();
    assert!(text.len() > 4 << 20);
    let big = l.dir.path().join("currents/big.ndjson");
    std::fs::create_dir_all(big.parent().unwrap()).unwrap();
    std::fs::write(&big, text).unwrap();
    write(
        &l.currents(OPEN, "2026-11-27-10", "small.avro"),
        &opens(&[("s1", T0)]),
    );

    let run = l.ingest(&[]);
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let s = run.summary_any();
    assert_eq!(
        (s["broken_files"].as_u64(), s["events_added"].as_u64()),
        (Some(1), Some(1))
    );
    let q = quarantine(&l);
    let found = reason_of(&q, "big.ndjson");
    assert!(
        found.len() == 1
            && found[0]
                .1
                .contains("more than the per-file limit of 4194304 bytes"),
        "{found:?}"
    );
    let manifest = std::fs::read_to_string(
        l.dir
            .path()
            .join("lake/_cohort_bridge/ingest/currents/manifest.json"),
    )
    .unwrap();
    assert!(!manifest.contains("big.ndjson"), "not recorded as read");

    // With the default memory limit it lands.
    std::fs::write(&config, base).unwrap();
    let s = l.ingest(&[]).summary();
    assert_eq!(s["events_added"], 25_000);
    assert_eq!(l.rows().len(), 25_001);
}
