//! `query`: read-only SQL over every lake table (the configured tables, `partner_events`,
//! `runs`) with the same parameters as cohorts, streamed to stdout as a table, CSV or JSON
//! lines, or to a file (Parquet needs one).

use std::io::Write;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use datafusion::arrow::array::RecordBatch;

use super::args::AtArg;
use crate::error::{Error, Result, exit};
use crate::lake::sql::{Params, SqlSource};
use crate::query::Format;

#[derive(Args, Debug)]
pub struct QueryArgs {
    /// The SQL (or use -f FILE).
    #[arg(required_unless_present = "file", conflicts_with = "file")]
    sql: Option<String>,
    /// A SQL file, e.g. queries/analysis/push_open_to_feature.sql.
    #[arg(short = 'f', long)]
    file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = QueryFormat::Table)]
    format: QueryFormat,
    /// Write to this file instead of stdout (required for parquet).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    at: AtArg,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum QueryFormat {
    Table,
    Csv,
    Json,
    Parquet,
}

/// `query` with its flags.
pub async fn run(config_file: &Path, a: QueryArgs) -> Result<i32> {
    let format = match a.format {
        QueryFormat::Table => Format::Table,
        QueryFormat::Csv => Format::Csv,
        QueryFormat::Json => Format::Json,
        QueryFormat::Parquet => Format::Parquet,
    };
    let source = match (&a.sql, &a.file) {
        (Some(text), _) => Sql::Text(text),
        (None, Some(f)) => Sql::File(f),
        (None, None) => unreachable!("clap requires one"),
    };
    query(config_file, source, format, a.out.as_deref(), a.at.at).await
}

/// Where the SQL comes from.
pub enum Sql<'a> {
    Text(&'a str),
    File(&'a Path),
}

pub async fn query(
    config_file: &Path,
    sql: Sql<'_>,
    format: Format,
    out: Option<&Path>,
    at: Option<DateTime<Utc>>,
) -> Result<i32> {
    let (origin, text) = match sql {
        Sql::Text(t) => ("<query>".to_string(), t.to_string()),
        Sql::File(f) => (f.display().to_string(), crate::query::read_sql_file(f)?),
    };
    if format == Format::Parquet && out.is_none() {
        return Err(Error::config(None, "--format parquet needs --out FILE"));
    }
    let config = crate::destinations::load_config(config_file)?;
    let lake = crate::project::open_lake(&config).await?;
    let params = Params::at(at.unwrap_or_else(Utc::now));
    let df = lake
        .plan_query(
            &SqlSource {
                origin: &origin,
                text: &text,
            },
            &params,
        )
        .await?;
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    // The result streams: batches cross a channel of two from the query runtime and are
    // written as they come, so memory holds a few batches, not the result. A reader that
    // stops early (`| head`) drops the channel, which stops the query.
    let (tx, mut rx) = tokio::sync::mpsc::channel(2);
    let producer = lake.cpu().run(async move {
        let mut stream = match df.execute_stream().await {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        while let Some(batch) = futures::StreamExt::next(&mut stream).await {
            let failed = batch.is_err();
            if tx.send(batch).await.is_err() || failed {
                return;
            }
        }
    });
    let consumer = async {
        let written = async {
            let mut sink = Sink::open(out, format, &schema)?;
            if !sink.start()? {
                return Ok(());
            }
            while let Some(batch) = rx.recv().await {
                let batch = batch.map_err(|e| lake.query_error(&origin, e))?;
                if !sink.write(&batch)? {
                    return Ok(());
                }
            }
            sink.finish()
        }
        .await;
        // Whatever stopped the writing, the query stops too.
        rx.close();
        written
    };
    let (produced, consumed) = tokio::join!(producer, consumer);
    consumed?;
    produced?;
    Ok(exit::OK)
}

/// Rows a table shows at most at once: a larger result prints as consecutive tables, each
/// sized to its own rows (a table's widths need all of its rows).
const TABLE_ROWS: usize = 10_000;

/// Where a streamed result goes, in its format.
struct Sink<'a> {
    format: Format,
    schema: datafusion::arrow::datatypes::SchemaRef,
    out: Option<Output>,
    /// `--out`: the file, and the staging file beside it that is renamed over it at the end
    /// (so a failed query leaves no half file; removed when the sink is dropped unfinished).
    file: Option<(&'a Path, std::path::PathBuf)>,
    /// Rows of a table not printed yet.
    pending: Vec<RecordBatch>,
    /// Whether a table was printed (an empty result still prints its header).
    printed: bool,
}

enum Output {
    Stdout(std::io::Stdout),
    File(std::io::BufWriter<std::fs::File>),
    Parquet(Box<parquet::arrow::ArrowWriter<std::fs::File>>),
}

impl<'a> Sink<'a> {
    fn open(
        out: Option<&'a Path>,
        format: Format,
        schema: &datafusion::arrow::datatypes::SchemaRef,
    ) -> Result<Self> {
        let mut sink = Sink {
            format,
            schema: schema.clone(),
            out: None,
            file: None,
            pending: Vec::new(),
            printed: false,
        };
        sink.out = Some(match out {
            None => Output::Stdout(std::io::stdout()),
            Some(path) => {
                let mut name = std::ffi::OsString::from(".");
                name.push(path.file_name().unwrap_or_default());
                name.push(format!(".tmp.{}", std::process::id()));
                let tmp = path.with_file_name(name);
                let file = std::fs::File::create(&tmp).map_err(|e| sink.error(path, e))?;
                sink.file = Some((path, tmp));
                if format == Format::Parquet {
                    Output::Parquet(Box::new(parquet::arrow::ArrowWriter::try_new(
                        file,
                        schema.clone(),
                        None,
                    )?))
                } else {
                    Output::File(std::io::BufWriter::new(file))
                }
            }
        });
        Ok(sink)
    }

    fn error(&self, path: &Path, e: std::io::Error) -> Error {
        Error::storage_at(format!("cannot write {}", path.display()), e)
    }

    /// What comes before the rows (CSV's header); `false` once the reader has gone.
    fn start(&mut self) -> Result<bool> {
        if self.format == Format::Csv {
            let header = crate::query::csv(&[RecordBatch::new_empty(self.schema.clone())])?;
            return self.put(&header);
        }
        Ok(true)
    }

    /// Writes `bytes`; `false` once the reader of stdout has gone (a closed pipe).
    fn put(&mut self, bytes: &[u8]) -> Result<bool> {
        match &mut self.out {
            Some(Output::Stdout(w)) => match w.write_all(bytes) {
                Ok(()) => Ok(true),
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
                Err(e) => Err(Error::Internal(format!("stdout: {e}"))),
            },
            Some(Output::File(w)) => match w.write_all(bytes) {
                Ok(()) => Ok(true),
                Err(e) => {
                    let path = self.file.as_ref().map_or(Path::new("--out"), |f| f.0);
                    Err(self.error(path, e))
                }
            },
            _ => Err(Error::Internal("query: bytes for no text output".into())),
        }
    }

    /// Writes one batch; `false` once the reader has gone.
    fn write(&mut self, batch: &RecordBatch) -> Result<bool> {
        if let Some(Output::Parquet(w)) = &mut self.out {
            w.write(batch)?;
            return Ok(true);
        }
        match self.format {
            Format::Table => {
                self.pending.push(batch.clone());
                if self
                    .pending
                    .iter()
                    .map(RecordBatch::num_rows)
                    .sum::<usize>()
                    >= TABLE_ROWS
                {
                    return self.flush_table();
                }
                Ok(true)
            }
            Format::Csv => {
                let mut bytes = crate::query::csv(std::slice::from_ref(batch))?;
                // `csv` starts with the header, written once by `start`.
                let header = bytes.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
                bytes.drain(..header);
                self.put(&bytes)
            }
            Format::Json | Format::Parquet => {
                let bytes = crate::query::render(std::slice::from_ref(batch), Format::Json)?;
                self.put(&bytes)
            }
        }
    }

    fn flush_table(&mut self) -> Result<bool> {
        let batches = std::mem::take(&mut self.pending);
        self.printed = true;
        let bytes = crate::query::render(&batches, Format::Table)?;
        self.put(&bytes)
    }

    /// The end of the result: the last table, the Parquet footer, the file renamed in place.
    fn finish(mut self) -> Result<()> {
        if self.format == Format::Table && (!self.pending.is_empty() || !self.printed) {
            if self.pending.is_empty() {
                // No rows is still a result with columns: the header.
                self.pending
                    .push(RecordBatch::new_empty(self.schema.clone()));
            }
            if !self.flush_table()? {
                return Ok(());
            }
        }
        match self.out.take() {
            Some(Output::Stdout(mut w)) => match w.flush() {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(Error::Internal(format!("stdout: {e}")))
                }
                _ => Ok(()),
            },
            Some(Output::File(w)) => {
                let (path, _) = self.file.clone().expect("a file output has its path");
                w.into_inner()
                    .map_err(|e| e.into_error())
                    .and_then(|f| f.sync_all())
                    .map_err(|e| self.error(path, e))?;
                self.rename()
            }
            Some(Output::Parquet(w)) => {
                w.close()?;
                self.rename()
            }
            None => Ok(()),
        }
    }

    fn rename(&mut self) -> Result<()> {
        let Some((path, tmp)) = self.file.take() else {
            return Ok(());
        };
        std::fs::rename(&tmp, path).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            self.error(path, e)
        })
    }
}

impl Drop for Sink<'_> {
    fn drop(&mut self) {
        // Dropped before `finish` renamed it (a failed query): the staging file goes.
        if let Some((_, tmp)) = self.file.take() {
            self.out = None;
            let _ = std::fs::remove_file(tmp);
        }
    }
}
