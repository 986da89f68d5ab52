//! Label leakage (being written).
