//! `deepcat serve` end to end: the real binary on a free port, a model trained here on the
//! bundled photos, real HTTP clients (ureq, raw sockets for broken requests, Chromium for the
//! page).

mod common;

use image::ImageFormat;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
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
        Server::start_with(model(), extra)
    }

    /// As [`Server::start`], serving the model file at `model`.
    fn start_with(model: &Path, extra: &[&str]) -> Server {
        let (child, port) = common::spawn_server(model, extra);
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

    /// Sends `request` as is on a fresh connection and returns the whole response as text.
    fn raw_text(&self, request: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(request).unwrap();
        let mut text = Vec::new();
        let _ = s.read_to_end(&mut text);
        String::from_utf8_lossy(&text).into_owned()
    }

    fn sigterm(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, which: &str) {
        let status = Command::new("kill")
            .args([which, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The `/metrics` text.
    fn metrics(&self) -> String {
        let (status, text) = get(self, "/metrics");
        assert_eq!(status, 200, "{text}");
        text
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

    // Too many pixels: 413, as the README says, refused from the header.
    let (status, v) = post(&server, "image/png", &png_header_claiming(10_000, 6_000));
    assert_eq!(status, 413, "{v}");
    assert!(error(&v).contains("10000×6000 (60 megapixels)"), "{v}");
    assert!(error(&v).contains("limit of 50 megapixels"), "{v}");

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

    // No Content-Type: the bytes are read as an image, and these are not one.
    let (status, v) = server.raw(
        b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc",
    );
    assert_eq!(
        (status, error(&v).contains("not an image")),
        (422, true),
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
    let server = Server::start(&["--header-timeout", "1", "--body-timeout", "1"]);
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

/// Run in the page: every pair of its main elements (title, model card, drop area, toolbar,
/// each result card) and the thumbnail and answer inside each card, as `"a overlaps b"`
/// sentences, plus any horizontal overflow; empty when the layout is clean.
const LAYOUT_PROBLEMS: &str = r#"
const box = (name, el) => { const r = el.getBoundingClientRect(); return {name, l: r.left, t: r.top, r: r.right, b: r.bottom}; };
const meet = (a, b) => a.l < b.r - 0.5 && b.l < a.r - 0.5 && a.t < b.b - 0.5 && b.t < a.b - 0.5;
const main = [box("title", document.querySelector("h1")), box("model card", document.getElementById("model-info")),
              box("drop area", document.getElementById("drop-zone")), box("toolbar", document.getElementById("toolbar"))];
const cards = [...document.querySelectorAll(".result")];
cards.forEach((c, i) => main.push(box("result " + (i + 1), c)));
const problems = [];
for (let i = 0; i < main.length; i++)
  for (let j = i + 1; j < main.length; j++)
    if (meet(main[i], main[j])) problems.push(main[i].name + " overlaps " + main[j].name);
cards.forEach((c, i) => {
  const card = box("card", c), thumb = box("thumbnail", c.querySelector(".thumb")), answer = box("answer", c.querySelector(".answer"));
  if (meet(thumb, answer)) problems.push("result " + (i + 1) + ": thumbnail overlaps answer");
  for (const inner of [thumb, answer])
    if (inner.l < card.l - 0.5 || inner.r > card.r + 0.5) problems.push("result " + (i + 1) + ": " + inner.name + " leaves its card");
});
if (document.documentElement.scrollWidth > window.innerWidth) problems.push("page is " + document.documentElement.scrollWidth + " px wide in a " + window.innerWidth + " px window");
return problems;
"#;

/// The first card's "show why" toggle.
const WHY: &str = ".result:nth-child(1) .why";

/// Run in the page: whether the first card shows [its photo, its overlay].
const SHOWN: &str = "[...document.querySelectorAll('.result:nth-child(1) .thumb img')]\
    .slice(0, 2).map(i => i.getClientRects().length > 0 && i.clientWidth > 0)";

/// Presses the first card's "show why": its thumbnail becomes the overlay `POST /api/explain`
/// draws for `photo` (the same size, fetched by the page), in place of the photo.
fn show_why_on_the_first_card(browser: &common::browser::Browser, server: &Server, photo: &Path) {
    assert_eq!(browser.text(WHY), "Show why");
    browser.click(WHY);
    let overlay = ".result:nth-child(1) .thumb img.overlay";
    browser.wait_for(overlay);
    browser.wait_until(&format!(
        "const i = document.querySelector('{overlay}'); return i.complete && i.naturalWidth > 0;"
    ));
    let seen = browser.script(&format!(
        "const i = document.querySelector('{overlay}'); \
         return [i.src, i.naturalWidth, i.naturalHeight, \
                 performance.getEntriesByType('resource').some(e => new URL(e.name).pathname === '/api/explain')];"
    ));
    let src = seen[0].as_str().unwrap_or_default();
    assert!(src.starts_with("blob:"), "overlay src {src}");
    assert_eq!(seen[3], json!(true), "the page never fetched /api/explain");
    let mut r = agent()
        .post(&server.url("/api/explain"))
        .send(&std::fs::read(photo).unwrap()[..])
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let png = r.body_mut().read_to_vec().unwrap();
    let want = image::load_from_memory(&png).unwrap();
    assert_eq!(
        (seen[1].as_u64(), seen[2].as_u64()),
        (
            Some(u64::from(want.width())),
            Some(u64::from(want.height()))
        )
    );
    assert_eq!(
        browser.script(&format!("return {SHOWN};")),
        json!([false, true])
    );
    assert_eq!(browser.text(WHY), "Show photo");
    let note = browser.text(".result:nth-child(1) .why-note");
    assert!(note.contains("where it looked for"), "{note}");
}

#[test]
fn the_page_classifies_uploads_in_order_and_lays_out_cleanly_at_three_widths() {
    let Some(browser) = common::browser::launch() else {
        return;
    };
    let server = Server::start(&[]);
    browser.open(&server.url("/"));
    browser.wait_for("#model-classes");
    let photos = [
        cat_photo(),
        repo()
            .join("data/random_images")
            .join(first_file("data/random_images")),
    ];
    for photo in &photos {
        browser.upload("#file-input", photo);
    }
    browser.wait_for(".result.done:nth-child(2) .predicted-class");
    browser.wait_for(".result.done:nth-child(1) .predicted-class");
    for (i, photo) in photos.iter().enumerate() {
        let card = format!(".result:nth-child({})", i + 1);
        let shown = browser.text(&format!("{card} .predicted-class"));
        let (status, answer) = post(&server, "image/jpeg", &std::fs::read(photo).unwrap());
        assert_eq!(status, 200);
        assert_eq!(shown, answer["class"].as_str().unwrap());
        let name = photo.file_name().unwrap().to_string_lossy();
        assert_eq!(browser.text(&format!("{card} .file-name")), name);
        // The thumbnail is the photo itself, its aspect kept.
        let aspect = browser.script(&format!(
            "const i = document.querySelector('{card} img'); \
             return [i.naturalWidth / i.naturalHeight, i.clientWidth / i.clientHeight];"
        ));
        let (natural, shown) = (aspect[0].as_f64().unwrap(), aspect[1].as_f64().unwrap());
        assert!(
            (natural - shown).abs() < 0.05,
            "aspect {natural} shown as {shown}"
        );
    }
    assert_eq!(browser.text("#model-classes"), "cats, random_images");
    let architecture = browser.text("#model-architecture");
    assert!(architecture.contains("dense 20, 7, 5"), "{architecture}");
    show_why_on_the_first_card(&browser, &server, &photos[0]);
    let shots = std::env::var_os("DEEPCAT_SCREENSHOTS").map(PathBuf::from);
    // Laid out with the first card showing its heat map, the second its photo.
    for width in [390, 1100, 1600] {
        assert_eq!(browser.resize(width, 900), width);
        let problems = browser.script(LAYOUT_PROBLEMS);
        assert_eq!(problems, json!([]), "at {width} px");
        if let Some(dir) = &shots {
            std::fs::write(dir.join(format!("serve-{width}.png")), browser.screenshot()).unwrap();
        }
    }
    // Toggling back shows the photo again.
    browser.click(WHY);
    assert_eq!(
        browser.script(&format!("return {SHOWN};")),
        json!([true, false])
    );
    assert_eq!(browser.text(WHY), "Show why");
    browser.script("document.getElementById('clear').click(); return null;");
    assert_eq!(
        browser.script("return document.querySelectorAll('.result').length;"),
        json!(0)
    );
}

/// The value of the metric line starting with `series` (name and labels), or `None`.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.trim().parse().unwrap())
}

/// SHA-256 of a file in hex, as `sha256sum` prints it.
fn sha256_hex(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn head_works_wherever_get_does() {
    let server = Server::start(&[]);
    for path in ["/", "/healthz", "/api/model", "/metrics"] {
        let text = server.raw_text(
            format!("HEAD {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path} sent a body: {body:?}");
        if path != "/metrics" {
            let length = format!("content-length: {}", get(&server, path).1.len());
            assert!(head.to_lowercase().contains(&length), "{head}");
        }
    }
    let text =
        server.raw_text(b"HEAD /api/predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.to_lowercase().contains("allow: post"), "{text}");
    let text = server.raw_text(
        b"POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert!(text.starts_with("HTTP/1.1 405"), "{text}");
    assert!(text.to_lowercase().contains("allow: get, head"), "{text}");
}

#[test]
fn any_body_that_is_not_multipart_is_read_as_an_image_whatever_its_type() {
    let server = Server::start(&[]);
    let expected = predicted_by_cli(&cat_photo());
    let jpeg = std::fs::read(cat_photo()).unwrap();
    // curl --data-binary's own type, a wrong image type, and others: the bytes decide.
    for content_type in [
        "application/x-www-form-urlencoded",
        "image/png",
        "text/plain",
        "application/octet-stream",
    ] {
        let (status, answer) = post(&server, content_type, &jpeg);
        assert_eq!(status, 200, "{content_type}: {answer}");
        assert_same_prediction(&answer, &expected);
    }
    // No Content-Type at all.
    let mut request = format!(
        "POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        jpeg.len()
    )
    .into_bytes();
    request.extend(&jpeg);
    let (status, answer) = server.raw(&request);
    assert_eq!(status, 200, "{answer}");
    assert_same_prediction(&answer, &expected);
}

#[test]
fn metrics_add_up_under_load() {
    let server = Server::start(&[]);
    let photo = std::fs::read(cat_photo()).unwrap();
    let (clients, each) = (8, 10);
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| {
                for _ in 0..each {
                    assert_eq!(post(&server, "image/jpeg", &photo).0, 200);
                }
            });
        }
    });
    for _ in 0..3 {
        assert_eq!(post(&server, "image/jpeg", b"not pixels").0, 422);
    }
    let m = server.metrics();
    let value = |series: &str| metric(&m, series).unwrap_or_else(|| panic!("no {series} in\n{m}"));
    let ok = f64::from(clients * each);
    assert_eq!(
        value(r#"deepcat_requests_total{route="/api/predict",status="200"}"#),
        ok
    );
    assert_eq!(
        value(r#"deepcat_requests_total{route="/api/predict",status="422"}"#),
        3.0
    );
    assert_eq!(
        value(r#"deepcat_request_duration_seconds_count{route="/api/predict"}"#),
        ok + 3.0
    );
    assert_eq!(value("deepcat_images_classified_total"), ok);
    // Every classified image was in exactly one batch.
    assert_eq!(value("deepcat_batch_size_sum"), ok);
    let batches = value("deepcat_batch_size_count");
    assert!((1.0..=ok).contains(&batches), "{batches}");
    assert_eq!(value("deepcat_queue_depth"), 0.0);
    assert_eq!(value("deepcat_model_reloads_total"), 0.0);
    let identity = format!(
        r#"deepcat_model{{sha256="{}",classes="cats,random_images"}}"#,
        sha256_hex(model())
    );
    assert_eq!(value(&identity), 1.0, "{m}");
    assert!(m.trim_end().ends_with("# EOF"), "{m}");
}

/// A second model, different from [`model`], trained once per test run.
fn other_model() -> &'static Path {
    static MODEL: OnceLock<PathBuf> = OnceLock::new();
    MODEL.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve-test");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("other-{}.safetensors", std::process::id()));
        let out = deepcat()
            .current_dir(repo())
            .args([
                "train",
                "data",
                "--size",
                "32",
                "--iterations",
                "20",
                "--seed",
                "7",
            ])
            .args(["--quiet", "--model"])
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

/// Puts `from`'s bytes at `to` in one step (as `mv` does), never half-written.
fn replace_file(from: &Path, to: &Path) {
    let staged = to.with_extension("staged");
    std::fs::copy(from, &staged).unwrap();
    std::fs::rename(&staged, to).unwrap();
}

/// Waits (up to 10 s) until the metric `series` reaches `want`.
fn wait_for_metric(server: &Server, series: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = metric(&server.metrics(), series);
        if got == Some(want) {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{series} is {got:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn reload_under_load_fails_no_request() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    replace_file(model(), &path);
    let server = Server::start_with(&path, &["--allow-reload"]);
    let photo = std::fs::read(cat_photo()).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let statuses = std::thread::scope(|s| {
        let clients: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let mut seen = Vec::new();
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        seen.push(post(&server, "image/jpeg", &photo).0);
                    }
                    seen
                })
            })
            .collect();
        for i in 0..6 {
            std::thread::sleep(Duration::from_millis(150));
            let next = if i % 2 == 0 { other_model() } else { model() };
            replace_file(next, &path);
            if i % 2 == 0 {
                let mut r = agent().post(&server.url("/api/reload")).send("").unwrap();
                let body = r.body_mut().read_to_string().unwrap();
                assert_eq!(r.status().as_u16(), 200, "{body}");
                assert!(body.contains(&sha256_hex(next)), "{body}");
            } else {
                server.signal("-HUP");
                wait_for_metric(&server, "deepcat_model_reloads_total", f64::from(i + 1));
            }
        }
        std::thread::sleep(Duration::from_millis(150));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(statuses.len() >= 8, "only {} requests", statuses.len());
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let m = server.metrics();
    assert_eq!(metric(&m, "deepcat_model_reloads_total"), Some(6.0), "{m}");
    assert_eq!(metric(&m, "deepcat_model_reload_failures_total"), Some(0.0));
    let (_, text) = get(&server, "/api/model");
    let served: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(served["sha256"], sha256_hex(model()));
}

#[test]
fn a_reload_to_a_truncated_file_keeps_serving_the_old_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    replace_file(model(), &path);
    let server = Server::start_with(&path, &["--allow-reload"]);
    let bytes = std::fs::read(model()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let mut r = agent().post(&server.url("/api/reload")).send("").unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status().as_u16(), 422, "{body}");
    assert!(body.contains("truncated"), "{body}");
    server.signal("-HUP");
    wait_for_metric(&server, "deepcat_model_reload_failures_total", 2.0);
    let (status, answer) = post(&server, "image/jpeg", &std::fs::read(cat_photo()).unwrap());
    assert_eq!(status, 200, "{answer}");
    assert_same_prediction(&answer, &predicted_by_cli(&cat_photo()));
    let m = server.metrics();
    assert_eq!(metric(&m, "deepcat_model_reloads_total"), Some(0.0));
    let (_, text) = get(&server, "/api/model");
    assert!(text.contains(&sha256_hex(model())), "{text}");

    // Without --allow-reload, the route refuses and says how.
    replace_file(model(), &path);
    let locked = Server::start_with(&path, &[]);
    let (status, v) = server_post_reload(&locked);
    assert_eq!(status, 403, "{v}");
    assert!(v.contains("--allow-reload"), "{v}");
}

fn server_post_reload(server: &Server) -> (u16, String) {
    let mut r = agent().post(&server.url("/api/reload")).send("").unwrap();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), body)
}

#[test]
fn idle_connections_neither_lock_others_out_nor_stay_open() {
    let server = Server::start(&["--header-timeout", "2"]);
    // More idle clients than the old connection cap (128).
    let opened = Instant::now();
    let idle: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(("127.0.0.1", server.port)).unwrap())
        .collect();
    let photo = std::fs::read(cat_photo()).unwrap();
    let start = Instant::now();
    assert_eq!(get(&server, "/healthz").0, 200);
    assert_eq!(post(&server, "image/jpeg", &photo).0, 200);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    // Each idle one is closed once the header timeout passes.
    let mut first = &idle[0];
    first
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut rest = Vec::new();
    let _ = first.read_to_end(&mut rest);
    let waited = opened.elapsed();
    assert!(
        waited > Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    let m = server.metrics();
    assert_eq!(metric(&m, "deepcat_connections_refused_total"), Some(0.0));

    // Past --max-connections, newcomers are closed at once, not queued.
    let small = Server::start(&["--max-connections", "4", "--header-timeout", "2"]);
    let _held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", small.port)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = TcpStream::connect(("127.0.0.1", small.port)).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let mut buf = [0u8; 16];
    let quick = Instant::now();
    let n = extra.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(quick.elapsed() < Duration::from_millis(900));
}
