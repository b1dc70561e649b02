//! State's id lists (snapshots, plans, deltas): sorted member keys in one `user_id` column,
//! written and read through `storage::ids`; here what they hold: member keys, the footer mark of
//! the current key format ([`KEY_FORMAT`]), and the layouts of the `files` destination.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field};
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::file::metadata::KeyValue;

use crate::error::{Error, Result};
use crate::storage::ids::{PART, ROW_GROUP, encode, encode_csv, write_streamed};
pub use crate::storage::objects::copy;

/// Writes `ids` (already sorted and distinct) to `path`, replacing it atomically.
pub async fn write(store: &dyn ObjectStore, path: &Path, ids: Arc<StringArray>) -> Result<()> {
    write_to(store, std::slice::from_ref(path), ids).await
}

/// Encodes `ids` once and writes the same bytes to every path (a snapshot and its replica).
///
/// Row groups are encoded on a thread of their own and streamed to each object as they are
/// ready, so a 10M-id list costs a row group or two of memory, not a second copy of the list.
/// Each object appears whole or not at all: one `put`, or a multipart upload completed last.
pub async fn write_to(
    store: &dyn ObjectStore,
    paths: &[Path],
    ids: Arc<StringArray>,
) -> Result<()> {
    write_sized(
        store,
        paths,
        ids,
        Layout::Parquet("user_id".into()),
        ROW_GROUP,
        PART,
    )
    .await
}

/// Writes a list given as parts (each sorted and distinct, each part's ids after the previous
/// part's) to every path, as [`write_to`] does, without joining the parts first.
pub async fn write_parts(
    store: &dyn ObjectStore,
    paths: &[Path],
    parts: Vec<StringArray>,
) -> Result<()> {
    let parts = if parts.is_empty() {
        vec![StringArray::from(Vec::<&str>::new())]
    } else {
        parts
    };
    write_streamed(store, paths, PART, move |emit| {
        let fields = vec![Field::new("user_id", DataType::Utf8, false)];
        let columns = |slice: StringArray| vec![Arc::new(slice) as ArrayRef];
        let mark = parts.iter().any(crate::cohort::identity::needs_format_2);
        let marks = mark.then(|| vec![KeyValue::new(KEY_FORMAT.to_string(), "2".to_string())]);
        encode(&parts, fields, columns, marks, ROW_GROUP, emit)
    })
    .await
}

/// How [`write_as`] lays out a list of ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Parquet with one `Utf8` column of this name.
    Parquet(String),
    /// CSV (RFC 4180): a header line with this name, then one id per line, quoted when it
    /// holds a comma, a quote or a line break.
    Csv(String),
    /// Parquet with a nullable `Utf8` column per identifier kind, named as given (external id,
    /// alias name, alias label, device id, Braze id, email, phone): each member fills its kind's columns,
    /// the others are null.
    ParquetIdentities(Box<[String; IDENTITY_COLUMNS]>),
    /// CSV with a column per identifier kind, as [`Layout::ParquetIdentities`]; null is empty.
    CsvIdentities(Box<[String; IDENTITY_COLUMNS]>),
}

/// How many columns the identity layouts have.
pub const IDENTITY_COLUMNS: usize = 7;

/// A member's fields in the identity layouts: external id, alias name, alias label, device
/// id, Braze id, email, phone.
fn identity_fields(key: &str) -> [Option<&str>; 7] {
    use crate::cohort::identity::{Id, parse};
    match parse(key) {
        Id::External(id) => [Some(id), None, None, None, None, None, None],
        Id::Alias { name, label } => [None, Some(name), Some(label), None, None, None, None],
        Id::Device(id) => [None, None, None, Some(id), None, None, None],
        Id::Braze(id) => [None, None, None, None, Some(id), None, None],
        Id::Email(v) => [None, None, None, None, None, Some(v), None],
        Id::Phone(v) => [None, None, None, None, None, None, Some(v)],
        // Never built, and refused when a state list is read.
        Id::Malformed(_) => [None; 7],
    }
}

/// Writes `ids` to `path` in `layout`, streamed as [`write_to`] does (for the `files`
/// destination).
pub async fn write_as(
    store: &dyn ObjectStore,
    path: &Path,
    ids: Arc<StringArray>,
    layout: Layout,
) -> Result<()> {
    write_sized(
        store,
        std::slice::from_ref(path),
        ids,
        layout,
        ROW_GROUP,
        PART,
    )
    .await
}

async fn write_sized(
    store: &dyn ObjectStore,
    paths: &[Path],
    ids: Arc<StringArray>,
    layout: Layout,
    row_group: usize,
    part: usize,
) -> Result<()> {
    write_streamed(store, paths, part, move |emit| match &layout {
        Layout::Parquet(column) => {
            let fields = vec![Field::new(column, DataType::Utf8, false)];
            let columns = |slice: StringArray| vec![Arc::new(slice) as ArrayRef];
            let mark = crate::cohort::identity::needs_format_2(&ids);
            let marks = mark.then(|| vec![KeyValue::new(KEY_FORMAT.to_string(), "2".to_string())]);
            encode(
                std::slice::from_ref(ids.as_ref()),
                fields,
                columns,
                marks,
                row_group,
                emit,
            )
        }
        Layout::ParquetIdentities(names) => {
            let fields = names
                .iter()
                .map(|n| Field::new(n, DataType::Utf8, true))
                .collect();
            encode(
                std::slice::from_ref(ids.as_ref()),
                fields,
                split_identities,
                None,
                row_group,
                emit,
            )
        }
        Layout::Csv(column) => encode_csv(&ids, [column], |id| [Some(id)], row_group, emit),
        Layout::CsvIdentities(names) => {
            let header = names.each_ref().map(String::as_str);
            encode_csv(&ids, header, identity_fields, row_group, emit)
        }
    })
    .await
}

/// The identity layouts' columns for a slice of members.
fn split_identities(slice: StringArray) -> Vec<ArrayRef> {
    let mut builders: Vec<StringBuilder> = (0..IDENTITY_COLUMNS)
        .map(|_| StringBuilder::new())
        .collect();
    for key in slice.iter() {
        for (b, f) in builders
            .iter_mut()
            .zip(identity_fields(key.unwrap_or_default()))
        {
            b.append_option(f);
        }
    }
    builders
        .into_iter()
        .map(|mut b| Arc::new(b.finish()) as ArrayRef)
        .collect()
}

/// The footer key that marks a list of member keys in the current key format (see
/// `cohort::identity`). Only a list holding keys an earlier release would misread carries it
/// (so every other list stays readable by that release); a list without it is read through
/// `identity::from_format_1`, which changes nothing in such a list.
pub const KEY_FORMAT: &str = "cohort_bridge.key_format";

/// Reads an id list written by [`write`].
pub async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Arc<StringArray>> {
    try_read(store, path)
        .await?
        .map_err(|why| Error::storage(format!("{path}: {why}")))
}

/// Reads an id list: a store failure is an error, and so is a list past one array's 2 GiB
/// ([`try_read_chunks`] reads it); a missing object, or one that is not a sorted, distinct list
/// of member keys, is the inner `Err` with the reason. A list without the [`KEY_FORMAT`] mark
/// is read as the release before meant it.
pub async fn try_read(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<std::result::Result<Arc<StringArray>, String>> {
    Ok(match try_read_arrays(store, path).await? {
        Ok(mut chunks) if chunks.len() == 1 => Ok(Arc::new(chunks.remove(0))),
        Ok(_) => {
            return Err(Error::storage(format!(
                "{path}: an id list over 2 GiB, more than one array holds; only a sync's base reads it in parts"
            )));
        }
        Err(why) => Err(why),
    })
}

/// Reads an id list as [`try_read`] does, in arrays of up to 2 GiB of ids each, in order: for
/// whoever only checks or counts a list (`state show`, `state repair`), or walks it (a sync's
/// base), which a snapshot of 100M UUIDs must not stop.
pub async fn try_read_arrays(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<std::result::Result<Vec<StringArray>, String>> {
    try_read_chunks(store, path, crate::storage::ids::ARRAY_BYTES).await
}

/// Reads an id list as [`try_read`] does, in arrays of at most `chunk_bytes` of ids each, in
/// order (a sync's base: a snapshot of 100M UUIDs is past one array's 2 GiB).
pub async fn try_read_chunks(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
    chunk_bytes: usize,
) -> Result<std::result::Result<Vec<StringArray>, String>> {
    let (mut chunks, current_keys) =
        match crate::storage::ids::try_read_chunks(store, path, "user_id", KEY_FORMAT, chunk_bytes)
            .await?
        {
            Ok(read) => read,
            Err(why) => return Ok(Err(why)),
        };
    // An earlier release's keys, re-keyed and sorted again (it wrote one array, below 2 GiB).
    if !current_keys && chunks.iter().any(crate::cohort::identity::needs_format_2) {
        let whole = crate::cohort::diff::concat(&chunks);
        chunks = vec![crate::cohort::identity::from_format_1(&whole).unwrap_or(whole)];
    }
    // A key that names no member must not be taken for one.
    for ids in &chunks {
        if let Some(bad) = crate::cohort::identity::first_malformed(ids) {
            return Ok(Err(format!(
                "corrupt id list: `{}` is not a member key of this cohort-bridge",
                bad.escape_debug()
            )));
        }
    }
    Ok(Ok(chunks))
}

/// Whether the id list at `path` holds keys of the current key format that an earlier
/// release would misread ([`KEY_FORMAT`]); one that cannot be read counts as marked.
pub async fn marked(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bool> {
    Ok(crate::storage::ids::footer_has(store, path, KEY_FORMAT)
        .await?
        .unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::ObjectFile;
    use crate::storage::ids::compression_for;
    use bytes::Bytes;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::Schema;
    use datafusion::arrow::record_batch::RecordBatch;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;
    use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};
    use parquet::basic::Compression;

    /// A list of 2,500 ids (`u00000`…) as `write` writes it, in memory.
    async fn written() -> (Arc<dyn ObjectStore>, Path, Arc<StringArray>) {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("s/ids.parquet");
        let ids = Arc::new(StringArray::from_iter_values(
            (0..2500).map(|i| format!("u{i:05}")),
        ));
        write(store.as_ref(), &path, ids.clone()).await.unwrap();
        (store, path, ids)
    }

    /// `ids` as Parquet in a `user_id` column, without the key-format mark (as an earlier
    /// release wrote lists, or as damage would leave them: `ids` are taken as they are).
    fn unmarked(ids: Arc<StringArray>) -> Vec<u8> {
        let mut bytes = Vec::new();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "user_id",
            DataType::Utf8,
            false,
        )]));
        let mut w = ArrowWriter::try_new(&mut bytes, schema, None).unwrap();
        w.write(&RecordBatch::try_from_iter([("user_id", ids as ArrayRef)]).unwrap())
            .unwrap();
        w.close().unwrap();
        bytes
    }

    #[tokio::test]
    async fn round_trip() {
        let (store, path, ids) = written().await;
        assert_eq!(read(&store, &path).await.unwrap().as_ref(), ids.as_ref());
        let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
        write(store.as_ref(), &path, empty).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().len(), 0);
    }

    /// A list read in arrays of at most so many bytes: the same ids in order, each array
    /// within the bound; the sortedness check runs across the arrays' edges.
    #[tokio::test]
    async fn read_in_chunks_as_a_base_past_2_gib_is() {
        let (store, path, ids) = written().await;
        let chunks = try_read_chunks(&store, &path, 1000).await.unwrap().unwrap();
        assert_eq!(chunks.len(), 16); // 6 bytes an id: 166 ids a chunk
        assert!(chunks.iter().all(|c| c.value_data().len() <= 1000));
        assert_eq!(&crate::cohort::diff::concat(&chunks), ids.as_ref());
        let one = try_read_chunks(&store, &path, usize::MAX)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(one.len(), 1);

        // Out of order across what would be two arrays' edge: damage, whatever the arrays.
        let mut swapped: Vec<String> = (0..2500).map(|i| format!("u{i:05}")).collect();
        swapped.swap(165, 166); // the first array's last id and the next one's first
        let bytes = unmarked(Arc::new(StringArray::from(swapped)));
        store.put(&path, bytes.into()).await.unwrap();
        let why = try_read_chunks(&store, &path, 1000)
            .await
            .unwrap()
            .unwrap_err();
        assert!(why.contains("not sorted and distinct at row 166"), "{why}");
    }

    /// A list holding keys an earlier release would misread is marked and read as it is; an
    /// unmarked one (written by that release) is read as it meant it; a malformed key is damage.
    #[tokio::test]
    async fn key_formats_are_marked_and_read_as_written() {
        use crate::cohort::identity::{Id, device, external, parse};
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("s/ids.parquet");
        let sorted = |mut keys: Vec<String>| {
            keys.sort();
            Arc::new(StringArray::from(keys))
        };
        let plain = sorted(vec![device("d"), "u".into()]);
        write(store.as_ref(), &path, plain.clone()).await.unwrap();
        assert!(!marked(&store, &path).await.unwrap());
        assert_eq!(read(&store, &path).await.unwrap(), plain);

        let current = sorted(vec![
            external("\u{1}x").into_owned(),
            device("a\u{1}b"),
            "u".into(),
        ]);
        write(store.as_ref(), &path, current.clone()).await.unwrap();
        assert!(marked(&store, &path).await.unwrap());
        assert_eq!(read(&store, &path).await.unwrap(), current);

        // The same bytes without the mark: an earlier release's external ids.
        let bytes = unmarked(current.clone());
        store.put(&path, bytes.into()).await.unwrap();
        let read_back = read(&store, &path).await.unwrap();
        let members: Vec<Id<'_>> = read_back.iter().flatten().map(parse).collect();
        assert!(
            members.contains(&Id::External("\u{1}d\u{1}a\u{1}b")),
            "{members:?}"
        );
        assert!(
            members.contains(&Id::External("\u{1}e\u{1}\u{1}x")),
            "{members:?}"
        );

        let bad = sorted(vec!["\u{1}x".into(), "u".into()]);
        write(store.as_ref(), &path, bad).await.unwrap();
        let why = try_read(&store, &path).await.unwrap().unwrap_err();
        assert!(why.contains("is not a member key"), "{why}");
    }

    #[tokio::test]
    async fn csv_quotes_what_needs_it_and_parquet_names_its_column() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let ids = Arc::new(StringArray::from(vec![
            "a",
            "b,c",
            "q\"x",
            "line\nbreak",
            "é",
        ]));
        let csv = Path::from("f/adds.csv");
        write_as(
            store.as_ref(),
            &csv,
            ids.clone(),
            Layout::Csv("external_id".into()),
        )
        .await
        .unwrap();
        let bytes = store.get(&csv).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "external_id\r\na\r\n\"b,c\"\r\n\"q\"\"x\"\r\n\"line\nbreak\"\r\né\r\n"
        );
        let parquet = Path::from("f/adds.parquet");
        write_as(
            store.as_ref(),
            &parquet,
            ids.clone(),
            Layout::Parquet("ext".into()),
        )
        .await
        .unwrap();
        let bytes = store.get(&parquet).await.unwrap().bytes().await.unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap();
        let batches: Vec<_> = reader.map(|b| b.unwrap()).collect();
        assert_eq!(batches[0].schema().field(0).name(), "ext");
        assert_eq!(batches[0].column(0).as_string::<i32>(), ids.as_ref());
    }

    #[tokio::test]
    async fn identity_layouts_fill_each_members_kind_and_leave_the_rest_null() {
        use crate::cohort::identity::{alias, braze, device};
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let keys = [alias("n,1", "crm"), device("d1"), braze("b1"), "u1".into()];
        let ids = Arc::new(StringArray::from_iter_values(keys.iter()));
        let names = Box::new(["ext", "an", "al", "dev", "bz", "em", "ph"].map(String::from));
        let csv = Path::from("f/adds.csv");
        write_as(
            store.as_ref(),
            &csv,
            ids.clone(),
            Layout::CsvIdentities(names.clone()),
        )
        .await
        .unwrap();
        let bytes = store.get(&csv).await.unwrap().bytes().await.unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            "ext,an,al,dev,bz,em,ph\r\n,\"n,1\",crm,,,,\r\n,,,d1,,,\r\n,,,,b1,,\r\nu1,,,,,,\r\n"
        );
        let parquet = Path::from("f/adds.parquet");
        write_as(
            store.as_ref(),
            &parquet,
            ids,
            Layout::ParquetIdentities(names),
        )
        .await
        .unwrap();
        let bytes = store.get(&parquet).await.unwrap().bytes().await.unwrap();
        let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes)
            .unwrap()
            .build()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let col = |name: &str| {
            let c = batch.column_by_name(name).unwrap().as_string::<i32>();
            (0..c.len())
                .map(|i| c.is_valid(i).then(|| c.value(i).to_string()))
                .collect::<Vec<_>>()
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(col("ext"), [None, None, None, s("u1")]);
        assert_eq!(col("an"), [s("n,1"), None, None, None]);
        assert_eq!(col("al"), [s("crm"), None, None, None]);
        assert_eq!(col("dev"), [None, s("d1"), None, None]);
        assert_eq!(col("bz"), [None, None, s("b1"), None]);
    }

    /// Row group by row group, through multipart uploads, to a snapshot and its replica on a
    /// real filesystem: both read back whole, and no staging file is left.
    #[tokio::test]
    async fn streamed_in_row_groups_and_parts() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ObjectStore> =
            Arc::new(object_store::local::LocalFileSystem::new_with_prefix(dir.path()).unwrap());
        let ids = Arc::new(StringArray::from_iter_values(
            (0..50_000).map(|i| format!("{i:08x}-{}", i % 7)),
        ));
        let paths = [Path::from("s/a.parquet"), Path::from("s/a.replica.parquet")];
        // 1,000 rows a row group, parts of 64 KiB: ~50 row groups over ~10 parts.
        write_sized(
            store.as_ref(),
            &paths,
            ids.clone(),
            Layout::Parquet("user_id".into()),
            1000,
            64 << 10,
        )
        .await
        .unwrap();
        for path in &paths {
            assert_eq!(read(&store, path).await.unwrap().as_ref(), ids.as_ref());
        }
        let mut files: Vec<String> = std::fs::read_dir(dir.path().join("s"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        files.sort();
        assert_eq!(files, ["a.parquet", "a.replica.parquet"]);
        let meta = ParquetRecordBatchStreamBuilder::new(ObjectFile {
            store: store.clone(),
            path: paths[0].clone(),
            size: store.head(&paths[0]).await.unwrap().size,
        })
        .await
        .unwrap();
        assert_eq!(meta.metadata().num_row_groups(), 50);
    }

    /// Damage is the inner `Err` naming the row; a missing list is `missing`.
    #[tokio::test]
    async fn damaged_lists_are_named_not_read() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("s/x.parquet");
        assert_eq!(
            try_read(&store, &path).await.unwrap().unwrap_err(),
            "missing"
        );
        let unsorted = Arc::new(StringArray::from(vec!["b", "a"]));
        write(store.as_ref(), &path, unsorted).await.unwrap();
        let why = try_read(&store, &path).await.unwrap().unwrap_err();
        assert!(
            why.contains("not sorted and distinct at row 1 (`b` then `a`)"),
            "{why}"
        );
        store
            .put(&path, Bytes::from_static(b"PAR1 not really").into())
            .await
            .unwrap();
        let why = try_read(&store, &path).await.unwrap().unwrap_err();
        assert!(why.starts_with("not a readable id list"), "{why}");
    }

    #[tokio::test]
    async fn compression_only_where_it_pays_and_both_read() {
        let sequential = StringArray::from_iter_values((0..20_000).map(|i| format!("u{i:09}")));
        assert_eq!(compression_for(&sequential), Compression::SNAPPY);
        let mut uuids: Vec<String> = (0..20_000)
            .map(|i| crate::synth::user_id(crate::synth::IdShape::Uuid, i))
            .collect();
        uuids.sort();
        let uuids = Arc::new(StringArray::from_iter_values(uuids));
        assert_eq!(compression_for(&uuids), Compression::UNCOMPRESSED);
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("s/uuids.parquet");
        write(store.as_ref(), &path, uuids.clone()).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().as_ref(), uuids.as_ref());
    }
}
