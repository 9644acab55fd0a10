//! The GPU against the CPU: layers, optimisers, a short training run and predictions. Each test
//! skips (saying so) when no GPU can be opened.

use super::gpu_or_skip;
use deepcat::Rng;
use deepcat::cuda::net::{DeviceNet, upload_rows};
use deepcat::data::{Dataset, Examples};
use deepcat::device::{Device, Forward};
use deepcat::model::{Classes, Model};
use deepcat::nn::spec::parse_body;
use deepcat::nn::{Architecture, Geometry, Init, Mode, Mt19937, Network, Rows};
use deepcat::optim::OptimizerConfig;
use deepcat::train::{Length, TrainConfig, Trained, train};
use ndarray::{Array2, ArrayD, ArrayView2};
use rand::{RngExt, SeedableRng};
use std::path::PathBuf;

/// The largest difference between `a` and `b`, relative to the larger magnitude of `a`
/// (at least 1e-3, so values that are all near zero compare absolutely).
fn relative_difference(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let scale = a.iter().fold(1e-3f32, |s, v| s.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f32, |s, (x, y)| s.max((x - y).abs()));
    diff / scale
}

/// Random image bytes `(rows, g.len())`.
fn images(rows: usize, g: Geometry, seed: u64) -> Array2<u8> {
    let mut rng = Rng::seed_from_u64(seed);
    Array2::from_shape_simple_fn((rows, g.len()), || rng.random::<u8>())
}

fn network(body: &str, input: Geometry, outputs: usize, seed: u64) -> Network {
    let arch = Architecture {
        input,
        body: parse_body(body).unwrap(),
        outputs,
    };
    Network::new(&arch, Init::He, &mut Mt19937::new(seed)).unwrap()
}

const BODIES: &[&str] = &[
    "dense8 relu",
    "conv4 bn relu pool conv6k5s2 relu gap",
    "conv4 relu res4 res6s2 gap dense5 bn relu",
    "conv3k1 bn relu pool dropout0.5 dense4",
];

#[test]
fn inference_on_the_gpu_equals_the_cpu_for_every_layer_kind() {
    let Some(gpu) = gpu_or_skip("inference_on_the_gpu_equals_the_cpu_for_every_layer_kind") else {
        return;
    };
    let g = Geometry::new(8, 8, 3);
    for (i, body) in BODIES.iter().enumerate() {
        for outputs in [1, 3] {
            let mut net = network(body, g, outputs, i as u64 + 1);
            // Batch norm with statistics that are not the identity.
            for mut b in net.buffers_mut() {
                b.mapv_inplace(|v| v * 0.7 + 0.2);
            }
            let x = images(7, g, 9);
            let cpu = net.logits(x.view()).into_dyn();
            let gpu_net = deepcat::cuda::Inference::new(gpu.clone(), &net).unwrap();
            let on_gpu = gpu_net.logits(Rows::Bytes(x.view())).unwrap().into_dyn();
            let d = relative_difference(&cpu, &on_gpu);
            assert!(
                d < 1e-4,
                "{body} ({outputs} outputs): logits differ by {d:e}"
            );
        }
    }
}

#[test]
fn training_passes_on_the_gpu_give_the_cpus_gradients() {
    let Some(gpu) = gpu_or_skip("training_passes_on_the_gpu_give_the_cpus_gradients") else {
        return;
    };
    let g = Geometry::new(8, 8, 3);
    // Dropout's masks differ by design (another generator): the bodies without it.
    for (i, body) in BODIES[..3].iter().enumerate() {
        let net = network(body, g, 3, i as u64 + 11);
        let x = images(6, g, 5);
        let targets = Array2::from_shape_fn((6, 3), |(r, c)| f32::from(r % 3 == c));
        let mut rng = Rng::seed_from_u64(1);
        let pass = net.forward(x.view(), &mut Mode::Train(&mut rng));
        let dlogits = net.head().cost_gradient(pass.logits(), targets.view());
        let (cpu_grads, _) = net.backward(x.view(), &pass, dlogits.clone(), false);

        let device = DeviceNet::new(&gpu, &net).unwrap();
        let xb = upload_rows(&gpu, Rows::Bytes(x.view())).unwrap();
        let steps = device.forward(&gpu, &xb, 6, &mut rng).unwrap();
        let logits = gpu.download(&steps.last().unwrap().y).unwrap();
        let logits = ArrayD::from_shape_vec(vec![6, 3], logits).unwrap();
        let d = relative_difference(&pass.logits().to_owned().into_dyn(), &logits);
        assert!(d < 1e-4, "{body}: training logits differ by {d:e}");
        let dl = upload_rows(&gpu, Rows::Values(dlogits.view())).unwrap();
        let grads = device.backward(&gpu, &xb, &steps, dl, 6).unwrap();
        let names = net.named_params();
        for ((p, g), (cpu, (name, _))) in device
            .params()
            .iter()
            .zip(&grads)
            .zip(cpu_grads.iter().zip(&names))
        {
            let on_gpu = p.download_as_self(&gpu, g).unwrap();
            let d = relative_difference(cpu, &on_gpu);
            assert!(d < 1e-4, "{body}: gradient of {name} differs by {d:e}");
        }
    }
}

/// A learnable problem: labels from a random linear rule on random image bytes.
fn problem(m: usize, g: Geometry, classes: usize, seed: u64) -> Dataset {
    let x = images(m, g, seed);
    let mut rng = Rng::seed_from_u64(seed + 1);
    let w: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..g.len()).map(|_| rng.random::<f32>() - 0.5).collect())
        .collect();
    let labels = x
        .rows()
        .into_iter()
        .map(|row| {
            let score =
                |w: &Vec<f32>| -> f32 { row.iter().zip(w).map(|(&v, &w)| f32::from(v) * w).sum() };
            (0..classes)
                .max_by(|&a, &b| score(&w[a]).total_cmp(&score(&w[b])))
                .unwrap_or(0)
        })
        .collect();
    Dataset {
        x,
        labels,
        paths: (0..m).map(|i| PathBuf::from(format!("{i}.png"))).collect(),
    }
}

fn run(config: &TrainConfig, data: &Dataset, classes: &Classes, g: Geometry) -> Trained {
    train(config, data, None, classes, g, None, &mut []).unwrap()
}

#[test]
fn optimisers_on_the_gpu_take_the_cpus_steps() {
    if gpu_or_skip("optimisers_on_the_gpu_take_the_cpus_steps").is_none() {
        return;
    }
    let g = Geometry::new(6, 6, 3);
    let data = problem(24, g, 3, 7);
    let classes = Classes::new((0..3).map(|i| format!("c{i}")).collect(), None).unwrap();
    let adam = OptimizerConfig::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };
    let adamw = OptimizerConfig::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
        weight_decay: 0.1,
    };
    let momentum = OptimizerConfig::Momentum { beta: 0.9 };
    for optimizer in [OptimizerConfig::Gd, momentum, adam, adamw] {
        let cpu = TrainConfig {
            // No batch norm here: the bias of a layer before one has a gradient of pure
            // rounding noise, which Adam scales up to whole steps of either sign.
            body: parse_body("conv4 relu pool dense6 relu").unwrap(),
            optimizer,
            learning_rate: 0.01,
            l2: 0.01,
            batch_size: Some(8),
            length: Length::Iterations(6),
            record_every: 1,
            ..TrainConfig::default()
        };
        let cuda = TrainConfig {
            device: Device::Cuda,
            ..cpu.clone()
        };
        let (a, b) = (
            run(&cpu, &data, &classes, g),
            run(&cuda, &data, &classes, g),
        );
        for ((name, pa), (_, pb)) in a
            .network
            .named_params()
            .iter()
            .zip(b.network.named_params())
        {
            let d = relative_difference(&pa.to_owned(), &pb.to_owned());
            assert!(d < 1e-3, "{}: {name} differs by {d:e}", optimizer.name());
        }
        assert_eq!(a.optimizer.state.step, b.optimizer.state.step);
        for (sa, sb) in a.optimizer.state.slots.iter().zip(&b.optimizer.state.slots) {
            for (x, y) in sa.iter().zip(sb) {
                let d = relative_difference(x, y);
                assert!(
                    d < 1e-3,
                    "{}: optimiser state differs by {d:e}",
                    optimizer.name()
                );
            }
        }
    }
}

#[test]
fn a_short_training_run_on_the_gpu_learns_and_predicts_the_cpus_classes() {
    if gpu_or_skip("a_short_training_run_on_the_gpu_learns_and_predicts_the_cpus_classes").is_none()
    {
        return;
    }
    let g = Geometry::new(8, 8, 3);
    let data = problem(64, g, 2, 3);
    let classes = Classes::new(vec!["a".into(), "b".into()], None).unwrap();
    let config = TrainConfig {
        body: parse_body("conv8 bn relu pool res8 gap dropout0.2 dense8 relu").unwrap(),
        optimizer: OptimizerConfig::Adam {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-8,
        },
        learning_rate: 0.01,
        batch_size: Some(16),
        length: Length::Epochs(15),
        device: Device::Cuda,
        ..TrainConfig::default()
    };
    let trained = run(&config, &data, &classes, g);
    let records = &trained.history.records;
    let (first, last) = (records.first().unwrap(), records.last().unwrap());
    assert!(
        last.cost < first.cost,
        "the cost went from {} to {}",
        first.cost,
        last.cost
    );
    assert!(trained.network.is_finite());
    let model = Model {
        network: trained.network,
        classes,
        preprocess: Default::default(),
        tta: false,
    };
    let on_cpu = model.predict(data.images().in_memory().unwrap());
    let forward = deepcat::device::forward_on(Device::Cuda, &model.network)
        .unwrap()
        .unwrap();
    let x: ArrayView2<'_, u8> = data.x.view();
    let on_gpu = model.predict_on(x, Some(forward.as_ref())).unwrap();
    assert_eq!(on_cpu.classes, on_gpu.classes);
}

#[test]
fn the_gram_paths_integer_products_on_the_gpu_are_the_cpus_bit_for_bit() {
    let Some(gpu) =
        gpu_or_skip("the_gram_paths_integer_products_on_the_gpu_are_the_cpus_bit_for_bit")
    else {
        return;
    };
    // 12288 bytes a row: the kernel's 32-bit partial sums are flushed to 64 bits on the way.
    let g = Geometry::new(64, 64, 3);
    let (x, y) = (images(19, g, 3), images(7, g, 4));
    let up = |a: &Array2<u8>| gpu.upload(a.as_slice().unwrap()).unwrap();
    let k = g.len();
    let cross = gpu.byte_gram(&up(&x), &up(&y), (19, 7, k)).unwrap();
    let expected = deepcat::linalg::bytes::cross_gram(x.view(), y.view());
    assert_eq!(
        gpu.download(&cross).unwrap(),
        expected.into_raw_vec_and_offset().0
    );
    let square = gpu.byte_gram(&up(&x), &up(&x), (19, 19, k)).unwrap();
    let expected = deepcat::linalg::bytes::gram(x.view());
    assert_eq!(
        gpu.download(&square).unwrap(),
        expected.into_raw_vec_and_offset().0
    );
}
