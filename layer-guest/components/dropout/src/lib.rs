//! The standard `dropout` layer, exported as a component.
mixnn_layer_sdk::export_layer!(mixnn_layers::Dropout);
