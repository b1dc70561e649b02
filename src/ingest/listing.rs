//! Listing a source: what its paths say (event type, queue date), every object under it (a
//! backfill skips the queue dates before its days), and which of them a run reads.

use chrono::NaiveDate;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};

use super::IngestSummary;
use super::formats::{Format, format_of};
use super::ledger::{BackfillState, Manifest};
use super::limits::Limits;
use super::quarantine::Quarantined;

/// The `event_type=...` folder of a Currents path, if any.
pub fn event_type_of(path: &str) -> Option<&str> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("event_type="))
        .filter(|t| !t.is_empty())
}

/// The `date=YYYY-MM-DD-HH` folder (the hour the events were queued), if any.
pub fn queued_date_of(path: &str) -> Option<chrono::NaiveDate> {
    path.split('/')
        .find_map(|seg| seg.strip_prefix("date="))
        .and_then(|d| chrono::NaiveDate::parse_from_str(d.get(..10)?, "%Y-%m-%d").ok())
}

/// Every object under `root`; for a backfill from `from`, only where events of `from` or later
/// can be: folders are walked level by level and `date=` folders of earlier queue dates are not
/// entered, so a backfill of one day does not list years of files.
pub(super) async fn list_source(
    store: &dyn ObjectStore,
    root: &Path,
    from: Option<NaiveDate>,
) -> object_store::Result<Vec<ObjectMeta>> {
    let Some(from) = from else {
        return store.list(Some(root)).try_collect().await;
    };
    let mut out = Vec::new();
    let mut folders = vec![root.clone()];
    while let Some(folder) = folders.pop() {
        let listing = store.list_with_delimiter(Some(&folder)).await?;
        out.extend(listing.objects);
        for sub in listing.common_prefixes {
            let name = sub.filename().unwrap_or_default();
            match queued_date_of(name) {
                Some(queued) if queued < from => {}
                // A wanted queue hour: the rest of its subtree in one listing.
                Some(_) => out.extend(store.list(Some(&sub)).try_collect::<Vec<_>>().await?),
                None => folders.push(sub),
            }
        }
    }
    Ok(out)
}

/// A file to read: its queue date, its path under the source, what the listing said, and its
/// format.
pub(super) type ToRead = (Option<NaiveDate>, String, ObjectMeta, Format);

/// What of `listed` to read (in queue-date order), counted into `summary`: files of a known
/// format not read yet (for a backfill, those that can hold events of its days), and the
/// quarantine entries of files too large to read (not recorded as read: a run with a larger
/// limit picks them up).
pub(super) fn select(
    listed: Vec<ObjectMeta>,
    root: &Path,
    backfill: Option<&BackfillState>,
    manifest: &Manifest,
    limits: &Limits,
    summary: &mut IngestSummary,
) -> (Vec<ToRead>, Vec<Quarantined>) {
    let mut todo = Vec::new();
    let mut too_big = Vec::new();
    for meta in listed {
        let rel = relative(root, &meta.location);
        let Some(format) = format_of(&rel) else {
            continue;
        };
        summary.files_listed += 1;
        let queued = queued_date_of(&rel);
        let wanted = match backfill {
            Some(b) => {
                queued.is_none_or(|q| q >= b.from)
                    && b.files.get(&rel) != Some(&(meta.size, meta.e_tag.clone()))
            }
            None => manifest
                .get(&rel)
                .is_none_or(|f| f.size != meta.size || f.e_tag != meta.e_tag),
        };
        if wanted && meta.size > limits.file_bytes as u64 {
            // Not read, and not recorded as read: a run with a larger limit picks it up.
            summary.broken_files += 1;
            too_big.push(Quarantined {
                reason: format!(
                    "the file is {} bytes, more than the per-file limit of {} bytes \
                     (engine.memory_limit / 20): it was not read, and will be tried again by \
                     every run; raise `engine.memory_limit` to ingest it",
                    meta.size, limits.file_bytes
                ),
                file: rel,
                position: 0,
                record: None,
            });
        } else if wanted {
            todo.push((queued, rel, meta, format));
        } else {
            summary.files_skipped += 1;
        }
    }
    // Queue-date order keeps the days being written few: most events land near their queue day.
    todo.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
    (todo, too_big)
}

/// `root/a/b` → `a/b`.
fn relative(root: &Path, path: &Path) -> String {
    path.prefix_match(root)
        .map(|parts| {
            parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_else(|| path.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::formats::{Format, format_of};

    #[test]
    fn paths_tell_format_type_and_queue_date() {
        let p = "pre/dataexport.prod-01.S3.integration.x/event_type=users.messages.email.Click/date=2026-11-27-13/1/z/a+0+1.avro";
        assert_eq!(format_of(p), Some(Format::Avro));
        assert_eq!(event_type_of(p), Some("users.messages.email.Click"));
        assert_eq!(
            queued_date_of(p),
            chrono::NaiveDate::from_ymd_opt(2026, 11, 27)
        );
        assert_eq!(format_of("x/events.ndjson"), Some(Format::NdJson));
        assert_eq!(format_of("x/_SUCCESS"), None);
    }
}
