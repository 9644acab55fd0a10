//! Finite-difference gradient checks of each layer on its own: for a fixed random `r`, the
//! cost `Σ r ⊙ layer(x)` is differentiated numerically with respect to every input and every
//! parameter, and compared with the layer's backward pass given `dy = r`. Batch norm is
//! checked in training mode, where its statistics depend on the whole batch.

use super::spec::{
    BatchNormSpec, Draw, GapSpec, LayerSpec, MaxPoolSpec, ReluSpec, ResidualSpec, parse_body,
};
use super::{AnyLayer, Geometry, Init, Layer, Mode, Mt19937};
use crate::Rng;
use ndarray::Array2;
use rand::{RngExt, SeedableRng};

/// `Σ r ⊙ layer(x)` in f64, in training mode.
fn cost(layer: &dyn AnyLayer, x: &Array2<f32>, r: &Array2<f32>) -> f64 {
    let mut rng = Rng::seed_from_u64(0);
    let (y, _) = layer.forward(x.view(), &mut Mode::Train(&mut rng));
    y.iter()
        .zip(r)
        .map(|(&y, &r)| f64::from(y) * f64::from(r))
        .sum()
}

/// Compares backprop with centred differences for the layer `spec` on `batch` random
/// `input` examples, with step `eps`; returns the number of values compared.
fn check(spec: LayerSpec, input: Geometry, batch: usize, eps: f32) -> usize {
    check_with(spec, input, batch, eps, false)
}

/// [`check`], and with `kinks`, values whose step crosses a ReLU kink are left out: where the
/// two one-sided differences disagree, the centred one measures the kink, not the gradient.
/// At most one value in ten may be left out.
fn check_with(spec: LayerSpec, input: Geometry, batch: usize, eps: f32, kinks: bool) -> usize {
    let mut layer = spec.build(input, &mut Draw::new(Init::He, &mut Mt19937::new(3)));
    let mut rng = Rng::seed_from_u64(7);
    // Distinct values, so max-pool windows have no ties; biases and scales away from defaults.
    let mut x =
        Array2::from_shape_simple_fn((batch, input.len()), || rng.random::<f32>() * 2.0 - 1.0);
    for mut p in layer.params_mut() {
        p.mapv_inplace(|v| v + 0.3 * rng.random::<f32>());
    }
    let (y, saved) = layer.forward(x.view(), &mut Mode::Train(&mut Rng::seed_from_u64(0)));
    let r = Array2::from_shape_simple_fn(y.dim(), || rng.random::<f32>() * 2.0 - 1.0);
    let back = layer.backward(x.view(), y.view(), &saved, r.clone(), true);
    let compare = |numeric: f64, analytic: f32, what: &str| {
        let analytic = f64::from(analytic);
        let err = (numeric - analytic).abs() / (1e-2 + numeric.abs() + analytic.abs());
        assert!(
            err < 3e-3,
            "{} {what}: backprop {analytic:.6e}, finite difference {numeric:.6e}",
            spec.token()
        );
    };
    let dx = back.dx.expect("asked for dx");
    let centre = cost(layer.as_ref(), &x, &r);
    let crosses_kink = |plus: f64, minus: f64| {
        let (up, down) = (plus - centre, centre - minus);
        kinks && (up - down).abs() > 0.01 * (up.abs() + down.abs()) + 1e-9
    };
    let (mut compared, mut skipped) = (0, 0);
    for i in 0..x.len() {
        let original = x.as_slice().unwrap()[i];
        x.as_slice_mut().unwrap()[i] = original + eps;
        let plus = cost(layer.as_ref(), &x, &r);
        x.as_slice_mut().unwrap()[i] = original - eps;
        let minus = cost(layer.as_ref(), &x, &r);
        x.as_slice_mut().unwrap()[i] = original;
        if crosses_kink(plus, minus) {
            skipped += 1;
            continue;
        }
        compare(
            (plus - minus) / (2.0 * f64::from(eps)),
            dx.as_slice().unwrap()[i],
            &format!("input {i}"),
        );
        compared += 1;
    }
    assert!(
        skipped * 10 <= x.len(),
        "{skipped} of {} inputs sit on kinks",
        x.len()
    );
    for (p, grad) in back.grads.iter().enumerate() {
        for i in 0..grad.len() {
            let original = layer.params_mut()[p].as_slice().unwrap()[i];
            layer.params_mut()[p].as_slice_mut().unwrap()[i] = original + eps;
            let plus = cost(layer.as_ref(), &x, &r);
            layer.params_mut()[p].as_slice_mut().unwrap()[i] = original - eps;
            let minus = cost(layer.as_ref(), &x, &r);
            layer.params_mut()[p].as_slice_mut().unwrap()[i] = original;
            if crosses_kink(plus, minus) {
                continue;
            }
            let numeric = (plus - minus) / (2.0 * f64::from(eps));
            compare(
                numeric,
                grad.as_slice().unwrap()[i],
                &format!("parameter {p} element {i}"),
            );
            compared += 1;
        }
    }
    compared
}

#[test]
fn conv_gradients_match_finite_differences_with_stride_and_padding() {
    for (channels, kernel, stride, input) in [
        (3, 3, 1, Geometry::new(5, 4, 2)),
        (2, 3, 2, Geometry::new(7, 6, 3)),
        (2, 5, 1, Geometry::new(5, 5, 1)),
        (4, 1, 1, Geometry::new(3, 3, 2)),
        (2, 1, 2, Geometry::new(5, 3, 2)),
    ] {
        let spec = LayerSpec::conv(channels, kernel, stride);
        assert!(check(spec, input, 2, 1e-2) > input.len());
    }
}

#[test]
fn pooling_gradients_match_finite_differences() {
    // An odd height: the last row is dropped and gets no gradient.
    let pool = LayerSpec::MaxPool(MaxPoolSpec {});
    assert!(check(pool, Geometry::new(5, 4, 3), 2, 1e-3) > 0);
    assert!(check(LayerSpec::Gap(GapSpec {}), Geometry::new(3, 4, 2), 3, 1e-2) > 0);
}

#[test]
fn batch_norm_gradients_match_finite_differences_in_training_mode() {
    // Over channels of images, and over the units of a dense layer's output.
    let bn = || LayerSpec::BatchNorm(BatchNormSpec {});
    assert!(check(bn(), Geometry::new(3, 2, 3), 4, 1e-3) > 0);
    assert!(check(bn(), Geometry::flat(5), 6, 1e-3) > 0);
}

#[test]
fn residual_block_gradients_match_finite_differences_with_both_shortcuts() {
    // The identity shortcut (the body keeps the shape) and the projection (stride 2, more
    // channels): the gradient reaches the input down both branches.
    // ReLUs (in the body and after the sum) have kinks: steps across them are left out. The
    // step is a compromise measured here: at 1e-3 f32 rounding through batch norm shows, at
    // 1e-2 steps cross kinks too small for the one-sided test to see.
    let identity = LayerSpec::Residual(ResidualSpec::basic(3, 1));
    assert!(check_with(identity, Geometry::new(4, 4, 3), 2, 3e-3, true) > 150);
    let projection = LayerSpec::Residual(ResidualSpec::basic(4, 2));
    assert!(check_with(projection, Geometry::new(5, 5, 2), 2, 3e-3, true) > 150);
    // A general block: a body without batch norm and a 1×1 projection of the channels.
    let general = parse_body("res(conv4 relu conv4 | conv4k1)")
        .unwrap()
        .remove(0);
    assert!(check_with(general, Geometry::new(3, 3, 2), 2, 3e-3, true) > 100);
    let single = parse_body("res(conv3)").unwrap().remove(0);
    assert!(check_with(single, Geometry::new(3, 3, 3), 2, 3e-3, true) > 50);
}

#[test]
fn the_layer_check_catches_a_wrong_gradient() {
    // A check that cannot fail proves nothing: a layer whose backward is off must fail it.
    #[derive(Debug, Clone)]
    struct Doubling;
    impl Layer for Doubling {
        type Saved = ();
        fn spec(&self) -> LayerSpec {
            LayerSpec::Relu(ReluSpec {})
        }
        fn output(&self) -> Geometry {
            Geometry::flat(2)
        }
        fn forward(
            &self,
            x: ndarray::ArrayView2<'_, f32>,
            _mode: &mut Mode<'_>,
        ) -> (Array2<f32>, ()) {
            (x.mapv(|v| 2.0 * v), ())
        }
        fn backward(
            &self,
            _x: ndarray::ArrayView2<'_, f32>,
            _y: ndarray::ArrayView2<'_, f32>,
            _saved: &(),
            dy: Array2<f32>,
            _need_dx: bool,
        ) -> super::Backward {
            // Wrong on purpose: the true gradient is 2·dy.
            super::Backward {
                dx: Some(dy),
                grads: Vec::new(),
            }
        }
    }
    let layer: Box<dyn AnyLayer> = Box::new(Doubling);
    let x = Array2::from_elem((1, 2), 0.5f32);
    let r = Array2::from_elem((1, 2), 1.0f32);
    let (y, saved) = layer.forward(x.view(), &mut Mode::Infer);
    let back = layer.backward(x.view(), y.view(), &saved, r.clone(), true);
    let eps = 1e-2;
    let mut xp = x.clone();
    xp[[0, 0]] += eps;
    let mut xm = x.clone();
    xm[[0, 0]] -= eps;
    let numeric =
        (cost(layer.as_ref(), &xp, &r) - cost(layer.as_ref(), &xm, &r)) / (2.0 * f64::from(eps));
    let analytic = f64::from(back.dx.unwrap()[[0, 0]]);
    assert!(
        (numeric - analytic).abs() > 0.5,
        "numeric {numeric}, analytic {analytic}"
    );
}
