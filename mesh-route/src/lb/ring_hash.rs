//! Consistent hashing on a ring (Envoy's `RingHashLoadBalancer`, gRPC A42): every host gets
//! hashes `xxHash64("<address>_<i>")` in proportion to its normalized weight, scaled so the
//! lightest host gets at least `ceil(min_weight * min_ring_size)` entries, capped at
//! `max_ring_size`; a request takes the first entry whose hash is >= its own, wrapping.

use mesh_core::model::HashFunction;
use xxhash_rust::xxh64::xxh64;

#[derive(Debug)]
pub(crate) struct Ring {
    /// (hash, host index), sorted by hash.
    entries: Vec<(u64, u32)>,
}

impl Ring {
    /// `hosts`: (hash key, normalized weight); the weights sum to 1.
    pub(crate) fn build(
        hosts: &[(&str, f64)],
        min_ring_size: u64,
        max_ring_size: u64,
        hash_function: HashFunction,
    ) -> Self {
        let min_w = hosts
            .iter()
            .map(|h| h.1)
            .filter(|w| *w > 0.0)
            .fold(f64::INFINITY, f64::min);
        if hosts.is_empty() || !min_w.is_finite() {
            return Self {
                entries: Vec::new(),
            };
        }
        let scale = ((min_w * min_ring_size as f64).ceil() / min_w).min(max_ring_size as f64);
        let ring_size = scale.ceil() as usize;
        let mut entries = Vec::with_capacity(ring_size);
        let mut current = 0.0f64;
        let mut target = 0.0f64;
        let mut key = String::new();
        for (idx, (addr, weight)) in hosts.iter().enumerate() {
            target += scale * weight;
            let mut i = 0u64;
            while current < target {
                key.clear();
                key.push_str(addr);
                key.push('_');
                key.push_str(&i.to_string());
                let h = match hash_function {
                    HashFunction::XxHash => xxh64(key.as_bytes(), 0),
                    HashFunction::MurmurHash2 => murmur2_64(key.as_bytes(), 0xc70f6907),
                };
                entries.push((h, idx as u32));
                i += 1;
                current += 1.0;
            }
        }
        entries.sort_by_key(|e| e.0);
        Self { entries }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The position of the first entry with hash >= `h` (wrapping to 0).
    pub(crate) fn position(&self, h: u64) -> Option<usize> {
        if self.entries.is_empty() {
            return None;
        }
        let i = self.entries.partition_point(|e| e.0 < h);
        Some(if i == self.entries.len() { 0 } else { i })
    }

    pub(crate) fn host_at(&self, pos: usize) -> u32 {
        self.entries[pos % self.entries.len()].1
    }
}

/// MurmurHash2 64-bit (libstdc++'s `std::_Hash_bytes` on 64-bit), as Envoy's `murmurHash2`.
fn murmur2_64(data: &[u8], seed: u64) -> u64 {
    const M: u64 = 0xc6a4a7935bd1e995;
    let len = data.len();
    let mut h = seed ^ (len as u64).wrapping_mul(M);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let mut k = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        k = k.wrapping_mul(M);
        k ^= k >> 47;
        k = k.wrapping_mul(M);
        h ^= k;
        h = h.wrapping_mul(M);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut t = 0u64;
        for (i, b) in rest.iter().enumerate() {
            t |= u64::from(*b) << (8 * i);
        }
        h ^= t;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 47;
    h = h.wrapping_mul(M);
    h ^= h >> 47;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_lookup() {
        let hosts = [("10.0.0.1:80", 0.5), ("10.0.0.2:80", 0.5)];
        let ring = Ring::build(&hosts, 1024, 8 * 1024 * 1024, HashFunction::XxHash);
        assert_eq!(ring.len(), 1024);
        let weighted = [("a:1", 0.25), ("b:1", 0.75)];
        let ring = Ring::build(&weighted, 1024, 8 * 1024 * 1024, HashFunction::XxHash);
        assert_eq!(ring.len(), 1024);
        assert_eq!(ring.entries.iter().filter(|e| e.1 == 0).count(), 256);
        // The lightest host gets a whole number of entries: ceil(1024 / 3) = 342 -> 1026.
        let thirds = [("a:1", 1.0 / 3.0), ("b:1", 2.0 / 3.0)];
        let ring3 = Ring::build(&thirds, 1024, 8 * 1024 * 1024, HashFunction::XxHash);
        assert_eq!(ring3.len(), 1026);
        let capped = Ring::build(&weighted, 1024, 100, HashFunction::XxHash);
        assert_eq!(capped.len(), 100);
        // Wraps past the last entry.
        assert_eq!(ring.position(u64::MAX), Some(0));
        assert_eq!(ring.position(0), Some(0));
        assert_eq!(
            Ring::build(&[], 1024, 2048, HashFunction::XxHash).position(1),
            None
        );
    }
}
