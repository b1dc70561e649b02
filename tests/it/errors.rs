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

/// A project over its own small lake: `users` (copied from the shared lake), an empty table
/// folder and a table whose only file is not Parquet.
fn lake_project(partner: &Partner) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let own = dir.path().join("lake");
    copy_dir(&lake().join("users"), &own.join("users"));
    std::fs::create_dir_all(own.join("empty")).unwrap();
    std::fs::create_dir_all(own.join("broken")).unwrap();
    std::fs::write(
        own.join("broken/part-0.parquet"),
        b"PAR1 this is not parquet PAR1",
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("queries/cohorts")).unwrap();
    let mut toml = format!(
        "[lake]\nurl = \"{}\"\n[tables.users]\npath = \"users\"\n[tables.empty]\npath = \"empty\"\n\
         [tables.broken]\npath = \"broken\"\n[destinations.braze]\nkind = \"braze\"\n\
         base_url = \"{}\"\npartner = \"cohort-bridge\"\npartner_api_key_env = \"{KEY_VAR}\"\n\
         client_secret_env = \"{SECRET_VAR}\"\n",
        own.display(),
        partner.handle.base_url()
    );
    for (name, sql) in [
        ("pro", PRO),
        ("from_empty", "SELECT user_id FROM empty"),
        ("from_broken", "SELECT user_id FROM broken"),
    ] {
        std::fs::write(dir.path().join(format!("queries/cohorts/{name}.sql")), sql).unwrap();
        toml.push_str(&format!("[cohorts.{name}]\n"));
    }
    let file = dir.path().join("cohort-bridge.toml");
    std::fs::write(&file, toml).unwrap();
    (dir, own)
}

fn run_in(dir: &std::path::Path, args: &[&str]) -> Run {
    Run(command_in(dir, args).output().unwrap())
}

#[test]
fn an_unreadable_table_fails_only_the_cohorts_that_read_it() {
    let partner = Partner::plain();
    let (dir, _lake) = lake_project(&partner);
    let run = run_in(
        dir.path(),
        &["sync", "from_empty", "pro", "from_broken", "--at", AT],
    );
    assert_eq!(
        run.code(),
        1,
        "the first failure's code; stderr:\n{}",
        run.stderr()
    );
    let lines = run.summaries();
    assert_eq!(lines.len(), 3, "{}", run.stdout());
    assert_eq!(lines[1]["outcome"], "delivered", "{}", lines[1]);
    let pro: std::collections::BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .collect();
    assert_eq!(partner.members("pro"), pro);
    for (line, table) in [(&lines[0], "empty"), (&lines[2], "broken")] {
        assert_eq!(line["outcome"], "failed");
        let error = line["error"].as_str().unwrap();
        assert!(
            error.contains(&format!("`{table}`")),
            "names the table: {error}"
        );
    }
    // The corrupt file is named.
    let broken = lines[2]["error"].as_str().unwrap();
    assert!(
        broken.contains("broken/part-0.parquet is not readable Parquet"),
        "{broken}"
    );
    // No colour codes when stderr is not a terminal.
    assert!(
        !run.stderr().contains('\u{1b}'),
        "ANSI escapes: {}",
        run.stderr()
    );
}

#[test]
fn a_missing_lake_is_a_usage_error_saying_what_to_do() {
    let partner = Partner::plain();
    let (dir, lake) = lake_project(&partner);
    std::fs::remove_dir_all(&lake).unwrap();
    let run = run_in(dir.path(), &["sync", "pro", "--at", AT]);
    assert_eq!(run.code(), 2, "stderr:\n{}", run.stderr());
    assert!(run.stderr().contains("no lake at"), "{}", run.stderr());
    assert!(run.stderr().contains("generate --out"), "{}", run.stderr());
    assert_eq!(partner.handle.stats().requests, 0);
}
