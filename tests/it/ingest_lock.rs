//! One writer per table: two ingests into the same table at once (two sources with the same
//! `table`, two processes) must not lose an event. The second either finishes after the first
//! or exits 5 naming the holder, and a rerun lands the rest. Checked with the parquet crate.

use std::process::{Command, Stdio};

use crate::ingest::{DAY, Lakeside, OPEN, T0, opens, write};
use crate::support::*;

const TWO_SOURCES: &str = "[lake]\nurl = \"lake\"\n\n\
    [sources.a]\nurl = \"a\"\ntable = \"partner_events\"\n\n\
    [sources.b]\nurl = \"b\"\ntable = \"partner_events\"\n";

#[test]
fn concurrent_ingests_into_one_table_lose_no_event() {
    let l = Lakeside::new();
    std::fs::write(l.dir.path().join("cohort-bridge.toml"), TWO_SOURCES).unwrap();
    // Each source: 24 files of 150 events spread over the same three days.
    let (files, per_file) = (24, 150);
    for src in ["a", "b"] {
        for f in 0..files {
            let ids: Vec<(String, i32)> = (0..per_file)
                .map(|i| (format!("{src}-{f}-{i}"), T0 + (i % 3) * DAY + f))
                .collect();
            let ids: Vec<(&str, i32)> = ids.iter().map(|(id, t)| (id.as_str(), *t)).collect();
            let dir = l
                .dir
                .path()
                .join(src)
                .join(format!("event_type={OPEN}/date=2026-11-27-{:02}", f % 24));
            std::fs::create_dir_all(&dir).unwrap();
            write(&dir.join(format!("{src}+{f}.avro")), &opens(&ids));
        }
    }
    let spawn = |source: &str| {
        Command::new(BIN)
            .current_dir(l.dir.path())
            .args(["ingest", "--source", source, "--checkpoint-every", "0"])
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let outputs = [
        ("a", a.wait_with_output().unwrap()),
        ("b", b.wait_with_output().unwrap()),
    ];
    for (source, out) in outputs {
        let out = Run(out);
        match out.code() {
            0 => {}
            5 => {
                let err = out.stderr();
                assert!(
                    err.contains("table `partner_events` is being written by another ingest")
                        && err.contains("lock-*.json"),
                    "{err}"
                );
                let again = l.ingest(&["--source", source]);
                assert_eq!(again.code(), 0, "{}", again.stderr());
            }
            other => panic!("source {source} exited {other}: {}", out.stderr()),
        }
    }
    // Every event of both sources, each exactly once (`rows` fails on a duplicate).
    let rows = l.rows();
    assert_eq!(rows.len(), 2 * files as usize * per_file as usize);
    // The lock is released: what is left is the released tombstone that keeps its generation.
    let locks = l
        .dir
        .path()
        .join("lake/_cohort_bridge/tables/partner_events");
    let held = crate::signals::locks(&locks);
    assert!(held.is_empty(), "{held:?}");
}

#[test]
fn a_held_table_lock_stops_another_ingest_with_exit_5() {
    let l = Lakeside::new();
    std::fs::write(l.dir.path().join("cohort-bridge.toml"), TWO_SOURCES).unwrap();
    let dir = l
        .dir
        .path()
        .join(format!("a/event_type={OPEN}/date=2026-11-27-10"));
    std::fs::create_dir_all(&dir).unwrap();
    write(&dir.join("a.avro"), &opens(&[("a1", T0)]));
    // Another live ingest holds the table.
    let locks = l
        .dir
        .path()
        .join("lake/_cohort_bridge/tables/partner_events");
    std::fs::create_dir_all(&locks).unwrap();
    let now = chrono::Utc::now();
    let held = serde_json::json!({
        "owner": "etl-7:4242", "run_id": "run-other",
        "acquired_at": now.to_rfc3339(),
        "expires_at": (now + chrono::Duration::hours(1)).to_rfc3339(),
    });
    std::fs::write(locks.join("lock-0000000001.json"), held.to_string()).unwrap();

    let run = l.ingest(&["--source", "a"]);
    assert_eq!(run.code(), 5, "{}", run.stderr());
    let err = run.stderr();
    for what in [
        "partner_events",
        "etl-7:4242",
        "run-other",
        "lock-*.json",
        "tables/partner_events",
    ] {
        assert!(err.contains(what), "{what} in {err}");
    }
    assert!(l.rows().is_empty(), "nothing was written");
    assert!(
        !l.dir
            .path()
            .join("lake/_cohort_bridge/ingest/a/manifest.json")
            .exists()
    );

    // Released as the message says: the ingest runs, and leaves no lock behind.
    std::fs::remove_file(locks.join("lock-0000000001.json")).unwrap();
    assert_eq!(l.ingest(&["--source", "a"]).summary()["events_added"], 1);
    assert!(crate::signals::locks(&locks).is_empty());
    assert_eq!(
        std::fs::read_dir(&locks).unwrap().count(),
        1,
        "one released tombstone"
    );
}
