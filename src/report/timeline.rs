//! Timeline charts: each row placed at its time on a time axis (runs that happen an hour apart
//! and runs a week apart look it), a line and a point per series.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};

use super::{Bars, COLOURS, esc, legend_layout, show, value_range};

/// A cell's time in seconds since the epoch: RFC 3339 (how timestamps print), a naive
/// `YYYY-MM-DD[ T]HH:MM[:SS[.f]]` (UTC) or a date; `None` for anything else.
pub fn seconds(text: &str) -> Option<f64> {
    let t = text.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis() as f64 / 1000.0);
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_millis() as f64 / 1000.0);
        }
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d").ok().map(|d| {
        d.and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
            .timestamp() as f64
    })
}

/// A tick's label: the date, with the time when the axis spans less than three days.
fn label(t: f64, span: f64) -> String {
    let d = DateTime::<Utc>::from_timestamp(t as i64, 0).unwrap_or_default();
    if span < 3.0 * 86_400.0 {
        d.format("%m-%d %H:%M").to_string()
    } else {
        d.format("%Y-%m-%d").to_string()
    }
}

/// The chart of `b`, whose every x has a time.
pub fn svg(chart_id: &str, b: &Bars) -> String {
    let times: Vec<f64> = b.times.iter().flatten().flatten().copied().collect();
    let (legend, ly) = legend_layout(&b.series);
    let (w, left, right, bottom, top) = (900.0, 60.0, 24.0, 40.0, ly + 20.0);
    let h = top + 140.0 + bottom;
    let plot_h = h - bottom - top;
    let (lo, hi) = value_range(b);
    let y = |v: f64| top + plot_h * (hi - v) / (hi - lo);
    let (t0, t1) = times
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, z), &t| {
            (a.min(t), z.max(t))
        });
    let span = t1 - t0;
    let x = |t: f64| {
        if span > 0.0 {
            left + (w - left - right) * (t - t0) / span
        } else {
            left + (w - left - right) / 2.0
        }
    };
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart timeline" id="{}" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" xmlns="http://www.w3.org/2000/svg">"#,
        esc(chart_id)
    );
    let _ = write!(
        s,
        r##"<line x1="{left}" x2="{}" y1="{z}" y2="{z}" stroke="#555"/>"##,
        w - right,
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
    // Ticks: five times evenly spread over the span (one when every run is at one time).
    let ticks = if span > 0.0 { 5 } else { 1 };
    for i in 0..ticks {
        let t = if ticks == 1 {
            t0
        } else {
            t0 + span * i as f64 / (ticks - 1) as f64
        };
        let tx = x(t);
        let anchor = match i {
            0 if ticks > 1 => "start",
            i if i == ticks - 1 && ticks > 1 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            r##"<line class="tick" x1="{tx:.1}" x2="{tx:.1}" y1="{}" y2="{}" stroke="#999"/><text class="tick" data-time="{}" x="{tx:.1}" y="{}" font-size="11" text-anchor="{anchor}" fill="#333">{}</text>"##,
            h - bottom,
            h - bottom + 5.0,
            t as i64,
            h - bottom + 18.0,
            esc(&label(t, span))
        );
    }
    for (si, name) in b.series.iter().enumerate() {
        let colour = COLOURS[si % COLOURS.len()];
        let points: Vec<(f64, f64)> = times
            .iter()
            .zip(&b.values[si])
            .map(|(&t, &v)| (x(t), y(v)))
            .collect();
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = write!(
            s,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{}"/>"#,
            path.join(" ")
        );
        for (xi, (px, py)) in points.iter().enumerate() {
            let v = b.values[si][xi];
            let _ = write!(
                s,
                r#"<circle class="point" data-x="{}" data-time="{}" data-series="{}" data-value="{}" cx="{px:.1}" cy="{py:.1}" r="3" fill="{colour}"><title>{}: {} = {}</title></circle>"#,
                esc(&b.x[xi]),
                times[xi] as i64,
                esc(name),
                show(v),
                esc(&b.x[xi]),
                esc(name),
                show(v)
            );
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_every_form_a_query_prints() {
        let t = 1_764_324_000.0; // 2025-11-28T10:00:00Z
        for text in [
            "2025-11-28T10:00:00Z",
            "2025-11-28T10:00:00+00:00",
            "2025-11-28T10:00:00.000",
            "2025-11-28 10:00:00",
            "2025-11-28 10:00",
        ] {
            assert_eq!(seconds(text), Some(t), "{text}");
        }
        assert_eq!(seconds("2025-11-28"), Some(t - 36_000.0));
        assert_eq!(seconds("camp-offline"), None);
    }

    #[test]
    fn points_are_placed_by_time_not_evenly() {
        let day = 86_400.0;
        let b = Bars {
            title: None,
            x: vec!["a".into(), "b".into(), "c".into()],
            series: vec!["members".into()],
            values: vec![vec![1.0, 2.0, 3.0]],
            intervals: None,
            // Two runs an hour apart, then one nine days later.
            times: Some(vec![Some(0.0), Some(3600.0), Some(9.0 * day)]),
        };
        let svg = svg("t", &b);
        let cx: Vec<f64> = svg
            .split("cx=\"")
            .skip(1)
            .map(|p| p[..p.find('"').unwrap()].parse().unwrap())
            .collect();
        assert_eq!(cx.len(), 3);
        let (first_gap, second_gap) = (cx[1] - cx[0], cx[2] - cx[1]);
        assert!(
            second_gap > 100.0 * first_gap,
            "{cx:?}: the gaps follow the times"
        );
    }
}
