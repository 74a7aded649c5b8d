use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use mesh_core::hosts::EjectableHosts;
use mesh_core::model::OutlierDetection;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::classify::Classification;

#[derive(Debug, Default)]
struct Host {
    consecutive_5xx: AtomicU32,
    consecutive_gateway: AtomicU32,
    consecutive_local: AtomicU32,
    // this interval's counts: upstream answers, plus local-origin failures unless split
    success: AtomicU64,
    failure: AtomicU64,
    // with the split, this interval's local-origin counts: an answer from the upstream is a
    // success (the connection worked), a local-origin error a failure (Envoy's
    // LOCAL_ORIGIN_CONNECT_SUCCESS / _FAILED)
    local_success: AtomicU64,
    local_failure: AtomicU64,
    ejection: Mutex<Ejection>,
}

#[derive(Debug, Default, Clone, Copy)]
struct Ejection {
    until: Option<Instant>,
    /// Envoy's ejection multiplier: grows per ejection, shrinks per healthy interval.
    times: u32,
    total: u64,
}

/// One endpoint's outlier state.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointOutlierState {
    /// `ip:port`.
    pub endpoint: Arc<str>,
    /// Whether it is ejected now.
    pub ejected: bool,
    /// When the current ejection ends.
    pub ejected_until: Option<Instant>,
    /// The ejection multiplier.
    pub ejection_multiplier: u32,
    /// Ejections so far.
    pub ejections_total: u64,
    /// Consecutive 5xx.
    pub consecutive_5xx: u32,
    /// Consecutive gateway failures.
    pub consecutive_gateway_failure: u32,
    /// Consecutive local-origin failures.
    pub consecutive_local_origin_failure: u32,
    /// Successes and failures in the current interval.
    pub interval_success: u64,
    /// Failures in the current interval.
    pub interval_failure: u64,
}

/// Outlier detection for one cluster (see the [module docs](super)).
pub struct OutlierDetector {
    cfg: OutlierDetection,
    /// The cluster's host set (mesh-route's `Balancer`), where ejections take effect.
    host_set: Arc<dyn EjectableHosts>,
    hosts: RwLock<HashMap<Arc<str>, Arc<Host>>>,
    /// Serialises ejection decisions (the max-ejection-percent check).
    eject_lock: Mutex<()>,
    ejections: AtomicU64,
}

impl std::fmt::Debug for OutlierDetector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutlierDetector")
            .field("cfg", &self.cfg)
            .field("host_counts", &self.host_set.host_counts())
            .field("hosts", &self.hosts)
            .field("ejections", &self.ejections)
            .finish_non_exhaustive()
    }
}

/// One host's interval: name, state, successes, failures.
type Stat = (Arc<str>, Arc<Host>, u64, u64);

#[derive(Clone, Copy)]
enum Reason {
    Consecutive5xx,
    ConsecutiveGateway,
    ConsecutiveLocal,
    SuccessRate,
    FailurePercentage,
    LocalOriginSuccessRate,
    LocalOriginFailurePercentage,
}

impl OutlierDetector {
    /// A detector that ejects from `hosts`, the cluster's host set (an
    /// `Arc<mesh_route::Balancer>` coerces; any [`EjectableHosts`] does). Hosts are named
    /// `ip:port`, as in [`UpstreamEndpoint`](crate::policy::UpstreamEndpoint).
    pub fn new(hosts: Arc<dyn EjectableHosts>, cfg: OutlierDetection) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            host_set: hosts,
            hosts: RwLock::new(HashMap::new()),
            eject_lock: Mutex::new(()),
            ejections: AtomicU64::new(0),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &OutlierDetection {
        &self.cfg
    }

    /// Runs [`sweep`](Self::sweep) every `interval` until the handle is aborted.
    pub fn spawn(self: &Arc<Self>) -> JoinHandle<()> {
        let this = Arc::downgrade(self);
        let period = self.cfg.interval.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(Instant::now() + period, period);
            loop {
                tick.tick().await;
                match this.upgrade() {
                    Some(d) => d.sweep(),
                    None => return, // the cluster is gone
                }
            }
        })
    }

    fn host(&self, endpoint: &str) -> Arc<Host> {
        if let Some(h) = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
        {
            return h.clone();
        }
        let mut w = self.hosts.write().unwrap_or_else(|p| p.into_inner());
        w.entry(endpoint.into()).or_default().clone()
    }

    /// Records one attempt's outcome on `endpoint` (`ip:port`).
    pub fn record(&self, endpoint: &str, class: Classification) {
        let h = self.host(endpoint);
        let c = &self.cfg;
        let r = Ordering::Relaxed;
        let local = class.is_local_origin();
        if local && c.split_external_local_origin_errors {
            h.local_failure.fetch_add(1, r);
            let n = h.consecutive_local.fetch_add(1, r) + 1;
            if n >= c.consecutive_local_origin_failure && c.consecutive_local_origin_failure > 0 {
                self.try_eject(endpoint, &h, Reason::ConsecutiveLocal);
            }
            return;
        }
        if c.split_external_local_origin_errors {
            // an answer from the upstream: the connection worked
            h.consecutive_local.store(0, r);
            h.local_success.fetch_add(1, r);
        }
        if class.is_success() {
            h.success.fetch_add(1, r);
        } else {
            h.failure.fetch_add(1, r);
        }
        if class.is_5xx() {
            let n = h.consecutive_5xx.fetch_add(1, r) + 1;
            if n >= c.consecutive_5xx && c.consecutive_5xx > 0 {
                self.try_eject(endpoint, &h, Reason::Consecutive5xx);
            }
        } else {
            h.consecutive_5xx.store(0, r);
        }
        if class.is_gateway_failure() {
            let n = h.consecutive_gateway.fetch_add(1, r) + 1;
            if n >= c.consecutive_gateway_failure && c.consecutive_gateway_failure > 0 {
                self.try_eject(endpoint, &h, Reason::ConsecutiveGateway);
            }
        } else {
            h.consecutive_gateway.store(0, r);
        }
    }

    fn enforcing(&self, reason: Reason) -> u32 {
        let c = &self.cfg;
        match reason {
            Reason::Consecutive5xx => c.enforcing_consecutive_5xx,
            Reason::ConsecutiveGateway => c.enforcing_consecutive_gateway_failure,
            Reason::ConsecutiveLocal => c.enforcing_consecutive_local_origin_failure,
            Reason::SuccessRate => c.success_rate.enforcing_percentage,
            Reason::FailurePercentage => c.failure_percentage.enforcing_percentage,
            Reason::LocalOriginSuccessRate => c.enforcing_local_origin_success_rate,
            Reason::LocalOriginFailurePercentage => c.enforcing_failure_percentage_local_origin,
        }
    }

    fn try_eject(&self, endpoint: &str, h: &Host, reason: Reason) -> bool {
        let r = Ordering::Relaxed;
        // the counters restart whether or not the ejection is enforced
        match reason {
            Reason::Consecutive5xx => h.consecutive_5xx.store(0, r),
            Reason::ConsecutiveGateway => h.consecutive_gateway.store(0, r),
            Reason::ConsecutiveLocal => h.consecutive_local.store(0, r),
            _ => {}
        }
        let enforcing = self.enforcing(reason).min(100);
        if enforcing == 0 || (enforcing < 100 && rand::random::<u32>() % 100 >= enforcing) {
            return false;
        }
        let _g = self.eject_lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut ej = h.ejection.lock().unwrap_or_else(|p| p.into_inner());
        if ej.until.is_some() {
            return false;
        }
        let (total, ejected) = self.host_set.host_counts();
        if ejected > 0
            && (ejected as f64) * 100.0 / (total as f64) >= self.cfg.max_ejection_percent as f64
        {
            return false;
        }
        if !self.host_set.set_ejected(endpoint, true) {
            return false; // no longer in the cluster
        }
        ej.times = ej.times.saturating_add(1);
        ej.total += 1;
        let base = self.cfg.base_ejection_time;
        let cap = self.cfg.max_ejection_time.max(base);
        let mut time = base.saturating_mul(ej.times).min(cap);
        let jitter = self.cfg.max_ejection_time_jitter.as_millis() as u64;
        if jitter > 0 {
            time += Duration::from_millis(rand::random::<u64>() % (jitter + 1));
        }
        ej.until = Some(Instant::now() + time);
        self.ejections.fetch_add(1, r);
        tracing::info!(endpoint, ejection_time = ?time, "outlier detection: ejecting endpoint");
        true
    }

    /// One interval's analysis: un-eject hosts whose time is up, decay multipliers, run
    /// success-rate and failure-percentage ejection, and reset the interval's counts.
    pub fn sweep(&self) {
        let now = Instant::now();
        let hosts: Vec<(Arc<str>, Arc<Host>)> = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, h) in &hosts {
            let mut ej = h.ejection.lock().unwrap_or_else(|p| p.into_inner());
            match ej.until {
                Some(t) if t <= now => {
                    ej.until = None;
                    if self.host_set.set_ejected(name, false) {
                        tracing::info!(endpoint = %name, "outlier detection: un-ejecting endpoint");
                    }
                    h.consecutive_5xx.store(0, Ordering::Relaxed);
                    h.consecutive_gateway.store(0, Ordering::Relaxed);
                    h.consecutive_local.store(0, Ordering::Relaxed);
                }
                None if ej.times > 0 => ej.times -= 1,
                _ => {}
            }
        }
        let stats = |ok: fn(&Host) -> &AtomicU64, bad: fn(&Host) -> &AtomicU64| -> Vec<Stat> {
            let r = Ordering::Relaxed;
            hosts
                .iter()
                .map(|(n, h)| (n.clone(), h.clone(), ok(h).swap(0, r), bad(h).swap(0, r)))
                .collect()
        };
        let external = stats(|h| &h.success, |h| &h.failure);
        self.success_rate(&external, Reason::SuccessRate);
        self.failure_percentage(&external, Reason::FailurePercentage);
        // Only counted with split_external_local_origin_errors: the same thresholds,
        // volumes and minimum hosts, enforced by the local-origin percentages (Envoy).
        let local = stats(|h| &h.local_success, |h| &h.local_failure);
        if self.cfg.split_external_local_origin_errors {
            self.success_rate(&local, Reason::LocalOriginSuccessRate);
            self.failure_percentage(&local, Reason::LocalOriginFailurePercentage);
        }
    }

    fn success_rate(&self, stats: &[Stat], reason: Reason) {
        let sr = &self.cfg.success_rate;
        let rates: Vec<(&Arc<str>, &Arc<Host>, f64)> = stats
            .iter()
            .filter(|(_, _, s, f)| s + f >= sr.request_volume as u64 && s + f > 0)
            .map(|(n, h, s, f)| (n, h, *s as f64 * 100.0 / (s + f) as f64))
            .collect();
        if rates.is_empty() || rates.len() < sr.minimum_hosts as usize {
            return;
        }
        let mean = rates.iter().map(|r| r.2).sum::<f64>() / rates.len() as f64;
        let var = rates.iter().map(|r| (r.2 - mean).powi(2)).sum::<f64>() / rates.len() as f64;
        let threshold = mean - var.sqrt() * (sr.stdev_factor as f64 / 1000.0);
        for (n, h, rate) in rates {
            if rate < threshold {
                self.try_eject(n, h, reason);
            }
        }
    }

    fn failure_percentage(&self, stats: &[Stat], reason: Reason) {
        let fp = &self.cfg.failure_percentage;
        let eligible: Vec<_> = stats
            .iter()
            .filter(|(_, _, s, f)| s + f >= fp.request_volume as u64 && s + f > 0)
            .collect();
        if eligible.is_empty() || eligible.len() < fp.minimum_hosts as usize {
            return;
        }
        for (n, h, s, f) in eligible {
            let pct = *f as f64 * 100.0 / (s + f) as f64;
            if pct >= fp.threshold as f64 {
                self.try_eject(n, h, reason);
            }
        }
    }

    /// Whether `endpoint` is ejected now.
    pub fn is_ejected(&self, endpoint: &str) -> bool {
        self.hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(endpoint)
            .is_some_and(|h| {
                h.ejection
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .until
                    .is_some()
            })
    }

    /// Ejections so far (Envoy's `outlier_detection.ejections_enforced_total`).
    pub fn ejections_total(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }

    /// Every endpoint seen so far, with its state.
    pub fn endpoints(&self) -> Vec<EndpointOutlierState> {
        let r = Ordering::Relaxed;
        let mut v: Vec<_> = self
            .hosts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(n, h)| {
                let ej = *h.ejection.lock().unwrap_or_else(|p| p.into_inner());
                EndpointOutlierState {
                    endpoint: n.clone(),
                    ejected: ej.until.is_some(),
                    ejected_until: ej.until,
                    ejection_multiplier: ej.times,
                    ejections_total: ej.total,
                    consecutive_5xx: h.consecutive_5xx.load(r),
                    consecutive_gateway_failure: h.consecutive_gateway.load(r),
                    consecutive_local_origin_failure: h.consecutive_local.load(r),
                    interval_success: h.success.load(r),
                    interval_failure: h.failure.load(r),
                }
            })
            .collect();
        v.sort_by(|a, b| a.endpoint.cmp(&b.endpoint));
        v
    }
}
