//! The standard mixnn layers, written with the layer SDK. Each is exported as its own
//! component (see `layer-guest/components/`), and the designer's native baseline runs the same
//! types directly through [`native`].

mod identity;
mod linear;
mod mse;
mod relu;
mod softmax;

pub use identity::Identity;
pub use linear::{Linear, LinearConfig, MAX_WEIGHTS};
pub use mse::MseLoss;
pub use relu::{LinearRelu, Relu};
pub use softmax::{LogSoftmax, NllLoss, SoftmaxCrossEntropy, log_softmax};

use mixnn_layer_sdk::{Layer, LayerRuntime, Runtime};

/// The names of the standard layers, as their components are named.
pub const STANDARD: [&str; 8] = [
    Linear::NAME,
    Relu::NAME,
    LinearRelu::NAME,
    LogSoftmax::NAME,
    NllLoss::NAME,
    SoftmaxCrossEntropy::NAME,
    MseLoss::NAME,
    Identity::NAME,
];

/// A native runtime for the standard layer called `name` (waiting for `init`), or `None`.
pub fn native(name: &str) -> Option<Box<dyn LayerRuntime>> {
    fn boxed<L: Layer>() -> Option<Box<dyn LayerRuntime>> {
        Some(Box::new(Runtime::<L>::new()))
    }
    match name {
        Linear::NAME => boxed::<Linear>(),
        Relu::NAME => boxed::<Relu>(),
        LinearRelu::NAME => boxed::<LinearRelu>(),
        LogSoftmax::NAME => boxed::<LogSoftmax>(),
        NllLoss::NAME => boxed::<NllLoss>(),
        SoftmaxCrossEntropy::NAME => boxed::<SoftmaxCrossEntropy>(),
        MseLoss::NAME => boxed::<MseLoss>(),
        Identity::NAME => boxed::<Identity>(),
        _ => None,
    }
}
