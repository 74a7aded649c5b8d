//! Reads the criterion estimates of the micro-benchmarks that run in the same invocation
//! (`target/criterion/**/new/{benchmark,estimates}.json`).

use std::path::Path;
use std::time::SystemTime;

use serde::Serialize;

use crate::Error;

/// One criterion benchmark's median.
#[derive(Clone, Debug, Serialize)]
pub struct Estimate {
    /// Criterion's full id (`group/function`).
    pub id: String,
    /// Median time per iteration, nanoseconds.
    pub median_ns: f64,
    /// Its 95% confidence interval.
    pub interval_ns: (f64, f64),
}

/// The ids the report uses start with one of these.
pub const PREFIXES: [&str; 4] = ["route/", "pick/", "resilience/", "telemetry_per_request/"];

/// Every estimate under `dir` whose id starts with one of [`PREFIXES`] and that was
/// written at or after `since` (so a stale result from an earlier run is never reported).
pub fn read(dir: &Path, since: SystemTime) -> Result<Vec<Estimate>, Error> {
    let mut out = Vec::new();
    if dir.is_dir() {
        walk(dir, since, &mut out)?;
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(out)
}

fn walk(dir: &Path, since: SystemTime, out: &mut Vec<Estimate>) -> Result<(), Error> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path.is_dir() {
            continue;
        }
        if path.file_name().is_some_and(|n| n == "new") {
            if let Some(e) = estimate(&path, since)? {
                out.push(e);
            }
        } else {
            walk(&path, since, out)?;
        }
    }
    Ok(())
}

fn estimate(new: &Path, since: SystemTime) -> Result<Option<Estimate>, Error> {
    let (bench, est) = (new.join("benchmark.json"), new.join("estimates.json"));
    if !bench.is_file() || !est.is_file() || std::fs::metadata(&est)?.modified()? < since {
        return Ok(None);
    }
    let b: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&bench)?)?;
    let Some(id) = b.get("full_id").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    if !PREFIXES.iter().any(|p| id.starts_with(p)) {
        return Ok(None);
    }
    let e: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&est)?)?;
    let median = &e["median"];
    let num = |v: &serde_json::Value| {
        v.as_f64()
            .ok_or_else(|| format!("{}: bad estimate", est.display()))
    };
    Ok(Some(Estimate {
        id: id.to_owned(),
        median_ns: num(&median["point_estimate"])?,
        interval_ns: (
            num(&median["confidence_interval"]["lower_bound"])?,
            num(&median["confidence_interval"]["upper_bound"])?,
        ),
    }))
}

/// The median of `id`, if present.
pub fn median(estimates: &[Estimate], id: &str) -> Option<f64> {
    estimates.iter().find(|e| e.id == id).map(|e| e.median_ns)
}
