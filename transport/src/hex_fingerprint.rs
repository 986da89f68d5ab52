//! Hex encoding of fingerprints (in config files, on command lines, in what hosts print).

use serde::{Deserialize, Deserializer, de::Error};

use crate::Fingerprint;

/// Parses 64 hex digits.
pub fn parse(text: &str) -> Option<Fingerprint> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// Formats as hex digits (64 for a fingerprint).
pub fn format(fingerprint: &[u8]) -> String {
    fingerprint.iter().map(|b| format!("{b:02x}")).collect()
}

/// Reads 64 hex digits: `#[serde(with = "hex_fingerprint")]` on a [`Fingerprint`] field.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Fingerprint, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).ok_or_else(|| D::Error::custom("a fingerprint is 64 hex digits"))
}
