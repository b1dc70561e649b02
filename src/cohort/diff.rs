//! The change between what the partner holds (the committed snapshot) and the cohort now: one
//! merge pass over two sorted, distinct id lists.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, StringArray, StringBuilder};

/// Ids to add (in `now`, not in `before`) and to remove (in `before`, not in `now`), sorted.
#[derive(Debug, Clone)]
pub struct Diff {
    pub adds: StringArray,
    pub removes: StringArray,
}

/// Both inputs must be sorted by bytes and distinct (as `Members::ids` and snapshots are).
pub fn diff(before: &StringArray, now: &StringArray) -> Diff {
    diff_walk((0..before.len()).map(|i| before.value(i)), now)
}

/// [`diff`] of a membership given as ids in order (`Base` walks its deltas unapplied).
fn diff_walk<'a>(before: impl Iterator<Item = &'a str>, now: &StringArray) -> Diff {
    let mut walk = Walk::new(before);
    let adds = walk.part(now);
    Diff {
        adds,
        removes: walk.removes(),
    }
}

/// A diff fed the members in parts, in order (every id of a part after every id of the
/// parts before): each part's adds as soon as it is in, the removes once every part is (an id
/// of `before` between two parts may still be in a later one). A pipelined sync plans and
/// sends each part's adds while the next part is still being sorted.
pub struct Walk<'a, I: Iterator<Item = &'a str>> {
    before: std::iter::Peekable<I>,
    removes: StringBuilder,
}

impl<'a, I: Iterator<Item = &'a str>> Walk<'a, I> {
    pub fn new(before: I) -> Self {
        Walk {
            before: before.peekable(),
            removes: StringBuilder::new(),
        }
    }

    /// The ids of `now` (the next part, sorted and distinct) not in `before`.
    pub fn part(&mut self, now: &StringArray) -> StringArray {
        let mut adds = StringBuilder::new();
        let mut j = 0;
        while j < now.len()
            && let Some(&b) = self.before.peek()
        {
            let n = now.value(j);
            match b.cmp(n) {
                Ordering::Less => {
                    self.removes.append_value(b);
                    self.before.next();
                }
                Ordering::Greater => {
                    adds.append_value(n);
                    j += 1;
                }
                Ordering::Equal => {
                    self.before.next();
                    j += 1;
                }
            }
        }
        for k in j..now.len() {
            adds.append_value(now.value(k));
        }
        adds.finish()
    }

    /// The ids of `before` in no part: call once every part is in.
    pub fn removes(mut self) -> StringArray {
        for b in self.before {
            self.removes.append_value(b);
        }
        self.removes.finish()
    }
}

/// Parts of a list (each part's ids after the previous part's) as one array.
pub fn concat(parts: &[StringArray]) -> StringArray {
    match parts {
        [] => StringArray::from(Vec::<&str>::new()),
        [one] => one.clone(),
        _ => {
            let mut out = StringBuilder::with_capacity(
                parts.iter().map(Array::len).sum(),
                parts.iter().map(|p| p.value_data().len()).sum(),
            );
            for p in parts {
                for i in 0..p.len() {
                    out.append_value(p.value(i));
                }
            }
            out.finish()
        }
    }
}

/// Arrays in order as one array; `Err` past the 2 GiB one array holds.
pub fn one_array(mut arrays: Vec<StringArray>) -> Result<StringArray, String> {
    if arrays.len() == 1 {
        return Ok(arrays.remove(0));
    }
    let bytes: usize = arrays.iter().map(|a| a.value_data().len()).sum();
    if i32::try_from(bytes).is_err() {
        return Err(format!(
            "{} ids over 2 GiB do not fit one array",
            arrays.iter().map(Array::len).sum::<usize>()
        ));
    }
    Ok(concat(&arrays))
}

/// The sorted union of two sorted, distinct, disjoint-or-not id lists.
pub fn union(a: &StringArray, b: &StringArray) -> StringArray {
    let mut out = StringBuilder::with_capacity(
        a.len() + b.len(),
        a.value_data().len() + b.value_data().len(),
    );
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a.value(i).cmp(b.value(j)) {
            Ordering::Less => {
                out.append_value(a.value(i));
                i += 1;
            }
            Ordering::Greater => {
                out.append_value(b.value(j));
                j += 1;
            }
            Ordering::Equal => {
                out.append_value(a.value(i));
                i += 1;
                j += 1;
            }
        }
    }
    for k in i..a.len() {
        out.append_value(a.value(k));
    }
    for k in j..b.len() {
        out.append_value(b.value(k));
    }
    out.finish()
}

/// The net change of deltas applied in order, as (adds, removes), disjoint and sorted: an id's
/// last change wins. Each delta's adds and removes are sorted, distinct and disjoint.
pub fn net(deltas: &[(Arc<StringArray>, Arc<StringArray>)]) -> (StringArray, StringArray) {
    let empty = || StringArray::from(Vec::<&str>::new());
    let (mut adds, mut removes) = (empty(), empty());
    for (a, r) in deltas {
        adds = union(&diff(r, &adds).adds, a);
        removes = union(&diff(a, &removes).adds, r);
    }
    (adds, removes)
}

/// `(base − removes) ∪ adds` in one merge pass (all three sorted and distinct).
pub fn apply(base: &StringArray, adds: &StringArray, removes: &StringArray) -> StringArray {
    let mut out = StringBuilder::with_capacity(
        base.len() + adds.len(),
        base.value_data().len() + adds.value_data().len(),
    );
    let (mut a, mut r) = (0, 0);
    for i in 0..base.len() {
        let b = base.value(i);
        while a < adds.len() && adds.value(a) < b {
            out.append_value(adds.value(a));
            a += 1;
        }
        let added = a < adds.len() && adds.value(a) == b;
        if added {
            a += 1;
        }
        while r < removes.len() && removes.value(r) < b {
            r += 1;
        }
        let removed = r < removes.len() && removes.value(r) == b;
        if added || !removed {
            out.append_value(b);
        }
    }
    for k in a..adds.len() {
        out.append_value(adds.value(k));
    }
    out.finish()
}

/// A committed membership as its snapshot and the net change of its deltas, not applied: the
/// diff walks `(snapshot − removes) ∪ adds` as a merge, so an incremental run never holds the
/// applied membership beside the snapshot (for 10M UUIDs that copy was 400 MB of its peak).
/// The snapshot is held as arrays in order (each one's ids after the previous one's): 100M
/// UUIDs are past one array's 2 GiB.
#[derive(Debug, Clone)]
pub struct Base {
    snapshot: Arc<[StringArray]>,
    pub adds: Arc<StringArray>,
    pub removes: Arc<StringArray>,
    len: usize,
}

impl Base {
    /// A membership with no deltas on top.
    pub fn whole(ids: Arc<StringArray>) -> Base {
        Base::in_chunks(vec![ids.as_ref().clone()])
    }

    /// A membership with no deltas on top, given as arrays in order.
    pub fn in_chunks(snapshot: Vec<StringArray>) -> Base {
        let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
        Base {
            len: snapshot.iter().map(Array::len).sum(),
            snapshot: snapshot.into(),
            adds: empty.clone(),
            removes: empty,
        }
    }

    /// `snapshot` (arrays in order) with the net `adds` and `removes` (sorted, distinct,
    /// disjoint) on top; counts the members in one pass.
    pub fn with_changes(
        snapshot: Vec<StringArray>,
        adds: Arc<StringArray>,
        removes: Arc<StringArray>,
    ) -> Base {
        let snapshot: Arc<[StringArray]> = snapshot.into();
        let len = Applied::new(&snapshot, &adds, &removes).count();
        Base {
            snapshot,
            adds,
            removes,
            len,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn has_changes(&self) -> bool {
        !self.adds.is_empty() || !self.removes.is_empty()
    }

    /// The membership as one array (the snapshot itself when it is one and no delta changed
    /// it); `Err` past one array's 2 GiB.
    pub fn materialize(&self) -> Result<Arc<StringArray>, String> {
        if let [one] = self.snapshot.as_ref()
            && !self.has_changes()
        {
            return Ok(Arc::new(one.clone()));
        }
        let bytes = self
            .snapshot
            .iter()
            .chain([self.adds.as_ref()])
            .map(|a| a.value_data().len())
            .sum::<usize>();
        if i32::try_from(bytes).is_err() {
            return Err(format!(
                "a membership of {} ids over 2 GiB does not fit one array",
                self.len
            ));
        }
        let mut out = StringBuilder::with_capacity(self.len, bytes);
        for id in self.ids() {
            out.append_value(id);
        }
        Ok(Arc::new(out.finish()))
    }

    /// This membership with `added` (arrays in order, sorted and distinct) merged in, as
    /// arrays of at most `chunk_bytes` of ids each, in order (a membership past 2 GiB too).
    pub fn union_in_chunks(&self, added: &[StringArray], chunk_bytes: usize) -> Vec<StringArray> {
        let mut a = self.ids().peekable();
        let mut b = added
            .iter()
            .flat_map(|p| (0..p.len()).map(move |i| p.value(i)))
            .peekable();
        let mut chunks = Vec::new();
        let mut out = StringBuilder::new();
        let mut bytes = 0;
        loop {
            let id = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => match x.cmp(y) {
                    Ordering::Less => a.next(),
                    Ordering::Greater => b.next(),
                    Ordering::Equal => {
                        b.next();
                        a.next()
                    }
                },
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            let Some(id) = id else { break };
            if bytes + id.len() > chunk_bytes && bytes > 0 {
                chunks.push(out.finish());
                bytes = 0;
            }
            out.append_value(id);
            bytes += id.len();
        }
        chunks.push(out.finish());
        chunks
    }

    /// The change from this membership to `now` (sorted, distinct), as [`diff`].
    pub fn diff(&self, now: &StringArray) -> Diff {
        diff_walk(self.ids(), now)
    }

    /// The change from this membership to members given in parts ([`Walk`]).
    pub fn walk(&self) -> Walk<'_, impl Iterator<Item = &str>> {
        Walk::new(self.ids())
    }

    /// The members in order.
    fn ids(&self) -> impl Iterator<Item = &str> {
        Applied::new(&self.snapshot, &self.adds, &self.removes)
    }
}

/// `(base − removes) ∪ adds` walked in order, as [`apply`] writes it; `base` is arrays in order.
struct Applied<'a> {
    base: &'a [StringArray],
    adds: &'a StringArray,
    removes: &'a StringArray,
    /// The array of `base` and the position in it.
    c: usize,
    i: usize,
    a: usize,
    r: usize,
}

impl<'a> Applied<'a> {
    fn new(base: &'a [StringArray], adds: &'a StringArray, removes: &'a StringArray) -> Self {
        Applied {
            base,
            adds,
            removes,
            c: 0,
            i: 0,
            a: 0,
            r: 0,
        }
    }

    /// The next id of `base`, not taken yet.
    fn next_base(&mut self) -> Option<&'a str> {
        let base = self.base;
        while let Some(array) = base.get(self.c) {
            if self.i < array.len() {
                return Some(array.value(self.i));
            }
            (self.c, self.i) = (self.c + 1, 0);
        }
        None
    }
}

impl<'a> Iterator for Applied<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let (adds, removes) = (self.adds, self.removes);
        while let Some(b) = self.next_base() {
            if self.a < adds.len() && adds.value(self.a) < b {
                self.a += 1;
                return Some(adds.value(self.a - 1));
            }
            self.i += 1;
            let added = self.a < adds.len() && adds.value(self.a) == b;
            if added {
                self.a += 1;
            }
            while self.r < removes.len() && removes.value(self.r) < b {
                self.r += 1;
            }
            let removed = self.r < removes.len() && removes.value(self.r) == b;
            if added || !removed {
                return Some(b);
            }
        }
        if self.a < adds.len() {
            self.a += 1;
            return Some(adds.value(self.a - 1));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn arr(v: &[&str]) -> StringArray {
        StringArray::from(v.to_vec())
    }
    fn vals(a: &StringArray) -> Vec<&str> {
        a.iter().flatten().collect()
    }

    #[test]
    fn adds_and_removes() {
        let d = diff(
            &arr(&["a", "c", "d", "f"]),
            &arr(&["b", "c", "f", "g", "h"]),
        );
        assert_eq!(vals(&d.adds), ["b", "g", "h"]);
        assert_eq!(vals(&d.removes), ["a", "d"]);
        let d = diff(&arr(&[]), &arr(&["x"]));
        assert_eq!((vals(&d.adds), vals(&d.removes)), (vec!["x"], vec![]));
        let d = diff(&arr(&["x"]), &arr(&[]));
        assert_eq!((vals(&d.adds), vals(&d.removes)), (vec![], vec!["x"]));
    }

    #[test]
    fn union_merges_in_order() {
        assert_eq!(
            vals(&union(&arr(&["a", "c"]), &arr(&["b", "c", "d"]))),
            ["a", "b", "c", "d"]
        );
    }

    proptest::proptest! {
        /// Deltas applied one after the other, or netted then applied once: the same members.
        #[test]
        fn net_deltas_apply_like_each_in_turn(
            base in proptest::collection::btree_set("[a-f]{1,2}", 0..20),
            steps in proptest::collection::vec(proptest::collection::btree_set("[a-f]{1,2}", 0..20), 0..6),
        ) {
            let sorted = |s: &BTreeSet<String>| StringArray::from(s.iter().map(String::as_str).collect::<Vec<_>>());
            let mut members = base.clone();
            let mut deltas = Vec::new();
            for now in &steps {
                let before = sorted(&members);
                let d = diff(&before, &sorted(now));
                deltas.push((Arc::new(d.adds), Arc::new(d.removes)));
                members = now.clone();
            }
            let (adds, removes) = net(&deltas);
            let applied = apply(&sorted(&base), &adds, &removes);
            proptest::prop_assert_eq!(vals(&applied), members.iter().map(String::as_str).collect::<Vec<_>>());
            // The net change is disjoint.
            proptest::prop_assert!(diff(&adds, &removes).removes.len() == adds.len());
        }

        /// A base with its changes unapplied diffs and counts like the applied membership, also
        /// with adds and removes no chain would make (an add already in the snapshot, a remove
        /// of an absent id).
        #[test]
        fn a_base_diffs_and_counts_like_its_applied_membership(
            snapshot in proptest::collection::btree_set("[a-f]{1,2}", 0..20),
            adds in proptest::collection::btree_set("[a-f]{1,2}", 0..10),
            removes in proptest::collection::btree_set("[a-f]{1,2}", 0..10),
            now in proptest::collection::btree_set("[a-f]{1,2}", 0..20),
            cut in 1usize..8,
            chunk in 1usize..8,
        ) {
            let sorted = |s: &BTreeSet<String>| StringArray::from(s.iter().map(String::as_str).collect::<Vec<_>>());
            let removes: BTreeSet<String> = removes.difference(&adds).cloned().collect();
            // The snapshot as arrays of up to `chunk` ids (some empty), as a base past 2 GiB
            // is read.
            let ids: Vec<&str> = snapshot.iter().map(String::as_str).collect();
            let mut chunks: Vec<StringArray> = ids.chunks(chunk).map(|c| StringArray::from(c.to_vec())).collect();
            chunks.insert(chunks.len() / 2, arr(&[]));
            let base = Base::with_changes(
                chunks,
                Arc::new(sorted(&adds)),
                Arc::new(sorted(&removes)),
            );
            let applied = apply(&sorted(&snapshot), &sorted(&adds), &sorted(&removes));
            proptest::prop_assert_eq!(base.len(), applied.len());
            let materialized = base.materialize().unwrap();
            proptest::prop_assert_eq!(vals(&materialized), vals(&applied));
            // Merged with more ids, in arrays of up to `chunk` bytes: the sorted union.
            let more = sorted(&now);
            let merged = base.union_in_chunks(std::slice::from_ref(&more), chunk);
            proptest::prop_assert!(merged.iter().all(|c| c.value_data().len() <= chunk.max(2)));
            let (merged, expected) = (concat(&merged), union(&applied, &more));
            proptest::prop_assert_eq!(vals(&merged), vals(&expected));
            let (ours, theirs) = (base.diff(&sorted(&now)), diff(&applied, &sorted(&now)));
            proptest::prop_assert_eq!(vals(&ours.adds), vals(&theirs.adds));
            proptest::prop_assert_eq!(vals(&ours.removes), vals(&theirs.removes));
            // Walked in parts (cut every `cut` members): the adds of the parts in turn, then
            // the same removes.
            let now: Vec<&str> = now.iter().map(String::as_str).collect();
            let mut walk = base.walk();
            let mut adds = Vec::new();
            for part in now.chunks(cut) {
                adds.extend(vals(&walk.part(&StringArray::from(part.to_vec()))).into_iter().map(str::to_string));
            }
            let removes = walk.removes();
            proptest::prop_assert_eq!(adds, vals(&theirs.adds));
            proptest::prop_assert_eq!(vals(&removes), vals(&theirs.removes));
        }
    }
}
