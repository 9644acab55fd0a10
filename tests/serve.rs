//! `deepcat serve` end to end: the real binary on a free port, a model trained here on the
//! bundled photos, real HTTP clients (ureq, raw sockets for broken requests, Chromium for the
//! page).

mod common;

use image::ImageFormat;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deepcat() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepcat"));
    cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"));
    cmd
}

/// A small model on the bundled photos (32 px, the default dense layers), trained once per
/// test run.
fn model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-test");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("model-{}.safetensors", std::process::id()));
        let out = deepcat()
            .current_dir(repo())
            .args(["train", "data", "--size", "32", "--iterations", "60"])
            .args(["--quiet", "--json", "--model"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    })
}

/// A photo bundled with the repository.
fn cat_photo() -> PathBuf {
    repo().join("data/cats/cat_0000.jpg")
}

/// A running `deepcat serve`; killed when dropped.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts the server on a free port with `extra` flags and reads the port from its first
    /// line.
    fn start(extra: &[&str]) -> Server {
        let mut child = deepcat()
            .arg("serve")
            .arg(model())
            .args(["--port", "0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
            line.push(byte[0]);
        }
        let line = String::from_utf8(line).unwrap();
        let port = line
            .strip_prefix("deepcat serve: listening on http://127.0.0.1:")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Server { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Sends `request` as is on a fresh connection and returns the status and the body as
    /// JSON (or `Null` when it is not JSON).
    fn raw(&self, request: &[u8]) -> (u16, Value) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        read_response(&mut s)
    }

    fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status and JSON body of the HTTP response read to the end of the connection.
fn read_response(s: &mut TcpStream) -> (u16, Value) {
    let mut text = Vec::new();
    let _ = s.read_to_end(&mut text);
    let text = String::from_utf8_lossy(&text).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_idle_connections(0)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// `POST /api/predict` with `body` as `content_type`: status and JSON answer.
fn post(server: &Server, content_type: &str, body: &[u8]) -> (u16, Value) {
    let mut r = agent()
        .post(&server.url("/api/predict"))
        .header("Content-Type", content_type)
        .send(body)
        .unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), serde_json::from_str(&text).unwrap())
}

fn get(server: &Server, path: &str) -> (u16, String) {
    let mut r = agent().get(&server.url(path)).call().unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), text)
}

/// A multipart/form-data body with one part per (file name, bytes); returns (content type,
/// body).
fn multipart(parts: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let boundary = "deepcat-test-boundary-7d1f";
    let mut body = Vec::new();
    for (name, bytes) in parts {
        write!(
            body,
            "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{name}\"\r\n\
             Content-Type: application/octet-stream\r\n\r\n"
        )
        .unwrap();
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    write!(body, "--{boundary}--\r\n").unwrap();
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// What `deepcat predict --json` prints for `file`, without its path.
fn predicted_by_cli(file: &Path) -> Value {
    let out = deepcat()
        .arg("predict")
        .arg(model())
        .arg(file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["path"] = Value::Null;
    v
}

/// The bundled cat photo re-encoded as `format`.
fn encoded(format: ImageFormat) -> Vec<u8> {
    let img = image::open(cat_photo()).unwrap().to_rgb8();
    let mut bytes = std::io::Cursor::new(Vec::new());
    img.write_to(&mut bytes, format).unwrap();
    bytes.into_inner()
}

#[test]
fn every_format_gets_the_answer_predict_prints() {
    let server = Server::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let formats = [
        (ImageFormat::Png, "image/png", "png"),
        (ImageFormat::Gif, "image/gif", "gif"),
        (ImageFormat::Bmp, "image/bmp", "bmp"),
        (ImageFormat::WebP, "image/webp", "webp"),
        (ImageFormat::Tiff, "application/octet-stream", "tiff"),
    ];
    let mut cases = vec![(cat_photo(), "image/jpeg".to_string())];
    for (format, content_type, ext) in formats {
        let path = dir.path().join(format!("cat.{ext}"));
        std::fs::write(&path, encoded(format)).unwrap();
        cases.push((path, content_type.to_string()));
    }
    for (path, content_type) in cases {
        let (status, answer) = post(&server, &content_type, &std::fs::read(&path).unwrap());
        assert_eq!(status, 200, "{}: {answer}", path.display());
        assert_same_prediction(&answer, &predicted_by_cli(&path));
        let names: Vec<&str> = answer["probabilities"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(names, ["cats", "random_images"]);
    }
}

#[test]
fn multipart_answers_each_part_in_order_with_its_file_name() {
    let server = Server::start(&[]);
    let photos = [
        repo().join("data/cats/cat_0001.jpg"),
        repo()
            .join("data/random_images/")
            .join(first_file("data/random_images")),
        repo().join("data/cats/cat_0002.jpg"),
    ];
    let bytes: Vec<Vec<u8>> = photos.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let names = ["a.jpg", "b.jpg", "c.jpg"];
    let parts: Vec<(&str, &[u8])> = names
        .iter()
        .zip(&bytes)
        .map(|(n, b)| (*n, b.as_slice()))
        .collect();
    let (content_type, body) = multipart(&parts);
    let (status, answer) = post(&server, &content_type, &body);
    assert_eq!(status, 200, "{answer}");
    let predictions = answer["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), 3);
    for ((p, name), photo) in predictions.iter().zip(names).zip(&photos) {
        assert_eq!(p["path"], name);
        let mut p = p.clone();
        p["path"] = Value::Null;
        assert_same_prediction(&p, &predicted_by_cli(photo));
    }
}

fn first_file(dir: &str) -> String {
    let mut names: Vec<String> = std::fs::read_dir(repo().join(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names.remove(0)
}

/// A PNG whose header claims `w`×`h` pixels, followed by the start of its (empty) pixel
/// data: enough for a decoder to read the size, nowhere near enough pixels.
fn png_header_claiming(w: u32, h: u32) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let mut typed = kind.to_vec();
        typed.extend(data);
        let mut c = (data.len() as u32).to_be_bytes().to_vec();
        c.extend(&typed);
        c.extend(crc32fast::hash(&typed).to_be_bytes());
        c
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(chunk(b"IHDR", &ihdr));
    png.extend(chunk(
        b"IDAT",
        &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
    ));
    png.extend(chunk(b"IEND", &[]));
    png
}

/// Asserts two prediction objects agree: the same keys and classes, probabilities within
/// float rounding (a batch of rows may sum in another order than one row alone).
fn assert_same_prediction(got: &Value, want: &Value) {
    assert_eq!(got["class"], want["class"], "{got} vs {want}");
    assert_eq!(got["path"], want["path"], "{got} vs {want}");
    assert_eq!(
        got["top"].as_array().map(Vec::len),
        want["top"].as_array().map(Vec::len)
    );
    let (g, w) = (
        got["probabilities"].as_object().unwrap(),
        want["probabilities"].as_object().unwrap(),
    );
    assert_eq!(g.keys().collect::<Vec<_>>(), w.keys().collect::<Vec<_>>());
    for (k, p) in g {
        let d = (p.as_f64().unwrap() - w[k].as_f64().unwrap()).abs();
        assert!(d < 1e-5, "{k}: {got} vs {want}");
    }
    let d = (got["probability"].as_f64().unwrap() - want["probability"].as_f64().unwrap()).abs();
    assert!(d < 1e-5, "{got} vs {want}");
}

#[test]
fn bad_requests_get_a_4xx_naming_the_problem_and_the_server_goes_on() {
    let server = Server::start(&["--max-upload", "1MiB"]);
    let png = encoded(ImageFormat::Png);
    let error = |v: &Value| v["error"].as_str().unwrap_or_default().to_string();

    let (status, v) = post(&server, "image/jpeg", b"");
    assert_eq!(
        (status, error(&v).contains("empty body")),
        (400, true),
        "{v}"
    );

    let (status, v) = post(&server, "image/jpeg", b"these are not pixels");
    assert_eq!(
        (status, error(&v).contains("not an image")),
        (422, true),
        "{v}"
    );

    let (status, v) = post(&server, "image/png", &png[..png.len() / 2]);
    assert_eq!(
        (status, error(&v).contains("cannot decode PNG")),
        (422, true),
        "{v}"
    );

    let (status, v) = post(&server, "image/png", &png_header_claiming(10_000, 6_000));
    assert_eq!(status, 422, "{v}");
    assert!(error(&v).contains("10000×6000 (60 megapixels)"), "{v}");
    assert!(error(&v).contains("limit of 50 megapixels"), "{v}");

    let (status, v) = post(&server, "text/plain", &png);
    assert_eq!(
        (status, error(&v).contains("text/plain")),
        (415, true),
        "{v}"
    );

    // Declared too large: refused before any of it is read.
    let (status, v) = server.raw(
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
          Content-Length: 2000000\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (status, error(&v).contains("upload limit")),
        (413, true),
        "{v}"
    );
    // Chunked, so only counting tells.
    let mut chunked = b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n\
          Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        .to_vec();
    let chunk = vec![0u8; 300_000];
    for _ in 0..4 {
        chunked.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        chunked.extend(&chunk);
        chunked.extend(b"\r\n");
    }
    chunked.extend(b"0\r\n\r\n");
    let (status, v) = server.raw(&chunked);
    assert_eq!(
        (status, error(&v).contains("upload limit")),
        (413, true),
        "{v}"
    );

    let (status, v) = server.raw(
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(
        (status, error(&v).contains("Content-Type")),
        (415, true),
        "{v}"
    );

    let (content_type, _) = multipart(&[]);
    let (status, v) = post(&server, &content_type, b"--nonsense");
    assert_eq!(status, 400, "{v}");
    let (content_type, body) = multipart(&[("a.png", &png), ("notes.txt", b"plain words")]);
    let (status, v) = post(&server, &content_type, &body);
    assert_eq!(status, 422, "{v}");
    assert!(
        error(&v).contains("part 2 (notes.txt): not an image"),
        "{v}"
    );

    let (status, v) =
        server.raw(b"GET /etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, error(&v).contains("no route")), (404, true), "{v}");
    let (status, v) =
        server.raw(b"GET /api/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, error(&v).contains("use POST")), (405, true), "{v}");
    let (status, v) =
        server.raw(b"DELETE /api/model HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!((status, error(&v).contains("use GET")), (405, true), "{v}");
    let (status, _) = server.raw(b"this is not HTTP\r\n\r\n");
    assert_eq!(status, 400);

    // Still serving.
    assert_eq!(
        get(&server, "/healthz"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let (status, v) = post(&server, "image/png", &png);
    assert_eq!(status, 200, "{v}");
}

#[test]
fn the_model_route_tells_classes_size_architecture_and_training() {
    let server = Server::start(&[]);
    let (status, text) = get(&server, "/api/model");
    assert_eq!(status, 200);
    let m: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["classes"], json!(["cats", "random_images"]));
    assert_eq!(m["image_size"], 32);
    assert_eq!(m["preprocessing"]["resize"], "nearest");
    assert_eq!(m["architecture"], "dense20 relu dense7 relu dense5 relu");
    assert_eq!(m["head"], "sigmoid");
    assert_eq!(
        m["parameters"],
        32 * 32 * 3 * 20 + 20 + 20 * 7 + 7 + 7 * 5 + 5 + 5 + 1
    );
    assert!(m["training"].is_object(), "{m}");
    // Present once `train` saves it; either way the key is there.
    assert!(m.as_object().unwrap().contains_key("test_accuracy"));
    assert_eq!(
        get(&server, "/healthz"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let (status, page) = get(&server, "/");
    assert_eq!(status, 200);
    assert!(page.contains("id=\"file-input\"") && !page.contains("<script src"));
}

#[test]
fn sixteen_clients_at_once_are_all_answered() {
    let server = Server::start(&[]);
    let expected = predicted_by_cli(&cat_photo());
    let photo = std::fs::read(cat_photo()).unwrap();
    std::thread::scope(|s| {
        let clients: Vec<_> = (0..16)
            .map(|_| {
                s.spawn(|| {
                    (0..4)
                        .map(|_| post(&server, "image/jpeg", &photo))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for c in clients {
            for (status, answer) in c.join().unwrap() {
                assert_eq!(status, 200, "{answer}");
                assert_same_prediction(&answer, &expected);
            }
        }
    });
}

#[test]
fn a_stalled_client_times_out_and_others_are_still_served() {
    let server = Server::start(&["--timeout", "1"]);
    // Headers that never end: the connection is closed.
    let mut headers = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    headers
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    headers
        .write_all(b"POST /api/predict HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // A body that stops half-way: 408.
    let mut body = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    body.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    body.write_all(
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\
          Content-Length: 1000\r\n\r\nonly a few bytes",
    )
    .unwrap();
    let start = Instant::now();
    let (status, v) = read_response(&mut body);
    assert_eq!(status, 408, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("did not arrive"),
        "{v}"
    );
    let mut rest = Vec::new();
    let n = headers.read_to_end(&mut rest).unwrap_or(0);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    assert!(
        n == 0 || String::from_utf8_lossy(&rest).contains("408"),
        "{rest:?}"
    );
    assert_eq!(get(&server, "/healthz").0, 200);
}

#[test]
fn sigterm_finishes_the_request_in_flight_then_exits_0() {
    let mut server = Server::start(&[]);
    let photo = std::fs::read(cat_photo()).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", server.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        photo.len()
    )
    .unwrap();
    let half = photo.len() / 2;
    s.write_all(&photo[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    server.sigterm();
    std::thread::sleep(Duration::from_millis(500));
    // No new connections once the signal is in.
    assert!(TcpStream::connect(("127.0.0.1", server.port)).is_err());
    s.write_all(&photo[half..]).unwrap();
    let (status, answer) = read_response(&mut s);
    assert_eq!(status, 200, "{answer}");
    assert_same_prediction(&answer, &predicted_by_cli(&cat_photo()));
    let start = Instant::now();
    let code = loop {
        if let Some(code) = server.child.try_wait().unwrap() {
            break code;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(code.success(), "{code:?}");
}

#[test]
fn the_page_shows_the_class_the_api_gives_for_an_uploaded_photo() {
    let Some(browser) = common::browser::launch() else {
        return;
    };
    let server = Server::start(&[]);
    browser.open(&server.url("/"));
    browser.wait_for("#model-classes");
    let photo = cat_photo();
    browser.upload("#file-input", &photo);
    browser.wait_for(".result.done .predicted-class");
    let shown = browser.text(".result.done .predicted-class");
    let (status, answer) = post(&server, "image/jpeg", &std::fs::read(&photo).unwrap());
    assert_eq!(status, 200);
    assert_eq!(shown, answer["class"].as_str().unwrap());
    assert_eq!(browser.text(".result.done .file-name"), "cat_0000.jpg");
    assert_eq!(browser.text("#model-classes"), "cats, random_images");
}
