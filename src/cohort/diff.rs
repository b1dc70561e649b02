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
    let mut adds = StringBuilder::new();
    let mut removes = StringBuilder::new();
    let (mut i, mut j) = (0, 0);
    while i < before.len() && j < now.len() {
        let (b, n) = (before.value(i), now.value(j));
        match b.cmp(n) {
            Ordering::Less => {
                removes.append_value(b);
                i += 1;
            }
            Ordering::Greater => {
                adds.append_value(n);
                j += 1;
            }
            Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    for k in i..before.len() {
        removes.append_value(before.value(k));
    }
    for k in j..now.len() {
        adds.append_value(now.value(k));
    }
    Diff {
        adds: adds.finish(),
        removes: removes.finish(),
    }
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
    }
}
