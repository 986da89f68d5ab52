//! The standard `max-pool2d` layer, exported as a component.
mixnn_layer_sdk::export_layer!(mixnn_layers::MaxPool2d);
