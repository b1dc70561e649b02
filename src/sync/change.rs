//! Stage 3, the change: the cohort's members now (the query, this shard's, without the
//! control group) diffed against the committed base, with suspicious removals held back.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, StringArray};
use tracing::{info, warn};

use super::Run;
use crate::cohort::{self, Members, diff};
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::sql::Params;
use crate::parallel::on_rayon;
use crate::state::Pointer;

/// What this run will send, and the snapshot it commits once sent.
pub(super) struct Change {
    pub(super) base: Option<Pointer>,
    pub(super) adds: Arc<StringArray>,
    pub(super) removes: Arc<StringArray>,
    pub(super) target: Arc<StringArray>,
    /// The members held out (empty when the cohort holds out nobody).
    pub(super) held: Arc<StringArray>,
    /// Members whose email or phone cannot be one: dead letters of the plan, never sent.
    pub(super) malformed: Vec<cohort::contact::Malformed>,
    pub(super) counts: Counts,
}

impl Change {
    /// Nothing to send over a committed base, and no removals held back: nothing to plan or
    /// commit.
    pub(super) fn is_unchanged(&self) -> bool {
        let nothing_to_send = self.adds.is_empty() && self.removes.is_empty();
        nothing_to_send && self.base.is_some() && self.counts.removes_held_back == 0
    }
}

/// What the query and the diff found (`Run::change`).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counts {
    pub(super) members: u64,
    pub(super) rows: u64,
    pub(super) nulls_skipped: u64,
    pub(super) empty_skipped: u64,
    pub(super) duplicates_removed: u64,
    pub(super) snapshot_members: u64,
    pub(super) adds: u64,
    pub(super) removes: u64,
    pub(super) removes_held_back: u64,
    pub(super) held_out: u64,
    pub(super) malformed: u64,
    pub(super) query_seconds: f64,
}

/// Why a change's removals look more like a bug (an empty partition, a broken filter) than a
/// real exodus: the query returned nobody, or more than `max_share` of the snapshot would
/// leave. `None` when they look real.
pub(super) fn suspicious_removals(
    removes: usize,
    query_members: usize,
    snapshot_members: u64,
    max_share: f64,
) -> Option<String> {
    if removes == 0 {
        return None;
    }
    if query_members == 0 {
        return Some("the query returned no members".to_string());
    }
    let share = if snapshot_members == 0 {
        0.0
    } else {
        removes as f64 / snapshot_members as f64
    };
    (share > max_share).then(|| {
        format!(
            "{:.0}% of the cohort would leave (state.max_removal_share = {max_share})",
            share * 100.0
        )
    })
}

impl Run<'_> {
    /// Runs the query (`planned`, when it is planned already) and diffs it against the
    /// committed snapshot.
    pub(super) async fn change(
        &self,
        lake: &Lake,
        started: &Instant,
        planned: Option<cohort::Query>,
    ) -> Result<Change> {
        // The query and the snapshot read overlap: one is CPU on the query runtime, the other
        // mostly I/O and decoding on rayon.
        let params = Params::at(self.options.at);
        let members = async {
            match planned {
                Some(query) => {
                    let origin = self.cohort.sql_file.display().to_string();
                    cohort::members_of(lake, query, &origin, &self.cohort.identifiers).await
                }
                None => cohort::members(lake, self.cohort, &params).await,
            }
        };
        let (members, snapshot) = tokio::join!(members, self.base());
        let (mut members, (base, snapshot)) = (members?, snapshot?);
        if let Some(shard) = self.options.shard {
            let all = members.ids.clone();
            members.ids = Arc::new(on_rayon(move || shard.filter(&all)).await);
        }
        let malformed = std::mem::take(&mut members.malformed);
        if let Some(first) = malformed.first() {
            warn!(cohort = %self.cohort.name, malformed = malformed.len(), first = %first.reason,
                "members whose email or phone cannot be one are left out and dead-lettered");
        }
        let query_members = members.ids.len();
        let held = self.hold_out(&mut members).await;
        let mut counts = Counts {
            held_out: held.len() as u64,
            malformed: malformed.len() as u64,
            query_seconds: started.elapsed().as_secs_f64(),
            members: members.ids.len() as u64,
            rows: members.rows,
            nulls_skipped: members.nulls_skipped,
            empty_skipped: members.empty_skipped,
            duplicates_removed: members.duplicates_removed,
            snapshot_members: snapshot.len() as u64,
            ..Counts::default()
        };
        info!(cohort = %self.cohort.name, members = members.ids.len(), nulls_skipped = members.nulls_skipped,
            duplicates_removed = members.duplicates_removed, seconds = counts.query_seconds, "cohort computed");

        let (adds, removes) = self
            .diff(base.as_ref(), snapshot, members.ids.clone())
            .await;
        let (removes, target) = self
            .hold_back(removes, query_members, &members.ids, &mut counts)
            .await;
        counts.adds = adds.len() as u64;
        counts.removes = removes.len() as u64;
        Ok(Change {
            base,
            adds,
            removes,
            target,
            held,
            malformed,
            counts,
        })
    }

    /// Splits the control group off `members`: the members held out. It is split off before
    /// anything else: it is never diffed against what the partner holds, so a member who moves
    /// into it is removed like one who left.
    async fn hold_out(&self, members: &mut Members) -> Arc<StringArray> {
        let holdout = crate::cohort::holdout::Holdout::of(&self.cohort.holdout);
        if holdout.is_active() {
            let all = members.ids.clone();
            let (treated, held) = on_rayon(move || holdout.split(&all)).await;
            members.ids = Arc::new(treated);
            Arc::new(held)
        } else {
            Arc::new(StringArray::from(Vec::<&str>::new()))
        }
    }

    /// The adds and removes from the committed `snapshot` to the members `now` (every member
    /// added with `--full` or after `state repair` set aside an unreadable run).
    async fn diff(
        &self,
        base: Option<&Pointer>,
        snapshot: diff::Base,
        now: Arc<StringArray>,
    ) -> (Arc<StringArray>, Arc<StringArray>) {
        let full = self.sends_everyone(base);
        // `adds` is the members array itself (not a copy) when everything is sent: the plan
        // then stores it once, as the target snapshot.
        if snapshot.is_empty() {
            (now, Arc::new(StringArray::from(Vec::<&str>::new())))
        } else {
            on_rayon(move || {
                let d = snapshot.diff(&now);
                let adds = if full { now } else { Arc::new(d.adds) };
                (adds, Arc::new(d.removes))
            })
            .await
        }
    }

    /// Whether this run sends a change against this cohort's own committed snapshot, under
    /// this partner identity: not a first sync, `--full`, or a resend after `state repair`.
    pub(super) async fn incremental(&self) -> Result<bool> {
        let own = self.state.pointer().await?;
        let own = own.filter(|p| p.partner == self.partner);
        Ok(own.is_some() && !self.resends_all(own.as_ref()))
    }

    /// `--full`, or `state repair` set aside an unfinished run it could not read.
    fn resends_all(&self, base: Option<&Pointer>) -> bool {
        self.options.full || base.is_some_and(|p| p.resend_all)
    }

    /// Whether this run adds every member, not only the new ones ([`Run::resends_all`];
    /// warned after a repair).
    pub(super) fn sends_everyone(&self, base: Option<&Pointer>) -> bool {
        let repaired = base.is_some_and(|p| p.resend_all);
        if repaired && !self.options.full {
            warn!(cohort = %self.cohort.name,
                "`state repair` set aside an unfinished run it could not read: re-sending every member and removing every snapshot id not in the cohort (as --full)");
        }
        self.resends_all(base)
    }

    /// The removals to send and the target membership: suspicious removals (see
    /// `suspicious_removals`) are held back unless `--allow-mass-removal`, their ids kept in
    /// the target.
    async fn hold_back(
        &self,
        removes: Arc<StringArray>,
        query_members: usize,
        members: &Arc<StringArray>,
        counts: &mut Counts,
    ) -> (Arc<StringArray>, Arc<StringArray>) {
        let suspicious = suspicious_removals(
            removes.len(),
            query_members,
            counts.snapshot_members,
            self.config.state.max_removal_share,
        );
        match suspicious.filter(|_| !self.options.allow_mass_removal) {
            Some(why) => {
                warn!(
                    cohort = %self.cohort.name, removes = removes.len(), members = members.len(),
                    snapshot = counts.snapshot_members,
                    "holding back removals: {why}; pass --allow-mass-removal if this is intended"
                );
                counts.removes_held_back = removes.len() as u64;
                let (ids, held) = (members.clone(), removes.clone());
                let target = on_rayon(move || Arc::new(diff::union(&ids, &held))).await;
                (Arc::new(StringArray::from(Vec::<&str>::new())), target)
            }
            None => (removes, members.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_suspicious_when_the_query_is_empty_or_too_many_leave() {
        assert_eq!(suspicious_removals(0, 0, 10, 0.5), None);
        let empty = suspicious_removals(3, 0, 3, 0.5).unwrap();
        assert!(empty.contains("no members"), "{empty}");
        assert_eq!(
            suspicious_removals(5, 5, 10, 0.5),
            None,
            "exactly the share is allowed"
        );
        let many = suspicious_removals(6, 4, 10, 0.5).unwrap();
        assert!(
            many.contains("60% of the cohort") && many.contains("= 0.5"),
            "{many}"
        );
        assert_eq!(
            suspicious_removals(1, 9, 0, 0.0),
            None,
            "no snapshot, no share"
        );
    }
}
