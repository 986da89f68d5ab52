//! Sandbox benchmarks, measured side by side in one run (rounds interleave the variants so
//! that machine noise hits all alike); medians and ratios.
//!
//! 1. `Linear` 784->128, forward + backward (with the SGD step) on a batch of 64: native, in
//!    the sandbox with host kernels (the default), in the sandbox with the matrix products as
//!    wasm code.
//! 2. LeNet-5's second `Conv2d` (6->16, 5x5) on `[64, 6, 14, 14]`, the same three ways.
//! 3. The paper's model, one epoch of the 24,000-image MNIST slice, in-process: wasm vs native
//!    vs PyTorch's 0.32 s (one thread, this machine; ../shared/data/README.md).
//!
//! `cargo bench -p mixnn-designer --bench sandbox`; `MIXNN_BENCH_QUICK=1` for a short run.
//! The last line is a JSON summary.

use std::{path::PathBuf, sync::Arc, time::Instant};

use mixnn_designer::{
    backend::{Backend, LayerBackend, NativeLayer, WasmLayer},
    cascade::Cascade,
    data,
    spec::ModelSpec,
    train::{self, TrainOptions},
};
use mixnn_layer_sdk::{Init, InitConfig, Mode, SgdConfig, Tensor};
use mixnn_sandbox::{Sandbox, SandboxConfig};

const PYTORCH_EPOCH_S: f64 = 0.32;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn config(mut layer: serde_json::Value, kernels: &str) -> Vec<u8> {
    layer["kernels"] = kernels.into();
    InitConfig {
        seed: 1,
        optimizer: SgdConfig {
            lr: 0.01,
            momentum: 0.9,
        },
        layer,
    }
    .to_bytes()
}

/// A layer to measure: its component, its config, and the shapes of its input and of its
/// output's gradient.
struct Case {
    title: &'static str,
    name: &'static str,
    component: &'static [u8],
    layer: serde_json::Value,
    input: Vec<usize>,
    grad: Vec<usize>,
}

fn random(shape: Vec<usize>, seed: u64) -> Tensor {
    let n = shape.iter().product();
    let mut init = Init::new(seed);
    Tensor::new(shape, (0..n).map(|_| init.uniform(0.0, 1.0)).collect()).unwrap_or_default()
}

fn bench_layer(sandbox: &Sandbox, case: &Case, rounds: usize, iters: usize) -> serde_json::Value {
    let module = sandbox
        .load(case.component)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut variants: Vec<(&str, Box<dyn LayerBackend>)> = Vec::new();
    let native = mixnn_layers::native(case.name).unwrap_or_else(|| panic!("no native layer"));
    variants.push(("native", Box::new(NativeLayer(native))));
    for name in ["wasm (host kernels)", "wasm (wasm kernels)"] {
        let session = sandbox.start(&module).unwrap_or_else(|e| panic!("{e}"));
        variants.push((name, Box::new(WasmLayer(session))));
    }
    let configs = ["host", "host", "guest"].map(|k| config(case.layer.clone(), k));
    for ((_, layer), config) in variants.iter_mut().zip(&configs) {
        layer.init(config).unwrap_or_else(|e| panic!("{e}"));
    }
    let x = random(case.input.clone(), 1);
    let g = random(case.grad.clone(), 2);
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
    for _ in 0..rounds {
        for (i, (_, layer)) in variants.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..iters {
                layer
                    .forward(x.clone(), Mode::Train)
                    .unwrap_or_else(|e| panic!("{e}"));
                layer
                    .backward_step(g.clone())
                    .unwrap_or_else(|e| panic!("{e}"));
            }
            samples[i].push(start.elapsed().as_secs_f64() / iters as f64);
        }
    }
    let medians: Vec<f64> = samples.into_iter().map(median).collect();
    println!(
        "{}, forward + backward + SGD step, batch 64 ({rounds} rounds x {iters} iterations, median):",
        case.title
    );
    for ((name, _), m) in variants.iter().zip(&medians) {
        println!(
            "  {name:<22} {:>8.1} us   {:>5.2}x native",
            m * 1e6,
            m / medians[0]
        );
    }
    serde_json::json!({
        "native_us": medians[0] * 1e6,
        "wasm_host_kernels_us": medians[1] * 1e6,
        "wasm_guest_kernels_us": medians[2] * 1e6,
        "wasm_host_kernels_ratio": medians[1] / medians[0],
        "wasm_guest_kernels_ratio": medians[2] / medians[0],
    })
}

fn bench_epoch(sandbox: &Sandbox, reps: usize, train_images: usize) -> serde_json::Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = std::env::var_os(data::DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/data/mnist"));
    let mut splits = data::load(&dir).unwrap_or_else(|e| panic!("{e}"));
    splits.train = splits.train.truncate(train_images);
    splits.test = splits.test.truncate(1000);
    let spec =
        ModelSpec::from_file(&root.join("models/paper-mlp.toml")).unwrap_or_else(|e| panic!("{e}"));
    let options = TrainOptions {
        epochs: 1,
        seed: 1,
        batch_size: 64,
        test_batch_size: 1000,
        progress: false,
        order: Default::default(),
        input_shape: spec.input_shape.clone(),
    };
    let backends = [Backend::Native, Backend::Wasm];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); backends.len()];
    let mut accuracy = vec![0.0; backends.len()];
    for _ in 0..reps {
        for (i, &backend) in backends.iter().enumerate() {
            let mut cascade =
                Cascade::build(&spec, backend, Some(sandbox)).unwrap_or_else(|e| panic!("{e}"));
            let reports = train::train(&mut cascade, &splits, &options, |_| {})
                .unwrap_or_else(|e| panic!("{e}"));
            samples[i].push(reports[0].train_s);
            accuracy[i] = reports[0].test_acc;
        }
    }
    let m: Vec<f64> = samples.into_iter().map(median).collect();
    let scale = 24_000.0 / train_images as f64;
    println!(
        "\nPaper model, one epoch of {train_images} images in-process ({reps} runs each, interleaved, median):"
    );
    println!("  native  {:>7.3} s   test acc {:.4}", m[0], accuracy[0]);
    println!(
        "  wasm    {:>7.3} s   test acc {:.4}   {:.2}x native",
        m[1],
        accuracy[1],
        m[1] / m[0]
    );
    println!(
        "  PyTorch {:>7.3} s (reference, scaled to this slice)   wasm / PyTorch = {:.2}",
        PYTORCH_EPOCH_S / scale,
        m[1] * scale / PYTORCH_EPOCH_S
    );
    serde_json::json!({
        "train_images": train_images,
        "native_s": m[0],
        "wasm_s": m[1],
        "wasm_over_native": m[1] / m[0],
        "wasm_over_pytorch": m[1] * scale / PYTORCH_EPOCH_S,
        "native_acc": accuracy[0],
        "wasm_acc": accuracy[1],
    })
}

fn main() {
    // `cargo bench` passes --bench; nothing else is taken.
    let quick = std::env::var_os("MIXNN_BENCH_QUICK").is_some();
    let sandbox =
        Arc::new(Sandbox::new(SandboxConfig::default()).unwrap_or_else(|e| panic!("{e}")));
    let worker = Arc::clone(&sandbox);
    let summary = sandbox
        .spawn_worker("bench", move || {
            let (rounds, iters, reps, images) = if quick {
                (3, 20, 1, 2_000)
            } else {
                (15, 200, 5, 24_000)
            };
            let linear = bench_layer(
                &worker,
                &Case {
                    title: "Linear 784->128",
                    name: "linear",
                    component: mixnn_components::LINEAR,
                    layer: serde_json::json!({"in_features": 784, "out_features": 128}),
                    input: vec![64, 784],
                    grad: vec![64, 128],
                },
                rounds,
                iters,
            );
            // LeNet-5's second convolution, on what its first block passes on.
            let conv = bench_layer(
                &worker,
                &Case {
                    title: "\nConv2d 6->16, 5x5, on 14x14",
                    name: "conv2d",
                    component: mixnn_components::CONV2D,
                    layer: serde_json::json!({"in_channels": 6, "out_channels": 16, "kernel_size": 5}),
                    input: vec![64, 6, 14, 14],
                    grad: vec![64, 16, 10, 10],
                },
                rounds,
                iters / 4,
            );
            let epoch = bench_epoch(&worker, reps, images);
            serde_json::json!({
                "linear_784_128_batch_64": linear,
                "conv2d_6_16_5x5_14x14_batch_64": conv,
                "paper_epoch": epoch,
            })
        })
        .unwrap_or_else(|e| panic!("{e}"))
        .join()
        .unwrap_or_else(|_| panic!("bench thread panicked"));
    println!("\n{summary}");
}
