//! The mixnn layer SDK: write a neural-network layer as plain Rust, export it as a
//! WebAssembly component that any mixnn host can run.
//!
//! A layer implements [`Layer`] (its config, forward, backward and named parameters); the SDK
//! decodes the designer's config (JSON, see [`InitConfig`]), keeps SGD with momentum for every
//! parameter (as `torch.optim.SGD`), enforces the call order, and saves and loads state as
//! safetensors. One macro exports the type:
//!
//! ```ignore
//! use mixnn_layer_sdk::{Init, Layer, LayerError, Mode, Tensor};
//!
//! struct Double;
//!
//! impl Layer for Double {
//!     type Config = mixnn_layer_sdk::NoConfig;
//!     const NAME: &'static str = "double";
//!     fn new(_: Self::Config, _: &mut Init) -> Result<Self, LayerError> { Ok(Double) }
//!     fn forward(&mut self, x: Tensor, _: Mode) -> Result<Tensor, LayerError> {
//!         let data = x.data().iter().map(|v| v * 2.0).collect();
//!         x.with_data(data)
//!     }
//!     fn backward(&mut self, g: Tensor) -> Result<Tensor, LayerError> {
//!         let data = g.data().iter().map(|v| v * 2.0).collect();
//!         g.with_data(data)
//!     }
//! }
//!
//! mixnn_layer_sdk::export_layer!(Double);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --release --target wasm32-wasip2`. Heavy
//! arithmetic goes through [`Kernels`], which a host runs natively.

pub mod component;
mod error;
mod kernels;
mod layer;
mod optim;
mod runtime;
pub mod state;
mod tensor;

#[doc(hidden)]
pub use component::bindings;
pub use error::LayerError;
pub use kernels::{Conv2d, Kernels};
pub use layer::{Init, Layer, LossOutput, Mode, Param};
pub use optim::{Sgd, SgdConfig};
pub use runtime::{InitConfig, LayerInfo, LayerRuntime, MAX_CONFIG_BYTES, Runtime};
pub use tensor::{MAX_RANK, Tensor};

/// The config of a layer that has no settings of its own.
#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoConfig {}
