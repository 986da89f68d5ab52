//! The standard `conv2d` layer, exported as a component.
mixnn_layer_sdk::export_layer!(mixnn_layers::Conv2d);
