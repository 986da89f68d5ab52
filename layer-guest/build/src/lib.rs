//! The standard layer components, built from `layer-guest/components/` for `wasm32-wasip2`
//! when this crate builds, as bytes ready for a host's sandbox.
//!
//! With the `test-guests` feature it also holds the custom-layer example and the hostile
//! components the tests use.

include!(concat!(env!("OUT_DIR"), "/components.rs"));

/// The standard components by layer name (the names of `mixnn_layers::STANDARD`).
pub const STANDARD: [(&str, &[u8]); 14] = [
    ("linear", LINEAR),
    ("relu", RELU),
    ("linear-relu", LINEAR_RELU),
    ("log-softmax", LOG_SOFTMAX),
    ("nll-loss", NLL_LOSS),
    ("softmax-cross-entropy", SOFTMAX_CROSS_ENTROPY),
    ("mse-loss", MSE_LOSS),
    ("identity", IDENTITY),
    ("conv2d", CONV2D),
    ("flatten", FLATTEN),
    ("max-pool2d", MAX_POOL2D),
    ("avg-pool2d", AVG_POOL2D),
    ("dropout", DROPOUT),
    ("batch-norm2d", BATCH_NORM2D),
];

/// The standard component called `name`.
pub fn standard(name: &str) -> Option<&'static [u8]> {
    STANDARD
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}
