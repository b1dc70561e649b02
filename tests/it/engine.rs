//! The query engine's memory pool: operators that can spill do so under a small
//! `engine.memory_limit` and still give the exact answer; an operator that cannot spill fails
//! with a message naming the setting.

use std::io::Write;

use crate::support::*;

/// A project over the shared test lake with `[engine]` settings appended.
fn project(engine: &str) -> Project {
    let project = Project::new("http://127.0.0.1:9", "", &[]);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(project.dir.path().join("cohort-bridge.toml"))
        .unwrap();
    write!(file, "\n[engine]\n{engine}\n").unwrap();
    project
}

#[test]
fn a_sort_larger_than_the_memory_pool_spills_and_gives_the_same_answer() {
    // The events eight times over (~300k rows) sorted: tens of MB of sort state against a
    // 16 MiB pool, in one partition (with a sorter per partition, DataFusion's merges of their
    // spill files compete for a pool this small and sometimes fail).
    let sql = "SELECT e.user_id, e.event_time, e.event_name, c.copy FROM events e \
               CROSS JOIN (VALUES (1), (2), (3), (4), (5), (6), (7), (8)) AS c(copy) \
               ORDER BY e.user_id, e.event_time, e.event_name, c.copy";
    let roomy = project("");
    let expected = roomy.run(&["query", sql, "--format", "csv"]);
    assert_eq!(expected.code(), 0, "{}", expected.stderr());
    let rows = expected.stdout().lines().count();
    assert!(rows > 250_000, "fixture: only {rows} rows");

    let spill = tempfile::tempdir().unwrap();
    let tight = project(&format!(
        "memory_limit = \"16MiB\"\ntarget_partitions = 1\nspill_dir = \"{}\"",
        spill.path().display()
    ));
    let got = tight.run_with(
        &["query", sql, "--format", "csv"],
        &[("RUST_LOG", Some("warn,datafusion_physical_plan=debug"))],
    );
    assert_eq!(got.code(), 0, "{}", got.stderr());
    assert!(
        got.stderr().contains("Spilling sort data"),
        "the sort did not spill: {}",
        got.stderr()
    );
    assert!(
        got.stdout() == expected.stdout(),
        "the spilled sort differs"
    );
}

#[test]
fn an_operator_that_cannot_spill_fails_naming_the_setting() {
    // A hash join keeps its whole build side in memory: ~120k events will not fit in 1 MiB.
    let sql = "SELECT count(*) AS n FROM events a JOIN events b \
               ON a.user_id = b.user_id AND a.event_time = b.event_time";
    let tight = project("memory_limit = \"1MiB\"");
    let run = tight.run(&["query", sql]);
    assert_eq!(run.code(), 1, "{}", run.stderr());
    let err = run.stderr();
    assert!(
        err.contains("engine.memory_limit") && err.contains("(1 MiB)"),
        "{err}"
    );
    assert!(err.contains("cohort-bridge.toml"), "{err}");

    let roomy = project("");
    let ok = roomy.run(&["query", sql, "--format", "csv"]);
    assert_eq!(ok.code(), 0, "{}", ok.stderr());
}
