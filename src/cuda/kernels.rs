//! The CUDA C kernels (the `.cu` files beside this one, built into the binary) and their
//! compilation by NVRTC at run time, for the architecture of the GPU found.
//!
//! Each source file is one room (elementwise maps, batch norm, pooling, patches, the output
//! head, optimisers, the Gram products) and knows nothing of networks: pointers, sizes and
//! scalars in, values out. [`SOURCES`] lists every file with the kernels it defines; CI
//! compiles every one for sm_90 without a GPU (tests/cuda/), so a kernel that does not
//! compile fails there, not on a user's machine.

use super::failed;
use crate::{Error, Result};
use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::{CompileOptions, Ptx, compile_ptx_with_opts};
use std::collections::HashMap;
use std::sync::Arc;

/// A kernel source file: its name, its text and the kernels it defines.
#[derive(Debug, Clone, Copy)]
pub struct Source {
    /// The file name under `src/cuda/kernels/`.
    pub file: &'static str,
    /// The CUDA C text.
    pub text: &'static str,
    /// The `extern "C" __global__` functions it defines.
    pub kernels: &'static [&'static str],
}

/// Every kernel source, with its kernels.
pub const SOURCES: &[Source] = &[
    Source {
        file: "elementwise.cu",
        text: include_str!("kernels/elementwise.cu"),
        kernels: &[
            "bytes_to_unit",
            "relu_forward",
            "relu_backward",
            "add_relu",
            "add_into",
            "multiply",
            "add_bias",
            "column_sums",
            "dropout_forward",
        ],
    },
    Source {
        file: "batchnorm.cu",
        text: include_str!("kernels/batchnorm.cu"),
        kernels: &[
            "bn_statistics",
            "bn_forward",
            "bn_infer",
            "bn_running",
            "bn_backward_sums",
            "bn_backward_dx",
        ],
    },
    Source {
        file: "pool.cu",
        text: include_str!("kernels/pool.cu"),
        kernels: &[
            "maxpool_forward",
            "maxpool_backward",
            "gap_forward",
            "gap_backward",
        ],
    },
    Source {
        file: "im2col.cu",
        text: include_str!("kernels/im2col.cu"),
        kernels: &["im2col", "col2im"],
    },
    Source {
        file: "head.cu",
        text: include_str!("kernels/head.cu"),
        kernels: &["head_gradient"],
    },
    Source {
        file: "optim.cu",
        text: include_str!("kernels/optim.cu"),
        kernels: &[
            "add_l2",
            "gd_update",
            "momentum_update",
            "adam_update",
            "sum_squares",
        ],
    },
    Source {
        file: "gram.cu",
        text: include_str!("kernels/gram.cu"),
        kernels: &["byte_gram"],
    },
];

/// Compiles `source` to PTX for `arch` (`compute_90`, `sm_90`, ...).
///
/// # Errors
/// NVRTC's log, naming the file, when it does not compile.
///
/// # Panics
/// Inside cudarc when libnvrtc.so cannot be loaded: ask [`super::nvrtc_available`] first.
pub fn compile(source: &Source, arch: &str) -> std::result::Result<Ptx, String> {
    let options = CompileOptions {
        options: vec![format!("--gpu-architecture={arch}")],
        name: Some(source.file.into()),
        ..CompileOptions::default()
    };
    compile_ptx_with_opts(source.text, options).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => {
            format!(
                "{} does not compile for {arch}:\n{}",
                source.file,
                log.to_string_lossy()
            )
        }
        other => format!("{} does not compile for {arch}: {other:?}", source.file),
    })
}

/// Compiles every source for `arch`, loads it into `ctx` and finds its kernels by name.
///
/// # Errors
/// [`Error::Device`] when a source does not compile or a module or kernel cannot be loaded.
pub fn load(ctx: &Arc<CudaContext>, arch: &str) -> Result<HashMap<&'static str, CudaFunction>> {
    let mut functions = HashMap::new();
    for source in SOURCES {
        let ptx = compile(source, arch).map_err(Error::Device)?;
        let module = ctx.load_module(ptx).map_err(failed(source.file))?;
        for &name in source.kernels {
            let f = module.load_function(name).map_err(failed(name))?;
            functions.insert(name, f);
        }
    }
    Ok(functions)
}
