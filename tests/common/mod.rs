//! Helpers shared by several test files (`mod common;` in each). Each file uses only some of
//! them, so unused ones are not warnings here.
#![allow(dead_code)]

pub mod browser;

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
