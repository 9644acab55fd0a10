//! The seeded, shuffled train/test (and validation) split.
//!
//! Like the document (scikit-learn's `train_test_split(..., shuffle=True)`), the split is made
//! on the list of files before any image is decoded, and is not stratified. The shuffle is
//! seeded, so the same folder and seed always give the same split.

use super::LabelledFile;
use crate::Rng;
use rand::seq::SliceRandom;

/// How many of `n` examples a `fraction` holds out: `ceil(fraction · n)`, as scikit-learn.
pub fn held_out_count(n: usize, fraction: f64) -> usize {
    ((fraction * n as f64).ceil() as usize).min(n)
}

/// Shuffles `files` with `rng`, then moves the first [`held_out_count`] of them into the
/// returned list; `files` keeps the rest, in shuffled order.
pub fn split_off(files: &mut Vec<LabelledFile>, fraction: f64, rng: &mut Rng) -> Vec<LabelledFile> {
    files.shuffle(rng);
    let k = held_out_count(files.len(), fraction);
    let rest = files.split_off(k);
    std::mem::replace(files, rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use std::path::PathBuf;

    fn files(n: usize) -> Vec<LabelledFile> {
        (0..n)
            .map(|i| LabelledFile {
                path: PathBuf::from(format!("{i}.png")),
                label: i % 2,
            })
            .collect()
    }

    #[test]
    fn split_is_reproducible_for_a_seed_and_changes_with_it() {
        let split = |seed| {
            let mut train = files(100);
            let test = split_off(&mut train, 0.2, &mut Rng::seed_from_u64(seed));
            (train, test)
        };
        let (train_a, test_a) = split(7);
        let (train_b, test_b) = split(7);
        let (_, test_c) = split(8);
        assert_eq!(test_a.len(), 20);
        assert_eq!(train_a.len(), 80);
        let names = |v: &[LabelledFile]| v.iter().map(|f| f.path.clone()).collect::<Vec<_>>();
        assert_eq!(names(&test_a), names(&test_b));
        assert_eq!(names(&train_a), names(&train_b));
        assert_ne!(names(&test_a), names(&test_c));
        // Nothing lost, nothing duplicated.
        let mut all = names(&train_a);
        all.extend(names(&test_a));
        all.sort();
        let mut expected = names(&files(100));
        expected.sort();
        assert_eq!(all, expected);
        // Shuffled, not the first 20 files.
        assert_ne!(names(&test_a), names(&files(20)));
    }

    #[test]
    fn held_out_count_rounds_up_like_scikit_learn() {
        assert_eq!(held_out_count(1685, 0.2), 337);
        assert_eq!(held_out_count(10, 0.25), 3);
        assert_eq!(held_out_count(10, 0.0), 0);
    }
}
