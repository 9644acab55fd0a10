//! `deepcat explain` end to end: the real binary draws overlays for a tiny CNN trained on the
//! bundled photos and for the committed version-1 (dense) model; each PNG decodes with its
//! photo's aspect ratio; refusals are clear. (The maths is tested in `src/explain/tests.rs`.)

mod common;

use common::{deepcat, repo, stderr_of};

use serde_json::Value;
use std::path::{Path, PathBuf};

fn json_lines(output: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// A bundled photo stretched to `w × h` and saved as PNG in `dir`: a real photo that is not
/// square.
fn stretched(dir: &Path, w: u32, h: u32) -> PathBuf {
    let photo = image::open(repo().join("data/cats/cat_0001.jpg")).unwrap();
    let out = dir.join(format!("wide_{w}x{h}.png"));
    photo
        .resize_exact(w, h, image::imageops::FilterType::Triangle)
        .save(&out)
        .unwrap();
    out
}

/// A tiny CNN trained on a few bundled photos.
fn tiny_cnn(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    for class in ["cats", "random_images"] {
        std::fs::create_dir_all(data.join(class)).unwrap();
        let mut files: Vec<_> = std::fs::read_dir(repo().join("data").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        for f in &files[..12] {
            std::fs::copy(f, data.join(class).join(f.file_name().unwrap())).unwrap();
        }
    }
    let model = dir.join("cnn.safetensors");
    let out = deepcat()
        .arg("train")
        .arg(&data)
        .args([
            "--size",
            "16",
            "--arch",
            "conv4 bn relu pool conv8 relu gap",
        ])
        .args(["--epochs", "1", "--batch-size", "8", "--quiet", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    model
}

#[test]
fn overlays_decode_with_their_photos_aspect_ratio_for_cnn_and_dense_models() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cnn = tiny_cnn(d);
    let wide = stretched(d, 120, 60);
    let square = repo().join("data/cats/cat_0000.jpg");
    let out = deepcat()
        .arg("explain")
        .arg(&cnn)
        .arg(&wide)
        .arg(&square)
        .arg("--out")
        .arg(d.join("heat"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lines = json_lines(&out.stdout);
    assert_eq!(lines.len(), 2);
    for (line, (w, h)) in lines.iter().zip([(120, 60), (30, 30)]) {
        assert_eq!(line["method"], "grad-cam");
        assert_eq!(
            line["explained"], line["class"],
            "the predicted class by default"
        );
        let png = PathBuf::from(line["overlay"].as_str().unwrap());
        let decoded = image::open(&png).unwrap();
        assert_eq!(
            (decoded.width(), decoded.height()),
            (w, h),
            "{}",
            png.display()
        );
    }

    // The committed version-1 model is dense: gradient × input, for the class asked for.
    let v1 = repo().join("tests/fixtures/v1.safetensors");
    let out = deepcat()
        .arg("explain")
        .arg(&v1)
        .arg(&wide)
        .args(["--class", "non-cat", "--json", "--out"])
        .arg(d.join("heat"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let line = &json_lines(&out.stdout)[0];
    assert_eq!(line["method"], "gradient-x-input");
    assert_eq!(line["explained"], "non-cat");
    let png = image::open(line["overlay"].as_str().unwrap()).unwrap();
    assert_eq!((png.width(), png.height()), (120, 60));
}

#[test]
fn bad_classes_folders_and_photos_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let v1 = repo().join("tests/fixtures/v1.safetensors");
    let photo = repo().join("tests/fixtures/cat.png");
    let run = |args: &[&str]| {
        deepcat()
            .current_dir(d)
            .arg("explain")
            .arg(&v1)
            .args(args)
            .output()
            .unwrap()
    };
    let p = photo.to_str().unwrap();

    let out = run(&[p, "--out", "heat", "--class", "dog"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr_of(&out)
            .contains(r#"--class "dog" is not one of the model's classes (cat, non-cat)"#)
    );

    let out = run(&[p, "--out", "nowhere/heat"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr_of(&out).contains("--out nowhere/heat: folder nowhere does not exist"));

    // An unreadable photo is reported; the others are still drawn; the exit status says so.
    std::fs::write(d.join("notes.jpg"), b"not a photo").unwrap();
    let out = run(&["notes.jpg", p, "--out", "heat"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr_of(&out).contains("cannot use notes.jpg: not an image"),
        "{}",
        stderr_of(&out)
    );
    assert!(d.join("heat/cat.png").is_file());
    assert!(!d.join("heat/notes.png").exists());
}

/// `deepcat serve MODEL --port 0`, killed when dropped.
struct Server {
    child: std::process::Child,
    port: u16,
}

impl Server {
    fn start(model: &Path) -> Server {
        let (child, port) = common::spawn_server(model, &[]);
        Server { child, port }
    }

    /// POSTs `body` to `path`; the status, the headers (lower-case names) and the body.
    fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
            .unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&all[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        (status, headers, all[split + 4..].to_vec())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_server_answers_an_overlay_png_with_the_prediction_in_a_header() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&repo().join("tests/fixtures/v1.safetensors"));
    let wide = std::fs::read(stretched(dir.path(), 120, 60)).unwrap();
    let (status, headers, body) = server.post("/api/explain", &wide);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {name} header in {headers:?}"))
    };
    assert_eq!(header("content-type"), "image/png");
    let prediction: Value = serde_json::from_str(&header("x-deepcat-prediction")).unwrap();
    assert_eq!(prediction["method"], "gradient-x-input");
    assert_eq!(prediction["explained"], prediction["class"]);
    let png = image::load_from_memory(&body).unwrap();
    assert_eq!((png.width(), png.height()), (120, 60));

    let (status, _, _) = server.post("/api/explain?class=non-cat", &wide);
    assert_eq!(status, 200);
    let (status, _, body) = server.post("/api/explain?class=dog", &wide);
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not one of the model's classes"));
    let (status, _, _) = server.post("/api/explain", b"not an image");
    assert_eq!(status, 422);
}
