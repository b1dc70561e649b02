//! Distinct ids in byte order, at a cost that does not depend on the order they arrive in, with
//! the ids held once.
//!
//! Sorting string slices compares through two pointers into a buffer of hundreds of megabytes:
//! on ids in no order nearly every comparison is two cache misses, and a 10M-id cohort took
//! ~10 s where the same ids already sorted took ~0.2 s. Here ids are copied out of the query's
//! batches as they arrive ([`Collector::push`]) into groups by their first two bytes, which are
//! ranges of byte order: the query's batches are freed at once, and no cast copies them first.
//! [`Collector::finish`] then sorts group by group — a group of a 10M UUID cohort is ~1.4 MB, so
//! its sort runs in cache — as 16-byte `(key, location)` integers (`key`: 8 bytes of the id after
//! the prefix the group shares, big-endian, zero-padded, so keys order like the bytes they hold;
//! only equal keys compare the ids' remaining bytes), writes each group's ids into the output
//! and frees the group: ids are held about once, not as batches, a sorted copy and the entries
//! of all of them together. The output is exactly byte order (what snapshots hold), the same as
//! sorting the `&str`s; ids already in order (a sorted lake) are only checked.

use arrow::array::{Array, AsArray, StringArray};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use rayon::prelude::*;

/// Ids sorted per round of [`Collector::finish`]: the sort entries alive at once.
const WINDOW: usize = 1 << 20;
/// Groups: one per value of an id's first two bytes.
const GROUPS: usize = 1 << 16;

/// What [`distinct_sorted_ids`] and [`Collector::finish`] found.
pub struct Sorted {
    pub ids: StringArray,
    pub rows: usize,
    pub nulls: usize,
    pub empty: usize,
    pub duplicates: usize,
}

/// The first block of an arena (most groups of a small cohort never need another).
const FIRST_BLOCK: usize = 64 << 10;
/// Every later block: at jemalloc's `oversize_threshold` (8 MiB by default), so each block comes
/// from its dedicated arena, which keeps no freed pages: a block freed by [`Collector::finish`]
/// returns its memory to the system at once, and the sorted array written beside the arenas
/// takes its place instead of adding to it (with 1 MiB blocks a 10M-id dry run peaked ~90 MiB
/// higher). Pages of a block are resident only once written.
const BLOCK: usize = 8 << 20;
/// The longest id accepted (an id never spans two blocks); partners accept far shorter ones.
pub const MAX_ID_BYTES: usize = FIRST_BLOCK;

/// Why an id could not be collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushError {
    /// An id over [`MAX_ID_BYTES`]: bad input, the same on every run.
    TooLong(String),
    /// Anything else (a type to cast first, a cohort over 2 GiB).
    Other(String),
}

impl std::fmt::Display for PushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PushError::TooLong(m) | PushError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for PushError {}

/// The ids of one group from one collector, back to back in fixed-size blocks (no doubling
/// reallocations: what is allocated is what is used, and it is freed block by block).
#[derive(Default)]
struct Arena {
    blocks: Vec<Vec<u8>>,
    /// Each id's end as a position over the blocks laid end to end; an id that would not fit in
    /// the rest of a block starts the next one.
    ends: Vec<u32>,
}

fn block_start(k: usize) -> usize {
    if k == 0 {
        0
    } else {
        FIRST_BLOCK + (k - 1) * BLOCK
    }
}

fn block_of(pos: usize) -> usize {
    if pos < FIRST_BLOCK {
        0
    } else {
        1 + (pos - FIRST_BLOCK) / BLOCK
    }
}

impl Arena {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn bytes(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }

    fn push(&mut self, id: &[u8]) -> Result<(), PushError> {
        if id.len() > MAX_ID_BYTES {
            return Err(PushError::TooLong(format!(
                "a user_id of {} bytes (`{}…`); the longest accepted is {MAX_ID_BYTES} bytes",
                id.len(),
                String::from_utf8_lossy(&id[..40])
            )));
        }
        let mut pos = self.ends.last().map_or(0, |&e| e as usize);
        let k = self.blocks.len();
        if k == 0 || pos + id.len() > block_start(k) {
            // The next block (the rest of this one stays unused).
            pos = block_start(k);
            self.blocks
                .push(Vec::with_capacity(if k == 0 { FIRST_BLOCK } else { BLOCK }));
        }
        self.blocks
            .last_mut()
            .expect("a block")
            .extend_from_slice(id);
        let end = u32::try_from(pos + id.len())
            .map_err(|_| PushError::Other("the ids of a cohort exceed 2 GiB".to_string()))?;
        self.ends.push(end);
        Ok(())
    }

    fn get(&self, i: usize) -> &[u8] {
        let end = self.ends[i] as usize;
        let k = block_of(end - 1);
        let base = block_start(k);
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize }.max(base);
        &self.blocks[k][start - base..end - base]
    }
}

/// Collects the ids of a query's batches (one collector per partition, no locks), grouped by
/// their first two bytes.
pub struct Collector {
    groups: Vec<Option<Box<Arena>>>,
    rows: usize,
    nulls: usize,
    empty: usize,
    /// Ids are external ids as they are (`user_id` alone): one starting with 0x01 is kept as
    /// its key (`identity::external`).
    external_ids: bool,
}

impl Default for Collector {
    fn default() -> Self {
        Self::new()
    }
}

/// The group of an id: its first two bytes (a missing second byte as 0), so groups in index
/// order are ranges of byte order.
fn group_of(id: &[u8]) -> usize {
    (id[0] as usize) << 8 | id.get(1).copied().unwrap_or(0) as usize
}

impl Collector {
    pub fn new() -> Self {
        Self {
            groups: (0..GROUPS).map(|_| None).collect(),
            rows: 0,
            nulls: 0,
            empty: 0,
            external_ids: false,
        }
    }

    /// A collector of external ids as the query returns them, which keeps each as its member
    /// key: an id starting with 0x01 gets [`crate::cohort::identity::EXTERNAL_PREFIX`].
    pub fn of_external_ids() -> Self {
        Self {
            external_ids: true,
            ..Self::new()
        }
    }

    /// The bytes of the ids held, duplicates included ([`Collector::finish`] makes one array of
    /// them: it takes at most 2 GiB).
    pub fn bytes(&self) -> usize {
        self.groups.iter().flatten().map(|a| a.bytes()).sum()
    }

    /// Copies the non-NULL, non-empty ids of a `Utf8`, `LargeUtf8` or `Utf8View` array; other
    /// types are the caller's to cast. Errs on an id over [`MAX_ID_BYTES`], and when one group
    /// of one collector would pass 4 GiB (a cohort's ids are limited to 2 GiB anyway).
    pub fn push(&mut self, array: &dyn Array) -> Result<(), PushError> {
        self.rows += array.len();
        self.nulls += array.null_count();
        match array.data_type() {
            DataType::Utf8 => self.add_all(array.as_string::<i32>().iter()),
            DataType::LargeUtf8 => self.add_all(array.as_string::<i64>().iter()),
            DataType::Utf8View => self.add_all(array.as_string_view().iter()),
            other => Err(PushError::Other(format!(
                "ids of type {other} (cast them to Utf8 first)"
            ))),
        }
    }

    fn add_all<'a>(&mut self, ids: impl Iterator<Item = Option<&'a str>>) -> Result<(), PushError> {
        for text in ids.flatten() {
            let id = text.as_bytes();
            if id.is_empty() {
                self.empty += 1;
                continue;
            }
            if self.external_ids && id[0] == 1 {
                let key = crate::cohort::identity::external(text);
                let key = key.as_bytes();
                self.groups[group_of(key)]
                    .get_or_insert_with(Box::default)
                    .push(key)?;
                continue;
            }
            self.groups[group_of(id)]
                .get_or_insert_with(Box::default)
                .push(id)?;
        }
        Ok(())
    }

    /// Sorts and de-duplicates everything the collectors hold into one array in byte order.
    /// `parts` are in partition order (an input already sorted across them is only checked).
    pub fn finish(parts: Vec<Collector>) -> Result<Sorted, String> {
        // Sized once (duplicates included): no doubling copies of hundreds of megabytes.
        let bytes: usize = parts.iter().map(Collector::bytes).sum();
        let total: usize = parts
            .iter()
            .flat_map(|p| p.groups.iter().flatten())
            .map(|a| a.len())
            .sum();
        if i32::try_from(bytes).is_err() {
            return Err("the ids of a cohort exceed 2 GiB".into());
        }
        let mut values: Vec<u8> = Vec::with_capacity(bytes);
        let mut offsets: Vec<i32> = Vec::with_capacity(total + 1);
        offsets.push(0);
        let counts = Self::sort_windows(parts, |sorted| {
            let pieces = pieces(sorted, usize::MAX);
            let bytes: usize = pieces.iter().map(|p| p.bytes).sum();
            let (byte_start, id_start) = (values.len(), offsets.len());
            let ids: usize = pieces.iter().map(|p| p.order.len()).sum();
            values.resize(byte_start + bytes, 0);
            offsets.resize(id_start + ids, 0);
            copy_out(
                &pieces,
                &mut values[byte_start..],
                &mut offsets[id_start..],
                byte_start,
            );
            Ok(())
        })?;
        let ids = StringArray::try_new(
            OffsetBuffer::new(ScalarBuffer::from(offsets)),
            Buffer::from_vec(values),
            None,
        )
        .map_err(|e| format!("ids: {e}"))?;
        Ok(Sorted {
            ids,
            rows: counts.rows,
            nulls: counts.nulls,
            empty: counts.empty,
            duplicates: counts.duplicates,
        })
    }

    /// Sorts and de-duplicates as [`Collector::finish`], handing the ids to `emit` as they are
    /// ready, in byte order, as arrays of at most `part_ids` ids (each window of groups gives
    /// one or more): the first part is out once the first window is sorted, not the last.
    /// Returns the counts (`Sorted::ids` empty); stops at the first error `emit` returns.
    pub fn finish_in_parts(
        parts: Vec<Collector>,
        part_ids: usize,
        mut emit: impl FnMut(StringArray) -> Result<(), String>,
    ) -> Result<Sorted, String> {
        let part_ids = part_ids.max(1);
        let counts = Self::sort_windows(parts, |sorted| {
            let pieces = pieces(sorted, part_ids);
            // Pieces never straddle a part: cut where each part's ids reach `part_ids`.
            let mut from = 0;
            while from < pieces.len() {
                let (mut n, mut to) = (0, from);
                while to < pieces.len() && n + pieces[to].order.len() <= part_ids {
                    n += pieces[to].order.len();
                    to += 1;
                }
                let part = &pieces[from..to];
                let bytes: usize = part.iter().map(|p| p.bytes).sum();
                if i32::try_from(bytes).is_err() {
                    return Err("a part of the cohort's ids exceeds 2 GiB".into());
                }
                // Zeroed allocations come from fresh pages, faulted in by the parallel copy.
                let mut values = vec![0u8; bytes];
                let mut offsets = vec![0i32; n + 1];
                copy_out(part, &mut values, &mut offsets[1..], 0);
                let ids = StringArray::try_new(
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    Buffer::from_vec(values),
                    None,
                )
                .map_err(|e| format!("ids: {e}"))?;
                emit(ids)?;
                from = to;
            }
            Ok(())
        })?;
        Ok(counts)
    }

    /// Gathers the collectors' groups, sorts them a window (about [`WINDOW`] ids) at a time in
    /// parallel, and hands each window's sorted groups, in byte order, to `out` before the next
    /// is sorted (the window's arenas are freed after). Returns the counts.
    fn sort_windows(
        mut parts: Vec<Collector>,
        mut out: impl FnMut(&[SortedGroup]) -> Result<(), String>,
    ) -> Result<Sorted, String> {
        let rows = parts.iter().map(|p| p.rows).sum();
        let nulls = parts.iter().map(|p| p.nulls).sum();
        let empty = parts.iter().map(|p| p.empty).sum();
        let groups: Vec<Vec<Arena>> = (0..GROUPS)
            .map(|g| {
                parts
                    .iter_mut()
                    .filter_map(|p| p.groups[g].take().map(|a| *a))
                    .collect::<Vec<_>>()
            })
            .filter(|g| !g.is_empty())
            .collect();
        drop(parts);
        let mut duplicates = 0;
        let mut groups = groups.into_iter().peekable();
        while groups.peek().is_some() {
            // A window of groups: sorted in parallel, handed out, then freed.
            let mut window = Vec::new();
            let mut n = 0;
            while let Some(g) = groups.next_if(|_| n < WINDOW) {
                n += g.iter().map(Arena::len).sum::<usize>();
                window.push(g);
            }
            let sorted: Vec<SortedGroup> = window.into_par_iter().map(sort_group).collect();
            duplicates += sorted.iter().map(|g| g.duplicates).sum::<usize>();
            out(&sorted)?;
        }
        Ok(Sorted {
            ids: StringArray::from(Vec::<&str>::new()),
            rows,
            nulls,
            empty,
            duplicates,
        })
    }
}

/// Ids copied out per task: a group of a cohort of short ids (`u` + 10 digits: ten groups of a
/// 10M cohort) is 1M ids, and copied by one thread it was most of the time after the query.
const PIECE: usize = 1 << 15;

/// A run of one sorted group's ids, copied out by one task.
struct Piece<'a> {
    group: &'a SortedGroup,
    order: &'a [u64],
    bytes: usize,
}

/// The sorted groups' ids as pieces of at most [`PIECE`] ids, none straddling a multiple of
/// `part_ids` ids (counted from the first group), their bytes counted in parallel.
fn pieces(sorted: &[SortedGroup], part_ids: usize) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut done = 0usize;
    for group in sorted {
        let mut order = group.order.as_slice();
        while !order.is_empty() {
            let to_part_end = part_ids - done % part_ids;
            let n = order.len().min(PIECE).min(to_part_end);
            let (head, rest) = order.split_at(n);
            pieces.push(Piece {
                group,
                order: head,
                bytes: 0,
            });
            order = rest;
            done += n;
        }
    }
    pieces.par_iter_mut().for_each(|p| {
        p.bytes = p.order.iter().map(|&loc| p.group.id(loc).len()).sum();
    });
    pieces
}

/// Copies `pieces` in parallel into `values` (their bytes back to back) and `ends` (each id's
/// end, counted from `start`, the position of `values[0]` in the whole array).
fn copy_out(pieces: &[Piece<'_>], values: &mut [u8], ends: &mut [i32], start: usize) {
    let mut jobs = Vec::with_capacity(pieces.len());
    let (mut v_rest, mut e_rest) = (values, ends);
    let mut at = start;
    for p in pieces {
        let (v, v_tail) = v_rest.split_at_mut(p.bytes);
        let (e, e_tail) = e_rest.split_at_mut(p.order.len());
        jobs.push((p, at, v, e));
        (v_rest, e_rest) = (v_tail, e_tail);
        at += p.bytes;
    }
    jobs.into_par_iter().for_each(|(p, at, out, ends)| {
        let mut pos = 0;
        for (&loc, end) in p.order.iter().zip(ends) {
            let id = p.group.id(loc);
            out[pos..pos + id.len()].copy_from_slice(id);
            pos += id.len();
            // Below 2 GiB: the callers check the total first.
            *end = (at + pos) as i32;
        }
    });
}

/// One group, its ids' order (`arena << 32 | index`), de-duplicated.
struct SortedGroup {
    arenas: Vec<Arena>,
    order: Vec<u64>,
    duplicates: usize,
}

impl SortedGroup {
    fn id(&self, loc: u64) -> &[u8] {
        at(&self.arenas, loc)
    }
}

/// The id at `loc` (`arena << 32 | index`).
fn at(arenas: &[Arena], loc: u64) -> &[u8] {
    arenas[(loc >> 32) as usize].get((loc & 0xFFFF_FFFF) as usize)
}

/// 8 bytes of `id` from `from`, big-endian, zero-padded.
fn key(id: &[u8], from: usize) -> u64 {
    let mut k = [0u8; 8];
    if let Some(rest) = id.get(from..) {
        let n = rest.len().min(8);
        k[..n].copy_from_slice(&rest[..n]);
    }
    u64::from_be_bytes(k)
}

fn sort_group(arenas: Vec<Arena>) -> SortedGroup {
    let before: usize = arenas.iter().map(Arena::len).sum();
    let locs = || {
        arenas
            .iter()
            .enumerate()
            .flat_map(|(a, arena)| (0..arena.len()).map(move |i| (a as u64) << 32 | i as u64))
    };
    let id = |loc: u64| at(&arenas, loc);
    let in_order = {
        let mut prev: Option<&[u8]> = None;
        locs().all(|loc| {
            let now = id(loc);
            let ok = prev.is_none_or(|p| p <= now);
            prev = Some(now);
            ok
        })
    };
    let mut order: Vec<u64> = if in_order {
        locs().collect()
    } else {
        // The prefix every id of the group shares: keys start after it.
        let first = id(0);
        let common = locs().fold(first.len(), |n, loc| {
            let other = id(loc);
            n.min(
                other
                    .iter()
                    .zip(&first[..n])
                    .take_while(|(a, b)| a == b)
                    .count(),
            )
        });
        let mut entries: Vec<(u64, u64)> = locs().map(|loc| (key(id(loc), common), loc)).collect();
        let order = |a: &(u64, u64), b: &(u64, u64)| {
            a.0.cmp(&b.0)
                .then_with(|| id(a.1)[common..].cmp(&id(b.1)[common..]))
        };
        if entries.len() > WINDOW / 8 {
            entries.par_sort_unstable_by(order);
        } else {
            entries.sort_unstable_by(order);
        }
        // Neighbours with different keys are different ids: only equal keys read the ids (the
        // ids are in no order in the arenas, so each read is a cache miss).
        entries.dedup_by(|b, a| a.0 == b.0 && id(a.1) == id(b.1));
        entries.into_iter().map(|(_, loc)| loc).collect()
    };
    if in_order {
        order.dedup_by(|b, a| id(*a) == id(*b));
    }
    SortedGroup {
        duplicates: before - order.len(),
        order,
        arenas,
    }
}

/// Sorts and de-duplicates the non-NULL, non-empty ids of `columns` into one array in byte order.
///
/// Panics if the ids pass 2 GiB (the query path reports that as an error instead).
pub fn distinct_sorted_ids(columns: &[StringArray]) -> Sorted {
    let mut collector = Collector::new();
    for c in columns {
        collector.push(c).expect("ids below 2 GiB");
    }
    Collector::finish(vec![collector]).expect("ids below 2 GiB")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rayon::slice::ParallelSliceMut;

    /// What `distinct_sorted` did before: a stable sort of the `&str`s, then dedup.
    fn reference(columns: &[StringArray]) -> (Vec<String>, usize, usize) {
        let mut ids: Vec<&str> = columns.iter().flat_map(|c| c.iter().flatten()).collect();
        let before_empty = ids.len();
        ids.retain(|s| !s.is_empty());
        let empty = before_empty - ids.len();
        ids.par_sort();
        let before = ids.len();
        ids.dedup();
        (
            ids.iter().map(|s| s.to_string()).collect(),
            empty,
            before - ids.len(),
        )
    }

    fn check(columns: &[StringArray]) {
        let (want, empty, dups) = reference(columns);
        let got = distinct_sorted_ids(columns);
        let ids: Vec<&str> = got.ids.iter().flatten().collect();
        assert_eq!(ids, want);
        assert_eq!((got.empty, got.duplicates), (empty, dups));
        assert_eq!(got.ids.null_count(), 0);
        for part_ids in [1, 7, 1_000, usize::MAX] {
            check_parts(columns, part_ids, &want, (empty, dups));
        }
    }

    /// `finish_in_parts`: the same ids in the same order, in parts of at most `part_ids`.
    fn check_parts(
        columns: &[StringArray],
        part_ids: usize,
        want: &[String],
        counts: (usize, usize),
    ) {
        let mut collector = Collector::new();
        for c in columns {
            collector.push(c).unwrap();
        }
        let mut parts = Vec::new();
        let got = Collector::finish_in_parts(vec![collector], part_ids, |p| {
            parts.push(p);
            Ok(())
        })
        .unwrap();
        assert!(parts.iter().all(|p| !p.is_empty() && p.len() <= part_ids));
        let ids: Vec<&str> = parts.iter().flat_map(|p| p.iter().flatten()).collect();
        assert_eq!(ids, want, "parts of {part_ids}");
        assert_eq!((got.empty, got.duplicates), counts);
    }

    fn split(ids: &[Option<String>], cuts: &[usize]) -> Vec<StringArray> {
        let mut out = Vec::new();
        let mut start = 0;
        for &c in cuts.iter().chain([&ids.len()]) {
            let c = c.clamp(start, ids.len());
            out.push(StringArray::from(ids[start..c].to_vec()));
            start = c;
        }
        out
    }

    /// Ids drawn from small alphabets (so prefixes, duplicates and equal keys are common),
    /// non-ASCII and NUL bytes included.
    fn id() -> impl Strategy<Value = Option<String>> {
        prop_oneof![
            1 => Just(None),
            1 => Just(Some(String::new())),
            6 => "[ab\u{0}]{0,12}".prop_map(Some),
            3 => "u0{6}[0-9]{0,4}".prop_map(Some),
            2 => "[aé€😀z]{1,10}".prop_map(Some),
            2 => "[0-9a-f]{8}-[0-9a-f]{4}".prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]
        #[test]
        fn equals_the_stable_sort_of_the_strings(
            ids in proptest::collection::vec(id(), 0..300),
            cuts in proptest::collection::vec(0usize..300, 0..5),
            presort in any::<bool>(),
        ) {
            let mut ids = ids;
            if presort {
                ids.sort();
            }
            let mut cuts = cuts;
            cuts.sort();
            check(&split(&ids, &cuts));
        }
    }

    /// Ids long enough to leave gaps at the ends of blocks (one group: same first two bytes),
    /// and one over the limit, which is refused with its length.
    #[test]
    fn block_ends_and_the_longest_id() {
        let ids: Vec<Option<String>> = (0..2_000u32)
            .map(|i| {
                let len = 1_000 + (i.wrapping_mul(2_654_435_761) % 7_000) as usize;
                Some(format!("ab{:05}{}", (i * 7_919) % 2_000, "x".repeat(len)))
            })
            .collect();
        check(&split(&ids, &[700, 1_300]));
        let mut c = Collector::new();
        let long = StringArray::from(vec!["é".repeat(MAX_ID_BYTES)]);
        let e = c.push(&long).unwrap_err();
        assert!(matches!(e, PushError::TooLong(_)));
        let e = e.to_string();
        assert!(e.contains("a user_id of 131072 bytes (`éé"), "{e}");
        let exact = StringArray::from(vec!["z".repeat(MAX_ID_BYTES)]);
        c.push(&exact).unwrap();
    }

    #[test]
    fn shapes_orders_and_duplicates() {
        let mut rng = 0x1234_5678u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let shapes: [fn(u64) -> String; 4] = [
            |i| format!("u{i:09}"),
            |i| {
                format!(
                    "{:016x}-{:04x}",
                    i.wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    i % 7
                )
            },
            |i| format!("user-{}", i.wrapping_mul(2_654_435_761) % 1_000_003),
            |i| format!("é{}ü", i % 5_000),
        ];
        for shape in shapes {
            let sorted: Vec<Option<String>> = (0..20_000).map(|i| Some(shape(i))).collect();
            let mut shuffled = sorted.clone();
            for i in (1..shuffled.len()).rev() {
                shuffled.swap(i, (next() % (i as u64 + 1)) as usize);
            }
            let mut dups = shuffled.clone();
            dups.extend(shuffled[..5_000].iter().cloned());
            dups.push(None);
            dups.push(Some(String::new()));
            for ids in [&sorted, &shuffled, &dups] {
                check(&split(ids, &[]));
                check(&split(ids, &[3, 5_000, 5_000, 12_345]));
            }
        }
        check(&[]);
        check(&split(&[None, Some(String::new())], &[1]));
    }
}
