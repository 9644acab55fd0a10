//! The HTML report end to end: the real `deepcat` binary trains on the bundled photos and
//! writes reports, which are then read back as a browser would need them: every section,
//! counts that add up, inline images that decode, nothing fetched from elsewhere, text
//! escaped.

mod common;

use common::{deepcat, repo, stderr_of};

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The sections every report has, by id (a browser test relies on these).
const SECTION_IDS: [&str; 9] = [
    "curves",
    "learning-rate",
    "confusion",
    "per-class",
    "roc",
    "mistakes",
    "config",
    "data",
    "timings",
];

/// A class name that must be escaped wherever it is shown.
const ODD_CLASS: &str = "<b>& noise";
const ODD_CLASS_ESCAPED: &str = "&lt;b&gt;&amp; noise";

fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    out
}

/// Copies the first `per_class` bundled photos of each class into `root`: cats as `cats`,
/// the random images under [`ODD_CLASS`]. Returns how many images there are.
fn bundled_subset(root: &Path, per_class: usize) -> usize {
    for (from, to) in [("cats", "cats"), ("random_images", ODD_CLASS)] {
        let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("data").join(from))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        let dir = root.join(to);
        std::fs::create_dir_all(&dir).unwrap();
        for f in &files[..per_class] {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
    }
    2 * per_class
}

/// Trains briefly on `data` (an under-trained model, so that it makes mistakes to show),
/// saving `model` and passing `extra`; returns the `--json` summary.
fn train(data: &Path, model: &Path, extra: &[&str]) -> Value {
    let out = succeeds(
        deepcat()
            .arg("train")
            .arg(data)
            .args(["--size", "32", "--iterations", "60", "--val-split", "0.2"])
            .args(["--json", "--quiet", "--model"])
            .arg(model)
            .args(extra),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap()).unwrap()
}

/// Every count in the confusion table's cells.
fn confusion_cells(html: &str) -> Vec<usize> {
    let table = section(html, "confusion");
    table
        .split("class=\"cell\"")
        .skip(1)
        .map(|c| {
            let text = &c[c.find('>').unwrap() + 1..c.find("</td>").unwrap()];
            text.parse().unwrap()
        })
        .collect()
}

/// The text of the section with this id.
fn section<'h>(html: &'h str, id: &str) -> &'h str {
    let start = html
        .find(&format!("<section id=\"{id}\">"))
        .unwrap_or_else(|| panic!("no section {id}"));
    let len = html[start..].find("</section>").unwrap();
    &html[start..start + len]
}

/// Standard base64 decoded: the test's own decoder, to check the report's encoder.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("{:?} is not a base64 digit", c as char),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut bytes = Vec::new();
    for group in digits.chunks(4) {
        let n = group
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        let produced = group.len() * 6 / 8;
        bytes.extend(&n.to_be_bytes()[1..1 + produced]);
    }
    bytes
}

/// Decodes every inline PNG of the page, returning their sizes, after checking that each
/// `<img>` tag gives the picture's own size (a square box would squash it in the browser).
fn inline_pngs(html: &str) -> Vec<(u32, u32)> {
    const PREFIX: &str = "src=\"data:image/png;base64,";
    html.match_indices(PREFIX)
        .map(|(at, _)| {
            let rest = &html[at + PREFIX.len()..];
            let data = &rest[..rest.find('"').unwrap()];
            let png = decode_base64(data);
            let image = image::load_from_memory_with_format(&png, image::ImageFormat::Png)
                .unwrap_or_else(|e| panic!("an inline PNG does not decode: {e}"));
            let (w, h) = (image.width(), image.height());
            let tag = &rest[data.len()..rest.find('>').unwrap()];
            let size = format!("width=\"{w}\" height=\"{h}\"");
            assert!(
                tag.contains(&size),
                "the <img> is not shown at {w}×{h}: {tag}"
            );
            (w, h)
        })
        .collect()
}

/// Each mistake's photo and heat-map overlay, decoded from the `mistakes` section: every
/// mistake has both, the same size, and the overlay is the photo with colour painted over it.
fn explained_mistakes(html: &str) -> Vec<(image::RgbImage, image::RgbImage)> {
    let mistakes = section(html, "mistakes");
    let figures: Vec<&str> = mistakes.split("<figure ").skip(1).collect();
    assert!(!figures.is_empty(), "no mistakes shown");
    let picture = |figure: &str, class: &str| -> image::RgbImage {
        let open = format!("<img class=\"{class}\" src=\"data:image/png;base64,");
        let at = figure
            .find(&open)
            .unwrap_or_else(|| panic!("a mistake without its {class}: {figure}"))
            + open.len();
        let data = &figure[at..at + figure[at..].find('"').unwrap()];
        image::load_from_memory_with_format(&decode_base64(data), image::ImageFormat::Png)
            .unwrap_or_else(|e| panic!("the {class} does not decode: {e}"))
            .into_rgb8()
    };
    figures
        .iter()
        .map(|f| {
            assert!(f.starts_with("class=\"mistake explained\""), "{f}");
            let (photo, overlay) = (picture(f, "photo"), picture(f, "overlay"));
            assert_eq!(photo.dimensions(), overlay.dimensions());
            (photo, overlay)
        })
        .collect()
}

/// Asserts that at least one overlay is not its photo: the heat is painted on.
fn some_heat_is_painted(pairs: &[(image::RgbImage, image::RgbImage)]) {
    assert!(
        pairs.iter().any(|(photo, overlay)| photo != overlay),
        "every overlay equals its photo"
    );
}

/// The headline figures: the block before the first section, each figure's label and value.
fn headline(html: &str) -> Vec<(String, String)> {
    let start = html
        .find("<section id=\"headline\"")
        .expect("no headline block");
    assert!(start < html.find("<section id=\"curves\">").unwrap());
    let block = &html[start..start + html[start..].find("</section>").unwrap()];
    let text_of = |part: &str, class: &str| -> String {
        let open = format!("<div class=\"{class}\">");
        let at = part.find(&open).unwrap() + open.len();
        part[at..at + part[at..].find("</div>").unwrap()].to_string()
    };
    block
        .split("<div class=\"figure")
        .skip(1)
        .map(|f| (text_of(f, "label"), text_of(f, "value")))
        .collect()
}

/// What every report must satisfy, whoever wrote it.
fn check_report(html: &str, evaluated: usize, classes: &[&str]) {
    for id in SECTION_IDS {
        let s = section(html, id);
        assert!(s.contains("<h2>"), "section {id} has no heading");
    }
    let cells = confusion_cells(html);
    assert_eq!(cells.len(), classes.len() * classes.len());
    assert_eq!(cells.iter().sum::<usize>(), evaluated);
    let per_class = section(html, "per-class");
    for class in classes {
        let row = format!("<th scope=\"row\">{class}</th>");
        assert!(per_class.contains(&row), "no per-class row {row}");
    }
    for link in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "href='http",
        "url(http",
    ] {
        assert!(!html.contains(link), "the report links outside: {link}");
    }
    assert!(
        !html.contains("<script"),
        "the report needs no scripts, and has none"
    );
}

#[test]
fn train_report_holds_every_section_with_valid_images_and_escaped_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    bundled_subset(&data, 60);
    let model = dir.path().join("m.safetensors");
    let report = dir.path().join("train.html");
    let summary = train(&data, &model, &["--report", report.to_str().unwrap()]);
    let html = std::fs::read_to_string(&report).unwrap();
    let test_size = summary["test_size"].as_u64().unwrap() as usize;
    check_report(&html, test_size, &["cats", ODD_CLASS_ESCAPED]);
    // The odd class name appears only escaped.
    assert!(!html.contains(ODD_CLASS) && html.contains(ODD_CLASS_ESCAPED));
    assert!(section(&html, "curves").contains("<svg"));
    assert!(section(&html, "roc").contains("AUC <strong>"));
    let thumbnails = inline_pngs(section(&html, "mistakes"));
    assert!(
        !thumbnails.is_empty(),
        "an under-trained model shows mistakes"
    );
    // Aspect kept: the longest side is 96 px.
    assert!(
        thumbnails.iter().all(|&(w, h)| w.max(h) == 96),
        "{thumbnails:?}"
    );
    // Each thumbnail has its heat-map overlay beside it.
    let pairs = explained_mistakes(&html);
    assert_eq!(2 * pairs.len(), thumbnails.len());
    some_heat_is_painted(&pairs);
    assert!(section(&html, "data").contains("training run: test"));
    assert!(section(&html, "timings").contains("training"));

    // The top: the test accuracy first, as the training run measured it, then each class's
    // F1, the ROC AUC, the images and the training time.
    let figures = headline(&html);
    let labels: Vec<&str> = figures.iter().map(|(l, _)| l.as_str()).collect();
    let f1 = format!("F1 {ODD_CLASS_ESCAPED}");
    // Classes in the model's order: '<' sorts before 'c'.
    let want = [
        "test accuracy",
        &f1,
        "F1 cats",
        "ROC AUC",
        "images",
        "training time",
    ];
    assert_eq!(labels, want, "{figures:?}");
    let accuracy = summary["test_accuracy"].as_f64().unwrap();
    assert_eq!(figures[0].1, format!("{:.1}%", 100.0 * accuracy));
    // The learning rate is drawn; the layers are rebuilt; the settings are a table.
    assert!(section(&html, "learning-rate").contains("<svg"));
    let config = section(&html, "config");
    assert!(config.contains("<pre class=\"summary\">") && config.contains("dense1"));
    assert!(config.contains("<th scope=\"row\">config.learning_rate</th>"));
    assert!(!config.contains("&quot;"), "the settings are shown as JSON");
}

/// The `training` metadata of a safetensors model file, parsed.
fn training_metadata(model: &Path) -> Value {
    let bytes = std::fs::read(model).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let training = header["__metadata__"]["training"].as_str().unwrap();
    serde_json::from_str(training).unwrap()
}

#[test]
fn report_command_reads_curves_from_the_model_and_scores_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let images = bundled_subset(&data, 40);
    let model = dir.path().join("m.safetensors");
    let summary = train(&data, &model, &[]);

    let training = training_metadata(&model);
    assert_eq!(training["test_accuracy"], summary["test_accuracy"]);
    assert_eq!(training["history"], summary["history"]);
    let counts = &training["counts"];
    let total: u64 = ["train", "val", "test"]
        .iter()
        .flat_map(|s| counts[s].as_object().unwrap().values())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(total as usize, images);
    assert_eq!(training["skipped"]["count"], 0);
    // Timings would make every save's bytes differ: they are in the report only.
    assert!(training["seconds"].is_null(), "{training}");
    assert!(training["steps"].is_number(), "the old keys stay");

    let out = dir.path().join("r.html");
    let printed = succeeds(
        deepcat()
            .arg("report")
            .arg(&model)
            .arg(&data)
            .arg("--out")
            .arg(&out),
    );
    assert!(String::from_utf8_lossy(&printed.stdout).contains("r.html"));
    let html = std::fs::read_to_string(&out).unwrap();
    check_report(&html, images, &["cats", ODD_CLASS_ESCAPED]);
    assert!(section(&html, "curves").contains("<svg"));
    assert!(section(&html, "config").contains("<th scope=\"row\">config.learning_rate</th>"));
    // A folder's accuracy comes first, then the test accuracy the model file records.
    let figures = headline(&html);
    assert_eq!(figures[0].0, "accuracy");
    assert_eq!(figures[1].0, "test accuracy when trained");
    assert!(section(&html, "data").contains("evaluated: "));
    for (w, h) in inline_pngs(&html) {
        assert_eq!(w.max(h), 96, "{w}×{h}");
    }
    if !section(&html, "mistakes").contains("No evaluated image was classified wrongly") {
        some_heat_is_painted(&explained_mistakes(&html));
    }
}

/// A three-class folder of small generated images: red, green and blue noise.
fn three_classes(root: &Path, per_class: u32) {
    for (class, base) in [
        ("blue", [40u8, 60, 200]),
        ("green", [40, 200, 60]),
        ("red", [200, 60, 40]),
    ] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let image = RgbImage::from_fn(12, 12, |x, y| {
                let n = ((x * 31 + y * 17 + i * 13) % 40) as u8;
                Rgb(base.map(|b| b.saturating_add(n)))
            });
            image.save(dir.join(format!("{class}_{i:02}.png"))).unwrap();
        }
    }
}

#[test]
fn a_three_class_report_says_roc_needs_two_classes() {
    let dir = tempfile::tempdir().unwrap();
    three_classes(&dir.path().join("data"), 12);
    let report = dir.path().join("three.html");
    let out = succeeds(
        deepcat()
            .current_dir(dir.path())
            .args([
                "train",
                "data",
                "--size",
                "12",
                "--iterations",
                "30",
                "--quiet",
            ])
            .args(["--json", "--report", "three.html"]),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    let test_size = summary["test_size"].as_u64().unwrap() as usize;
    check_report(&html, test_size, &["blue", "green", "red"]);
    assert!(section(&html, "roc").contains("applies to two classes only"));
}

#[test]
fn bad_inputs_are_refused_with_messages_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    three_classes(&d.join("data"), 6);
    let run = |args: &[&str]| deepcat().current_dir(d).args(args).output().unwrap();

    let out = run(&["report", "missing.safetensors", "data"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("missing.safetensors"),
        "{}",
        stderr_of(&out)
    );

    // A report folder that does not exist is refused before any image is read.
    let out = run(&[
        "train",
        "data",
        "--size",
        "12",
        "--report",
        "nowhere/r.html",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("--report nowhere/r.html: folder nowhere does not exist"));
    assert!(!d.join("model.safetensors").exists(), "training went ahead");

    let trained = run(&[
        "train",
        "data",
        "--size",
        "12",
        "--iterations",
        "5",
        "--quiet",
    ]);
    assert!(trained.status.success(), "{}", stderr_of(&trained));
    let out = run(&[
        "report",
        "model.safetensors",
        "data",
        "--out",
        "nowhere/r.html",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--out nowhere/r.html: folder nowhere does not exist"));

    // A folder whose classes are not the model's.
    std::fs::create_dir_all(d.join("other/birds")).unwrap();
    std::fs::copy(d.join("data/red/red_00.png"), d.join("other/birds/b.png")).unwrap();
    let out = run(&["report", "model.safetensors", "other", "--out", "r.html"]);
    assert_eq!(out.status.code(), Some(1));
    let message = stderr_of(&out);
    assert!(
        message.contains("birds") && message.contains("not one of the classes"),
        "{message}"
    );
    assert!(!d.join("r.html").exists());

    // A "folder" that is a file cannot hold the report.
    std::fs::write(d.join("notes.txt"), b"text").unwrap();
    let out = run(&[
        "report",
        "model.safetensors",
        "data",
        "--out",
        "notes.txt/r.html",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out).contains("does not exist"),
        "{}",
        stderr_of(&out)
    );

    #[cfg(unix)]
    if !running_as_root() {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir(d.join("locked")).unwrap();
        std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o555)).unwrap();
        let out = run(&[
            "report",
            "model.safetensors",
            "data",
            "--out",
            "locked/r.html",
        ]);
        assert!(!out.status.success());
        assert!(
            stderr_of(&out).contains("cannot write in folder locked"),
            "{}",
            stderr_of(&out)
        );
    }
}

/// Root may write in a read-only folder, so that check cannot be made as root.
#[cfg(unix)]
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("Uid:"))?.to_string();
            Some(line.split_whitespace().nth(1)? == "0")
        })
        .unwrap_or(false)
}

#[test]
fn the_report_opens_in_a_real_browser_with_every_section() {
    let Some(browser) = common::browser::launch() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    bundled_subset(&data, 40);
    let page = dir.path().join("report.html");
    train(
        &data,
        &dir.path().join("m.safetensors"),
        &["--report", page.to_str().unwrap()],
    );
    browser.open(&format!("file://{}", page.display()));
    for id in SECTION_IDS {
        let selector = format!("section#{id}");
        browser.wait_for(&selector);
        let shown = browser.text(&selector);
        assert!(
            shown.lines().count() > 1,
            "section {id} shows no more than its heading: {shown:?}"
        );
    }
    // The class name with markup in it is shown as text, not taken as markup.
    assert!(browser.text("section#per-class").contains(ODD_CLASS));
}
