//! The HTTP fault filter (`envoy.extensions.filters.http.fault.v3.HTTPFault`, gRPC A33).

use envoy_types::pb::envoy::extensions::filters::common::fault::v3 as common;
use envoy_types::pb::envoy::extensions::filters::http::fault::v3 as pb;
use mesh_core::model::{AbortKind, DelayKind, FaultAbort, FaultConfig, FaultDelay, Fraction};

use super::matcher::{fraction, header_matchers};
use super::{At, Res, bail, duration};

/// Translates an `HTTPFault` config.
pub fn http_fault(f: &pb::HttpFault) -> Res<FaultConfig> {
    if !f.upstream_cluster.is_empty() {
        return bail(format!(
            "upstream_cluster {:?} is not supported",
            f.upstream_cluster
        ));
    }
    if !f.downstream_nodes.is_empty() {
        return bail("downstream_nodes is not supported");
    }
    if f.response_rate_limit.is_some() {
        return bail("response_rate_limit is not supported");
    }
    let delay = f.delay.as_ref().map(delay).transpose().at(".delay")?;
    let abort = f.abort.as_ref().map(abort).transpose().at(".abort")?;
    Ok(FaultConfig {
        delay,
        abort,
        headers: header_matchers(&f.headers, "headers")?,
        max_active_faults: f.max_active_faults.as_ref().map(|v| v.value),
    })
}

fn percentage(p: Option<&envoy_types::pb::envoy::r#type::v3::FractionalPercent>) -> Res<Fraction> {
    // As in Envoy, an unset percentage is the message default: 0/100, no request is faulted.
    match p {
        Some(p) => fraction(p).at(".percentage"),
        None => Ok(Fraction::new(0, 100)),
    }
}

fn delay(d: &common::FaultDelay) -> Res<FaultDelay> {
    use common::fault_delay::FaultDelaySecifier as S;
    let kind = match &d.fault_delay_secifier {
        Some(S::FixedDelay(d)) => DelayKind::Fixed(duration(d).at(".fixed_delay")?),
        Some(S::HeaderDelay(_)) => DelayKind::FromHeader,
        None => return bail("one of fixed_delay or header_delay is required"),
    };
    Ok(FaultDelay {
        kind,
        percentage: percentage(d.percentage.as_ref())?,
    })
}

fn abort(a: &pb::FaultAbort) -> Res<FaultAbort> {
    use pb::fault_abort::ErrorType as E;
    if !a.response_body.is_empty() {
        return bail("response_body is not supported");
    }
    let kind = match &a.error_type {
        Some(E::HttpStatus(s)) if (200..600).contains(s) => AbortKind::Http(*s as u16),
        Some(E::HttpStatus(s)) => {
            return bail(format!("http_status {s} is outside [200, 600)"));
        }
        Some(E::GrpcStatus(s)) if *s <= 16 => AbortKind::Grpc(*s),
        Some(E::GrpcStatus(s)) => return bail(format!("grpc_status {s} is not a gRPC code")),
        Some(E::HeaderAbort(_)) => AbortKind::FromHeader,
        None => return bail("one of http_status, grpc_status or header_abort is required"),
    };
    Ok(FaultAbort {
        kind,
        percentage: percentage(a.percentage.as_ref())?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use envoy_types::pb::envoy::r#type::v3::FractionalPercent;
    use envoy_types::pb::google::protobuf::{Duration as PbDuration, UInt32Value};

    use super::*;

    fn pct(n: u32) -> Option<FractionalPercent> {
        Some(FractionalPercent {
            numerator: n,
            denominator: 0,
        })
    }

    #[test]
    fn delay_abort_and_limits() {
        let f = pb::HttpFault {
            delay: Some(common::FaultDelay {
                percentage: pct(50),
                fault_delay_secifier: Some(common::fault_delay::FaultDelaySecifier::FixedDelay(
                    PbDuration {
                        seconds: 1,
                        nanos: 500_000_000,
                    },
                )),
            }),
            abort: Some(pb::FaultAbort {
                percentage: pct(10),
                error_type: Some(pb::fault_abort::ErrorType::GrpcStatus(14)),
                ..Default::default()
            }),
            max_active_faults: Some(UInt32Value { value: 7 }),
            ..Default::default()
        };
        let got = http_fault(&f).unwrap();
        assert_eq!(
            got.delay,
            Some(FaultDelay {
                kind: DelayKind::Fixed(Duration::from_millis(1500)),
                percentage: Fraction::new(50, 100)
            })
        );
        assert_eq!(
            got.abort,
            Some(FaultAbort {
                kind: AbortKind::Grpc(14),
                percentage: Fraction::new(10, 100)
            })
        );
        assert_eq!(got.max_active_faults, Some(7));
    }

    #[test]
    fn rejections() {
        let bad_status = pb::HttpFault {
            abort: Some(pb::FaultAbort {
                error_type: Some(pb::fault_abort::ErrorType::HttpStatus(700)),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            http_fault(&bad_status).unwrap_err().to_string(),
            ".abort: http_status 700 is outside [200, 600)"
        );
        let rate = pb::HttpFault {
            response_rate_limit: Some(Default::default()),
            ..Default::default()
        };
        assert_eq!(
            http_fault(&rate).unwrap_err().to_string(),
            "response_rate_limit is not supported"
        );
        let upstream = pb::HttpFault {
            upstream_cluster: "c".into(),
            ..Default::default()
        };
        assert!(http_fault(&upstream).is_err());
    }
}
