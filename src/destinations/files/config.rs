//! `kind = "files"`: its keys and their checks (its keys are the object store's, from the
//! environment).

use crate::state::ids::IDENTITY_COLUMNS;
use std::collections::BTreeMap;

use crate::config::{self, Credentials, KindConfig};
use crate::error::Result;

/// One file per list: a plan's batch is the whole list (Arrow's limit bounds it).
pub const MAX_BATCH: usize = i32::MAX as usize;

/// The format of the files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Parquet,
    Csv,
}

/// The identifier kinds a run writes a column for, in the files' order.
pub const COLUMN_KINDS: [&str; IDENTITY_COLUMNS] = [
    "user_id",
    "alias_name",
    "alias_label",
    "device_id",
    "braze_id",
    "email",
    "phone",
];

/// `kind = "files"`: its keys (besides the delivery settings, which it does not use).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where each run's folder is written (a local path or an object-store URL).
    pub url: String,
    /// `parquet` (default) or `csv`.
    #[serde(default)]
    pub format: FileFormat,
    /// The external ids' column name. Default `external_id`.
    #[serde(default)]
    pub column: Option<String>,
    /// The column of each identifier kind in runs with members other than external ids,
    /// keyed by [`COLUMN_KINDS`]. Default: the kind's name (`column` for `user_id`).
    #[serde(default)]
    pub columns: BTreeMap<String, String>,
    /// Also write `members.<ext>`, the whole membership once the run is delivered.
    #[serde(default)]
    pub include_members: bool,
    /// Object-store options (as `lake.options`; keys come from the environment).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

impl Config {
    pub const KEYS: &'static [&'static str] = &[
        "url",
        "format",
        "column",
        "columns",
        "include_members",
        "options",
    ];

    /// The column names of external ids, alias names, alias labels, device ids, Braze ids, emails
    /// and phones.
    pub fn file_columns(&self) -> [String; IDENTITY_COLUMNS] {
        COLUMN_KINDS.map(|kind| match (kind, self.columns.get(kind)) {
            (_, Some(name)) => name.clone(),
            ("user_id", None) => self.column.clone().unwrap_or_else(|| "external_id".into()),
            (kind, None) => kind.to_string(),
        })
    }
}

impl KindConfig for Config {
    fn folder(&self) -> Option<(&str, &BTreeMap<String, String>)> {
        Some((&self.url, &self.options))
    }

    fn credentials(&self, _read: &config::ReadSecret<'_>) -> Result<Credentials> {
        // None of its own: the object store reads its keys from the environment.
        Ok(Credentials::default())
    }

    fn problems(&self, key: &str, out: &mut Vec<String>) {
        if self.url.trim().is_empty() {
            out.push(format!(
                "{key}.url: required for `files` (a folder or s3://, gs://, az:// URL)"
            ));
        }
        let plain = |c: &str| !(c.is_empty() || c.contains(['\n', '\r', '"', ',']));
        if let Some(c) = &self.column
            && !plain(c)
        {
            out.push(format!(
                "{key}.column: must be a plain name (no quotes, commas or line breaks), got `{c}`"
            ));
        }
        for (kind, c) in &self.columns {
            if !COLUMN_KINDS.contains(&kind.as_str()) {
                out.push(format!(
                    "{key}.columns.{kind}: not an identifier kind (one of {})",
                    COLUMN_KINDS.join(", ")
                ));
            } else if !plain(c) {
                out.push(format!(
                    "{key}.columns.{kind}: must be a plain name (no quotes, commas or line breaks), got `{c}`"
                ));
            }
        }
        if self.column.is_some() && self.columns.contains_key("user_id") {
            out.push(format!(
                "{key}: `column` and `columns.user_id` name the same column: keep one"
            ));
        }
        let names = self.file_columns();
        if let Some(twice) = names
            .iter()
            .find(|n| names.iter().filter(|m| m == n).count() > 1)
        {
            out.push(format!(
                "{key}.columns: `{twice}` names two identifier kinds' columns"
            ));
        }
    }
}
