//! Heat maps on models whose answer is known to depend on one half of the image, and
//! Grad-CAM's channel weights against finite differences.

use super::*;
use crate::data::Preprocess;
use crate::model::Classes;
use crate::nn::spec::parse_body;
use crate::nn::{Architecture, Dense, Init, Mt19937};
use ndarray::{Array1, ArrayD, IxDyn};
use rand::{RngExt, SeedableRng};

/// The side of the test images.
const S: usize = 16;

fn model(network: Network, classes: &[&str]) -> Model {
    let names = classes.iter().map(|s| s.to_string()).collect();
    Model {
        network,
        classes: Classes::new(names, None).unwrap(),
        preprocess: Preprocess {
            size: S as u32,
            ..Preprocess::default()
        },
        tta: false,
    }
}

/// A seeded random photo row, `S × S × 3` bytes.
fn noise(seed: u64) -> Vec<u8> {
    let mut rng = crate::Rng::seed_from_u64(seed);
    (0..S * S * 3).map(|_| rng.random::<u8>()).collect()
}

/// A dense network (two layers, ReLU between) whose first layer reads only the pixels with
/// `keep(column)` true: its answer cannot depend on the others.
fn dense_reading(keep: impl Fn(usize) -> bool) -> Model {
    let mut rng = crate::Rng::seed_from_u64(7);
    let w1 = Array2::from_shape_fn((6, S * S * 3), |(_, j)| {
        let column = (j / 3) % S;
        if keep(column) {
            rng.random_range(-0.2f32..0.2)
        } else {
            0.0
        }
    });
    let w2 = Array2::from_shape_fn((1, 6), |(_, j)| if j % 2 == 0 { 1.0 } else { -0.7 });
    let layers = vec![
        Dense::with_bias(w1, Array1::from_elem(6, 0.1)),
        Dense::new(w2),
    ];
    let network = Network::from_dense(layers, Head::Sigmoid).with_input(Geometry::image(S));
    model(network, &["cats", "dogs"])
}

#[test]
fn a_dense_model_reading_the_left_half_gets_its_heat_there() {
    let left = dense_reading(|column| column < S / 2);
    let e = explain(&left, &noise(1), None).unwrap();
    assert_eq!(e.heat.method, Method::GradientInput);
    assert_eq!(e.heat.map.dim(), (S, S));
    let share = left_share(&e.heat.map);
    assert!(share >= 0.8, "left share {share}");
    // The control: a model reading the right half puts its heat there.
    let right = dense_reading(|column| column >= S / 2);
    let share = left_share(&explain(&right, &noise(1), None).unwrap().heat.map);
    assert!(share <= 0.2, "left share {share}");
}

/// A CNN `conv2 relu pool` → dense: conv channel 0 sees red, channel 1 blue; the dense head
/// reads channel `channel` on the pooled pixels with `keep(column)` only.
fn cnn_reading(channel: usize, keep: impl Fn(usize) -> bool) -> Model {
    let arch = Architecture {
        input: Geometry::image(S),
        body: parse_body("conv2 relu pool").unwrap(),
        outputs: 1,
    };
    let half = S / 2;
    let network = Network::from_tensors(&arch, |name, shape| {
        let t = ArrayD::from_shape_fn(IxDyn(shape), |i| match name {
            // Centre tap: channel 0 copies red, channel 1 copies blue.
            "conv1.weight" => f32::from(u8::from(i[2] == 1 && i[3] == 1 && i[1] == 2 * i[0])),
            "dense1.weight" => {
                let (pixel, c) = (i[1] / 2, i[1] % 2);
                let on = c == channel && keep(pixel % half);
                if on { 4.0 / (half * half) as f32 } else { 0.0 }
            }
            "dense1.bias" => -1.0,
            _ => 0.0,
        });
        Ok(t)
    })
    .unwrap();
    model(network, &["cats", "dogs"])
}

/// A photo red on its left half and blue on its right, with a little noise.
fn red_left_blue_right() -> Vec<u8> {
    let mut rng = crate::Rng::seed_from_u64(3);
    let mut row = Vec::with_capacity(S * S * 3);
    for _y in 0..S {
        for x in 0..S {
            let mut px = [0u8; 3].map(|_| rng.random_range(0..20u8));
            px[if x < S / 2 { 0 } else { 2 }] = rng.random_range(180..=255u8);
            row.extend(px);
        }
    }
    row
}

#[test]
fn a_cnn_reading_the_left_half_gets_its_heat_there() {
    let photo = red_left_blue_right();
    let left = cnn_reading(0, |column| column < S / 4);
    let e = explain(&left, &photo, Some(0)).unwrap();
    assert_eq!(e.heat.method, Method::GradCam { layer: 2 });
    assert_eq!(e.heat.map.dim(), (S / 2, S / 2));
    assert!(e.heat.weights[0] > 0.0 && e.heat.weights[1] == 0.0);
    let share = left_share(&e.heat.map);
    assert!(share >= 0.8, "left share {share}");
    // The control: the head reading blue on the right half puts the heat there.
    let right = cnn_reading(1, |column| column >= S / 4);
    let share = left_share(&explain(&right, &photo, Some(0)).unwrap().heat.map);
    assert!(share <= 0.2, "left share {share}");
}

#[test]
fn grad_cam_weights_are_the_finite_difference_derivative_of_the_class_score() {
    let arch = Architecture {
        input: Geometry::image(S),
        body: parse_body("conv4 bn relu res4 pool conv6 relu").unwrap(),
        outputs: 3,
    };
    let mut network = Network::new(&arch, Init::He, &mut Mt19937::new(5)).unwrap();
    // Batch norm with statistics of its own, not the identity's.
    let mut rng = crate::Rng::seed_from_u64(11);
    for mut b in network.buffers_mut() {
        b.mapv_inplace(|_| rng.random_range(0.5f32..1.5));
    }
    let m = model(network, &["a", "b", "c"]);
    let Method::GradCam { layer } = method_for(&m.network) else {
        panic!("a conv network gets Grad-CAM")
    };
    let x = Array2::from_shape_vec((1, S * S * 3), noise(2))
        .unwrap()
        .mapv(|v| f32::from(v) / 255.0);
    for class in 0..3 {
        let dscore = score_gradient(&m, class);
        let cam = grad_cam(&m.network, layer, x.view(), dscore.clone());
        let tail = &m.network.layers()[layer + 1..];
        let (c, pixels) = (cam.geometry.channels, cam.geometry.pixels() as f32);
        let eps = 1e-2f32;
        for k in 0..c {
            let shifted = |by: f32| {
                let mut a = cam.activations.clone();
                a.row_mut(0)
                    .iter_mut()
                    .skip(k)
                    .step_by(c)
                    .for_each(|v| *v += by);
                tail_score(tail, a.view(), dscore.view())
            };
            let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps) / pixels;
            let analytic = cam.weights[k];
            assert!(
                (numeric - analytic).abs() <= 1e-3 + 0.02 * analytic.abs(),
                "class {class}, channel {k}: α = {analytic}, finite difference {numeric}"
            );
        }
    }
}

#[test]
fn the_sigmoid_score_of_the_other_class_is_minus_the_logit() {
    let m = dense_reading(|_| true);
    assert_eq!(score_gradient(&m, 0), Array2::from_elem((1, 1), 1.0));
    assert_eq!(score_gradient(&m, 1), Array2::from_elem((1, 1), -1.0));
    // The positive class's heat and the other's are the same pixels (|±g·x|).
    let a = explain(&m, &noise(4), Some(0)).unwrap().heat.map;
    let b = explain(&m, &noise(4), Some(1)).unwrap().heat.map;
    assert!(a.abs_diff_eq(&b, 1e-6));
    assert!(explain(&m, &noise(4), Some(2)).is_err());
    assert!(explain(&m, &[0u8; 5], None).is_err());
}
