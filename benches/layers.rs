//! Time of each layer's forward and backward pass in the `cnn` preset at 64 px, batch 32:
//! where a conv training step spends its time. `cargo bench --bench layers [-- SIZE BATCH]`.
//!
//! Then each conv layer with every algorithm it can run (im2col, Winograd F(2×2, 3×3) and
//! F(4×4, 3×3)) side by side: median milliseconds of forward and backward, the algorithm the
//! cost model chose (`*`), and the direct convolution's multiply-adds per second as a share
//! of the machine's peak, measured on one large product. The algorithms take turns within
//! each repeat, so a machine loaded by other work slows them alike and the ratios hold.

use deepcat::linalg::matmul_into;
use deepcat::nn::recycle;
use deepcat::nn::spec::parse_body;
use deepcat::nn::winograd::Tile;
use deepcat::nn::{Algorithm, Architecture, Conv2d, Geometry, Init, Layer, Mode, Mt19937, Network};
use ndarray::Array2;
use rand::{RngExt, SeedableRng};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let size = args.first().copied().unwrap_or(64);
    let batch = args.get(1).copied().unwrap_or(32);
    let arch = Architecture {
        input: Geometry::image(size),
        body: parse_body("cnn").expect("the preset parses"),
        outputs: 1,
    };
    let net = Network::new(&arch, Init::He, &mut Mt19937::new(1)).expect("the preset fits");
    let mut rng = deepcat::Rng::seed_from_u64(1);
    let x = Array2::from_shape_simple_fn((batch, arch.input.len()), || rng.random::<f32>());
    let names = net.layer_names();
    let reps = 20;
    let mut fwd = vec![0.0f64; names.len()];
    let mut bwd = vec![0.0f64; names.len()];
    for rep in 0..reps + 2 {
        let mut outputs: Vec<Array2<f32>> = Vec::new();
        let mut saved = Vec::new();
        for (i, layer) in net.layers().iter().enumerate() {
            let input = outputs.last().map_or(x.view(), |o| o.view());
            let t = Instant::now();
            let (y, s) = layer.forward(input, &mut Mode::Train(&mut rng));
            if rep >= 2 {
                fwd[i] += t.elapsed().as_secs_f64();
            }
            outputs.push(y);
            saved.push(s);
        }
        let mut dy = Array2::<f32>::ones(outputs.last().expect("layers").dim());
        for (i, layer) in net.layers().iter().enumerate().rev() {
            let input = if i == 0 {
                x.view()
            } else {
                outputs[i - 1].view()
            };
            let t = Instant::now();
            let back = layer.backward(input, outputs[i].view(), &saved[i], dy, i > 0);
            if rep >= 2 {
                bwd[i] += t.elapsed().as_secs_f64();
            }
            dy = back.dx.unwrap_or_else(|| Array2::zeros((0, 0)));
        }
        // As a training step does: the arrays go back to the pool for the next step.
        // (Saved values give theirs back when dropped.)
        outputs.into_iter().for_each(recycle::give);
        drop(saved);
    }
    println!(
        "cnn preset, {size} px, batch {batch}, {} threads: ms per call",
        rayon::current_num_threads()
    );
    println!("{:<12} {:>9} {:>9}", "layer", "forward", "backward");
    for (i, name) in names.iter().enumerate() {
        println!(
            "{name:<12} {:>9.3} {:>9.3}",
            1e3 * fwd[i] / reps as f64,
            1e3 * bwd[i] / reps as f64
        );
    }
    let total = (fwd.iter().sum::<f64>() + bwd.iter().sum::<f64>()) / reps as f64;
    println!(
        "total {:.2} ms per step: {:.0} images/s",
        1e3 * total,
        batch as f64 / total
    );
    conv_algorithms(&net, &x, &names);
}

/// Multiply-adds per second of one large product on every thread: the machine's peak.
fn peak_madds() -> f64 {
    let n = 1536;
    let a = Array2::<f32>::from_elem((n, n), 0.5);
    let mut c = Array2::<f32>::zeros((n, n));
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        matmul_into(c.view_mut(), a.view(), a.view(), 1.0, false);
        best = best.min(t.elapsed().as_secs_f64());
    }
    (n * n * n) as f64 / best
}

/// The median of `v`.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Each conv layer of `net` timed with every algorithm it can run, on its own input from a
/// forward pass of `x`.
fn conv_algorithms(net: &Network, x: &Array2<f32>, names: &[String]) {
    let peak = peak_madds();
    println!(
        "\npeak: {:.1} G multiply-adds/s (one 1536³ product, {} threads)",
        peak / 1e9,
        rayon::current_num_threads()
    );
    println!(
        "{:<12} {:<9} {:>9} {:>9} {:>7} {:>7} {:>7}",
        "conv layer", "algorithm", "forward", "backward", "×fwd", "×bwd", "%peak"
    );
    let mut rng = deepcat::Rng::seed_from_u64(2);
    let mut input = x.clone();
    for (layer, name) in net.layers().iter().zip(names) {
        if let Some(conv) = layer.as_any().downcast_ref::<Conv2d>() {
            compare(conv, input.view(), name, peak);
        }
        input = layer.forward(input.view(), &mut Mode::Train(&mut rng)).0;
    }
}

/// One conv layer's row per algorithm: median forward and backward milliseconds over
/// repeats in which the algorithms take turns, the speed-up over im2col, and the share of
/// `peak` (direct-convolution multiply-adds over the forward plus backward time).
fn compare(conv: &Conv2d, x: ndarray::ArrayView2<'_, f32>, name: &str, peak: f64) {
    let mut algorithms = vec![Algorithm::Im2col];
    if conv.kernel() == 3 && conv.stride() == 1 {
        algorithms.extend([Algorithm::Winograd(Tile::F2), Algorithm::Winograd(Tile::F4)]);
    }
    let layers: Vec<Conv2d> = algorithms
        .iter()
        .map(|&a| {
            let mut c = conv.clone();
            c.set_algorithm(a);
            c
        })
        .collect();
    let mut rng = deepcat::Rng::seed_from_u64(3);
    let (reps, warm) = (15, 2);
    let mut times = vec![(Vec::new(), Vec::new()); layers.len()];
    for rep in 0..reps + warm {
        for (layer, (fwd, bwd)) in layers.iter().zip(&mut times) {
            let t = Instant::now();
            let (y, kept) = layer.forward(x, &mut Mode::Train(&mut rng));
            let f = t.elapsed().as_secs_f64();
            let dy = Array2::<f32>::from_elem(y.dim(), 0.01);
            let t = Instant::now();
            let back = layer.backward(x, y.view(), &kept, dy, true);
            let b = t.elapsed().as_secs_f64();
            if rep >= warm {
                fwd.push(f);
                bwd.push(b);
            }
            recycle::give(y);
            back.dx.into_iter().for_each(recycle::give);
        }
    }
    let (c_out, c_in, k, _) = conv.weight.dim();
    // Forward, input gradient and weight gradient: three direct products' worth.
    let madds = 3.0 * (x.nrows() * conv.output().pixels() * k * k * c_in * c_out) as f64;
    let medians: Vec<(f64, f64)> = times
        .into_iter()
        .map(|(f, b)| (median(f), median(b)))
        .collect();
    let (f0, b0) = medians[0];
    for ((layer, algorithm), (f, b)) in layers.iter().zip(&algorithms).zip(&medians) {
        let label = match algorithm {
            Algorithm::Im2col => "im2col".to_string(),
            Algorithm::Winograd(t) => format!("F({0}×{0})", t.m()),
        };
        let chosen = if layer.algorithm() == conv.algorithm() {
            "*"
        } else {
            ""
        };
        println!(
            "{:<12} {:<9} {:>9.3} {:>9.3} {:>7.2} {:>7.2} {:>6.0}%",
            name,
            label + chosen,
            1e3 * f,
            1e3 * b,
            f0 / f,
            b0 / b,
            100.0 * madds / (f + b) / peak
        );
    }
}
