//! The component side: WIT bindings, conversions, and the calls behind [`export_layer!`].
//!
//! A component holds exactly one layer, so its runtime lives in a per-instance global, created
//! on first use.

use std::cell::RefCell;

use crate::{LayerError, LayerRuntime, Mode, Tensor};

/// Bindings generated from `wit/layer.wit`.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub, unsafe_code, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "layer-component",
        pub_export_macro: true,
        default_bindings_module: "mixnn_layer_sdk::bindings",
    });
}

use bindings::mixnn::layer::types as wit;

thread_local! {
    static RUNTIME: RefCell<Option<Box<dyn LayerRuntime>>> = const { RefCell::new(None) };
}

/// Runs `f` on this instance's layer runtime, creating it with `make` on first use.
#[doc(hidden)]
pub fn with_runtime<R>(
    make: fn() -> Box<dyn LayerRuntime>,
    f: impl FnOnce(&mut dyn LayerRuntime) -> Result<R, LayerError>,
) -> Result<R, wit::LayerError> {
    RUNTIME
        .with(|cell| {
            let mut slot = cell
                .try_borrow_mut()
                .map_err(|_| LayerError::BadOrder("re-entered".into()))?;
            let runtime = slot.get_or_insert_with(make);
            f(runtime.as_mut())
        })
        .map_err(to_wit_error)
}

/// Converts a tensor received from the host, checking that shape and data agree.
#[doc(hidden)]
pub fn from_wit(t: wit::Tensor) -> Result<Tensor, LayerError> {
    let shape = t.shape.into_iter().map(|d| d as usize).collect();
    Tensor::new(shape, t.data)
}

/// Converts a tensor for the host.
#[doc(hidden)]
pub fn to_wit(t: Tensor) -> Result<wit::Tensor, LayerError> {
    let (shape, data) = t.into_parts();
    let shape = shape
        .into_iter()
        .map(|d| {
            u32::try_from(d).map_err(|_| LayerError::BadShape(format!("dimension {d} too large")))
        })
        .collect::<Result<_, _>>()?;
    Ok(wit::Tensor { shape, data })
}

/// Converts a mode.
#[doc(hidden)]
pub fn mode_from_wit(mode: wit::Mode) -> Mode {
    match mode {
        wit::Mode::Train => Mode::Train,
        wit::Mode::Test => Mode::Test,
    }
}

/// Converts an error for the host.
#[doc(hidden)]
pub fn to_wit_error(e: LayerError) -> wit::LayerError {
    match e {
        LayerError::BadConfig(m) => wit::LayerError::BadConfig(m),
        LayerError::BadShape(m) => wit::LayerError::BadShape(m),
        LayerError::BadState(m) => wit::LayerError::BadState(m),
        LayerError::BadOrder(m) => wit::LayerError::BadOrder(m),
        LayerError::Unsupported(m) => wit::LayerError::Unsupported(m),
        LayerError::Failed(m) => wit::LayerError::Failed(m),
    }
}

/// Exports a [`Layer`](crate::Layer) type as the component's `mixnn:layer/layer` interface.
///
/// ```ignore
/// struct Swish { /* ... */ }
/// impl mixnn_layer_sdk::Layer for Swish { /* ... */ }
/// mixnn_layer_sdk::export_layer!(Swish);
/// ```
/// Build with `cargo build --release --target wasm32-wasip2` in a `cdylib` crate.
#[macro_export]
macro_rules! export_layer {
    ($layer:ty) => {
        // Compiled natively (as a workspace member, for checks) the crate exports nothing:
        // component export names are not valid native symbol names.
        #[allow(dead_code)]
        struct __MixnnLayerExport;

        #[allow(dead_code)]
        fn __mixnn_make_runtime() -> ::std::boxed::Box<dyn $crate::LayerRuntime> {
            ::std::boxed::Box::new($crate::Runtime::<$layer>::new())
        }

        const _: () = {
            use $crate::bindings::exports::mixnn::layer::layer::Guest;
            use $crate::bindings::mixnn::layer::types as wit;
            use $crate::component::{from_wit, mode_from_wit, to_wit, with_runtime};

            impl Guest for __MixnnLayerExport {
                fn init(config: Vec<u8>) -> Result<wit::LayerInfo, wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| {
                        let info = rt.init(&config)?;
                        Ok(wit::LayerInfo {
                            name: info.name,
                            is_loss: info.is_loss,
                            param_count: info.param_count,
                        })
                    })
                }

                fn forward(input: wit::Tensor, mode: wit::Mode) -> Result<wit::Tensor, wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| {
                        to_wit(rt.forward(from_wit(input)?, mode_from_wit(mode))?)
                    })
                }

                fn backward(grad_output: wit::Tensor, input_grad: bool) -> Result<Option<wit::Tensor>, wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| {
                        rt.backward(from_wit(grad_output)?, input_grad)?.map(to_wit).transpose()
                    })
                }

                fn update() -> Result<(), wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| rt.update())
                }

                fn loss(input: wit::Tensor, target: wit::Tensor) -> Result<wit::LossOutput, wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| {
                        let out = rt.loss(from_wit(input)?, from_wit(target)?)?;
                        Ok(wit::LossOutput { loss: out.loss, grad_input: to_wit(out.grad_input)? })
                    })
                }

                fn export_state() -> Result<Vec<u8>, wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| rt.export_state())
                }

                fn import_state(state: Vec<u8>) -> Result<(), wit::LayerError> {
                    with_runtime(__mixnn_make_runtime, |rt| rt.import_state(&state))
                }
            }
        };

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::export!(__MixnnLayerExport with_types_in $crate::bindings);
    };
}
