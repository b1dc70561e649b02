//! The plan: ids cut into numbered batches of at most `batch_size`, and their request bodies
//! encoded in parallel by rayon on a thread of their own, feeding a bounded channel so memory
//! holds only a few windows of encoded bodies whatever the cohort's size.

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::StringArray;
use rayon::prelude::*;
use tokio::sync::mpsc;

use super::Request;
use super::requests::{Destination, Op};

/// Deterministic batches over sorted ids: batch `n` (1-based) holds ids
/// `[(n-1)*size, n*size)`, so re-planning the same ids yields the same batches.
pub fn batches(len: usize, size: usize) -> Vec<(u64, Range<usize>)> {
    (0..len)
        .step_by(size.max(1))
        .enumerate()
        .map(|(i, start)| (i as u64 + 1, start..(start + size).min(len)))
        .collect()
}

/// Encodes `batches` in windows of `window` with rayon and sends them in order on a channel
/// holding at most `window` requests. Stops early when the receiver is dropped.
pub fn encode_in_background(
    destination: Arc<dyn Destination>,
    run_id: Arc<str>,
    ids: Arc<StringArray>,
    batches: Vec<(u64, Range<usize>)>,
    op: Op,
    window: usize,
) -> mpsc::Receiver<Request> {
    let window = window.max(1);
    let (tx, rx) = mpsc::channel(window);
    std::thread::Builder::new()
        .name("encode".into())
        .spawn(move || {
            for chunk in batches.chunks(window) {
                let encoded: Vec<Request> = chunk
                    .par_iter()
                    .map(|(n, range)| destination.batch(&run_id, *n, &ids, range.clone(), op))
                    .collect();
                for request in encoded {
                    if tx.blocking_send(request).is_err() {
                        return; // the sender stopped (an error, or cancellation)
                    }
                }
            }
        })
        .expect("cannot start the encoder thread");
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_cover_every_id_once_and_respect_the_size() {
        let b = batches(2501, 1000);
        assert_eq!(b, vec![(1, 0..1000), (2, 1000..2000), (3, 2000..2501)]);
        assert!(batches(0, 1000).is_empty());
        assert_eq!(batches(1000, 1000), vec![(1, 0..1000)]);
    }
}
