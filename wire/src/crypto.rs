//! The cryptography of the wire format, all from aws-lc-rs: RSA-2048 OAEP-SHA256 as a KEM for
//! the hosts' onion keys, HKDF-SHA256 to derive keys, AES-256-GCM for everything sealed.
//!
//! The core takes its randomness from an [`Entropy`] passed in, so tests can make it
//! deterministic; only RSA-OAEP's padding draws from aws-lc's own generator.

use aws_lc_rs::{
    aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey},
    cipher::{
        AES_256, DecryptingKey, DecryptionContext, EncryptingKey, EncryptionContext,
        UnboundCipherKey,
    },
    hkdf,
    iv::FixedLength,
    rsa::{
        KeySize, OAEP_SHA256_MGF1SHA256, OaepPrivateDecryptingKey, OaepPublicEncryptingKey,
        PrivateDecryptingKey, PublicEncryptingKey,
    },
};

/// Bytes of a symmetric key.
pub const KEY_LEN: usize = 32;
/// Bytes of an AEAD tag.
pub const TAG_LEN: usize = 16;
/// Bytes of an RSA-2048 ciphertext (a wrapped key).
pub const WRAPPED_KEY_LEN: usize = 256;

/// A failure of the cryptography: bad key encodings, or a message that does not authenticate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// A key could not be decoded (or is not RSA-2048).
    #[error("bad key: {0}")]
    BadKey(&'static str),
    /// A ciphertext failed to decrypt or authenticate.
    #[error("decryption failed")]
    Decrypt,
    /// A primitive failed unexpectedly.
    #[error("crypto failure: {0}")]
    Internal(&'static str),
}

/// A source of secure random bytes.
pub trait Entropy {
    /// Fills `out` with random bytes.
    fn fill(&mut self, out: &mut [u8]);
}

/// The operating system's generator (through aws-lc).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemEntropy;

impl Entropy for SystemEntropy {
    fn fill(&mut self, out: &mut [u8]) {
        // aws-lc's generator does not fail on supported platforms; if it ever did, an all-zero
        // key would be a silent disaster, so stop instead.
        #[allow(clippy::expect_used)]
        aws_lc_rs::rand::fill(out).expect("the system random generator failed"); // ok: no peer input
    }
}

/// A 256-bit symmetric key.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(pub [u8; KEY_LEN]);

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(..)")
    }
}

impl Key {
    /// A fresh random key.
    pub fn random(entropy: &mut impl Entropy) -> Self {
        let mut k = [0u8; KEY_LEN];
        entropy.fill(&mut k);
        Key(k)
    }

    /// A key derived from this one for one purpose (HKDF-SHA256, `label` as info).
    pub fn derive(&self, label: &[u8]) -> Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, b"mixnn v1").extract(&self.0);
        let mut out = [0u8; KEY_LEN];
        // A 32-byte output is always within HKDF-SHA256's limit.
        let _ = prk
            .expand(&[label], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut out));
        Key(out)
    }

    fn aead(&self) -> Result<LessSafeKey, CryptoError> {
        UnboundKey::new(&AES_256_GCM, &self.0)
            .map(LessSafeKey::new)
            .map_err(|_| CryptoError::Internal("aes key"))
    }

    /// XORs `data` with the AES-256-CTR keystream of a key derived for `label`, starting at
    /// block `iv`: length-preserving, so a layer can be added or peeled without changing sizes.
    pub fn xor_keystream(
        &self,
        label: &[u8],
        iv: u128,
        data: &mut [u8],
    ) -> Result<(), CryptoError> {
        let key = self.derive(label);
        let cipher = UnboundCipherKey::new(&AES_256, &key.0)
            .and_then(EncryptingKey::ctr)
            .map_err(|_| CryptoError::Internal("ctr key"))?;
        let context = EncryptionContext::Iv128(FixedLength::from(iv.to_be_bytes()));
        cipher
            .less_safe_encrypt(data, context)
            .map_err(|_| CryptoError::Internal("ctr"))?;
        Ok(())
    }

    /// Encrypts one 16-byte block with AES-256 under a key derived for `label` (a keyed
    /// permutation: how a blob's IV changes from hop to hop).
    pub fn permute_block(&self, label: &[u8], block: &mut [u8; 16]) -> Result<(), CryptoError> {
        let key = self.derive(label);
        UnboundCipherKey::new(&AES_256, &key.0)
            .and_then(EncryptingKey::ecb)
            .and_then(|k| k.encrypt(block))
            .map(|_| ())
            .map_err(|_| CryptoError::Internal("ecb"))
    }

    /// Inverts [`Key::permute_block`].
    pub fn unpermute_block(&self, label: &[u8], block: &mut [u8; 16]) -> Result<(), CryptoError> {
        let key = self.derive(label);
        UnboundCipherKey::new(&AES_256, &key.0)
            .and_then(DecryptingKey::ecb)
            .and_then(|k| k.decrypt(block, DecryptionContext::None).map(|_| ()))
            .map_err(|_| CryptoError::Internal("ecb"))
    }

    /// Seals `plaintext` with AES-256-GCM under this key and `nonce`; appends the tag.
    pub fn seal(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        plaintext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.seal_vec(nonce, aad, plaintext.to_vec())
    }

    /// Encrypts `in_out` in place and returns the tag.
    pub fn seal_in_place(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let tag = self
            .aead()?
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| CryptoError::Internal("seal"))?;
        tag.as_ref()
            .try_into()
            .map_err(|_| CryptoError::Internal("tag length"))
    }

    fn seal_vec(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        mut buf: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        self.aead()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::Internal("seal"))?;
        Ok(buf)
    }

    /// Opens what [`Key::seal`] sealed; fails on any change.
    pub fn open(
        &self,
        nonce: [u8; NONCE_LEN],
        aad: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let mut buf = ciphertext.to_vec();
        let len = self
            .aead()?
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| CryptoError::Decrypt)?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
}

/// A host's public onion key (RSA-2048), as SPKI DER.
#[derive(Debug)]
pub struct OnionPublicKey {
    key: OaepPublicEncryptingKey,
    der: Vec<u8>,
}

impl OnionPublicKey {
    /// Decodes an RSA-2048 public key from SPKI DER.
    pub fn from_der(der: &[u8]) -> Result<Self, CryptoError> {
        let public = PublicEncryptingKey::from_der(der)
            .map_err(|_| CryptoError::BadKey("not an RSA public key"))?;
        if public.key_size_bits() != 2048 {
            return Err(CryptoError::BadKey("not RSA-2048"));
        }
        let key = OaepPublicEncryptingKey::new(public)
            .map_err(|_| CryptoError::BadKey("unusable for OAEP"))?;
        Ok(OnionPublicKey {
            key,
            der: der.to_vec(),
        })
    }

    /// The SPKI DER encoding.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Draws a fresh key and wraps it to this public key (RSA-OAEP-SHA256 as a KEM).
    pub fn wrap(
        &self,
        entropy: &mut impl Entropy,
    ) -> Result<(Key, [u8; WRAPPED_KEY_LEN]), CryptoError> {
        let key = Key::random(entropy);
        let wrapped = self.encrypt(&key.0)?;
        Ok((key, wrapped))
    }

    /// Encrypts a short secret (at most 190 bytes) with RSA-OAEP-SHA256.
    pub fn encrypt(&self, secret: &[u8]) -> Result<[u8; WRAPPED_KEY_LEN], CryptoError> {
        let mut out = [0u8; WRAPPED_KEY_LEN];
        let written = self
            .key
            .encrypt(
                &OAEP_SHA256_MGF1SHA256,
                secret,
                &mut out,
                Some(b"mixnn onion"),
            )
            .map_err(|_| CryptoError::Internal("rsa encrypt"))?
            .len();
        if written != WRAPPED_KEY_LEN {
            return Err(CryptoError::Internal("rsa ciphertext size"));
        }
        Ok(out)
    }
}

/// A host's private onion key (RSA-2048), as PKCS#8 DER.
pub struct OnionPrivateKey {
    key: OaepPrivateDecryptingKey,
    public_der: Vec<u8>,
    pkcs8: Vec<u8>,
}

impl std::fmt::Debug for OnionPrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnionPrivateKey(..)")
    }
}

impl OnionPrivateKey {
    /// A new RSA-2048 key.
    pub fn generate() -> Result<Self, CryptoError> {
        let private = PrivateDecryptingKey::generate(KeySize::Rsa2048)
            .map_err(|_| CryptoError::Internal("rsa keygen"))?;
        Self::from_private(private)
    }

    /// Decodes a PKCS#8 DER private key.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, CryptoError> {
        let private = PrivateDecryptingKey::from_pkcs8(der)
            .map_err(|_| CryptoError::BadKey("not an RSA PKCS#8 key"))?;
        Self::from_private(private)
    }

    fn from_private(private: PrivateDecryptingKey) -> Result<Self, CryptoError> {
        if private.key_size_bits() != 2048 {
            return Err(CryptoError::BadKey("not RSA-2048"));
        }
        use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der};
        let pkcs8 = AsDer::<Pkcs8V1Der<'static>>::as_der(&private)
            .map_err(|_| CryptoError::Internal("private key encoding"))?
            .as_ref()
            .to_vec();
        let public_der = private
            .public_key()
            .as_der()
            .map_err(|_| CryptoError::Internal("public key encoding"))?
            .as_ref()
            .to_vec();
        let key = OaepPrivateDecryptingKey::new(private)
            .map_err(|_| CryptoError::BadKey("unusable for OAEP"))?;
        Ok(OnionPrivateKey {
            key,
            public_der,
            pkcs8,
        })
    }

    /// The key as PKCS#8 DER (secret: store it readable only by its owner).
    pub fn to_pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }

    /// The public half.
    pub fn public_key(&self) -> Result<OnionPublicKey, CryptoError> {
        OnionPublicKey::from_der(&self.public_der)
    }

    /// Recovers a key wrapped by [`OnionPublicKey::wrap`].
    pub fn unwrap_key(&self, wrapped: &[u8]) -> Result<Key, CryptoError> {
        let plain = self.decrypt(wrapped)?;
        let key: [u8; KEY_LEN] = plain
            .as_slice()
            .try_into()
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(Key(key))
    }

    /// Decrypts what [`OnionPublicKey::encrypt`] produced.
    pub fn decrypt(&self, wrapped: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if wrapped.len() != WRAPPED_KEY_LEN {
            return Err(CryptoError::Decrypt);
        }
        let mut out = [0u8; WRAPPED_KEY_LEN];
        let plain = self
            .key
            .decrypt(
                &OAEP_SHA256_MGF1SHA256,
                wrapped,
                &mut out,
                Some(b"mixnn onion"),
            )
            .map_err(|_| CryptoError::Decrypt)?;
        Ok(plain.to_vec())
    }
}

/// One direction of a link: AES-256-GCM with an implicit per-message counter, as TLS 1.3 does
/// (nonce = IV xor counter). The counter never travels, so nothing on the wire repeats across
/// links (P3), and a replayed, dropped or reordered frame fails to open (P7).
#[derive(Debug, Clone)]
pub struct LinkCipher {
    key: Key,
    iv: [u8; NONCE_LEN],
    counter: u64,
}

impl LinkCipher {
    /// The cipher of one link direction, from its secret.
    pub fn new(secret: &Key) -> Self {
        let key = secret.derive(b"link key");
        let iv_key = secret.derive(b"link iv");
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(&iv_key.0[..NONCE_LEN]);
        LinkCipher {
            key,
            iv,
            counter: 0,
        }
    }

    fn next_nonce(&mut self) -> Result<[u8; NONCE_LEN], CryptoError> {
        let mut nonce = self.iv;
        for (n, c) in nonce[NONCE_LEN - 8..]
            .iter_mut()
            .zip(self.counter.to_be_bytes())
        {
            *n ^= c;
        }
        self.counter = self
            .counter
            .checked_add(1)
            .ok_or(CryptoError::Internal("counter exhausted"))?;
        Ok(nonce)
    }

    /// Seals the next frame's body.
    pub fn seal(&mut self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let nonce = self.next_nonce()?;
        self.key.seal(nonce, aad, plaintext)
    }

    /// Seals the next frame's body in place; returns the tag to append.
    pub fn seal_in_place(
        &mut self,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<[u8; TAG_LEN], CryptoError> {
        let nonce = self.next_nonce()?;
        self.key.seal_in_place(nonce, aad, in_out)
    }

    /// Opens the next frame's body. On failure the counter does not advance, so a forged frame
    /// cannot desynchronise the link.
    pub fn open(&mut self, aad: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let saved = self.counter;
        let nonce = self.next_nonce()?;
        self.key
            .open(nonce, aad, ciphertext)
            .inspect_err(|_| self.counter = saved)
    }

    /// Messages sealed or opened so far.
    pub fn counter(&self) -> u64 {
        self.counter
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use rand_chacha::ChaCha20Rng;
    use rand_core::{Rng, SeedableRng};

    use super::*;

    /// Deterministic entropy for the crate's tests.
    pub(crate) struct TestEntropy(ChaCha20Rng);

    /// Test entropy from `seed`.
    pub(crate) fn seeded(seed: u64) -> TestEntropy {
        TestEntropy(ChaCha20Rng::seed_from_u64(seed))
    }

    impl Entropy for TestEntropy {
        fn fill(&mut self, out: &mut [u8]) {
            self.0.fill_bytes(out);
        }
    }

    fn entropy() -> TestEntropy {
        seeded(7)
    }

    #[test]
    fn rsa_kem_round_trip_and_tampering() {
        let private = OnionPrivateKey::generate().unwrap();
        let public = private.public_key().unwrap();
        let (key, wrapped) = public.wrap(&mut entropy()).unwrap();
        assert_eq!(private.unwrap_key(&wrapped).unwrap(), key);
        let mut bad = wrapped;
        bad[100] ^= 1;
        assert_eq!(private.unwrap_key(&bad), Err(CryptoError::Decrypt));
        assert_eq!(
            private.unwrap_key(&wrapped[..255]),
            Err(CryptoError::Decrypt)
        );
        let other = OnionPrivateKey::generate().unwrap();
        assert_eq!(other.unwrap_key(&wrapped), Err(CryptoError::Decrypt));
        assert!(OnionPublicKey::from_der(b"junk").is_err());
    }

    #[test]
    fn derived_keys_differ_by_label() {
        let k = Key::random(&mut entropy());
        assert_ne!(k.derive(b"a"), k.derive(b"b"));
        assert_eq!(k.derive(b"a"), k.derive(b"a"));
    }

    #[test]
    fn link_cipher_rejects_replay_reorder_and_tampering() {
        let secret = Key::random(&mut entropy());
        let (mut tx, mut rx) = (LinkCipher::new(&secret), LinkCipher::new(&secret));
        let frames: Vec<Vec<u8>> = (0..3u8).map(|i| tx.seal(b"c", &[i; 10]).unwrap()).collect();
        // The same plaintext never gives the same ciphertext twice.
        assert_ne!(tx.seal(b"c", &[0; 10]).unwrap(), frames[0]);
        assert_eq!(rx.open(b"c", &frames[0]).unwrap(), vec![0; 10]);
        // Replay of frame 0 and skipping ahead to frame 2 both fail, and do not desynchronise.
        assert_eq!(rx.open(b"c", &frames[0]), Err(CryptoError::Decrypt));
        assert_eq!(rx.open(b"c", &frames[2]), Err(CryptoError::Decrypt));
        let mut tampered = frames[1].clone();
        tampered[3] ^= 0x40;
        assert_eq!(rx.open(b"c", &tampered), Err(CryptoError::Decrypt));
        assert_eq!(
            rx.open(b"other circuit", &frames[1]),
            Err(CryptoError::Decrypt)
        );
        assert_eq!(rx.open(b"c", &frames[1]).unwrap(), vec![1; 10]);
        assert_eq!(rx.counter(), 2);
    }
}
