//! Maglev consistent hashing (Envoy's `MaglevTable`): each host walks its own permutation of
//! the table (offset `xxHash64(key, 0) % M`, skip `xxHash64(key, 1) % (M - 1) + 1`) and
//! claims free slots, heavier hosts more often; a request takes slot `hash % M`.

use xxhash_rust::xxh64::xxh64;

/// Envoy's default table size (a prime).
pub const DEFAULT_TABLE_SIZE: u64 = 65537;

#[derive(Debug)]
pub(crate) struct Maglev {
    table: Vec<u32>,
}

impl Maglev {
    /// `hosts`: (hash key, normalized weight). `table_size` must be prime (checked by the
    /// balancer).
    pub(crate) fn build(hosts: &[(&str, f64)], table_size: u64) -> Self {
        struct Entry {
            offset: u64,
            skip: u64,
            weight: f64,
            target: f64,
            next: u64,
        }
        let live: Vec<usize> = (0..hosts.len()).filter(|&i| hosts[i].1 > 0.0).collect();
        if live.is_empty() || table_size < 2 {
            return Self { table: Vec::new() };
        }
        let max_w = live.iter().map(|&i| hosts[i].1).fold(0.0, f64::max);
        let mut entries: Vec<(usize, Entry)> = live
            .iter()
            .map(|&i| {
                let key = hosts[i].0.as_bytes();
                (
                    i,
                    Entry {
                        offset: xxh64(key, 0) % table_size,
                        skip: xxh64(key, 1) % (table_size - 1) + 1,
                        weight: hosts[i].1,
                        target: 0.0,
                        next: 0,
                    },
                )
            })
            .collect();
        let size = table_size as usize;
        let mut table = vec![u32::MAX; size];
        let mut filled = 0usize;
        let mut iteration: u64 = 1;
        while filled < size {
            for (host, e) in entries.iter_mut() {
                if filled == size {
                    break;
                }
                // A host of weight max_w claims a slot every iteration; of max_w / 3, every third.
                if (iteration as f64) * e.weight < e.target {
                    continue;
                }
                e.target += max_w;
                let mut c = (e.offset + e.skip * e.next) % table_size;
                while table[c as usize] != u32::MAX {
                    e.next += 1;
                    c = (e.offset + e.skip * e.next) % table_size;
                }
                table[c as usize] = *host as u32;
                e.next += 1;
                filled += 1;
            }
            iteration += 1;
        }
        Self { table }
    }

    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    pub(crate) fn host_at(&self, slot: usize) -> Option<u32> {
        self.table.get(slot % self.table.len().max(1)).copied()
    }
}

/// Whether `n` is prime (trial division; table sizes are small).
pub(crate) fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_proportion() {
        let hosts = [("a:1", 0.25), ("b:1", 0.75)];
        let m = Maglev::build(&hosts, 65537);
        assert_eq!(m.len(), 65537);
        let a = m.table.iter().filter(|&&h| h == 0).count();
        let share = a as f64 / 65537.0;
        assert!((share - 0.25).abs() < 0.01, "share {share}");
        assert!(is_prime(65537));
        assert!(!is_prime(65536));
    }
}
