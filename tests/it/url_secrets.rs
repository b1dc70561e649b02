//! No secret in a URL, anywhere: a password in a destination's URL (or a token in its query,
//! or keys in the lake's URL, or a password in `--metrics-push`) is refused by `check` and
//! `sync` with exit 2, the message masking it, and after those refusals and a successful run
//! with a clean URL the secret is in no output, no state file and no column of the `runs`
//! table.

use std::path::Path;

use crate::support::*;

const PASSWORD: &str = "hunter2-pw-never-log-me";
const TOKEN: &str = "tok-5e1f-never-log-me";

/// Every file under `dir` that holds `needle`: Parquet files read with the independent reader
/// (every column as text, so compression cannot hide it), the others as bytes.
fn files_holding(dir: &Path, needle: &str, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() {
            files_holding(&path, needle, out);
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let mut text = String::from_utf8_lossy(&bytes).into_owned();
        if path.extension().is_some_and(|x| x == "parquet") {
            for b in read_all(&path) {
                for (i, _) in b.schema().fields().iter().enumerate() {
                    let col = arrow::compute::cast(b.column(i), &arrow::datatypes::DataType::Utf8);
                    if let Ok(col) = col {
                        let s = arrow::array::AsArray::as_string::<i32>(&col);
                        for v in s.iter().flatten() {
                            text.push_str(v);
                            text.push('\n');
                        }
                    }
                }
            }
        }
        if text.contains(needle) {
            out.push(path.display().to_string());
        }
    }
}

#[test]
fn a_password_in_a_url_is_refused_and_leaks_nowhere() {
    let partner = Partner::plain();
    let base = partner.handle.base_url();
    let with_password = base.replace("http://", &format!("http://bridge:{PASSWORD}@"));
    let project = Project::new(&with_password, "", &[("active", ACTIVE_30D)]);
    let dir = project.dir.path();
    let mut outputs = Vec::new();
    let mut refused = |args: &[&str], expect: &str| {
        let run = project.run(args);
        assert_eq!(
            run.code(),
            2,
            "{args:?}: {}\n{}",
            run.stdout(),
            run.stderr()
        );
        assert!(run.stderr().contains(expect), "{args:?}: {}", run.stderr());
        outputs.push((args.join(" "), run.stdout() + &run.stderr()));
    };
    let masked = format!("`{}`", base.replace("http://", "http://***@"));
    for args in [
        &["check", "--at", AT][..],
        &["sync", "active", "--at", AT],
        &["sync", "--all", "--at", AT],
        &["state", "show", "active"],
    ] {
        refused(args, "destinations.braze.base_url");
        refused(args, &masked);
        refused(args, "header_env");
    }
    assert!(
        partner.handle.members("active").is_none(),
        "nothing was sent"
    );

    // A token in the query of a URL is a secret too.
    let toml = dir.join("cohort-bridge.toml");
    let text = std::fs::read_to_string(&toml).unwrap();
    std::fs::write(
        &toml,
        text.replace(&with_password, &format!("{base}?tenant=acme&token={TOKEN}")),
    )
    .unwrap();
    refused(&["sync", "active", "--at", AT], "token=***");

    // Keys in the lake's URL.
    std::fs::write(
        &toml,
        text.replace(&with_password, &base).replacen(
            "[lake]\nurl = \"",
            &format!("[lake]\nurl = \"s3://AKIAEXAMPLE:{PASSWORD}@bucket/lake\"\n# was \""),
            1,
        ),
    )
    .unwrap();
    refused(&["check", "--at", AT], "lake.url");

    // A clean project: the sync succeeds; a password in --metrics-push is refused first.
    std::fs::write(&toml, text.replace(&with_password, &base)).unwrap();
    let push = format!("http://prom:{PASSWORD}@127.0.0.1:9/");
    refused(
        &["sync", "active", "--at", AT, "--metrics-push", &push],
        "--metrics-push: `http://***@127.0.0.1:9/`",
    );
    let run = project.run(&["sync", "active", "--at", AT]);
    assert_eq!(run.code(), 0, "{}", run.stderr());
    outputs.push(("sync".into(), run.stdout() + &run.stderr()));
    let show = project.run(&["state", "show", "active"]);
    assert_eq!(show.code(), 0, "{}", show.stderr());
    outputs.push(("state show".into(), show.stdout() + &show.stderr()));
    assert_eq!(partner.members("active"), active_at(at()));

    // The scan: every output, every file of the project (state, runs table, plan, current).
    for (args, out) in &outputs {
        for secret in [PASSWORD, TOKEN] {
            assert!(!out.contains(secret), "`{args}` printed the secret:\n{out}");
        }
    }
    for secret in [PASSWORD, TOKEN] {
        let mut holding = Vec::new();
        files_holding(&dir.join("state"), secret, &mut holding);
        assert!(holding.is_empty(), "the secret is stored in {holding:?}");
    }
    assert!(
        dir.join("state/runs").exists(),
        "the runs table was written and scanned"
    );
}
