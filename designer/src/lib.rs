//! The mixnn designer: owns a model and its data, and trains it through layer components.
//!
//! This crate holds the model spec ([`spec`]), the data loader ([`data`]) and its downloads
//! ([`fetch`]), the in-process cascade ([`cascade`]) that calls each layer's component through
//! the same sandbox a host uses (or natively, as a baseline), the remote one ([`remote`]), the
//! training loop ([`train`]) and weights files ([`weights`]). The `mixnn` binary is its command
//! line.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use mixnn_designer::{backend::Backend, cascade::Cascade, data, spec::ModelSpec, train};
//! let spec = ModelSpec::from_file("models/paper-mlp.toml".as_ref())?;
//! let splits = data::load("../shared/data/mnist".as_ref())?;
//! let mut cascade = Cascade::build(&spec, Backend::Native, None)?;
//! let options = train::TrainOptions { epochs: 1, seed: 1, batch_size: 64, test_batch_size: 1000, progress: false, order: Default::default(), input_shape: spec.input_shape.clone() };
//! let reports = train::train(&mut cascade, &splits, &options, |r| println!("{}", r.test_acc))?;
//! # Ok(()) }
//! ```

pub mod attack;
pub mod backend;
pub mod cascade;
pub mod data;
pub mod fetch;
pub mod front;
#[cfg(feature = "local-hosts")]
pub mod local_cluster;
pub mod metrics;
pub mod order;
pub mod pool;
pub mod progress;
pub mod recovery;
pub mod remote;
pub mod spec;
pub mod train;
pub mod weights;
