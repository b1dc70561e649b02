//! Configuration that is fine piece by piece but conflicts as a whole is refused by `check`
//! and by `sync` alike (exit 2, naming both parties and the key), before anything is sent:
//! two cohorts with one `cohort_id` on one workspace, two cohorts writing one `/users/track`
//! boolean attribute, a `files` destination inside the lake, the state area or another
//! destination's folder, and a `--metrics-file` that is the project file, a query, or a file
//! this tool did not write.

use crate::support::*;

/// Replaces the project file's text.
fn edit(project: &Project, f: impl FnOnce(String) -> String) {
    let path = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, f(text)).unwrap();
}

/// `check` and `sync --all` (and `sync` of the first cohort alone) are refused with exit 2,
/// each naming every part of `expect`; nothing reaches the partner.
fn refused_by_check_and_sync(project: &Project, first: &str, expect: &[&str]) {
    let runs = [
        ("check", project.run(&["check", "--at", AT])),
        ("sync --all", project.run(&["sync", "--all", "--at", AT])),
        ("sync", project.run(&["sync", first, "--at", AT])),
    ];
    for (what, run) in runs {
        assert_eq!(run.code(), 2, "{what}: {}\n{}", run.stdout(), run.stderr());
        for e in expect {
            assert!(
                run.stderr().contains(e),
                "{what}: no `{e}` in\n{}",
                run.stderr()
            );
        }
    }
}

#[test]
fn two_cohorts_with_one_cohort_id_on_one_destination_are_refused() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "",
        &[("a", ACTIVE_30D), ("b", ACTIVE_30D)],
    );
    edit(&project, |t| {
        t.replace("cohort_id = \"a\"", "cohort_id = \"shared\"")
            .replace("cohort_id = \"b\"", "cohort_id = \"shared\"")
    });
    refused_by_check_and_sync(
        &project,
        "a",
        &[
            "cohorts.a and cohorts.b",
            "cohort_id `shared`",
            "destination `braze`",
        ],
    );
    assert!(
        partner.handle.members("shared").is_none(),
        "nothing was sent"
    );

    // Two destination sections on one workspace (same endpoint, same key) count as one.
    edit(&project, |t| {
        let braze = &t[t.find("[destinations.braze]").unwrap()..t.find("[cohorts.a]").unwrap()];
        let twin = braze.replace("[destinations.braze]", "[destinations.twin]");
        t.replace(
            "[cohorts.a]\n",
            &format!("{twin}\n[cohorts.a]\ndestination = \"braze\"\n"),
        )
        .replace("[cohorts.b]\n", "[cohorts.b]\ndestination = \"twin\"\n")
    });
    refused_by_check_and_sync(
        &project,
        "b",
        &[
            "cohorts.a and cohorts.b",
            "cohort_id `shared`",
            "destinations `braze` and `twin`, which point at the same workspace",
        ],
    );
    assert!(
        partner.handle.members("shared").is_none(),
        "nothing was sent"
    );

    // Their own ids: both deliver.
    edit(&project, |t| {
        t.replacen("cohort_id = \"shared\"", "cohort_id = \"a\"", 1)
    });
    let check = project.run(&["check", "--at", AT]);
    assert_eq!(check.code(), 0, "{}", check.stderr());
}

#[test]
fn two_cohorts_writing_one_users_track_boolean_attribute_are_refused() {
    let partner = Partner::plain();
    let project = Project::users_track(
        &partner.handle.base_url(),
        "attribute = \"vip\"",
        &[("a", ACTIVE_30D), ("b", ACTIVE_30D)],
    );
    refused_by_check_and_sync(
        &project,
        "a",
        &[
            "cohorts.a and cohorts.b",
            "the boolean attribute `vip`",
            "destination `braze`",
        ],
    );
    assert!(
        partner.handle.attribute_true("vip").is_empty(),
        "nothing was sent"
    );

    // One array attribute holding each cohort's own value is what arrays are for.
    edit(&project, |t| {
        t.replace(
            "attribute = \"vip\"",
            "membership = \"array\"\nattribute = \"vip\"",
        )
    });
    let check = project.run(&["check", "--at", AT]);
    assert_eq!(check.code(), 0, "{}", check.stderr());
    // ... unless two cohorts write the same value.
    edit(&project, |t| {
        t.replace("cohort_id = \"b\"", "cohort_id = \"a\"")
    });
    refused_by_check_and_sync(
        &project,
        "a",
        &[
            "cohorts.a and cohorts.b",
            "the value `a` of the array attribute `vip`",
        ],
    );
}

#[test]
fn a_files_destination_inside_the_lake_the_state_or_another_folder_is_refused() {
    let lake_dir = tempfile::tempdir().unwrap();
    copy_dir(lake(), lake_dir.path());
    let inside = lake_dir.path().join("exports");
    let project = Project::with_destination(
        lake_dir.path(),
        &format!("kind = \"files\"\nurl = \"{}\"", inside.display()),
        &[("active", ACTIVE_30D)],
    );
    refused_by_check_and_sync(
        &project,
        "active",
        &["destinations.braze.url", "lies inside the lake", "lake.url"],
    );
    assert!(!inside.exists(), "nothing was written in the lake");

    // Inside the state area (`state/` of the project folder).
    edit(&project, |t| {
        t.replace(&inside.display().to_string(), "state/exports")
    });
    refused_by_check_and_sync(
        &project,
        "active",
        &[
            "destinations.braze.url",
            "lies inside the state area",
            "state.url",
        ],
    );

    // Inside another files destination's folder.
    edit(&project, |t| {
        t.replace("state/exports", "drop/inner").replace(
            "[cohorts.active]\n",
            "[destinations.outer]\nkind = \"files\"\nurl = \"drop\"\n\n[cohorts.active]\ndestination = \"braze\"\n",
        )
    });
    refused_by_check_and_sync(
        &project,
        "active",
        &[
            "destinations.braze.url",
            "another `files` destination's folder",
            "destinations.outer.url",
        ],
    );

    // A folder of its own is fine.
    edit(&project, |t| t.replace("drop/inner", "elsewhere"));
    let sync = project.run(&["sync", "active", "--at", AT]);
    assert_eq!(sync.code(), 0, "{}", sync.stderr());
}

#[test]
fn a_metrics_file_that_is_the_project_a_query_or_not_ours_is_refused() {
    let partner = Partner::plain();
    let project = Project::new(&partner.handle.base_url(), "", &[("active", ACTIVE_30D)]);
    let dir = project.dir.path();
    let toml = std::fs::read(dir.join("cohort-bridge.toml")).unwrap();
    let sql = std::fs::read(dir.join("queries/cohorts/active.sql")).unwrap();
    std::fs::write(dir.join("notes.txt"), "my notes\n").unwrap();
    std::fs::write(dir.join("other.prom"), "# TYPE up gauge\nup 1\n# EOF\n").unwrap();
    for (file, expect) in [
        ("cohort-bridge.toml", "is the project file"),
        ("./queries/../cohort-bridge.toml", "is the project file"),
        ("queries/cohorts/active.sql", "queries folder"),
        ("queries/new.prom", "queries folder"),
        ("notes.txt", "is not one this tool wrote"),
        ("other.prom", "is not one this tool wrote"),
    ] {
        let run = project.run(&["sync", "active", "--at", AT, "--metrics-file", file]);
        assert_eq!(run.code(), 2, "{file}: {}", run.stderr());
        assert!(
            run.stderr().contains("--metrics-file") && run.stderr().contains(expect),
            "{file}: {}",
            run.stderr()
        );
    }
    assert_eq!(std::fs::read(dir.join("cohort-bridge.toml")).unwrap(), toml);
    assert_eq!(
        std::fs::read(dir.join("queries/cohorts/active.sql")).unwrap(),
        sql
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "my notes\n"
    );
    assert!(!dir.join("queries/new.prom").exists());
    assert!(project.state_files().is_empty(), "refused before any work");
    // A symlink to the project file is the project file.
    std::os::unix::fs::symlink(dir.join("cohort-bridge.toml"), dir.join("m.prom")).unwrap();
    let run = project.run(&["sync", "active", "--at", AT, "--metrics-file", "m.prom"]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert_eq!(std::fs::read(dir.join("cohort-bridge.toml")).unwrap(), toml);

    // An empty file (a placeholder) is taken, and the file written is ours the next time.
    std::fs::write(dir.join("ours.prom"), "").unwrap();
    for _ in 0..2 {
        let run = project.run(&["sync", "active", "--at", AT, "--metrics-file", "ours.prom"]);
        assert_eq!(run.code(), 0, "{}", run.stderr());
    }
    let written = std::fs::read_to_string(dir.join("ours.prom")).unwrap();
    assert!(
        written.contains("cohort_bridge_sync_last_run_success"),
        "{written}"
    );
}
