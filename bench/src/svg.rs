//! A hand-written SVG plot of the harness results: three bar panels (latency at 2,000 rps,
//! throughput at saturation, CPU per request at 2,000 rps), one bar per case.

use std::fmt::Write as _;

use crate::cases::CaseId;
use crate::loadgen::Load;
use crate::report::{Row, row};

const W: f64 = 1080.0;
const H: f64 = 380.0;
const COLORS: [&str; 5] = ["#8c8c8c", "#4c72b0", "#dd8452", "#55a868", "#c44e52"];

struct Bar {
    label: String,
    values: Vec<f64>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis maximum at or above `v`.
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

#[allow(clippy::too_many_arguments)]
fn panel(s: &mut String, x0: f64, title: &str, unit: &str, series: &[&str], bars: &[Bar], pw: f64) {
    let (top, bottom, left) = (50.0, H - 90.0, x0 + 50.0);
    let plot_h = bottom - top;
    let plot_w = pw - 70.0;
    let max = nice_max(
        bars.iter()
            .flat_map(|b| b.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="24" font-size="14" font-weight="bold" text-anchor="middle">{}</text>"#,
        x0 + pw / 2.0,
        esc(title)
    );
    for i in 0..=4 {
        let v = max * f64::from(i) / 4.0;
        let y = bottom - plot_h * f64::from(i) / 4.0;
        let _ = writeln!(
            s,
            r##"<line x1="{left:.0}" y1="{y:.1}" x2="{:.0}" y2="{y:.1}" stroke="#ddd"/><text x="{:.0}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 4.0,
            y + 3.0,
            fmt_tick(v)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{:.0}" y="{:.0}" font-size="10" transform="rotate(-90 {:.0} {:.0})" text-anchor="middle">{}</text>"#,
        x0 + 10.0,
        top + plot_h / 2.0,
        x0 + 10.0,
        top + plot_h / 2.0,
        esc(unit)
    );
    let groups = bars.len().max(1) as f64;
    let gw = plot_w / groups;
    let nser = series.len().max(1) as f64;
    let bw = (gw * 0.7) / nser;
    for (gi, b) in bars.iter().enumerate() {
        let gx = left + gw * gi as f64 + gw * 0.15;
        for (si, v) in b.values.iter().enumerate() {
            let h = if max > 0.0 { plot_h * v / max } else { 0.0 };
            let color = if nser > 1.0 {
                COLORS[(si * 2 + 1) % COLORS.len()]
            } else {
                COLORS[gi % COLORS.len()]
            };
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {}</title></rect>"#,
                gx + bw * si as f64,
                bottom - h,
                bw - 1.0,
                h,
                esc(&b.label),
                fmt_tick(*v)
            );
        }
        let cx = gx + gw * 0.35;
        let _ = writeln!(
            s,
            r#"<text x="{cx:.1}" y="{:.0}" font-size="10" text-anchor="end" transform="rotate(-35 {cx:.1} {:.0})">{}</text>"#,
            bottom + 14.0,
            bottom + 14.0,
            esc(&b.label)
        );
    }
    if series.len() > 1 {
        for (si, name) in series.iter().enumerate() {
            let lx = left + 10.0 + 70.0 * si as f64;
            let _ = writeln!(
                s,
                r#"<rect x="{lx:.0}" y="36" width="10" height="10" fill="{}"/><text x="{:.0}" y="45" font-size="10">{}</text>"#,
                COLORS[(si * 2 + 1) % COLORS.len()],
                lx + 14.0,
                esc(name)
            );
        }
    }
}

fn fmt_tick(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The plot of `rows` as an SVG document.
pub fn plot(rows: &[Row]) -> String {
    let rate = Load::Rate {
        rps: 2000,
        connections: 16,
    };
    let sat = Load::Saturation { connections: 32 };
    let measured = |load| {
        CaseId::ALL
            .iter()
            .filter_map(move |&c| row(rows, c, load).filter(|r| r.ok()))
            .collect::<Vec<_>>()
    };
    let label = |r: &Row| format!("{}. {}", r.case.number(), r.case.label());
    let latency: Vec<Bar> = measured(rate)
        .into_iter()
        .map(|r| Bar {
            label: label(r),
            values: vec![r.p50, r.p99],
        })
        .collect();
    let throughput: Vec<Bar> = measured(sat)
        .into_iter()
        .map(|r| Bar {
            label: label(r),
            values: vec![r.rps],
        })
        .collect();
    let cpu: Vec<Bar> = measured(rate)
        .into_iter()
        .map(|r| Bar {
            label: label(r),
            values: vec![r.cpu],
        })
        .collect();
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W:.0}" height="{H:.0}" viewBox="0 0 {W:.0} {H:.0}" font-family="sans-serif">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let pw = W / 3.0;
    panel(
        &mut s,
        0.0,
        "Latency at 2,000 rps, 16 conns",
        "microseconds",
        &["p50", "p99"],
        &latency,
        pw,
    );
    panel(
        &mut s,
        pw,
        "Throughput at saturation, 32 conns",
        "requests per second",
        &["rps"],
        &throughput,
        pw,
    );
    panel(
        &mut s,
        2.0 * pw,
        "CPU per request at 2,000 rps",
        "CPU microseconds (all processes)",
        &["cpu"],
        &cpu,
        pw,
    );
    let _ = writeln!(s, "</svg>");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_axis_maxima() {
        assert_eq!(nice_max(0.0), 1.0);
        assert_eq!(nice_max(7.0), 10.0);
        assert_eq!(nice_max(180.0), 200.0);
        assert_eq!(nice_max(2300.0), 2500.0);
    }

    #[test]
    fn plot_has_a_bar_per_measured_case() {
        let mk = |case, load, v| Row {
            case,
            load,
            p50: v,
            p90: v,
            p99: v * 2.0,
            rps: v,
            cpu: v,
            rss: vec![],
            allocs: None,
            errors: 0,
            rounds: 1,
        };
        let rate = Load::Rate {
            rps: 2000,
            connections: 16,
        };
        let rows = vec![
            mk(CaseId::HyperH1, rate, 100.0),
            mk(CaseId::Mesh, rate, 150.0),
        ];
        let svg = plot(&rows);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // Latency: 2 cases x (p50, p99); CPU: 2 cases; background: 1; legend: 2.
        assert_eq!(svg.matches("<rect").count(), 1 + 4 + 2 + 2);
        assert!(svg.contains("3. in-process mesh"));
    }
}
