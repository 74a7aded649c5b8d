//! Medians over rounds, ratios, targets, and the generated section of docs/performance.md.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::Error;
use crate::cases::CaseId;
use crate::criterion::{self, Estimate};
use crate::harness::Results;
use crate::loadgen::Load;

/// Start marker of the generated section.
pub const BEGIN: &str =
    "<!-- BEGIN scripts/bench (generated: edits between these markers are overwritten) -->";
/// End marker of the generated section.
pub const END: &str = "<!-- END scripts/bench -->";

/// Medians of one case at one load over the rounds.
#[derive(Clone, Debug)]
pub struct Row {
    /// The case.
    pub case: CaseId,
    /// The load.
    pub load: Load,
    /// Median p50, microseconds.
    pub p50: f64,
    /// Median p90.
    pub p90: f64,
    /// Median p99.
    pub p99: f64,
    /// Median requests per second.
    pub rps: f64,
    /// Median CPU microseconds per request, all processes.
    pub cpu: f64,
    /// Largest resident memory seen per proxy process, bytes.
    pub rss: Vec<(String, u64)>,
    /// Median heap allocations per request over the rounds that counted them.
    pub allocs: Option<f64>,
    /// Failed requests over all rounds.
    pub errors: u64,
    /// Rounds measured.
    pub rounds: usize,
}

impl Row {
    /// All proxy processes' resident memory together.
    pub fn rss_total(&self) -> Option<u64> {
        (!self.rss.is_empty()).then(|| self.rss.iter().map(|(_, b)| b).sum())
    }
}

/// The median of `v` (mean of the middle two for an even count); 0 when empty.
pub fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// One row per (case, load) measured.
pub fn summarize(results: &Results) -> Vec<Row> {
    let mut groups: BTreeMap<(Load, CaseId), Vec<&crate::harness::Measurement>> = BTreeMap::new();
    for m in &results.measurements {
        groups.entry((m.load, m.case)).or_default().push(m);
    }
    groups
        .into_iter()
        .map(|((load, case), ms)| {
            let col = |f: fn(&crate::harness::Measurement) -> f64| {
                median(ms.iter().map(|m| f(m)).collect())
            };
            let mut rss: BTreeMap<String, u64> = BTreeMap::new();
            for m in &ms {
                for (name, b) in &m.rss {
                    let e = rss.entry(name.clone()).or_default();
                    *e = (*e).max(*b);
                }
            }
            Row {
                case,
                load,
                p50: col(|m| m.p50_us),
                p90: col(|m| m.p90_us),
                p99: col(|m| m.p99_us),
                rps: col(|m| m.rps),
                cpu: col(|m| m.cpu_us_per_req),
                rss: rss.into_iter().collect(),
                allocs: {
                    let v: Vec<f64> = ms.iter().filter_map(|m| m.allocs_per_req).collect();
                    (!v.is_empty()).then(|| median(v))
                },
                errors: ms.iter().map(|m| m.errors).sum(),
                rounds: ms.len(),
            }
        })
        .collect()
}

/// The case a row is compared with in the tables: the in-process baseline of the same
/// protocol ([`CaseId::same_protocol_baseline`]), else case 2.
pub fn baseline_of(case: CaseId) -> CaseId {
    case.same_protocol_baseline().unwrap_or(CaseId::HyperMtls)
}

/// The row of `case` at `load`.
pub fn row(rows: &[Row], case: CaseId, load: Load) -> Option<&Row> {
    rows.iter().find(|r| r.case == case && r.load == load)
}

fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "—".into(),
    }
}

/// Whether a target is met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Met.
    Met,
    /// Missed.
    Missed,
    /// A figure it needs was not measured.
    NotMeasured,
}

/// A target from the issues with the figure measured for it.
#[derive(Clone, Debug)]
pub struct Target {
    /// Issue numbers.
    pub issue: &'static str,
    /// What is compared.
    pub what: String,
    /// The measured figure (a ratio, or microseconds).
    pub figure: Option<f64>,
    /// The limit.
    pub limit: f64,
    /// `true`: figure must be at most the limit; `false`: at least.
    pub at_most: bool,
    /// Unit suffix for figure and limit (`x` or ` µs`).
    pub unit: &'static str,
}

impl Target {
    /// The verdict.
    pub fn verdict(&self) -> Verdict {
        match self.figure {
            None => Verdict::NotMeasured,
            Some(f) if (self.at_most && f <= self.limit) || (!self.at_most && f >= self.limit) => {
                Verdict::Met
            }
            Some(_) => Verdict::Missed,
        }
    }
}

const RATE: Load = Load::Rate {
    rps: 2000,
    connections: 16,
};
const SAT: Load = Load::Saturation { connections: 32 };

/// The targets of issues #5, #6, #7, #9, #17 and #19, evaluated on `rows` and `estimates`.
pub fn targets(rows: &[Row], estimates: &[Estimate]) -> Vec<Target> {
    let get = |case, load, f: fn(&Row) -> f64| row(rows, case, load).filter(|r| r.ok()).map(f);
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let rss = |case| {
        rows.iter()
            .filter(|r| r.case == case)
            .filter_map(Row::rss_total)
            .max()
            .map(|b| b as f64)
    };
    let mut t = Vec::new();
    // Each in-process mesh case against the baseline of its own protocol (issue 19).
    for (mesh, base) in [
        (CaseId::Mesh, CaseId::HyperMtlsH1),
        (CaseId::MeshH2, CaseId::HyperMtls),
    ] {
        let (m, b) = (mesh.number(), base.number());
        let ratio = |what: &str, load, f: fn(&Row) -> f64, limit, at_most| Target {
            issue: "#5 #19",
            what: format!("case {m} {what} / case {b}"),
            figure: div(get(mesh, load, f), get(base, load, f)),
            limit,
            at_most,
            unit: "x",
        };
        t.push(ratio("p50 at 2,000 rps", RATE, |r| r.p50, 1.15, true));
        t.push(ratio("p99 at 2,000 rps", RATE, |r| r.p99, 1.3, true));
        t.push(ratio("p50 at saturation", SAT, |r| r.p50, 1.15, true));
        t.push(ratio("p99 at saturation", SAT, |r| r.p99, 1.3, true));
        t.push(ratio(
            "throughput at saturation",
            SAT,
            |r| r.rps,
            0.85,
            false,
        ));
        t.push(Target {
            issue: "#19",
            what: format!("case {m} CPU per request at saturation - case {b}"),
            figure: get(mesh, SAT, |r| r.cpu)
                .zip(get(base, SAT, |r| r.cpu))
                .map(|(m, b)| m - b),
            limit: 1.0,
            at_most: true,
            unit: " µs",
        });
        t.push(Target {
            issue: "#19",
            what: format!("case {m} allocations per request at saturation - case {b}"),
            figure: row(rows, mesh, SAT)
                .and_then(|r| r.allocs)
                .zip(row(rows, base, SAT).and_then(|r| r.allocs))
                .map(|(m, b)| m - b),
            limit: 10.0,
            at_most: true,
            unit: " allocs",
        });
    }
    t.extend([
        Target {
            issue: "#19",
            what: "proxy pair throughput at saturation / Envoy pair".into(),
            figure: div(
                get(CaseId::ProxyPair, SAT, |r| r.rps),
                get(CaseId::EnvoyPair, SAT, |r| r.rps),
            ),
            limit: 3.0,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#19",
            what: "proxy pair p99 at 2,000 rps / Envoy pair".into(),
            figure: div(
                get(CaseId::ProxyPair, RATE, |r| r.p99),
                get(CaseId::EnvoyPair, RATE, |r| r.p99),
            ),
            limit: 0.3,
            at_most: true,
            unit: "x",
        },
        Target {
            issue: "#19",
            what: "proxy pair resident memory (both proxies, largest seen) / Envoy pair".into(),
            figure: div(rss(CaseId::ProxyPair), rss(CaseId::EnvoyPair)),
            limit: 0.15,
            at_most: true,
            unit: "x",
        },
        Target {
            issue: "#9",
            what: "in-process mesh throughput at saturation / Envoy pair".into(),
            figure: div(
                get(CaseId::Mesh, SAT, |r| r.rps),
                get(CaseId::EnvoyPair, SAT, |r| r.rps),
            ),
            limit: 5.0,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#9",
            what: "proxy pair throughput at saturation / Envoy pair".into(),
            figure: div(
                get(CaseId::ProxyPair, SAT, |r| r.rps),
                get(CaseId::EnvoyPair, SAT, |r| r.rps),
            ),
            limit: 1.5,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#9",
            what: "proxy pair p99 at 2,000 rps / Envoy pair".into(),
            figure: div(
                get(CaseId::ProxyPair, RATE, |r| r.p99),
                get(CaseId::EnvoyPair, RATE, |r| r.p99),
            ),
            limit: 0.7,
            at_most: true,
            unit: "x",
        },
        Target {
            issue: "#17",
            what: "gRPC mesh.channel p50 at 2,000 rps / case 6 (tonic mTLS)".into(),
            figure: div(
                get(CaseId::GrpcMesh, RATE, |r| r.p50),
                get(CaseId::GrpcTonicMtls, RATE, |r| r.p50),
            ),
            limit: 1.10,
            at_most: true,
            unit: "x",
        },
        Target {
            issue: "#17",
            what: "gRPC mesh.channel throughput at saturation / case 6 (tonic mTLS)".into(),
            figure: div(
                get(CaseId::GrpcMesh, SAT, |r| r.rps),
                get(CaseId::GrpcTonicMtls, SAT, |r| r.rps),
            ),
            limit: 0.90,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#17",
            what: "gRPC mesh.channel throughput at saturation / case 10 (grpc-go pair)".into(),
            figure: div(
                get(CaseId::GrpcMesh, SAT, |r| r.rps),
                get(CaseId::GrpcGoPair, SAT, |r| r.rps),
            ),
            limit: 1.5,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#18",
            what: "HBONE in-process p50 at 2,000 rps / case 2 (direct mTLS)".into(),
            figure: div(
                get(CaseId::Hbone, RATE, |r| r.p50),
                get(CaseId::HyperMtls, RATE, |r| r.p50),
            ),
            limit: 1.2,
            at_most: true,
            unit: "x",
        },
        Target {
            issue: "#18",
            what: "HBONE in-process throughput at saturation / case 2 (direct mTLS)".into(),
            figure: div(
                get(CaseId::Hbone, SAT, |r| r.rps),
                get(CaseId::HyperMtls, SAT, |r| r.rps),
            ),
            limit: 0.8,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#18",
            what: "HBONE in-process throughput at saturation / case 12 (Envoy HBONE pair)".into(),
            figure: div(
                get(CaseId::Hbone, SAT, |r| r.rps),
                get(CaseId::EnvoyHbone, SAT, |r| r.rps),
            ),
            limit: 3.0,
            at_most: false,
            unit: "x",
        },
        Target {
            issue: "#9",
            what: "proxy pair resident memory (both proxies, largest seen) / Envoy pair".into(),
            figure: div(rss(CaseId::ProxyPair), rss(CaseId::EnvoyPair)),
            limit: 0.25,
            at_most: true,
            unit: "x",
        },
    ]);
    let cost = |layered: &str, bare: &str| match (
        criterion::median(estimates, layered),
        criterion::median(estimates, bare),
    ) {
        (Some(a), Some(b)) => Some((a - b) / 1000.0),
        _ => None,
    };
    t.push(Target {
        issue: "#6",
        what: "resilience layers per request, nothing failing (criterion `resilience`)".into(),
        figure: cost(
            "resilience/rate limit + fault + timeout + retry + circuit breaker",
            "resilience/bare service",
        ),
        limit: 3.0,
        at_most: true,
        unit: " µs",
    });
    for (name, id) in [
        (
            "source metrics",
            "telemetry_per_request/istio_metrics_source",
        ),
        (
            "destination metrics",
            "telemetry_per_request/istio_metrics_destination",
        ),
        (
            "trace + destination metrics",
            "telemetry_per_request/trace_and_istio_metrics_destination",
        ),
    ] {
        t.push(Target {
            issue: "#7",
            what: format!("telemetry per request, {name} (criterion `telemetry`, on - off)"),
            figure: cost(id, "telemetry_per_request/off"),
            limit: 2.0,
            at_most: true,
            unit: " µs",
        });
    }
    t
}

impl Row {
    /// Whether the row has numbers (some request succeeded).
    pub fn ok(&self) -> bool {
        self.rps > 0.0
    }
}

fn fmt_figure(v: f64, unit: &str) -> String {
    if unit == "x" {
        format!("{v:.2}x")
    } else {
        format!("{v:.2}{unit}")
    }
}

/// The generated markdown section (between [`BEGIN`] and [`END`]).
pub fn markdown(results: &Results, estimates: &[Estimate], svg: Option<&str>) -> String {
    let rows = summarize(results);
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "## Mesh, baseline and Envoy, one run (`scripts/bench`)\n"
    );
    let when = format_unix(results.started_unix);
    let la = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
    let _ = writeln!(
        s,
        "Measured {when} by `scripts/bench` in one invocation: {} rounds, {:.1} s per case and \
         load (after a warm-up on the same connections), cases interleaved (their order rotates \
         every round); medians over the rounds. {} logical CPUs shared with other work; 1-minute \
         load average {} before, {} after ({:.0} s wall-clock).\n",
        results.rounds,
        results.duration_secs,
        results.cpus,
        la(results.load_average.0),
        la(results.load_average.1),
        results.wall_secs,
    );
    let _ = writeln!(
        s,
        "Every case serves the same answer: `GET /payload` -> 200 with a 1 KiB body, checked by \
         the client. Latency is from the intended send time when a connection was still busy at \
         its slot (open loop, corrected for coordinated omission), from the send otherwise. \
         CPU per request is all CPU time of all processes involved (the harness process with \
         load generator and app, plus the proxies) divided by successful requests; allocations \
         per request likewise count every heap allocation of those processes (the harness's \
         counting allocator, the proxies' `count-allocs` build; \"—\" where a process is not \
         counted: Envoy, grpc-go). RSS is the proxies' resident memory (largest seen, both proxies together). Ratios \"vs base\" \
         compare each case with the in-process baseline of its own protocol (column \
         \"baseline\": case 8 for HTTP/1.1, case 2 for HTTP/2, case 6 for gRPC; case 2 for \
         the others); the Envoy pair's own figures are its row.\n"
    );
    let _ = writeln!(s, "Cases:\n");
    for c in &results.cases {
        match (&c.description, &c.not_measured) {
            (Some(d), _) => {
                let _ = writeln!(s, "{}. **{}**: {d}.", c.case.number(), c.case.label());
            }
            (None, Some(why)) => {
                let _ = writeln!(
                    s,
                    "{}. **{}**: **not measured**: {why}.",
                    c.case.number(),
                    c.case.label()
                );
            }
            (None, None) => {}
        }
    }
    let _ = writeln!(s);
    let loads: Vec<Load> = {
        let mut l: Vec<Load> = rows.iter().map(|r| r.load).collect();
        l.dedup();
        l
    };
    for load in loads {
        let envoy = row(&rows, CaseId::EnvoyPair, load).filter(|r| r.ok());
        let _ = writeln!(s, "### {load}\n");
        let _ = writeln!(
            s,
            "| case | p50 | p90 | p99 | rps | CPU/req | proxy RSS | baseline | p50 vs base | p99 vs base | rps vs base | CPU/req - base | allocs/req | allocs/req - base | p50 vs Envoy | p99 vs Envoy | rps vs Envoy | errors |"
        );
        let _ = writeln!(
            s,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        );
        for r in rows.iter().filter(|r| r.load == load) {
            let base_id = baseline_of(r.case);
            let base = row(&rows, base_id, load).filter(|r| r.ok());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {:.0} | {:.1} µs | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                r.case,
                us(r.p50),
                us(r.p90),
                us(r.p99),
                r.rps,
                r.cpu,
                r.rss_total().map_or("—".into(), mib),
                base_id.number(),
                ratio(r.p50, base.map(|b| b.p50)),
                ratio(r.p99, base.map(|b| b.p99)),
                ratio(r.rps, base.map(|b| b.rps)),
                base.map_or("—".into(), |b| format!("{:+.1} µs", r.cpu - b.cpu)),
                r.allocs.map_or("—".into(), |a| format!("{a:.1}")),
                r.allocs
                    .zip(base.and_then(|b| b.allocs))
                    .map_or("—".into(), |(a, b)| format!("{:+.1}", a - b)),
                ratio(r.p50, envoy.map(|b| b.p50)),
                ratio(r.p99, envoy.map(|b| b.p99)),
                ratio(r.rps, envoy.map(|b| b.rps)),
                r.errors,
            );
        }
        let _ = writeln!(s);
    }
    if let Some(svg) = svg {
        let _ = writeln!(
            s,
            "![latency, throughput and CPU per request by case]({svg})\n"
        );
    }
    let _ = writeln!(s, "### Targets\n");
    let _ = writeln!(s, "| issue | target | measured | limit | |");
    let _ = writeln!(s, "|---|---|---|---|---|");
    for t in targets(&rows, estimates) {
        let verdict = match t.verdict() {
            Verdict::Met => "met",
            Verdict::Missed => "**missed**",
            Verdict::NotMeasured => "not measured",
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} {} | {verdict} |",
            t.issue,
            t.what,
            t.figure.map_or("—".into(), |f| fmt_figure(f, t.unit)),
            if t.at_most { "<=" } else { ">=" },
            fmt_figure(t.limit, t.unit),
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "### Micro-benchmarks in the same invocation (criterion)\n"
    );
    if estimates.is_empty() {
        let _ = writeln!(s, "Not run in this invocation.\n");
    } else {
        let _ = writeln!(s, "| benchmark | median | 95% interval |");
        let _ = writeln!(s, "|---|---|---|");
        for e in estimates {
            let _ = writeln!(
                s,
                "| `{}` | {} | {} – {} |",
                e.id,
                ns(e.median_ns),
                ns(e.interval_ns.0),
                ns(e.interval_ns.1)
            );
        }
        let _ = writeln!(s);
    }
    let _ = writeln!(s, "{END}");
    s
}

fn ns(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} µs", v / 1000.0)
    } else {
        format!("{v:.0} ns")
    }
}

/// `YYYY-MM-DD HH:MM UTC` from seconds since the epoch (civil-from-days, proleptic
/// Gregorian).
pub fn format_unix(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

/// Replaces the generated section of the markdown file at `path` (or appends it when the
/// markers are absent); the rest of the file is kept.
pub fn write_section(path: &Path, section: &str) -> Result<(), Error> {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = replace_section(&old, section)?;
    std::fs::write(path, new)?;
    Ok(())
}

fn replace_section(old: &str, section: &str) -> Result<String, Error> {
    match (old.find(BEGIN), old.find(END)) {
        (Some(b), Some(e)) if b < e => {
            let mut out = String::with_capacity(old.len() + section.len());
            out.push_str(&old[..b]);
            out.push_str(section.trim_end());
            out.push_str(&old[e + END.len()..]);
            Ok(out)
        }
        (None, None) => {
            let mut out = old.trim_end().to_owned();
            if !out.is_empty() {
                out.push_str("\n\n");
            }
            out.push_str(section);
            Ok(out)
        }
        _ => Err(
            "docs: the generated-section markers are broken (one missing or out of order)".into(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(vec![]), 0.0);
    }

    #[test]
    fn section_is_replaced_and_the_rest_kept() {
        let doc = format!("# Perf\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Later\ntext\n");
        let new = replace_section(&doc, &format!("{BEGIN}\nnew\n{END}\n")).unwrap();
        assert_eq!(
            new,
            format!("# Perf\n\nintro\n\n{BEGIN}\nnew\n{END}\n\n## Later\ntext\n")
        );
        let appended = replace_section("# Perf\n", &format!("{BEGIN}\nx\n{END}\n")).unwrap();
        assert_eq!(appended, format!("# Perf\n\n{BEGIN}\nx\n{END}\n"));
        assert!(replace_section(&format!("{END}\n{BEGIN}\n"), "s").is_err());
        assert!(replace_section(&format!("{BEGIN}\n"), "s").is_err());
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(format_unix(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_unix(1_795_000_000), "2026-11-18 11:06 UTC");
    }

    #[test]
    fn target_verdicts() {
        let t = |figure, at_most| Target {
            issue: "#0",
            what: String::new(),
            figure,
            limit: 1.0,
            at_most,
            unit: "x",
        };
        assert_eq!(t(Some(0.9), true).verdict(), Verdict::Met);
        assert_eq!(t(Some(1.1), true).verdict(), Verdict::Missed);
        assert_eq!(t(Some(1.1), false).verdict(), Verdict::Met);
        assert_eq!(t(None, false).verdict(), Verdict::NotMeasured);
    }
}
