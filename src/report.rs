//! `report`: one self-contained HTML file — inline SVG charts, tables, each table downloadable
//! as CSV from a `data:` link, a few lines of inline script and no request at view time — of
//! what the lake says about the integration: cohort sizes and changes over runs, delivery
//! (requests, retries, dead letters, duration), ingest volume by day and event type, the
//! engagement funnel and the lift against holdouts. Every number comes from SQL over the lake
//! (the SQL is on the page, under each chart); a section whose tables are missing says why
//! instead of failing the report.

use std::fmt::Write as _;
use std::path::Path;

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::config::Config;
use crate::error::{Error, Result, exit};
use crate::lake::Lake;
use crate::lake::sql::{Params, SqlSource};

/// How a section's rows become a chart.
enum Chart {
    /// One bar per `x` and column of `series`; one chart per value of `group` (if any).
    Columns {
        group: Option<&'static str>,
        x: &'static str,
        series: &'static [&'static str],
    },
    /// Rows in long form: the series are the values of `key`, each bar `value`.
    Pivot {
        x: &'static str,
        key: &'static str,
        value: &'static str,
    },
    /// One bar of `value` per `x`, with its interval `low`..`high` as a whisker.
    Interval {
        x: &'static str,
        value: &'static str,
        low: &'static str,
        high: &'static str,
    },
}

struct Section {
    id: &'static str,
    title: &'static str,
    about: &'static str,
    sql: String,
    chart: Chart,
}

const SIZES: &str =
    "SELECT cohort, to_char(run_at, '%Y-%m-%d %H:%M') AS run_at, members, adds, removes
FROM runs
WHERE command = 'sync' AND outcome IN ('delivered', 'unchanged')
ORDER BY cohort, run_at, ended_at";

const DELIVERY: &str = "SELECT cohort, to_char(run_at, '%Y-%m-%d %H:%M') AS run_at, outcome,
       requests, retries, dead_letters,
       ROUND(date_part('epoch', ended_at) - date_part('epoch', started_at), 2) AS seconds
FROM runs
WHERE command LIKE 'sync%'
ORDER BY cohort, ended_at";

const INGEST: &str =
    "SELECT CAST(event_date AS VARCHAR) AS event_date, event_type, count(*) AS events
FROM partner_events
GROUP BY event_date, event_type
ORDER BY event_date, event_type";

const FUNNEL: &str = "-- Edit `campaign_feature` as in queries/analysis/lift.sql.
WITH campaign_feature(campaign_id, feature) AS (
  VALUES ('camp-offline', 'offline_mode'), ('camp-playlists', 'playlists')
),
sends AS (
  SELECT external_user_id AS user_id, campaign_id, MIN(event_time) AS sent_at
  FROM partner_events
  WHERE event_type IN ('users.messages.pushnotification.Send', 'users.messages.email.Send')
    AND external_user_id IS NOT NULL AND campaign_id IS NOT NULL
  GROUP BY external_user_id, campaign_id
),
engaged AS (
  SELECT DISTINCT external_user_id AS user_id, campaign_id
  FROM partner_events
  WHERE event_type IN ('users.messages.pushnotification.Open', 'users.messages.email.Click')
    AND external_user_id IS NOT NULL
),
used AS (
  SELECT DISTINCT s.user_id, s.campaign_id
  FROM sends s
  JOIN campaign_feature f ON f.campaign_id = s.campaign_id
  JOIN events e
    ON e.user_id = s.user_id AND e.event_name = 'feature_used' AND e.feature = f.feature
   AND e.event_time >= s.sent_at AND e.event_time < s.sent_at + INTERVAL '24 hours'
)
SELECT s.campaign_id,
       COUNT(*) AS sent,
       COUNT(g.user_id) AS opened_or_clicked,
       COUNT(u.user_id) AS used_feature_24h
FROM sends s
LEFT JOIN engaged g ON g.user_id = s.user_id AND g.campaign_id = s.campaign_id
LEFT JOIN used u ON u.user_id = s.user_id AND u.campaign_id = s.campaign_id
GROUP BY s.campaign_id
ORDER BY s.campaign_id";

fn sections(config: &Config) -> Vec<Section> {
    // The project's own lift analysis (its `campaign_target`), else the shipped one.
    let lift = std::fs::read_to_string(config.base_dir().join("queries/analysis/lift.sql"))
        .unwrap_or_else(|_| include_str!("../queries/analysis/lift.sql").to_string());
    vec![
        Section {
            id: "sizes",
            title: "Cohort size and change per run",
            about: "Members the partner holds after each sync (the holdout excluded), and the adds and removes sent.",
            sql: SIZES.into(),
            chart: Chart::Columns {
                group: Some("cohort"),
                x: "run_at",
                series: &["members", "adds", "removes"],
            },
        },
        Section {
            id: "delivery",
            title: "Delivery per run",
            about: "Requests (retries included), retried requests and dead letters of every sync, failed ones too.",
            sql: DELIVERY.into(),
            chart: Chart::Columns {
                group: Some("cohort"),
                x: "run_at",
                series: &["requests", "retries", "dead_letters"],
            },
        },
        Section {
            id: "duration",
            title: "Duration per run",
            about: "Seconds from start to end of each sync.",
            sql: DELIVERY.into(),
            chart: Chart::Columns {
                group: Some("cohort"),
                x: "run_at",
                series: &["seconds"],
            },
        },
        Section {
            id: "ingest",
            title: "Ingested partner events by day and type",
            about: "Rows of partner_events per event_date (the event's own day) and event type.",
            sql: INGEST.into(),
            chart: Chart::Pivot {
                x: "event_date",
                key: "event_type",
                value: "events",
            },
        },
        Section {
            id: "funnel",
            title: "Engagement funnel",
            about: "Per campaign: members sent a message, those who opened (push) or clicked (email), and those who used the campaign's feature within 24 hours of their send.",
            sql: FUNNEL.into(),
            chart: Chart::Columns {
                group: None,
                x: "campaign_id",
                series: &["sent", "opened_or_clicked", "used_feature_24h"],
            },
        },
        Section {
            id: "lift",
            title: "Lift against the holdout",
            about: "Per campaign: the share of treated members who used the feature minus the share of held-out members, in points, with its 95% interval (queries/analysis/lift.sql).",
            sql: lift,
            chart: Chart::Interval {
                x: "campaign_id",
                value: "lift_points",
                low: "ci95_low",
                high: "ci95_high",
            },
        },
    ]
}

/// A query's result as text cells (NULL is empty), with its column names.
struct Rows {
    columns: Vec<String>,
    cells: Vec<Vec<Option<String>>>,
}

impl Rows {
    fn from_batches(batches: &[RecordBatch], schema: &[String]) -> Result<Rows> {
        let mut cells = Vec::new();
        for b in batches {
            let text: Vec<_> = b
                .columns()
                .iter()
                .map(|c| cast(c, &DataType::Utf8).map_err(|e| Error::Internal(e.to_string())))
                .collect::<Result<_>>()?;
            for i in 0..b.num_rows() {
                cells.push(
                    text.iter()
                        .map(|c| {
                            let c = c
                                .as_any()
                                .downcast_ref::<datafusion::arrow::array::StringArray>()
                                .expect("cast to Utf8");
                            c.is_valid(i).then(|| c.value(i).to_string())
                        })
                        .collect(),
                );
            }
        }
        Ok(Rows {
            columns: schema.to_vec(),
            cells,
        })
    }

    fn col(&self, name: &str) -> Result<usize> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| Error::Internal(format!("the report's query returns no `{name}`")))
    }

    fn text(&self, row: usize, col: usize) -> &str {
        self.cells[row][col].as_deref().unwrap_or("")
    }

    fn num(&self, row: usize, col: usize) -> f64 {
        self.text(row, col).parse().unwrap_or(0.0)
    }

    fn csv(&self) -> String {
        let field = |s: &str| {
            if s.contains([',', '"', '\n', '\r']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        let mut out = self
            .columns
            .iter()
            .map(|c| field(c))
            .collect::<Vec<_>>()
            .join(",");
        out.push('\n');
        for r in &self.cells {
            let line: Vec<String> = r
                .iter()
                .map(|c| field(c.as_deref().unwrap_or("")))
                .collect();
            out.push_str(&line.join(","));
            out.push('\n');
        }
        out
    }
}

/// One chart: categories on x, bars per series.
struct Bars {
    title: Option<String>,
    x: Vec<String>,
    series: Vec<String>,
    /// values[series][x]
    values: Vec<Vec<f64>>,
    /// Whiskers per x (interval charts).
    intervals: Option<Vec<(f64, f64)>>,
}

fn charts(chart: &Chart, rows: &Rows) -> Result<Vec<Bars>> {
    Ok(match chart {
        Chart::Columns { group, x, series } => {
            let xi = rows.col(x)?;
            let si: Vec<usize> = series.iter().map(|s| rows.col(s)).collect::<Result<_>>()?;
            let gi = group.map(|g| rows.col(g)).transpose()?;
            let mut groups: Vec<(Option<String>, Vec<usize>)> = Vec::new();
            for r in 0..rows.cells.len() {
                let g = gi.map(|g| rows.text(r, g).to_string());
                match groups.iter_mut().find(|(k, _)| *k == g) {
                    Some((_, v)) => v.push(r),
                    None => groups.push((g, vec![r])),
                }
            }
            groups
                .into_iter()
                .map(|(g, rs)| Bars {
                    title: g,
                    x: rs.iter().map(|&r| rows.text(r, xi).to_string()).collect(),
                    series: series.iter().map(|s| s.to_string()).collect(),
                    values: si
                        .iter()
                        .map(|&c| rs.iter().map(|&r| rows.num(r, c)).collect())
                        .collect(),
                    intervals: None,
                })
                .collect()
        }
        Chart::Pivot { x, key, value } => {
            let (xi, ki, vi) = (rows.col(x)?, rows.col(key)?, rows.col(value)?);
            let mut xs: Vec<String> = Vec::new();
            let mut keys: Vec<String> = Vec::new();
            for r in 0..rows.cells.len() {
                for (list, c) in [(&mut xs, xi), (&mut keys, ki)] {
                    let v = rows.text(r, c).to_string();
                    if !list.contains(&v) {
                        list.push(v);
                    }
                }
            }
            let mut values = vec![vec![0.0; xs.len()]; keys.len()];
            for r in 0..rows.cells.len() {
                let a = keys
                    .iter()
                    .position(|k| k == rows.text(r, ki))
                    .expect("seen");
                let b = xs.iter().position(|x| x == rows.text(r, xi)).expect("seen");
                values[a][b] += rows.num(r, vi);
            }
            vec![Bars {
                title: None,
                x: xs,
                series: keys,
                values,
                intervals: None,
            }]
        }
        Chart::Interval {
            x,
            value,
            low,
            high,
        } => {
            let (xi, vi, li, hi) = (
                rows.col(x)?,
                rows.col(value)?,
                rows.col(low)?,
                rows.col(high)?,
            );
            let n = rows.cells.len();
            vec![Bars {
                title: None,
                x: (0..n).map(|r| rows.text(r, xi).to_string()).collect(),
                series: vec![value.to_string()],
                values: vec![(0..n).map(|r| rows.num(r, vi)).collect()],
                intervals: Some((0..n).map(|r| (rows.num(r, li), rows.num(r, hi))).collect()),
            }]
        }
    })
}

const COLOURS: [&str; 8] = [
    "#2563eb", "#f59e0b", "#dc2626", "#16a34a", "#7c3aed", "#0891b2", "#db2777", "#65a30d",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A number as the page shows it (and as `data-value` carries it).
fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn svg(chart_id: &str, b: &Bars) -> String {
    // The legend's entries, laid out in rows before the plot (long series names wrap).
    let mut legend = Vec::new();
    let (mut lx, mut ly) = (60.0, 6.0);
    for name in &b.series {
        let width = 34.0 + 6.8 * name.chars().count() as f64;
        if lx + width > 890.0 && lx > 60.0 {
            (lx, ly) = (60.0, ly + 18.0);
        }
        legend.push((lx, ly));
        lx += width;
    }
    let (w, left, bottom, top) = (900.0, 60.0, 64.0, ly + 20.0);
    let h = top + 120.0 + bottom;
    let plot_h = h - bottom - top;
    let mut lo = 0.0f64;
    let mut hi = 0.0f64;
    for v in b.values.iter().flatten() {
        lo = lo.min(*v);
        hi = hi.max(*v);
    }
    for (l, u) in b.intervals.iter().flatten() {
        lo = lo.min(*l);
        hi = hi.max(*u);
    }
    if hi - lo <= 0.0 {
        hi = lo + 1.0;
    }
    let y = |v: f64| top + plot_h * (hi - v) / (hi - lo);
    let n = b.x.len().max(1) as f64;
    let slot = (w - left - 10.0) / n;
    let bar = (slot * 0.8 / b.series.len().max(1) as f64).min(60.0);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" id="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart_id)
    );
    // Axis: zero line, the top and bottom of the scale.
    let _ = write!(
        s,
        r##"<line x1="{left}" x2="{}" y1="{z}" y2="{z}" stroke="#555"/>"##,
        w - 10.0,
        z = y(0.0)
    );
    for v in [lo, hi] {
        let _ = write!(
            s,
            r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#333">{}</text>"##,
            left - 6.0,
            y(v) + 4.0,
            esc(&show((v * 100.0).round() / 100.0))
        );
    }
    for (xi, label) in b.x.iter().enumerate() {
        let x0 = left + slot * xi as f64 + slot * 0.1;
        for (si, name) in b.series.iter().enumerate() {
            let v = b.values[si][xi];
            let (y0, y1) = (y(v.max(0.0)), y(v.min(0.0)));
            let _ = write!(
                s,
                r#"<rect class="bar" data-x="{}" data-series="{}" data-value="{}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {} = {}</title></rect>"#,
                esc(label),
                esc(name),
                show(v),
                x0 + bar * si as f64,
                y0,
                bar.max(1.0),
                (y1 - y0).max(0.5),
                COLOURS[si % COLOURS.len()],
                esc(label),
                esc(name),
                show(v)
            );
        }
        if let Some(iv) = &b.intervals {
            let (l, u) = iv[xi];
            let cx = x0 + bar / 2.0;
            let _ = write!(
                s,
                r##"<g class="interval" data-x="{}" data-low="{}" data-high="{}"><line x1="{cx:.1}" x2="{cx:.1}" y1="{:.1}" y2="{:.1}" stroke="#111" stroke-width="2"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#111"/><line x1="{:.1}" x2="{:.1}" y1="{:.1}" y2="{:.1}" stroke="#111"/></g>"##,
                esc(label),
                show(l),
                show(u),
                y(u),
                y(l),
                cx - 6.0,
                cx + 6.0,
                y(u),
                y(u),
                cx - 6.0,
                cx + 6.0,
                y(l),
                y(l)
            );
        }
        let lx = left + slot * xi as f64 + slot / 2.0;
        let ly = h - bottom + 14.0;
        let _ = write!(
            s,
            r##"<text x="{lx:.1}" y="{ly:.1}" font-size="11" text-anchor="end" fill="#333" transform="rotate(-30 {lx:.1} {ly:.1})">{}</text>"##,
            esc(label)
        );
    }
    // Legend.
    for (si, (name, (lx, ly))) in b.series.iter().zip(legend).enumerate() {
        let _ = write!(
            s,
            r##"<rect x="{lx}" y="{ly}" width="12" height="12" fill="{}"/><text x="{}" y="{}" font-size="12" fill="#222">{}</text>"##,
            COLOURS[si % COLOURS.len()],
            lx + 16.0,
            ly + 10.0,
            esc(name)
        );
    }
    s.push_str("</svg>");
    s
}

fn table(rows: &Rows) -> String {
    let mut s = String::from("<table><thead><tr>");
    for c in &rows.columns {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr></thead><tbody>");
    for r in &rows.cells {
        s.push_str("<tr>");
        for c in r {
            let _ = write!(s, "<td>{}</td>", esc(c.as_deref().unwrap_or("")));
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:960px;color:#111;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.5rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
h3{font-size:1rem;margin:1rem 0 .2rem}p.about{color:#444}.missing{color:#a00}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}details{margin:.3rem 0}pre{background:#f7f7f7;padding:.5rem;overflow:auto;font-size:.8rem}
a.csv{font-size:.85rem}";

/// Counts the page's sections and tables once loaded, so a browser test (or a reader's
/// console) sees that the page's own code ran.
const SCRIPT: &str = "window.addEventListener('error',function(e){document.documentElement.dataset.errors=(document.documentElement.dataset.errors||'')+e.message+';'});
document.addEventListener('DOMContentLoaded',function(){var s=document.querySelectorAll('section').length,b=document.querySelectorAll('rect.bar').length;
document.documentElement.dataset.ready='1';document.getElementById('summary').textContent=s+' sections, '+b+' bars';});";

/// `report`: writes the report for the project's lake to `out` and prints a JSON line.
pub async fn report(config_file: &Path, out: &Path, at: Option<DateTime<Utc>>) -> Result<i32> {
    let config = crate::destinations::load_config(config_file)?;
    let lake = crate::project::open_lake(&config).await?;
    let line = write(&config, &lake, out, at).await?;
    println!("{line}");
    Ok(exit::OK)
}

/// Writes the report of `lake` to `out` (replaced whole); returns what it wrote, as JSON.
pub async fn write(
    config: &Config,
    lake: &Lake,
    out: &Path,
    at: Option<DateTime<Utc>>,
) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let params = Params {
        run_ts: at.unwrap_or_else(Utc::now),
    };
    let mut body = String::new();
    let mut missing = 0;
    let sections = sections(config);
    let count = sections.len();
    // Sections that chart the same query (delivery, duration) run it once.
    let mut results: std::collections::HashMap<String, std::result::Result<Arc<Rows>, String>> =
        Default::default();
    for section in sections {
        let _ = write!(
            body,
            r#"<section id="{}"><h2>{}</h2><p class="about">{}</p>"#,
            section.id,
            esc(section.title),
            esc(section.about)
        );
        let origin = format!("report section `{}`", section.id);
        if !results.contains_key(&section.sql) {
            let result = async {
                let df = lake
                    .plan_query(
                        &SqlSource {
                            origin: &origin,
                            text: &section.sql,
                        },
                        &params,
                    )
                    .await?;
                let columns: Vec<String> = df
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.name().to_string())
                    .collect();
                let batches = lake.collect(df, &origin).await?;
                Rows::from_batches(&batches, &columns)
            }
            .await;
            results.insert(
                section.sql.clone(),
                result.map(Arc::new).map_err(|e| e.to_string()),
            );
        }
        match &results[&section.sql] {
            Ok(rows) if rows.cells.is_empty() => {
                body.push_str(r#"<p class="missing">No rows yet.</p>"#);
            }
            Ok(rows) => {
                for (i, b) in charts(&section.chart, rows)?.iter().enumerate() {
                    if let Some(t) = &b.title {
                        let _ = write!(body, "<h3>{}</h3>", esc(t));
                    }
                    body.push_str(&svg(&format!("{}-{i}", section.id), b));
                }
                let csv = base64::engine::general_purpose::STANDARD.encode(rows.csv());
                let _ = write!(
                    body,
                    r#"<p><a class="csv" download="{}.csv" href="data:text/csv;charset=utf-8;base64,{csv}">Download the table as CSV</a></p>{}"#,
                    section.id,
                    table(rows)
                );
            }
            Err(e) => {
                missing += 1;
                tracing::warn!(section = section.id, error = %e, "report section left empty");
                let _ = write!(body, r#"<p class="missing">Not available: {}</p>"#, esc(e));
            }
        }
        let _ = write!(
            body,
            "<details><summary>SQL</summary><pre>{}</pre></details></section>",
            esc(&section.sql)
        );
    }
    let generated = Utc::now().format("%Y-%m-%d %H:%M:%S UTC");
    let html = format!(
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>cohort-bridge report</title><style>{STYLE}</style><script>{SCRIPT}</script></head>
<body><h1>cohort-bridge report</h1>
<p>Lake <code>{}</code>, generated {generated}. <span id="summary"></span></p>
{body}
</body></html>
"#,
        esc(lake.location.url.as_str())
    );
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::storage_at(dir.display(), e))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| Error::storage_at(out.display(), e))?;
    Ok(serde_json::json!({
        "out": out.display().to_string(),
        "sections": count,
        "sections_without_data": missing,
        "bytes": html.len(),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}
