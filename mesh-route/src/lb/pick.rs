//! What a pick may use from the request, and the draws one pick derives from its randomness.

/// What a pick may use from the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PickContext {
    /// The request hash from the route's hash policies (see [`crate::request_hash`]); ring
    /// hash and Maglev pick at random without one.
    pub hash: Option<u64>,
    /// Randomness for this pick (priority choice, random and least-request candidates).
    pub random: u64,
}

impl PickContext {
    /// A context with a fresh random value and no hash.
    pub fn new() -> Self {
        Self {
            hash: None,
            random: rand::random(),
        }
    }

    /// A context with the given random value (deterministic tests).
    pub fn with_random(random: u64) -> Self {
        Self { hash: None, random }
    }

    /// Sets the request hash.
    pub fn hash(mut self, hash: Option<u64>) -> Self {
        self.hash = hash;
        self
    }
}

/// SplitMix64: cheap, good enough to derive several draws from one random value.
pub(super) struct Draws(pub(super) u64);

impl Draws {
    pub(super) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^ (z >> 31)
    }
}
