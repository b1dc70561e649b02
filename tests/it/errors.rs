//! Every way a run can be refused says what is wrong and where, with the documented exit code,
//! and never prints a secret.

use crate::support::*;

const PRO: &str = "SELECT user_id FROM users WHERE plan = 'pro'";

#[test]
fn a_wrong_key_stops_with_exit_4_and_names_the_variables() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), "", &[("pro", PRO)]);
    let run = project.run_with(
        &["sync", "pro", "--at", AT],
        &[
            (KEY_VAR, Some("pk-wrong-key-9d8e")),
            (SECRET_VAR, Some(SECRET)),
        ],
    );
    assert_eq!(run.code(), 4, "stderr: {}", run.stderr());
    let err = run.stderr();
    assert!(err.contains("401"), "stderr: {err}");
    assert!(
        err.contains(KEY_VAR) && err.contains(SECRET_VAR),
        "the hint names both variables: {err}"
    );
    assert!(
        !err.contains("pk-wrong-key-9d8e") && !run.stdout().contains("pk-wrong-key-9d8e"),
        "a key was printed"
    );
    let s = run.summaries();
    assert_eq!(
        (s[0]["outcome"].as_str(), s[0]["exit_code"].as_i64()),
        (Some("failed"), Some(4))
    );
    // 401 is not retried: one request, and no member delivered.
    assert_eq!(partner.handle.stats().by_status.get(&401), Some(&1));
    assert!(partner.handle.members("pro").is_none());
}

#[test]
fn an_unset_secret_variable_is_named_before_any_work() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), "", &[("pro", PRO)]);
    let run = project.run_with(
        &["sync", "pro"],
        &[(KEY_VAR, Some(KEY)), (SECRET_VAR, None)],
    );
    assert_eq!(run.code(), 2, "stderr: {}", run.stderr());
    assert!(
        run.stderr().contains(SECRET_VAR),
        "stderr: {}",
        run.stderr()
    );
    assert_eq!(partner.handle.stats().requests, 0, "nothing is sent");
}

#[test]
fn secrets_never_appear_in_any_log_line() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 500\nrequests_per_second = 5000",
        &[("pro", PRO)],
    );
    for format in ["text", "json"] {
        let run = project.run_with(
            &["sync", "pro", "--at", AT, "--log-format", format],
            &[
                (KEY_VAR, Some(KEY)),
                (SECRET_VAR, Some(SECRET)),
                ("RUST_LOG", Some("trace")),
            ],
        );
        assert_eq!(run.code(), 0, "stderr: {}", run.stderr());
        let all = format!("{}{}", run.stdout(), run.stderr());
        assert!(all.lines().count() > 20, "trace logging should be verbose");
        assert!(
            !all.contains(KEY) && !all.contains(SECRET),
            "a secret was printed with --log-format {format}"
        );
    }
}

fn refused(project: &Project, cohort: &str) -> String {
    let run = project.run(&["sync", cohort, "--at", AT]);
    assert_eq!(run.code(), 2, "cohort {cohort}: stderr: {}", run.stderr());
    run.stderr()
}

#[test]
fn statements_other_than_one_query_are_refused() {
    let partner = Partner::plain();
    let copy_target = tempfile::tempdir().unwrap();
    let copy_sql = format!(
        "COPY (SELECT user_id FROM users) TO '{}/out.parquet'",
        copy_target.path().display()
    );
    let project = Project::new(
        &partner.handle.base_url(),
        "",
        &[
            (
                "ddl",
                "-- a comment\nCREATE TABLE leak AS SELECT user_id FROM users",
            ),
            ("drop", "DROP TABLE users"),
            ("dml", "INSERT INTO users (user_id) VALUES ('x')"),
            ("copy", &copy_sql),
            ("two", "SELECT user_id FROM users;\nDROP TABLE users;"),
            ("set", "SET datafusion.execution.batch_size = 1"),
        ],
    );
    for cohort in ["ddl", "drop", "dml", "copy", "two", "set"] {
        let err = refused(&project, cohort);
        assert!(
            err.contains(&format!("{cohort}.sql")),
            "names the file: {err}"
        );
    }
    assert!(
        refused(&project, "ddl").contains("ddl.sql:2"),
        "names the line of the statement"
    );
    assert!(
        refused(&project, "two").contains("two.sql:2"),
        "names the line of the second statement"
    );
    assert!(
        std::fs::read_dir(copy_target.path())
            .unwrap()
            .next()
            .is_none(),
        "COPY wrote nothing"
    );
    assert_eq!(partner.handle.stats().requests, 0, "nothing is sent");
}

#[test]
fn bad_sql_is_reported_with_file_line_and_column() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "",
        &[
            ("typo", "-- line 1\n-- line 2\nSELEC user_id FROM users\n"),
            (
                "nocol",
                "SELECT user_id\nFROM users\nWHERE nonexistent_col = 1\n",
            ),
            ("notable", "SELECT user_id FROM no_such_table"),
            ("noid", "SELECT plan FROM users"),
            ("intid", "SELECT 1 AS user_id"),
            (
                "param",
                "SELECT user_id FROM users WHERE last_seen_at < $run_time",
            ),
        ],
    );
    let typo = refused(&project, "typo");
    assert!(typo.contains("typo.sql:3:1"), "file:line:column: {typo}");
    let nocol = refused(&project, "nocol");
    assert!(
        nocol.contains("nocol.sql:3") && nocol.contains("nonexistent_col"),
        "{nocol}"
    );
    assert!(refused(&project, "notable").contains("no_such_table"));
    assert!(refused(&project, "noid").contains("no `user_id` column"));
    assert!(refused(&project, "intid").contains("must be a string"));
    let param = refused(&project, "param");
    assert!(
        param.contains("$run_time") && param.contains("$run_ts"),
        "names the unknown and the known: {param}"
    );
}

#[test]
fn config_errors_name_the_file_and_key() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 5000\nsurprise = 1",
        &[("pro", PRO)],
    );
    let run = project.run(&["sync", "pro"]);
    assert_eq!(run.code(), 2);
    let err = run.stderr();
    assert!(
        err.contains("cohort-bridge.toml") && err.contains("surprise"),
        "{err}"
    );

    let project = Project::new(
        &partner.handle.base_url(),
        "batch_size = 5000",
        &[("pro", PRO)],
    );
    let run = project.run(&["sync", "pro"]);
    assert_eq!(run.code(), 2);
    assert!(run.stderr().contains("batch_size"), "{}", run.stderr());

    let project = Project::new(&partner.handle.base_url(), "", &[("pro", PRO)]);
    let run = project.run(&["sync", "nope"]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr().contains("nope") && run.stderr().contains("pro"),
        "names the unknown cohort and the known ones: {}",
        run.stderr()
    );

    let run = project.run(&["sync", "pro", "--at", "yesterday"]);
    assert_eq!(run.code(), 2, "a bad flag is a usage error");
}
