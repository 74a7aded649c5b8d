//! `/graph.json` and `/graph`: the service graph this process sees, computed from its own
//! Istio standard metrics (`istio_requests_total`, `istio_request_duration_milliseconds`),
//! the way Kiali computes its graph from Prometheus.
//!
//! * An edge is a (source workload, destination service, destination workload) triple.
//!   Series reported by the destination are preferred (as Kiali does): they know the
//!   callee exactly and whether the connection was mTLS. Source-reported series fill in
//!   calls whose caller the destination cannot name (callers sharing a service account are
//!   `unknown` to it) and calls no destination in this process reported; `reporter` says
//!   which was used.
//! * `rps` and `error_rps` are rates over the last window of at least one second between
//!   two reads of `/graph.json` (0 until two reads are that far apart); `requests`, `errors`
//!   and `p99_ms` are cumulative since the process started, so they can be checked against
//!   `/stats/prometheus`. An error is a response code `5xx` or `0` (no response).
//! * `mtls` is `true` when every destination-reported request of the edge had
//!   `connection_security_policy="mutual_tls"`, `false` when any had `none`, `null` when
//!   no destination in this process reported it (the source reporter does not know, as in
//!   Istio).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The graph page: static HTML with inline CSS and JS, no external assets.
pub(crate) const PAGE: &str = include_str!("graph.html");

const REQUESTS: &str = "istio_requests_total";
const DURATION_BUCKET: &str = "istio_request_duration_milliseconds_bucket";
/// Rates are computed over windows at least this long.
const WINDOW: Duration = Duration::from_secs(1);

/// One edge's identity: the labels Kiali's workload graph groups by.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct EdgeKey {
    source_workload: String,
    source_namespace: String,
    service: String,
    service_namespace: String,
    destination_workload: String,
    destination_namespace: String,
}

/// What one reporter's series say about an edge.
#[derive(Clone, Debug, Default)]
struct EdgeStats {
    requests: f64,
    errors: f64,
    mtls_requests: f64,
    plain_requests: f64,
    /// Cumulative bucket counts by upper bound (`f64::INFINITY` for `+Inf`).
    buckets: BTreeMap<OrderedBound, f64>,
    source_app: String,
    source_version: String,
    destination_app: String,
    destination_version: String,
    /// `destination` or `source`: whose series these are.
    reporter: &'static str,
}

/// A bucket bound with a total order (bounds are never NaN: NaN bounds are skipped).
#[derive(Clone, Copy, Debug)]
struct OrderedBound(f64);
impl PartialEq for OrderedBound {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}
impl Eq for OrderedBound {}
impl PartialOrd for OrderedBound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrderedBound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// The previous read, for rates.
#[derive(Debug, Default)]
struct Baseline {
    at: Option<Instant>,
    totals: BTreeMap<EdgeKey, (f64, f64)>,
    rates: BTreeMap<EdgeKey, (f64, f64)>,
}

/// Rate state shared by every read of `/graph.json` on one admin server.
#[derive(Debug, Default)]
pub(crate) struct GraphState {
    baseline: Mutex<Baseline>,
}

impl GraphState {
    /// The graph JSON for `exposition` (Prometheus text format), read at `now`.
    pub(crate) fn read(&self, exposition: &str, now: Instant) -> Value {
        let edges = edges(exposition);
        let totals: BTreeMap<EdgeKey, (f64, f64)> = edges
            .iter()
            .map(|(k, s)| (k.clone(), (s.requests, s.errors)))
            .collect();
        let rates = {
            let mut b = self.baseline.lock().unwrap_or_else(|e| e.into_inner());
            match b.at {
                Some(at) if now.duration_since(at) >= WINDOW => {
                    let secs = now.duration_since(at).as_secs_f64();
                    b.rates = totals
                        .iter()
                        .map(|(k, (req, err))| {
                            let (req0, err0) = b.totals.get(k).copied().unwrap_or_default();
                            // A counter that went down was reset: count from zero.
                            let d =
                                |now: f64, then: f64| if now >= then { now - then } else { now };
                            (k.clone(), (d(*req, req0) / secs, d(*err, err0) / secs))
                        })
                        .collect();
                    b.at = Some(now);
                    b.totals = totals;
                }
                Some(_) => {}
                None => {
                    b.at = Some(now);
                    b.totals = totals;
                }
            }
            b.rates.clone()
        };
        render(&edges, &rates)
    }
}

fn render(edges: &BTreeMap<EdgeKey, EdgeStats>, rates: &BTreeMap<EdgeKey, (f64, f64)>) -> Value {
    let mut workloads: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    let mut services: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    let id = |w: &str, ns: &str| format!("{w}.{ns}");
    let mut out = Vec::new();
    for (k, s) in edges {
        workloads
            .entry((k.source_workload.clone(), k.source_namespace.clone()))
            .or_insert_with(|| (s.source_app.clone(), s.source_version.clone()));
        workloads
            .entry((
                k.destination_workload.clone(),
                k.destination_namespace.clone(),
            ))
            .or_insert_with(|| (s.destination_app.clone(), s.destination_version.clone()));
        services
            .entry((k.service.clone(), k.service_namespace.clone()))
            .or_default()
            .insert(id(&k.destination_workload, &k.destination_namespace));
        let (rps, error_rps) = rates.get(k).copied().unwrap_or_default();
        let mtls = if s.mtls_requests + s.plain_requests == 0.0 {
            Value::Null
        } else {
            Value::Bool(s.plain_requests == 0.0)
        };
        out.push(json!({
            "source": id(&k.source_workload, &k.source_namespace),
            "target": id(&k.destination_workload, &k.destination_namespace),
            "service": k.service,
            "service_namespace": k.service_namespace,
            "requests": s.requests,
            "errors": s.errors,
            "rps": rps,
            "error_rps": error_rps,
            "p99_ms": quantile(0.99, &s.buckets),
            "mtls": mtls,
            "reporter": s.reporter,
        }));
    }
    json!({
        "workloads": workloads.into_iter().map(|((w, ns), (app, version))| json!({
            "id": id(&w, &ns), "workload": w, "namespace": ns, "app": app, "version": version,
        })).collect::<Vec<_>>(),
        "services": services.into_iter().map(|((name, ns), wls)| json!({
            "name": name, "namespace": ns, "workloads": wls,
        })).collect::<Vec<_>>(),
        "edges": out,
    })
}

/// Prometheus' `histogram_quantile` over cumulative buckets: linear interpolation inside
/// the bucket holding the rank; the highest finite bound when it falls in `+Inf`.
fn quantile(q: f64, buckets: &BTreeMap<OrderedBound, f64>) -> Option<f64> {
    let total = *buckets.get(&OrderedBound(f64::INFINITY))?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let (mut lower, mut below) = (0.0, 0.0);
    for (&OrderedBound(upper), &count) in buckets {
        if count >= rank {
            if upper.is_infinite() {
                return Some(lower);
            }
            if count == below {
                return Some(upper);
            }
            return Some(lower + (upper - lower) * (rank - below) / (count - below));
        }
        (lower, below) = (upper, count);
    }
    Some(lower)
}

/// The edges of both reporters, destination-reported ones preferred.
fn edges(exposition: &str) -> BTreeMap<EdgeKey, EdgeStats> {
    let mut by_reporter: [BTreeMap<EdgeKey, EdgeStats>; 2] = Default::default();
    for line in exposition.lines() {
        let Some((name, labels, value)) = parse_line(line) else {
            continue;
        };
        if name != REQUESTS && name != DURATION_BUCKET {
            continue;
        }
        let get = |k: &str| labels.get(k).map(String::as_str).unwrap_or("unknown");
        let slot = match get("reporter") {
            "destination" => 0,
            "source" => 1,
            _ => continue,
        };
        let key = EdgeKey {
            source_workload: get("source_workload").into(),
            source_namespace: get("source_workload_namespace").into(),
            service: get("destination_service_name").into(),
            service_namespace: get("destination_service_namespace").into(),
            destination_workload: get("destination_workload").into(),
            destination_namespace: get("destination_workload_namespace").into(),
        };
        let e = by_reporter[slot].entry(key).or_default();
        e.reporter = ["destination", "source"][slot];
        if e.source_app.is_empty() {
            e.source_app = get("source_app").into();
            e.source_version = get("source_version").into();
            e.destination_app = get("destination_app").into();
            e.destination_version = get("destination_version").into();
        }
        if name == REQUESTS {
            e.requests += value;
            let code = get("response_code");
            if code == "0" || code.starts_with('5') {
                e.errors += value;
            }
            if slot == 0 {
                match get("connection_security_policy") {
                    "mutual_tls" => e.mtls_requests += value,
                    _ => e.plain_requests += value,
                }
            }
        } else if let Some(le) = labels.get("le").and_then(|b| parse_value(b))
            && !le.is_nan()
        {
            *e.buckets.entry(OrderedBound(le)).or_default() += value;
        }
    }
    let [dest, source] = by_reporter;
    merge(dest, source)
}

/// One edge per call: destination-reported when the destination knows the caller,
/// source-reported when only the caller knows (callers sharing a service account are
/// `unknown` to the destination, as in Istio without metadata exchange; such callers'
/// edges take the destination's mTLS view of its `unknown` callers).
fn merge(
    dest: BTreeMap<EdgeKey, EdgeStats>,
    source: BTreeMap<EdgeKey, EdgeStats>,
) -> BTreeMap<EdgeKey, EdgeStats> {
    let callee = |k: &EdgeKey| {
        (
            k.service.clone(),
            k.service_namespace.clone(),
            k.destination_workload.clone(),
            k.destination_namespace.clone(),
        )
    };
    let (known, unknown): (BTreeMap<_, _>, BTreeMap<_, _>) = dest
        .into_iter()
        .partition(|(k, _)| k.source_workload != "unknown");
    let unknown_callers: BTreeMap<_, _> = unknown.iter().map(|(k, s)| (callee(k), s)).collect();
    let seen: BTreeSet<(String, String, String)> = known
        .keys()
        .map(|k| {
            (
                k.source_workload.clone(),
                k.source_namespace.clone(),
                k.service.clone(),
            )
        })
        .collect();
    let mut out = known;
    let mut covered = BTreeSet::new();
    for (k, mut s) in source {
        let caller = (
            k.source_workload.clone(),
            k.source_namespace.clone(),
            k.service.clone(),
        );
        if seen.contains(&caller) {
            continue;
        }
        if let Some(u) = unknown_callers.get(&callee(&k)) {
            s.mtls_requests = u.mtls_requests;
            s.plain_requests = u.plain_requests;
            covered.insert(callee(&k));
        }
        out.insert(k, s);
    }
    for (k, s) in unknown {
        if !covered.contains(&callee(&k)) {
            out.insert(k, s);
        }
    }
    out
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

/// One sample line of the text format: `name{k="v",...} value [timestamp]`.
fn parse_line(line: &str) -> Option<(&str, BTreeMap<String, String>, f64)> {
    if line.starts_with('#') {
        return None;
    }
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let (labels, rest) = match line[name_end..].strip_prefix('{') {
        Some(body) => parse_labels(body)?,
        None => (BTreeMap::new(), &line[name_end..]),
    };
    let value = parse_value(rest.split_whitespace().next()?)?;
    Some((name, labels, value))
}

/// `k="v",...}` (escapes `\\`, `\"`, `\n`) and what follows the `}`.
fn parse_labels(body: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut s = body;
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, after) = s.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    c => value.push(c),
                },
                (i, '"') => break i,
                (_, c) => value.push(c),
            }
        };
        labels.insert(key.trim().to_string(), value);
        s = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(reporter: &str, src: &str, dst: &str, code: &str, tls: &str, n: u32) -> String {
        let labels = format!(
            "reporter=\"{reporter}\",source_workload=\"{src}\",source_workload_namespace=\"default\",\
             source_app=\"{src}\",destination_workload=\"{dst}\",destination_workload_namespace=\"default\",\
             destination_service_name=\"svc\",destination_service_namespace=\"default\",\
             connection_security_policy=\"{tls}\",response_code=\"{code}\""
        );
        let mut s = format!("istio_requests_total{{{labels}}} {n}\n");
        // n requests: 90% at or under 5 ms, the rest under 100 ms.
        for (le, c) in [("1", 0), ("5", n * 9 / 10), ("100", n), ("+Inf", n)] {
            s += &format!("{DURATION_BUCKET}{{{labels},le=\"{le}\"}} {c}\n");
        }
        s
    }

    #[test]
    fn parses_escaped_labels_and_values() {
        let (name, labels, v) =
            parse_line(r#"m_total{a="x\"y",b="",c="z\\"} 12.5 1700000000"#).unwrap();
        assert_eq!(name, "m_total");
        assert_eq!(labels["a"], "x\"y");
        assert_eq!(labels["b"], "");
        assert_eq!(labels["c"], "z\\");
        assert_eq!(v, 12.5);
        assert_eq!(parse_line("up 1").unwrap().2, 1.0);
        assert!(parse_line("# TYPE up gauge").is_none());
        assert!(parse_line(r#"broken{a="x} 1"#).is_none());
    }

    #[test]
    fn quantile_interpolates_like_prometheus() {
        let b: BTreeMap<_, _> = [(5.0, 90.0), (100.0, 100.0), (f64::INFINITY, 100.0)]
            .into_iter()
            .map(|(k, v)| (OrderedBound(k), v))
            .collect();
        // rank 99 lies 9/10 of the way through (5, 100]: 5 + 95 * 0.9.
        assert!((quantile(0.99, &b).unwrap() - 90.5).abs() < 1e-9);
        assert!((quantile(0.5, &b).unwrap() - 5.0 * 50.0 / 90.0).abs() < 1e-9);
    }

    #[test]
    fn destination_reporter_wins_and_rates_need_a_window() {
        let mut text = series("source", "a", "unknown", "200", "unknown", 100);
        text += &series("destination", "a", "b", "200", "mutual_tls", 90);
        text += &series("destination", "a", "b", "503", "mutual_tls", 10);
        text += &series("source", "b", "ext", "200", "unknown", 5);
        let state = GraphState::default();
        let t0 = Instant::now();
        let g = state.read(&text, t0);
        let edges = g["edges"].as_array().unwrap();
        assert_eq!(edges.len(), 2, "{g}");
        let ab = edges.iter().find(|e| e["source"] == "a.default").unwrap();
        assert_eq!(ab["target"], "b.default");
        assert_eq!(
            (ab["requests"].as_f64(), ab["errors"].as_f64()),
            (Some(100.0), Some(10.0))
        );
        assert_eq!(ab["mtls"], true);
        assert_eq!(ab["rps"], 0.0);
        let ext = edges.iter().find(|e| e["source"] == "b.default").unwrap();
        assert_eq!(ext["mtls"], Value::Null);
        // Twice the counts two seconds later: rates are per second over the window.
        let text2 = text
            .replace("} 90\n", "} 190\n")
            .replace("} 10\n", "} 30\n");
        let g = state.read(&text2, t0 + Duration::from_secs(2));
        let ab = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == "a.default")
            .cloned()
            .unwrap();
        assert_eq!(ab["rps"], 60.0);
        assert_eq!(ab["error_rps"], 10.0);
        // Two callers sharing an account: the destination sees `unknown`, the callers know
        // themselves; their edges replace the `unknown` one and take its mTLS view.
        let mut shared = series("destination", "unknown", "b", "200", "mutual_tls", 8);
        shared += &series("source", "c1", "b", "200", "unknown", 5);
        shared += &series("source", "c2", "b", "200", "unknown", 3);
        let g = GraphState::default().read(&shared, t0);
        let sources: Vec<_> = g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["source"].as_str().unwrap().to_string(),
                    e["mtls"].clone(),
                    e["reporter"].clone(),
                )
            })
            .collect();
        assert_eq!(
            sources,
            [
                (
                    "c1.default".to_string(),
                    Value::Bool(true),
                    Value::from("source")
                ),
                (
                    "c2.default".to_string(),
                    Value::Bool(true),
                    Value::from("source")
                ),
            ]
        );
        let plain = series("destination", "c", "b", "200", "none", 3);
        assert_eq!(
            GraphState::default().read(&plain, t0)["edges"][0]["mtls"],
            false
        );
    }
}
