//! The error a layer reports (a value on the WIT boundary, never a trap).

/// A failure a layer reports to its host, mirroring the WIT `layer-error` variant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerError {
    /// The config could not be decoded or makes no sense.
    BadConfig(String),
    /// A tensor has the wrong shape, or its data does not match its shape.
    BadShape(String),
    /// State bytes could not be decoded or do not fit the layer.
    BadState(String),
    /// A call came out of order.
    BadOrder(String),
    /// The layer does not support this call.
    Unsupported(String),
    /// A kernel refused its arguments, or another failure.
    Failed(String),
}

impl core::fmt::Display for LayerError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayerError::BadConfig(m) => write!(f, "bad config: {m}"),
            LayerError::BadShape(m) => write!(f, "bad shape: {m}"),
            LayerError::BadState(m) => write!(f, "bad state: {m}"),
            LayerError::BadOrder(m) => write!(f, "call out of order: {m}"),
            LayerError::Unsupported(m) => write!(f, "unsupported: {m}"),
            LayerError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for LayerError {}
