//! The generator initial weights are drawn from: NumPy's legacy one (`np.random.seed`,
//! `np.random.randn`), bit for bit, so that `--seed S` starts from exactly the weights the
//! document's `initialize` draws after `np.random.seed(S)`. A run can then be checked against
//! the document's own code from the same starting point.
//!
//! The Mersenne Twister MT19937 (Matsumoto & Nishimura, 1998), its double in `[0, 1)` from two
//! words (53 random bits), and NumPy's legacy normal: the polar Box–Muller method, which makes
//! normals in pairs and hands out the second on the next call.

const N: usize = 624;
const M: usize = 397;
const MATRIX_A: u32 = 0x9908_b0df;
const UPPER: u32 = 0x8000_0000;
const LOWER: u32 = 0x7fff_ffff;

/// NumPy's `RandomState`, for the draws deepcat needs.
#[derive(Clone)]
pub struct Mt19937 {
    state: [u32; N],
    next: usize,
    /// The second normal of the last pair, not handed out yet.
    spare_normal: Option<f64>,
}

impl std::fmt::Debug for Mt19937 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mt19937").field("next", &self.next).finish()
    }
}

impl Mt19937 {
    /// The state after `np.random.seed(seed)`. Seeds above `u32::MAX` (which NumPy refuses as
    /// one integer) give the state after `np.random.seed([low 32 bits, high 32 bits])`.
    pub fn new(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        if high == 0 {
            Self::from_u32(low)
        } else {
            Self::from_words(&[low, high])
        }
    }

    /// `np.random.seed(seed)` for a 32-bit seed: the reference `init_genrand`.
    fn from_u32(seed: u32) -> Self {
        let mut state = [0u32; N];
        state[0] = seed;
        for i in 1..N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            next: N,
            spare_normal: None,
        }
    }

    /// `np.random.seed([w0, w1, ...])`: the reference `init_by_array`.
    fn from_words(key: &[u32]) -> Self {
        let mut g = Self::from_u32(19_650_218);
        let mt = &mut g.state;
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..N.max(key.len()) {
            let prev = mt[i - 1];
            mt[i] = (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..N - 1 {
            let prev = mt[i - 1];
            mt[i] =
                (mt[i] ^ (prev ^ (prev >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= N {
                mt[0] = mt[N - 1];
                i = 1;
            }
        }
        mt[0] = 0x8000_0000;
        g
    }

    /// Regenerates all 624 words of state.
    fn twist(&mut self) {
        let mt = &mut self.state;
        for k in 0..N {
            let y = (mt[k] & UPPER) | (mt[(k + 1) % N] & LOWER);
            let mag = if y & 1 == 1 { MATRIX_A } else { 0 };
            mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ mag;
        }
        self.next = 0;
    }

    /// The next 32 random bits.
    fn next_u32(&mut self) -> u32 {
        if self.next >= N {
            self.twist();
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// A double in `[0, 1)` from 53 random bits: `np.random.random_sample()`.
    pub fn uniform(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }

    /// A standard normal: `np.random.randn()`.
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return z;
        }
        loop {
            let x1 = 2.0 * self.uniform() - 1.0;
            let x2 = 2.0 * self.uniform() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                let f = (-2.0 * r2.ln() / r2).sqrt();
                self.spare_normal = Some(f * x1);
                return f * x2;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Every expected value below was printed by NumPy 2.4 (`np.random.seed(...)` then the draw).

    #[test]
    fn normals_match_numpy_randn() {
        let mut g = Mt19937::new(1);
        let expected = [
            1.624_345_363_663_241_7,
            -0.611_756_413_650_075_4,
            -0.528_171_752_263_455_7,
            -1.072_968_622_156_170_5,
            0.865_407_629_324_678_5,
        ];
        for e in expected {
            assert_eq!(g.normal(), e);
        }
        let mut g = Mt19937::new(4_294_967_295);
        let expected = [
            0.648_408_674_230_652_7,
            0.669_323_530_633_816_1,
            -1.080_543_722_747_449_3,
        ];
        for e in expected {
            assert_eq!(g.normal(), e);
        }
    }

    #[test]
    fn uniforms_match_numpy_random_sample() {
        let mut g = Mt19937::new(1);
        assert_eq!(g.uniform(), 0.417_022_004_702_574);
        assert_eq!(g.uniform(), 0.720_324_493_442_158_1);
    }

    #[test]
    fn seeds_above_32_bits_match_numpy_seeding_with_two_words() {
        // 1 << 32 | 5  is  np.random.seed([5, 1]).
        let mut g = Mt19937::new((1 << 32) | 5);
        let expected = [
            -0.489_287_412_566_659_03,
            -0.770_951_726_586_378_9,
            -0.161_831_600_338_920_13,
        ];
        for e in expected {
            assert_eq!(g.normal(), e);
        }
    }
}
