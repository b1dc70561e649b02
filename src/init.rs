//! `init`: scaffold a project — the commented project file, example cohorts and an analysis
//! query (this repository's own, so the scaffold and the documentation are the same files), a
//! `.gitignore` for local state, and a small sample lake so `check` and `sync --dry-run` work at
//! once. Refuses to overwrite anything. (The command, which says what to do next, is
//! `cli::init`.)

use std::path::{Path, PathBuf};

use chrono::Utc;

use crate::error::{Error, Result};
use crate::lake::Location;
use crate::synth::{IdShape, SynthSpec, generate};

/// The files of its own `init` writes, relative to the project folder.
const OWN: &[(&str, &str)] = &[
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

/// Every file `init` writes, by path under the project: the project file, the cohorts, the
/// analyses, the report's sections (`report::sections`) and a `.gitignore`.
pub fn files() -> Vec<(&'static str, &'static str)> {
    let mut all = OWN.to_vec();
    all.push(crate::report::sections::LIFT);
    all.extend_from_slice(crate::report::sections::SHIPPED);
    all
}

/// Local state and the sample lake are not source.
const GITIGNORE: &str = "\
# cohort-bridge: the state area (snapshots, journals, run history) and the sample lake are data,
# not source. On a team, point [state] url at shared object storage instead.
/state/
/data/
";

/// Where the sample lake goes (the project file's `lake.url`).
pub const SAMPLE_LAKE: &str = "data/lake";
/// Users in the sample lake: enough for every example cohort to have members.
pub const SAMPLE_USERS: u64 = 10_000;

/// Writes the scaffold into `dir` (created if missing); `sample`: also a small lake.
pub async fn scaffold(dir: &Path, sample: bool) -> Result<()> {
    refuse_links(dir, sample)?;
    refuse_existing(dir, sample)?;
    for (rel, text) in files() {
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
    Ok(())
}

/// A symlink on the way to a file (dangling or not) would have the file written wherever it
/// points: refused, whether the link is the file itself or a folder above it.
fn refuse_links(dir: &Path, sample: bool) -> Result<()> {
    let mut links: Vec<PathBuf> = Vec::new();
    let targets = files()
        .into_iter()
        .map(|(rel, _)| rel)
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
    Ok(())
}

/// Init never overwrites: any file (or the sample lake) already there refuses the whole.
fn refuse_existing(dir: &Path, sample: bool) -> Result<()> {
    let lake = dir.join(SAMPLE_LAKE);
    let mut taken: Vec<PathBuf> = files()
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
    Ok(())
}
