//! The standard mixnn layers, written with the layer SDK. Each is exported as its own
//! component (see `layer-guest/components/`), and the designer's native baseline runs the same
//! types directly through [`native`].

mod batchnorm;
mod conv;
mod dropout;
mod flatten;
mod identity;
mod linear;
mod mse;
mod pool;
mod relu;
mod sides;
mod softmax;

pub use batchnorm::{BatchNorm2d, BatchNorm2dConfig};
pub use conv::{Conv2d, Conv2dConfig, MAX_SIDE};
pub use dropout::{Dropout, DropoutConfig};
pub use flatten::Flatten;
pub use identity::Identity;
pub use linear::{Linear, LinearConfig, MAX_WEIGHTS};
pub use mse::MseLoss;
pub use pool::{AvgPool2d, MAX_POOL_WINDOW, MaxPool2d, PoolConfig};
pub use relu::{LinearRelu, Relu};
pub use sides::Pair;
pub use softmax::{LogSoftmax, NllLoss, SoftmaxCrossEntropy, log_softmax};

use mixnn_layer_sdk::{Layer, LayerRuntime, Runtime};

/// The names of the standard layers, as their components are named.
pub const STANDARD: [&str; 14] = [
    Linear::NAME,
    Relu::NAME,
    LinearRelu::NAME,
    LogSoftmax::NAME,
    NllLoss::NAME,
    SoftmaxCrossEntropy::NAME,
    MseLoss::NAME,
    Identity::NAME,
    Conv2d::NAME,
    Flatten::NAME,
    MaxPool2d::NAME,
    AvgPool2d::NAME,
    Dropout::NAME,
    BatchNorm2d::NAME,
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
        Conv2d::NAME => boxed::<Conv2d>(),
        Flatten::NAME => boxed::<Flatten>(),
        MaxPool2d::NAME => boxed::<MaxPool2d>(),
        AvgPool2d::NAME => boxed::<AvgPool2d>(),
        Dropout::NAME => boxed::<Dropout>(),
        BatchNorm2d::NAME => boxed::<BatchNorm2d>(),
        _ => None,
    }
}
