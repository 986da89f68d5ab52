//! What the designer's integration tests share: the workspace, MNIST and the paper's model.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

pub mod one_hop;

use std::path::PathBuf;

use mixnn_designer::{
    data::{self, Splits},
    local_cluster::LocalCluster,
    pool::{self, Candidate},
    spec::ModelSpec,
};
use mixnn_sandbox::{Sandbox, SandboxConfig};
use mixnn_transport::{Endpoint, TlsIdentity, directory_client};

/// The workspace root.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where MNIST is: `$MIXNN_DATA`, else `../shared/data/mnist` beside the workspace, else the
/// cache of `mixnn data fetch mnist` (a machine outside this repository's environment).
pub fn mnist_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os(data::DATA_ENV) {
        return PathBuf::from(dir);
    }
    let shared = workspace().join("../shared/data/mnist");
    if shared.is_dir() {
        return shared;
    }
    mixnn_designer::fetch::cache_root(None)
        .ok()
        .and_then(|root| mixnn_designer::fetch::cached(mixnn_designer::fetch::Source::Mnist, &root))
        .unwrap_or(shared)
}

/// The first `train` and `test` examples of MNIST ([`mnist_dir`]).
pub fn mnist(train: usize, test: usize) -> Splits {
    let dir = mnist_dir();
    let mut splits =
        data::load(&dir).unwrap_or_else(|e| panic!("MNIST is needed for this test: {e}"));
    splits.train = splits.train.truncate(train);
    splits.test = splits.test.truncate(test);
    splits
}

/// Runs `job` on a sandbox worker thread.
pub fn on_worker<R: Send + 'static>(job: impl FnOnce(&Sandbox) -> R + Send + 'static) -> R {
    let sandbox = std::sync::Arc::new(Sandbox::new(SandboxConfig::default()).unwrap());
    let worker = std::sync::Arc::clone(&sandbox);
    sandbox
        .spawn_worker("test", move || job(&worker))
        .unwrap()
        .join()
        .unwrap()
}

/// The paper's model spec.
pub fn paper_spec() -> ModelSpec {
    ModelSpec::from_file(&workspace().join("models/paper-mlp.toml")).unwrap()
}

/// A fresh endpoint on loopback, and the cluster's pool as the directory serves it (verified).
pub async fn endpoint_and_pool(cluster: &LocalCluster) -> (Endpoint, Vec<Candidate>) {
    let endpoint = Endpoint::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        TlsIdentity::generate().unwrap(),
    )
    .unwrap();
    let signed = directory_client::fetch_pool(
        &endpoint,
        cluster.directory_addr,
        cluster.directory_fingerprint,
        directory_client::DEFAULT_MAX_POOL,
    )
    .await
    .unwrap();
    (endpoint, pool::verify_pool(&signed))
}
