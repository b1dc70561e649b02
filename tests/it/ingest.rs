//! Partner events back into the lake: Currents Avro files written here by an independent writer
//! (the `apache-avro` crate's `Writer`, with the Currents schemas), NDJSON, duplicates, late
//! files, backfills and quarantine. Checked by reading the written Parquet with the `parquet`
//! crate.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use apache_avro::types::{Record, Value};
use apache_avro::{Codec, DeflateSettings, Schema, Writer};

use crate::support::*;

const OPEN_SCHEMA: &str = r#"{"type":"record","name":"PushNotificationOpenEvent","namespace":"com.braze.currents",
 "fields":[{"name":"id","type":"string"},{"name":"user_id","type":"string"},
 {"name":"external_user_id","type":["null","string"],"default":null},{"name":"time","type":"int"},
 {"name":"timezone","type":["null","string"],"default":null},{"name":"app_group_id","type":["null","string"],"default":null},
 {"name":"app_id","type":"string"},{"name":"campaign_id","type":["null","string"],"default":null},
 {"name":"campaign_name","type":["null","string"],"default":null},{"name":"message_variation_id","type":["null","string"],"default":null},
 {"name":"canvas_id","type":["null","string"],"default":null},{"name":"canvas_name","type":["null","string"],"default":null},
 {"name":"platform","type":["null","string"],"default":null},{"name":"device_id","type":["null","string"],"default":null},
 {"name":"button_action_type","type":["null","string"],"default":null}]}"#;

const CLICK_SCHEMA: &str = r#"{"type":"record","name":"EmailClickEvent","namespace":"com.braze.currents",
 "fields":[{"name":"id","type":"string"},{"name":"user_id","type":"string"},
 {"name":"external_user_id","type":["null","string"],"default":null},{"name":"time","type":"int"},
 {"name":"campaign_id","type":["null","string"],"default":null},{"name":"campaign_name","type":["null","string"],"default":null},
 {"name":"email_address","type":"string"},{"name":"url","type":["null","string"],"default":null},
 {"name":"is_suspected_bot_click","type":["null","boolean"],"default":null}]}"#;

/// 2026-11-27 10:00:00 UTC.
pub const T0: i32 = 1_795_773_600;
pub const DAY: i32 = 86_400;

pub type Row = (
    String,
    i64,
    Option<String>,
    Option<String>,
    Option<String>,
    serde_json::Value,
);

pub struct Lakeside {
    pub dir: tempfile::TempDir,
}

impl Lakeside {
    pub fn new() -> Lakeside {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lake")).unwrap();
        std::fs::write(
            dir.path().join("cohort-bridge.toml"),
            "[lake]\nurl = \"lake\"\n\n[sources.currents]\nurl = \"currents\"\n",
        )
        .unwrap();
        Lakeside { dir }
    }

    pub fn currents(&self, event_type: &str, queued: &str, name: &str) -> PathBuf {
        let dir = self
            .dir
            .path()
            .join("currents/dataexport.prod-01.S3.integration.abc")
            .join(format!("event_type={event_type}"))
            .join(format!("date={queued}"))
            .join("42/zone");
        std::fs::create_dir_all(&dir).unwrap();
        dir.join(name)
    }

    pub fn ingest(&self, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .arg("ingest")
            .args(args)
            .env_remove("RUST_LOG");
        Run(cmd.output().unwrap())
    }

    pub fn day(&self, day: &str) -> PathBuf {
        self.dir.path().join(format!(
            "lake/partner_events/event_date={day}/part-0.parquet"
        ))
    }

    /// event_id → (event_type, time µs, external_user_id, campaign_name, url, properties).
    pub fn rows(&self) -> BTreeMap<String, Row> {
        let mut out = BTreeMap::new();
        let root = self.dir.path().join("lake/partner_events");
        let Ok(days) = std::fs::read_dir(&root) else {
            return out;
        };
        for d in days.flatten() {
            for b in read_all(&d.path().join("part-0.parquet")) {
                let time = b
                    .column_by_name("event_time")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<arrow::array::TimestampMicrosecondArray>()
                    .unwrap()
                    .clone();
                for r in 0..b.num_rows() {
                    let id = string_at(&b, "event_id", r).unwrap();
                    let props: serde_json::Value =
                        serde_json::from_str(&string_at(&b, "properties", r).unwrap()).unwrap();
                    let row = (
                        string_at(&b, "event_type", r).unwrap(),
                        time.value(r),
                        string_at(&b, "external_user_id", r),
                        string_at(&b, "campaign_name", r),
                        string_at(&b, "url", r),
                        props,
                    );
                    assert!(
                        out.insert(id.clone(), row).is_none(),
                        "event {id} stored twice"
                    );
                }
            }
        }
        out
    }
}

pub fn opens(ids: &[(&str, i32)]) -> Vec<u8> {
    let schema = Schema::parse_str(OPEN_SCHEMA).unwrap();
    let mut w = Writer::with_codec(
        &schema,
        Vec::new(),
        Codec::Deflate(DeflateSettings::default()),
    )
    .unwrap();
    for (id, time) in ids {
        let mut r = Record::new(&schema).unwrap();
        r.put("id", *id);
        r.put("user_id", format!("braze-{id}"));
        r.put(
            "external_user_id",
            Value::Union(1, Box::new(Value::String(format!("u-{id}")))),
        );
        r.put("time", *time);
        r.put("timezone", Value::Union(0, Box::new(Value::Null)));
        r.put(
            "app_group_id",
            Value::Union(1, Box::new(Value::String("ag1".into()))),
        );
        r.put("app_id", "app-ios");
        r.put(
            "campaign_id",
            Value::Union(1, Box::new(Value::String("camp-1".into()))),
        );
        r.put(
            "campaign_name",
            Value::Union(1, Box::new(Value::String("Try offline mode".into()))),
        );
        r.put(
            "message_variation_id",
            Value::Union(0, Box::new(Value::Null)),
        );
        r.put("canvas_id", Value::Union(0, Box::new(Value::Null)));
        r.put("canvas_name", Value::Union(0, Box::new(Value::Null)));
        r.put(
            "platform",
            Value::Union(1, Box::new(Value::String("ios".into()))),
        );
        r.put(
            "device_id",
            Value::Union(1, Box::new(Value::String(format!("dev-{id}")))),
        );
        r.put("button_action_type", Value::Union(0, Box::new(Value::Null)));
        w.append_value(r).unwrap();
    }
    w.into_inner().unwrap()
}

fn clicks(ids: &[(&str, i32)]) -> Vec<u8> {
    let schema = Schema::parse_str(CLICK_SCHEMA).unwrap();
    let mut w = Writer::new(&schema, Vec::new()).unwrap();
    for (id, time) in ids {
        let mut r = Record::new(&schema).unwrap();
        r.put("id", *id);
        r.put("user_id", format!("braze-{id}"));
        r.put(
            "external_user_id",
            Value::Union(1, Box::new(Value::String(format!("u-{id}")))),
        );
        r.put("time", *time);
        r.put(
            "campaign_id",
            Value::Union(1, Box::new(Value::String("camp-2".into()))),
        );
        r.put(
            "campaign_name",
            Value::Union(1, Box::new(Value::String("Weekly digest".into()))),
        );
        r.put("email_address", format!("{id}@example.com"));
        r.put(
            "url",
            Value::Union(
                1,
                Box::new(Value::String("https://example.com/feature".into())),
            ),
        );
        r.put(
            "is_suspected_bot_click",
            Value::Union(1, Box::new(Value::Boolean(false))),
        );
        w.append_value(r).unwrap();
    }
    w.into_inner().unwrap()
}

pub const OPEN: &str = "users.messages.pushnotification.Open";
const CLICK: &str = "users.messages.email.Click";

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn currents_avro_is_ingested_field_for_field_deduplicated_and_idempotent() {
    let l = Lakeside::new();
    write(
        &l.currents(OPEN, "2026-11-27-10", "a+0+0.avro"),
        &opens(&[("o1", T0), ("o2", T0 + 60)]),
    );
    // At-least-once delivery: o2 again in a second file, next to a new event.
    write(
        &l.currents(OPEN, "2026-11-27-11", "a+0+2.avro"),
        &opens(&[("o2", T0 + 60), ("o3", T0 + DAY)]),
    );
    write(
        &l.currents(CLICK, "2026-11-27-10", "b+0+0.avro"),
        &clicks(&[("c1", T0 + 5)]),
    );

    let run = l.ingest(&[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let s = run.summary();
    assert_eq!(
        (s["files_read"].as_u64(), s["records_read"].as_u64()),
        (Some(3), Some(5))
    );
    assert_eq!(
        (s["events_added"].as_u64(), s["duplicates"].as_u64()),
        (Some(4), Some(1))
    );

    let rows = l.rows();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        ["c1", "o1", "o2", "o3"]
    );
    let (ty, time, ext, campaign, url, props) = &rows["o1"];
    assert_eq!(ty, OPEN);
    assert_eq!(*time, i64::from(T0) * 1_000_000);
    assert_eq!(ext.as_deref(), Some("u-o1"));
    assert_eq!(campaign.as_deref(), Some("Try offline mode"));
    assert_eq!(*url, None);
    // Everything without a column of its own is kept.
    assert_eq!(props["app_id"], "app-ios");
    assert_eq!(props["device_id"], "dev-o1");
    assert_eq!(props["app_group_id"], "ag1");
    let (ty, _, _, _, url, props) = &rows["c1"];
    assert_eq!(ty, CLICK);
    assert_eq!(url.as_deref(), Some("https://example.com/feature"));
    assert_eq!(props["email_address"], "c1@example.com");
    assert_eq!(props["is_suspected_bot_click"], false);
    // Partitioned by the event's own day.
    assert!(l.day("2026-11-27").exists() && l.day("2026-11-28").exists());

    // A rerun reads nothing and changes nothing.
    let before = std::fs::read(l.day("2026-11-27")).unwrap();
    let again = l.ingest(&[]).summary();
    assert_eq!(
        (
            again["files_read"].as_u64(),
            again["files_skipped"].as_u64()
        ),
        (Some(0), Some(3))
    );
    assert_eq!(std::fs::read(l.day("2026-11-27")).unwrap(), before);

    // A later delivery of an event already stored (another run, another file) adds nothing.
    write(
        &l.currents(OPEN, "2026-11-28-02", "redelivered.avro"),
        &opens(&[("o1", T0)]),
    );
    let third = l.ingest(&[]).summary();
    assert_eq!(
        (
            third["files_read"].as_u64(),
            third["events_added"].as_u64(),
            third["duplicates"].as_u64()
        ),
        (Some(1), Some(0), Some(1))
    );
    assert_eq!(l.rows().len(), 4);
}

#[test]
fn a_late_file_lands_in_its_event_date_and_a_backfill_replaces_exactly_one_day() {
    let l = Lakeside::new();
    write(
        &l.currents(OPEN, "2026-11-27-10", "a.avro"),
        &opens(&[("o1", T0), ("o2", T0 + DAY)]),
    );
    l.ingest(&[]).summary();

    // Queued two days later, about an event of the 27th.
    write(
        &l.currents(OPEN, "2026-11-29-08", "late.avro"),
        &opens(&[("late", T0 + 100)]),
    );
    let s = l.ingest(&[]).summary();
    assert_eq!(s["days_written"], serde_json::json!(["2026-11-27"]));
    assert!(l.rows().contains_key("late"));

    // The source corrects the 27th (o1's file is withdrawn); a backfill of that day only.
    std::fs::remove_file(l.currents(OPEN, "2026-11-27-10", "a.avro")).unwrap();
    write(
        &l.currents(OPEN, "2026-11-27-10", "a-fixed.avro"),
        &opens(&[("o2", T0 + DAY)]),
    );
    let day28 = std::fs::read(l.day("2026-11-28")).unwrap();
    let b = l
        .ingest(&["--from", "2026-11-27", "--to", "2026-11-27"])
        .summary();
    assert_eq!(b["mode"], "backfill");
    assert_eq!(b["days_written"], serde_json::json!(["2026-11-27"]));
    let rows = l.rows();
    assert_eq!(
        rows.keys().cloned().collect::<Vec<_>>(),
        ["late", "o2"],
        "the 27th holds exactly its sources now"
    );
    assert_eq!(
        std::fs::read(l.day("2026-11-28")).unwrap(),
        day28,
        "other days are untouched"
    );
}

#[test]
fn bad_input_is_quarantined_and_good_data_lands() {
    let l = Lakeside::new();
    write(
        &l.currents(OPEN, "2026-11-27-10", "good.avro"),
        &opens(&[("g1", T0), ("g2", T0 + 1)]),
    );
    // Truncated in the middle of its data block: nothing after the damage is readable.
    let mut truncated = opens(&[("t1", T0), ("t2", T0 + 2)]);
    truncated.truncate(truncated.len() - 40);
    write(
        &l.currents(OPEN, "2026-11-27-10", "truncated.avro"),
        &truncated,
    );
    write(
        &l.currents(OPEN, "2026-11-27-10", "garbage.avro"),
        b"Obj\x01 this is not avro",
    );
    // NDJSON with a bad line, a record without an id, a wrong type, and one good event.
    let nd = l.dir.path().join("currents/extra.ndjson");
    std::fs::write(
        &nd,
        format!(
            "{{\"event_type\":\"{OPEN}\",\"id\":\"n1\",\"time\":{T0},\"external_user_id\":\"u-n1\"}}\n\
             {{not json\n\
             {{\"event_type\":\"{OPEN}\",\"time\":{T0}}}\n\
             {{\"event_type\":\"{OPEN}\",\"id\":\"n3\",\"time\":\"yesterday\"}}\n"
        ),
    )
    .unwrap();

    let run = l.ingest(&[]);
    assert_eq!(
        run.code(),
        3,
        "exit 3 when anything was quarantined: {}",
        run.stderr()
    );
    let s = run.summary_any();
    assert_eq!(s["quarantined_records"], 3);
    assert_eq!(s["broken_files"], 2);
    let rows = l.rows();
    assert!(
        ["g1", "g2", "n1"].iter().all(|id| rows.contains_key(*id)),
        "good data landed: {:?}",
        rows.keys()
    );

    let qdir = std::fs::read_dir(l.dir.path().join("lake/_quarantine/partner_events"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(qdir.join("quarantine.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let reasons: Vec<String> = lines
        .iter()
        .map(|q| format!("{} @{}: {}", q["file"], q["position"], q["reason"]))
        .collect();
    let has = |file: &str, what: &str| {
        lines.iter().any(|q| {
            q["file"].as_str().unwrap().ends_with(file)
                && q["reason"].as_str().unwrap().contains(what)
        })
    };
    assert!(has("extra.ndjson", "not JSON"), "{reasons:#?}");
    assert!(has("extra.ndjson", "`id` is missing"), "{reasons:#?}");
    assert!(
        has("extra.ndjson", "`time` must be an integer"),
        "{reasons:#?}"
    );
    assert!(
        has("garbage.avro", "not a readable Avro file"),
        "{reasons:#?}"
    );
    assert!(has("truncated.avro", "Avro"), "{reasons:#?}");
    // The broken files themselves are kept for inspection.
    assert_eq!(std::fs::read_dir(qdir.join("files")).unwrap().count(), 2);
}

#[test]
fn ndjson_carrying_the_same_events_yields_the_same_rows() {
    let avro = Lakeside::new();
    write(
        &avro.currents(OPEN, "2026-11-27-10", "a.avro"),
        &opens(&[("o1", T0), ("o2", T0 + 7)]),
    );
    avro.ingest(&[]).summary();

    let nd = Lakeside::new();
    let dir = nd.currents(OPEN, "2026-11-27-10", "x");
    let mut text = String::new();
    for (id, t) in [("o1", T0), ("o2", T0 + 7)] {
        text.push_str(&serde_json::json!({
            "id": id, "user_id": format!("braze-{id}"), "external_user_id": format!("u-{id}"), "time": t,
            "timezone": null, "app_group_id": "ag1", "app_id": "app-ios", "campaign_id": "camp-1",
            "campaign_name": "Try offline mode", "message_variation_id": null, "canvas_id": null,
            "canvas_name": null, "platform": "ios", "device_id": format!("dev-{id}"), "button_action_type": null,
        }).to_string());
        text.push('\n');
    }
    std::fs::write(dir.with_file_name("a.ndjson"), text).unwrap();
    nd.ingest(&[]).summary();
    assert_eq!(avro.rows(), nd.rows());
}

#[test]
fn avro_written_by_another_implementation_is_read_with_every_codec() {
    // Files written by fastavro (Python): tests/data/fastavro/make.py.
    let l = Lakeside::new();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fastavro");
    let codecs = ["null", "deflate", "snappy", "zstandard"];
    for codec in codecs {
        let name = format!("open-{codec}.avro");
        std::fs::copy(
            fixtures.join(&name),
            l.currents(OPEN, "2026-11-27-10", &name),
        )
        .unwrap();
    }
    let run = l.ingest(&[]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    let s = run.summary();
    assert_eq!(
        (s["records_read"].as_u64(), s["events_added"].as_u64()),
        (Some(16), Some(16))
    );
    let rows = l.rows();
    assert_eq!(rows.len(), 16);
    for codec in codecs {
        for i in 0..4i64 {
            let (ty, time, ext, campaign, url, props) = &rows[&format!("fa-{codec}-{i}")];
            assert_eq!(ty, OPEN);
            assert_eq!(*time, (i64::from(T0) + i * 3600) * 1_000_000);
            let want_ext = (i != 3).then(|| format!("u{i:09}"));
            assert_eq!(ext, &want_ext, "{codec} {i}");
            assert_eq!(campaign.as_deref(), Some("Ünïcode \"quoted\" campaign"));
            assert_eq!(*url, None);
            assert_eq!(props["timezone"], "Europe/Paris");
            assert_eq!(props["device_id"], format!("dev-{i}"));
            assert_eq!(props["ad_tracking_enabled"], i % 2 == 0);
            let extras = if i == 3 {
                serde_json::json!({"a": "1", "b": "2"})
            } else {
                serde_json::Value::Null
            };
            assert_eq!(props["extras"], extras, "{codec} {i}");
        }
    }
}

#[test]
fn an_interrupted_backfill_resumes_where_it_stopped_and_holds_other_ingests() {
    let l = Lakeside::new();
    write(
        &l.currents(OPEN, "2026-11-27-10", "a.avro"),
        &opens(&[("a1", T0), ("a2", T0 + 5)]),
    );
    // Queued on the 28th: an event of the 28th and a late one of the 27th.
    write(
        &l.currents(OPEN, "2026-11-28-10", "b.avro"),
        &opens(&[("b1", T0 + DAY), ("b-late", T0 + 60)]),
    );
    write(
        &l.currents(OPEN, "2026-11-29-10", "c.avro"),
        &opens(&[("c1", T0 + 2 * DAY)]),
    );
    assert_eq!(l.ingest(&[]).summary()["events_added"], 5);

    // The source withdraws a2; backfill the three days, with a checkpoint after every file.
    std::fs::remove_file(l.currents(OPEN, "2026-11-27-10", "a.avro")).unwrap();
    write(
        &l.currents(OPEN, "2026-11-27-10", "a-fixed.avro"),
        &opens(&[("a1", T0)]),
    );
    // The 29th cannot be written (a file stands where its folder goes): the run dies there,
    // after the 27th and 28th were replaced and checkpointed.
    let day29 = l.day("2026-11-29");
    let folder29 = day29.parent().unwrap().to_path_buf();
    std::fs::remove_dir_all(&folder29).unwrap();
    std::fs::write(&folder29, b"in the way").unwrap();
    let range = ["--from", "2026-11-27", "--to", "2026-11-29"];
    let every_file = ["--checkpoint-every", "0"];
    let args: Vec<&str> = range.iter().chain(&every_file).copied().collect();
    let failed = l.ingest(&args);
    assert_eq!(failed.code(), 1, "{}", failed.stderr());
    assert!(
        l.dir
            .path()
            .join("lake/_cohort_bridge/ingest/currents/backfill.json")
            .exists()
    );

    // Until it is finished, other ingests are refused, naming the command that finishes it.
    for other in [vec![], vec!["--from", "2026-11-28", "--to", "2026-11-28"]] {
        let refused = l.ingest(&other);
        assert_eq!(refused.code(), 2, "{}", refused.stderr());
        assert!(
            refused
                .stderr()
                .contains("--from 2026-11-27 --to 2026-11-29"),
            "{}",
            refused.stderr()
        );
    }

    // Resumed: only the file not yet done is read; replaced days are merged into, not redone.
    std::fs::remove_file(&folder29).unwrap();
    let resumed = l.ingest(&args);
    assert_eq!(resumed.code(), 0, "{}", resumed.stderr());
    let s = resumed.summary();
    assert_eq!(s["resumed"], true);
    assert_eq!(
        (s["files_read"].as_u64(), s["files_skipped"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(s["days_written"], serde_json::json!(["2026-11-29"]));
    assert_eq!(
        l.rows().keys().cloned().collect::<Vec<_>>(),
        ["a1", "b-late", "b1", "c1"],
        "exactly the corrected sources, late event included"
    );
    assert!(
        !l.dir
            .path()
            .join("lake/_cohort_bridge/ingest/currents/backfill.json")
            .exists()
    );
    // And the project is back to normal ingests.
    assert_eq!(l.ingest(&[]).summary()["files_read"], 0);
}
