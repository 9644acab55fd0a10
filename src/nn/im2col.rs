//! Patch gathering for convolutions: `im2col` turns one image into a matrix with one row per
//! output pixel, holding the input values under the kernel there, so that a convolution is one
//! matrix product; `col2im` sends the gradient of that matrix back onto the image. Both know
//! nothing of networks: slices in, slices out.
//!
//! Layout, channels last throughout. The image is `height × width × channels`; a patch row is
//! `kernel × kernel × channels` in (kernel row, kernel column, channel) order, with zeros where
//! the kernel hangs over the edge (zero padding).

use super::Geometry;

/// A square sliding window: its side, its step, and the zero padding on every edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Side of the square kernel.
    pub kernel: usize,
    /// Step between neighbouring outputs, in input pixels.
    pub stride: usize,
    /// Zero rows and columns added on every side.
    pub pad: usize,
}

impl Window {
    /// A "same" window: padding `kernel / 2`, so with stride 1 the output is as large as the
    /// input (odd kernels), and with stride `s` it is `⌈side / s⌉`.
    pub fn same(kernel: usize, stride: usize) -> Self {
        Window {
            kernel,
            stride,
            pad: kernel / 2,
        }
    }

    /// Output side for an input side: `(side + 2·pad − kernel) / stride + 1`, or `None` when the
    /// padded input is smaller than the kernel.
    pub fn output_side(&self, side: usize) -> Option<usize> {
        let padded = side + 2 * self.pad;
        (padded >= self.kernel && self.stride > 0).then(|| (padded - self.kernel) / self.stride + 1)
    }

    /// The output geometry with `channels` output channels, if the window fits.
    pub fn output(&self, input: Geometry, channels: usize) -> Option<Geometry> {
        Some(Geometry::new(
            self.output_side(input.height)?,
            self.output_side(input.width)?,
            channels,
        ))
    }

    /// Values in one patch row: `kernel · kernel · channels`.
    pub fn patch_len(&self, channels: usize) -> usize {
        self.kernel * self.kernel * channels
    }

    /// The input coordinate under kernel offset `k` of output coordinate `o`, if inside
    /// `0..side` (else it falls in the padding).
    fn source(&self, o: usize, k: usize, side: usize) -> Option<usize> {
        (o * self.stride + k)
            .checked_sub(self.pad)
            .filter(|&i| i < side)
    }
}

/// Gathers the patches of one image.
///
/// `x`: one image, `input.len()` values. `cols`: `(out_h · out_w, kernel² · channels)`,
/// row-major, every value written.
///
/// # Panics
/// If a slice length does not match the geometry.
pub fn im2col(x: &[f32], input: Geometry, win: Window, cols: &mut [f32]) {
    let (h, w, c) = (input.height, input.width, input.channels);
    let (oh, ow) = out_sides(input, win);
    let k = win.kernel;
    let row_len = win.patch_len(c);
    assert_eq!(x.len(), input.len(), "im2col: image is not {input}");
    assert_eq!(cols.len(), oh * ow * row_len, "im2col: patch matrix size");
    for (r, patch) in cols.chunks_exact_mut(row_len).enumerate() {
        let (oy, ox) = (r / ow, r % ow);
        // Where the kernel row starts and whether it lies wholly inside the image.
        let x0 = (ox * win.stride)
            .checked_sub(win.pad)
            .filter(|&x0| x0 + k <= w);
        for (ky, dst) in patch.chunks_exact_mut(k * c).enumerate() {
            let Some(iy) = win.source(oy, ky, h) else {
                dst.fill(0.0);
                continue;
            };
            let line = &x[iy * w * c..(iy + 1) * w * c];
            match x0 {
                Some(x0) => copy_row(dst, &line[x0 * c..(x0 + k) * c]),
                None => {
                    for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                        match win.source(ox, kx, w) {
                            Some(ix) => d.copy_from_slice(&line[ix * c..(ix + 1) * c]),
                            None => d.fill(0.0),
                        }
                    }
                }
            }
        }
    }
}

/// `dst.copy_from_slice(src)`, with the 3×3-kernel rows of an RGB image (9 values) copied
/// inline: a first layer gathers one such row per kernel row and output pixel, and a call to
/// `memcpy` for 36 bytes costs more than the copy.
#[inline]
fn copy_row(dst: &mut [f32], src: &[f32]) {
    match (
        <&mut [f32; 9]>::try_from(&mut *dst),
        <&[f32; 9]>::try_from(src),
    ) {
        (Ok(d), Ok(s)) => *d = *s,
        _ => dst.copy_from_slice(src),
    }
}

/// Adds the gradient of a patch matrix back onto the image it was gathered from: the adjoint
/// of [`im2col`]. `dcols` as `cols` there; `dx` (one image) is added to, not overwritten.
///
/// # Panics
/// If a slice length does not match the geometry.
pub fn col2im(dcols: &[f32], input: Geometry, win: Window, dx: &mut [f32]) {
    let (h, w, c) = (input.height, input.width, input.channels);
    let (oh, ow) = out_sides(input, win);
    let k = win.kernel;
    let row_len = win.patch_len(c);
    assert_eq!(dx.len(), input.len(), "col2im: image is not {input}");
    assert_eq!(dcols.len(), oh * ow * row_len, "col2im: patch matrix size");
    for (r, patch) in dcols.chunks_exact(row_len).enumerate() {
        let (oy, ox) = (r / ow, r % ow);
        for (ky, src) in patch.chunks_exact(k * c).enumerate() {
            let Some(iy) = win.source(oy, ky, h) else {
                continue;
            };
            let line = &mut dx[iy * w * c..(iy + 1) * w * c];
            for (kx, s) in src.chunks_exact(c).enumerate() {
                if let Some(ix) = win.source(ox, kx, w) {
                    for (d, &v) in line[ix * c..(ix + 1) * c].iter_mut().zip(s) {
                        *d += v;
                    }
                }
            }
        }
    }
}

/// Output height and width, for geometries already checked to fit.
fn out_sides(input: Geometry, win: Window) -> (usize, usize) {
    let side = |s: usize| win.output_side(s).unwrap_or(0);
    (side(input.height), side(input.width))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_windows_keep_or_halve_the_side() {
        assert_eq!(Window::same(3, 1).output_side(64), Some(64));
        assert_eq!(Window::same(3, 2).output_side(64), Some(32));
        assert_eq!(Window::same(3, 2).output_side(7), Some(4));
        assert_eq!(Window::same(5, 1).output_side(9), Some(9));
        assert_eq!(Window::same(1, 2).output_side(9), Some(5));
        let w = Window {
            kernel: 3,
            stride: 1,
            pad: 0,
        };
        assert_eq!(w.output_side(2), None);
    }

    #[test]
    fn im2col_gathers_patches_with_zero_padding() {
        // A 2×2 image with one channel: values 1 2 / 3 4.
        let g = Geometry::new(2, 2, 1);
        let x = [1.0, 2.0, 3.0, 4.0];
        let win = Window::same(3, 1);
        let mut cols = vec![f32::NAN; 4 * 9];
        im2col(&x, g, win, &mut cols);
        // The top-left output pixel sees the image in the kernel's lower-right 2×2 corner.
        assert_eq!(&cols[..9], &[0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 0.0, 3.0, 4.0]);
        // The bottom-right one sees it in the upper-left corner.
        assert_eq!(&cols[27..], &[1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        // <im2col(x), d> = <x, col2im(d)> for any x and d, with channels, stride and padding.
        for (g, win) in [
            (Geometry::new(5, 4, 3), Window::same(3, 1)),
            (Geometry::new(6, 7, 2), Window::same(3, 2)),
            (Geometry::new(5, 5, 2), Window::same(5, 1)),
            (Geometry::new(4, 6, 3), Window::same(1, 2)),
        ] {
            let out = win.output(g, 1).unwrap();
            let n = out.pixels() * win.patch_len(g.channels);
            let x: Vec<f32> = (0..g.len()).map(|i| ((i * 7) % 11) as f32 - 5.0).collect();
            let d: Vec<f32> = (0..n).map(|i| ((i * 5) % 13) as f32 - 6.0).collect();
            let mut cols = vec![0.0; n];
            im2col(&x, g, win, &mut cols);
            let mut dx = vec![0.0; g.len()];
            col2im(&d, g, win, &mut dx);
            let left: f32 = cols.iter().zip(&d).map(|(a, b)| a * b).sum();
            let right: f32 = x.iter().zip(&dx).map(|(a, b)| a * b).sum();
            assert_eq!(left, right, "{g} {win:?}");
        }
    }
}
