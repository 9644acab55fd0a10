//! Drawing a heat map over its photo: the photo at its own aspect ratio (shrunk to at most
//! [`MAX_SIDE`] pixels on its longer side), the map stretched over it bilinearly (the model
//! saw the photo stretched to its square, so each map cell covers the same share of the
//! photo), coloured from dark blue (cold) through green and yellow to red (hot) and blended
//! in proportion to its heat, so cold parts show the photo as it is. Then PNG bytes.
//!
//! Nothing here knows about networks: a photo and a grid of non-negative numbers in.

use image::RgbImage;
use image::imageops::FilterType;
use ndarray::Array2;

/// The longer side of an overlay, in pixels: enough to see a cat, small enough to send.
pub const MAX_SIDE: u32 = 640;

/// How strongly the hottest cell's colour covers the photo (0: not at all, 1: entirely).
const OPACITY: f32 = 0.6;

/// The colour scale, cold to hot: (position, RGB).
const SCALE: [(f32, [f32; 3]); 5] = [
    (0.0, [30.0, 20.0, 110.0]),
    (0.25, [30.0, 120.0, 240.0]),
    (0.5, [50.0, 210.0, 120.0]),
    (0.75, [250.0, 205.0, 40.0]),
    (1.0, [215.0, 25.0, 20.0]),
];

/// `photo` with `heat` over it, at most `max_side` pixels on its longer side, the photo's
/// aspect ratio kept. The map is scaled so its hottest cell is fully hot; an all-zero map
/// leaves the photo as it is.
pub fn overlay(photo: &RgbImage, heat: &Array2<f32>, max_side: u32) -> RgbImage {
    let (w, h) = fitted(photo.width(), photo.height(), max_side);
    let mut out = if (w, h) == photo.dimensions() {
        photo.clone()
    } else {
        image::imageops::resize(photo, w, h, FilterType::Triangle)
    };
    let peak = heat.iter().copied().fold(0.0f32, f32::max);
    if !(peak > 0.0 && peak.is_finite()) {
        return out;
    }
    for (x, y, px) in out.enumerate_pixels_mut() {
        let t = (sample(
            heat,
            (x as f32 + 0.5) / w as f32,
            (y as f32 + 0.5) / h as f32,
        ) / peak)
            .clamp(0.0, 1.0);
        let colour = colour(t);
        let a = OPACITY * t;
        for (v, c) in px.0.iter_mut().zip(colour) {
            *v = (f32::from(*v) * (1.0 - a) + c * a)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    out
}

/// `image` as PNG bytes.
///
/// # Errors
/// The encoder's message (it fails only on a zero-sized image).
pub fn png(image: &RgbImage) -> Result<Vec<u8>, String> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut bytes, image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the overlay as PNG: {e}"))?;
    Ok(bytes.into_inner())
}

/// A `width × height` size shrunk (never grown) so its longer side is at most `max_side`,
/// each side at least 1.
fn fitted(width: u32, height: u32, max_side: u32) -> (u32, u32) {
    let longer = width.max(height);
    if longer <= max_side {
        return (width.max(1), height.max(1));
    }
    let scale = f64::from(max_side) / f64::from(longer);
    let side = |s: u32| ((f64::from(s) * scale).round() as u32).max(1);
    (side(width), side(height))
}

/// The map's value at `(u, v)` in `[0, 1]²` (left to right, top to bottom), interpolated
/// bilinearly between cell centres, edges held.
fn sample(map: &Array2<f32>, u: f32, v: f32) -> f32 {
    let (rows, cols) = map.dim();
    let axis = |t: f32, n: usize| {
        let p = (t * n as f32 - 0.5).clamp(0.0, (n - 1) as f32);
        let i = (p.floor() as usize).min(n - 1);
        (i, (i + 1).min(n - 1), p - i as f32)
    };
    let (x0, x1, fx) = axis(u, cols);
    let (y0, y1, fy) = axis(v, rows);
    let top = map[[y0, x0]] * (1.0 - fx) + map[[y0, x1]] * fx;
    let bottom = map[[y1, x0]] * (1.0 - fx) + map[[y1, x1]] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The colour at `t` in `[0, 1]` on [`SCALE`].
fn colour(t: f32) -> [f32; 3] {
    for pair in SCALE.windows(2) {
        let ((t0, c0), (t1, c1)) = (pair[0], pair[1]);
        if t <= t1 {
            let f = ((t - t0) / (t1 - t0)).clamp(0.0, 1.0);
            return [0, 1, 2].map(|i| c0[i] + (c1[i] - c0[i]) * f);
        }
    }
    SCALE[SCALE.len() - 1].1
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn overlays_keep_the_photos_aspect_ratio_and_shrink_only_large_photos() {
        assert_eq!(fitted(1280, 640, 640), (640, 320));
        assert_eq!(fitted(300, 1200, 640), (160, 640));
        assert_eq!(fitted(200, 100, 640), (200, 100));
        let photo = RgbImage::from_pixel(1000, 500, image::Rgb([128, 128, 128]));
        let out = overlay(&photo, &array![[0.0, 1.0], [0.0, 1.0]], 640);
        assert_eq!(out.dimensions(), (640, 320));
        let decoded = image::load_from_memory(&png(&out).unwrap()).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (640, 320));
    }

    #[test]
    fn hot_cells_are_coloured_and_cold_ones_leave_the_photo() {
        let photo = RgbImage::from_pixel(40, 20, image::Rgb([128, 128, 128]));
        let out = overlay(&photo, &array![[0.0, 0.0, 1.0, 1.0]], 640);
        assert_eq!(out.get_pixel(2, 10).0, [128, 128, 128], "cold: the photo");
        let hot = out.get_pixel(38, 10).0;
        assert!(hot[0] > 160 && hot[2] < 100, "hot: red, got {hot:?}");
        let blank = overlay(&photo, &array![[0.0, 0.0]], 640);
        assert_eq!(blank, photo, "no heat, no change");
    }

    #[test]
    fn bilinear_sampling_meets_cell_centres_and_holds_edges() {
        let map = array![[0.0, 2.0]];
        assert_eq!(sample(&map, 0.25, 0.5), 0.0);
        assert_eq!(sample(&map, 0.75, 0.5), 2.0);
        assert!((sample(&map, 0.5, 0.5) - 1.0).abs() < 1e-6);
        assert_eq!(sample(&map, 0.0, 0.0), 0.0);
        assert_eq!(sample(&map, 1.0, 1.0), 2.0);
    }
}
