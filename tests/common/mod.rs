//! Helpers shared by several test files (`mod common;` in each). Each file uses only some of
//! them, so unused ones are not warnings here.
#![allow(dead_code)]

pub mod browser;

use std::path::PathBuf;

/// `deepcat` (as assert_cmd runs it), with the decoded cache under target/, not the user's
/// home.
pub fn deepcat() -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("deepcat").expect("the deepcat binary is built");
    cmd.env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"));
    cmd
}

/// The repository's root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A command's standard error, as text.
pub fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `../shared/data/<name>`, or `None` (with a message) when it is not there.
pub fn shared_data(name: &str) -> Option<PathBuf> {
    let p = repo().join("../shared/data").join(name);
    if p.is_dir() {
        Some(p)
    } else {
        // CI sets DEEPCAT_REQUIRE_DATA: there a missing set is a failure, not a skip.
        assert!(
            std::env::var_os("DEEPCAT_REQUIRE_DATA").is_none(),
            "{} not found, and DEEPCAT_REQUIRE_DATA is set",
            p.display()
        );
        eprintln!("skipping: {} not found (it is present in CI)", p.display());
        None
    }
}

/// Starts `deepcat serve MODEL --port 0 FLAGS` and reads the port from its first line: the
/// child (kill it when done) and the port.
pub fn spawn_server(model: &std::path::Path, flags: &[&str]) -> (std::process::Child, u16) {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_deepcat"))
        .env("XDG_CACHE_HOME", env!("CARGO_TARGET_TMPDIR"))
        .arg("serve")
        .arg(model)
        .args(["--port", "0"])
        .args(flags)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (mut line, mut byte) = (Vec::new(), [0u8; 1]);
    while stdout.read(&mut byte).unwrap() == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    let line = String::from_utf8(line).unwrap();
    let port = line
        .strip_prefix("deepcat serve: listening on http://127.0.0.1:")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    (child, port)
}
