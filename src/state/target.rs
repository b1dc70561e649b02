//! The cohort (or shard) a `state` command addresses: the project, the cohort's configuration
//! and its state area.

use super::CohortState;
use crate::cohort::shard::Shard;
use crate::config::Config;
use crate::error::{Error, Result};

/// What `state show|unlock|repair` work on.
pub struct Target {
    pub config: Config,
    pub state: CohortState,
    pub cohort: crate::config::Cohort,
}

/// Locates the state of cohort `name` (of its shard `shard`) in the loaded project.
pub async fn open(config: Config, name: &str, shard: Option<Shard>) -> Result<Target> {
    let cohort = config
        .cohort(name)
        .map_err(|m| Error::config(config.file.clone(), m))?;
    let lake =
        crate::lake::Location::parse(&config.lake.url, &config.base_dir(), &config.lake.options)
            .map_err(|e| match e {
                Error::Config { message, .. } => Error::config(config.file.clone(), message),
                other => other,
            })?;
    let area = super::area(&config, &lake)?;
    let root = CohortState::new(
        area.store.clone(),
        &area.root,
        &cohort.destination,
        &cohort.cohort_id,
    )
    .named(&cohort.name);
    let state = match shard {
        Some(s) => root.shard(s.index, s.count),
        None => root,
    };
    Ok(Target {
        config,
        state,
        cohort,
    })
}
