//! `init`: scaffold a project (see `crate::init`), then say on stderr what to do next.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::error::{Result, exit};
use crate::init::{SAMPLE_LAKE, SAMPLE_USERS};

#[derive(Args, Debug)]
pub struct InitArgs {
    #[arg(default_value = ".")]
    dir: PathBuf,
    /// Do not generate the sample lake (point [lake] url at yours).
    #[arg(long)]
    no_sample: bool,
}

/// `init` with its flags.
pub async fn run(a: InitArgs) -> Result<i32> {
    let (dir, sample) = (a.dir.as_path(), !a.no_sample);
    crate::init::scaffold(dir, sample).await?;
    next_steps(dir, sample);
    Ok(exit::OK)
}

/// What was created, and the commands to run next (stderr).
fn next_steps(dir: &Path, sample: bool) {
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
}
