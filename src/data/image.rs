//! Decoding one file into one row of the data matrix: decode → RGB → square resize → flatten.
//! Rows stay bytes; the network reads each byte `v` as `v / 255`
//! ([`crate::linalg::bytes::unit`]).
//!
//! The format is found from the file's content, not its name, so a text file called `x.jpg`
//! is reported as "not an image" and an image without an extension is read. Grayscale, alpha,
//! palette, 16-bit and CMYK images become 8-bit RGB (alpha is dropped, as Pillow's
//! `convert("RGB")` does); an animated GIF gives its first frame. A phone photo stored on its
//! side with an EXIF orientation tag is turned upright first, as a photo viewer shows it.
//!
//! Memory is bounded: files are streamed, not read whole, and an image declaring more than
//! [`MAX_PIXELS`] is refused from its header, before any pixel is decoded (a decompression
//! bomb is a small file that claims billions of pixels).

use super::{Dataset, LabelledFile, SkippedFile};
use crate::linalg::bytes::unit;
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};
use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, Limits, RgbImage};

use std::path::Path;

/// RGB: three values per pixel.
pub const CHANNELS: usize = 3;

/// The largest image decoded: 100 megapixels (e.g. 12500×8000). Larger ones are skipped with
/// a reason. Decoding one takes up to about 1 GiB (16-bit RGBA plus the RGB copy), once per
/// loading thread.
pub const MAX_PIXELS: u64 = 100_000_000;

/// What one decoder may allocate, beyond the image itself (the decoders' own buffers).
const MAX_DECODE_BYTES: u64 = 1 << 30;

/// The filter used to resize images to the network's square input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResizeFilter {
    /// Nearest neighbour: the document's loader (Keras `load_img`) default.
    Nearest,
    /// Bilinear interpolation.
    Bilinear,
    /// Lanczos (a = 3): sharpest, slowest.
    Lanczos,
}

impl ResizeFilter {
    /// The lower-case name used on the command line and in model files.
    pub fn name(self) -> &'static str {
        match self {
            ResizeFilter::Nearest => "nearest",
            ResizeFilter::Bilinear => "bilinear",
            ResizeFilter::Lanczos => "lanczos",
        }
    }

    /// Parses a name written by [`name`](ResizeFilter::name).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "nearest" => Some(ResizeFilter::Nearest),
            "bilinear" => Some(ResizeFilter::Bilinear),
            "lanczos" => Some(ResizeFilter::Lanczos),
            _ => None,
        }
    }

    fn algorithm(self) -> ResizeAlg {
        match self {
            ResizeFilter::Nearest => ResizeAlg::Nearest,
            ResizeFilter::Bilinear => ResizeAlg::Convolution(FilterType::Bilinear),
            ResizeFilter::Lanczos => ResizeAlg::Convolution(FilterType::Lanczos3),
        }
    }
}

/// How an image becomes a row of features. A model file records it, so prediction repeats it
/// exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preprocess {
    /// Side of the square the image is resized to (the document: 128).
    pub size: u32,
    /// The resize filter (the document: nearest).
    pub filter: ResizeFilter,
    /// Whether an EXIF orientation tag is applied before resizing (models saved before deepcat
    /// applied it record `false`).
    pub exif_orientation: bool,
}

impl Default for Preprocess {
    fn default() -> Self {
        Preprocess {
            size: 128,
            filter: ResizeFilter::Nearest,
            exif_orientation: true,
        }
    }
}

impl Preprocess {
    /// Values per image: `size × size × 3`, in row, column, channel order (HWC, as the
    /// document's `reshape` of Keras arrays).
    pub fn features(&self) -> usize {
        self.size as usize * self.size as usize * CHANNELS
    }
}

/// Decodes `path` to `pre.size`² RGB bytes, or says why the file cannot be used, in words
/// for the user.
fn decode_rgb(path: &Path, pre: &Preprocess, resizer: &mut Resizer) -> Result<Vec<u8>, String> {
    // Asked before opening: opening a named pipe blocks until something writes to it, and a
    // device may never end.
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if meta.is_dir() {
        return Err("a folder, not an image".into());
    }
    if !meta.is_file() {
        return Err("not a regular file (a pipe, socket or device), not an image".into());
    }
    if meta.len() == 0 {
        return Err("empty file".into());
    }
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let reader = image::ImageReader::new(std::io::BufReader::new(file))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    decode_reader(reader, pre, resizer, MAX_PIXELS)
}

/// Decodes an image already in memory (an upload) to `pre.size`² RGB bytes, exactly as
/// [`load_bytes`] decodes a file, refusing from its header an image of more than `max_pixels`.
///
/// # Errors
/// A sentence saying why the bytes cannot be used: empty, not an image, truncated or corrupt,
/// or too many pixels.
pub fn decode_image_bytes(
    bytes: &[u8],
    pre: &Preprocess,
    max_pixels: u64,
) -> Result<Vec<u8>, String> {
    if bytes.is_empty() {
        return Err("empty image (no bytes)".into());
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    decode_reader(reader, pre, &mut Resizer::new(), max_pixels)
}

/// The shared part of decoding: format, pixel limit (from the header), orientation, RGB,
/// resize.
fn decode_reader<R: std::io::BufRead + std::io::Seek>(
    reader: image::ImageReader<R>,
    pre: &Preprocess,
    resizer: &mut Resizer,
    max_pixels: u64,
) -> Result<Vec<u8>, String> {
    let rgb = decode_upright(reader, pre, max_pixels)?;
    resize_rgb(&rgb, pre, resizer)
}

/// Decodes the photo as a person sees it, before resizing: format, pixel limit (from the
/// header), orientation (when `pre` applies it), RGB.
fn decode_upright<R: std::io::BufRead + std::io::Seek>(
    mut reader: image::ImageReader<R>,
    pre: &Preprocess,
    max_pixels: u64,
) -> Result<RgbImage, String> {
    let Some(format) = reader.format() else {
        return Err("not an image (unrecognised content)".into());
    };
    let name = format
        .extensions_str()
        .first()
        .copied()
        .unwrap_or("image")
        .to_uppercase();
    let cannot = |e: image::ImageError| format!("cannot decode {name}: {e}");
    let mut limits = Limits::default();
    limits.max_alloc = Some(MAX_DECODE_BYTES);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    let (w, h) = decoder.dimensions();
    if w == 0 || h == 0 {
        return Err("image has no pixels".into());
    }
    let pixels = u64::from(w) * u64::from(h);
    if pixels > max_pixels {
        return Err(format!(
            "image is {w}×{h} ({} megapixels), above the limit of {} megapixels (a \
             decompression bomb, or a picture too large to load); shrink it to use it",
            pixels / 1_000_000,
            max_pixels / 1_000_000
        ));
    }
    // An unreadable orientation tag is not worth losing the photo for.
    let orientation = if pre.exif_orientation {
        decoder.orientation().unwrap_or(Orientation::NoTransforms)
    } else {
        Orientation::NoTransforms
    };
    let mut decoded = DynamicImage::from_decoder(decoder).map_err(cannot)?;
    decoded.apply_orientation(orientation);
    // `into_rgb8` keeps an RGB image as it is; `to_rgb8` would copy it (twice the memory of
    // the largest image, which the server's decode budget counts on not happening).
    Ok(decoded.into_rgb8())
}

/// An upright RGB photo resized to `pre.size`² bytes (row, column, RGB).
fn resize_rgb(rgb: &RgbImage, pre: &Preprocess, resizer: &mut Resizer) -> Result<Vec<u8>, String> {
    let (w, h) = rgb.dimensions();
    if w == pre.size && h == pre.size {
        return Ok(rgb.as_raw().clone());
    }
    let src = ImageRef::new(w, h, rgb.as_raw(), PixelType::U8x3)
        .map_err(|e| format!("cannot resize: {e}"))?;
    let mut dst = Image::new(pre.size, pre.size, PixelType::U8x3);
    let options = ResizeOptions::new().resize_alg(pre.filter.algorithm());
    resizer
        .resize(&src, &mut dst, &options)
        .map_err(|e| format!("cannot resize: {e}"))?;
    Ok(dst.into_vec())
}

/// A photo in memory both as a person sees it (upright RGB, full size) and as the model
/// reads it (`pre.size`² bytes, exactly as [`decode_image_bytes`] makes them): what a heat
/// map is drawn over.
///
/// # Errors
/// As [`decode_image_bytes`].
pub fn decode_photo(
    bytes: &[u8],
    pre: &Preprocess,
    max_pixels: u64,
) -> Result<(RgbImage, Vec<u8>), String> {
    if bytes.is_empty() {
        return Err("empty image (no bytes)".into());
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let rgb = decode_upright(reader, pre, max_pixels)?;
    let row = resize_rgb(&rgb, pre, &mut Resizer::new())?;
    Ok((rgb, row))
}

/// Decodes `path` into `row` (`features` bytes, height × width × RGB).
///
/// # Errors
/// A sentence saying why the file cannot be used (it is then skipped, not fatal).
pub fn load_into(
    path: &Path,
    pre: &Preprocess,
    resizer: &mut Resizer,
    row: &mut [u8],
) -> Result<(), String> {
    let pixels = decode_rgb(path, pre, resizer)?;
    debug_assert_eq!(pixels.len(), row.len());
    row.copy_from_slice(&pixels);
    Ok(())
}

/// One image as its `(features,)` bytes.
///
/// # Errors
/// Why the file cannot be used.
pub fn load_bytes(path: &Path, pre: &Preprocess) -> Result<Vec<u8>, String> {
    decode_rgb(path, pre, &mut Resizer::new())
}

/// One image as a `(features,)` row of values in `[0, 1]`.
///
/// # Errors
/// Why the file cannot be used.
pub fn load_one(path: &Path, pre: &Preprocess) -> Result<Vec<f32>, String> {
    Ok(load_bytes(path, pre)?.into_iter().map(unit).collect())
}

/// Decodes `files` in parallel into a [`Dataset`] of shape `(loaded, features)`, without a
/// cache. Files that cannot be used are left out and returned as [`SkippedFile`]s, in input
/// order.
pub fn load_dataset(files: &[LabelledFile], pre: &Preprocess) -> (Dataset, Vec<SkippedFile>) {
    let (mut sets, skipped, _) = super::load::load_parts(&[files], pre, None);
    (sets.pop().unwrap_or_default(), skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayAlphaImage, GrayImage, ImageBuffer, Rgb, RgbImage, RgbaImage};

    fn pre(size: u32) -> Preprocess {
        Preprocess {
            size,
            filter: ResizeFilter::Nearest,
            exif_orientation: true,
        }
    }

    #[test]
    fn gray_and_alpha_images_become_rgb() {
        let dir = tempfile::tempdir().unwrap();
        let gray = dir.path().join("gray.png");
        GrayImage::from_pixel(4, 4, image::Luma([51]))
            .save(&gray)
            .unwrap();
        let row = load_one(&gray, &pre(4)).unwrap();
        assert_eq!(row.len(), 48);
        assert!(
            row.iter().all(|&v| (v - 0.2).abs() < 1e-6),
            "gray 51 → 0.2 in all three channels"
        );

        let ga = dir.path().join("ga.png");
        GrayAlphaImage::from_pixel(4, 4, image::LumaA([255, 0]))
            .save(&ga)
            .unwrap();
        let row = load_one(&ga, &pre(4)).unwrap();
        assert!(
            row.iter().all(|&v| v == 1.0),
            "alpha is dropped, not blended"
        );

        let rgba = dir.path().join("rgba.png");
        RgbaImage::from_pixel(4, 4, image::Rgba([255, 0, 51, 10]))
            .save(&rgba)
            .unwrap();
        let row = load_one(&rgba, &pre(4)).unwrap();
        assert_eq!(&row[..3], &[1.0, 0.0, 0.2]);
    }

    #[test]
    fn flattening_is_row_column_channel() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let img: RgbImage =
            ImageBuffer::from_fn(2, 2, |x, y| Rgb([(10 * x) as u8, (100 * y) as u8, 7]));
        img.save(&path).unwrap();
        let row = load_one(&path, &pre(2)).unwrap();
        let bytes: Vec<u8> = row.iter().map(|v| (v * 255.0).round() as u8).collect();
        // (y=0,x=0) (y=0,x=1) (y=1,x=0) (y=1,x=1), each R G B.
        assert_eq!(bytes, vec![0, 0, 7, 10, 0, 7, 0, 100, 7, 10, 100, 7]);
    }

    #[test]
    fn nearest_resize_of_a_solid_image_stays_solid_and_sizes_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("solid.jpg");
        RgbImage::from_pixel(30, 20, Rgb([200, 100, 0]))
            .save(&path)
            .unwrap();
        for filter in [
            ResizeFilter::Nearest,
            ResizeFilter::Bilinear,
            ResizeFilter::Lanczos,
        ] {
            let row = load_one(
                &path,
                &Preprocess {
                    size: 16,
                    filter,
                    exif_orientation: true,
                },
            )
            .unwrap();
            assert_eq!(row.len(), 16 * 16 * 3);
            // JPEG is lossy: allow a few levels.
            assert!(
                (row[0] - 200.0 / 255.0).abs() < 0.03,
                "{filter:?}: {}",
                row[0]
            );
        }
    }

    #[test]
    fn bad_files_say_why() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        assert_eq!(load_one(&empty, &pre(8)).unwrap_err(), "empty file");
        let text = dir.path().join("notes.jpg");
        std::fs::write(&text, b"these are not pixels").unwrap();
        assert!(
            load_one(&text, &pre(8))
                .unwrap_err()
                .contains("not an image")
        );
        let png = dir.path().join("cut.png");
        RgbImage::from_pixel(64, 64, Rgb([1, 2, 3]))
            .save(&png)
            .unwrap();
        let bytes = std::fs::read(&png).unwrap();
        std::fs::write(&png, &bytes[..bytes.len() / 2]).unwrap();
        assert!(
            load_one(&png, &pre(8))
                .unwrap_err()
                .contains("cannot decode PNG")
        );
        let missing = dir.path().join("missing.png");
        assert!(
            load_one(&missing, &pre(8))
                .unwrap_err()
                .contains("cannot read")
        );
    }

    #[test]
    fn dataset_loading_skips_bad_files_and_keeps_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        for i in 0..5u8 {
            let path = dir.path().join(format!("{i}.png"));
            if i == 2 {
                std::fs::write(&path, b"junk").unwrap();
            } else {
                RgbImage::from_pixel(3, 3, Rgb([i * 50, 0, 0]))
                    .save(&path)
                    .unwrap();
            }
            files.push(LabelledFile {
                path,
                label: usize::from(i % 2),
            });
        }
        let (data, skipped) = load_dataset(&files, &pre(3));
        assert_eq!(data.x.dim(), (4, 27));
        assert_eq!(data.labels, vec![0, 1, 1, 0]);
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].path.ends_with("2.png"));
        let reds: Vec<u8> = data.x.column(0).to_vec();
        assert_eq!(reds, vec![0, 50, 150, 200]);
    }
}
