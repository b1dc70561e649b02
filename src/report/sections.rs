//! The report's sections: SQL files an analyst edits, read at run time — the project's
//! `queries/report/*.sql` in name order (`init` writes the shipped ones; a project without the
//! folder gets them as shipped). Each file starts with comment lines saying how its rows are
//! shown, then its query (or `-- sql:` naming another file, relative to this one):
//!
//! ```sql
//! -- title: Cohort size and change per run
//! -- about: Members the partner holds after each sync, and the adds and removes sent.
//! -- chart: timeline group=cohort x=run_at series=members,adds,removes
//! SELECT cohort, run_at, members, adds, removes FROM runs WHERE run_at >= $since
//! ```
//!
//! Charts: `columns x=C series=A,B [group=G]` (a bar per row and series, a chart per value of
//! `G`), `timeline x=T series=A,B [group=G]` (`T` a time: each row placed at its time),
//! `pivot x=C key=K value=V` (long rows, a series per value of `K`), `interval x=C value=V
//! low=L high=H` (a bar with its interval), `none` (the table only). Queries may use `$since`
//! (`report --since`, else the epoch), `$run_ts` and `$run_date`.

use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::error::{Error, Result};

/// How a section's rows become a chart.
#[derive(Debug, Clone, PartialEq)]
pub enum Chart {
    Columns {
        group: Option<String>,
        x: String,
        series: Vec<String>,
    },
    Timeline {
        group: Option<String>,
        x: String,
        series: Vec<String>,
    },
    Pivot {
        x: String,
        key: String,
        value: String,
    },
    Interval {
        x: String,
        value: String,
        low: String,
        high: String,
    },
    None,
}

#[derive(Debug, Clone)]
pub struct Section {
    /// From the file name, without its leading order number (`10-sizes.sql` → `sizes`).
    pub id: String,
    pub title: String,
    pub about: String,
    pub sql: String,
    /// The file the SQL came from, for messages and the page.
    pub origin: String,
    pub chart: Chart,
}

/// The folder of a project's report sections.
pub const DIR: &str = "queries/report";

/// The shipped sections, by path under the project (what `init` writes).
pub const SHIPPED: &[(&str, &str)] = &[
    (
        "queries/report/10-sizes.sql",
        include_str!("../../queries/report/10-sizes.sql"),
    ),
    (
        "queries/report/20-delivery.sql",
        include_str!("../../queries/report/20-delivery.sql"),
    ),
    (
        "queries/report/30-duration.sql",
        include_str!("../../queries/report/30-duration.sql"),
    ),
    (
        "queries/report/40-ingest.sql",
        include_str!("../../queries/report/40-ingest.sql"),
    ),
    (
        "queries/report/50-funnel.sql",
        include_str!("../../queries/report/50-funnel.sql"),
    ),
    (
        "queries/report/60-lift.sql",
        include_str!("../../queries/report/60-lift.sql"),
    ),
];

/// The shipped lift analysis (a shipped section names it; a project without its own file
/// reads this one).
pub const LIFT: (&str, &str) = (
    "queries/analysis/lift.sql",
    include_str!("../../queries/analysis/lift.sql"),
);

/// The project's sections, in file-name order; the shipped ones when it has no
/// `queries/report/` folder.
pub fn load(config: &Config) -> Result<Vec<Section>> {
    let base = config.base_dir();
    let dir = base.join(DIR);
    if !dir.is_dir() {
        return SHIPPED
            .iter()
            .map(|(rel, text)| parse(&base.join(rel), text, &base))
            .collect();
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| Error::storage_at(dir.display(), e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| {
            let text = std::fs::read_to_string(f).map_err(|e| Error::storage_at(f.display(), e))?;
            parse(f, &text, &base)
        })
        .collect()
}

/// One section file: its header, then its SQL (or the file its `sql:` names).
fn parse(file: &Path, text: &str, base: &Path) -> Result<Section> {
    let origin = file
        .strip_prefix(base)
        .unwrap_or(file)
        .display()
        .to_string();
    let bad = |line: usize, what: String| Error::config(None, format!("{origin}:{line}: {what}"));
    let stem = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let id = stem
        .trim_start_matches(|c: char| c.is_ascii_digit())
        .trim_start_matches(['-', '_'])
        .to_string();
    let mut section = Section {
        id: if id.is_empty() { stem } else { id },
        title: String::new(),
        about: String::new(),
        sql: String::new(),
        origin: origin.clone(),
        chart: Chart::None,
    };
    let mut body_from = None;
    let mut other = None;
    for (i, line) in text.lines().enumerate() {
        let Some(comment) = line.trim_start().strip_prefix("--") else {
            body_from = Some(i);
            break;
        };
        let Some((key, value)) = comment.trim().split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "title" => section.title = value.to_string(),
            "about" => section.about = value.to_string(),
            "chart" => section.chart = chart(value).map_err(|e| bad(i + 1, e))?,
            "sql" => other = Some((i + 1, value.to_string())),
            _ => {}
        }
    }
    if section.title.is_empty() {
        section.title = section.id.clone();
    }
    section.sql = match other {
        Some((line, rel)) => {
            let path = normalise(&file.parent().unwrap_or(Path::new(".")).join(&rel));
            let shipped = path.strip_prefix(normalise(base)).ok().and_then(|r| {
                SHIPPED
                    .iter()
                    .chain([&LIFT])
                    .find(|(p, _)| Path::new(p) == r)
            });
            match std::fs::read_to_string(&path) {
                Ok(text) => text,
                // A shipped section naming a shipped file the project does not have.
                Err(_) if shipped.is_some() => {
                    shipped.map(|(_, t)| t.to_string()).unwrap_or_default()
                }
                Err(e) => {
                    return Err(bad(
                        line,
                        format!("`sql: {rel}`: cannot read {}: {e}", path.display()),
                    ));
                }
            }
        }
        None => {
            let lines: Vec<&str> = text.lines().collect();
            lines[body_from.unwrap_or(lines.len())..].join("\n")
        }
    };
    if section.sql.trim().is_empty() {
        return Err(bad(
            1,
            "no query: the header is followed by nothing (write a SELECT, or `-- sql: FILE`)"
                .into(),
        ));
    }
    Ok(section)
}

/// `path` with `.` and `..` resolved lexically.
fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// A `chart:` value.
fn chart(spec: &str) -> std::result::Result<Chart, String> {
    let mut words = spec.split_whitespace();
    let kind = words.next().unwrap_or("");
    let mut keys = std::collections::BTreeMap::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| format!("chart: `{w}` is not key=value"))?;
        keys.insert(k.to_string(), v.to_string());
    }
    let mut take = |k: &str| {
        keys.remove(k)
            .ok_or_else(|| format!("chart `{kind}` needs `{k}=`"))
    };
    let list = |v: String| v.split(',').map(str::to_string).collect::<Vec<_>>();
    let chart = match kind {
        "columns" | "timeline" => {
            let (x, series) = (take("x")?, list(take("series")?));
            let group = take("group").ok();
            if kind == "columns" {
                Chart::Columns { group, x, series }
            } else {
                Chart::Timeline { group, x, series }
            }
        }
        "pivot" => Chart::Pivot {
            x: take("x")?,
            key: take("key")?,
            value: take("value")?,
        },
        "interval" => Chart::Interval {
            x: take("x")?,
            value: take("value")?,
            low: take("low")?,
            high: take("high")?,
        },
        "none" => Chart::None,
        other => {
            return Err(format!(
                "chart `{other}`: one of columns, timeline, pivot, interval, none"
            ));
        }
    };
    match keys.keys().next() {
        Some(k) => Err(format!("chart `{kind}` takes no `{k}=`")),
        None => Ok(chart),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_parse_and_name_what_is_wrong() {
        assert_eq!(
            chart("timeline group=cohort x=run_at series=members,adds").unwrap(),
            Chart::Timeline {
                group: Some("cohort".into()),
                x: "run_at".into(),
                series: vec!["members".into(), "adds".into()]
            }
        );
        assert!(chart("pie x=a").unwrap_err().contains("one of columns"));
        assert!(
            chart("pivot x=a key=b")
                .unwrap_err()
                .contains("needs `value=`")
        );
        assert!(
            chart("none colour=red")
                .unwrap_err()
                .contains("no `colour=`")
        );
    }

    #[test]
    fn a_section_file_is_its_header_then_its_query() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("queries/report/15-mine.sql");
        let s = parse(
            &f,
            "-- title: Mine\n-- chart: columns x=a series=b\nSELECT 1 AS a, 2 AS b\n",
            dir.path(),
        )
        .unwrap();
        assert_eq!((s.id.as_str(), s.title.as_str()), ("mine", "Mine"));
        assert_eq!(s.sql.trim(), "SELECT 1 AS a, 2 AS b");
        assert_eq!(s.origin, "queries/report/15-mine.sql");
        let e = parse(&f, "-- chart: bars x=a\nSELECT 1", dir.path()).unwrap_err();
        assert!(
            e.to_string()
                .contains("queries/report/15-mine.sql:1: chart `bars`"),
            "{e}"
        );
        let e = parse(&f, "-- sql: nope.sql\n", dir.path()).unwrap_err();
        assert!(e.to_string().contains(":1: `sql: nope.sql`"), "{e}");
    }

    #[test]
    fn the_shipped_sections_parse() {
        let dir = tempfile::tempdir().unwrap();
        for (rel, text) in SHIPPED {
            let s = parse(&dir.path().join(rel), text, dir.path()).unwrap();
            assert!(!s.title.is_empty() && !s.sql.trim().is_empty(), "{rel}");
        }
    }
}
