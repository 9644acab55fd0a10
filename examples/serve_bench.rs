//! Load benchmark of `deepcat serve` against the Python rendering of the same service
//! (bench/serve_reference.py: FastAPI, uvicorn, Pillow, and PyTorch in eval mode with the same
//! network and weights), with one load generator.
//!
//! ```text
//! cargo build --release
//! scripts/setup-reference.sh --serve --torch
//! cargo run --release --example serve_bench -- MODEL... [--clients 32] [--seconds 20]
//!     [--deepcat target/release/deepcat] [--python .venv/bin/python] [--no-python]
//!     [--engine torch|numpy]
//! ```
//!
//! For each model in turn, each service is started on a free port, warmed up for two seconds,
//! then `--clients` threads post the bundled photos (data/cats, data/random_images, read into
//! memory first) one after another for `--seconds`, each thread on its own keep-alive
//! connection. While deepcat is loaded, another thread scrapes its `GET /metrics` every second
//! (as Prometheus would); afterwards its request counter is checked against the clients' own
//! count. Printed per service: requests per second, median and 99th-percentile latency, failed
//! requests, and the service's resident memory (its processes together) after the warm-up and
//! at the end; then the ratio. Not a test: numbers depend on the machine and on whatever else
//! runs on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Command-line settings.
struct Settings {
    models: Vec<PathBuf>,
    clients: usize,
    seconds: f64,
    deepcat: PathBuf,
    python: Option<PathBuf>,
    engine: String,
}

fn settings() -> Settings {
    let mut args = std::env::args().skip(1);
    let mut s = Settings {
        models: Vec::new(),
        engine: "torch".to_string(),
        clients: 32,
        seconds: 20.0,
        deepcat: PathBuf::from("target/release/deepcat"),
        python: Some(PathBuf::from(".venv/bin/python")),
    };
    let value = |args: &mut dyn Iterator<Item = String>, flag: &str| {
        args.next()
            .unwrap_or_else(|| panic!("{flag} needs a value"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--clients" => s.clients = value(&mut args, &a).parse().expect("--clients N"),
            "--seconds" => s.seconds = value(&mut args, &a).parse().expect("--seconds S"),
            "--deepcat" => s.deepcat = value(&mut args, &a).into(),
            "--python" => s.python = Some(value(&mut args, &a).into()),
            "--no-python" => s.python = None,
            "--engine" => s.engine = value(&mut args, &a),
            _ if a.starts_with("--") => panic!("unknown flag {a}"),
            _ => s.models.push(a.into()),
        }
    }
    assert!(
        !s.models.is_empty(),
        "usage: serve_bench MODEL... [--clients N] [--seconds S] [--deepcat PATH] \
         [--python PATH | --no-python] [--engine torch|numpy]"
    );
    s
}

/// A service under test; stopped when dropped.
struct Service {
    name: &'static str,
    child: Child,
    port: u16,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// Starts a service and waits until `/healthz` answers.
fn start(name: &'static str, mut cmd: Command, port: u16) -> Service {
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let service = Service { name, child, port };
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .build(),
    );
    let start = Instant::now();
    while agent
        .get(&format!("http://127.0.0.1:{port}/healthz"))
        .call()
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{name} did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    service
}

/// Resident memory of `pid` and its children (uvicorn's workers), in bytes.
fn resident(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        total += kib * 1024;
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        stack.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    total
}

/// One client's results: latencies of answered requests and the count of failed ones.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    errors: usize,
}

/// `clients` threads posting `photos` round-robin to `port` until `seconds` pass.
fn load(port: u16, photos: &[Vec<u8>], clients: usize, seconds: f64) -> (Tally, f64) {
    let stop = AtomicBool::new(false);
    let url = format!("http://127.0.0.1:{port}/api/predict");
    let started = Instant::now();
    let tallies: Vec<Tally> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..clients)
            .map(|c| {
                let (stop, url) = (&stop, &url);
                s.spawn(move || {
                    let agent = ureq::Agent::new_with_config(
                        ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .timeout_global(Some(Duration::from_secs(30)))
                            .build(),
                    );
                    let mut tally = Tally::default();
                    let mut i = c;
                    while !stop.load(Ordering::Relaxed) {
                        let photo = &photos[i % photos.len()];
                        i += clients;
                        let t = Instant::now();
                        let ok = agent
                            .post(url)
                            .header("Content-Type", "image/jpeg")
                            .send(photo.as_slice())
                            .ok()
                            .filter(|r| r.status() == 200)
                            .and_then(|mut r| r.body_mut().read_to_vec().ok())
                            .is_some();
                        if ok {
                            tally.latencies.push(t.elapsed());
                        } else {
                            tally.errors += 1;
                        }
                    }
                    tally
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(seconds));
        stop.store(true, Ordering::Relaxed);
        threads
            .into_iter()
            .map(|t| t.join().expect("a client"))
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut all = Tally::default();
    for t in tallies {
        all.latencies.extend(t.latencies);
        all.errors += t.errors;
    }
    all.latencies.sort();
    (all, elapsed)
}

fn percentile(sorted: &[Duration], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// Every bundled photo's bytes.
fn photos() -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = ["data/cats", "data/random_images"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(d)).expect("data/")
        })
        .map(|e| e.expect("a file").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|f| std::fs::read(f).expect("a photo"))
        .collect()
}

/// What the `/metrics` scraper saw: scrapes answered 200, scrapes that failed, the last text.
#[derive(Default)]
struct Scrapes {
    ok: usize,
    failed: usize,
    last: String,
}

/// Scrapes `GET /metrics` on `port` every second until `stop`.
fn scrape(port: u16, stop: &AtomicBool) -> Scrapes {
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build(),
    );
    let url = format!("http://127.0.0.1:{port}/metrics");
    let mut seen = Scrapes::default();
    while !stop.load(Ordering::Relaxed) {
        let text = agent
            .get(&url)
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .and_then(|mut r| r.body_mut().read_to_string().ok());
        match text {
            Some(t) => {
                seen.ok += 1;
                seen.last = t;
            }
            None => seen.failed += 1,
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    seen
}

/// The value of the sample `name{labels}` in Prometheus text, 0 when absent.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Measures one service and prints its line; returns its requests per second and the
/// requests answered (warm-up included).
fn measure(service: &Service, photos: &[Vec<u8>], s: &Settings) -> (f64, usize) {
    let (warm_up, _) = load(service.port, photos, s.clients, 2.0);
    let warm = resident(service.child.id());
    let (tally, elapsed) = load(service.port, photos, s.clients, s.seconds);
    let end = resident(service.child.id());
    let rps = tally.latencies.len() as f64 / elapsed;
    println!(
        "{:<8} {:>9.1} {:>9.1} {:>9.1} {:>7} {:>10.1} {:>10.1}",
        service.name,
        rps,
        percentile(&tally.latencies, 0.5),
        percentile(&tally.latencies, 0.99),
        tally.errors,
        warm as f64 / 1e6,
        end as f64 / 1e6
    );
    (rps, warm_up.latencies.len() + tally.latencies.len())
}

/// deepcat under load with `/metrics` scraped every second; prints what the scrapes saw.
fn measure_deepcat(model: &Path, photos: &[Vec<u8>], s: &Settings) -> f64 {
    let port = free_port();
    let mut cmd = Command::new(&s.deepcat);
    cmd.arg("serve")
        .arg(model)
        .args(["--port", &port.to_string()]);
    let deepcat = start("deepcat", cmd, port);
    let stop = AtomicBool::new(false);
    let ((rps, answered), mut scrapes) = std::thread::scope(|scope| {
        let scraper = scope.spawn(|| scrape(port, &stop));
        let measured = measure(&deepcat, photos, s);
        stop.store(true, Ordering::Relaxed);
        (measured, scraper.join().expect("the scraper"))
    });
    // One last scrape, after every client has its answer.
    stop.store(false, Ordering::Relaxed);
    let last = std::thread::scope(|scope| {
        let t = scope.spawn(|| scrape(port, &stop));
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        t.join().expect("the scraper")
    });
    scrapes.last = last.last;
    let counted = sample(
        &scrapes.last,
        "deepcat_requests_total{route=\"/api/predict\",status=\"200\"}",
    );
    let classified = sample(&scrapes.last, "deepcat_images_classified_total");
    println!(
        "         /metrics scraped every second: {} answered, {} failed; it counts {counted} \
         predictions answered 200 and {classified} images classified, the clients {answered}",
        scrapes.ok, scrapes.failed
    );
    rps
}

fn main() {
    let s = settings();
    let photos = photos();
    println!(
        "{} clients, {} s each, {} bundled photos, Python engine {}",
        s.clients,
        s.seconds,
        photos.len(),
        s.engine
    );
    for model in &s.models {
        println!("\nmodel {}", model.display());
        println!(
            "{:<8} {:>9} {:>9} {:>9} {:>7} {:>10} {:>10}",
            "service", "req/s", "p50 ms", "p99 ms", "errors", "RSS MB", "RSS end"
        );
        let ours = measure_deepcat(model, &photos, &s);
        if let Some(python) = &s.python {
            let port = free_port();
            let mut cmd = Command::new(python);
            cmd.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/serve_reference.py"))
                .arg(model)
                .args(["--port", &port.to_string(), "--engine", &s.engine]);
            let reference = start("python", cmd, port);
            let (theirs, _) = measure(&reference, &photos, &s);
            println!(
                "deepcat / python: {:.1}x the requests per second",
                ours / theirs
            );
        }
    }
}
