//! Members known by an alias or a device id, mixed with external ids: the first identifier a
//! row has (user_id, then alias, then device_id) is the member; Cohort Import and webhooks
//! deliver each kind as its contract names it, `/users/track` takes aliases and refuses device
//! ids by name, files write a column per kind, and the change is computed per (kind, value).

use std::collections::BTreeSet;

use crate::support::*;
use crate::webhook::{HOOK_SECRET, Receiver, SECRET_VAR_HOOK, hook_project_with};

/// Pro users: those whose id starts with `0` by an alias (their device id is ignored: the
/// alias comes first), those starting with `1` by a device id, the rest by user_id; before
/// `$run_ts` reaches December, users starting with `2` are not in it.
const MIXED: &str = "SELECT \
    CASE WHEN substr(user_id, 1, 1) IN ('0', '1') THEN NULL ELSE user_id END AS user_id, \
    CASE WHEN substr(user_id, 1, 1) = '0' THEN concat('crm-', user_id) END AS alias_name, \
    'crm' AS alias_label, \
    CASE WHEN substr(user_id, 1, 1) IN ('0', '1') THEN concat('dev-', user_id) END AS device_id \
    FROM users WHERE plan = 'pro' \
    AND (substr(user_id, 1, 1) <> '2' OR $run_ts >= TIMESTAMP '2026-12-01T00:00:00Z')";

/// The members as the emulator keys them (`alias:NAME:LABEL`, `device:ID`).
fn expected(december: bool) -> BTreeSet<String> {
    users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .filter(|id| december || !id.starts_with('2'))
        .map(|id| match id.chars().next() {
            Some('0') => format!("alias:crm-{id}:crm"),
            Some('1') => format!("device:dev-{id}"),
            _ => id,
        })
        .collect()
}

const NOV: &str = "2026-11-27T12:00:00Z";
const DEC: &str = "2026-12-02T00:00:00Z";

#[test]
fn cohort_import_receives_aliases_and_device_ids_beside_external_ids() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000\nbatch_size = 300",
        &[("mixed", MIXED)],
    );
    let first = project.run(&["sync", "mixed", "--at", NOV]).summary();
    let want = expected(false);
    assert!(
        want.iter().any(|m| m.starts_with("alias:"))
            && want.iter().any(|m| m.starts_with("device:"))
    );
    assert_eq!(first["adds"], want.len() as u64);
    assert!(
        partner.members("mixed") == want,
        "the partner holds a different set"
    );
    assert!(partner.handle.stats().max_ids_per_request <= 300);

    // A month later some users join: only they are sent, whatever their kind.
    let second = project.run(&["sync", "mixed", "--at", DEC]).summary();
    let now = expected(true);
    assert_eq!(second["adds"], (now.len() - want.len()) as u64);
    assert_eq!(second["removes"], 0);
    assert!(partner.members("mixed") == now);
    assert_eq!(
        partner.handle.stats().redundant_adds,
        0,
        "nothing was sent twice"
    );
}

#[test]
fn webhooks_carry_each_identity_as_its_kind() {
    let receiver = Receiver::start(1_000_000);
    let project = hook_project_with(&receiver.url, &[("mixed", MIXED)]);
    project
        .run_with(
            &["sync", "mixed", "--at", NOV],
            &[
                (SECRET_VAR_HOOK, Some(HOOK_SECRET)),
                (crate::webhook::AUTH_VAR, Some(crate::webhook::AUTH)),
            ],
        )
        .summary();
    assert!(receiver.seen.lock().unwrap().members == expected(false));
}

#[test]
fn users_track_takes_aliases_and_refuses_device_ids_by_name() {
    let partner = Partner::plain();
    let project = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", MIXED)],
    );
    let run = project.run(&["sync", "mixed", "--at", NOV]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("cannot identify users by device id"),
        "{}",
        run.stderr()
    );
    assert!(
        partner.handle.attribute_true("cohort_mixed").is_empty(),
        "nothing was sent"
    );

    // Without device ids: aliases become `user_alias` objects.
    let no_devices = MIXED.replace(
        "CASE WHEN substr(user_id, 1, 1) IN ('0', '1') THEN concat('dev-', user_id) END AS device_id",
        "CAST(NULL AS VARCHAR) AS device_id",
    ).replace("IN ('0', '1') THEN NULL", "= '0' THEN NULL");
    let project = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", &no_devices)],
    );
    project.run(&["sync", "mixed", "--at", NOV]).summary();
    let want: BTreeSet<String> = expected(false)
        .into_iter()
        .map(|m| {
            m.strip_prefix("device:dev-")
                .map(str::to_owned)
                .unwrap_or(m)
        })
        .collect();
    let held: BTreeSet<String> = partner
        .handle
        .attribute_true("cohort_mixed")
        .into_iter()
        .collect();
    assert!(
        held == want,
        "{} held vs {} expected",
        held.len(),
        want.len()
    );
}

/// A member of a files row, keyed as the emulator keys them: (external, alias name, alias label,
/// device id); exactly one kind is filled.
fn file_member(f: [Option<String>; 4]) -> String {
    match f {
        [Some(id), None, None, None] => id,
        [None, Some(name), Some(label), None] => format!("alias:{name}:{label}"),
        [None, None, None, Some(device)] => format!("device:{device}"),
        other => panic!("a row must fill exactly one identifier kind: {other:?}"),
    }
}

fn parquet_members(path: &std::path::Path, columns: [&str; 4]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in read_all(path) {
        assert!(
            b.column_by_name("braze_id").is_some(),
            "every kind has its column"
        );
        for row in 0..b.num_rows() {
            out.insert(file_member(columns.map(|c| string_at(&b, c, row))));
        }
    }
    out
}

/// RFC 4180 with no quoted fields (the ids here need none): the header, then the rows.
fn csv_members(path: &std::path::Path, columns: [&str; 4]) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    let at = columns.map(|c| header.iter().position(|h| *h == c).unwrap());
    lines
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            assert_eq!(fields.len(), header.len(), "{line}");
            file_member(at.map(|i| Some(fields[i].to_string()).filter(|f| !f.is_empty())))
        })
        .collect()
}

#[test]
fn files_write_a_column_per_identifier_kind_and_the_whole_membership() {
    let out = tempfile::tempdir().unwrap();
    let project = Project::files(out.path(), "include_members = true", &[("mixed", MIXED)]);
    project.run(&["sync", "mixed", "--at", NOV]).summary();
    project.run(&["sync", "mixed", "--at", DEC]).summary();
    let runs = super::files::run_folders(&out.path().join("mixed"));
    assert_eq!(runs.len(), 2);
    let columns = ["external_id", "alias_name", "alias_label", "device_id"];
    let (nov, dec) = (expected(false), expected(true));
    let (dir, manifest) = &runs[0];
    assert_eq!(
        manifest["columns"],
        serde_json::json!([
            "external_id",
            "alias_name",
            "alias_label",
            "device_id",
            "braze_id",
            "email",
            "phone"
        ])
    );
    assert!(parquet_members(&dir.join("adds.parquet"), columns) == nov);
    assert!(parquet_members(&dir.join("members.parquet"), columns) == nov);
    let (dir, manifest) = &runs[1];
    assert_eq!(manifest["files"][2]["op"], "member");
    let joined: BTreeSet<String> = dec.difference(&nov).cloned().collect();
    assert!(!joined.is_empty());
    assert!(parquet_members(&dir.join("adds.parquet"), columns) == joined);
    assert!(parquet_members(&dir.join("removes.parquet"), columns).is_empty());
    assert!(parquet_members(&dir.join("members.parquet"), columns) == dec);

    // CSV, with the kinds' columns renamed.
    let out = tempfile::tempdir().unwrap();
    let project = Project::with_destination(
        lake(),
        &format!(
            "kind = \"files\"\nurl = \"{}\"\nformat = \"csv\"\n\
             columns = {{ user_id = \"EXTERNAL_ID\", alias_name = \"ALIAS_NAME\", \
             alias_label = \"ALIAS_LABEL\" }}",
            out.path().display()
        ),
        &[("mixed", MIXED)],
    );
    project.run(&["sync", "mixed", "--at", NOV]).summary();
    let runs = super::files::run_folders(&out.path().join("mixed"));
    let columns = ["EXTERNAL_ID", "ALIAS_NAME", "ALIAS_LABEL", "device_id"];
    assert!(csv_members(&runs[0].0.join("adds.csv"), columns) == nov);
    assert!(!runs[0].0.join("members.csv").exists(), "only when asked");

    // Two kinds in one column are refused by name.
    let project = Project::with_destination(
        lake(),
        &format!(
            "kind = \"files\"\nurl = \"{}\"\ncolumns = {{ device_id = \"alias_name\" }}",
            out.path().display()
        ),
        &[("mixed", MIXED)],
    );
    let run = project.run(&["sync", "mixed", "--at", NOV]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr()
            .contains("`alias_name` names two identifier kinds' columns"),
        "{}",
        run.stderr()
    );
}

/// Pro users, those whose id starts with `3` known only by a Braze id.
const WITH_BRAZE_IDS: &str = "SELECT \
    CASE WHEN substr(user_id, 1, 1) = '3' THEN NULL ELSE user_id END AS user_id, \
    CASE WHEN substr(user_id, 1, 1) = '3' THEN concat('bz-', user_id) END AS braze_id \
    FROM users WHERE plan = 'pro'";

fn pro_with_braze_ids() -> BTreeSet<String> {
    users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .map(|id| {
            if id.starts_with('3') {
                format!("braze:bz-{id}")
            } else {
                id
            }
        })
        .collect()
}

#[test]
fn braze_ids_go_to_users_track_and_cohort_import_refuses_them_by_name() {
    let partner = Partner::plain();
    let track = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", WITH_BRAZE_IDS)],
    );
    track.run(&["sync", "mixed", "--at", NOV]).summary();
    let held: BTreeSet<String> = partner
        .handle
        .attribute_true("cohort_mixed")
        .into_iter()
        .collect();
    let want = pro_with_braze_ids();
    assert!(want.iter().any(|m| m.starts_with("braze:")));
    assert!(
        held == want,
        "{} held vs {} expected",
        held.len(),
        want.len()
    );

    let import = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", WITH_BRAZE_IDS)],
    );
    let run = import.run(&["sync", "mixed", "--at", NOV]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("cannot identify users by Braze id"),
        "{}",
        run.stderr()
    );
    assert!(
        partner.handle.members("mixed").is_none(),
        "nothing was sent to Cohort Import"
    );
}

#[test]
fn the_identifier_priority_is_the_cohorts_to_choose() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", MIXED)],
    );
    // Device ids before aliases, and no external ids at all.
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[cohorts.mixed]\n",
        "[cohorts.mixed]\nidentifiers = [\"device_id\", \"alias\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    project.run(&["sync", "mixed", "--at", NOV]).summary();
    // Rows starting with 0 or 1 have a device id (it wins over the alias); the rest have neither.
    let want: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| u.user_id)
        .filter(|id| id.starts_with('0') || id.starts_with('1'))
        .map(|id| format!("device:dev-{id}"))
        .collect();
    assert!(!want.is_empty());
    assert!(partner.members("mixed") == want);

    let bad = std::fs::read_to_string(&config).unwrap().replace(
        "identifiers = [\"device_id\", \"alias\"]",
        "identifiers = [\"alias\", \"alias\"]",
    );
    std::fs::write(&config, bad).unwrap();
    let run = project.run(&["sync", "mixed", "--at", NOV]);
    assert_eq!(run.code(), 2);
    assert!(
        run.stderr()
            .contains("cohorts.mixed.identifiers: names a kind twice"),
        "{}",
        run.stderr()
    );
}

/// Ids holding the byte 0x01 (Hive's field separator, in dirty exports), of every kind: user
/// ids that look like the tool's own tags for a device and an alias, and ids with 0x01 inside.
/// Each row is (kind, value, label); `kinds` picks the kinds a destination takes.
const HOSTILE: &[(&str, &str, &str)] = &[
    ("user_id", "\u{1}d\u{1}victim-device", ""),
    ("user_id", "\u{1}a\u{1}nm\u{1}lbl", ""),
    ("user_id", "\u{1}b\u{1}victim-braze", ""),
    ("user_id", "\u{1}e\u{1}\u{1}x", ""),
    ("user_id", "\u{1}", ""),
    ("user_id", "plain\u{1}inside", ""),
    ("user_id", "u-1", ""),
    ("alias", "nm\u{1}x", "lbl"),
    ("alias", "crm", "l\u{1}b\u{1}l"),
    ("device_id", "dev\u{1}ice", ""),
    ("device_id", "\u{1}d\u{1}x", ""),
    ("device_id", "victim-device", ""),
    ("braze_id", "bz\u{1}id", ""),
];

/// A SQL string literal of `s`, its 0x01 bytes as `chr(1)` (no control byte in the file).
fn sql_text(s: &str) -> String {
    let parts: Vec<String> = s
        .split('\u{1}')
        .map(|p| format!("'{}'", p.replace('\'', "''")))
        .collect();
    format!("concat({})", parts.join(", chr(1), "))
}

/// The cohort of the `HOSTILE` rows of `kinds`, as its SQL and as the receiver keys it.
fn hostile(kinds: &[&str]) -> (String, BTreeSet<String>) {
    hostile_of(HOSTILE, kinds)
}

fn hostile_of(rows: &[(&str, &str, &str)], kinds: &[&str]) -> (String, BTreeSet<String>) {
    let rows: Vec<_> = rows.iter().filter(|r| kinds.contains(&r.0)).collect();
    let null = "CAST(NULL AS VARCHAR)";
    let values: Vec<String> = rows
        .iter()
        .map(|(kind, v, l)| {
            let v = sql_text(v);
            let cols = match *kind {
                "user_id" => [v.as_str(), null, null, null, null].map(str::to_owned),
                "alias" => [null.into(), v, sql_text(l), null.into(), null.into()],
                "device_id" => [null, null, null, v.as_str(), null].map(str::to_owned),
                _ => [null, null, null, null, v.as_str()].map(str::to_owned),
            };
            format!("({})", cols.join(", "))
        })
        .collect();
    let sql = format!(
        "SELECT user_id, alias_name, alias_label, device_id, braze_id FROM (VALUES {}) \
         AS t(user_id, alias_name, alias_label, device_id, braze_id)",
        values.join(", ")
    );
    let want = rows
        .iter()
        .map(|(kind, v, l)| match *kind {
            "user_id" => v.to_string(),
            "alias" => format!("alias:{v}:{l}"),
            "device_id" => format!("device:{v}"),
            _ => format!("braze:{v}"),
        })
        .collect();
    (sql, want)
}

fn show(set: &BTreeSet<String>) -> String {
    format!(
        "{:?}",
        set.iter()
            .map(|s| s.replace('\u{1}', "^A"))
            .collect::<Vec<_>>()
    )
}

/// Syncs twice: the first delivers every member, the second (the same cohort) nothing.
fn sync_twice(project: &Project, env: &[(&str, Option<&str>)]) {
    let mut env = env.to_vec();
    env.extend([
        (KEY_VAR, Some(KEY)),
        (SECRET_VAR, Some(SECRET)),
        (REST_VAR, Some(REST_KEY)),
    ]);
    let env = env.as_slice();
    let first = project
        .run_with(&["sync", "mixed", "--at", NOV], env)
        .summary();
    assert!(first["adds"].as_u64().unwrap() > 0, "{first}");
    let again = project
        .run_with(&["sync", "mixed", "--at", NOV], env)
        .summary();
    assert_eq!(
        (again["adds"].as_u64(), again["removes"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
}

#[test]
fn ids_holding_0x01_reach_cohort_import_as_their_own_kind() {
    let partner = Partner::plain();
    let (sql, want) = hostile(&["user_id", "alias", "device_id"]);
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", &sql)],
    );
    sync_twice(&project, &[]);
    let held = partner.members("mixed");
    assert!(held == want, "held {}\nwant {}", show(&held), show(&want));
}

#[test]
fn ids_holding_0x01_reach_users_track_as_their_own_kind() {
    let partner = Partner::plain();
    let (sql, want) = hostile(&["user_id", "alias", "braze_id"]);
    let project = Project::users_track(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("mixed", &sql)],
    );
    sync_twice(&project, &[]);
    let held: BTreeSet<String> = partner
        .handle
        .attribute_true("cohort_mixed")
        .into_iter()
        .collect();
    assert!(held == want, "held {}\nwant {}", show(&held), show(&want));
}

#[test]
fn ids_holding_0x01_reach_a_webhook_as_their_own_kind() {
    let receiver = Receiver::start(1_000_000);
    let (sql, want) = hostile(&["user_id", "alias", "device_id", "braze_id"]);
    let project = hook_project_with(&receiver.url, &[("mixed", &sql)]);
    sync_twice(
        &project,
        &[
            (SECRET_VAR_HOOK, Some(HOOK_SECRET)),
            (crate::webhook::AUTH_VAR, Some(crate::webhook::AUTH)),
        ],
    );
    let held = receiver.seen.lock().unwrap().members.clone();
    assert!(held == want, "held {}\nwant {}", show(&held), show(&want));
}

/// Every row of a files list, keyed as the receivers key them.
fn file_rows(path: &std::path::Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for b in read_all(path) {
        for row in 0..b.num_rows() {
            let f = [
                "external_id",
                "alias_name",
                "alias_label",
                "device_id",
                "braze_id",
            ]
            .map(|c| b.column_by_name(c).and_then(|_| string_at(&b, c, row)));
            out.insert(match f {
                [Some(id), None, None, None, None] => id,
                [None, Some(n), Some(l), None, None] => format!("alias:{n}:{l}"),
                [None, None, None, Some(d), None] => format!("device:{d}"),
                [None, None, None, None, Some(b)] => format!("braze:{b}"),
                other => panic!("a row must fill exactly one identifier kind: {other:?}"),
            });
        }
    }
    out
}

#[test]
fn ids_holding_0x01_are_written_to_files_as_their_own_kind() {
    // Every kind: a column per kind. External ids only: one column, each id as it is.
    for kinds in [
        &["user_id", "alias", "device_id", "braze_id"][..],
        &["user_id"],
    ] {
        let out = tempfile::tempdir().unwrap();
        let (sql, want) = hostile(kinds);
        let project = Project::files(out.path(), "include_members = true", &[("mixed", &sql)]);
        sync_twice(&project, &[]);
        let runs = super::files::run_folders(&out.path().join("mixed"));
        let (dir, manifest) = &runs[0];
        assert_eq!(
            manifest["columns"].as_array().unwrap().len(),
            if kinds.len() == 1 { 1 } else { 7 },
            "{manifest}"
        );
        for file in ["adds.parquet", "members.parquet"] {
            let held = file_rows(&dir.join(file));
            assert!(
                held == want,
                "{file}: held {}\nwant {}",
                show(&held),
                show(&want)
            );
        }
    }
}

/// Members an earlier release held exactly (external ids starting with 0x01 that are none of
/// its tags, which it kept as themselves, and ordinary ones of each kind): the cohort of the
/// `tests/data/state-v3-ids` fixture.
const LEGACY: &[(&str, &str, &str)] = &[
    ("user_id", "\u{1}x", ""),
    ("user_id", "\u{1}e\u{1}\u{1}x", ""),
    ("user_id", "\u{1}d\u{1}a\u{1}b", ""),
    ("user_id", "\u{1}A\u{1}1\u{1}\u{1}ab", ""),
    ("user_id", "u-1", ""),
    ("alias", "crm", "l\u{1}b"),
    ("device_id", "dev-1", ""),
];

/// `LEGACY` and `more` as a cohort's SQL and as the partner keys them.
fn legacy(more: &[(&str, &str, &str)]) -> (String, BTreeSet<String>) {
    let rows: Vec<(&str, &str, &str)> = LEGACY.iter().chain(more).copied().collect();
    hostile_of(&rows, &["user_id", "alias", "device_id"])
}

#[test]
fn state_written_before_the_injective_encoding_is_read_as_it_was_meant() {
    let partner = Partner::plain();
    let (sql, want) = legacy(&[]);
    // The partner holds what the fixture says it does.
    let seed = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("legacy", &sql)],
    );
    seed.run(&["sync", "legacy", "--at", NOV]).summary();
    assert!(partner.members("legacy") == want);
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("legacy", &sql)],
    );
    copy_dir(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/state-v3-ids"),
        &project.dir.path().join("state"),
    );
    // Written against another emulator: rebound, then nothing to send.
    let before = partner.handle.stats();
    let s = project
        .run(&["sync", "legacy", "--at", NOV, "--rebind"])
        .summary();
    assert_eq!(s["snapshot_members"], want.len() as u64, "{s}");
    assert_eq!(
        (s["adds"].as_u64(), s["removes"].as_u64()),
        (Some(0), Some(0)),
        "{s}"
    );
    assert_eq!(
        partner.handle.stats().ids_added,
        before.ids_added,
        "nothing re-sent"
    );
    let pointer = || -> serde_json::Value {
        serde_json::from_slice(
            &std::fs::read(project.cohort_state("legacy").join("current.json")).unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        pointer()["format"],
        2,
        "still readable by the release that wrote it"
    );

    // A member that release could not hold: its state is of a format that release refuses.
    let (sql, want) = legacy(&[("device_id", "d\u{1}e", "")]);
    std::fs::write(project.dir.path().join("queries/cohorts/legacy.sql"), &sql).unwrap();
    let s = project.run(&["sync", "legacy", "--at", NOV]).summary();
    assert_eq!(
        (s["adds"].as_u64(), s["removes"].as_u64()),
        (Some(1), Some(0)),
        "{s}"
    );
    assert!(
        partner.members("legacy") == want,
        "{}",
        show(&partner.members("legacy"))
    );
    assert_eq!(pointer()["format"], 4);
}

#[test]
fn an_id_over_64_kib_is_bad_input_naming_the_cohort_file() {
    let partner = Partner::plain();
    for sql in [
        "SELECT repeat('x', 70000) AS user_id",
        "SELECT CAST(NULL AS VARCHAR) AS user_id, repeat('d', 70000) AS device_id",
    ] {
        let project = Project::new(&partner.handle.base_url(), "", &[("long", sql)]);
        let run = project.run(&["sync", "long", "--at", NOV]);
        assert_eq!(run.code(), 2, "{}", run.stderr());
        assert!(
            run.stderr().contains("long.sql")
                && run.stderr().contains("the longest accepted is 65536 bytes"),
            "{}",
            run.stderr()
        );
        assert!(partner.handle.members("long").is_none(), "nothing was sent");
    }
}

/// Pro users, those whose id starts with `3` known by an email only (spelled with spaces and
/// capitals), plus rows of contacts only: a duplicate of one address in another spelling, a
/// phone to normalise, and one malformed email and one phone without a country code.
const CONTACTS: &str = "SELECT \
    CASE WHEN substr(user_id, 1, 1) = '3' THEN NULL ELSE user_id END AS user_id, \
    CASE WHEN substr(user_id, 1, 1) = '3' THEN concat(' Mail.', user_id, '@Example.COM ') END AS email, \
    CAST(NULL AS VARCHAR) AS phone \
    FROM users WHERE plan = 'pro' \
    UNION ALL SELECT NULL, 'dup@x.com', NULL \
    UNION ALL SELECT NULL, ' DUP@X.com', NULL \
    UNION ALL SELECT NULL, 'not-an-email', NULL \
    UNION ALL SELECT NULL, NULL, '+1 (415) 555-0100' \
    UNION ALL SELECT NULL, NULL, '415 555 0100'";

fn contacts_expected() -> BTreeSet<String> {
    let mut want: BTreeSet<String> = users()
        .into_iter()
        .filter(|u| u.plan.as_deref() == Some("pro"))
        .map(|u| match u.user_id.strip_prefix('3') {
            Some(_) => format!("email:mail.{}@example.com", u.user_id.to_lowercase()),
            None => u.user_id,
        })
        .collect();
    want.insert("email:dup@x.com".into());
    want.insert("phone:+14155550100".into());
    want
}

#[test]
fn emails_and_phones_are_normalised_and_the_malformed_dead_lettered_before_any_request() {
    let receiver = Receiver::start(1_000_000);
    let project = hook_project_with(&receiver.url, &[("contacts", CONTACTS)]);
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[cohorts.contacts]\n",
        "[cohorts.contacts]\nidentifiers = [\"user_id\", \"email\", \"phone\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let env = [
        (SECRET_VAR_HOOK, Some(HOOK_SECRET)),
        (crate::webhook::AUTH_VAR, Some(crate::webhook::AUTH)),
    ];
    let run = project.run_with(&["sync", "contacts", "--at", NOV], &env);
    // Delivered, with dead letters: exit 3, as for the partner's refusals.
    assert_eq!(run.code(), 3, "{}", run.stderr());
    let s = run.summary_any();
    let want = contacts_expected();
    assert!(want.iter().any(|m| m.starts_with("email:mail.")));
    let seen = receiver.seen.lock().unwrap().members.clone();
    assert!(
        seen == want,
        "the receiver holds another set: {} vs {} wanted; extra {:?}, missing {:?}",
        seen.len(),
        want.len(),
        seen.difference(&want).take(3).collect::<Vec<_>>(),
        want.difference(&seen).take(3).collect::<Vec<_>>()
    );
    assert_eq!(s["malformed"], 2, "{s}");
    assert_eq!(s["dead_letters"], 2, "{s}");
    assert_eq!(s["adds"], want.len() as u64, "{s}");
    // The dead letters name each member and why.
    let dir = project.cohort_state("contacts").join("dead_letters");
    let mut reasons = Vec::new();
    for file in std::fs::read_dir(&dir).unwrap() {
        for b in read_all(&file.unwrap().path()) {
            for r in 0..b.num_rows() {
                reasons.push((
                    string_at(&b, "user_id", r).unwrap(),
                    string_at(&b, "reason", r).unwrap(),
                ));
            }
        }
    }
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].0.ends_with("not-an-email") && reasons[0].1.contains("no `@`"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0.ends_with("415 555 0100") && reasons[1].1.contains("country code"),
        "{reasons:?}"
    );
    // A second run sends nothing: the spelling of an address is not a change.
    let again = project
        .run_with(&["sync", "contacts", "--at", NOV], &env)
        .summary_any();
    assert_eq!(
        (again["adds"].as_u64(), again["removes"].as_u64()),
        (Some(0), Some(0)),
        "{again}"
    );
}

#[test]
fn braze_destinations_refuse_emails_and_phones_by_name_before_planning() {
    let partner = Partner::plain();
    let project = Project::new(
        &partner.handle.base_url(),
        "requests_per_second = 5000",
        &[("contacts", CONTACTS)],
    );
    let config = project.dir.path().join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[cohorts.contacts]\n",
        "[cohorts.contacts]\nidentifiers = [\"user_id\", \"email\", \"phone\"]\n",
    );
    std::fs::write(&config, text).unwrap();
    let run = project.run(&["sync", "contacts", "--at", NOV]);
    assert_eq!(run.code(), 2, "{}", run.stderr());
    assert!(
        run.stderr().contains("cannot identify users by email"),
        "{}",
        run.stderr()
    );
    assert_eq!(partner.handle.stats().requests, 0, "nothing was sent");
}
