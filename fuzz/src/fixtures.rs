//! The fixed keys of the harnesses.
//!
//! Fixed rather than drawn at start-up, so that a seed sealed for them by `seeds` is still
//! valid in the fuzzing process, and a crash found with them replays in the regression tests.
//! `fixtures/onion-key.pk8` is a throwaway RSA-2048 key in PKCS#8 DER (`openssl genpkey
//! -algorithm RSA -pkeyopt rsa_keygen_bits:2048 | openssl pkcs8 -topk8 -nocrypt -outform
//! DER`) that guards nothing: never use it for a host.

use std::sync::OnceLock;

use mixnn_wire::crypto::{Key, OnionPrivateKey, OnionPublicKey};

/// The fixture onion key as PKCS#8 DER.
pub const ONION_KEY_PKCS8: &[u8] = include_bytes!("../fixtures/onion-key.pk8");

/// The fixed onion key (decoded once: a PKCS#8 parse is cheap, RSA key generation is not).
pub fn onion_key() -> &'static OnionPrivateKey {
    static KEY: OnceLock<OnionPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        OnionPrivateKey::from_pkcs8(ONION_KEY_PKCS8).expect("the fixture onion key decodes")
    })
}

/// Its public half.
pub fn onion_public() -> &'static OnionPublicKey {
    static KEY: OnceLock<OnionPublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        onion_key()
            .public_key()
            .expect("the fixture onion key has a public half")
    })
}

/// The fixed `designer_key` that the `blob` target seals and opens under.
pub fn designer_key() -> Key {
    Key([0x42; 32])
}

/// The fixed `blob_key` of the `blob` target's layers.
pub fn blob_key() -> Key {
    Key([0x17; 32])
}
