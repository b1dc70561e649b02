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
    let project = Project::with_destination(
        lake(),
        &format!(
            "kind = \"files\"\nurl = \"{}\"\ninclude_members = true",
            out.path().display()
        ),
        &[("mixed", MIXED)],
    );
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
            "braze_id"
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
