//! What the driver and the services observed, and the telemetry the admin endpoint shows.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;

use mesh::hbone::HboneMetrics;
use mesh_admin::UpstreamMetrics;
use mesh_telemetry::metrics::directory::DirectoryBuilder;
use mesh_telemetry::metrics::{IstioMetrics, PeerDirectory, WorkloadInfo};

use crate::services::BOOKINFO;

/// How many distinct failure reasons the summary keeps.
pub const ERROR_SAMPLES: usize = 5;

/// Longest failure reason kept (bytes).
const REASON_MAX: usize = 300;

/// Shared counters.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Counts>,
    telemetry: Telemetry,
    /// The HBONE servers' counters (`--hbone`).
    hbone: Mutex<Vec<HboneMetrics>>,
}

/// The metric families the admin endpoint exports (`/stats/prometheus`).
#[derive(Clone, Debug, Default)]
pub struct Telemetry {
    /// Istio's standard metrics, recorded by the load driver (`reporter="source"`) and by
    /// every Bookinfo server (`reporter="destination"`).
    pub metrics: IstioMetrics,
    /// Per-cluster upstream state (membership, EDS health, ejections, retries, breaker
    /// overflows) of every workload's clusters, labelled by workload.
    pub upstream: UpstreamMetrics,
}

/// Istio's labels of a Bookinfo workload (as Istio would report it on Kubernetes).
pub fn workload_info(name: &str, account: &str, version: &str) -> WorkloadInfo {
    WorkloadInfo {
        workload: format!("{name}-{version}"),
        namespace: "default".into(),
        principal: format!("spiffe://cluster.local/ns/default/sa/{account}"),
        app: name.into(),
        version: version.into(),
        canonical_service: name.into(),
        canonical_revision: version.into(),
        cluster: "Kubernetes".into(),
    }
}

/// Bookinfo's workloads and the load driver by principal, for the workload labels of the
/// other side (`destination_*` on the driver, `source_*` on the servers).
pub fn directory() -> PeerDirectory {
    BOOKINFO
        .iter()
        .fold(DirectoryBuilder::new(), |d, s| {
            d.workload(workload_info(s.name, s.account, s.version))
        })
        .workload(workload_info("loadgen", "loadgen", "v1"))
        .build()
}

/// The counters.
#[derive(Clone, Debug, Default)]
pub struct Counts {
    /// Requests by (route, reviews subset): route is `jason` (header sent) or `split`.
    pub by_route: BTreeMap<(String, String), u64>,
    /// Calls by (client identity -> server identity) as the server saw them.
    pub peers: BTreeMap<(String, String), u64>,
    /// Failed requests (non-2xx or transport) by status.
    pub errors: BTreeMap<u16, u64>,
    /// Why the first failed requests failed (the error or the response body), at most
    /// [`ERROR_SAMPLES`] distinct reasons.
    pub error_samples: Vec<String>,
    /// Latencies (µs) of the current second (never reset under `--quiet`: fixed size).
    pub window: Latencies,
    /// All latencies (µs), as a histogram: a soak runs for hours, and a list of every
    /// latency grew by 8 bytes a request and was copied whole by every `/stats` read.
    pub all: Latencies,
    /// Retries sent by every workload's resilience layers.
    pub retries: u64,
    /// Tunnels the workloads' HBONE servers accepted (`--hbone`; 0 otherwise).
    pub hbone_tunnels: u64,
}

impl Stats {
    /// New, shared.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The metric families.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    fn with<R>(&self, f: impl FnOnce(&mut Counts) -> R) -> R {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// A server saw `client` call it as `server`.
    pub fn peer(&self, client: &str, server: &str) {
        self.with(|c| *c.peers.entry((client.into(), server.into())).or_default() += 1);
    }

    /// A productpage request finished.
    pub fn request(&self, route: &str, subset: &str, micros: u64) {
        self.with(|c| {
            *c.by_route.entry((route.into(), subset.into())).or_default() += 1;
            c.window.0.saturating_record(micros);
            c.all.0.saturating_record(micros);
        });
    }

    /// A request failed with `status` (0: transport or shed) because of `reason`.
    pub fn error(&self, status: u16, reason: &str) {
        let mut reason = format!("{status}: {}", reason.trim());
        if reason.len() > REASON_MAX {
            let cut = (0..=REASON_MAX).rev().find(|&i| reason.is_char_boundary(i));
            reason.truncate(cut.unwrap_or(0));
            reason.push_str("...");
        }
        self.with(|c| {
            *c.errors.entry(status).or_default() += 1;
            if c.error_samples.len() < ERROR_SAMPLES && !c.error_samples.contains(&reason) {
                c.error_samples.push(reason);
            }
        });
    }

    /// Counts the tunnels of an HBONE server.
    pub fn hbone_server(&self, metrics: HboneMetrics) {
        self.hbone
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(metrics);
    }

    fn tunnels(&self) -> u64 {
        let servers = self.hbone.lock().unwrap_or_else(|e| e.into_inner());
        servers.iter().map(HboneMetrics::tunnels).sum()
    }

    /// A copy of the counters, emptying the one-second window.
    pub fn take_window(&self) -> Counts {
        let retries = self.telemetry.upstream.retries_total();
        let tunnels = self.tunnels();
        self.with(|c| {
            c.retries = retries;
            c.hbone_tunnels = tunnels;
            let out = c.clone();
            c.window.0.reset();
            out
        })
    }

    /// A copy of the counters.
    pub fn counts(&self) -> Counts {
        let retries = self.telemetry.upstream.retries_total();
        let tunnels = self.tunnels();
        self.with(|c| {
            c.retries = retries;
            c.hbone_tunnels = tunnels;
            c.clone()
        })
    }
}

/// Every latency of a run (µs, 1 µs to 60 s, 3 significant digits: fixed size).
#[derive(Clone, Debug)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self(Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds"))
    }
}

impl Latencies {
    /// p-th percentile (0..=100), in ms.
    pub fn percentile_ms(&self, p: f64) -> f64 {
        self.0.value_at_quantile(p / 100.0) as f64 / 1000.0
    }
}

/// The demo's result.
#[derive(Clone, Debug)]
pub struct Summary {
    /// Everything counted.
    pub counts: Counts,
    /// Seconds driven.
    pub seconds: f64,
}

impl Summary {
    fn count(&self, route: &str, subset: &str) -> u64 {
        self.counts
            .by_route
            .get(&(route.to_owned(), subset.to_owned()))
            .copied()
            .unwrap_or(0)
    }

    fn total(&self, route: &str) -> u64 {
        self.counts
            .by_route
            .iter()
            .filter(|((r, _), _)| r == route)
            .map(|(_, n)| n)
            .sum()
    }

    /// Share of `split` requests that reached v3.
    pub fn v3_share(&self) -> f64 {
        let t = self.total("split");
        if t == 0 {
            0.0
        } else {
            self.count("split", "v3") as f64 / t as f64
        }
    }

    /// The weighted split was observed: v1 and v3 both served `split` requests, v2 none, and
    /// v3's share is near the configured 10% (within 7 points).
    pub fn split_observed(&self) -> bool {
        self.count("split", "v1") > 0
            && self.count("split", "v3") > 0
            && self.count("split", "v2") == 0
            && (self.v3_share() - 0.10).abs() <= 0.07
    }

    /// The header route was observed: every `jason` request reached v2.
    pub fn header_route_observed(&self) -> bool {
        let t = self.total("jason");
        t > 0 && self.count("jason", "v2") == t
    }

    /// Both routing rules observed.
    pub fn passed(&self) -> bool {
        self.split_observed() && self.header_route_observed()
    }

    /// The final report.
    pub fn render(&self) -> String {
        let all = &self.counts.all;
        let n: u64 = self.counts.by_route.values().sum();
        let errors: u64 = self.counts.errors.values().sum();
        let mut s = format!(
            "\n== summary: {n} requests in {:.1}s ({:.0} rps), {errors} errors {:?}, retries {}\n",
            self.seconds,
            n as f64 / self.seconds.max(0.001),
            self.counts.errors,
            self.counts.retries
        );
        s += &format!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}\n",
            all.percentile_ms(50.0),
            all.percentile_ms(90.0),
            all.percentile_ms(99.0)
        );
        if self.counts.hbone_tunnels > 0 {
            s += &format!("HBONE tunnels accepted: {}\n", self.counts.hbone_tunnels);
        }
        for reason in &self.counts.error_samples {
            s += &format!("error: {reason}\n");
        }
        s += &table(&self.counts);
        s += &format!(
            "split (no header): v3 share {:.1}% (configured 10%) -> {}\n",
            self.v3_share() * 100.0,
            if self.split_observed() {
                "OK"
            } else {
                "NOT OBSERVED"
            }
        );
        s += &format!(
            "header route (end-user: jason -> v2): {}\n",
            if self.header_route_observed() {
                "OK"
            } else {
                "NOT OBSERVED"
            }
        );
        s
    }
}

/// Requests per route and subset, and identities seen.
pub fn table(c: &Counts) -> String {
    let mut s = String::from("  route   subset  requests\n");
    for ((route, subset), n) in &c.by_route {
        s += &format!("  {route:<7} {subset:<7} {n:>8}\n");
    }
    s += "  mTLS peers (client -> server as the server saw them):\n";
    for ((client, server), n) in &c.peers {
        s += &format!("    {client} -> {server}  {n}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_reasons_are_kept_distinct_bounded_and_cut_on_a_char_boundary() {
        let stats = Stats::new();
        stats.error(502, "reviews: 504 upstream request timeout\n");
        stats.error(502, "reviews: 504 upstream request timeout");
        for i in 0..10 {
            stats.error(503, &format!("reason {i}"));
        }
        stats.error(0, &"é".repeat(400));
        let c = stats.counts();
        assert_eq!(c.errors, BTreeMap::from([(0, 1), (502, 2), (503, 10)]));
        assert_eq!(c.error_samples.len(), ERROR_SAMPLES);
        assert_eq!(
            c.error_samples[0],
            "502: reviews: 504 upstream request timeout"
        );
        assert_eq!(c.error_samples[1], "503: reason 0");

        let long = Stats::new();
        long.error(0, &"é".repeat(400));
        let kept = &long.counts().error_samples[0];
        assert!(
            kept.len() <= REASON_MAX + 3 && kept.ends_with("..."),
            "{kept}"
        );
    }
}
