//! The base of a change: the committed membership this run diffs against, its own (under the
//! current partner identity) or the one it adopts from another layout (`layout`).

use tracing::info;

use super::Run;
use super::layout::Layout;
use crate::cohort::diff::Base;
use crate::error::Result;
use crate::state::Pointer;

impl Run<'_> {
    /// The committed snapshot this run diffs against (empty when there is none).
    ///
    /// Normally this run's own. When the cohort has committed under another layout (unsharded,
    /// or another shard count) since this run's own snapshot, the partner holds what that layout
    /// sent: this run adopts the ids it owns of that layout's snapshots — written as its own
    /// snapshot and pointer before anything is sent, so later steps (resume, rebuild) see an
    /// ordinary committed base. That needs every part of that layout to have committed after
    /// anything else touched the cohort (commit times come from the machines' clocks: keep
    /// them in sync). Otherwise, or while another layout is running or has an unfinished run,
    /// what the partner holds is unknown for some ids, and the run is refused with what to do.
    pub(super) async fn base(&self) -> Result<(Option<Pointer>, Base)> {
        let own = self.own_base().await?;
        let own_at = own.as_ref().map(|p| p.committed_at);
        let layouts = self.other_layouts().await?;
        if !self.options.new_workspace
            && let Some((partner, _)) = layouts
                .iter()
                .flat_map(|l| &l.foreign)
                .find(|(_, at)| Some(*at) > own_at)
        {
            return Err(self.identity_refusal(
                "a more recent commit of another layout (unsharded or another shard count)",
                partner,
            ));
        }
        if let Some(busy) = layouts.iter().find(|l| l.busy) {
            return Err(self.layout_refusal(busy, "a run of it is in progress or unfinished"));
        }
        let Some(newest) = layouts
            .iter()
            .filter(|l| l.latest() > own_at)
            .max_by_key(|l| l.latest())
        else {
            let base = self.state.base(own.as_ref()).await?;
            return Ok((own, base));
        };
        let others = layouts
            .iter()
            .filter(|l| !std::ptr::eq(*l, newest))
            .filter_map(Layout::latest)
            .chain(own_at)
            .max();
        match newest.oldest() {
            Some(oldest) if Some(oldest) >= others => {
                let ids = self.adopt(newest).await?;
                let pointer = if self.options.dry_run {
                    own
                } else {
                    self.state.pointer().await?
                };
                Ok((pointer, Base::whole(ids)))
            }
            _ => Err(self.layout_refusal(
                newest,
                "more recently, but not every part of it has committed since",
            )),
        }
    }

    /// This run's own committed pointer, under the current partner identity: one of another
    /// identity is rebound (`--rebind`), set aside (`--new-workspace`, then `None`) or refused;
    /// none at all is checked for a lost pointer (`refuse_orphans`).
    async fn own_base(&self) -> Result<Option<Pointer>> {
        Ok(match self.state.pointer().await? {
            // A dry run changes nothing: it diffs against the committed snapshot whatever
            // identity it was written under (and runs without keys).
            Some(p) if p.partner != self.partner && self.options.dry_run => {
                info!(cohort = %self.cohort.name,
                    "dry run: the committed snapshot is of another partner identity (or the keys are not set); diffing against it");
                Some(p)
            }
            Some(p) if p.partner != self.partner => {
                if self.options.rebind {
                    Some(self.rebind(p).await?)
                } else if self.options.new_workspace {
                    self.set_aside(&p).await?;
                    None
                } else {
                    return Err(self.identity_refusal(
                        &format!(
                            "the committed snapshot (run {}, {} members)",
                            p.run_id, p.members
                        ),
                        &p.partner,
                    ));
                }
            }
            Some(p) => {
                if self.options.rebind || self.options.new_workspace {
                    info!(cohort = %self.cohort.name,
                        "the committed snapshot is already this partner's: nothing to rebind or start over; syncing the change");
                }
                Some(p)
            }
            None => {
                if !self.options.new_workspace {
                    self.refuse_orphans().await?;
                }
                None
            }
        })
    }
}
