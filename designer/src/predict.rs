//! `mixnn predict`: a trained model deployed onto a fresh cascade and run on new inputs.
//!
//! The weights travel in op=0 as each hop's initial state (no optimizer ever steps); the
//! inputs go through op=3 test passes, several batches in the cascade at once, so that the
//! hops work on different batches at the same time. A model with a frozen front runs the
//! front here, as in training. With labels (IDX files) the metrics are printed; `--compare`
//! also runs the model in this process on the same inputs and checks every output bit for bit.
//! `--test-end K` ends the test passes at layer K: the hop that runs it reports its output
//! (or the designer's kept tail stops there), and the features are written instead of
//! predictions. A host that fails is replaced as in training ([`Resilient`]): the others keep
//! their positions, a new session gets the same weights, and the batches in flight and not
//! answered go again, so that the outputs are those of a run that never failed.

mod npy;

use std::{
    cell::Cell,
    io::Write as _,
    path::{Path, PathBuf},
    rc::Rc,
    time::Instant,
};

use anyhow::{Context, Result, anyhow};
use mixnn_designer::{
    backend::Backend,
    cascade::Cascade,
    data::{self, Dataset},
    front::Front,
    local_cluster::LocalCluster,
    metrics::{Evaluation, PRINTED_CONFUSION_CLASSES, argmax_rows},
    progress,
    recovery::{Checkpoint, Event, RecoveryOptions, Resilient},
    remote::{MAX_TESTS_IN_FLIGHT, RemoteOptions},
    spec::ModelSpec,
    train,
    weights::Layout,
};
use mixnn_layer_sdk::Tensor;
use mixnn_transport::hex_fingerprint;
use serde::Serialize;

use crate::{CascadeArgs, run_in_sandbox_worker};

/// The most PNG files a folder may hold for one run.
const MAX_IMAGES: usize = 1 << 20;

/// The most values per example (classes, or features) an output may have.
const MAX_OUTPUTS: usize = 1 << 16;

#[derive(Debug, clap::Args)]
pub(crate) struct PredictArgs {
    /// Model spec (TOML).
    #[arg(long, value_name = "FILE")]
    model: PathBuf,
    /// The trained weights (safetensors, as `mixnn train --save-weights` writes them).
    #[arg(long, value_name = "FILE")]
    weights: PathBuf,
    /// Inputs: the test split of the IDX files in DIR (t10k-images, with their labels).
    #[arg(long, value_name = "DIR", required_unless_present_any = ["images", "npy"])]
    data: Option<PathBuf>,
    /// Inputs: the PNG images in DIR, in file-name order (grayscale or colour, turned to
    /// grayscale; each with as many pixels as the model's input has values).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["data", "npy"])]
    images: Option<PathBuf>,
    /// Inputs: a NumPy array in FILE (`np.save`, C order, little-endian), shape [N, ...] with
    /// as many values per example as the model's input (e.g. [N, 784] or [N, 1, 28, 28]):
    /// float32 used as is, or uint8 scaled by 1/255 as IDX pixels are.
    #[arg(long, value_name = "FILE", conflicts_with = "data")]
    npy: Option<PathBuf>,
    /// The labels of `--npy`'s inputs, for the metrics: a NumPy array [N] of int64 or uint8.
    #[arg(long, value_name = "FILE", requires = "npy")]
    npy_labels: Option<PathBuf>,
    /// Use only the first N inputs.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Start M host processes and a directory on loopback and deploy there (as `mixnn demo`
    /// does), instead of `--directory`.
    #[arg(long, value_name = "M", conflicts_with = "directory")]
    local_hosts: Option<usize>,
    #[command(flatten)]
    cascade: CascadeArgs,
    /// Batches in the cascade at once (at most 32).
    #[arg(long, default_value_t = 8, value_name = "K")]
    in_flight: usize,
    /// Examples per batch [default: the spec's training batch size].
    #[arg(long, value_name = "N")]
    batch_size: Option<usize>,
    /// Write one prediction per input to FILE: JSON lines, or CSV if FILE ends in `.csv`.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also run the model in this process on the same inputs: check that every output is
    /// bit for bit the cascade's, and report both throughputs.
    #[arg(long)]
    compare: bool,
    /// End the test passes at layer K and write its output (features) per input instead of
    /// predictions: `features` in JSON lines, columns f0, f1, ... in CSV (flattened in
    /// C order), the label carried along; no accuracy. K is a layer's index in the model
    /// spec, 0-based, in the order the spec lists its layers (the loss excluded). A host
    /// reports the output of its whole group of layers, so K must end a host's group (every
    /// layer is its own group unless layers share a `host`) or be one of the layers the
    /// designer keeps at the end; not a frozen layer, nor the first group under
    /// --keep-first. A K that cannot be is refused with the list of those that can.
    #[arg(long, value_name = "K")]
    test_end: Option<usize>,
    /// Host failures survived before giving up: each failed host is replaced (the others
    /// keep their positions) and the batches it left unanswered run again.
    #[arg(long, default_value_t = RecoveryOptions::default().max_recoveries, value_name = "N")]
    max_recoveries: usize,
}

/// The inputs, their labels if known, and their names (files) if any.
struct Inputs {
    data: Dataset,
    labelled: bool,
    names: Option<Vec<String>>,
    /// Whether every value is a byte over 255 (they may travel as bytes).
    bytes: bool,
}

#[derive(Debug, Serialize)]
struct Summary {
    summary: bool,
    model: String,
    examples: usize,
    hops: usize,
    setup_s: f64,
    seconds: f64,
    images_per_s: f64,
    in_flight: usize,
    /// Host failures survived (each a new session with the failed host replaced).
    recoveries: usize,
    /// The layer the test passes ended at, with `--test-end`.
    test_end: Option<usize>,
    /// Values per example of its output, with `--test-end`.
    features: Option<usize>,
    test_acc: Option<f64>,
    inproc_images_per_s: Option<f64>,
    vs_inproc: Option<f64>,
    identical_to_inproc: Option<bool>,
    /// With labels (and no `--test-end`): `macro`, `per_class` and `confusion`, as in each
    /// epoch's line of `mixnn train --json`.
    #[serde(flatten)]
    evaluation: Option<Evaluation>,
}

pub(crate) fn run(args: PredictArgs) -> Result<()> {
    let spec = ModelSpec::from_file(&args.model)?;
    let inputs = load_inputs(&args, &spec)?;
    if inputs.data.is_empty() {
        return Err(anyhow!("no inputs"));
    }
    let batch_size = args.batch_size.unwrap_or(spec.training.batch_size).max(1);
    let in_flight = args.in_flight.clamp(1, MAX_TESTS_IN_FLIGHT);
    let frozen = spec.frozen_front();
    let test_end = args.test_end;
    if let Some(k) = test_end.filter(|&k| k < frozen) {
        return Err(anyhow!(
            "--test-end {k}: layers 0 to {} are frozen and run here, before the cascade: \
             choose a layer from {frozen} on",
            frozen - 1
        ));
    }
    // Where the cascade comes from: host processes started here, or a directory.
    let (cluster, options) = match (args.local_hosts, args.cascade.directory) {
        (Some(m), _) => {
            let exe = std::env::current_exe().context("finding this program to start hosts")?;
            eprintln!("starting a directory and {m} hosts on loopback...");
            let spinner = progress::spinner(
                true,
                format!("starting a directory and {m} hosts, waiting for them to register"),
            );
            let cluster = LocalCluster::start(&exe, m);
            spinner.finish_and_clear();
            let cluster = cluster?;
            let options = RemoteOptions {
                session_ttl: std::time::Duration::from_secs(3600),
                ..args
                    .cascade
                    .options(&spec, cluster.directory_addr, cluster.directory_fingerprint)
            };
            (Some(cluster), options)
        }
        (None, Some(addr)) => {
            let hex = args
                .cascade
                .directory_fingerprint
                .as_deref()
                .ok_or_else(|| anyhow!("--directory needs --directory-fingerprint"))?;
            let fingerprint = hex_fingerprint::parse(hex)
                .ok_or_else(|| anyhow!("--directory-fingerprint takes 64 hex digits"))?;
            (None, args.cascade.options(&spec, addr, fingerprint))
        }
        (None, None) => return Err(anyhow!("give --local-hosts M or --directory ADDR")),
    };
    let weights = args.weights.clone();
    let compare = args.compare;
    let name = spec.name.clone();
    let max_recoveries = args.max_recoveries;
    let Inputs {
        data: raw,
        labelled,
        names,
        bytes,
    } = inputs;
    let result = run_in_sandbox_worker(move |sandbox| {
        let sandbox = sandbox.ok_or_else(|| anyhow!("no sandbox"))?;
        let mut probe = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
        let states = Layout::new(&spec, &probe.export_states()?)?
            .read(&weights)
            .with_context(|| format!("--weights {}", weights.display()))?;
        // A frozen front runs here, as in training: the cascade takes its features.
        let (spec, data, states) = if frozen > 0 {
            let mut front = Front::build(&spec, frozen)?;
            front.import_states(&states)?;
            let (features, shape) = front.features(&raw, spec.input_shape.as_deref())?;
            (
                spec.without_front(frozen, shape),
                features,
                states[frozen..].to_vec(),
            )
        } else {
            (spec, raw, states)
        };
        // The test end, numbered in the part that runs over hosts.
        let end = test_end.map(|k| k - frozen);
        let options = RemoteOptions {
            byte_inputs: options.byte_inputs && frozen == 0 && bytes,
            test_end: end,
            ..options
        };
        let shape = spec.input_shape.clone();
        let batches = || {
            let all: Vec<usize> = (0..data.len()).collect();
            all.chunks(batch_size)
                .map(|chunk| train::batch(&data, chunk, shape.as_deref()).map(|(x, _)| x))
                .collect::<Result<Vec<Tensor>, _>>()
        };
        let input = spec.batch_shape(batch_size, data.pixels)?;
        let inputs = batches()?;
        let total = inputs.len();
        // Batches answered so far, for the failures' messages.
        let answered = Rc::new(Cell::new(0usize));
        let recovery = RecoveryOptions {
            max_recoveries,
            // `--compare` checks every output; predict pays for no sampled check.
            audit_share: 0.0,
            ..RecoveryOptions::default()
        };
        let spinner = progress::spinner(true, crate::SETTING_UP);
        // No training: the checkpoint a new session starts from is the weights given.
        let cascade = Resilient::connect(
            &spec,
            sandbox,
            &options,
            &input,
            Checkpoint::start(states.clone()),
            recovery,
        );
        spinner.finish_and_clear();
        let mut cascade = cascade?;
        // Failures while the first session was set up, then the others as they happen.
        for event in cascade.events() {
            print_event(event, 0, total);
        }
        let seen = Rc::clone(&answered);
        cascade.on_event(move |event| print_event(event, seen.get(), total));
        let hops = cascade.describe().len();
        let setup_s = cascade.setup_time().as_secs_f64();
        eprintln!(
            "deployed over {hops} hops in {setup_s:.2} s: {}",
            cascade.describe().join(" -> ")
        );
        let rows: Vec<usize> = inputs
            .iter()
            .map(|x| x.shape().first().copied().unwrap_or(0))
            .collect();
        let bar = progress::bar(
            true,
            inputs.len(),
            "{msg} [{bar:30}] {pos}/{len} batches, {elapsed} elapsed, eta {eta}",
        );
        bar.set_message("over the cascade");
        let started = Instant::now();
        let mut outputs = Vec::with_capacity(inputs.len());
        cascade.predict_in_flight(&inputs, in_flight, |i, y| {
            outputs.push(y);
            answered.set(i + 1);
            bar.inc(1);
        })?;
        let seconds = started.elapsed().as_secs_f64();
        bar.finish_and_clear();
        drop(inputs);
        let recoveries = cascade.recoveries();
        cascade.close();
        check_shapes(&outputs, &rows, end.is_some())?;
        let local = if compare {
            let mut local = Cascade::build(&spec, Backend::Wasm, Some(sandbox))?;
            local.import_states(&states)?;
            let inputs = batches()?;
            let bar = progress::bar(
                true,
                inputs.len(),
                "{msg} [{bar:30}] {pos}/{len} batches, {elapsed} elapsed, eta {eta}",
            );
            bar.set_message("in this process");
            let started = Instant::now();
            let mut same = true;
            for (x, remote) in inputs.into_iter().zip(&outputs) {
                let y = match end {
                    Some(end) => local.predict_to(x, end)?,
                    None => local.predict(x)?,
                };
                // Bit for bit (a NaN equals itself here).
                same &= y.shape() == remote.shape()
                    && y.data()
                        .iter()
                        .map(|v| v.to_bits())
                        .eq(remote.data().iter().map(|v| v.to_bits()));
                bar.inc(1);
            }
            bar.finish_and_clear();
            Some((started.elapsed().as_secs_f64(), same))
        } else {
            None
        };
        Ok((
            outputs,
            data.labels,
            hops,
            setup_s,
            seconds,
            local,
            recoveries,
        ))
    });
    if let Some(cluster) = cluster {
        cluster.shutdown()?;
    }
    let (outputs, labels, hops, setup_s, seconds, local, recoveries) = result?;
    let labels = labelled.then_some(&labels);
    let n = outputs.iter().map(examples).sum::<usize>();

    // Features; or predictions, and the metrics when the labels are known.
    let (evaluation, features) = match test_end {
        Some(k) => {
            let features = outputs.first().map_or(0, values_per_example);
            if let Some(path) = &args.out {
                write_features(path, &outputs, labels, names.as_deref())?;
                eprintln!(
                    "wrote layer {k}'s features ({features} values each) of {n} inputs to {}",
                    path.display()
                );
            }
            (None, Some(features))
        }
        None => {
            let mut predictions = Vec::with_capacity(n);
            for y in &outputs {
                let cols = y.shape().last().copied().unwrap_or(1);
                predictions.extend(argmax_rows(y.data(), cols));
            }
            if let Some(path) = &args.out {
                write_predictions(path, &predictions, &outputs, labels, names.as_deref())?;
                eprintln!(
                    "wrote {} predictions to {}",
                    predictions.len(),
                    path.display()
                );
            }
            // Sized by the labels, as the test pass of training is; a prediction past them
            // counts as wrong.
            let evaluation = labels
                .map(|labels| {
                    let classes = usize::from(labels.iter().copied().max().unwrap_or(0)) + 1;
                    Evaluation::score(
                        classes,
                        labels.iter().map(|&l| usize::from(l)),
                        predictions.iter().copied(),
                    )
                })
                .transpose()?;
            if let Some(e) = &evaluation {
                print!("{}", e.table());
                match e.confusion_table() {
                    Some(table) => {
                        println!("\nconfusion matrix (rows: true class, columns: predicted):");
                        print!("{table}");
                    }
                    None => println!(
                        "(the confusion matrix of {} classes is in the summary line only: \
                         printed up to {PRINTED_CONFUSION_CLASSES})",
                        e.confusion.classes()
                    ),
                }
            }
            (evaluation, None)
        }
    };
    let test_acc = evaluation.as_ref().map(Evaluation::accuracy);
    #[allow(clippy::cast_precision_loss)]
    let rate = |s: f64| n as f64 / s.max(1e-9);
    let summary = Summary {
        summary: true,
        model: name,
        examples: n,
        hops,
        setup_s,
        seconds,
        images_per_s: rate(seconds),
        in_flight,
        recoveries,
        test_end,
        features,
        test_acc,
        inproc_images_per_s: local.map(|(s, _)| rate(s)),
        vs_inproc: local.map(|(s, _)| rate(seconds) / rate(s)),
        identical_to_inproc: local.map(|(_, same)| same),
        evaluation,
    };
    println!(
        "{n} examples over {hops} hops: {:.0} images/s{}{}{}",
        summary.images_per_s,
        match recoveries {
            0 => String::new(),
            1 => ", 1 host failure survived".to_owned(),
            r => format!(", {r} host failures survived"),
        },
        summary
            .inproc_images_per_s
            .map(|r| format!(" ({r:.0} in this process)"))
            .unwrap_or_default(),
        match (test_end, test_acc) {
            (Some(k), _) => format!(
                ", layer {k}'s features ({} values each)",
                features.unwrap_or(0)
            ),
            (None, Some(a)) => format!(", test accuracy {a:.4}"),
            (None, None) => String::new(),
        }
    );
    println!("{}", serde_json::to_string(&summary)?);
    if summary.identical_to_inproc == Some(false) {
        return Err(anyhow!("the cascade's outputs differ from this process's"));
    }
    Ok(())
}

/// Examples (rows) of a batch's output.
fn examples(y: &Tensor) -> usize {
    y.shape().first().copied().unwrap_or(0)
}

/// Values per example of a batch's output.
fn values_per_example(y: &Tensor) -> usize {
    y.shape().iter().skip(1).product()
}

/// Checks the outputs of batches of `rows` examples: one row per example, as many values
/// each in every batch, and a bounded number of them; for predictions, a matrix
/// `[examples, classes]`. The kept tail made them, but from what the last hop sent.
fn check_shapes(outputs: &[Tensor], rows: &[usize], features: bool) -> Result<()> {
    let (rank, per_example) = outputs
        .first()
        .map_or((0, 0), |y| (y.shape().len(), values_per_example(y)));
    for (i, (y, &n)) in outputs.iter().zip(rows).enumerate() {
        let fits = examples(y) == n
            && y.shape().len() == rank
            && (features || rank == 2)
            && values_per_example(y) == per_example
            && (1..=MAX_OUTPUTS).contains(&per_example);
        if !fits {
            return Err(anyhow!(
                "batch {i}: the output has shape {:?}, expected {n} rows of 1 to {MAX_OUTPUTS} \
                 values{}, alike in every batch",
                y.shape(),
                if features { "" } else { " ([rows, classes])" }
            ));
        }
    }
    Ok(())
}

/// Prints a failure and a recovery of the test pass as they happen; the summary counts them.
fn print_event(event: &Event, answered: usize, total: usize) {
    match event {
        Event::Failed {
            step,
            hop,
            host,
            error,
            ..
        } => eprintln!(
            "after {answered} of {total} batches, {} failed{}: {error}; recovering, the \
             batches in flight go again",
            match (hop, host) {
                (Some(hop), Some(host)) => format!("hop {hop} ({host})"),
                _ => "the cascade (no hop can be named)".to_owned(),
            },
            step.map(|s| format!(" during {s}")).unwrap_or_default(),
        ),
        Event::Recovered {
            replaced,
            hosts,
            seconds,
            ..
        } => eprintln!(
            "recovered in {seconds:.2} s: {} on {}, the others kept; resuming at batch \
             {answered}",
            if replaced.is_empty() {
                "no position".to_owned()
            } else {
                replaced
                    .iter()
                    .map(|&p| format!("hop {p} ({})", hosts.get(p).map_or("?", String::as_str)))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            if replaced.len() == 1 {
                "a fresh host"
            } else {
                "fresh hosts"
            }
        ),
        Event::Checkpoint { .. } | Event::Audit { .. } | Event::Caught { .. } => {}
    }
}

/// Values per example of the model's input, where the spec tells: its `input_shape`, else
/// a first layer's `in_features`.
fn model_input_values(spec: &ModelSpec) -> Option<usize> {
    if let Some(shape) = &spec.input_shape {
        return Some(shape.iter().product());
    }
    spec.layers
        .first()?
        .config
        .get("in_features")?
        .as_integer()
        .and_then(|n| usize::try_from(n).ok())
}

/// Whether every value is `k / 255` for a byte `k`, bit for bit (as the wire tells them).
fn all_bytes(values: &[f32]) -> bool {
    values.iter().all(|&v| {
        let k = (v * 255.0).round();
        (0.0..=255.0).contains(&k) && (k / 255.0).to_bits() == v.to_bits()
    })
}

fn load_inputs(args: &PredictArgs, spec: &ModelSpec) -> Result<Inputs> {
    let mut inputs = match (&args.data, &args.images, &args.npy) {
        (Some(dir), _, _) => Inputs {
            data: data::load_split(dir, "t10k")
                .with_context(|| format!("loading the test split of {}", dir.display()))?,
            labelled: true,
            names: None,
            bytes: true,
        },
        (None, Some(dir), _) => load_pngs(dir, args.limit.unwrap_or(MAX_IMAGES))?,
        (None, None, Some(file)) => {
            // A frozen front takes the raw inputs: the model's input is still the spec's.
            let read = npy::read_inputs(file, model_input_values(spec))?;
            let n = read.values.len() / read.features.max(1);
            let labels = match &args.npy_labels {
                Some(path) => Some(npy::read_labels(path, n)?),
                None => None,
            };
            let bytes = read.bytes || all_bytes(&read.values);
            Inputs {
                data: Dataset {
                    labels: labels.clone().unwrap_or_else(|| vec![0; n]),
                    images: read.values,
                    pixels: read.features,
                },
                labelled: labels.is_some(),
                names: None,
                bytes,
            }
        }
        (None, None, None) => return Err(anyhow!("give --data DIR, --images DIR or --npy FILE")),
    };
    if let Some(n) = args.limit {
        inputs.data = inputs.data.truncate(n);
        if let Some(names) = &mut inputs.names {
            names.truncate(n);
        }
    }
    Ok(inputs)
}

/// The first `limit` `.png` files in `dir`, by file name: grayscale values scaled to [0, 1].
fn load_pngs(dir: &Path, limit: usize) -> Result<Inputs> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("png")))
        .take(MAX_IMAGES + 1)
        .collect();
    if files.len() > MAX_IMAGES {
        return Err(anyhow!("{}: more than {MAX_IMAGES} images", dir.display()));
    }
    files.sort();
    files.truncate(limit);
    let mut images = Vec::new();
    let mut pixels = None;
    let mut names = Vec::with_capacity(files.len());
    for path in &files {
        let gray = read_png(path).with_context(|| format!("{}", path.display()))?;
        match pixels {
            None => pixels = Some(gray.len()),
            Some(p) if p != gray.len() => {
                return Err(anyhow!(
                    "{}: {} pixels, the first image has {p}",
                    path.display(),
                    gray.len()
                ));
            }
            Some(_) => {}
        }
        images.extend(gray);
        names.push(
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
    }
    Ok(Inputs {
        data: Dataset {
            labels: vec![0; names.len()],
            images,
            pixels: pixels.unwrap_or(0),
        },
        labelled: false,
        names: Some(names),
        bytes: true,
    })
}

/// One PNG as grayscale values in [0, 1] (colour by the Rec. 601 luma, alpha ignored).
fn read_png(path: &Path) -> Result<Vec<f32>> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut decoder = png::Decoder::new(file);
    // 8 bits per channel, palettes expanded.
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info()?;
    let mut buf = vec![
        0;
        reader
            .output_buffer_size()
            .ok_or_else(|| anyhow!("image too large"))?
    ];
    let info = reader.next_frame(&mut buf)?;
    let bytes = &buf[..info.buffer_size()];
    let to_unit = |v: f32| v / 255.0;
    Ok(match info.color_type {
        png::ColorType::Grayscale => bytes.iter().map(|&v| to_unit(f32::from(v))).collect(),
        png::ColorType::GrayscaleAlpha => bytes
            .chunks_exact(2)
            .map(|c| to_unit(f32::from(c[0])))
            .collect(),
        png::ColorType::Rgb | png::ColorType::Rgba => {
            let step = if info.color_type == png::ColorType::Rgb {
                3
            } else {
                4
            };
            bytes
                .chunks_exact(step)
                .map(|c| {
                    let luma =
                        0.299 * f32::from(c[0]) + 0.587 * f32::from(c[1]) + 0.114 * f32::from(c[2]);
                    to_unit(luma.round())
                })
                .collect()
        }
        png::ColorType::Indexed => return Err(anyhow!("an indexed image that did not expand")),
    })
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// Writes each input's features (a test end's output, flattened): JSON lines `{"index",
/// "name", "label", "features"}`, or CSV with a column per feature. Floats are written in
/// their shortest form that reads back to the same bits.
fn write_features(
    path: &Path,
    outputs: &[Tensor],
    labels: Option<&Vec<u8>>,
    names: Option<&[String]>,
) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let per_example = outputs.first().map_or(0, values_per_example).max(1);
    if csv {
        let columns: Vec<String> = (0..per_example).map(|j| format!("f{j}")).collect();
        writeln!(out, "index,name,label,{}", columns.join(","))?;
    }
    let rows = outputs.iter().flat_map(|y| y.data().chunks(per_example));
    for (i, features) in rows.enumerate() {
        let name = names.and_then(|n| n.get(i)).cloned();
        let label = labels.and_then(|l| l.get(i)).copied();
        if csv {
            let values: Vec<String> = features.iter().map(f32::to_string).collect();
            writeln!(
                out,
                "{i},{},{},{}",
                csv_field(&name.unwrap_or_default()),
                label.map(|l| l.to_string()).unwrap_or_default(),
                values.join(",")
            )?;
        } else {
            let line = serde_json::json!({
                "index": i, "name": name, "label": label, "features": features,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}

fn write_predictions(
    path: &Path,
    predictions: &[usize],
    outputs: &[Tensor],
    labels: Option<&Vec<u8>>,
    names: Option<&[String]>,
) -> Result<()> {
    let mut out = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    let csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    if csv {
        writeln!(out, "index,name,prediction,label")?;
    }
    let rows = outputs.iter().flat_map(|y| {
        let cols = y.shape().last().copied().unwrap_or(1).max(1);
        y.data()
            .chunks(cols)
            .map(<[f32]>::to_vec)
            .collect::<Vec<_>>()
    });
    for (i, (p, scores)) in predictions.iter().zip(rows).enumerate() {
        let name = names.and_then(|n| n.get(i)).cloned();
        let label = labels.and_then(|l| l.get(i)).copied();
        if csv {
            writeln!(
                out,
                "{i},{},{p},{}",
                csv_field(&name.unwrap_or_default()),
                label.map(|l| l.to_string()).unwrap_or_default()
            )?;
        } else {
            let line = serde_json::json!({
                "index": i, "name": name, "prediction": p, "label": label, "output": scores,
            });
            writeln!(out, "{line}")?;
        }
    }
    out.flush()?;
    Ok(())
}
