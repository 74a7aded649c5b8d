//! The `:authority` of an HBONE `CONNECT`: `<ip>:<port>` of the tunnel's destination
//! (`[v6]:port` for IPv6). Host names (what a gateway may send) are not accepted: an
//! in-process server only serves its own addresses.

use std::net::SocketAddr;

/// Why an authority was refused (each answered `400 Bad Request`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    /// The request had no `:authority`.
    #[error("CONNECT without :authority")]
    Missing,
    /// Not `<ip>:<port>`.
    #[error("CONNECT :authority {0:?} is not <ip>:<port>")]
    Malformed(String),
    /// Port 0 is never a destination.
    #[error("CONNECT :authority {0:?} has port 0")]
    PortZero(String),
}

/// Parses an HBONE authority. Never panics; the input is whatever the peer sent.
///
/// ```
/// use mesh_hbone::authority::parse_authority;
/// assert_eq!(parse_authority(Some("10.0.0.7:9080")).unwrap().port(), 9080);
/// assert!(parse_authority(Some("[::1]:80")).is_ok());
/// assert!(parse_authority(Some("reviews:9080")).is_err());
/// assert!(parse_authority(None).is_err());
/// ```
pub fn parse_authority(authority: Option<&str>) -> Result<SocketAddr, AuthorityError> {
    let raw = authority.ok_or(AuthorityError::Missing)?;
    // Bounded before parsing: the longest valid form is a bracketed IPv6 address and a port.
    if raw.len() > 64 {
        return Err(AuthorityError::Malformed(truncate(raw)));
    }
    let addr: SocketAddr = raw
        .parse()
        .map_err(|_| AuthorityError::Malformed(truncate(raw)))?;
    if addr.port() == 0 {
        return Err(AuthorityError::PortZero(raw.to_owned()));
    }
    Ok(addr)
}

/// Keeps error messages (and logs) short whatever the peer sent.
fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn accepts_ip_and_port() {
        let a = parse_authority(Some("127.0.0.1:15008")).unwrap();
        assert_eq!(a, "127.0.0.1:15008".parse().unwrap());
        let a = parse_authority(Some("[fd00::1]:8080")).unwrap();
        assert_eq!(a.port(), 8080);
    }

    #[test]
    fn refuses_the_malformed() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:",
            "127.0.0.1:65536",
            "127.0.0.1:-1",
            "127.0.0.1:80x",
            "host:80",
            "fd00::1:80",
            "[fd00::1]",
            ":80",
            "127.0.0.1:80/path",
            "user@127.0.0.1:80",
        ] {
            assert!(
                matches!(
                    parse_authority(Some(bad)),
                    Err(AuthorityError::Malformed(_))
                ),
                "{bad:?}"
            );
        }
        assert_eq!(
            parse_authority(Some("127.0.0.1:0")),
            Err(AuthorityError::PortZero("127.0.0.1:0".into()))
        );
        assert_eq!(parse_authority(None), Err(AuthorityError::Missing));
        let long = "1".repeat(10_000);
        assert!(parse_authority(Some(&long)).is_err());
    }

    proptest! {
        // Whatever the peer sends: no panic, and an accepted authority round-trips.
        #[test]
        fn never_panics(s in ".{0,80}") {
            if let Ok(addr) = parse_authority(Some(&s)) {
                prop_assert_ne!(addr.port(), 0);
                prop_assert_eq!(parse_authority(Some(&addr.to_string())), Ok(addr));
            }
        }

        #[test]
        fn ip_port_pairs_parse(a: [u8; 4], port in 1u16..) {
            let s = format!("{}.{}.{}.{}:{port}", a[0], a[1], a[2], a[3]);
            prop_assert_eq!(parse_authority(Some(&s)).unwrap().port(), port);
        }
    }
}
