//! `state show|unlock|repair COHORT [--shard K/N]`: look at a cohort's state, release a lock
//! whose run is gone, repair a state file that is missing or unreadable (the work is in
//! `crate::state::{show, unlock, repair}`); each prints one pretty JSON value.

use std::path::Path;

use clap::Subcommand;
use serde_json::{Value, json};

use crate::cohort::shard::Shard;
use crate::config::env_lookup;
use crate::error::{Result, exit};
use crate::state::target::{self, Target};

#[derive(Subcommand, Debug)]
pub enum StateAction {
    /// The pointer, snapshot, unfinished run and journal, lock, dead letters and any problem
    /// with the command that fixes it, as JSON.
    Show {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
    },
    /// Release the cohort's lock if its run is gone (the lock expired); `--force` releases a
    /// live or unreadable one (only when you are sure no run is going on).
    Unlock {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
        #[arg(long)]
        force: bool,
    },
    /// Repair missing or unreadable state files without guessing what the partner holds (the
    /// pointer from the newest complete snapshot, a snapshot from its replica, unreadable
    /// journal or dead-letter objects); refuses when an exact repair is impossible.
    Repair {
        cohort: String,
        #[arg(long, value_name = "K/N")]
        shard: Option<Shard>,
        /// Set an unfinished run aside even when some of its id lists are unreadable.
        #[arg(long)]
        force: bool,
    },
}

/// `state ACTION`.
pub async fn run(config_file: &Path, action: StateAction) -> Result<i32> {
    match action {
        StateAction::Show { cohort, shard } => show(config_file, &cohort, shard).await,
        StateAction::Unlock {
            cohort,
            shard,
            force,
        } => unlock(config_file, &cohort, shard, force).await,
        StateAction::Repair {
            cohort,
            shard,
            force,
        } => repair(config_file, &cohort, shard, force).await,
    }
}

fn print(value: &Value) {
    println!("{}", serde_json::to_string_pretty(value).expect("JSON"));
}

/// The partner identity the project names now (needs the secrets).
fn partner(t: &Target) -> Result<String> {
    let dest = t.config.destination(&t.cohort.destination)?;
    let creds = t.config.credentials(&t.cohort.destination, &env_lookup)?;
    Ok(crate::sync::partner_identity(dest, &creds))
}

/// `state show`: everything about one cohort's state, as JSON, with what to do about problems.
pub async fn show(config_file: &Path, name: &str, shard: Option<Shard>) -> Result<i32> {
    let t = target::open(crate::destinations::load_config(config_file)?, name, shard).await?;
    let partner_now = partner(&t).ok();
    print(&crate::state::show::show(&t, name, shard, partner_now).await?);
    Ok(exit::OK)
}

/// `state unlock` (see `crate::state::unlock`).
pub async fn unlock(
    config_file: &Path,
    name: &str,
    shard: Option<Shard>,
    force: bool,
) -> Result<i32> {
    let t = target::open(crate::destinations::load_config(config_file)?, name, shard).await?;
    print(&crate::state::unlock::unlock(&t, name, force).await?);
    Ok(exit::OK)
}

/// `state repair` (see `crate::state::repair`).
pub async fn repair(
    config_file: &Path,
    name: &str,
    shard: Option<Shard>,
    force: bool,
) -> Result<i32> {
    let t = target::open(crate::destinations::load_config(config_file)?, name, shard).await?;
    let actions = crate::state::repair::repair(&t, force, &|| partner(&t)).await?;
    print(&json!({
        "cohort": name,
        "shard": shard.map(|s| s.to_string()),
        "outcome": if actions.is_empty() { "nothing_to_repair" } else { "repaired" },
        "actions": actions,
        "next": format!("cohort-bridge sync {}", t.state.label),
    }));
    Ok(exit::OK)
}
