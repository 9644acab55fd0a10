//! The CUDA backend (`cargo test --features cuda --test cuda`).
//!
//! Without a GPU (CI): every kernel source compiles with NVRTC for sm_90 (the H100/H200
//! architecture) and compute_90; this needs only libnvrtc.so (`scripts/setup-nvrtc.sh`). It
//! skips with a message when NVRTC cannot be loaded, unless `DEEPCAT_REQUIRE_NVRTC=1`, when it
//! fails instead.
//!
//! With a GPU: each layer kind's forward and backward on the device equal the CPU's to 1e-4
//! (relative to the values' scale), the optimisers' updates equal the CPU's, a short training
//! run learns, and predictions on the device pick the CPU's classes. These skip with a
//! message when no GPU can be opened.
#![cfg(feature = "cuda")]

use deepcat::cuda::{Gpu, kernels, nvrtc_available};
use std::sync::Arc;

/// Whether NVRTC is here; `false` (after saying so) when a test should skip.
fn nvrtc_or_skip(test: &str) -> bool {
    if nvrtc_available() {
        return true;
    }
    let required = std::env::var("DEEPCAT_REQUIRE_NVRTC").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{test}: libnvrtc.so cannot be loaded and DEEPCAT_REQUIRE_NVRTC=1; run \
         `LD_LIBRARY_PATH=$(bash scripts/setup-nvrtc.sh)` first"
    );
    eprintln!("{test}: skipped: libnvrtc.so cannot be loaded (see scripts/setup-nvrtc.sh)");
    false
}

#[test]
fn every_kernel_source_compiles_with_nvrtc_for_sm_90() {
    if !nvrtc_or_skip("every_kernel_source_compiles_with_nvrtc_for_sm_90") {
        return;
    }
    let mut failures = Vec::new();
    for arch in ["sm_90", "compute_90"] {
        for source in kernels::SOURCES {
            match kernels::compile(source, arch) {
                Ok(ptx) => {
                    let text = ptx.to_src();
                    for kernel in source.kernels {
                        if !text.contains(&format!(".entry {kernel}(")) {
                            failures.push(format!(
                                "{} for {arch}: no kernel {kernel} in the PTX",
                                source.file
                            ));
                        }
                    }
                }
                Err(log) => failures.push(log),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_kernel_file_is_listed_once() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/cuda/kernels");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".cu"))
        .collect();
    on_disk.sort();
    let mut listed: Vec<String> = kernels::SOURCES
        .iter()
        .map(|s| s.file.to_string())
        .collect();
    listed.sort();
    assert_eq!(on_disk, listed);
    for source in kernels::SOURCES {
        for kernel in source.kernels {
            assert!(
                source.text.contains(&format!("void {kernel}(")),
                "{} does not define {kernel}",
                source.file
            );
        }
    }
}

/// The GPU, or `None` (after saying so) when a test should skip.
fn gpu_or_skip(test: &str) -> Option<Arc<Gpu>> {
    match Gpu::shared() {
        Ok(gpu) => Some(gpu),
        Err(why) => {
            eprintln!("{test}: skipped: no usable GPU ({why})");
            None
        }
    }
}

mod gpu;
