//! Command line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Usage text.
pub const USAGE: &str = "usage: demo [--duration 10s] [--rate 100] [--jason-percent 20] \
[--admin 127.0.0.1:15000] [--config examples/config/bookinfo] [--quiet]
       [--control-plane embedded|istiod] [--istiod-bin PATH] [--admin-grpc ADDR] [--otlp URL]
       [--hbone]

  --duration D       stop after D (e.g. 10s, 500ms, 2m); default: until Ctrl-C
  --rate N           requests per second sent to productpage (default 100)
  --jason-percent P  share of requests carrying `end-user: jason` (default 20)
  --admin ADDR       admin endpoint (default 127.0.0.1:15000; port 0 picks one)
  --admin-grpc ADDR  admin gRPC port serving CSDS (default 127.0.0.1:15009; port 0 picks one)
  --otlp URL         export request spans over OTLP/gRPC to URL (e.g. http://127.0.0.1:4317)
  --config DIR       Istio config directory (default: the repository's examples/config/bookinfo)
  --quiet            no live table, only the summary
  --control-plane CP embedded (default): our control plane in process (the config generated
                     and decoded for each workload without xDS, and the CA);
                     istiod: a real istiod (pilot-discovery) started on the same config,
                     its CA and its xDS over TLS, workloads authenticated with JWTs
  --istiod-bin PATH  pilot-discovery for --control-plane istiod (default: $MESH_ISTIOD_BIN;
                     build it with scripts/peers/istiod.sh)
  --hbone            ambient mode: every workload on its own loopback address (127.0.20.x,
                     Linux) serves HBONE on its :15008, its WorkloadEntry labelled
                     networking.istio.io/tunnel: http, and every call goes through a tunnel
                     (embedded control plane only)";

/// Which control plane the workloads talk to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ControlPlaneKind {
    /// mesh-control in process: each workload's config generated and decoded in process
    /// (`mesh_control::LocalSource`, no xDS server), certificates from its CA.
    #[default]
    Embedded,
    /// A real istiod started as a child process: its CA and xDS over TLS (see
    /// docs/istio.md).
    Istiod,
}

/// What to run.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Stop after this long (`None`: until interrupted).
    pub duration: Option<Duration>,
    /// Requests per second to productpage.
    pub rate: u32,
    /// Percentage of requests with `end-user: jason`.
    pub jason_percent: u32,
    /// Admin endpoint address.
    pub admin_addr: SocketAddr,
    /// Admin gRPC address (CSDS).
    pub admin_grpc_addr: SocketAddr,
    /// OTLP/gRPC collector to export request spans to.
    pub otlp: Option<String>,
    /// The Istio config directory.
    pub config_dir: PathBuf,
    /// No live table.
    pub quiet: bool,
    /// The control plane.
    pub control_plane: ControlPlaneKind,
    /// The istiod binary (`None`: `$MESH_ISTIOD_BIN`).
    pub istiod_bin: Option<PathBuf>,
    /// Ambient mode: every workload talks HBONE (see [`USAGE`]).
    pub hbone: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: None,
            rate: 100,
            jason_percent: 20,
            admin_addr: ([127, 0, 0, 1], 15000).into(),
            admin_grpc_addr: ([127, 0, 0, 1], 15009).into(),
            otlp: None,
            config_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../config/bookinfo")),
            quiet: false,
            control_plane: ControlPlaneKind::Embedded,
            istiod_bin: None,
            hbone: false,
        }
    }
}

/// Parses a duration such as `10s`, `500ms`, `2m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("duration {s:?}: expected a number with a unit (ms, s, m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("duration {s:?}: unknown unit {unit:?} (ms, s, m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("duration {s:?}: {e}"))
}

/// Parses the arguments; `Ok(None)` for `--help`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<DemoOptions>, String> {
    let mut o = DemoOptions::default();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let (flag, inline) = match a.split_once('=') {
            Some((f, v)) => (f.to_owned(), Some(v.to_owned())),
            None => (a.clone(), None),
        };
        let mut value = || {
            inline
                .clone()
                .or_else(|| it.next())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--duration" => o.duration = Some(parse_duration(&value()?)?),
            "--rate" => {
                o.rate = value()?
                    .parse()
                    .ok()
                    .filter(|r| *r > 0)
                    .ok_or("--rate must be a positive integer")?
            }
            "--jason-percent" => {
                o.jason_percent = value()?
                    .parse()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or("--jason-percent must be 0..=100")?
            }
            "--admin" => o.admin_addr = value()?.parse().map_err(|e| format!("--admin: {e}"))?,
            "--admin-grpc" => {
                o.admin_grpc_addr = value()?.parse().map_err(|e| format!("--admin-grpc: {e}"))?
            }
            "--otlp" => o.otlp = Some(value()?),
            "--config" => o.config_dir = PathBuf::from(value()?),
            "--quiet" => o.quiet = true,
            "--control-plane" => {
                o.control_plane = match value()?.as_str() {
                    "embedded" => ControlPlaneKind::Embedded,
                    "istiod" => ControlPlaneKind::Istiod,
                    other => {
                        return Err(format!(
                            "--control-plane {other:?}: expected embedded or istiod"
                        ));
                    }
                }
            }
            "--istiod-bin" => o.istiod_bin = Some(PathBuf::from(value()?)),
            "--hbone" => o.hbone = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_flags() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("10x").unwrap_err().contains("unknown unit"));
        let o = parse_args(["--duration=3s".into(), "--rate".into(), "50".into()])
            .unwrap()
            .unwrap();
        assert_eq!(o.duration, Some(Duration::from_secs(3)));
        assert_eq!(o.rate, 50);
        assert!(parse_args(["--bogus".into()]).is_err());
        assert_eq!(o.control_plane, ControlPlaneKind::Embedded);
        let o = parse_args(["--control-plane=istiod".into(), "--istiod-bin=/x/pd".into()])
            .unwrap()
            .unwrap();
        assert_eq!(o.control_plane, ControlPlaneKind::Istiod);
        assert_eq!(o.istiod_bin, Some(PathBuf::from("/x/pd")));
        assert!(!o.hbone);
        assert!(parse_args(["--hbone".into()]).unwrap().unwrap().hbone);
        let e = parse_args(["--control-plane".into(), "consul".into()]).unwrap_err();
        assert!(e.contains("expected embedded or istiod"), "{e}");
    }
}
