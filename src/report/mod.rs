//! `report`: one self-contained HTML file — inline SVG charts, tables, each table downloadable
//! as CSV from a `data:` link, a few lines of inline script and no request at view time — of
//! what the lake says about the integration: cohort sizes and changes over runs, delivery
//! (requests, retries, dead letters, duration), ingest volume by day and event type, the
//! engagement funnel and the lift against holdouts. Every number comes from SQL over the lake,
//! one file per section that the analyst edits (`sections`; the SQL is on the page, under each
//! chart); a section whose tables are missing says why instead of failing the report.

use std::fmt::Write as _;
use std::path::Path;

use std::sync::Arc;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::sql::{Params, SqlSource};

pub mod sections;
mod timeline;

use sections::{Chart, Section};

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
    /// Each x's time, in seconds since the epoch (timelines: x placed by time; `None` for an x
    /// that is no time).
    times: Option<Vec<Option<f64>>>,
}

fn charts(chart: &Chart, rows: &Rows) -> Result<Vec<Bars>> {
    Ok(match chart {
        Chart::None => Vec::new(),
        Chart::Columns { group, x, series } | Chart::Timeline { group, x, series } => {
            let xi = rows.col(x)?;
            let si: Vec<usize> = series.iter().map(|s| rows.col(s)).collect::<Result<_>>()?;
            let gi = group.as_deref().map(|g| rows.col(g)).transpose()?;
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
                    times: matches!(chart, Chart::Timeline { .. }).then(|| {
                        rs.iter()
                            .map(|&r| timeline::seconds(rows.text(r, xi)))
                            .collect()
                    }),
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
                times: None,
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
                times: None,
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

/// The legend's entries, laid out in rows before the plot (long series names wrap): where
/// each goes, and the y of the last row.
fn legend_layout(series: &[String]) -> (Vec<(f64, f64)>, f64) {
    let mut legend = Vec::new();
    let (mut lx, mut ly) = (60.0, 6.0);
    for name in series {
        let width = 34.0 + 7.6 * name.chars().count() as f64;
        if lx + width > 890.0 && lx > 60.0 {
            (lx, ly) = (60.0, ly + 18.0);
        }
        legend.push((lx, ly));
        lx += width;
    }
    (legend, ly)
}

/// The bottom and top of a chart's scale: zero, every value and every interval.
fn value_range(b: &Bars) -> (f64, f64) {
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
    (lo, hi)
}

/// An interval's whisker at `cx`, from `l` to `u` (`y` maps a value to the chart's y).
fn whisker(s: &mut String, label: &str, (l, u): (f64, f64), cx: f64, y: impl Fn(f64) -> f64) {
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

fn svg(chart_id: &str, b: &Bars) -> String {
    if b.times
        .as_ref()
        .is_some_and(|t| t.iter().all(Option::is_some))
    {
        return timeline::svg(chart_id, b);
    }
    let (legend, ly) = legend_layout(&b.series);
    let (w, left, bottom, top) = (900.0, 60.0, 64.0, ly + 20.0);
    let h = top + 120.0 + bottom;
    let plot_h = h - bottom - top;
    let (lo, hi) = value_range(b);
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
            whisker(&mut s, label, iv[xi], x0 + bar / 2.0, y);
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
    let mut s = String::from(r#"<div class="table"><table><thead><tr>"#);
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
    s.push_str("</tbody></table></div>");
    s
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:960px;color:#111;padding:0 1rem}
h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2.5rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
h3{font-size:1rem;margin:1rem 0 .2rem}p.about{color:#444}.missing{color:#a00}
div.table{max-width:100%;overflow-x:auto}svg.chart{max-width:100%;height:auto}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}td,th{border:1px solid #ddd;padding:.2rem .5rem;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}details{margin:.3rem 0}pre{background:#f7f7f7;padding:.5rem;overflow:auto;font-size:.8rem}
a.csv{font-size:.85rem}";

/// Counts the page's sections and tables once loaded, so a browser test (or a reader's
/// console) sees that the page's own code ran.
const SCRIPT: &str = "window.addEventListener('error',function(e){document.documentElement.dataset.errors=(document.documentElement.dataset.errors||'')+e.message+';'});
document.addEventListener('DOMContentLoaded',function(){var s=document.querySelectorAll('section').length,b=document.querySelectorAll('rect.bar').length,p=document.querySelectorAll('circle.point').length;
var r=document.documentElement;r.dataset.wide=r.scrollWidth>r.clientWidth?'1':'0';r.dataset.ready='1';document.getElementById('summary').textContent=s+' sections, '+b+' bars, '+p+' points';});";

/// Writes the report of `lake` to `out` (a local path, or an object-store URL like the lake's,
/// with the lake's options), replaced whole; its sections look at what happened since `since`
/// (`$since`). Returns what it wrote, as JSON.
pub async fn write(
    config: &Config,
    lake: &Lake,
    out: &str,
    at: Option<DateTime<Utc>>,
    since: Option<DateTime<Utc>>,
) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let params = Params {
        run_ts: at.unwrap_or_else(Utc::now),
        since,
    };
    let sections = sections::load(config)?;
    let count = sections.len();
    let (body, missing) = render_sections(lake, &params, sections).await?;
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
    write_out(config, out, &html).await?;
    Ok(serde_json::json!({
        "out": crate::config::url_secrets::shown(out),
        "sections": count,
        "sections_without_data": missing,
        "bytes": html.len(),
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// Every section as HTML (a section whose query fails says why); how many are without data.
async fn render_sections(
    lake: &Lake,
    params: &Params,
    sections: Vec<Section>,
) -> Result<(String, usize)> {
    let mut body = String::new();
    let mut missing = 0;
    // Sections that chart the same query (delivery, duration) run it once.
    let mut results: std::collections::HashMap<String, std::result::Result<Arc<Rows>, String>> =
        Default::default();
    for section in sections {
        let _ = write!(
            body,
            r#"<section id="{}"><h2>{}</h2><p class="about">{}</p>"#,
            esc(&section.id),
            esc(&section.title),
            esc(&section.about)
        );
        let origin = section.origin.clone();
        if !results.contains_key(&section.sql) {
            let result = section_rows(lake, &origin, &section.sql, params).await;
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
                tracing::warn!(section = %section.id, error = %e, "report section left empty");
                let _ = write!(body, r#"<p class="missing">Not available: {}</p>"#, esc(e));
            }
        }
        let _ = write!(
            body,
            "<details><summary>SQL ({})</summary><pre>{}</pre></details></section>",
            esc(&section.origin),
            esc(&section.sql)
        );
    }
    Ok((body, missing))
}

/// A section's query, run: its rows.
async fn section_rows(lake: &Lake, origin: &str, sql: &str, params: &Params) -> Result<Rows> {
    let df = lake
        .plan_query(&SqlSource { origin, text: sql }, params)
        .await?;
    let columns: Vec<String> = df
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().to_string())
        .collect();
    let batches = lake.collect(df, origin).await?;
    Rows::from_batches(&batches, &columns)
}

/// Writes the page to `out`: an object-store URL (one put: the object appears whole), or a
/// local path.
async fn write_out(config: &Config, out: &str, html: &str) -> Result<()> {
    if !out.contains("://") {
        return write_file(Path::new(out), html);
    }
    if let Some(problem) = crate::config::url_secrets::problem(
        "--out",
        out,
        "object stores read their keys from the environment",
    ) {
        return Err(Error::config(None, problem));
    }
    let (folder, name) = out
        .rsplit_once('/')
        .filter(|(_, n)| !n.is_empty())
        .ok_or_else(|| {
            Error::config(
                None,
                format!(
                    "--out {}: name the file, e.g. s3://bucket/reports/report.html",
                    crate::config::url_secrets::shown(out)
                ),
            )
        })?;
    let location = crate::storage::location::Location::parse(
        folder,
        &config.base_dir(),
        &config.lake.options,
    )?;
    let path = location.child(name);
    object_store::ObjectStoreExt::put(
        location.store.as_ref(),
        &path,
        bytes::Bytes::from(html.to_string()).into(),
    )
    .await
    .map_err(|e| Error::storage_at(crate::config::url_secrets::shown(out), e))?;
    Ok(())
}

/// Writes the page to `out` whole (a staging file renamed over it), its folder created.
fn write_file(out: &Path, html: &str) -> Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::storage_at(dir.display(), e))?;
    }
    let tmp = out.with_extension("html.tmp");
    std::fs::write(&tmp, html.as_bytes())
        .and_then(|()| std::fs::rename(&tmp, out))
        .map_err(|e| Error::storage_at(out.display(), e))?;
    Ok(())
}
