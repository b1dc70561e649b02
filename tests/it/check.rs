//! `check` plans every cohort against the real tables and lists every problem at once.

use crate::support::*;

#[test]
fn check_passes_on_a_good_project() {
    let project = Project::new(
        "http://127.0.0.1:9",
        "",
        &[(
            "pro",
            "SELECT user_id FROM users WHERE plan = 'pro' AND last_seen_at < $run_ts",
        )],
    );
    let run = project.run(&["check", "--at", AT]);
    assert_eq!(
        run.code(),
        0,
        "stdout: {}\nstderr: {}",
        run.stdout(),
        run.stderr()
    );
    // The check is in the run history.
    let history = project.run(&["runs", "--format", "json"]).summaries();
    assert_eq!(history.len(), 1);
    assert_eq!(
        (
            history[0]["command"].as_str(),
            history[0]["outcome"].as_str()
        ),
        (Some("check"), Some("ok"))
    );
}

#[test]
fn check_lists_every_problem_and_runs_nothing() {
    let marker = tempfile::tempdir().unwrap();
    let copy = format!(
        "COPY (SELECT user_id FROM users) TO '{}/x.parquet'",
        marker.path().display()
    );
    let project = Project::new(
        "http://127.0.0.1:9",
        "",
        &[
            ("good", "SELECT user_id FROM users"),
            ("typo", "SELECT user_id\nFRM users"),
            ("unknown_table", "SELECT user_id FROM nowhere"),
            ("no_user_id", "SELECT plan FROM users"),
            ("copy", &copy),
        ],
    );
    let run = project.run_with(&["check"], &[(KEY_VAR, None), (SECRET_VAR, None)]);
    assert_eq!(
        run.code(),
        2,
        "stdout: {}\nstderr: {}",
        run.stdout(),
        run.stderr()
    );
    let out = format!("{}{}", run.stdout(), run.stderr());
    for needle in ["typo.sql:2", "nowhere", "no_user_id.sql", "copy.sql"] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }
    assert!(
        !out.contains("good.sql"),
        "a good cohort is not a problem:\n{out}"
    );
    // Unset secrets are reported, by name, but only as warnings.
    assert!(out.contains(KEY_VAR), "{out}");
    assert!(
        std::fs::read_dir(marker.path()).unwrap().next().is_none(),
        "check executed a COPY"
    );
}
