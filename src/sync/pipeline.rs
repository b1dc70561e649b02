//! Stages 3 to 5 as a pipeline: the cohort's members come out of the sort in parts, in byte
//! order (`cohort::members_in_parts`); each part is diffed against the committed base (a
//! `diff::Walk` on a thread of its own), its adds are written — durable — as a part of an
//! *open* plan, and its batches go out while the next part is still being sorted. Once every
//! part is in, the removals are known: the plan is closed (its lists and totals written as a
//! plan made whole would have them), the removals are sent, and the run commits as any other.
//!
//! Exactly once, as without parts: a part's batches go out only after its list is durable, so
//! a run that dies leaves parts 0..k planned (some of their batches sent, the acknowledged
//! ones journaled) and nothing of the later parts sent. The next run closes that plan with
//! those parts alone — their adds, no removals — and finishes and commits it
//! (`Run::close_open_plan`), then diffs the rest as usual. Removals wait for the close: the
//! removal guard needs their total, and they are only known once every part is in.
//!
//! Used when the destination takes requests and the cohort's members are its `user_id`s as
//! they are (`cohort::comes_in_parts`); other runs plan the change whole (`change`, `plan`).

use std::ops::Range;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, StringArray};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::Run;
use super::breaker::Breaker;
use super::change::{Counts, suspicious_removals};
use super::deliver::{Outgoing, Sent};
use super::plan::Sizes;
use crate::cohort::holdout::Holdout;
use crate::cohort::{self, diff};
use crate::deliver::plan::batches;
use crate::deliver::sender::Sender;
use crate::destinations::{Destination, Op};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::parallel::on_rayon;
use crate::progress::Progress;
use crate::state::journal::{self, Journal};
use crate::state::{self, PlanMeta, Pointer, ids, new_run_id, paths};

/// What a pipelined run did: the counts, its delivery (`None`: nothing changed), and the
/// members held out.
pub(super) struct Piped {
    pub(super) counts: Counts,
    pub(super) delivered: Option<Sent>,
    pub(super) held: Arc<StringArray>,
}

/// One part out of the diff stage.
struct Part {
    /// The part's members (this shard's, without the control group).
    members: StringArray,
    adds: StringArray,
    held: StringArray,
}

/// What the parts came to once every one is in.
struct Parts {
    pointer: Option<Pointer>,
    members: Vec<StringArray>,
    held: Vec<StringArray>,
    /// The adds of each planned part, in order (parts without adds are not planned).
    adds: Vec<Arc<StringArray>>,
    /// Add batches planned so far.
    batches: u64,
    /// What the diff stage returned: the removals, the members before the control group was
    /// split off, the base's members.
    removes: StringArray,
    query_members: usize,
    snapshot_members: usize,
}

impl Run<'_> {
    /// Computes, plans, sends and commits this run's change in parts (see the module docs).
    pub(super) async fn pipeline(
        &self,
        lake: &Lake,
        query: cohort::Query,
        run_id: &str,
        started: &Instant,
        to: &Arc<dyn Destination>,
        sender: &Sender,
    ) -> Result<Piped> {
        let (sorted_tx, sorted_rx) = mpsc::channel::<StringArray>(2);
        let members = self.sorted_in_parts(lake, query, started, sorted_tx);
        let journal = Journal::start(
            self.state.clone(),
            journal::writer(run_id, &new_run_id()),
            None,
        );
        let progress = Progress::new(self.options.progress, 0, &self.cohort.name);
        let breaker = Breaker::new(0);
        let out = Outgoing {
            sender,
            to,
            breaker: &breaker,
            run_id,
            journal: &journal,
            progress: &progress,
            window: self.window(),
        };
        let parts = self.send_parts(sorted_rx, run_id, &out);
        let ((members, query_seconds), parts) = tokio::join!(members, parts);
        // A signal stops planning parts (and so the sort): it is the reason. Else the parts'
        // error first: the sort stops when they do.
        let result = crate::signals::check().and_then(|()| match (members, parts) {
            (_, Err(e)) | (Err(e), _) => Err(e),
            (Ok(m), Ok(p)) => Ok((m, p)),
        });
        let (members, parts) = match result {
            Ok(done) => done,
            Err(e) => {
                progress.finish();
                // What was acknowledged is journaled before the error is reported.
                journal.finish().await?;
                return Err(e);
            }
        };
        let closed = self
            .close_parts(parts, &members, query_seconds, run_id, &out)
            .await;
        progress.finish();
        let journaled = journal.finish().await;
        let (counts, plan, sent, held) = closed?;
        journaled?;
        crate::signals::check()?;
        let delivered = match plan {
            Some(plan) => Some(self.commit(&plan, sent).await?),
            None => None,
        };
        Ok(Piped {
            counts,
            delivered,
            held,
        })
    }

    /// Executes the query (unless it ran already) and hands its members to `out` in parts of
    /// `state.part_ids`, sorted; returns the counts and the seconds since the run started.
    async fn sorted_in_parts(
        &self,
        lake: &Lake,
        query: cohort::Query,
        started: &Instant,
        out: mpsc::Sender<StringArray>,
    ) -> (Result<cohort::Members>, f64) {
        let origin = self.cohort.sql_file.display().to_string();
        let part_ids = self.config.state.part_ids;
        let members = cohort::members_in_parts(lake, query, &origin, part_ids, out).await;
        (members, started.elapsed().as_secs_f64())
    }

    /// The parts as they come: each diffed, its adds written and sent. Returns when the sort
    /// has handed out every part (or stopped), a signal came, or on the first error.
    async fn send_parts(
        &self,
        sorted: mpsc::Receiver<StringArray>,
        run_id: &str,
        out: &Outgoing<'_>,
    ) -> Result<Parts> {
        let (pointer, base) = self.base().await?;
        let full = self.sends_everyone(pointer.as_ref());
        let (parts_tx, parts_rx) = mpsc::channel::<Part>(2);
        let diff = self.diff_stage(base, full, sorted, parts_tx);
        let size = self.dest.delivery.batch_size;
        let (durable_tx, durable_rx) = mpsc::channel::<(Arc<StringArray>, u64)>(1);
        // Each side owns its ends of the channels, so a side that stops (an error) closes them
        // and the other side, and the diff stage and the sort behind it, stop too.
        let planner = async {
            let (durable_tx, mut parts_rx) = (durable_tx, parts_rx);
            let mut p = Parts {
                pointer,
                members: Vec::new(),
                held: Vec::new(),
                adds: Vec::new(),
                batches: 0,
                removes: StringArray::from(Vec::<&str>::new()),
                query_members: 0,
                snapshot_members: 0,
            };
            while let Some(part) = parts_rx.recv().await {
                p.members.push(part.members);
                p.held.push(part.held);
                if part.adds.is_empty() {
                    continue;
                }
                if crate::signals::received().is_some() {
                    break;
                }
                // Members the destination cannot identify are refused before their part is
                // planned (for a cohort of user ids, the first part already tells).
                out.to.accepts(&part.adds)?;
                if p.adds.is_empty() {
                    self.open_plan(run_id, p.pointer.as_ref()).await?;
                }
                let adds = Arc::new(part.adds);
                let path = self.state.path(&paths::part(run_id, p.adds.len()));
                self.hold().await?;
                ids::write(self.state.store.as_ref(), &path, adds.clone()).await?;
                let first = p.batches + 1;
                p.batches += adds.len().div_ceil(size) as u64;
                p.adds.push(adds.clone());
                if durable_tx.send((adds, first)).await.is_err() {
                    break; // the sending stopped: its error is the run's
                }
            }
            Ok::<_, Error>(p)
        };
        let sending = async {
            let mut durable_rx = durable_rx;
            let mut set_up = false;
            while let Some((adds, first)) = durable_rx.recv().await {
                if !set_up {
                    self.set_up(out).await?;
                    set_up = true;
                }
                let planned: Vec<(u64, Range<usize>)> = batches(adds.len(), size)
                    .into_iter()
                    .map(|(n, r)| (n + first - 1, r))
                    .collect();
                out.progress.add_total(planned.len() as u64);
                out.breaker.planned(planned.len() as u64);
                self.send_list(out, adds, planned, Op::Add).await?;
            }
            Ok::<_, Error>(())
        };
        let (planned, sent) = tokio::join!(planner, sending);
        let (removes, query_members, snapshot_members) = diff
            .await
            .map_err(|e| Error::Internal(format!("the diff stage: {e}")))?;
        sent?;
        let mut parts = planned?;
        parts.removes = removes;
        parts.query_members = query_members;
        parts.snapshot_members = snapshot_members;
        Ok(parts)
    }

    /// The diff stage, on a thread of its own: each sorted part of the query's members, this
    /// shard's, without the control group, diffed against `base` as it comes. Returns the
    /// removals, the members before the control group and the base's members once the sort
    /// stops.
    fn diff_stage(
        &self,
        base: diff::Base,
        full: bool,
        mut sorted: mpsc::Receiver<StringArray>,
        parts: mpsc::Sender<Part>,
    ) -> tokio::task::JoinHandle<(StringArray, usize, usize)> {
        let shard = self.options.shard;
        let holdout = Holdout::of(&self.cohort.holdout);
        tokio::task::spawn_blocking(move || {
            let snapshot_members = base.len();
            let mut walk = base.walk();
            let mut query_members = 0;
            while let Some(ids) = sorted.blocking_recv() {
                let ids = match shard {
                    Some(shard) => shard.filter(&ids),
                    None => ids,
                };
                query_members += ids.len();
                let (members, held) = if holdout.is_active() {
                    holdout.split(&ids)
                } else {
                    (ids, StringArray::from(Vec::<&str>::new()))
                };
                let adds = walk.part(&members);
                let adds = if full { members.clone() } else { adds };
                let part = Part {
                    members,
                    adds,
                    held,
                };
                if parts.blocking_send(part).is_err() {
                    break;
                }
            }
            (walk.removes(), query_members, snapshot_members)
        })
    }

    /// The removals to send, and those held back (see `suspicious_removals`) unless
    /// `--allow-mass-removal`, counted.
    fn held_back(
        &self,
        removes: StringArray,
        query_members: usize,
        snapshot_members: usize,
        counts: &mut Counts,
    ) -> (StringArray, Option<StringArray>) {
        let suspicious = suspicious_removals(
            removes.len(),
            query_members,
            snapshot_members as u64,
            self.config.state.max_removal_share,
        );
        match suspicious.filter(|_| !self.options.allow_mass_removal) {
            Some(why) => {
                warn!(
                    cohort = %self.cohort.name, removes = removes.len(), members = counts.members,
                    snapshot = snapshot_members,
                    "holding back removals: {why}; pass --allow-mass-removal if this is intended"
                );
                counts.removes_held_back = removes.len() as u64;
                (StringArray::from(Vec::<&str>::new()), Some(removes))
            }
            None => (removes, None),
        }
    }

    /// `--dry-run` of a change in parts: its parts as [`Run::pipeline`] makes them, counted
    /// (the members are not kept); nothing is written or sent. Returns the counts and up to 5
    /// adds and removes.
    pub(super) async fn dry_run_in_parts(
        &self,
        lake: &Lake,
        query: cohort::Query,
        started: &Instant,
    ) -> Result<(Counts, Vec<String>, Vec<String>)> {
        let (sorted_tx, sorted_rx) = mpsc::channel::<StringArray>(2);
        let members = self.sorted_in_parts(lake, query, started, sorted_tx);
        let counted = async {
            let (pointer, base) = self.base().await?;
            let full = self.sends_everyone(pointer.as_ref());
            let (parts_tx, mut parts_rx) = mpsc::channel::<Part>(2);
            let diff = self.diff_stage(base, full, sorted_rx, parts_tx);
            let (mut parts, mut members, mut held, mut adds) = (0, 0, 0, 0);
            let mut sample_adds = Vec::new();
            while let Some(part) = parts_rx.recv().await {
                parts += 1;
                members += part.members.len();
                held += part.held.len();
                adds += part.adds.len();
                let more = 5 - sample_adds.len();
                sample_adds.extend(part.adds.iter().flatten().take(more).map(str::to_string));
            }
            let (removes, query_members, snapshot_members) = diff
                .await
                .map_err(|e| Error::Internal(format!("the diff stage: {e}")))?;
            info!(cohort = %self.cohort.name, parts, members, "dry run: the change computed in parts");
            Ok::<_, Error>((
                members,
                held,
                adds,
                sample_adds,
                removes,
                query_members,
                snapshot_members,
            ))
        };
        let ((sorted, query_seconds), counted) = tokio::join!(members, counted);
        // The counting side's error first: the sort stops when it does.
        let (members, held, adds, sample_adds, removes, query_members, snapshot_members) = counted?;
        let sorted = sorted?;
        let mut counts = Counts {
            held_out: held as u64,
            query_seconds,
            members: members as u64,
            rows: sorted.rows,
            nulls_skipped: sorted.nulls_skipped,
            empty_skipped: sorted.empty_skipped,
            duplicates_removed: sorted.duplicates_removed,
            snapshot_members: snapshot_members as u64,
            adds: adds as u64,
            ..Counts::default()
        };
        let (removes, _) = self.held_back(removes, query_members, snapshot_members, &mut counts);
        counts.removes = removes.len() as u64;
        let sample_removes = removes
            .iter()
            .flatten()
            .take(5)
            .map(str::to_string)
            .collect();
        Ok((counts, sample_adds, sample_removes))
    }

    /// The destination's one-off request before a plan's first batch (creating the cohort),
    /// if it has one.
    async fn set_up(&self, out: &Outgoing<'_>) -> Result<()> {
        match out.to.setup(self.options.at) {
            Some(setup) => out
                .sender
                .send(&setup)
                .await
                .map(|_| ())
                .map_err(|e| out.to.explain(e)),
            None => Ok(()),
        }
    }

    /// Writes the open plan (`PlanMeta::open`): from now on parts may be sent.
    async fn open_plan(&self, run_id: &str, pointer: Option<&Pointer>) -> Result<()> {
        let plan = PlanMeta {
            format: state::FORMAT_PARTS,
            run_id: run_id.to_string(),
            created_at: chrono::Utc::now(),
            at: self.options.at,
            base_run_id: pointer.map(|p| p.run_id.clone()),
            partner: self.partner.clone(),
            target_snapshot: paths::snapshot(run_id),
            adds_file: String::new(),
            removes_file: String::new(),
            target_members: 0,
            batch_size: self.dest.delivery.batch_size,
            adds: 0,
            removes: 0,
            add_batches: 0,
            remove_batches: 0,
            chain: None,
            open: true,
            add_parts: Vec::new(),
        };
        self.hold().await?;
        state::write_json(
            self.state.store.as_ref(),
            &self.state.path(paths::PLAN),
            &plan,
        )
        .await
    }

    /// Every part is in: holds back suspicious removals, closes the plan (or writes it, when
    /// no part had adds), sends the removals and writes the target snapshot. Returns the
    /// counts, the plan to commit (`None`: nothing changed), what was sent, and the members
    /// held out.
    async fn close_parts(
        &self,
        parts: Parts,
        members: &cohort::Members,
        query_seconds: f64,
        run_id: &str,
        out: &Outgoing<'_>,
    ) -> Result<(Counts, Option<PlanMeta>, Sent, Arc<StringArray>)> {
        let Parts {
            pointer,
            members: member_parts,
            held,
            adds,
            batches: add_batches,
            removes,
            query_members,
            snapshot_members,
        } = parts;
        let held = Arc::new(diff::concat(&held));
        let member_count: usize = member_parts.iter().map(Array::len).sum();
        let mut counts = Counts {
            held_out: held.len() as u64,
            query_seconds,
            members: member_count as u64,
            rows: members.rows,
            nulls_skipped: members.nulls_skipped,
            empty_skipped: members.empty_skipped,
            duplicates_removed: members.duplicates_removed,
            snapshot_members: snapshot_members as u64,
            ..Counts::default()
        };
        info!(cohort = %self.cohort.name, members = member_count, parts = member_parts.len(),
            nulls_skipped = members.nulls_skipped, duplicates_removed = members.duplicates_removed,
            seconds = query_seconds, "cohort computed");
        let (removes, held_back) =
            self.held_back(removes, query_members, snapshot_members, &mut counts);
        let add_count: usize = adds.iter().map(|a| a.len()).sum();
        counts.adds = add_count as u64;
        counts.removes = removes.len() as u64;
        let unchanged = adds.is_empty() && removes.is_empty();
        if unchanged && pointer.is_some() && held_back.is_none() {
            return Ok((counts, None, Sent::default(), held));
        }
        // The membership once delivered: the members, and removals held back.
        let target: Vec<StringArray> = match held_back {
            None => member_parts,
            Some(kept) => {
                on_rayon(move || {
                    diff::Base::in_chunks(member_parts)
                        .union_in_chunks(&[kept], crate::storage::ids::ARRAY_BYTES)
                })
                .await
            }
        };
        let target_members: usize = target.iter().map(Array::len).sum();
        let sizes = Sizes {
            adds: add_count as u64,
            removes: removes.len() as u64,
            target: target_members as u64,
            adds_are_target: add_count == target_members,
        };
        let chain = self.chain_of(pointer.as_ref(), sizes, run_id);
        let plan = self
            .close_plan(run_id, pointer.as_ref(), &adds, &removes, sizes, chain)
            .await?;
        info!(cohort = %self.cohort.name, run = %run_id, adds = plan.adds, removes = plan.removes,
            parts = adds.len(), "plan closed");

        // The removals, while the target snapshot (and its replica) is written.
        let removes = Arc::new(removes);
        let remove_batches: Vec<(u64, Range<usize>)> = batches(removes.len(), plan.batch_size)
            .into_iter()
            .map(|(n, r)| (n + add_batches, r))
            .collect();
        out.progress.add_total(remove_batches.len() as u64);
        out.breaker.planned(remove_batches.len() as u64);
        let write = async {
            let store = self.state.store.as_ref();
            let replica = self.state.path(&state::replica(&plan.target_snapshot));
            if plan.chain.is_some() {
                Ok(())
            } else if plan.adds_file == plan.target_snapshot {
                let target = self.state.path(&plan.target_snapshot);
                ids::copy(store, &target, &replica).await
            } else {
                let paths = [replica, self.state.path(&plan.target_snapshot)];
                ids::write_parts(store, &paths, target).await
            }
        };
        let send = async {
            if adds.is_empty() {
                // No part was sent: the destination is set up before the removals.
                self.set_up(out).await?;
            }
            self.send_list(out, removes, remove_batches, Op::Remove)
                .await
        };
        let (sent, written) = tokio::join!(send, write);
        sent?;
        written?;
        let sent = Sent {
            batches: plan.add_batches + plan.remove_batches,
            skipped: 0,
            dead_letters: 0,
        };
        Ok((counts, Some(plan), sent, held))
    }

    /// Writes the closed plan's lists, then the plan: the adds as one list (the target
    /// snapshot itself when they are the whole target, a delta's file when the run commits as
    /// one), the removals, and the totals; part boundaries stay in `add_parts`, so batches keep
    /// the numbers they were sent under.
    async fn close_plan(
        &self,
        run_id: &str,
        pointer: Option<&Pointer>,
        adds: &[Arc<StringArray>],
        removes: &StringArray,
        sizes: Sizes,
        chain: Option<state::Chain>,
    ) -> Result<PlanMeta> {
        let store = self.state.store.as_ref();
        let target_snapshot = paths::snapshot(run_id);
        let delta = chain.as_ref().and_then(|c| c.deltas.last()).cloned();
        let (adds_file, removes_file) = match &delta {
            Some(d) => (d.adds.clone(), d.removes.clone()),
            None if sizes.adds_are_target => {
                (target_snapshot.clone(), paths::PENDING_REMOVES.to_string())
            }
            None => (
                paths::PENDING_ADDS.to_string(),
                paths::PENDING_REMOVES.to_string(),
            ),
        };
        let size = self.dest.delivery.batch_size;
        let add_parts: Vec<u64> = adds.iter().map(|a| a.len() as u64).collect();
        let add_batches = add_parts.iter().map(|&n| n.div_ceil(size as u64)).sum();
        let keys = adds
            .iter()
            .any(|a| crate::cohort::identity::needs_format_2(a))
            || crate::cohort::identity::needs_format_2(removes);
        let format = if add_parts.len() > 1 {
            state::FORMAT_PARTS
        } else {
            state::plan_format(chain.is_some(), keys)
        };
        let plan = PlanMeta {
            format,
            run_id: run_id.to_string(),
            created_at: chrono::Utc::now(),
            at: self.options.at,
            base_run_id: pointer.map(|p| p.run_id.clone()),
            partner: self.partner.clone(),
            target_snapshot,
            adds_file,
            removes_file,
            target_members: sizes.target,
            batch_size: size,
            adds: sizes.adds,
            removes: sizes.removes,
            add_batches,
            remove_batches: sizes.removes.div_ceil(size as u64),
            chain,
            open: false,
            add_parts: if add_parts.len() > 1 {
                add_parts
            } else {
                Vec::new()
            },
        };
        self.hold().await?;
        if plan.adds_file == plan.target_snapshot || delta.is_some() {
            // Files under snapshots/ before their plan names them: not committed yet.
            self.state.mark_started(run_id).await?;
        }
        let write = |file: String, ids: Vec<StringArray>| {
            let mut paths = vec![self.state.path(&file)];
            if delta.is_some() {
                paths.push(self.state.path(&state::replica(&file)));
            }
            async move { ids::write_parts(store, &paths, ids).await }
        };
        let adds: Vec<StringArray> = adds.iter().map(|a| a.as_ref().clone()).collect();
        tokio::try_join!(
            write(plan.adds_file.clone(), adds),
            write(plan.removes_file.clone(), vec![removes.clone()]),
        )?;
        self.hold().await?;
        state::write_json(store, &self.state.path(paths::PLAN), &plan).await?;
        Ok(plan)
    }
}
