//! The generator initial weights are drawn from: NumPy's legacy one (`np.random.seed`,
//! `np.random.randn`), bit for bit, so that `--seed S` starts from exactly the weights the
//! document's `initialize` draws after `np.random.seed(S)`. A run can then be checked against
//! the document's own code from the same starting point.
//!
//! The Mersenne Twister MT19937 (Matsumoto & Nishimura, 1998) is the `rand_mt` crate's, seeded
//! as NumPy seeds it. What is NumPy's own sits here on top: its double in `[0, 1)` from two
//! words (53 random bits), and its legacy normal, the polar Box–Muller method, which makes
//! normals in pairs and hands out the second on the next call.

use rand_mt::Mt;

/// NumPy's `RandomState`, for the draws deepcat needs: the Mersenne Twister itself is
/// `rand_mt`'s; NumPy's legacy double and normal are built on its 32-bit words here.
#[derive(Clone, Debug)]
pub struct Mt19937 {
    mt: Mt,
    /// The second normal of the last pair, not handed out yet.
    spare_normal: Option<f64>,
}

impl Mt19937 {
    /// The state after `np.random.seed(seed)`. Seeds above `u32::MAX` (which NumPy refuses as
    /// one integer) give the state after `np.random.seed([low 32 bits, high 32 bits])`.
    pub fn new(seed: u64) -> Self {
        let low = seed as u32;
        let high = (seed >> 32) as u32;
        // NumPy seeds a 32-bit integer with the reference `init_genrand` (`Mt::new`) and an
        // array with `init_by_array` (`Mt::new_with_key`). rand_mt's `init_by_array` runs 624
        // mixing rounds where the reference runs max(624, key length): the same for our
        // two-word keys.
        let mt = if high == 0 {
            Mt::new(low)
        } else {
            Mt::new_with_key([low, high])
        };
        Mt19937 {
            mt,
            spare_normal: None,
        }
    }

    /// A double in `[0, 1)` from 53 random bits: `np.random.random_sample()`.
    pub fn uniform(&mut self) -> f64 {
        let a = f64::from(self.mt.next_u32() >> 5);
        let b = f64::from(self.mt.next_u32() >> 6);
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
