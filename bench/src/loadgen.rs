//! A small load generator: open loop at a fixed rate (latency measured from the intended
//! send time when a connection was still busy, so a stall is not hidden by coordinated
//! omission) and closed loop (each connection sends its next request when the previous
//! answer is in) for sequential and saturation loads.

use std::fmt;
use std::time::Duration;

use futures::future::BoxFuture;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::Error;

/// One client connection (or, for the in-process mesh, one caller sharing the client's
/// pool): sends the payload request and checks the answer.
pub trait Lane: Send {
    /// Sends one request and reads the whole response.
    fn send(&mut self) -> BoxFuture<'_, Result<(), Error>>;
}

/// A load shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Load {
    /// One connection, one request at a time.
    Sequential,
    /// A fixed total rate spread evenly over `connections` (open loop).
    Rate {
        /// Requests per second, all connections together.
        rps: u32,
        /// Connections.
        connections: usize,
    },
    /// `connections` closed loops, as fast as the case answers.
    Saturation {
        /// Connections.
        connections: usize,
    },
}

impl Load {
    /// The three loads of the harness.
    pub const ALL: [Load; 3] = [
        Load::Sequential,
        Load::Rate {
            rps: 2000,
            connections: 16,
        },
        Load::Saturation { connections: 32 },
    ];

    /// How many connections (lanes) the load uses.
    pub fn connections(self) -> usize {
        match self {
            Load::Sequential => 1,
            Load::Rate { connections, .. } | Load::Saturation { connections } => connections,
        }
    }

    /// A short stable key (`seq`, `rate2000x16`, `sat32`).
    pub fn key(self) -> String {
        match self {
            Load::Sequential => "seq".into(),
            Load::Rate { rps, connections } => format!("rate{rps}x{connections}"),
            Load::Saturation { connections } => format!("sat{connections}"),
        }
    }
}

impl fmt::Display for Load {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Load::Sequential => write!(f, "1 connection, sequential"),
            Load::Rate { rps, connections } => {
                write!(f, "{rps} rps over {connections} connections")
            }
            Load::Saturation { connections } => {
                write!(f, "saturation, {connections} connections")
            }
        }
    }
}

/// What one run measured.
#[derive(Debug)]
pub struct Sample {
    /// Latencies in microseconds.
    pub latency: Histogram<u64>,
    /// Answers that were 200 with the full payload.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// The first failure, to report.
    pub first_error: Option<String>,
    /// From the first send to the end of the last answer.
    pub elapsed: Duration,
}

impl Sample {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// A latency quantile in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64
    }
}

fn histogram() -> Histogram<u64> {
    // 1 us .. 60 s, 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// Drives `lanes` (one per connection of `load`) for `duration` and returns what they
/// measured, and the lanes for another run. Lanes run as separate tasks on the current
/// runtime.
pub async fn run(
    lanes: Vec<Box<dyn Lane>>,
    load: Load,
    duration: Duration,
) -> (Sample, Vec<Box<dyn Lane>>) {
    let n = lanes.len().max(1);
    let start = Instant::now() + Duration::from_millis(1);
    let end = start + duration;
    let pacing = match load {
        Load::Rate { rps, .. } => {
            let interval = Duration::from_secs_f64(n as f64 / f64::from(rps.max(1)));
            Some(interval)
        }
        _ => None,
    };
    let tasks: Vec<_> = lanes
        .into_iter()
        .enumerate()
        .map(|(i, lane)| {
            // Stagger the lanes evenly over one interval so the total rate is smooth.
            let first = start + pacing.map_or(Duration::ZERO, |iv| iv * i as u32 / n as u32);
            tokio::spawn(drive(lane, first, pacing, end))
        })
        .collect();
    let mut sample = Sample {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
    };
    let mut back = Vec::with_capacity(n);
    for t in tasks {
        match t.await {
            Ok(lane) => {
                back.push(lane.lane);
                let t = lane.tally;
                // Same bounds on both sides: adding cannot fail.
                let _ = sample.latency.add(&t.latency);
                sample.ok += t.ok;
                sample.errors += t.errors;
                if sample.first_error.is_none() {
                    sample.first_error = t.first_error;
                }
            }
            Err(e) => {
                sample.errors += 1;
                sample.first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    sample.elapsed = Instant::now().saturating_duration_since(start);
    (sample, back)
}

struct LaneResult {
    lane: Box<dyn Lane>,
    tally: Tally,
}

struct Tally {
    latency: Histogram<u64>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

async fn drive(
    mut lane: Box<dyn Lane>,
    first: Instant,
    pacing: Option<Duration>,
    end: Instant,
) -> LaneResult {
    let mut r = Tally {
        latency: histogram(),
        ok: 0,
        errors: 0,
        first_error: None,
    };
    tokio::time::sleep_until(first).await;
    let mut i: u32 = 0;
    loop {
        let measured_from = match pacing {
            Some(interval) => {
                let intended = first + interval * i;
                if intended >= end {
                    break;
                }
                if Instant::now() < intended {
                    // Idle until the next slot: the timer's wake-up lag belongs to the
                    // generator, so measure from the actual send.
                    tokio::time::sleep_until(intended).await;
                    Instant::now()
                } else {
                    // Still busy with the previous answer at this slot: the wait is the
                    // system's, so it counts (coordinated-omission correction).
                    intended
                }
            }
            None => {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                now
            }
        };
        let result = lane.send().await;
        let us = measured_from.elapsed().as_micros().max(1) as u64;
        match result {
            Ok(()) => {
                r.ok += 1;
                r.latency.saturating_record(us);
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
                // A broken connection fails at once: do not spin on it.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        i += 1;
    }
    LaneResult { lane, tally: r }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Sleepy(Duration);
    impl Lane for Sleepy {
        fn send(&mut self) -> BoxFuture<'_, Result<(), Error>> {
            let d = self.0;
            Box::pin(async move {
                tokio::time::sleep(d).await;
                Ok(())
            })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_counts_the_wait_behind_a_slow_answer() {
        // 100 rps on one lane = a slot every 10 ms; each answer takes 25 ms, so the lane
        // falls behind and latency grows from the intended slots.
        let lanes: Vec<Box<dyn Lane>> = vec![Box::new(Sleepy(Duration::from_millis(25)))];
        let (s, _) = run(
            lanes,
            Load::Rate {
                rps: 100,
                connections: 1,
            },
            Duration::from_millis(500),
        )
        .await;
        assert!(s.ok > 0);
        assert!(s.quantile_us(0.99) > 100_000.0, "{}", s.quantile_us(0.99));
        assert!(s.latency.min() >= 24_900, "{}", s.latency.min());
    }

    #[tokio::test(start_paused = true)]
    async fn open_loop_keeps_its_rate_when_answers_are_fast() {
        let lanes: Vec<Box<dyn Lane>> = (0..4)
            .map(|_| Box::new(Sleepy(Duration::from_millis(1))) as Box<dyn Lane>)
            .collect();
        let (s, _) = run(
            lanes,
            Load::Rate {
                rps: 400,
                connections: 4,
            },
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(s.ok, 400);
        assert!((s.rps() - 400.0).abs() < 8.0, "{}", s.rps());
        assert!(s.quantile_us(0.99) < 2_000.0, "{}", s.quantile_us(0.99));
    }

    #[tokio::test(start_paused = true)]
    async fn closed_loop_sends_as_fast_as_answers_come() {
        let lanes: Vec<Box<dyn Lane>> = (0..2)
            .map(|_| Box::new(Sleepy(Duration::from_millis(10))) as Box<dyn Lane>)
            .collect();
        let (s, _) = run(
            lanes,
            Load::Saturation { connections: 2 },
            Duration::from_secs(1),
        )
        .await;
        // 2 lanes x 100 answers per second, give or take the last one in flight.
        assert!((199..=202).contains(&s.ok), "{}", s.ok);
    }
}
