//! [`Rng`]: the one source of randomness of the pipeline, a small seeded PRNG
//! (xoshiro256++ seeded through SplitMix64) whose streams are derived from the run's seed.
//!
//! Every random choice (initial vectors, walk start order, walk steps, negatives, the
//! evaluation pairs) comes from a stream named by [`Stream`] and, where it changes per
//! epoch, the epoch number. A stream depends on nothing but `(seed, stream, epoch)`: that is
//! what makes a run reproducible and lets a run resumed at epoch `e` draw exactly what the
//! uninterrupted run drew there. Burn's own global RNG is never used.

/// What a stream of random numbers is for; part of its derivation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// The initial input vectors.
    Init,
    /// One epoch's walks (start order, steps) and negatives.
    Epoch,
    /// The evaluation pairs (the same for every epoch).
    Eval,
}

impl Stream {
    fn tag(self) -> u64 {
        match self {
            Stream::Init => 0x1,
            Stream::Epoch => 0x2,
            Stream::Eval => 0x3,
        }
    }
}

/// SplitMix64's output function: a bijective mix of 64 bits.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256++ (Blackman and Vigna): fast, 256 bits of state, passes BigCrush.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator seeded with `seed` (any value, 0 included).
    pub fn new(seed: u64) -> Self {
        let mut state = seed;
        let s = [
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
            splitmix64(&mut state),
        ];
        Self { s }
    }

    /// The generator of `stream` for `epoch` (0 where the stream has no epochs) of the run
    /// seeded with `seed`.
    pub fn stream(seed: u64, stream: Stream, epoch: u64) -> Self {
        let mut state = seed;
        let a = splitmix64(&mut state);
        let mut state = a ^ stream.tag().wrapping_mul(0xD605_BBB5_8C8A_BBCD);
        let b = splitmix64(&mut state);
        let mut state = b ^ epoch.wrapping_mul(0xA076_1D64_78BD_642F);
        Self::new(splitmix64(&mut state))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A uniform integer in `0..n`, without modulo bias (Lemire's method).
    ///
    /// # Panics
    ///
    /// When `n == 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "Rng::below(0)");
        let threshold = n.wrapping_neg() % n;
        loop {
            let product = u128::from(self.next_u64()) * u128::from(n);
            if (product as u64) >= threshold {
                return (product >> 64) as u64;
            }
        }
    }

    /// A uniform `f64` in `[0, 1)`, with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box–Muller; one of the pair is discarded, which keeps the
    /// generator's position a plain function of the number of calls).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.unit(); // (0, 1]: the logarithm is finite
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Shuffles `items` in place (Fisher–Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// `k` distinct indices of `0..n` in random order (`k` is capped at `n`); a partial
    /// Fisher–Yates shuffle.
    pub fn sample_indices(&mut self, n: usize, k: usize) -> Vec<usize> {
        let mut all: Vec<usize> = (0..n).collect();
        let k = k.min(n);
        for i in 0..k {
            let j = i + self.below((n - i) as u64) as usize;
            all.swap(i, j);
        }
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_reproducible_and_distinct() {
        let draw = |mut rng: Rng| (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>();
        assert_eq!(
            draw(Rng::stream(7, Stream::Epoch, 3)),
            draw(Rng::stream(7, Stream::Epoch, 3))
        );
        assert_ne!(
            draw(Rng::stream(7, Stream::Epoch, 3)),
            draw(Rng::stream(7, Stream::Epoch, 4))
        );
        assert_ne!(
            draw(Rng::stream(7, Stream::Epoch, 0)),
            draw(Rng::stream(7, Stream::Eval, 0))
        );
        assert_ne!(
            draw(Rng::stream(7, Stream::Init, 0)),
            draw(Rng::stream(8, Stream::Init, 0))
        );
    }

    #[test]
    fn below_is_uniform_enough_and_in_range() {
        let mut rng = Rng::new(1);
        let mut counts = [0usize; 5];
        for _ in 0..50_000 {
            counts[rng.below(5) as usize] += 1;
        }
        for count in counts {
            assert!((9_500..10_500).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn normal_has_unit_variance() {
        let mut rng = Rng::new(2);
        let n = 100_000;
        let samples: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mean = samples.iter().sum::<f64>() / n as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var - 1.0).abs() < 0.02, "{var}");
    }

    #[test]
    fn sample_indices_are_distinct() {
        let mut rng = Rng::new(3);
        let mut picked = rng.sample_indices(100, 40);
        picked.sort_unstable();
        picked.dedup();
        assert_eq!(picked.len(), 40);
        assert_eq!(rng.sample_indices(5, 10).len(), 5);
    }
}
