//! `init`: scaffold a project — the commented project file, example cohorts and an analysis
//! query (this repository's own, so the scaffold and the documentation are the same files), a
//! `.gitignore` for local state, and a small sample lake so `check` and `sync --dry-run` work at
//! once. Refuses to overwrite anything.

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::error::{Error, Result, exit};
use crate::lake::Location;
use crate::synth::{IdShape, SynthSpec, generate};

/// The files `init` writes, relative to the project folder.
pub const FILES: &[(&str, &str)] = &[
    ("cohort-bridge.toml", include_str!("../cohort-bridge.toml")),
    (
        "queries/cohorts/paid_active_30d.sql",
        include_str!("../queries/cohorts/paid_active_30d.sql"),
    ),
    (
        "queries/cohorts/sessions_without_offline.sql",
        include_str!("../queries/cohorts/sessions_without_offline.sql"),
    ),
    (
        "queries/cohorts/active_30d.sql",
        include_str!("../queries/cohorts/active_30d.sql"),
    ),
    (
        "queries/analysis/push_open_to_feature.sql",
        include_str!("../queries/analysis/push_open_to_feature.sql"),
    ),
    (".gitignore", GITIGNORE),
];

/// Local state and the sample lake are not source.
const GITIGNORE: &str = "\
# cohort-bridge: the state area (snapshots, journals, run history) and the sample lake are data,
# not source. On a team, point [state] url at shared object storage instead.
/state/
/data/
";

/// Where the sample lake goes (the project file's `lake.url`).
const SAMPLE_LAKE: &str = "data/lake";
/// Users in the sample lake: enough for every example cohort to have members.
const SAMPLE_USERS: u64 = 10_000;

/// Writes the scaffold into `dir` (created if missing); `sample`: also a small lake.
pub async fn init(dir: &Path, sample: bool) -> Result<i32> {
    // A symlink on the way to a file (dangling or not) would have the file written wherever it
    // points: refused, whether the link is the file itself or a folder above it.
    let mut links: Vec<PathBuf> = Vec::new();
    let lake = dir.join(SAMPLE_LAKE);
    let targets = FILES
        .iter()
        .map(|(rel, _)| *rel)
        .chain(sample.then_some(SAMPLE_LAKE));
    for rel in targets {
        let mut path = dir.to_path_buf();
        for part in Path::new(rel).components() {
            path.push(part);
            if path.symlink_metadata().is_ok_and(|m| m.is_symlink()) && !links.contains(&path) {
                links.push(path.clone());
            }
        }
    }
    if !links.is_empty() {
        return Err(Error::config(
            None::<PathBuf>,
            format!(
                "init: nothing written, these are symbolic links (init never writes through \
                 one): {} (remove them, or pick an empty folder: `cohort-bridge init DIR`)",
                links
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let mut taken: Vec<PathBuf> = FILES
        .iter()
        .map(|(rel, _)| dir.join(rel))
        .filter(|p| p.exists())
        .collect();
    if sample && lake.exists() {
        taken.push(lake.clone());
    }
    if !taken.is_empty() {
        return Err(Error::config(
            None::<PathBuf>,
            format!(
                "init: nothing written, these already exist: {} (init never overwrites; pick an \
             empty folder: `cohort-bridge init DIR`)",
                taken
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    for (rel, text) in FILES {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::storage_at(parent.display(), e))?;
        }
        // `create_new`: never follows a symlink (one made since the check above included).
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| Error::storage_at(path.display(), e))?;
    }
    if sample {
        let location = Location::parse(SAMPLE_LAKE, dir, &Default::default())?;
        let mut spec = SynthSpec::new(SAMPLE_USERS, 30, 42, Utc::now().date_naive());
        spec.ids = IdShape::Uuid;
        generate(location.store.clone(), &location.root, &spec)
            .await
            .map_err(Error::storage_of)?;
    }
    let shown = dir.display();
    let cd = if dir == Path::new(".") {
        String::new()
    } else {
        format!("  cd {shown}\n")
    };
    let lake_line = if sample {
        format!(
            "a sample lake of {SAMPLE_USERS} users in {SAMPLE_LAKE}/ (`generate` makes bigger ones)"
        )
    } else {
        format!(
            "no lake: point [lake] url in cohort-bridge.toml at yours (or run `cohort-bridge generate --out {SAMPLE_LAKE}`)"
        )
    };
    eprintln!(
        "Created a cohort-bridge project in {shown}: cohort-bridge.toml, three cohorts in \
         queries/cohorts/, an analysis in queries/analysis/, .gitignore, and {lake_line}.\n\n\
         Next:\n{cd}  cohort-bridge check                      # plans every cohort against the lake\n  \
         cohort-bridge sync --all --dry-run       # what each cohort would send\n  \
         cohort-bridge emulator --port 8080 &     # a local partner (keys from BRAZE_PARTNER_API_KEY, BRAZE_CLIENT_SECRET)\n  \
         # set [destinations.braze] base_url = \"http://127.0.0.1:8080\", export both keys, then\n  \
         cohort-bridge sync --all\n"
    );
    Ok(exit::OK)
}
