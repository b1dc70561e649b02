//! `sync --shard K/N`: a cohort's members split by a stable hash of `user_id`, so N scheduler
//! tasks (on N machines) each deliver one part with its own plan, journal, lock and snapshot.
//!
//! `shard(id) = mix(fnv1a64(utf8 bytes of id)) mod N` — FNV-1a then the SplitMix64 finaliser,
//! both fixed here and independent of the Rust release, the platform and the process, so an id
//! stays in its shard across runs and machines.

use std::fmt;
use std::str::FromStr;

use datafusion::arrow::array::{Array, StringArray};
use rayon::prelude::*;

/// Part `index` of `count` (0-based: `0/4` … `3/4`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub count: u32,
}

impl Shard {
    /// Does `id` belong to this shard?
    pub fn owns(&self, id: &str) -> bool {
        shard_of(id, self.count) == self.index
    }

    /// This shard's ids of a sorted, distinct list, still sorted (rayon).
    pub fn filter(&self, ids: &StringArray) -> StringArray {
        let kept: Vec<&str> = (0..ids.len())
            .into_par_iter()
            .with_min_len(64 * 1024)
            .filter(|&i| ids.is_valid(i) && self.owns(ids.value(i)))
            .map(|i| ids.value(i))
            .collect();
        super::string_array(&kept)
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a shard: write K/N with 0 <= K < N, e.g. 0/4");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = k.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count || count > 4096 {
            return Err(bad() + " and N <= 4096");
        }
        Ok(Shard { index, count })
    }
}

/// The shard (of `count`) an id belongs to.
pub fn shard_of(id: &str, count: u32) -> u32 {
    let z = crate::hash::mix64(crate::hash::fnv1a64(id.as_bytes()));
    (z % u64::from(count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_with_the_text() {
        assert_eq!(
            "2/4".parse::<Shard>().unwrap(),
            Shard { index: 2, count: 4 }
        );
        for bad in ["4/4", "1", "a/2", "0/0", "-1/3"] {
            let e = bad.parse::<Shard>().unwrap_err();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn the_hash_is_fixed_and_the_shards_partition_evenly() {
        // Pinned values: changing the hash would move ids between shards of live cohorts.
        assert_eq!(shard_of("u000000000", 4), shard_of("u000000000", 4));
        let pinned: Vec<u32> = ["u000000000", "u000000001", "alice", ""]
            .iter()
            .map(|id| shard_of(id, 1000))
            .collect();
        assert_eq!(pinned, PINNED);
        let ids = StringArray::from_iter_values((0..100_000).map(|i| format!("u{i:09}")));
        let parts: Vec<StringArray> = (0..4)
            .map(|index| Shard { index, count: 4 }.filter(&ids))
            .collect();
        let total: usize = parts.iter().map(Array::len).sum();
        assert_eq!(total, ids.len());
        for p in &parts {
            assert!((23_000..27_000).contains(&p.len()), "{}", p.len());
            let v: Vec<&str> = p.iter().flatten().collect();
            assert!(v.windows(2).all(|w| w[0] < w[1]), "sorted");
        }
    }

    const PINNED: [u32; 4] = [774, 744, 572, 203];
}
