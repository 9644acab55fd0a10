//! The `mistakes` section: thumbnails of the most confidently wrong images, read again from
//! their files and embedded as PNG `data:` URIs, each with the heat map of where the model
//! looked beside it when the model was at hand ([`overlays`]).

use super::html::{escape, note, png_data_uri};
use crate::data::MAX_PIXELS;
use crate::explain::{explain, overlay};
use crate::metrics::Mistake;
use crate::model::Model;
use image::ImageDecoder;
use std::fmt::Write;
use std::io::Cursor;
use std::path::Path;

/// Longest side of a thumbnail, in pixels.
pub const THUMBNAIL_PX: u32 = 96;

/// One figure per mistake, most confident first: the image, its overlay (the `overlays` entry
/// at the same index, when there is one), its true and predicted class, the probability and
/// the file name. A file that cannot be read again, or explained, shows why instead.
pub fn mistakes(mistakes: &[Mistake], overlays: &[Result<Thumbnail, String>]) -> String {
    if mistakes.is_empty() {
        return note("No evaluated image was classified wrongly.");
    }
    let mut out = format!(
        "<p>The {} wrong predictions the model was surest of, most confident first{}.</p>\n\
         <div class=\"mistakes\">\n",
        mistakes.len(),
        if overlays.is_empty() {
            ""
        } else {
            "; beside each, where the model looked for the class it predicted \
             (red: hot, blue: cold)"
        }
    );
    for (i, m) in mistakes.iter().enumerate() {
        let label = escape(&m.path.display().to_string());
        let mut picture = image_or_reason(&thumbnail(&m.path), "photo", &label);
        let explained = overlays.get(i).map(|o| {
            let alt = format!("heat map of {label}");
            image_or_reason(o, "overlay", &alt)
        });
        if let Some(o) = &explained {
            picture = format!("<div class=\"pair\">{picture}{o}</div>");
        }
        let name = m.path.file_name().unwrap_or(m.path.as_os_str());
        let _ = writeln!(
            out,
            "<figure class=\"mistake{}\">{picture}<figcaption>true <strong>{}</strong>, predicted \
             <strong>{}</strong> (p = {:.3})<br><span class=\"file\" title=\"{label}\">{}</span></figcaption></figure>",
            if explained.is_some() {
                " explained"
            } else {
                ""
            },
            escape(&m.truth),
            escape(&m.predicted),
            m.probability,
            escape(&name.to_string_lossy()),
        );
    }
    out.push_str("</div>");
    out
}

/// An `<img>` of class `class` for a picture, or a box saying why there is none.
fn image_or_reason(picture: &Result<Thumbnail, String>, class: &str, alt: &str) -> String {
    match picture {
        // The picture's own size: a square box would squash it again in the browser.
        Ok(t) => format!(
            "<img class=\"{class}\" src=\"{}\" width=\"{}\" height=\"{}\" alt=\"{alt}\">",
            t.uri, t.width, t.height,
        ),
        Err(reason) => format!("<div class=\"missing\">{}</div>", escape(reason)),
    }
}

/// Each mistake's heat-map overlay for the class `model` predicted (deepcat explain's, at the
/// thumbnail's size), in the same order: what the report shows beside each thumbnail.
pub fn overlays(model: &Model, mistakes: &[Mistake]) -> Vec<Result<Thumbnail, String>> {
    use rayon::prelude::*;
    mistakes
        .par_iter()
        .map(|m| overlay_thumbnail(model, &m.path))
        .collect()
}

/// `path` read again, explained by `model` and drawn with its heat map over it, the size of
/// its [`thumbnail`]; or why it cannot be.
pub fn overlay_thumbnail(model: &Model, path: &Path) -> Result<Thumbnail, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let (photo, row) = crate::data::decode_photo(&bytes, &model.preprocess, MAX_PIXELS)?;
    let explained = explain(model, &row, None).map_err(|e| format!("cannot explain: {e}"))?;
    // The same scaling as the thumbnail's (which may grow a small photo), then the heat.
    let small = image::DynamicImage::from(photo)
        .resize(
            THUMBNAIL_PX,
            THUMBNAIL_PX,
            image::imageops::FilterType::Triangle,
        )
        .into_rgb8();
    let drawn = overlay::overlay(&small, &explained.heat.map, THUMBNAIL_PX);
    let png = overlay::png(&drawn)?;
    Ok(Thumbnail {
        uri: png_data_uri(&png),
        width: drawn.width(),
        height: drawn.height(),
    })
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
        let shown = mistakes(&[wrong], &[]);
        assert!(shown.contains("width=\"96\" height=\"48\""), "{shown}");
        assert!(!shown.contains("overlay"), "{shown}");
        let html = mistakes(&[gone], &[]);
        assert!(html.contains("class=\"missing\">cannot read"), "{html}");
        assert!(html.contains("&lt;x&gt;.jpg") && html.contains("b&amp;c"));
        assert!(!html.contains("<x>"));
    }

    /// A dense model on 8×8 photos reading every pixel, with a sigmoid head.
    fn tiny_model() -> Model {
        use crate::loss::Head;
        use crate::nn::{Dense, Geometry, Network};
        let weight =
            ndarray::Array2::from_shape_fn(
                (1, 8 * 8 * 3),
                |(_, j)| {
                    if j % 2 == 0 { 0.02 } else { -0.01 }
                },
            );
        let network = Network::from_dense(vec![Dense::new(weight)], Head::Sigmoid)
            .with_input(Geometry::image(8));
        Model {
            network,
            classes: crate::model::Classes::new(vec!["a".into(), "b".into()], None).unwrap(),
            preprocess: crate::data::Preprocess {
                size: 8,
                ..crate::data::Preprocess::default()
            },
            tta: false,
        }
    }

    #[test]
    fn an_overlay_is_the_thumbnails_size_and_sits_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wide.png");
        image::RgbImage::from_fn(40, 20, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 12) as u8, 90])
        })
        .save(&path)
        .unwrap();
        let model = tiny_model();
        let wrong = Mistake {
            path: path.clone(),
            truth: "a".into(),
            predicted: "b".into(),
            probability: 0.8,
        };
        let gone = Mistake {
            path: dir.path().join("gone.png"),
            ..wrong.clone()
        };
        let drawn = overlays(&model, &[wrong.clone(), gone.clone()]);
        let o = drawn[0].as_ref().unwrap();
        let t = thumbnail(&path).unwrap();
        assert_eq!((o.width, o.height), (t.width, t.height));
        assert!(o.uri.starts_with("data:image/png;base64,") && o.uri != t.uri);
        assert!(drawn[1].as_ref().unwrap_err().starts_with("cannot read"));
        let html = mistakes(&[wrong, gone], &drawn);
        assert_eq!(html.matches("class=\"mistake explained\"").count(), 2);
        assert_eq!(html.matches("<img class=\"overlay\"").count(), 1, "{html}");
        assert!(
            html.contains("width=\"96\" height=\"48\" alt=\"heat map of"),
            "{html}"
        );
        assert_eq!(html.matches("class=\"missing\">cannot read").count(), 2);
    }
}
