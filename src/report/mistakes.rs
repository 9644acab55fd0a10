//! The `mistakes` section: thumbnails of the most confidently wrong images, read again from
//! their files and embedded as PNG `data:` URIs.

use super::html::{escape, note, png_data_uri};
use crate::data::MAX_PIXELS;
use crate::metrics::Mistake;
use image::ImageDecoder;
use std::fmt::Write;
use std::io::Cursor;
use std::path::Path;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_PX: u32 = 96;

/// One figure per mistake, most confident first: the image, its true and predicted class,
/// the probability and the file name. A file that cannot be read again shows why instead.
pub fn mistakes(mistakes: &[Mistake]) -> String {
    if mistakes.is_empty() {
        return note("No evaluated image was classified wrongly.");
    }
    let mut out = format!(
        "<p>The {} wrong predictions the model was surest of, most confident first.</p>\n\
         <div class=\"mistakes\">\n",
        mistakes.len()
    );
    for m in mistakes {
        let picture = match thumbnail(&m.path) {
            // The thumbnail's own size: a square box would squash it again in the browser.
            Ok(t) => format!(
                "<img src=\"{}\" width=\"{}\" height=\"{}\" alt=\"{}\">",
                t.uri,
                t.width,
                t.height,
                escape(&m.path.display().to_string())
            ),
            Err(reason) => format!("<div class=\"missing\">{}</div>", escape(&reason)),
        };
        let name = m.path.file_name().unwrap_or(m.path.as_os_str());
        let _ = writeln!(
            out,
            "<figure class=\"mistake\">{picture}<figcaption>true <strong>{}</strong>, predicted \
             <strong>{}</strong> (p = {:.3})<br><span class=\"file\" title=\"{}\">{}</span></figcaption></figure>",
            escape(&m.truth),
            escape(&m.predicted),
            m.probability,
            escape(&m.path.display().to_string()),
            escape(&name.to_string_lossy()),
        );
    }
    out.push_str("</div>");
    out
}

/// A small picture of an image file, ready for an `<img>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Thumbnail {
    /// A PNG `data:` URI.
    pub uri: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// `path` decoded upright (its EXIF orientation applied), scaled to fit a [`THUMBNAIL_PX`]
/// square with its aspect ratio kept (a wide photo stays wide, not squashed as the network's
/// square input is), and encoded as a PNG `data:` URI; or why it cannot be.
pub fn thumbnail(path: &Path) -> Result<Thumbnail, String> {
    let cannot = |e: image::ImageError| format!("cannot decode: {e}");
    let reader = image::ImageReader::open(path)
        .map_err(|e| format!("cannot read: {e}"))?
        .with_guessed_format()
        .map_err(|e| format!("cannot read: {e}"))?;
    let mut decoder = reader.into_decoder().map_err(cannot)?;
    let (w, h) = decoder.dimensions();
    if u64::from(w) * u64::from(h) > MAX_PIXELS {
        return Err(format!("image is {w}×{h}, too large to show"));
    }
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut decoded = image::DynamicImage::from_decoder(decoder).map_err(cannot)?;
    decoded.apply_orientation(orientation);
    let small = decoded
        .resize(
            THUMBNAIL_PX,
            THUMBNAIL_PX,
            image::imageops::FilterType::Triangle,
        )
        .into_rgb8();
    let mut png = Vec::new();
    small
        .write_to(&mut Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| format!("cannot encode the thumbnail: {e}"))?;
    Ok(Thumbnail {
        uri: png_data_uri(&png),
        width: small.width(),
        height: small.height(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn a_thumbnail_is_a_png_data_uri_and_a_missing_file_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.png");
        image::RgbImage::from_pixel(40, 20, image::Rgb([200, 10, 10]))
            .save(&path)
            .unwrap();
        let t = thumbnail(&path).unwrap();
        assert_eq!((t.width, t.height), (96, 48));
        let uri = t.uri;
        assert!(
            uri.starts_with("data:image/png;base64,iVBORw0KGgo"),
            "{uri}"
        );
        // A 40×20 image stays twice as wide as high: 96×48, in the PNG header's IHDR.
        // (The first 24 bytes of a PNG, up to its height, are exactly 32 base64 digits.)
        let mut header = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
        header.extend([0, 0, 0, 96, 0, 0, 0, 48]);
        let want = format!(
            "data:image/png;base64,{}",
            super::super::html::base64(&header)
        );
        assert!(uri.starts_with(&want), "{uri}");
        let gone = Mistake {
            path: PathBuf::from("gone/<x>.jpg"),
            truth: "a".into(),
            predicted: "b&c".into(),
            probability: 0.9,
        };
        let wrong = Mistake {
            path: path.clone(),
            ..gone.clone()
        };
        let shown = mistakes(&[wrong]);
        assert!(shown.contains("width=\"96\" height=\"48\""), "{shown}");
        let html = mistakes(&[gone]);
        assert!(html.contains("class=\"missing\">cannot read"), "{html}");
        assert!(html.contains("&lt;x&gt;.jpg") && html.contains("b&amp;c"));
        assert!(!html.contains("<x>"));
    }
}
