//! The partner identity a state belongs to, and what a run does when it changed: refuse, or
//! `--rebind` (same workspace), or `--new-workspace` (set the old state aside).

use chrono::Utc;
use tracing::warn;

use super::Run;
use crate::config::{Credentials, DestinationConfig};
use crate::destinations as destination;
use crate::error::{Error, Result};
use crate::state::{self, PlanMeta, Pointer, ids, paths};

/// Names the partner workspace a snapshot belongs to: the endpoint, the partner path and a short
/// fingerprint of the workspace key (32 bits of a hash: enough to tell workspaces apart, far too
/// little to recover anything). When any of them changes, a sync refuses until told whether
/// the workspace is the same (`--rebind`) or new (`--new-workspace`).
pub fn partner_identity(dest: &DestinationConfig, credentials: &Credentials) -> String {
    destination::identity(dest, credentials)
}

impl Run<'_> {
    /// The interrupted run's plan is for another partner identity: with `--rebind` it is
    /// resumed under the current one (`false`); with `--new-workspace` it is to be discarded
    /// (`true`); otherwise the run is refused.
    pub(super) async fn plan_of_another_partner(&self, plan: &mut PlanMeta) -> Result<bool> {
        if self.options.rebind {
            warn!(cohort = %self.cohort.name, run = %plan.run_id, plan_partner = %plan.partner,
                partner = %self.partner, "--rebind: resuming the interrupted run under the current partner identity");
            plan.partner = self.partner.clone();
            self.hold().await?;
            state::write_json(
                self.state.store.as_ref(),
                &self.state.path(paths::PLAN),
                &*plan,
            )
            .await?;
            Ok(false)
        } else if self.options.new_workspace {
            warn!(cohort = %self.cohort.name, run = %plan.run_id, plan_partner = %plan.partner,
                partner = %self.partner, "--new-workspace: discarding an interrupted run planned for the old partner");
            Ok(true)
        } else {
            Err(self.identity_refusal(
                &format!("an interrupted run ({})", plan.run_id),
                &plan.partner,
            ))
        }
    }

    /// The state is of another partner identity: what to do about it.
    pub(super) fn identity_refusal(&self, what: &str, theirs: &str) -> Error {
        let sync = self.sync_command();
        Error::config(
            self.config.file.clone(),
            format!(
                "cohort `{}`: {what} is for partner `{theirs}`, but destination `{}` is now \
                 `{}` (its base_url, partner or workspace key changed). Nothing was sent: \
                 starting over would leave members who left at the partner. If it is the same \
                 workspace under a new URL or key, keep what it holds and send only the change: \
                 `{sync} --rebind`. If it is a new, empty workspace, send every member there: \
                 `{sync} --new-workspace` (the old state is kept under replaced/). See `{}`",
                self.cohort.name,
                self.cohort.destination,
                self.partner,
                self.state.fix("show").trim_matches('`'),
            ),
        )
    }

    /// `--rebind`: the committed snapshot, under the current partner identity.
    pub(super) async fn rebind(&self, mut pointer: Pointer) -> Result<Pointer> {
        warn!(cohort = %self.cohort.name, from = %pointer.partner, to = %self.partner,
            "--rebind: the committed snapshot is taken as held by the current partner identity");
        pointer.note = Some(format!(
            "rebound at {} from {}",
            Utc::now().to_rfc3339(),
            pointer.partner
        ));
        pointer.partner = self.partner.clone();
        pointer.format = state::FORMAT;
        if !self.options.dry_run {
            self.hold().await?;
            self.state.write_pointer(&pointer).await?;
        }
        Ok(pointer)
    }

    /// `--new-workspace`: keeps the old pointer and its snapshot under `replaced/` (what the
    /// old workspace was sent), then the run starts from nothing.
    pub(super) async fn set_aside(&self, old: &Pointer) -> Result<()> {
        warn!(cohort = %self.cohort.name, from = %old.partner, to = %self.partner, run = %old.run_id,
            members = old.members,
            "--new-workspace: sending every member; the old partner's state is kept under replaced/");
        if self.options.dry_run {
            return Ok(());
        }
        self.hold().await?;
        let store = self.state.store.as_ref();
        // The pointer set aside names the membership as one file (its deltas applied).
        let mut kept = old.clone();
        kept.snapshot = paths::replaced_snapshot(&old.run_id);
        kept.deltas.clear();
        let pointer = self.state.path(&paths::replaced_pointer(&old.run_id));
        state::write_json(store, &pointer, &kept).await?;
        let copied = async {
            let members = self.state.snapshot(Some(old)).await?;
            ids::write(store, &self.state.path(&kept.snapshot), members).await
        };
        if let Err(e) = copied.await {
            warn!(error = %e, "cannot keep the old snapshot under replaced/");
        }
        // `current.json` stays until this run commits: a crash before that refuses again.
        Ok(())
    }
}
