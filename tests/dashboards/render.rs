//! A dashboard drawn as one hand-written SVG page from the data of its own queries (there is no Grafana here):
//! each panel at its grid position with its title; time series as lines (bars where the panel draws bars, stacked
//! where it stacks) with axes and a legend, state timelines as coloured bands, stats as their last value with a
//! sparkline, bar gauges as bars. Units, decimals, value mappings and thresholds are read from the panel.

use std::fmt::Write;

use serde_json::Value;

/// Grafana's classic palette.
const PALETTE: &[&str] = &[
    "#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0",
    "#508642", "#CCA300", "#447EBC", "#C15C17", "#890F02", "#0A437C", "#6D1F62", "#584477",
];

/// Pixels per grid column (Grafana's grid is 24 columns wide) and per grid row.
const COL: f64 = 50.0;
const ROW: f64 = 30.0;
const HEADER: f64 = 64.0;

/// One series of a panel: its legend and (unix seconds, value) points.
pub struct Line {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A panel and what its queries returned.
pub struct Panel {
    pub json: Value,
    /// Range results (time series, state timelines, stat sparklines).
    pub lines: Vec<Line>,
    /// Instant results at the end of the range (stats, bar gauges): legend and value.
    pub values: Vec<(String, f64)>,
}

pub struct Page {
    pub title: String,
    pub subtitle: String,
    pub start: f64,
    pub end: f64,
    /// Moments to mark on every time axis (unix seconds, label).
    pub markers: Vec<(f64, String)>,
    pub panels: Vec<Panel>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A value as the panel's unit and decimals say.
pub fn format(v: f64, unit: &str, decimals: Option<usize>) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let num = |x: f64, default: usize| {
        let d = decimals.unwrap_or(default);
        let s = format!("{x:.d$}");
        if decimals.is_none() && s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s
        }
    };
    match unit {
        "s" => {
            if v != 0.0 && v.abs() < 1.0 && decimals.is_none() {
                format!("{} ms", num(v * 1000.0, 0))
            } else {
                format!("{} s", num(v, 2))
            }
        }
        "bytes" => {
            let (x, u) = [
                (1024.0_f64.powi(3), "GiB"),
                (1024.0 * 1024.0, "MiB"),
                (1024.0, "KiB"),
            ]
            .into_iter()
            .find(|(m, _)| v.abs() >= *m)
            .map(|(m, u)| (v / m, u))
            .unwrap_or((v, "B"));
            format!("{} {u}", num(x, 1))
        }
        "percentunit" => format!("{}%", num(v * 100.0, 1)),
        "reqps" => format!("{} req/s", num(v, 2)),
        _ => {
            if v.abs() >= 1e6 {
                format!("{}M", num(v / 1e6, 2))
            } else if v.abs() >= 1e4 {
                format!("{}k", num(v / 1e3, 1))
            } else {
                num(v, 2)
            }
        }
    }
}

fn unit_of(p: &Value) -> String {
    p["fieldConfig"]["defaults"]["unit"]
        .as_str()
        .unwrap_or("short")
        .to_string()
}

fn decimals_of(p: &Value) -> Option<usize> {
    p["fieldConfig"]["defaults"]["decimals"]
        .as_u64()
        .map(|d| d as usize)
}

/// A value mapping of the panel for `v`: (text, colour).
fn mapping(p: &Value, v: f64) -> Option<(String, String)> {
    for m in p["fieldConfig"]["defaults"]["mappings"].as_array()? {
        if m["type"] != "value" {
            continue;
        }
        for (k, o) in m["options"].as_object()? {
            if k.parse::<f64>().ok() == Some(v) {
                return Some((
                    o["text"].as_str().unwrap_or(k).to_string(),
                    o["color"].as_str().unwrap_or("#8e8e8e").to_string(),
                ));
            }
        }
    }
    None
}

/// The colour of the panel's thresholds for `v` (the last step at or below it).
fn threshold_colour(p: &Value, v: f64) -> String {
    let mut colour = "#56a64b".to_string();
    if let Some(steps) = p["fieldConfig"]["defaults"]["thresholds"]["steps"].as_array() {
        for s in steps {
            let at = s["value"].as_f64().unwrap_or(f64::NEG_INFINITY);
            if v >= at {
                colour = match s["color"].as_str().unwrap_or("green") {
                    "green" => "#56a64b",
                    "red" => "#e02f44",
                    "orange" => "#ff9830",
                    "yellow" => "#f2cc0c",
                    other => other,
                }
                .to_string();
            }
        }
    }
    colour
}

/// Round axis bounds and ticks covering `lo..hi`, no closer than `min_step` (a panel that shows no decimals gets
/// whole-number ticks). A flat line at or above 0 gets an axis from 0 up.
fn ticks(lo: f64, hi: f64, min_step: f64) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi - lo < 1e-12 {
        let pad = 0.5_f64.max(hi.abs() * 0.1);
        if lo >= 0.0 {
            (0.0, hi + 2.0 * pad)
        } else {
            (lo - pad, hi + pad)
        }
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / 4.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag)
        .max(min_step);
    let first = (lo / step).floor() * step;
    let last = (hi / step).ceil() * step;
    let mut t = Vec::new();
    let mut x = first;
    while x <= last + step * 0.01 {
        t.push(if x.abs() < step * 1e-9 { 0.0 } else { x });
        x += step;
    }
    (first, last, t)
}

fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

struct Area {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Page {
    fn tx(&self, a: &Area, t: f64) -> f64 {
        a.x + (t - self.start) / (self.end - self.start).max(1e-9) * a.w
    }

    /// Time axis ticks (every 30 s, 1 min or more, so that at most ~8 fit) and the markers.
    fn time_axis(&self, out: &mut String, a: &Area) {
        let span = self.end - self.start;
        let step = [15.0, 30.0, 60.0, 120.0, 300.0, 600.0]
            .into_iter()
            .find(|s| span / s <= 8.0)
            .unwrap_or(1200.0);
        let mut t = 0.0;
        while t <= span + 1e-6 {
            let x = self.tx(a, self.start + t);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#eee"/><text x="{x:.1}" y="{:.1}" font-size="9" fill="#666" text-anchor="middle">{}</text>"##,
                a.y,
                a.y + a.h,
                a.y + a.h + 10.0,
                clock(t)
            );
            t += step;
        }
        for (at, label) in &self.markers {
            if *at < self.start || *at > self.end {
                continue;
            }
            let x = self.tx(a, *at);
            let _ = write!(
                out,
                r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#c4162a" stroke-dasharray="3,2"/><text x="{:.1}" y="{:.1}" font-size="8" fill="#c4162a">{}</text>"##,
                a.y,
                a.y + a.h,
                x + 2.0,
                a.y + 8.0,
                esc(label)
            );
        }
    }

    fn timeseries(&self, out: &mut String, p: &Panel, a: &Area) {
        let unit = unit_of(&p.json);
        let dec = decimals_of(&p.json);
        let custom = &p.json["fieldConfig"]["defaults"]["custom"];
        let bars = custom["drawStyle"] == "bars";
        let stacked = custom["stacking"]["mode"] == "normal";
        // Stacking: each series drawn on top of the ones before it, point by point.
        let mut lines: Vec<Vec<(f64, f64)>> = p.lines.iter().map(|l| l.points.clone()).collect();
        if stacked {
            let mut base: std::collections::BTreeMap<i64, f64> = Default::default();
            for l in &mut lines {
                for (t, v) in l.iter_mut() {
                    if v.is_finite() {
                        let b = base.entry((*t * 1000.0) as i64).or_insert(0.0);
                        *b += *v;
                        *v = *b;
                    }
                }
            }
        }
        // Legend rows below the plot.
        let legend_rows = legend_rows(p, a.w);
        let plot = Area {
            x: a.x + 52.0,
            y: a.y + 4.0,
            w: a.w - 60.0,
            h: a.h - 20.0 - legend_rows.len() as f64 * 11.0,
        };
        let finite: Vec<f64> = lines
            .iter()
            .flatten()
            .map(|(_, v)| *v)
            .filter(|v| v.is_finite())
            .collect();
        if finite.is_empty() {
            no_data(out, a, 11.0, 0.0);
            return;
        }
        let lo = finite
            .iter()
            .cloned()
            .fold(f64::INFINITY, f64::min)
            .min(0.0);
        let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let (lo, hi, yt) = ticks(lo, hi, dec.map_or(0.0, |d| 10f64.powi(-(d as i32))));
        let ty = |v: f64| plot.y + plot.h - (v - lo) / (hi - lo) * plot.h;
        for t in &yt {
            let y = ty(*t);
            let _ = write!(
                out,
                r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" font-size="9" fill="#666" text-anchor="end">{}</text>"##,
                plot.x,
                plot.x + plot.w,
                plot.x - 4.0,
                y + 3.0,
                esc(&format(*t, &unit, dec))
            );
        }
        self.time_axis(out, &plot);
        let _ = write!(
            out,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#ccc"/>"##,
            plot.x, plot.y, plot.w, plot.h
        );
        for (i, l) in lines.iter().enumerate().rev() {
            let colour = PALETTE[i % PALETTE.len()];
            if bars {
                for (t, v) in l.iter().filter(|(_, v)| v.is_finite() && *v != 0.0) {
                    let x = self.tx(&plot, *t);
                    let _ = write!(
                        out,
                        r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="{colour}" stroke-width="2"/>"##,
                        ty(0.0_f64.max(lo)),
                        ty(*v)
                    );
                }
                continue;
            }
            let mut d = String::new();
            let mut pen = false;
            for (t, v) in l {
                if !v.is_finite() {
                    pen = false;
                    continue;
                }
                let _ = write!(
                    d,
                    "{}{:.1},{:.1} ",
                    if pen { "L" } else { "M" },
                    self.tx(&plot, *t),
                    ty(*v)
                );
                pen = true;
            }
            let _ = write!(
                out,
                r##"<path d="{}" fill="none" stroke="{colour}" stroke-width="1.4"/>"##,
                d.trim_end()
            );
        }
        self.legend(out, &legend_rows, a.x + 8.0, plot.y + plot.h + 22.0);
    }

    fn legend(&self, out: &mut String, rows: &[Vec<(usize, String)>], x0: f64, y0: f64) {
        for (r, row) in rows.iter().enumerate() {
            let mut x = x0;
            let y = y0 + r as f64 * 11.0;
            for (i, name) in row {
                let colour = PALETTE[i % PALETTE.len()];
                let _ = write!(
                    out,
                    r##"<rect x="{x:.1}" y="{:.1}" width="8" height="3" fill="{colour}"/><text x="{:.1}" y="{y:.1}" font-size="9" fill="#333">{}</text>"##,
                    y - 4.0,
                    x + 11.0,
                    esc(name)
                );
                x += 11.0 + text_width(name, 9.0) + 10.0;
            }
        }
    }

    fn timeline(&self, out: &mut String, p: &Panel, a: &Area) {
        let n = p.lines.len().max(1) as f64;
        let label_w = p
            .lines
            .iter()
            .map(|l| text_width(&l.name, 9.0))
            .fold(40.0, f64::max)
            + 10.0;
        let band = Area {
            x: a.x + label_w,
            y: a.y + 4.0,
            w: a.w - label_w - 8.0,
            h: a.h - 34.0,
        };
        let row_h = band.h / n;
        for (r, l) in p.lines.iter().enumerate() {
            let y = band.y + r as f64 * row_h;
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#333" text-anchor="end">{}</text>"##,
                band.x - 4.0,
                y + row_h / 2.0 + 3.0,
                esc(&l.name)
            );
            // Each point's value holds until the next point (Grafana's state timeline).
            for (k, (t, v)) in l.points.iter().enumerate() {
                if !v.is_finite() {
                    continue;
                }
                let next = l.points.get(k + 1).map(|(t, _)| *t).unwrap_or(self.end);
                let colour = mapping(&p.json, *v)
                    .map(|(_, c)| c)
                    .unwrap_or_else(|| "#8e8e8e".into());
                let x1 = self.tx(&band, *t);
                let x2 = self.tx(&band, next);
                let _ = write!(
                    out,
                    r##"<rect x="{x1:.1}" y="{:.1}" width="{:.2}" height="{:.1}" fill="{colour}"/>"##,
                    y + row_h * 0.08,
                    (x2 - x1).max(0.3),
                    row_h * 0.84
                );
            }
        }
        self.time_axis(out, &band);
        // The mapping's legend.
        let mut x = a.x + 8.0;
        let y = a.y + a.h - 6.0;
        let mut seen = Vec::new();
        for v in 0..10 {
            if let Some((text, colour)) = mapping(&p.json, v as f64) {
                if seen.contains(&text) {
                    continue;
                }
                let _ = write!(
                    out,
                    r##"<rect x="{x:.1}" y="{:.1}" width="8" height="8" fill="{colour}"/><text x="{:.1}" y="{y:.1}" font-size="9" fill="#333">{}</text>"##,
                    y - 7.0,
                    x + 11.0,
                    esc(&text)
                );
                x += 11.0 + text_width(&text, 9.0) + 10.0;
                seen.push(text);
            }
        }
    }

    fn stat(&self, out: &mut String, p: &Panel, a: &Area) {
        let unit = unit_of(&p.json);
        let dec = decimals_of(&p.json);
        let Some((_, v)) = p.values.iter().find(|(_, v)| v.is_finite()) else {
            no_data(out, a, 20.0, 6.0);
            return;
        };
        let (text, colour) = mapping(&p.json, *v)
            .map(|(t, _)| (t, threshold_colour(&p.json, *v)))
            .unwrap_or_else(|| (format(*v, &unit, dec), threshold_colour(&p.json, *v)));
        // Sparkline behind the number.
        if let Some(l) = p.lines.first() {
            let finite: Vec<f64> = l
                .points
                .iter()
                .map(|(_, v)| *v)
                .filter(|v| v.is_finite())
                .collect();
            if finite.len() > 1 {
                let lo = finite.iter().cloned().fold(f64::INFINITY, f64::min);
                let hi = finite.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let span = if hi - lo < 1e-12 { 1.0 } else { hi - lo };
                let area = Area {
                    x: a.x + 4.0,
                    y: a.y + a.h * 0.55,
                    w: a.w - 8.0,
                    h: a.h * 0.4,
                };
                let mut d = String::new();
                let mut pen = false;
                for (t, v) in &l.points {
                    if !v.is_finite() {
                        pen = false;
                        continue;
                    }
                    let y = area.y + area.h - (v - lo) / span * area.h * 0.9;
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        self.tx(&area, *t),
                        y
                    );
                    pen = true;
                }
                let _ = write!(
                    out,
                    r##"<path d="{}" fill="none" stroke="{colour}" stroke-opacity="0.45" stroke-width="1.2"/>"##,
                    d.trim_end()
                );
            }
        }
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" font-size="24" font-weight="bold" fill="{colour}" text-anchor="middle">{}</text>"##,
            a.x + a.w / 2.0,
            a.y + a.h * 0.5,
            esc(&text)
        );
    }

    fn bargauge(&self, out: &mut String, p: &Panel, a: &Area) {
        let unit = unit_of(&p.json);
        let dec = decimals_of(&p.json);
        let rows: Vec<&(String, f64)> = p.values.iter().filter(|(_, v)| v.is_finite()).collect();
        if rows.is_empty() {
            no_data(out, a, 11.0, 0.0);
            return;
        }
        let max = rows.iter().map(|(_, v)| *v).fold(0.0, f64::max).max(1e-9);
        let row_h = ((a.h - 8.0) / rows.len() as f64).min(26.0);
        for (i, (name, v)) in rows.iter().enumerate() {
            let y = a.y + 4.0 + i as f64 * row_h;
            let w = (a.w - 70.0) * (v / max).clamp(0.0, 1.0);
            let _ = write!(
                out,
                r##"<text x="{:.1}" y="{:.1}" font-size="9" fill="#333">{}</text><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#f4f5f5"/><rect x="{:.1}" y="{:.1}" width="{w:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="10" fill="#333" text-anchor="end">{}</text>"##,
                a.x + 8.0,
                y + 9.0,
                esc(name),
                a.x + 8.0,
                y + 11.0,
                a.w - 70.0,
                row_h * 0.4,
                a.x + 8.0,
                y + 11.0,
                row_h * 0.4,
                PALETTE[i % PALETTE.len()],
                a.x + a.w - 8.0,
                y + 11.0 + row_h * 0.4,
                esc(&format(*v, &unit, dec))
            );
        }
    }

    /// The page.
    pub fn svg(&self) -> String {
        let bottom = self
            .panels
            .iter()
            .map(|p| {
                p.json["gridPos"]["y"].as_f64().unwrap_or(0.0)
                    + p.json["gridPos"]["h"].as_f64().unwrap_or(0.0)
            })
            .fold(0.0, f64::max);
        let width = 24.0 * COL;
        let height = HEADER + bottom * ROW + 8.0;
        let mut out = String::new();
        let _ = write!(
            out,
            r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="10" y="26" font-size="18" font-weight="bold" fill="#222">{}</text>
<text x="10" y="46" font-size="11" fill="#555">{}</text>
"##,
            esc(&self.title),
            esc(&self.subtitle)
        );
        for p in &self.panels {
            let g = &p.json["gridPos"];
            let a = Area {
                x: g["x"].as_f64().unwrap_or(0.0) * COL + 4.0,
                y: HEADER + g["y"].as_f64().unwrap_or(0.0) * ROW + 4.0,
                w: g["w"].as_f64().unwrap_or(12.0) * COL - 8.0,
                h: g["h"].as_f64().unwrap_or(8.0) * ROW - 8.0,
            };
            let _ = write!(
                out,
                r##"<g><rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" rx="3" fill="#fbfbfb" stroke="#d8d9da"/><text x="{:.1}" y="{:.1}" font-size="11" font-weight="bold" fill="#222">{}</text>"##,
                a.x,
                a.y,
                a.w,
                a.h,
                a.x + 8.0,
                a.y + 15.0,
                esc(p.json["title"].as_str().unwrap_or(""))
            );
            let inner = Area {
                x: a.x,
                y: a.y + 20.0,
                w: a.w,
                h: a.h - 22.0,
            };
            match p.json["type"].as_str() {
                Some("stat") => self.stat(&mut out, p, &inner),
                Some("state-timeline") => self.timeline(&mut out, p, &inner),
                Some("bargauge") => self.bargauge(&mut out, p, &inner),
                _ => self.timeseries(&mut out, p, &inner),
            }
            out.push_str("</g>\n");
        }
        out.push_str("</svg>\n");
        out
    }
}

/// An estimate of the width of `s` in a sans-serif font of `size` px.
/// "no data" in the middle of a panel's area (`size` px, `dy` below the centre), as Grafana says it.
fn no_data(out: &mut String, a: &Area, size: f64, dy: f64) {
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" font-size="{size}" fill="#999" text-anchor="middle">no data</text>"##,
        a.x + a.w / 2.0,
        a.y + a.h / 2.0 + dy
    );
}

fn text_width(s: &str, size: f64) -> f64 {
    s.chars().count() as f64 * size * 0.55
}

/// The legend's entries in rows that fit `width` (at most 4 rows; the rest are counted).
fn legend_rows(p: &Panel, width: f64) -> Vec<Vec<(usize, String)>> {
    let mut rows: Vec<Vec<(usize, String)>> = vec![vec![]];
    let mut x = 0.0;
    for (i, l) in p.lines.iter().enumerate() {
        let w = 21.0 + text_width(&l.name, 9.0);
        if x + w > width - 16.0 && !rows.last().unwrap().is_empty() {
            if rows.len() == 4 {
                let left = p.lines.len() - i;
                rows.last_mut()
                    .unwrap()
                    .push((i, format!("(+{left} more)")));
                break;
            }
            rows.push(vec![]);
            x = 0.0;
        }
        rows.last_mut().unwrap().push((i, l.name.clone()));
        x += w;
    }
    rows.retain(|r| !r.is_empty());
    rows
}
