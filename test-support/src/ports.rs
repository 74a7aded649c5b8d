//! Free ports for servers a test starts, chosen so that they do not collide.
//!
//! Binding port 0 and releasing it hands out a port from the kernel's ephemeral range, the
//! same range every outgoing connection on the machine takes its local port from: between the
//! release and the peer's own bind, another test's connection (or another test process) may
//! take it, and the peer fails with "address already in use". Ports here come from below the
//! ephemeral range, at random, never twice in one process.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::Mutex;

/// Lowest port handed out (above the well-known and common service ports).
const LOW: u16 = 10_000;

/// A port on 127.0.0.1 that is free now, outside the ephemeral range, and not returned
/// before by this process. Panics only when no such port can be found.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let high = ephemeral_low().max(LOW + 1_000);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let seed = RandomState::new();
    for attempt in 0u64..10_000 {
        let port = LOW + (seed.hash_one(attempt) % u64::from(high - LOW)) as u16;
        if given.contains(&port) {
            continue;
        }
        // Free for both a listener and (SO_REUSEADDR aside) a later bind by a peer.
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {LOW}..{high}");
}

/// The first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_bindable_and_below_the_ephemeral_range() {
        let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
        let distinct: HashSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
        for p in ports {
            assert!((LOW..ephemeral_low().max(LOW + 1_000)).contains(&p), "{p}");
        }
        TcpListener::bind(("127.0.0.1", free_port())).expect("a returned port binds");
    }
}
