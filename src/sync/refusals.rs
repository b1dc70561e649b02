//! The checks that refuse a run before anything is sent, when starting over could strand ids
//! at the partner or roll it back: a lost plan, a lost pointer, a rewind.

use chrono::{DateTime, Utc};

use super::Run;
use crate::error::{Error, Result};
use crate::state::{journal, paths};

impl Run<'_> {
    /// `sync` without `--shard K/N`, or with this run's.
    pub(super) fn sync_command(&self) -> String {
        match self.options.shard {
            Some(shard) => format!("cohort-bridge sync {} --shard {shard}", self.cohort.name),
            None => format!("cohort-bridge sync {}", self.cohort.name),
        }
    }

    /// No `plan.json`, but a journal: the plan of a run that delivered batches was lost, and
    /// starting over could strand ids it sent.
    pub(super) async fn refuse_lost_plan(&self) -> Result<()> {
        let journal = self.state.path(paths::JOURNAL);
        let listed = self.state.store.list_with_delimiter(Some(&journal)).await?;
        if listed.objects.is_empty() {
            return Ok(());
        }
        // Acks a fenced-off run flushed late for a plan made before the last commit: that plan
        // was finished, discarded or set aside since (a commit comes only after the pending
        // plan is done), so they are no lost plan's.
        let committed = self.state.pointer().await?.map(|p| p.committed_at);
        let lost = listed.objects.iter().any(|m| {
            let made = m
                .location
                .filename()
                .and_then(journal::plan_of)
                .and_then(run_started);
            !matches!((made, committed), (Some(made), Some(at)) if made < at)
        });
        if !lost {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "state file {} is missing, but {journal} shows an unfinished run delivered \
                 batches; starting over could leave ids it sent at the partner. Nothing was sent. \
                 Run {} (it sets that run aside; the next sync re-sends every member and removes \
                 every id that run may have sent that is not in the cohort)",
                self.state.path(paths::PLAN),
                self.state.fix("repair"),
            ),
        ))
    }

    /// `--at` earlier than the last committed run's: refused (exit 2) unless `--allow-rewind`.
    pub(super) async fn refuse_rewind(&self) -> Result<()> {
        let Some(last) = self.state.pointer().await?.and_then(|p| p.at) else {
            return Ok(());
        };
        if self.options.at >= last || self.options.allow_rewind {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "cohort `{}`: --at {} is earlier than the last committed run's ({}); syncing \
                 would roll the partner back to the cohort as it was then. Nothing was sent. \
                 If that is what you want (a deliberate re-run of the past), add \
                 --allow-rewind; otherwise leave --at out (now) or give a later time",
                self.cohort.name,
                self.options
                    .at
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                last.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
            ),
        ))
    }

    /// No pointer: fine if nothing was ever committed; but snapshots of committed runs mean the
    /// pointer was lost, and starting over would strand members.
    pub(super) async fn refuse_orphans(&self) -> Result<()> {
        let mut uncommitted = self.state.started().await?;
        if let Some(plan) = self.state.plan().await? {
            uncommitted.push(plan.run_id);
        }
        let orphans: Vec<String> = self
            .state
            .snapshot_runs()
            .await?
            .into_iter()
            .map(|(run, _)| run)
            .filter(|run| !uncommitted.contains(run))
            .collect();
        if orphans.is_empty() {
            return Ok(());
        }
        Err(Error::config(
            None,
            format!(
                "state file {} is missing, but snapshots of committed runs are there ({}): what \
                 the partner holds is recorded, only the pointer is lost. Nothing was sent. Run \
                 {} to restore it from the newest complete snapshot; or, if the partner \
                 workspace is new and empty, `{} --new-workspace`",
                self.state.path(paths::POINTER),
                orphans.join(", "),
                self.state.fix("repair"),
                self.sync_command(),
            ),
        ))
    }
}

/// When run `run_id` started, from its id (`new_run_id`: `%Y%m%dT%H%M%S%.3fZ-<salt>`).
fn run_started(run_id: &str) -> Option<DateTime<Utc>> {
    let (stamp, _) = run_id.rsplit_once('-')?;
    chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%dT%H%M%S%.3fZ")
        .ok()
        .map(|t| t.and_utc())
}
