//! Holdouts: a control group of each cohort that is never sent to the partner, so an analysis
//! can compare members who were treated (held by the partner, reached by its campaigns) with
//! members who were not (`queries/analysis/lift.sql`).
//!
//! `held(id) = mix(fnv1a64(salt ‖ 0xff ‖ utf8 bytes of id)) < share × 2⁶⁴` — FNV-1a, then the
//! SplitMix64 finaliser, both fixed here. The split depends on nothing but the salt, the share
//! and the id: it is the same on every run, machine, release, shard and destination (the salt
//! defaults to the cohort id), and independent of the shard hash (which hashes the id alone),
//! so each shard holds out its share too. `0xff` never occurs in UTF-8, so no (salt, id) pair
//! hashes like another.
//!
//! Because it is a threshold on a fixed hash, changing the share moves the fewest members:
//! raising it from 10% to 20% moves only treated members whose hash falls in [10%, 20%) into
//! the holdout (the partner is told to remove them), lowering it moves only held-out members
//! back into treatment (they are sent as adds); nobody else moves. Changing the salt reshuffles
//! everyone: a new experiment.

use datafusion::arrow::array::{Array, StringArray};
use rayon::prelude::*;

/// The largest share a cohort may hold out: beyond half, "held out" is the treatment.
pub use crate::config::MAX_HOLDOUT_SHARE as MAX_SHARE;

#[derive(Debug, Clone, PartialEq)]
pub struct Holdout {
    share: f64,
    salt: String,
    /// Ids whose hash is below this are held out.
    threshold: u64,
}

impl Holdout {
    /// `share` in `0..=MAX_SHARE` (checked by the config loader).
    pub fn new(share: f64, salt: String) -> Self {
        let share = share.clamp(0.0, MAX_SHARE);
        // share ≤ 0.5, so the product is below 2⁶³ and exact enough for a threshold.
        let threshold = (share * 18_446_744_073_709_551_616.0) as u64;
        Holdout {
            share,
            salt,
            threshold,
        }
    }

    /// The split a cohort's configuration asks for.
    pub fn of(configured: &crate::config::HoldoutShare) -> Self {
        Holdout::new(configured.share, configured.salt.clone())
    }

    pub fn share(&self) -> f64 {
        self.share
    }

    pub fn salt(&self) -> &str {
        &self.salt
    }

    /// Does anyone get held out?
    pub fn is_active(&self) -> bool {
        self.threshold > 0
    }

    /// Is `id` in the control group?
    pub fn holds(&self, id: &str) -> bool {
        self.threshold > 0 && hash(&self.salt, id) < self.threshold
    }

    /// Splits a sorted, distinct id list into (treated, held out), both still sorted (rayon).
    pub fn split(&self, ids: &StringArray) -> (StringArray, StringArray) {
        let flags: Vec<bool> = (0..ids.len())
            .into_par_iter()
            .with_min_len(64 * 1024)
            .map(|i| ids.is_valid(i) && self.holds(ids.value(i)))
            .collect();
        let (mut treated, mut held) = (Vec::new(), Vec::new());
        for (i, &h) in flags.iter().enumerate() {
            if ids.is_valid(i) {
                if h { &mut held } else { &mut treated }.push(ids.value(i));
            }
        }
        (super::string_array(&treated), super::string_array(&held))
    }
}

/// The split's hash of `id` under `salt`.
pub fn hash(salt: &str, id: &str) -> u64 {
    use crate::hash::{FNV_OFFSET, fnv1a64_from, mix64};
    mix64(fnv1a64_from(
        FNV_OFFSET,
        salt.bytes().chain([0xff]).chain(id.bytes()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cohort::shard::Shard;

    fn ids(n: usize) -> StringArray {
        let mut v: Vec<String> = (0..n)
            .map(|i| crate::synth::user_id(Default::default(), i as u64))
            .collect();
        v.sort();
        StringArray::from_iter_values(v)
    }

    #[test]
    fn the_hash_is_pinned() {
        // Changing it would move members of live experiments between arms.
        assert_eq!(
            hash("active_30d", "u000000000"),
            hash("active_30d", "u000000000")
        );
        let pinned: Vec<u64> = [("a", "b"), ("ab", ""), ("", "ab"), ("active_30d", "alice")]
            .iter()
            .map(|(s, i)| hash(s, i) % 1_000_003)
            .collect();
        assert_eq!(pinned, PINNED);
        assert_ne!(
            hash("ab", ""),
            hash("", "ab"),
            "the separator keeps salt and id apart"
        );
    }

    // Computed independently (a Python transcription of the formula above).
    const PINNED: [u64; 4] = [127_789, 530_533, 960_153, 706_378];

    #[test]
    fn split_is_sorted_complete_and_near_the_share() {
        let all = ids(200_000);
        let h = Holdout::new(0.1, "exp".into());
        let (treated, held) = h.split(&all);
        assert_eq!(treated.len() + held.len(), all.len());
        let share = held.len() as f64 / all.len() as f64;
        assert!((share - 0.1).abs() < 0.005, "{share}");
        for part in [&treated, &held] {
            let v: Vec<&str> = part.iter().flatten().collect();
            assert!(v.windows(2).all(|w| w[0] < w[1]));
        }
        assert!(held.iter().flatten().all(|id| h.holds(id)));
        assert!(treated.iter().flatten().all(|id| !h.holds(id)));
        // Nobody is held out at share 0.
        let (t, none) = Holdout::new(0.0, "exp".into()).split(&all);
        assert_eq!((t.len(), none.len()), (all.len(), 0));
    }

    #[test]
    fn raising_the_share_only_moves_treated_members_into_the_holdout() {
        let all = ids(50_000);
        let (small, large) = (Holdout::new(0.1, "s".into()), Holdout::new(0.2, "s".into()));
        for id in all.iter().flatten() {
            if small.holds(id) {
                assert!(large.holds(id), "{id} left the holdout when the share grew");
            }
        }
        // Another salt is another draw: about share² overlap.
        let other = Holdout::new(0.2, "t".into());
        let both = all
            .iter()
            .flatten()
            .filter(|id| large.holds(id) && other.holds(id))
            .count();
        let share = both as f64 / all.len() as f64;
        assert!((share - 0.04).abs() < 0.01, "{share}");
    }

    #[test]
    fn every_shard_holds_out_its_share() {
        let all = ids(100_000);
        let h = Holdout::new(0.25, "exp".into());
        for index in 0..4 {
            let part = Shard { index, count: 4 }.filter(&all);
            let held = part.iter().flatten().filter(|id| h.holds(id)).count();
            let share = held as f64 / part.len() as f64;
            assert!((share - 0.25).abs() < 0.02, "shard {index}: {share}");
        }
    }
}
