//! The standard `softmax-cross-entropy` layer, exported as a component.
mixnn_layer_sdk::export_layer!(mixnn_layers::SoftmaxCrossEntropy);
