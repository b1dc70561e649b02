//! Stage 5, delivery: a plan's batches sent (or its lists written) with every acknowledged
//! batch journaled, and the ids a partner refuses isolated as dead letters.

use std::collections::BTreeSet;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use datafusion::arrow::array::{Array, StringArray};
use tracing::{info, warn};

use super::Run;
use super::breaker::Breaker;
use super::change::Change;
use crate::deliver::Request;
use crate::deliver::plan::{batches, encode_in_background};
use crate::deliver::sender::Sender;
use crate::destinations::{Delivery, Destination, Lists, ListsOf, Op, Refused};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::state::dead::{self, DeadLetter};
use crate::state::journal::{self, Journal};
use crate::state::{self, PlanMeta, ids, lock, new_run_id};

/// Batches to send: each one's number and range of its list.
type Batches = Vec<(u64, Range<usize>)>;

/// `batches` (number, range of the whole list, in order) of a list held as `arrays` in order,
/// each sent from one array: ranges inside an array as they are (made relative to it), a batch
/// across two arrays' edge copied out into an array of its own.
fn by_array(arrays: &[StringArray], batches: Batches) -> Vec<(Arc<StringArray>, Batches)> {
    if let [one] = arrays {
        return vec![(Arc::new(one.clone()), batches)];
    }
    // Where each array starts in the whole list.
    let starts: Vec<usize> = arrays
        .iter()
        .scan(0, |at, a| {
            let start = *at;
            *at += a.len();
            Some(start)
        })
        .collect();
    let array_of = |i: usize| starts.partition_point(|&s| s <= i) - 1;
    let mut out: Vec<(Arc<StringArray>, Batches)> = Vec::new();
    let mut current: Option<usize> = None;
    for (n, range) in batches {
        if range.is_empty() {
            continue;
        }
        let (first, last) = (array_of(range.start), array_of(range.end - 1));
        if first == last {
            let local = range.start - starts[first]..range.end - starts[first];
            match (current, out.last_mut()) {
                (Some(c), Some((_, group))) if c == first => group.push((n, local)),
                _ => {
                    out.push((Arc::new(arrays[first].clone()), vec![(n, local)]));
                    current = Some(first);
                }
            }
        } else {
            let ids: StringArray = range
                .clone()
                .map(|i| {
                    let a = array_of(i);
                    Some(arrays[a].value(i - starts[a]))
                })
                .collect();
            out.push((Arc::new(ids), vec![(n, 0..range.len())]));
            current = None;
        }
    }
    out
}

/// What one plan's delivery did (`Run::deliver`, then `Run::finish` for its dead letters).
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sent {
    pub(super) batches: u64,
    /// Batches the journal showed acknowledged by an earlier process.
    pub(super) skipped: u64,
    pub(super) dead_letters: u64,
}

impl crate::deliver::sender::Fence for lock::Lease {
    fn guard(&self) -> futures::future::BoxFuture<'_, Result<()>> {
        Box::pin(lock::Lease::guard(self))
    }
}

impl Run<'_> {
    /// The sender of a destination that takes requests, fenced by the run's lock when it holds
    /// one (`None` for a destination that takes lists).
    pub(super) fn sender(
        &self,
        delivery: &Delivery,
        deadline: tokio::time::Instant,
    ) -> Result<Option<Sender>> {
        Ok(match delivery {
            Delivery::Requests(d) => {
                let sender = Sender::new(&self.dest.delivery, d.clone(), deadline)?;
                Some(match self.lock {
                    Some(lock) => sender.fenced(lock.lease()),
                    None => sender,
                })
            }
            Delivery::Lists(_) => None,
        })
    }

    /// Sends the planned `change`. The target snapshot of an incremental plan is written while
    /// its batches go out (a crash before it is written is repaired by `rebuild_target`).
    pub(super) async fn send_change(
        &self,
        change: &Change,
        plan: &PlanMeta,
        delivery: &Delivery,
        sender: Option<&Sender>,
    ) -> Result<Sent> {
        // The target snapshot (a first sync wrote it as its plan) and its replica; a delta
        // commit needs neither (its plan files are the delta).
        let write = async {
            if plan.chain.is_some() {
                return Ok(());
            }
            let store = self.state.store.as_ref();
            let replica = self.state.path(&state::replica(&plan.target_snapshot));
            if plan.adds_file == plan.target_snapshot {
                // A first sync wrote the snapshot as its plan: its replica is the same bytes,
                // copied (a second encoding cost ~0.25 CPU-s of 10M ids while batches went
                // out).
                let target = self.state.path(&plan.target_snapshot);
                return ids::copy(store, &target, &replica).await;
            }
            let paths = [replica, self.state.path(&plan.target_snapshot)];
            ids::write_to(store, &paths, change.target.clone()).await
        };
        let lists = Some([
            change.adds.clone(),
            change.removes.clone(),
            change.target.clone(),
        ]);
        let (sent, written) = tokio::join!(self.deliver(plan, delivery, sender, lists), write);
        let sent = sent?;
        written?;
        Ok(sent)
    }

    /// Sends every batch of `plan` its journal does not hold (`Sent` without dead letters:
    /// `finish` counts those).
    /// A batch the partner refuses with 400 is split until the refused ids are isolated; they
    /// are recorded as dead letters and the rest of the batch is delivered.
    pub(super) async fn deliver(
        &self,
        plan: &PlanMeta,
        delivery: &Delivery,
        sender: Option<&Sender>,
        // The plan's adds, removes and target when this process made it (else read from the
        // plan).
        in_memory: Option<[Arc<StringArray>; 3]>,
    ) -> Result<Sent> {
        let (to, sender) = match (delivery, sender) {
            (Delivery::Lists(lists), _) => {
                return self.deliver_lists(plan, lists.as_ref(), in_memory).await;
            }
            (Delivery::Requests(d), Some(sender)) => (d, sender),
            (Delivery::Requests(_), None) => {
                return Err(Error::Internal(
                    "a request destination without a sender".into(),
                ));
            }
        };
        let acked = journal::read(self.state, plan).await?;
        // Everything the plan needs is read before anything is sent.
        let lists = match in_memory {
            Some([adds, removes, _]) => {
                [vec![adds.as_ref().clone()], vec![removes.as_ref().clone()]]
            }
            // In arrays of up to 2 GiB: a first sync's adds of 100M UUIDs are past one.
            None => [
                self.state.id_arrays(&plan.adds_file).await?,
                self.state.id_arrays(&plan.removes_file).await?,
            ],
        };
        if let Some(setup) = to.setup(plan.at) {
            sender.send(&setup).await.map_err(|e| to.explain(e))?;
        }
        self.send_batches(plan, to, sender, &acked, lists).await
    }

    /// Sends the batches of `lists` (the plan's adds, then its removes) that are not `acked`,
    /// journaling each acknowledged one, until done, a signal, or an error.
    async fn send_batches(
        &self,
        plan: &PlanMeta,
        to: &Arc<dyn Destination>,
        sender: &Sender,
        acked: &BTreeSet<u64>,
        lists: [Vec<StringArray>; 2],
    ) -> Result<Sent> {
        let journal = Journal::start(
            self.state.clone(),
            journal::writer(&plan.run_id, &new_run_id()),
            None,
        );
        let total = plan.add_batches + plan.remove_batches;
        let todo = total - acked.iter().filter(|&&n| n >= 1 && n <= total).count() as u64;
        let progress = Progress::new(self.options.progress, todo, &self.cohort.name);
        let breaker = Breaker::new(total);
        let out = Outgoing {
            sender,
            to,
            breaker: &breaker,
            run_id: &plan.run_id,
            journal: &journal,
            progress: &progress,
            window: self.window(),
        };
        let removes_len = lists[1].iter().map(Array::len).sum();
        let removes = batches(removes_len, plan.batch_size)
            .into_iter()
            .map(|(n, range)| (n + plan.add_batches, range));
        let mut result = Ok(());
        'lists: for (k, op, batches) in [
            (0, Op::Add, plan.add_batches_by_part()),
            (1, Op::Remove, removes.collect()),
        ] {
            let batches: Vec<_> = batches
                .into_iter()
                .filter(|(n, _)| !acked.contains(n))
                .collect();
            for (ids, batches) in by_array(&lists[k], batches) {
                result = self.send_list(&out, ids, batches, op).await;
                if result.is_err() {
                    break 'lists;
                }
            }
        }
        progress.finish();
        // Whatever happened, what was acknowledged is journaled before we report.
        let journaled = journal.finish().await;
        result?;
        journaled?;
        crate::signals::check()?;
        Ok(Sent {
            batches: todo,
            skipped: total - todo,
            dead_letters: 0,
        })
    }

    /// Requests encoded ahead of the sender: enough to keep every request slot busy.
    pub(super) fn window(&self) -> usize {
        (self.dest.delivery.max_in_flight * 2).max(16)
    }

    /// Sends `batches` (number, range of `ids`, in order) as `op`, journaling each acknowledged
    /// one, until done, a signal (no new request is taken; those in flight finish and are
    /// journaled), or an error.
    pub(super) async fn send_list(
        &self,
        out: &Outgoing<'_>,
        ids: Arc<StringArray>,
        batches: Vec<(u64, Range<usize>)>,
        op: Op,
    ) -> Result<()> {
        if batches.is_empty() || crate::signals::received().is_some() {
            return Ok(());
        }
        let ranges: Vec<(u64, usize)> = batches.iter().map(|(n, r)| (*n, r.start)).collect();
        let requests = crate::signals::until_signalled(encode_in_background(
            out.to.clone(),
            out.run_id.into(),
            ids.clone(),
            batches,
            op,
            out.window,
        ));
        let ranges = &ranges;
        out.sender
            .for_each(requests, |request| {
                let ids = ids.clone();
                async move {
                    if crate::signals::received().is_some() {
                        return Ok(());
                    }
                    let at = ranges
                        .binary_search_by_key(&request.batch, |(n, _)| *n)
                        .map_err(|_| {
                            Error::Internal(format!("batch {} was not planned", request.batch))
                        })?;
                    let start = ranges[at].1;
                    let range = start..start + request.ids;
                    let dead = out.send(&request, &ids, range, op).await?;
                    self.record_dead(request.batch, &dead).await?;
                    out.journal.ack(request.batch);
                    out.progress.inc();
                    Ok(())
                }
            })
            .await
            .map_err(|e| out.to.explain(e))
    }

    /// Logs and records the dead letters of batch `batch` (nothing when there are none).
    async fn record_dead(&self, batch: u64, dead: &[DeadLetter]) -> Result<()> {
        if dead.is_empty() {
            return Ok(());
        }
        let gone = dead.iter().filter(|d| d.change == dead::GONE).count();
        if gone > 0 {
            info!(cohort = %self.cohort.name, batch, gone,
                "the partner has no profile for some ids removed; their removal is done");
        }
        if dead.len() > gone {
            warn!(cohort = %self.cohort.name, batch, refused = dead.len() - gone,
                first = %dead.iter().find(|d| d.change != dead::GONE).map(|d| d.reason.as_str()).unwrap_or(""),
                "the partner refused ids; they are dead-lettered and retried next run");
        }
        dead::record(self.state, batch, dead).await
    }

    /// Hands a plan's lists whole to a destination that takes them so (files); again when the
    /// plan is resumed (the destination writes the same run's objects again).
    async fn deliver_lists(
        &self,
        plan: &PlanMeta,
        lists: &dyn Lists,
        in_memory: Option<[Arc<StringArray>; 3]>,
    ) -> Result<Sent> {
        let (adds, removes, target) = match in_memory {
            Some([adds, removes, target]) => (adds, removes, Some(target)),
            None => (
                self.state.ids(&plan.adds_file).await?,
                self.state.ids(&plan.removes_file).await?,
                None,
            ),
        };
        let members = match (lists.wants_members(), target) {
            (false, _) => None,
            (true, Some(target)) => Some(target),
            (true, None) => {
                let target = self.target_of(plan).await?;
                let one = crate::cohort::diff::one_array(target)
                    .map_err(|why| Error::storage(format!("{}: {why}", plan.target_snapshot)))?;
                Some(Arc::new(one))
            }
        };
        crate::signals::check()?;
        let of = ListsOf {
            adds,
            removes,
            members,
            shard: self.options.shard.map(|s| s.to_string()),
        };
        // The files are the delivery: a run fenced off writes none.
        self.hold().await?;
        lists.write(&plan.run_id, plan.at, of).await?;
        info!(cohort = %self.cohort.name, run = %plan.run_id, "lists written");
        Ok(Sent {
            batches: plan.add_batches + plan.remove_batches,
            ..Sent::default()
        })
    }
}

/// What sending a plan's batches needs besides the batch.
pub(super) struct Outgoing<'a> {
    pub(super) sender: &'a Sender,
    pub(super) to: &'a Arc<dyn Destination>,
    pub(super) breaker: &'a Breaker,
    pub(super) run_id: &'a str,
    pub(super) journal: &'a Journal,
    pub(super) progress: &'a Progress,
    /// Requests encoded ahead (`Run::window`).
    pub(super) window: usize,
}

impl Outgoing<'_> {
    /// Sends one batch (`range` of `ids`): the dead letters of the ids the partner refused in
    /// it, item by item or isolated after a 400.
    async fn send(
        &self,
        request: &Request,
        ids: &StringArray,
        range: Range<usize>,
        op: Op,
    ) -> Result<Vec<DeadLetter>> {
        let (sender, breaker) = (self.sender, self.breaker);
        match sender.send(request).await {
            Ok(refused) => {
                breaker.delivered(request.ids.saturating_sub(refused.len()));
                breaker
                    .refused_ids
                    .fetch_add(refused.len() as u64, Ordering::Relaxed);
                Ok(dead_letters(ids, &range, &refused, request.batch, op))
            }
            Err(Error::PartnerRejected {
                status: 400,
                message,
                ..
            }) if request.ids > 0 => {
                isolate(
                    sender,
                    self.to.as_ref(),
                    breaker,
                    self.run_id,
                    ids,
                    request.batch,
                    range,
                    op,
                    message,
                )
                .await
            }
            Err(e) => Err(e),
        }
    }
}

/// The dead letters of the items a partner acknowledged but did not apply (`range` is the
/// batch's place in `ids`; an index past it is ignored: the partner cannot refuse what was
/// not sent). A removal refused because the partner has no such profile is `dead::GONE`:
/// done, not refused.
fn dead_letters(
    ids: &StringArray,
    range: &std::ops::Range<usize>,
    refused: &[Refused],
    batch: u64,
    op: Op,
) -> Vec<DeadLetter> {
    refused
        .iter()
        .filter(|r| r.index < range.len())
        .map(|r| DeadLetter {
            user_id: ids.value(range.start + r.index).to_string(),
            change: match op {
                Op::Remove if r.no_profile => dead::GONE,
                op => op.name(),
            }
            .to_string(),
            reason: r.reason.clone(),
            batch,
        })
        .collect()
}

/// Splits a range refused with 400 until every refused id is alone; the rest is delivered (an
/// acknowledged half's item-level refusals are dead letters too).
#[allow(clippy::too_many_arguments)]
async fn isolate(
    sender: &Sender,
    destination: &dyn Destination,
    breaker: &Breaker,
    run_id: &str,
    ids: &StringArray,
    batch: u64,
    range: std::ops::Range<usize>,
    op: Op,
    message: String,
) -> Result<Vec<DeadLetter>> {
    let mut dead = Vec::new();
    let mut refused = vec![(range, message)];
    while let Some((range, message)) = refused.pop() {
        if range.len() == 1 {
            breaker.refused_ids.fetch_add(1, Ordering::Relaxed);
            dead.push(DeadLetter {
                user_id: ids.value(range.start).to_string(),
                change: op.name().to_string(),
                reason: message,
                batch,
            });
            continue;
        }
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            breaker.spend(&message)?;
            match sender
                .send(&destination.batch(run_id, batch, ids, half.clone(), op))
                .await
            {
                Ok(items) => {
                    breaker.delivered(half.len().saturating_sub(items.len()));
                    breaker
                        .refused_ids
                        .fetch_add(items.len() as u64, Ordering::Relaxed);
                    dead.extend(dead_letters(ids, &half, &items, batch, op));
                }
                Err(Error::PartnerRejected {
                    status: 400,
                    message,
                    ..
                }) => refused.push((half, message)),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(dead)
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Batches of a list held in arrays (some empty) carry the same ids, in the same order,
        /// as the same batches of the list held whole.
        #[test]
        fn batches_of_a_list_in_arrays_are_those_of_the_whole_list(
            sizes in proptest::collection::vec(0usize..9, 1..6),
            size in 1usize..5,
            skip in proptest::collection::btree_set(1u64..20, 0..4),
        ) {
            let total: usize = sizes.iter().sum();
            let ids: Vec<String> = (0..total).map(|i| format!("u{i:03}")).collect();
            let mut arrays = Vec::new();
            let mut at = 0;
            for n in &sizes {
                arrays.push(StringArray::from(ids[at..at + n].to_vec()));
                at += n;
            }
            let planned: Vec<_> = batches(total, size)
                .into_iter()
                .filter(|(n, _)| !skip.contains(n))
                .collect();
            let mut sent = Vec::new();
            for (array, group) in by_array(&arrays, planned.clone()) {
                for (n, range) in group {
                    let got: Vec<String> =
                        range.map(|i| array.value(i).to_string()).collect();
                    sent.push((n, got));
                }
            }
            let whole: Vec<_> = planned
                .into_iter()
                .map(|(n, range)| (n, ids[range].to_vec()))
                .collect();
            proptest::prop_assert_eq!(sent, whole);
        }
    }
}
