//! Nothing to build. This script exists for its build-dependency (see Cargo.toml): naming syn's
//! `visit-mut` feature here makes the default build's proc-macros the same as the `mpi` build's.
fn main() {
    println!("cargo::rerun-if-changed=build.rs");
}
