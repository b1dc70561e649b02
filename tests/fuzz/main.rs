//! Fuzzing on stable Rust: proptest-driven harnesses of the parsers of hostile input (the
//! Avro reader, the NDJSON decoder, the rate-limit header parsers, the project-file loader),
//! one module per target. Each target feeds random bytes and mutations of valid inputs (bit flips,
//! overwritten and inserted bytes, truncation, varints with huge values inserted or replacing
//! one) and checks that decoding never panics and never allocates more than a constant times
//! the input's size.
//!
//! Allocations are counted by `cap`, the global allocator of this binary: around each decode
//! its limit is set to what is allocated now plus the target's bound, so an allocation past the
//! bound fails (and, as any failed allocation, aborts the binary with "memory allocation of N
//! bytes failed"). The input being decoded is written to
//! `$CARGO_TARGET_TMPDIR/fuzz-<target>-input.bin` before each decode, so an abort leaves it
//! behind. Memory that C code allocates (zstd's windows) is not counted.
//!
//! Targets run one at a time (each holds [`exclusive`] throughout), so the allocations counted
//! are the decode's own. A new target: a module with one `#[test]` that calls [`run`].
//!
//! Budget: `FUZZ_CASES` inputs per target (default 2,000: CI). The long run, 1M per target:
//! `FUZZ_CASES=1000000 cargo test --release --all-features --test fuzz`. `PROPTEST_RNG_SEED`
//! fixes the seed.

use std::fmt::Debug;
use std::sync::{Mutex, MutexGuard};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, TestRunner};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

mod avro;
mod config;
mod headers;
mod ndjson;

/// Inputs per target.
pub fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(2_000)
}

/// Held by a target for all its run: targets never overlap, so counted allocations are theirs.
pub fn exclusive() -> MutexGuard<'static, ()> {
    static ONE: Mutex<()> = Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `f` (a decode of `input`) allowed to allocate at most `bound` bytes more than are
/// allocated now; the input is saved first (see the module doc).
pub fn within<T>(target: &str, input: &[u8], bound: usize, f: impl FnOnce() -> T) -> T {
    let saved =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("fuzz-{target}-input.bin"));
    std::fs::write(&saved, input).expect("save the fuzz input");
    let base = ALLOCATOR.allocated();
    ALLOCATOR
        .set_limit(base.saturating_add(bound))
        .expect("set the allocation limit");
    let out = f();
    ALLOCATOR
        .set_limit(usize::MAX)
        .expect("lift the allocation limit");
    out
}

/// One change to a valid input.
#[derive(Debug, Clone)]
pub enum Mutation {
    FlipBit(Index, u8),
    Overwrite(Index, u8),
    Insert(Index, Vec<u8>),
    Truncate(Index),
    /// A zig-zag varint inserted.
    InsertVarint(Index, i64),
    /// The varint at a position replaced by another.
    ReplaceVarint(Index, i64),
}

/// Values a hostile varint takes: sizes and counts that lie.
pub fn hostile_number() -> impl Strategy<Value = i64> {
    prop_oneof![
        Just(1i64 << 61),
        Just(i64::MAX),
        Just(i64::MIN),
        Just(-1),
        Just(1i64 << 32),
        Just(u32::MAX as i64),
        Just(1i64 << 24),
        0i64..300,
        any::<i64>(),
    ]
}

pub fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Overwrite(i, b)),
        (
            any::<Index>(),
            proptest::collection::vec(any::<u8>(), 1..12)
        )
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Truncate),
        (any::<Index>(), hostile_number()).prop_map(|(i, n)| Mutation::InsertVarint(i, n)),
        (any::<Index>(), hostile_number()).prop_map(|(i, n)| Mutation::ReplaceVarint(i, n)),
    ]
}

pub use cohort_bridge::ingest::craft::varint;

/// `seed` with `mutations` applied in turn.
pub fn mutate(seed: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut b = seed.to_vec();
    // A position in `b` (`end`: or just past its end).
    let at = |b: &Vec<u8>, i: &Index, end: bool| {
        let n = b.len() + usize::from(end);
        if n == 0 { 0 } else { i.index(n) }
    };
    for m in mutations {
        match m {
            Mutation::FlipBit(i, bit) if !b.is_empty() => {
                let p = at(&b, i, false);
                b[p] ^= 1 << bit;
            }
            Mutation::Overwrite(i, v) if !b.is_empty() => {
                let p = at(&b, i, false);
                b[p] = *v;
            }
            Mutation::Insert(i, bytes) => {
                let p = at(&b, i, true);
                b.splice(p..p, bytes.iter().copied());
            }
            Mutation::Truncate(i) => {
                let p = at(&b, i, true);
                b.truncate(p);
            }
            Mutation::InsertVarint(i, n) => {
                let p = at(&b, i, true);
                b.splice(p..p, varint(*n));
            }
            Mutation::ReplaceVarint(i, n) => {
                let p = at(&b, i, true);
                let mut end = p;
                while end < b.len() && end - p < 10 && b[end] & 0x80 != 0 {
                    end += 1;
                }
                let end = (end + 1).min(b.len());
                b.splice(p..end, varint(*n));
            }
            _ => {}
        }
    }
    b
}

/// Random bytes, or a seed with a few mutations.
pub fn inputs(seeds: Vec<Vec<u8>>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..2048),
        3 => (
            proptest::sample::select(seeds),
            proptest::collection::vec(mutation(), 1..6)
        )
            .prop_map(|(seed, m)| mutate(&seed, &m)),
    ]
}

/// Runs a target: `check` on [`cases`] inputs of `strategy`, one target at a time; a failing
/// (panicking) input is shrunk and reported.
pub fn run<S>(strategy: S, check: impl Fn(&S::Value))
where
    S: Strategy,
    S::Value: Debug,
{
    let _one = exclusive();
    let config = Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    if let Err(e) = runner.run(&strategy, |input| {
        check(&input);
        Ok(())
    }) {
        panic!("{e}");
    }
}

#[test]
fn mutations_do_what_they_say() {
    let _one = exclusive();
    assert_eq!(varint(1 << 61).len(), 9);
    assert_eq!(varint(-1), vec![1]);
    assert_eq!(varint(150), vec![0xac, 0x02]);
    let seed = [1u8, 2, 3];
    assert_eq!(mutate(&seed, &[]), seed);
    use proptest::strategy::ValueTree;
    let at = any::<Index>()
        .new_tree(&mut TestRunner::deterministic())
        .unwrap()
        .current();
    let grown = mutate(&seed, &[Mutation::InsertVarint(at, 1 << 61)]);
    assert_eq!(grown.len(), 12);
    assert!(
        mutate(
            &[],
            &[Mutation::FlipBit(at, 1), Mutation::ReplaceVarint(at, 5)]
        )
        .len()
            == 1
    );
}
