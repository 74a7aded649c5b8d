//! One pool of hosts and the policy that picks among them: round robin (EDF-weighted),
//! random, least request (power of two choices), ring hash or Maglev.

use std::sync::atomic::{AtomicUsize, Ordering};

use mesh_core::model::LbPolicy;

use super::edf;
use super::endpoint::EndpointRef;
use super::maglev::Maglev;
use super::pick::Draws;
use super::ring_hash::Ring;

#[derive(Debug)]
enum Picker {
    RoundRobin {
        order: Vec<u32>,
        next: AtomicUsize,
    },
    Random,
    LeastRequest {
        choices: u32,
        cumulative: Option<Vec<u64>>,
        weights: Vec<u32>,
    },
    Ring(Ring),
    Maglev(Maglev),
}

#[derive(Debug)]
pub(super) struct Pool {
    hosts: Vec<EndpointRef>,
    picker: Picker,
}

impl Pool {
    pub(super) fn new(hosts: Vec<EndpointRef>, weights: Vec<f64>, policy: &LbPolicy) -> Self {
        let int_weights: Vec<u64> = hosts
            .iter()
            .map(|h| u64::from(h.endpoint().weight.max(1)))
            .collect();
        let picker = match policy {
            LbPolicy::RoundRobin => {
                let equal = int_weights.windows(2).all(|w| w[0] == w[1]);
                let order = if equal {
                    (0..hosts.len() as u32).collect()
                } else {
                    edf::cycle(&int_weights)
                };
                // Envoy starts each worker at a random offset so workers do not move in step.
                let start = if order.is_empty() {
                    0
                } else {
                    rand::random::<u32>() as usize % order.len()
                };
                Picker::RoundRobin {
                    order,
                    next: AtomicUsize::new(start),
                }
            }
            LbPolicy::Random => Picker::Random,
            LbPolicy::LeastRequest { choice_count } => {
                let equal = int_weights.windows(2).all(|w| w[0] == w[1]);
                let cumulative = (!equal).then(|| {
                    int_weights
                        .iter()
                        .scan(0u64, |acc, w| {
                            *acc += w;
                            Some(*acc)
                        })
                        .collect()
                });
                Picker::LeastRequest {
                    choices: (*choice_count).max(1),
                    cumulative,
                    weights: int_weights.iter().map(|w| *w as u32).collect(),
                }
            }
            LbPolicy::RingHash {
                min_ring_size,
                max_ring_size,
                hash_function,
            } => {
                let keyed: Vec<(&str, f64)> = hosts
                    .iter()
                    .map(|h| h.hash_key())
                    .zip(weights.iter().copied())
                    .collect();
                Picker::Ring(Ring::build(
                    &keyed,
                    *min_ring_size,
                    *max_ring_size,
                    *hash_function,
                ))
            }
            LbPolicy::Maglev { table_size } => {
                let keyed: Vec<(&str, f64)> = hosts
                    .iter()
                    .map(|h| h.hash_key())
                    .zip(weights.iter().copied())
                    .collect();
                Picker::Maglev(Maglev::build(&keyed, *table_size))
            }
        };
        Self { hosts, picker }
    }

    pub(super) fn pick(
        &self,
        hash: Option<u64>,
        draws: &mut Draws,
        skip_ejected: bool,
    ) -> Option<&EndpointRef> {
        let n = self.hosts.len();
        if n == 0 {
            return None;
        }
        let ok = |i: usize| !skip_ejected || !self.hosts[i].is_ejected();
        let idx = match &self.picker {
            Picker::RoundRobin { order, next } => {
                if order.is_empty() {
                    return None;
                }
                let mut found = None;
                for _ in 0..order.len().min(n * 2) {
                    let i = order[next.fetch_add(1, Ordering::Relaxed) % order.len()] as usize;
                    if ok(i) {
                        found = Some(i);
                        break;
                    }
                }
                // A heavy ejected endpoint can fill the window; any other will do then.
                match found {
                    Some(i) => i,
                    None => (0..n).find(|&i| ok(i))?,
                }
            }
            Picker::Random => {
                let first = (draws.next() % n as u64) as usize;
                (0..n).map(|k| (first + k) % n).find(|&i| ok(i))?
            }
            Picker::LeastRequest {
                choices,
                cumulative,
                weights,
            } => {
                let mut best: Option<usize> = None;
                for _ in 0..*choices {
                    let i = match cumulative {
                        None => (draws.next() % n as u64) as usize,
                        Some(c) => {
                            let total = c.last().copied().unwrap_or(1).max(1);
                            let r = draws.next() % total;
                            c.partition_point(|&end| end <= r).min(n - 1)
                        }
                    };
                    if !ok(i) {
                        continue;
                    }
                    // Fewest requests in flight per unit of weight; ties keep the first.
                    let load = |j: usize| {
                        self.hosts[j].active_requests() as f64 / f64::from(weights[j].max(1))
                    };
                    if best.is_none_or(|b| load(i) < load(b)) {
                        best = Some(i);
                    }
                }
                match best {
                    Some(b) => b,
                    None => (0..n).find(|&i| ok(i))?,
                }
            }
            Picker::Ring(ring) => {
                let h = hash.unwrap_or_else(|| draws.next());
                let start = ring.position(h)?;
                (0..ring.len())
                    .map(|k| ring.host_at(start + k) as usize)
                    .find(|&i| ok(i))?
            }
            Picker::Maglev(table) => {
                let h = hash.unwrap_or_else(|| draws.next());
                let len = table.len().max(1);
                let start = (h % len as u64) as usize;
                (0..len)
                    .filter_map(|k| table.host_at(start + k))
                    .map(|i| i as usize)
                    .find(|&i| ok(i))?
            }
        };
        self.hosts.get(idx)
    }
}
