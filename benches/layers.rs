//! Time of each layer's forward and backward pass in the `cnn` preset at 64 px, batch 32:
//! where a conv training step spends its time. `cargo bench --bench layers [-- SIZE BATCH]`.

use deepcat::nn::recycle;
use deepcat::nn::spec::parse_body;
use deepcat::nn::{Architecture, Geometry, Init, Mode, Mt19937, Network};
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
}
