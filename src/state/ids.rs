//! Sorted id lists as Parquet objects (snapshots, plans): one `user_id` column, written and read
//! whole through `object_store`, encoded and decoded on rayon.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use parquet::arrow::{ArrowWriter, ParquetRecordBatchStreamBuilder};
use parquet::basic::Compression;
use parquet::errors::ParquetError;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::error::{Error, Result};
use crate::lake::store::ObjectFile;

/// Writes `ids` (already sorted and distinct) to `path`, replacing it atomically.
pub async fn write(store: &dyn ObjectStore, path: &Path, ids: Arc<StringArray>) -> Result<()> {
    write_to(store, std::slice::from_ref(path), ids).await
}

/// Rows per row group, and so per chunk streamed to the store: ~4.5 MiB of UUIDs, a buffer the
/// allocator reuses from one row group to the next (36 MiB ones were fresh pages every time).
const ROW_GROUP: usize = 1 << 17;
/// Bytes an object buffers before it becomes a multipart upload (S3 parts must be ≥ 5 MiB).
const PART: usize = 16 << 20;
/// Parts of one object uploading at once.
const PARTS_IN_FLIGHT: usize = 4;

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

/// How [`write_as`] lays out a list of ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Parquet with one `Utf8` column of this name.
    Parquet(String),
    /// CSV (RFC 4180): a header line with this name, then one id per line, quoted when it
    /// holds a comma, a quote or a line break.
    Csv(String),
    /// Parquet with a nullable `Utf8` column per identifier kind, named as given (external id,
    /// alias name, alias label, device id, Braze id): each member fills its kind's columns,
    /// the others are null.
    ParquetIdentities(Box<[String; 5]>),
    /// CSV with a column per identifier kind, as [`Layout::ParquetIdentities`]; null is empty.
    CsvIdentities(Box<[String; 5]>),
}

/// A member's fields in the identity layouts: external id, alias name, alias label, device
/// id, Braze id.
fn identity_fields(key: &str) -> [Option<&str>; 5] {
    use crate::cohort::identity::{Id, parse};
    match parse(key) {
        Id::External(id) => [Some(id), None, None, None, None],
        Id::Alias { name, label } => [None, Some(name), Some(label), None, None],
        Id::Device(id) => [None, None, None, Some(id), None],
        Id::Braze(id) => [None, None, None, None, Some(id)],
        // Never built, and refused when a state list is read.
        Id::Malformed(_) => [None; 5],
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
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Bytes>>(2);
    std::thread::Builder::new()
        .name("ids-encode".into())
        .spawn(move || {
            // A closed channel means the writer gave up (its error is reported there).
            let mut emit = |chunk| tx.blocking_send(Ok(chunk)).is_ok();
            let encoded = match &layout {
                Layout::Parquet(column) => {
                    let fields = vec![Field::new(column, DataType::Utf8, false)];
                    let columns = |slice: StringArray| vec![Arc::new(slice) as ArrayRef];
                    let mark = crate::cohort::identity::needs_format_2(&ids);
                    encode(&ids, fields, columns, mark, row_group, &mut emit)
                }
                Layout::ParquetIdentities(names) => {
                    let fields = names
                        .iter()
                        .map(|n| Field::new(n, DataType::Utf8, true))
                        .collect();
                    encode(&ids, fields, split_identities, false, row_group, &mut emit)
                }
                Layout::Csv(column) => {
                    encode_csv(&ids, [column], |id| [Some(id)], row_group, &mut emit)
                }
                Layout::CsvIdentities(names) => {
                    let header = names.each_ref().map(String::as_str);
                    encode_csv(&ids, header, identity_fields, row_group, &mut emit)
                }
            };
            if let Err(e) = encoded {
                let _ = tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| Error::Internal(format!("cannot start an encoding thread: {e}")))?;
    let mut sinks: Vec<Sink> = paths.iter().map(|p| Sink::new(p.clone(), part)).collect();
    let written = async {
        while let Some(chunk) = rx.recv().await {
            let chunk = chunk?;
            futures::future::try_join_all(sinks.iter_mut().map(|s| s.push(store, chunk.clone())))
                .await?;
        }
        futures::future::try_join_all(sinks.iter_mut().map(|s| s.finish(store))).await
    }
    .await;
    if written.is_err() {
        for sink in sinks {
            sink.abort().await;
        }
    }
    written.map(|_| ())
}

/// One object being written: buffered until it is big enough for a multipart upload.
enum Sink {
    /// The path, the chunks so far, their size, the part size.
    Buffer(Path, Vec<Bytes>, usize, usize),
    Upload(Path, WriteMultipart),
    Done,
}

impl Sink {
    fn new(path: Path, part: usize) -> Self {
        Sink::Buffer(path, Vec::new(), 0, part)
    }

    async fn push(&mut self, store: &dyn ObjectStore, chunk: Bytes) -> Result<()> {
        match self {
            Sink::Buffer(path, chunks, len, part) => {
                *len += chunk.len();
                chunks.push(chunk);
                if *len >= *part {
                    let upload = store
                        .put_multipart(path)
                        .await
                        .map_err(|e| Error::storage_at(&path, e))?;
                    let mut upload = WriteMultipart::new_with_chunk_size(upload, *part);
                    for c in chunks.drain(..) {
                        upload.put(c);
                    }
                    *self = Sink::Upload(path.clone(), upload);
                }
            }
            Sink::Upload(path, upload) => {
                upload
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| Error::storage_at(&path, e))?;
                upload.put(chunk);
            }
            Sink::Done => return Err(Error::Internal("id list written after its end".into())),
        }
        Ok(())
    }

    async fn finish(&mut self, store: &dyn ObjectStore) -> Result<()> {
        match std::mem::replace(self, Sink::Done) {
            Sink::Buffer(path, chunks, _, _) => store
                .put(&path, chunks.into_iter().collect::<PutPayload>())
                .await
                .map(|_| ())
                .map_err(|e| Error::storage_at(&path, e)),
            Sink::Upload(path, upload) => upload
                .finish()
                .await
                .map(|_| ())
                .map_err(|e| Error::storage_at(&path, e)),
            Sink::Done => Ok(()),
        }
    }

    async fn abort(self) {
        if let Sink::Upload(_, upload) = self {
            let _ = upload.abort().await;
        }
    }
}

/// Copies an object (read, then write; every store can). Not `ObjectStore::copy`: on a local
/// filesystem that is a hard link, and a replica sharing the snapshot's inode protects nothing.
pub async fn copy(store: &dyn ObjectStore, from: &Path, to: &Path) -> Result<()> {
    let bytes = store
        .get(from)
        .await
        .map_err(|e| Error::storage_at(from, e))?
        .bytes()
        .await
        .map_err(|e| Error::storage_at(from, e))?;
    store
        .put(to, bytes.into())
        .await
        .map_err(|e| Error::storage_at(to, e))?;
    Ok(())
}

/// The identity layouts' columns for a slice of members.
fn split_identities(slice: StringArray) -> Vec<ArrayRef> {
    let mut builders: Vec<StringBuilder> = (0..5).map(|_| StringBuilder::new()).collect();
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

/// Encodes `ids` as Parquet with `fields` (the columns `columns` makes of each slice of ids),
/// handing each row group's bytes (then the footer's) to `emit` as soon as they are complete;
/// stops early when `emit` returns false. `mark`: the footer carries [`KEY_FORMAT`].
fn encode(
    ids: &StringArray,
    fields: Vec<Field>,
    columns: impl Fn(StringArray) -> Vec<ArrayRef>,
    mark: bool,
    row_group: usize,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    let schema = Arc::new(Schema::new(fields));
    let marks = mark.then(|| {
        vec![parquet::file::metadata::KeyValue::new(
            KEY_FORMAT.to_string(),
            "2".to_string(),
        )]
    });
    let props = WriterProperties::builder()
        .set_key_value_metadata(marks)
        .set_compression(compression_for(ids))
        // Ids are distinct: a dictionary only costs time before it falls back.
        .set_dictionary_enabled(false)
        // Nothing prunes an id list: min/max statistics only cost byte comparisons.
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(Some(row_group))
        .build();
    let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(props))?;
    let mut take = |writer: &mut ArrowWriter<Vec<u8>>| -> Result<bool> {
        writer
            .sync()
            .map_err(|e| Error::Internal(format!("id list: {e}")))?;
        let bytes = std::mem::take(writer.inner_mut());
        Ok(bytes.is_empty() || emit(Bytes::from(bytes)))
    };
    let mut start = 0;
    while start < ids.len() {
        let len = row_group.min(ids.len() - start);
        let batch = RecordBatch::try_new(schema.clone(), columns(ids.slice(start, len)))
            .map_err(|e| Error::Internal(format!("id batch: {e}")))?;
        writer.write(&batch)?;
        writer.flush()?;
        if !take(&mut writer)? {
            return Err(Error::Internal("id list writer gone".into()));
        }
        start += len;
    }
    writer.finish()?;
    take(&mut writer)?;
    Ok(())
}

/// Encodes `ids` as CSV under `header`, each id's line the `fields` it makes (none is empty),
/// `rows` ids per chunk handed to `emit`; stops early when `emit` returns false.
fn encode_csv<'a, const N: usize>(
    ids: &'a StringArray,
    header: [&str; N],
    fields: impl Fn(&'a str) -> [Option<&'a str>; N],
    rows: usize,
    emit: &mut dyn FnMut(Bytes) -> bool,
) -> Result<()> {
    let mut chunk = Vec::new();
    push_csv(&mut chunk, header.iter().map(|h| Some(*h)));
    for (i, id) in ids.iter().enumerate() {
        push_csv(&mut chunk, fields(id.unwrap_or_default()));
        if (i + 1) % rows.max(1) == 0 && !emit(Bytes::from(std::mem::take(&mut chunk))) {
            return Err(Error::Internal("id list writer gone".into()));
        }
    }
    if !chunk.is_empty() && !emit(Bytes::from(chunk)) {
        return Err(Error::Internal("id list writer gone".into()));
    }
    Ok(())
}

/// One CSV line of `fields` (none is empty), each quoted (quotes doubled) when it needs to be.
fn push_csv<'a>(out: &mut Vec<u8>, fields: impl IntoIterator<Item = Option<&'a str>>) {
    for (n, field) in fields.into_iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        let field = field.unwrap_or_default();
        if field
            .bytes()
            .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
        {
            out.push(b'"');
            out.extend_from_slice(field.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(field.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Snappy when it pays on a sample of the ids (sequential ids like `u000000123` shrink several
/// times), none when it does not: random ids such as UUIDs barely shrink, and compressing a 10M
/// UUID snapshot cost more CPU than the rest of writing it. Readers take either (the codec is
/// recorded per column chunk), so snapshots of both kinds, old and new, read alike.
fn compression_for(ids: &StringArray) -> Compression {
    const SAMPLE: usize = 1 << 16;
    let offsets = ids.value_offsets();
    let n = ids.len().min(SAMPLE / 8);
    let sample = &ids.value_data()[offsets[0] as usize..offsets[n] as usize];
    if sample.is_empty() {
        return Compression::SNAPPY;
    }
    match snap::raw::Encoder::new().compress_vec(sample) {
        // Worth it below 80% of the size.
        Ok(small) if small.len() * 10 < sample.len() * 8 => Compression::SNAPPY,
        Ok(_) => Compression::UNCOMPRESSED,
        Err(_) => Compression::SNAPPY,
    }
}

/// Reads an id list written by [`write`].
pub async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Arc<StringArray>> {
    try_read(store, path)
        .await?
        .map_err(|why| Error::storage(format!("{path}: {why}")))
}

/// Reads an id list: a store failure is an error; a missing object, or one that is not a sorted,
/// distinct id list, is the inner `Err` with the reason.
///
/// Row groups are fetched and decoded one at a time into one array sized from the footer, so
/// reading a 10M-id snapshot holds the ids once, not the file, its batches and their
/// concatenation together.
pub async fn try_read(
    store: &Arc<dyn ObjectStore>,
    path: &Path,
) -> Result<std::result::Result<Arc<StringArray>, String>> {
    let meta = match store.head(path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(Err("missing".into())),
        Err(e) => return Err(Error::storage_at(path, e)),
    };
    let reader = ObjectFile {
        store: store.clone(),
        path: path.clone(),
        size: meta.size,
    };
    // A failure of the store (also inside the Parquet reader) is an error of the run, not damage.
    let classify = |e: ParquetError| -> Result<String> {
        match e {
            ParquetError::External(inner) => match inner.downcast::<object_store::Error>() {
                Ok(store_error)
                    if !matches!(*store_error, object_store::Error::NotFound { .. }) =>
                {
                    Err(Error::storage_at(path, store_error))
                }
                Ok(gone) => Ok(format!("missing ({gone})")),
                Err(other) => Ok(format!("not a readable id list: {other}")),
            },
            other => Ok(format!("not a readable id list: {other}")),
        }
    };
    let builder = match ParquetRecordBatchStreamBuilder::new(reader).await {
        Ok(b) => b,
        Err(e) => return classify(e).map(Err),
    };
    let current_keys = marked_in(builder.metadata());
    let Some(column) = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == "user_id")
    else {
        return Ok(Err("id list without a user_id column".into()));
    };
    let (rows, bytes) = builder
        .metadata()
        .row_groups()
        .iter()
        .fold((0u64, 0u64), |(r, b), rg| {
            let chunk = rg.column(column);
            let values = chunk.uncompressed_size().max(0) as u64;
            (r + rg.num_rows().max(0) as u64, b + values)
        });
    // The footer is untrusted: its counts size buffers only up to what the object could hold.
    let cap = meta.size.saturating_mul(4);
    let mut out = StringBuilder::with_capacity(
        rows.min(cap) as usize,
        bytes.saturating_sub(4 * rows).min(cap) as usize,
    );
    let mut stream = match builder.with_batch_size(ROW_GROUP).build() {
        Ok(s) => s,
        Err(e) => return classify(e).map(Err),
    };
    let mut last: Option<Vec<u8>> = None;
    let mut row = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return classify(e).map(|why| Err(why.replace("not a readable", "corrupt"))),
        };
        let Some(values) = batch.column_by_name("user_id") else {
            return Ok(Err("id list without a user_id column".into()));
        };
        let values = match cast(values, &DataType::Utf8) {
            Ok(v) => v,
            Err(e) => return Ok(Err(format!("corrupt id list: {e}"))),
        };
        let values = values.as_string::<i32>();
        // Every list is written sorted and distinct; anything else is damage.
        if values.null_count() > 0 {
            return Ok(Err("corrupt id list: null ids".into()));
        }
        let mut prev: Option<&[u8]> = last.as_deref();
        for id in values.iter().flatten() {
            if let Some(prev) = prev
                && prev >= id.as_bytes()
            {
                return Ok(Err(format!(
                    "corrupt id list: not sorted and distinct at row {row} (`{}` then `{id}`)",
                    String::from_utf8_lossy(prev)
                )));
            }
            out.append_value(id);
            prev = Some(id.as_bytes());
            row += 1;
        }
        last = prev.map(<[u8]>::to_vec);
    }
    let mut ids = out.finish();
    if !current_keys && let Some(now) = crate::cohort::identity::from_format_1(&ids) {
        ids = now;
    }
    // A key that names no member must not be taken for one.
    if let Some(bad) = crate::cohort::identity::first_malformed(&ids) {
        return Ok(Err(format!(
            "corrupt id list: `{}` is not a member key of this cohort-bridge",
            bad.escape_debug()
        )));
    }
    Ok(Ok(Arc::new(ids)))
}

fn marked_in(meta: &parquet::file::metadata::ParquetMetaData) -> bool {
    meta.file_metadata()
        .key_value_metadata()
        .is_some_and(|kv| kv.iter().any(|k| k.key == KEY_FORMAT))
}

/// Whether the id list at `path` holds keys of the current key format that an earlier
/// release would misread ([`KEY_FORMAT`]); one that cannot be read counts as marked.
pub async fn marked(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<bool> {
    let meta = match store.head(path).await {
        Ok(meta) => meta,
        Err(object_store::Error::NotFound { .. }) => return Ok(true),
        Err(e) => return Err(Error::storage_at(path, e)),
    };
    let reader = ObjectFile {
        store: store.clone(),
        path: path.clone(),
        size: meta.size,
    };
    Ok(match ParquetRecordBatchStreamBuilder::new(reader).await {
        Ok(b) => marked_in(b.metadata()),
        Err(_) => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    #[tokio::test]
    async fn round_trip() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("s/ids.parquet");
        let ids = Arc::new(StringArray::from_iter_values(
            (0..2500).map(|i| format!("u{i:05}")),
        ));
        write(store.as_ref(), &path, ids.clone()).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().as_ref(), ids.as_ref());
        let empty = Arc::new(StringArray::from(Vec::<&str>::new()));
        write(store.as_ref(), &path, empty).await.unwrap();
        assert_eq!(read(&store, &path).await.unwrap().len(), 0);
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
        let mut bytes = Vec::new();
        let mut w = ArrowWriter::try_new(
            &mut bytes,
            Arc::new(Schema::new(vec![Field::new(
                "user_id",
                DataType::Utf8,
                false,
            )])),
            None,
        )
        .unwrap();
        w.write(&RecordBatch::try_from_iter([("user_id", current.clone() as ArrayRef)]).unwrap())
            .unwrap();
        w.close().unwrap();
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
        let names = Box::new(["ext", "an", "al", "dev", "bz"].map(String::from));
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
            "ext,an,al,dev,bz\r\n,\"n,1\",crm,,\r\n,,,d1,\r\n,,,,b1\r\nu1,,,,\r\n"
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
