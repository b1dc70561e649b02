//! Query results as text: a table, CSV or JSON lines (or Parquet bytes), and SQL files read
//! with errors that name them. Used by the `query`, `runs` and `demo` commands (`cli::query`
//! streams a result through these).

use std::path::Path;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Parquet,
}

/// An analysis or query file's text; an unreadable file is reported as a SQL error naming it.
pub fn read_sql_file(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| Error::Sql {
        location: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })
}

/// The result in the asked format.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<Vec<u8>> {
    let internal = |e: &dyn std::fmt::Display| Error::Internal(e.to_string());
    match format {
        Format::Table => {
            let t = datafusion::arrow::util::pretty::pretty_format_batches(batches)
                .map_err(|e| internal(&e))?;
            Ok(format!("{t}\n").into_bytes())
        }
        Format::Json => {
            let mut buf = Vec::new();
            let mut w = datafusion::arrow::json::LineDelimitedWriter::new(&mut buf);
            for b in batches {
                w.write(b).map_err(|e| internal(&e))?;
            }
            w.finish().map_err(|e| internal(&e))?;
            Ok(buf)
        }
        Format::Csv => csv(batches),
        Format::Parquet => {
            let Some(first) = batches.first() else {
                return Err(Error::query(
                    "the query returned no batches; nothing to write",
                ));
            };
            let mut buf = Vec::new();
            let mut w = parquet::arrow::ArrowWriter::try_new(&mut buf, first.schema(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
            Ok(buf)
        }
    }
}

/// RFC 4180 CSV with a header; NULL is an empty field.
pub fn csv(batches: &[RecordBatch]) -> Result<Vec<u8>> {
    let mut out = String::new();
    let quote = |s: &str| {
        if s.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    if let Some(first) = batches.first() {
        let names: Vec<String> = first
            .schema()
            .fields()
            .iter()
            .map(|f| quote(f.name()))
            .collect();
        out.push_str(&names.join(","));
        out.push('\n');
    }
    let options = FormatOptions::default();
    for b in batches {
        let formatters: Vec<ArrayFormatter> = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Internal(e.to_string()))?;
        for row in 0..b.num_rows() {
            let cells: Vec<String> = b
                .columns()
                .iter()
                .zip(&formatters)
                .map(|(c, f)| {
                    if c.is_null(row) {
                        String::new()
                    } else {
                        quote(&f.value(row).to_string())
                    }
                })
                .collect();
            out.push_str(&cells.join(","));
            out.push('\n');
        }
    }
    Ok(out.into_bytes())
}
