//! Tests of the maths (gradient check) and of the training loop (Gram = direct, early
//! stopping, resuming, reproducibility).

use super::direct::forward_backward;
use super::*;
use crate::Rng;
use crate::data::Dataset;
use crate::linalg::bytes;
use crate::nn::spec::dense_body;
use crate::nn::{Geometry, Init, LayerSpec, Mode, Rows};
use crate::optim::{OptimizerConfig, Schedule};
use ndarray::{Array2, ArrayView2};
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;

/// Adam with PyTorch's defaults.
const ADAM: OptimizerConfig = OptimizerConfig::Adam {
    beta1: 0.9,
    beta2: 0.999,
    epsilon: 1e-8,
};

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("class{i}")).collect()
}

/// A learnable random problem: labels from a random linear rule on random bytes (features
/// `v / 255` in [0, 1]).
fn problem(m: usize, n: usize, classes: usize, seed: u64) -> Dataset {
    let mut rng = Rng::seed_from_u64(seed);
    let x = Array2::from_shape_simple_fn((m, n), || rng.random::<u8>());
    let w = Array2::from_shape_simple_fn((classes, n), || rng.random::<f32>() - 0.5);
    let scores = bytes::to_unit(x.view()).dot(&w.t());
    let labels = scores
        .rows()
        .into_iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .fold((0, f32::MIN), |b, (i, &v)| if v > b.1 { (i, v) } else { b })
                .0
        })
        .collect();
    Dataset {
        x,
        labels,
        paths: (0..m).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
    }
}

/// Cost with the L2 term, evaluated with a fixed dropout mask (the generator is re-seeded).
fn full_cost(
    net: &Network,
    x: Rows<'_>,
    targets: ArrayView2<'_, f32>,
    l2: f32,
    mask_seed: u64,
) -> f64 {
    let mut rng = Rng::seed_from_u64(mask_seed);
    let pass = net.forward(x, &mut Mode::Train(&mut rng));
    net.head().cost(pass.logits(), targets) + 0.5 * f64::from(l2) * net.weight_norm_sq()
}

/// How far the forward pass with the fixed dropout mask is from a kink, where finite
/// differences mean nothing: the smallest `|z|` over every input of every ReLU, and half the
/// smallest gap between the largest and second-largest input of every max-pool window.
fn distance_to_kinks(net: &Network, x: Rows<'_>, mask_seed: u64) -> f32 {
    let mut rng = Rng::seed_from_u64(mask_seed);
    let pass = net.forward(x, &mut Mode::Train(&mut rng));
    let mut inputs = vec![x.values().into_owned()];
    inputs.extend(pass.outputs.iter().cloned());
    let geometries: Vec<Geometry> = std::iter::once(net.input())
        .chain(net.geometries())
        .collect();
    let mut distance = f32::INFINITY;
    for (i, layer) in net.layers().iter().enumerate() {
        let input = &inputs[i];
        match layer.spec().kind() {
            "relu" => distance = input.iter().fold(distance, |d, z| d.min(z.abs())),
            "maxpool" => {
                let g = geometries[i];
                let at = |y: usize, x: usize, ch: usize| (y * g.width + x) * g.channels + ch;
                for row in input.rows() {
                    for (oy, ox, ch) in grid(g.height / 2, g.width / 2, g.channels) {
                        let mut w = [
                            row[at(2 * oy, 2 * ox, ch)],
                            row[at(2 * oy, 2 * ox + 1, ch)],
                            row[at(2 * oy + 1, 2 * ox, ch)],
                            row[at(2 * oy + 1, 2 * ox + 1, ch)],
                        ];
                        w.sort_by(f32::total_cmp);
                        // Windows of a ReLU's exact zeros tie harmlessly: no gradient flows
                        // there, and the ReLU's own distance covers them turning positive.
                        if w[3] != 0.0 {
                            distance = distance.min((w[3] - w[2]) / 2.0);
                        }
                    }
                }
            }
            "residual" => {
                let mut rng = Rng::seed_from_u64(mask_seed);
                let d = residual_kinks(layer.as_ref(), input, &mut rng);
                distance = distance.min(d);
            }
            _ => {}
        }
    }
    distance
}

/// A residual block's kinks: the ReLUs inside its branches and the one after the sum (the
/// test networks put no max-pool inside a block).
fn residual_kinks(block: &dyn crate::nn::AnyLayer, x: &Array2<f32>, rng: &mut Rng) -> f32 {
    let children = block.children();
    let mut distance = f32::INFINITY;
    let mut run = |shortcut: bool, distance: &mut f32| -> Array2<f32> {
        let mut h = x.clone();
        for (name, layer) in &children {
            if name.starts_with("shortcut.") != shortcut {
                continue;
            }
            match layer.spec().kind() {
                "relu" => *distance = h.iter().fold(*distance, |d, z| d.min(z.abs())),
                "residual" => *distance = distance.min(residual_kinks(*layer, &h, rng)),
                _ => {}
            }
            h = layer.forward(h.view(), &mut Mode::Train(rng)).0;
        }
        h
    };
    let body = run(false, &mut distance);
    let shortcut = run(true, &mut distance);
    let sum = body + shortcut;
    sum.iter().fold(distance, |d, z| d.min(z.abs()))
}

/// Every `(a, b, c)` with `a < na`, `b < nb`, `c < nc`.
fn grid(na: usize, nb: usize, nc: usize) -> Vec<(usize, usize, usize)> {
    (0..na)
        .flat_map(|a| (0..nb).flat_map(move |b| (0..nc).map(move |c| (a, b, c))))
        .collect()
}

/// Backprop against centred finite differences for every parameter of a small dense network.
fn gradient_check(classes: usize, l2: f32, dropout: f32) {
    let data = problem(12, 7, classes, 3);
    let cls = Classes::new(names(classes), None).unwrap();
    let arch = Architecture::dense(Geometry::flat(7), &[6, 5], cls.outputs(), dropout);
    check_network_gradients(&arch, &data, &cls, l2, 0.0, 3e-3, 3.0);
}

/// Backprop against centred finite differences for every parameter of a network of `arch`
/// on `data` (targets label-smoothed by `smoothing`), on the first drawn network whose kinks
/// (ReLU inputs, max-pool ties, inside residual blocks too) all keep `margin · eps` away:
/// moving one parameter by `eps` moves what a kink sees by less there.
fn check_network_gradients(
    arch: &Architecture,
    data: &Dataset,
    cls: &Classes,
    l2: f32,
    smoothing: f32,
    eps: f32,
    margin: f32,
) {
    let mask_seed = 99;
    let net = (0..200)
        .map(|seed| {
            let mut net = Network::new(arch, Init::He, &mut Mt19937::new(seed)).unwrap();
            // Non-zero biases (and batch-norm shifts) so that every bias gradient is exercised.
            for mut p in net.params_mut() {
                if p.ndim() == 1 {
                    p.mapv_inplace(|v| v + 0.05);
                }
            }
            net
        })
        .find(|net| distance_to_kinks(net, Rows::from(data.x.view()), mask_seed) > margin * eps);
    let mut net = net.expect("one of 200 networks keeps away from every kink");
    let mut targets = cls.targets(&data.labels);
    crate::loss::smoothed(&mut targets, smoothing);
    let (_, grads, _) = forward_backward(
        &net,
        Rows::from(data.x.view()),
        targets.view(),
        &data.labels,
        cls,
        l2,
        false,
        Mode::Train(&mut Rng::seed_from_u64(mask_seed)),
        None,
    );

    let mut worst = 0.0f64;
    for (p, grad) in grads.iter().enumerate() {
        let len = net.params_mut()[p].len();
        for i in 0..len {
            let original = net.params_mut()[p].as_slice_mut().unwrap()[i];
            net.params_mut()[p].as_slice_mut().unwrap()[i] = original + eps;
            let plus = full_cost(
                &net,
                Rows::from(data.x.view()),
                targets.view(),
                l2,
                mask_seed,
            );
            net.params_mut()[p].as_slice_mut().unwrap()[i] = original - eps;
            let minus = full_cost(
                &net,
                Rows::from(data.x.view()),
                targets.view(),
                l2,
                mask_seed,
            );
            net.params_mut()[p].as_slice_mut().unwrap()[i] = original;
            let numeric = (plus - minus) / (2.0 * f64::from(eps));
            let analytic = f64::from(grad.as_slice().unwrap()[i]);
            let err = (numeric - analytic).abs() / (1e-2 + numeric.abs() + analytic.abs());
            worst = worst.max(err);
            assert!(
                err < 2e-3,
                "parameter {p} element {i}: backprop {analytic:.6e}, finite difference {numeric:.6e}"
            );
        }
    }
    assert!(worst > 0.0, "the check compared nothing");
}

/// A small image problem: `m` random `side × side` RGB images with labels from a linear rule.
fn image_problem(m: usize, side: usize, classes: usize, seed: u64) -> Dataset {
    problem(m, side * side * 3, classes, seed)
}

#[test]
fn gradient_check_of_a_whole_cnn_with_softmax_and_sigmoid_heads() {
    // Conv with stride 1 and 2 (padding at every edge), batch norm in training mode, max-pool,
    // global average pool, a dense layer and the head. Small, so that few ReLU inputs and
    // max-pool windows can come near a kink.
    let body =
        crate::nn::spec::parse_body("conv2 bn relu pool conv3s2 relu gap dense4 relu").unwrap();
    for classes in [2, 3] {
        let data = image_problem(4, 4, classes, 11);
        let cls = Classes::new(names(classes), None).unwrap();
        let arch = Architecture {
            input: Geometry::image(4),
            body: body.clone(),
            outputs: cls.outputs(),
        };
        check_network_gradients(&arch, &data, &cls, 0.01, 0.0, 1e-3, 10.0);
    }
}

#[test]
fn gradient_check_of_a_whole_resnet_with_softmax_and_sigmoid_heads_and_label_smoothing() {
    // A stem, a block with the identity shortcut, a block with a stride-2 projection, global
    // average pooling and the head: every parameter, batch norm in training mode, with
    // hard targets and with label-smoothed ones. The step is 3e-3 (at 1e-3, f32 rounding through
    // two batch norms in a row reaches the tolerance), with kinks kept 3 steps away.
    let body = crate::nn::spec::parse_body(
        "conv2 bn relu res2 res(conv3s2 bn relu conv3 bn | conv3k1s2 bn) gap",
    )
    .unwrap();
    for (classes, smoothing) in [(2, 0.0), (3, 0.0), (2, 0.1), (3, 0.2)] {
        let data = image_problem(4, 4, classes, 13);
        let cls = Classes::new(names(classes), None).unwrap();
        let arch = Architecture {
            input: Geometry::image(4),
            body: body.clone(),
            outputs: cls.outputs(),
        };
        check_network_gradients(&arch, &data, &cls, 0.0, smoothing, 3e-3, 3.0);
    }
}

#[test]
fn gradient_check_sigmoid() {
    gradient_check(2, 0.0, 0.0);
}

#[test]
fn gradient_check_softmax() {
    gradient_check(4, 0.0, 0.0);
}

#[test]
fn gradient_check_with_l2_and_dropout_mask() {
    gradient_check(2, 0.3, 0.0);
    gradient_check(3, 0.1, 0.3);
}

#[test]
fn the_gradient_check_catches_a_wrong_gradient() {
    // Guard against a check that cannot fail: halve one gradient and expect a panic.
    let result = std::panic::catch_unwind(|| {
        let data = problem(8, 5, 2, 1);
        let cls = Classes::new(names(2), None).unwrap();
        let arch = Architecture::dense(Geometry::flat(5), &[4], 1, 0.0);
        let mut net = Network::new(&arch, Init::He, &mut Mt19937::new(2)).unwrap();
        let targets = cls.targets(&data.labels);
        let (_, mut grads, _) = forward_backward(
            &net,
            Rows::from(data.x.view()),
            targets.view(),
            &data.labels,
            &cls,
            0.0,
            false,
            Mode::Train(&mut Rng::seed_from_u64(0)),
            None,
        );
        grads[0].mapv_inplace(|g| g * 0.5);
        let eps = 1e-3;
        for i in 0..grads[0].len() {
            let orig = net.params_mut()[0].as_slice_mut().unwrap()[i];
            net.params_mut()[0].as_slice_mut().unwrap()[i] = orig + eps;
            let plus = full_cost(&net, Rows::from(data.x.view()), targets.view(), 0.0, 0);
            net.params_mut()[0].as_slice_mut().unwrap()[i] = orig - eps;
            let minus = full_cost(&net, Rows::from(data.x.view()), targets.view(), 0.0, 0);
            net.params_mut()[0].as_slice_mut().unwrap()[i] = orig;
            let numeric = (plus - minus) / (2.0 * f64::from(eps));
            let analytic = f64::from(grads[0].as_slice().unwrap()[i]);
            assert!((numeric - analytic).abs() / (1e-2 + numeric.abs() + analytic.abs()) < 2e-3);
        }
    });
    assert!(result.is_err());
}

fn config(iterations: usize) -> TrainConfig {
    TrainConfig {
        body: dense_body(&[6, 4], 0.0),
        learning_rate: 0.05,
        length: Length::Iterations(iterations),
        record_every: 10,
        ..TrainConfig::default()
    }
}

/// Rows read as flat vectors (dense networks only).
fn flat(data: &Dataset) -> Geometry {
    Geometry::flat(data.x.ncols())
}

fn run(
    config: &TrainConfig,
    train_set: &Dataset,
    val: Option<&Dataset>,
    classes: &Classes,
) -> Trained {
    train(
        config,
        train_set,
        val.map(|v| v as &dyn Examples),
        classes,
        flat(train_set),
        None,
        &mut [],
    )
    .unwrap()
}

fn assert_same_training(a: &Trained, b: &Trained) {
    assert_eq!(a.history.records.len(), b.history.records.len());
    for (ra, rb) in a.history.records.iter().zip(&b.history.records) {
        let rel = (ra.cost - rb.cost).abs() / ra.cost.abs().max(1e-12);
        assert!(
            rel < 1e-4,
            "step {}: costs {} and {} differ by {rel:e} relative",
            ra.step,
            ra.cost,
            rb.cost
        );
        assert_eq!(ra.train_accuracy, rb.train_accuracy, "step {}", ra.step);
        if let (Some(va), Some(vb)) = (ra.val_cost, rb.val_cost) {
            assert!(
                (va - vb).abs() / va < 1e-4,
                "step {}: val costs {va} and {vb}",
                ra.step
            );
        }
    }
    for ((na, pa), (nb, pb)) in a
        .network
        .named_params()
        .iter()
        .zip(b.network.named_params())
    {
        assert_eq!(na, &nb);
        let scale = pa.iter().fold(0.0f32, |s, v| s.max(v.abs()));
        let diff = pa
            .iter()
            .zip(pb.iter())
            .fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(
            diff <= 1e-3 * scale.max(1.0),
            "{na}: weights differ by {diff} (scale {scale})"
        );
    }
}

#[test]
fn gram_path_trains_exactly_like_the_direct_path() {
    let data = problem(40, 300, 2, 5);
    let cls = Classes::new(names(2), None).unwrap();
    let gram = run(
        &TrainConfig {
            exact_path: ExactPath::Gram,
            ..config(300)
        },
        &data,
        None,
        &cls,
    );
    let direct = run(
        &TrainConfig {
            exact_path: ExactPath::Direct,
            ..config(300)
        },
        &data,
        None,
        &cls,
    );
    assert_eq!((gram.path, direct.path), ("gram", "direct"));
    assert!(gram.history.records.last().unwrap().cost < 0.5 * gram.history.records[0].cost);
    assert_same_training(&gram, &direct);
}

#[test]
fn gram_path_matches_with_momentum_l2_minibatches_validation_and_softmax() {
    let data = problem(50, 200, 3, 6);
    let val = problem(15, 200, 3, 7);
    let cls = Classes::new(names(3), None).unwrap();
    let base = TrainConfig {
        optimizer: OptimizerConfig::Momentum { beta: 0.9 },
        l2: 0.01,
        batch_size: Some(16),
        length: Length::Epochs(20),
        learning_rate: 0.02,
        schedule: Schedule::Cosine { min_factor: 0.1 },
        ..config(0)
    };
    let gram = run(
        &TrainConfig {
            exact_path: ExactPath::Gram,
            ..base.clone()
        },
        &data,
        Some(&val),
        &cls,
    );
    let direct = run(
        &TrainConfig {
            exact_path: ExactPath::Direct,
            ..base
        },
        &data,
        Some(&val),
        &cls,
    );
    assert_eq!(gram.history.records.len(), 20);
    assert!(gram.history.records[0].val_cost.is_some());
    assert_same_training(&gram, &direct);
    // The optimiser state, mapped back to weight space, agrees too.
    let (sg, sd) = (&gram.optimizer.state, &direct.optimizer.state);
    assert_eq!(sg.step, sd.step);
    for (a, b) in sg.slots.iter().flatten().zip(sd.slots.iter().flatten()) {
        let scale = b.iter().fold(0.0f32, |s, v| s.max(v.abs())).max(1.0);
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(diff < 1e-3 * scale, "velocity differs by {diff}");
    }
}

#[test]
fn auto_chooses_gram_for_few_wide_examples_and_direct_otherwise() {
    let wide = problem(30, 2000, 2, 1);
    let cls = Classes::new(names(2), None).unwrap();
    assert_eq!(run(&config(20), &wide, None, &cls).path, "gram");
    let adam = TrainConfig {
        optimizer: ADAM,
        ..config(20)
    };
    assert_eq!(run(&adam, &wide, None, &cls).path, "direct");
    let narrow = problem(300, 10, 2, 1);
    assert_eq!(run(&config(20), &narrow, None, &cls).path, "direct");
    let forced = TrainConfig {
        exact_path: ExactPath::Gram,
        ..adam
    };
    let err = train(&forced, &wide, None, &cls, flat(&wide), None, &mut [])
        .err()
        .unwrap();
    assert!(err.to_string().contains("not linear"), "{err}");
}

#[test]
fn training_is_reproducible_for_a_seed_and_learns() {
    let data = problem(200, 20, 2, 8);
    let cls = Classes::new(names(2), None).unwrap();
    let cfg = TrainConfig {
        optimizer: ADAM,
        learning_rate: 0.01,
        batch_size: Some(32),
        length: Length::Epochs(30),
        body: dense_body(&[6, 4], 0.1),
        ..config(0)
    };
    let a = run(&cfg, &data, None, &cls);
    let b = run(&cfg, &data, None, &cls);
    assert_eq!(a.history, b.history);
    assert!(
        a.history.records.last().unwrap().train_accuracy > 0.9,
        "{:?}",
        a.history.records.last()
    );
    let c = run(&TrainConfig { seed: 2, ..cfg }, &data, None, &cls);
    assert_ne!(a.history, c.history);
}

#[test]
fn early_stopping_restores_the_best_validation_weights() {
    // Few, noisy training examples and a big network: validation cost falls, then rises.
    let mut data = problem(30, 40, 2, 9);
    for l in data.labels.iter_mut().step_by(4) {
        *l = 1 - *l;
    }
    let val = problem(200, 40, 2, 9);
    let cls = Classes::new(names(2), None).unwrap();
    let cfg = TrainConfig {
        body: dense_body(&[64, 64], 0.0),
        optimizer: ADAM,
        learning_rate: 0.01,
        length: Length::Epochs(400),
        patience: Some(10),
        init: Init::He,
        ..config(0)
    };
    let out = run(&cfg, &data, Some(&val), &cls);
    assert!(
        out.stopped_early,
        "the run should overfit and stop before 400 epochs"
    );
    let best = out.restored.clone().expect("best weights restored");
    let min = out
        .history
        .records
        .iter()
        .filter_map(|r| r.val_cost)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best.val_cost, Some(min));
    let last = out.history.records.last().unwrap();
    assert!(
        last.val_cost.unwrap() > min,
        "the last record is worse than the best"
    );
    assert_eq!(out.history.records.len(), best.epoch.unwrap() + 10);
    // The returned network really is the best one: its validation cost is the best record's.
    let pass = out.network.forward(val.x.view(), &mut Mode::Infer);
    let cost = out
        .network
        .head()
        .cost(pass.logits(), cls.targets(&val.labels).view());
    assert!(
        (cost - min).abs() < 1e-3 * min,
        "restored network's val cost {cost}, best {min}"
    );
}

#[test]
fn resuming_with_optimiser_state_continues_the_same_run() {
    let data = problem(60, 15, 2, 4);
    let cls = Classes::new(names(2), None).unwrap();
    let cfg = TrainConfig {
        optimizer: ADAM,
        learning_rate: 0.01,
        exact_path: ExactPath::Direct,
        ..config(100)
    };
    let whole = run(&cfg, &data, None, &cls);
    let half = TrainConfig {
        length: Length::Iterations(50),
        ..cfg.clone()
    };
    let first = run(&half, &data, None, &cls);
    let start = Start {
        network: first.network,
        optimizer: Some(first.optimizer),
    };
    let second = train(&half, &data, None, &cls, flat(&data), Some(start), &mut []).unwrap();
    for ((_, a), (_, b)) in whole
        .network
        .named_params()
        .iter()
        .zip(second.network.named_params())
    {
        let diff = a
            .iter()
            .zip(b.iter())
            .fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
        assert!(diff < 1e-5, "resumed run differs by {diff}");
    }
    assert_eq!(second.optimizer.state.step, 100);
}

#[test]
fn bad_configurations_are_refused_with_the_flag_named() {
    let cases: Vec<(TrainConfig, &str)> = vec![
        (
            TrainConfig {
                learning_rate: -1.0,
                ..TrainConfig::default()
            },
            "--lr",
        ),
        (
            TrainConfig {
                length: Length::Iterations(0),
                ..TrainConfig::default()
            },
            "--iterations",
        ),
        (
            TrainConfig {
                batch_size: Some(0),
                ..TrainConfig::default()
            },
            "--batch-size",
        ),
        (
            TrainConfig {
                body: vec![LayerSpec::dense(20), LayerSpec::dropout(1.0)],
                ..TrainConfig::default()
            },
            "dropout probability",
        ),
        (
            TrainConfig {
                body: dense_body(&[20, 0], 0.0),
                ..TrainConfig::default()
            },
            "--layers",
        ),
        (
            TrainConfig {
                l2: f32::NAN,
                ..TrainConfig::default()
            },
            "--l2",
        ),
    ];
    for (cfg, flag) in cases {
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.contains(flag), "{err}");
    }
    let data = problem(10, 4, 2, 1);
    let cls = Classes::new(names(2), None).unwrap();
    let cfg = TrainConfig {
        patience: Some(3),
        ..config(10)
    };
    assert!(
        train(&cfg, &data, None, &cls, flat(&data), None, &mut [])
            .err()
            .unwrap()
            .to_string()
            .contains("--val-split")
    );
}
