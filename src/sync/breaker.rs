//! The circuit breaker of isolation (`deliver::isolate`): stops splitting refused batches when
//! the partner refuses nearly everything.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The circuit breaker of isolation: when the partner refuses (400) nearly everything — a
/// wrong cohort id, a body it no longer accepts — splitting every batch down to single ids
/// would cost two requests per id and dead-letter the whole cohort. Isolation stops, and the
/// run fails with the partner's message, once it has made `MIN_SAMPLE` requests and the ids
/// refused outnumber four times those the partner accepted in this run (whole batches and
/// isolated halves alike: refused ids often cluster, ids being sorted, so isolation alone
/// would see a dense cluster as "everything"), or once isolation spent its budget (200
/// requests plus 20 per batch of the plan).
pub(super) struct Breaker {
    budget: AtomicU64,
    spent: AtomicU64,
    /// Ids the partner refused so far (by item, or isolated).
    pub(super) refused_ids: AtomicU64,
    delivered_ids: AtomicU64,
}

impl Breaker {
    const MIN_SAMPLE: u64 = 64;

    pub(super) fn new(batches: u64) -> Self {
        Breaker {
            budget: AtomicU64::new(200 + 20 * batches),
            spent: AtomicU64::new(0),
            refused_ids: AtomicU64::new(0),
            delivered_ids: AtomicU64::new(0),
        }
    }

    /// The plan has `batches` more (a plan made in parts learns its batches part by part).
    pub(super) fn planned(&self, batches: u64) {
        self.budget.fetch_add(20 * batches, Ordering::Relaxed);
    }

    /// `ids` were accepted.
    pub(super) fn delivered(&self, ids: usize) {
        self.delivered_ids.fetch_add(ids as u64, Ordering::Relaxed);
    }

    /// Called before each isolating request: an error when the breaker has tripped.
    pub(super) fn spend(&self, message: &str) -> Result<()> {
        let spent = self.spent.fetch_add(1, Ordering::Relaxed) + 1;
        let refused = self.refused_ids.load(Ordering::Relaxed);
        let delivered = self.delivered_ids.load(Ordering::Relaxed);
        let budget = self.budget.load(Ordering::Relaxed);
        let why = if spent > budget {
            format!("isolation spent its budget of {budget} requests")
        } else if spent > Self::MIN_SAMPLE && refused > 4 * delivered {
            format!("{refused} ids refused and only {delivered} accepted so far")
        } else {
            return Ok(());
        };
        Err(Error::PartnerRejected {
            what: "most batches".into(),
            status: 400,
            message: format!(
                "{message} — stopped splitting refused batches ({why}, after {spent} requests): \
                 the partner refuses nearly everything, so the cause is likely the request \
                 (cohort id, destination settings) rather than some ids. Nothing was committed; \
                 fix the cause and rerun: acknowledged batches are not re-sent"
            ),
        })
    }
}
