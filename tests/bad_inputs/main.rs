//! The bad-inputs suite: every kind of input real folders and old files contain, each answered
//! with a clear message and the documented exit code, and the guarantees (atomic saves, clean
//! Ctrl-C, same seed same model) checked on the real binary.
//!
//! Exit codes (README): 0 success, 1 runtime failure, 2 usage error, 130 interrupted.

mod arguments;
mod folders;
mod guarantees;
mod images;
mod models;

use assert_cmd::Command;
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// The `deepcat` binary, quiet about progress.
pub fn deepcat() -> Command {
    let mut cmd = Command::cargo_bin("deepcat").expect("the deepcat binary is built");
    // The decoded cache goes under target/, not the user's home.
    cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"));
    cmd
}

/// Standard error as text.
pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `cmd` and checks it fails with exit code `code` and a message containing every one of
/// `needles`; returns standard error.
pub fn fails_with(cmd: &mut Command, code: i32, needles: &[&str]) -> String {
    let out = cmd.output().expect("the binary runs");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(code), "exit status; stderr:\n{err}");
    for n in needles {
        assert!(err.contains(n), "expected {n:?} in stderr:\n{err}");
    }
    assert!(!err.contains("panicked"), "a panic:\n{err}");
    err
}

/// Runs `cmd` and checks it succeeds; returns the output.
pub fn succeeds(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("the binary runs");
    assert!(out.status.success(), "{}", stderr_of(&out));
    out
}

/// A small learnable two-class folder under `root`: reddish vs bluish noisy 12×12 squares.
pub fn synthetic(root: &Path, per_class: usize) {
    for (class, base) in [("cats", [200u8, 60, 40]), ("dogs", [40u8, 60, 200])] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).expect("create class folder");
        for i in 0..per_class {
            solid_ish(&dir.join(format!("{class}_{i:03}.png")), base, i as u32);
        }
    }
}

/// Writes a 12×12 noisy image of colour `base` (format from the extension).
pub fn solid_ish(path: &Path, base: [u8; 3], seed: u32) {
    let img = RgbImage::from_fn(12, 12, |x, y| {
        let n = ((x * 31 + y * 17 + seed * 13) % 40) as u8;
        Rgb([
            base[0].saturating_add(n),
            base[1].saturating_add(n),
            base[2].saturating_add(n),
        ])
    });
    img.save(path).expect("write test image");
}

/// `deepcat ARGS`, run as the unprivileged user `nobody` when the tests run as root: root may
/// read and write anything, so permission errors need another user. The folders in `open_up`
/// (and the temporary folders holding them) are made accessible to `nobody` first.
#[cfg(unix)]
pub fn deepcat_unprivileged(args: &[std::ffi::OsString], open_up: &[&Path]) -> Command {
    use std::os::unix::fs::PermissionsExt;
    let uid = std::process::Command::new("id")
        .arg("-u")
        .output()
        .expect("run id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        let mut cmd = deepcat();
        cmd.args(args);
        return cmd;
    }
    for p in open_up {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o777))
            .expect("open up a test folder");
    }
    let mut cmd = Command::new("setpriv");
    cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(assert_cmd::cargo::cargo_bin("deepcat"))
        .args(args);
    cmd
}

/// Makes a named pipe at `path` (`mkfifo`, on every Unix CI machine).
pub fn make_fifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("run mkfifo");
    assert!(status.success(), "mkfifo {}", path.display());
}

/// Committed test files (made by `scripts/make-fixtures.py`).
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/bad_inputs/fixtures")
        .join(name)
}
