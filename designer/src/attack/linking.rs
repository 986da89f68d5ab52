//! Linking by timing (being written).
