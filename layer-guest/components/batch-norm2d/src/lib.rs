//! The standard `batch-norm2d` layer, exported as a component.
mixnn_layer_sdk::export_layer!(mixnn_layers::BatchNorm2d);
