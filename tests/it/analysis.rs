//! The shipped analysis queries (`queries/analysis/`), run with `query` over small fixed data —
//! product tables written here, partner events ingested from NDJSON — against expected output.

use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;

use crate::support::*;

/// 2026-11-27 10:00:00 UTC, in seconds.
const T: i64 = 1_795_773_600;
const H: i64 = 3_600;

fn parquet(path: &Path, batch: RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(path).unwrap(), batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn strings(v: &[Option<&str>]) -> ArrayRef {
    Arc::new(StringArray::from(v.to_vec()))
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().join("lake");
        parquet(
            &lake.join("users/part-0.parquet"),
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![
                    Field::new("user_id", DataType::Utf8, false),
                    Field::new("plan", DataType::Utf8, true),
                ])),
                vec![
                    strings(&[Some("u1"), Some("u2"), Some("u3"), Some("u4"), Some("u5")]),
                    strings(&[Some("free"), Some("pro"), Some("pro"), Some("basic"), None]),
                ],
            )
            .unwrap(),
        );
        let events_schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, true),
            Field::new(
                "event_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
            Field::new("event_name", DataType::Utf8, false),
            Field::new("feature", DataType::Utf8, true),
        ]));
        let day = |date: &str, rows: &[(&str, i64, &str, Option<&str>)]| {
            let batch = RecordBatch::try_new(
                events_schema.clone(),
                vec![
                    strings(&rows.iter().map(|r| Some(r.0)).collect::<Vec<_>>()),
                    Arc::new(
                        TimestampMicrosecondArray::from(
                            rows.iter().map(|r| r.1 * 1_000_000).collect::<Vec<_>>(),
                        )
                        .with_timezone("UTC"),
                    ),
                    strings(&rows.iter().map(|r| Some(r.2)).collect::<Vec<_>>()),
                    strings(&rows.iter().map(|r| r.3).collect::<Vec<_>>()),
                ],
            )
            .unwrap();
            parquet(
                &lake.join(format!("events/event_date={date}/part-0.parquet")),
                batch,
            );
        };
        day(
            "2026-11-27",
            &[
                ("u1", T + H, "feature_used", Some("offline_mode")),
                ("u3", T + 2 * H, "feature_used", Some("offline_mode")),
                ("u5", T + 3 * H, "feature_used", Some("offline_mode")),
                ("u4", T + 4 * H, "session_start", None),
            ],
        );
        day(
            "2026-11-28",
            &[("u2", T + 30 * H, "feature_used", Some("offline_mode"))],
        );

        let ev = |ty: &str, id: &str, user: &str, t: i64, extra: serde_json::Value| {
            let mut m = serde_json::json!({"event_type": ty, "id": id, "user_id": format!("b-{user}"),
                "external_user_id": user, "time": t});
            m.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            m.to_string() + "\n"
        };
        let push = serde_json::json!({"campaign_id": "camp-offline", "campaign_name": "Try offline mode", "app_id": "a"});
        let email =
            serde_json::json!({"campaign_id": "camp-digest", "campaign_name": "Weekly digest"});
        let mut nd = String::new();
        for u in ["u1", "u2", "u3", "u4"] {
            nd += &ev(
                "users.messages.pushnotification.Send",
                &format!("s-{u}"),
                u,
                T,
                push.clone(),
            );
        }
        nd += &ev(
            "users.messages.pushnotification.Open",
            "o-u1",
            "u1",
            T + 600,
            push.clone(),
        );
        nd += &ev(
            "users.messages.pushnotification.Open",
            "o-u2",
            "u2",
            T + 1200,
            push.clone(),
        );
        for u in ["u1", "u2", "u3", "u6"] {
            nd += &ev(
                "users.messages.email.Send",
                &format!("es-{u}"),
                u,
                T,
                email.clone(),
            );
        }
        let click = |bot: bool| {
            let mut c = email.clone();
            c["is_suspected_bot_click"] = serde_json::Value::Bool(bot);
            c
        };
        nd += &ev(
            "users.messages.email.Click",
            "ec-u2",
            "u2",
            T + 60,
            click(false),
        );
        nd += &ev(
            "users.messages.email.Click",
            "ec-u3",
            "u3",
            T + 60,
            click(true),
        );
        nd += &ev(
            "users.messages.email.Click",
            "ec-u6",
            "u6",
            T + 60,
            click(false),
        );
        for (u, control) in [("u1", true), ("u2", true), ("u3", false), ("u4", false)] {
            let extra = serde_json::json!({"canvas_id": "cv1", "canvas_name": "Onboarding", "canvas_variation_id": "v1",
                "in_control_group": control});
            nd += &ev(
                "users.canvas.Entry",
                &format!("ce-{u}"),
                u,
                T - 24 * H,
                extra,
            );
        }
        std::fs::create_dir_all(dir.path().join("currents")).unwrap();
        std::fs::write(dir.path().join("currents/events.ndjson"), nd).unwrap();
        std::fs::write(
            dir.path().join("cohort-bridge.toml"),
            "[lake]\nurl = \"lake\"\n\n[tables.users]\npath = \"users\"\n\n[tables.events]\npath = \"events\"\n\
             partitions = [{ name = \"event_date\", type = \"date\" }]\n\n[sources.currents]\nurl = \"currents\"\n\n\
             [destinations.d]\nkind = \"files\"\nurl = \"out\"\n\n[cohorts.c]\nsql = \"c.sql\"\n\n\
             [campaigns.camp-offline]\ncohort = \"c\"\nfeature = \"offline_mode\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("c.sql"), "SELECT user_id FROM users").unwrap();
        let f = Fixture { dir };
        let run = f.run(&["ingest"]);
        assert_eq!(run.code(), 0, "{}", run.stderr());
        f
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = std::process::Command::new(BIN);
        cmd.current_dir(self.dir.path())
            .args(args)
            .env_remove("RUST_LOG");
        Run(cmd.output().unwrap())
    }

    fn analysis(&self, name: &str) -> String {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("queries/analysis")
            .join(name);
        let run = self.run(&["query", "-f", file.to_str().unwrap(), "--format", "csv"]);
        assert_eq!(run.code(), 0, "{name}: {}", run.stderr());
        run.stdout()
    }
}

#[test]
fn the_analysis_queries_give_the_expected_answers() {
    let f = Fixture::new();
    assert_eq!(
        f.analysis("push_open_to_feature.sql"),
        "campaign_id,feature,push,users,used_feature,pct_used\n\
         camp-offline,offline_mode,opened,2,1,50.0\n\
         camp-offline,offline_mode,not opened,2,1,50.0\n"
    );
    assert_eq!(
        f.analysis("email_click_through_by_plan.sql"),
        "campaign_name,plan,recipients,clickers,click_through_pct\n\
         Weekly digest,free,1,0,0.0\n\
         Weekly digest,pro,2,1,50.0\n\
         Weekly digest,unknown,1,1,100.0\n"
    );
    assert_eq!(
        f.analysis("canvas_control_vs_treatment.sql"),
        "canvas_name,arm,users,used_a_feature_72h,pct\n\
         Onboarding,control,2,2,100.0\n\
         Onboarding,treatment,2,1,50.0\n"
    );
}

#[test]
fn query_formats_and_refusals() {
    let f = Fixture::new();
    let json = f.run(&[
        "query",
        "SELECT event_type, COUNT(*) AS n FROM partner_events GROUP BY 1 ORDER BY 1",
        "--format",
        "json",
    ]);
    assert_eq!(json.code(), 0, "{}", json.stderr());
    let rows = json.summaries();
    assert_eq!(rows.len(), 5);
    assert_eq!(
        rows[0],
        serde_json::json!({"event_type": "users.canvas.Entry", "n": 4})
    );

    let out = f.dir.path().join("out.parquet");
    let p = f.run(&[
        "query",
        "SELECT * FROM users",
        "--format",
        "parquet",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(p.code(), 0, "{}", p.stderr());
    assert_eq!(
        read_all(&out).iter().map(|b| b.num_rows()).sum::<usize>(),
        5
    );

    // $run_date is bound from --at.
    let d = f.run(&[
        "query",
        "SELECT $run_date AS d",
        "--format",
        "csv",
        "--at",
        "2026-11-27T10:00:00Z",
    ]);
    assert_eq!(d.stdout(), "d\n2026-11-27\n");

    let refused = f.run(&["query", "DROP TABLE users"]);
    assert_eq!(refused.code(), 2);
    assert!(
        refused.stderr().contains("read-only"),
        "{}",
        refused.stderr()
    );
    // The run history is a table like any other.
    let runs = f.run(&[
        "query",
        "SELECT command, outcome FROM runs",
        "--format",
        "csv",
    ]);
    assert_eq!(runs.stdout(), "command,outcome\ningest,ingested\n");
}
