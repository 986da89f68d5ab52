//! What the designer's integration tests share: the workspace, MNIST and the paper's model.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;

use mixnn_designer::{
    data::{self, Splits},
    spec::ModelSpec,
};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first `train` and `test` examples of MNIST (`$MIXNN_DATA`, else `../shared/data/mnist`
/// beside the workspace).
pub fn mnist(train: usize, test: usize) -> Splits {
    let dir = std::env::var_os(data::DATA_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("../shared/data/mnist"));
    let mut splits =
        data::load(&dir).unwrap_or_else(|e| panic!("MNIST is needed for this test: {e}"));
    splits.train = splits.train.truncate(train);
    splits.test = splits.test.truncate(test);
    splits
}

/// The paper's model spec.
pub fn paper_spec() -> ModelSpec {
    ModelSpec::from_file(&workspace().join("models/paper-mlp.toml")).unwrap()
}
