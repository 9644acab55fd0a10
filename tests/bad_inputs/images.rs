//! Image files as people keep them: empty, cut short, misnamed, rotated, 16-bit, CMYK,
//! animated, enormous, unreadable, linked in loops, oddly named, hidden.

use super::{
    deepcat, deepcat_unprivileged, fails_with, fixture, make_fifo, solid_ish, stderr_of, succeeds,
    synthetic,
};
use deepcat::data::{Preprocess, ResizeFilter, load_one};
use image::codecs::gif::GifEncoder;
use image::{Delay, Frame, ImageBuffer, Rgb, Rgba, RgbaImage};
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

fn pre(size: u32) -> Preprocess {
    Preprocess {
        size,
        filter: ResizeFilter::Nearest,
        exif_orientation: true,
    }
}

/// The pixel at (x, y) of a loaded row, as 0–255 values.
fn pixel(row: &[f32], size: u32, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * size + x) * 3) as usize;
    let v = |k: usize| (row[i + k] * 255.0).round() as u8;
    [v(0), v(1), v(2)]
}

fn close(got: [u8; 3], want: [u8; 3], tolerance: u8) -> bool {
    got.iter()
        .zip(want)
        .all(|(&g, w)| g.abs_diff(w) <= tolerance)
}

/// The JSON object `train --json` prints last.
fn train_json(out: &std::process::Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().expect("train printed something");
    serde_json::from_str(line).expect("the last line is JSON")
}

/// Arguments of a small, quick `deepcat train` on `root` that prints JSON.
fn quick_train_args(root: &Path, model: &Path) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = vec!["train".into(), root.into()];
    for a in [
        "--size",
        "8",
        "--layers",
        "4",
        "--iterations",
        "5",
        "--quiet",
        "--json",
    ] {
        args.push(a.into());
    }
    args.push("--model".into());
    args.push(model.into());
    args
}

/// `deepcat` with [`quick_train_args`].
fn quick_train(root: &Path, model: &Path) -> assert_cmd::Command {
    let mut cmd = deepcat();
    cmd.args(quick_train_args(root, model))
        .timeout(Duration::from_secs(60));
    cmd
}

fn skipped_reasons(json: &Value) -> Vec<(String, String)> {
    json["skipped"]
        .as_array()
        .expect("skipped is a list")
        .iter()
        .map(|s| {
            let path = s["path"].as_str().unwrap_or_default();
            let name = Path::new(path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, s["reason"].as_str().unwrap_or_default().to_string())
        })
        .collect()
}

#[test]
fn empty_misnamed_and_cut_short_files_are_skipped_with_their_reason() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    std::fs::write(p("zero.jpg"), b"").unwrap();
    std::fs::write(p("notes.jpg"), b"shopping list: milk, eggs").unwrap();
    std::fs::write(
        p("random.png"),
        (0..=255u8).cycle().take(5000).collect::<Vec<_>>(),
    )
    .unwrap();
    solid_ish(&p("whole.png"), [10, 20, 30], 1);
    solid_ish(&p("whole.jpg"), [10, 20, 30], 1);
    for ext in ["png", "jpg"] {
        let bytes = std::fs::read(p(&format!("whole.{ext}"))).unwrap();
        std::fs::write(p(&format!("cut.{ext}")), &bytes[..bytes.len() / 2]).unwrap();
    }
    let reason = |name: &str| load_one(&p(name), &pre(8)).unwrap_err();
    assert_eq!(reason("zero.jpg"), "empty file");
    assert!(reason("notes.jpg").contains("not an image"));
    assert!(reason("random.png").contains("not an image"));
    assert!(
        reason("cut.png").contains("cannot decode PNG"),
        "{}",
        reason("cut.png")
    );
    assert!(
        reason("cut.jpg").contains("cannot decode JPG"),
        "{}",
        reason("cut.jpg")
    );
    assert!(load_one(&p("whole.png"), &pre(8)).is_ok());
    assert!(load_one(&p("whole.jpg"), &pre(8)).is_ok());
}

#[test]
fn an_image_without_an_extension_is_recognised_by_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let named = dir.path().join("photo.png");
    solid_ish(&named, [200, 0, 0], 0);
    let bare = dir.path().join("IMG_0001");
    std::fs::rename(&named, &bare).unwrap();
    let row = load_one(&bare, &pre(4)).unwrap();
    assert!(pixel(&row, 4, 0, 0)[0] >= 200);
}

#[test]
fn an_exif_rotated_photo_is_turned_upright() {
    // Stored 64×32, left red and right blue, tagged "rotate 90° clockwise".
    let path = fixture("exif-rotated.jpg");
    let upright = load_one(&path, &pre(8)).unwrap();
    assert!(
        close(pixel(&upright, 8, 0, 0), [255, 0, 0], 40),
        "top is red"
    );
    assert!(
        close(pixel(&upright, 8, 7, 0), [255, 0, 0], 40),
        "top right too"
    );
    assert!(
        close(pixel(&upright, 8, 0, 7), [0, 0, 255], 40),
        "bottom is blue"
    );
    // A model saved before orientation was applied keeps seeing the photo as stored.
    let as_stored = load_one(
        &path,
        &Preprocess {
            exif_orientation: false,
            ..pre(8)
        },
    )
    .unwrap();
    assert!(close(pixel(&as_stored, 8, 0, 0), [255, 0, 0], 40));
    assert!(
        close(pixel(&as_stored, 8, 7, 0), [0, 0, 255], 40),
        "stored: right is blue"
    );
}

#[test]
fn a_16_bit_png_becomes_8_bit_rgb() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.png");
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> =
        ImageBuffer::from_pixel(4, 4, Rgb([65535, 32896, 0]));
    img.save(&path).unwrap();
    let row = load_one(&path, &pre(4)).unwrap();
    assert_eq!(pixel(&row, 4, 2, 2), [255, 128, 0]);
}

#[test]
fn a_cmyk_jpeg_becomes_rgb() {
    // Made by Pillow from RGB (200, 100, 50).
    let row = load_one(&fixture("cmyk.jpg"), &pre(4)).unwrap();
    let got = pixel(&row, 4, 1, 1);
    assert!(close(got, [200, 100, 50], 12), "{got:?}");
}

#[test]
fn an_animated_gif_gives_its_first_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("anim.gif");
    let frame = |c: [u8; 4]| {
        Frame::from_parts(
            RgbaImage::from_pixel(6, 6, Rgba(c)),
            0,
            0,
            Delay::from_numer_denom_ms(100, 1),
        )
    };
    let file = std::fs::File::create(&path).unwrap();
    GifEncoder::new(file)
        .encode_frames([frame([0, 255, 0, 255]), frame([255, 0, 255, 255])])
        .unwrap();
    let row = load_one(&path, &pre(6)).unwrap();
    assert!(
        close(pixel(&row, 6, 3, 3), [0, 255, 0], 8),
        "first frame is green"
    );
}

/// A PNG whose header declares `width × height` RGB pixels, followed by a few bytes of data:
/// what a decompression bomb looks like before its pixels are decoded.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &[0x78, 0x9c, 0x63, 0, 0, 0, 1, 0, 1]);
    chunk(&mut png, b"IEND", &[]);
    png
}

#[test]
fn a_decompression_bomb_is_refused_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let bomb = dir.path().join("bomb.png");
    // 60000 × 60000 RGB: 10.8 GB once decoded, from a 70-byte file.
    std::fs::write(&bomb, png_declaring(60_000, 60_000)).unwrap();
    let reason = load_one(&bomb, &pre(8)).unwrap_err();
    assert!(
        reason.contains("3600 megapixels") && reason.contains("limit"),
        "{reason}"
    );
    // Just above the documented limit of 100 megapixels.
    std::fs::write(&bomb, png_declaring(10_001, 10_000)).unwrap();
    assert!(
        load_one(&bomb, &pre(8))
            .unwrap_err()
            .contains("limit of 100 megapixels")
    );
}

#[test]
fn links_loops_pipes_hidden_and_oddly_named_files_in_a_real_run() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 12);
    let cats = root.join("cats");
    // Hidden files are never photos: ignored, not even reported.
    std::fs::write(cats.join(".DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    std::fs::write(cats.join("._cats_000.png"), b"\0\x05\x16\x07").unwrap();
    // Unicode and non-UTF-8 names are ordinary files.
    solid_ish(&cats.join("猫 🐱 photo.png"), [200, 60, 40], 99);
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::symlink;
        let latin1 = std::ffi::OsStr::from_bytes(b"caf\xe9.png");
        solid_ish(&cats.join(latin1), [200, 60, 40], 98);
        symlink(&root, cats.join("back-to-root")).unwrap();
        symlink(cats.join("loop"), cats.join("loop")).unwrap();
        make_fifo(&cats.join("pipe.png"));
    }
    let model = dir.path().join("m.safetensors");
    let out =
        succeeds(quick_train(&root, &model).args(["--test-split", "0.25", "--max-skipped", "0.5"]));
    let json = train_json(&out);
    let used = json["train_size"].as_u64().unwrap() + json["test_size"].as_u64().unwrap();
    let reasons = skipped_reasons(&json);
    assert!(
        reasons.iter().all(|(n, _)| !n.starts_with('.')),
        "{reasons:?}"
    );
    if cfg!(unix) {
        assert_eq!(used, 24 + 2, "both oddly named photos are used");
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        let has = |name: &str, why: &str| reasons.iter().any(|(n, r)| n == name && r.contains(why));
        assert!(has("back-to-root", "link to a folder"), "{reasons:?}");
        assert!(has("loop", "looping link"), "{reasons:?}");
        assert!(has("pipe.png", "not a regular file"), "{reasons:?}");
    }
}

#[cfg(unix)]
#[test]
fn an_unreadable_file_is_skipped_with_permission_denied() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 12);
    let locked = root.join("cats/locked.png");
    solid_ish(&locked, [200, 60, 40], 7);
    std::fs::set_permissions(&locked, std::fs::Permissions::from_mode(0o000)).unwrap();
    let model = dir.path().join("m.safetensors");
    let mut cmd = deepcat_unprivileged(
        &quick_train_args(&root, &model),
        &[dir.path(), root.as_path()],
    );
    cmd.timeout(Duration::from_secs(60));
    let out = succeeds(&mut cmd);
    let reasons = skipped_reasons(&train_json(&out));
    assert!(
        reasons
            .iter()
            .any(|(n, r)| n == "locked.png" && r.contains("ermission denied")),
        "{reasons:?}"
    );
}

#[test]
fn a_folder_of_mostly_broken_files_stops_instead_of_training_on_scraps() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 10);
    for i in 0..6 {
        std::fs::write(root.join(format!("dogs/broken_{i}.jpg")), b"not a jpeg").unwrap();
    }
    let model = dir.path().join("m.safetensors");
    // 6 of 26 files (23%) are unusable: above the default of 10%.
    fails_with(
        &mut quick_train(&root, &model),
        1,
        &["6 of 26 files", "--max-skipped"],
    );
    assert!(!model.exists(), "nothing is trained or saved");
    let out = succeeds(quick_train(&root, &model).args(["--max-skipped", "0.3"]));
    assert_eq!(skipped_reasons(&train_json(&out)).len(), 6);
    fails_with(
        quick_train(&root, &model).args(["--max-skipped", "2"]),
        2,
        &["--max-skipped must be between 0 and 1"],
    );
}

#[cfg(unix)]
#[test]
fn predict_never_waits_on_a_named_pipe_or_follows_a_link_loop() {
    use std::os::unix::fs::symlink;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    synthetic(&root, 6);
    let model = dir.path().join("m.safetensors");
    succeeds(&mut quick_train(&root, &model));
    let fifo = dir.path().join("photo.jpg");
    make_fifo(&fifo);
    // Named on the command line, the pipe is reported, not opened (opening would block).
    let err = fails_with(
        deepcat()
            .arg("predict")
            .arg(&model)
            .arg(&fifo)
            .timeout(Duration::from_secs(60)),
        1,
        &["photo.jpg", "not a regular file"],
    );
    assert!(!err.contains("timeout"), "{err}");
    // A folder with a link back to itself is searched once.
    symlink(&root, root.join("cats/again")).unwrap();
    let out = succeeds(
        deepcat()
            .args(["predict", "--json"])
            .arg(&model)
            .arg(root.join("cats"))
            .timeout(Duration::from_secs(60)),
    );
    let lines = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(lines, 6, "each cat once");
    assert!(stderr_of(&out).contains("link to a folder (not followed)"));
}
