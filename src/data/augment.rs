//! Data augmentation, on the fly: each time a training image is drawn into a mini-batch it is
//! randomly flipped, shifted and/or jittered, so every epoch sees slightly different images.
//! The stored data is never changed, and test and validation images are never augmented.
//!
//! Rows are flattened `size × size × 3` images in row, column, channel order, values in `[0, 1]`.

use super::CHANNELS;
use crate::{Error, Result, Rng};
use ndarray::{Array2, ArrayViewMut1};
use rand::RngExt;

/// Largest shift of `crop`, as a fraction of the image side (1/8: 16 px at 128 px).
const MAX_SHIFT_FRACTION: f32 = 0.125;
/// Brightness jitter: add `U(-b, b)` to every value.
const BRIGHTNESS: f32 = 0.1;
/// Contrast jitter: scale deviations from the image mean by `U(1-c, 1+c)`.
const CONTRAST: f32 = 0.2;
/// Side of `cutout`'s square, as a fraction of the image side (DeVries & Taylor 2017 used
/// half of CIFAR's 32 px).
const CUTOUT_FRACTION: f32 = 0.5;
/// What `cutout` fills with: mid-grey.
const CUTOUT_FILL: f32 = 0.5;

/// Which augmentations are on. All off is the document's (and the default) behaviour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Augment {
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
    /// Shift by up to 1/8 of the side in each direction, repeating edge pixels (a random crop of
    /// an edge-padded image).
    pub crop: bool,
    /// Random brightness and contrast change, clamped to `[0, 1]`.
    pub jitter: bool,
    /// Cutout: a square of half the image side, centred anywhere in the image (so partly
    /// outside it at the edges), painted mid-grey. Files from before it read as off.
    #[serde(default)]
    pub cutout: bool,
}

impl Augment {
    /// Parses a comma-separated list such as `flip,crop,jitter` (or `none`).
    ///
    /// # Errors
    /// [`Error::Config`] naming an unknown entry.
    pub fn parse(list: &str) -> Result<Self> {
        let mut a = Augment::default();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item {
                "flip" => a.flip = true,
                "crop" | "shift" => a.crop = true,
                "jitter" => a.jitter = true,
                "cutout" => a.cutout = true,
                "none" => {}
                other => {
                    return Err(Error::Config(format!(
                        "--augment: unknown augmentation {other:?}; choose from flip, crop, jitter, cutout"
                    )));
                }
            }
        }
        Ok(a)
    }

    /// Whether any augmentation is on.
    pub fn is_on(&self) -> bool {
        self.flip || self.crop || self.jitter || self.cutout
    }

    /// The list form accepted by [`parse`](Augment::parse).
    pub fn describe(&self) -> String {
        let mut items = Vec::new();
        if self.flip {
            items.push("flip");
        }
        if self.crop {
            items.push("crop");
        }
        if self.jitter {
            items.push("jitter");
        }
        if self.cutout {
            items.push("cutout");
        }
        if items.is_empty() {
            "none".into()
        } else {
            items.join(",")
        }
    }

    /// Augments every row of `batch (examples, size·size·3)` in place.
    ///
    /// # Panics
    /// If the row width is not `size·size·3`.
    pub fn apply(&self, batch: &mut Array2<f32>, size: usize, rng: &mut Rng) {
        assert_eq!(
            batch.ncols(),
            size * size * CHANNELS,
            "augment: rows are not {size}×{size} RGB images"
        );
        let mut scratch = vec![0.0f32; batch.ncols()];
        for mut row in batch.rows_mut() {
            if self.flip && rng.random::<bool>() {
                flip(&mut row, size);
            }
            if self.crop {
                let max = ((size as f32) * MAX_SHIFT_FRACTION).round() as i64;
                let dx = rng.random_range(-max..=max);
                let dy = rng.random_range(-max..=max);
                shift(&mut row, size, dx, dy, &mut scratch);
            }
            if self.jitter {
                let brightness = rng.random_range(-BRIGHTNESS..=BRIGHTNESS);
                let contrast = rng.random_range(1.0 - CONTRAST..=1.0 + CONTRAST);
                jitter(&mut row, brightness, contrast);
            }
            if self.cutout {
                let cy = rng.random_range(0..size);
                let cx = rng.random_range(0..size);
                cutout(&mut row, size, cy, cx);
            }
        }
    }
}

/// Mirrors one image left-right.
/// Every row of `x` (an image of `height × width × channels`, channels last) mirrored left to
/// right: what test-time flips classify beside the image itself.
pub fn mirrored<T: Copy + Default>(
    x: ndarray::ArrayView2<'_, T>,
    height: usize,
    width: usize,
    channels: usize,
) -> Array2<T> {
    let mut out = Array2::<T>::default(x.dim());
    for (src, mut dst) in x.rows().into_iter().zip(out.rows_mut()) {
        for y in 0..height {
            for px in 0..width {
                let from = (y * width + px) * channels;
                let to = (y * width + (width - 1 - px)) * channels;
                for c in 0..channels {
                    dst[to + c] = src[from + c];
                }
            }
        }
    }
    out
}

fn flip(row: &mut ArrayViewMut1<'_, f32>, size: usize) {
    for y in 0..size {
        for x in 0..size / 2 {
            let a = (y * size + x) * CHANNELS;
            let b = (y * size + size - 1 - x) * CHANNELS;
            for c in 0..CHANNELS {
                row.swap(a + c, b + c);
            }
        }
    }
}

/// Moves the image content by `(dx, dy)` pixels, filling with the nearest edge pixel.
fn shift(row: &mut ArrayViewMut1<'_, f32>, size: usize, dx: i64, dy: i64, scratch: &mut [f32]) {
    if dx == 0 && dy == 0 {
        return;
    }
    let last = size as i64 - 1;
    for y in 0..size {
        let sy = (y as i64 - dy).clamp(0, last) as usize;
        for x in 0..size {
            let sx = (x as i64 - dx).clamp(0, last) as usize;
            for c in 0..CHANNELS {
                scratch[(y * size + x) * CHANNELS + c] = row[(sy * size + sx) * CHANNELS + c];
            }
        }
    }
    for (dst, &src) in row.iter_mut().zip(scratch.iter()) {
        *dst = src;
    }
}

/// Paints the square of side `size · CUTOUT_FRACTION` centred on pixel `(cy, cx)` (clipped
/// to the image) with [`CUTOUT_FILL`].
fn cutout(row: &mut ArrayViewMut1<'_, f32>, size: usize, cy: usize, cx: usize) {
    let half = ((size as f32 * CUTOUT_FRACTION) / 2.0).round() as usize;
    let span = |c: usize| c.saturating_sub(half)..(c + half).min(size);
    let columns = span(cx);
    for y in span(cy) {
        let start = (y * size + columns.start) * CHANNELS;
        let end = (y * size + columns.end) * CHANNELS;
        row.slice_mut(ndarray::s![start..end]).fill(CUTOUT_FILL);
    }
}

/// `v ← clamp((v − mean)·contrast + mean + brightness, 0, 1)`.
fn jitter(row: &mut ArrayViewMut1<'_, f32>, brightness: f32, contrast: f32) {
    let mean = row.mean().unwrap_or(0.0);
    row.mapv_inplace(|v| ((v - mean) * contrast + mean + brightness).clamp(0.0, 1.0));
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn image(size: usize) -> Array2<f32> {
        Array2::from_shape_fn((1, size * size * CHANNELS), |(_, i)| {
            i as f32 / (size * size * CHANNELS) as f32
        })
    }

    #[test]
    fn cutout_paints_a_clipped_square_grey_and_nothing_else() {
        let size = 8;
        let mut img = image(size);
        let orig = img.clone();
        // Centre (1, 6): half-side 2, so rows 0..3 and columns 4..8.
        cutout(&mut img.row_mut(0), size, 1, 6);
        for y in 0..size {
            for x in 0..size {
                for c in 0..CHANNELS {
                    let i = (y * size + x) * CHANNELS + c;
                    let inside = y < 3 && (4..8).contains(&x);
                    let want = if inside { CUTOUT_FILL } else { orig[[0, i]] };
                    assert_eq!(img[[0, i]], want, "pixel ({y}, {x}) channel {c}");
                }
            }
        }
        assert_eq!(
            Augment::parse("flip,cutout").unwrap().describe(),
            "flip,cutout"
        );
    }

    #[test]
    fn flip_mirrors_each_row_of_pixels_and_twice_is_identity() {
        let size = 3;
        let mut img = image(size);
        let orig = img.clone();
        flip(&mut img.row_mut(0), size);
        // Pixel (y=0, x=0) now holds what was at (y=0, x=2), channels kept together.
        assert_eq!(img[[0, 0]], orig[[0, 6]]);
        assert_eq!(img[[0, 2]], orig[[0, 8]]);
        // The middle column stays.
        assert_eq!(img[[0, 3]], orig[[0, 3]]);
        flip(&mut img.row_mut(0), size);
        assert_eq!(img, orig);
    }

    #[test]
    fn shift_moves_content_and_repeats_edges() {
        let size = 4;
        let mut img = image(size);
        let orig = img.clone();
        let mut scratch = vec![0.0; img.ncols()];
        shift(&mut img.row_mut(0), size, 1, 0, &mut scratch);
        // New (y, x=1) is old (y, x=0); new (y, x=0) repeats old (y, x=0).
        for c in 0..CHANNELS {
            assert_eq!(img[[0, CHANNELS + c]], orig[[0, c]]);
            assert_eq!(img[[0, c]], orig[[0, c]]);
        }
    }

    #[test]
    fn augmentations_keep_values_in_range_and_parse_names() {
        let a = Augment::parse("flip,crop,jitter").unwrap();
        assert!(a.flip && a.crop && a.jitter);
        assert_eq!(a.describe(), "flip,crop,jitter");
        assert!(
            Augment::parse("rotate")
                .unwrap_err()
                .to_string()
                .contains("rotate")
        );
        assert!(!Augment::parse("none").unwrap().is_on());
        let mut batch = Array2::from_shape_fn((8, 8 * 8 * 3), |(r, i)| {
            ((r * 31 + i * 7) % 100) as f32 / 99.0
        });
        let before = batch.clone();
        a.apply(&mut batch, 8, &mut Rng::seed_from_u64(1));
        assert!(batch.iter().all(|v| (0.0..=1.0).contains(v)));
        assert_ne!(batch, before);
    }
}
