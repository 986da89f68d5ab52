//! Frames after setup (op=1 forward, op=2 backward, op=3 test, cover traffic): a circuit, as
//! in Tor. On every link each frame is `circuit id || AES-GCM(link key, implicit counter)
//! {op, seq, tensor, blob, zero padding}`, and every frame of a session has the same length
//! (P5). The circuit id differs on every link (P3); the counter never travels, so replayed,
//! reordered or forged frames fail to open (P4, P7).

use crate::{
    crypto::{CryptoError, Key, LinkCipher, TAG_LEN},
    reader::{ReadError, Reader, put_lp32},
};

/// Bytes of a circuit id.
pub const CIRCUIT_ID_LEN: usize = 16;

/// A circuit id: names one link of one session, different on every link (P3).
pub type CircuitId = [u8; CIRCUIT_ID_LEN];

/// Smallest frame length a session may choose.
pub const MIN_FRAME_LEN: usize = 256;
/// Largest frame length a session may choose (a batch of 64 x 784 floats is 200 KB).
pub const MAX_FRAME_LEN: usize = 16 << 20;
/// Most dimensions of a tensor in a frame.
pub const MAX_RANK: usize = 8;

/// The operation a frame carries. Open: unknown codes parse, and each context decides what it
/// accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Op(pub u8);

impl Op {
    /// Setup is complete up to the sender (op=0's acknowledgement, hop by hop to the designer).
    pub const READY: Op = Op(0);
    /// Forward pass of training: activations towards the loss hop.
    pub const FORWARD: Op = Op(1);
    /// Backward pass: gradients towards the first hop.
    pub const BACKWARD: Op = Op(2);
    /// Forward pass of testing.
    pub const TEST: Op = Op(3);
    /// Cover traffic: looks like the rest, carries nothing.
    pub const COVER: Op = Op(4);
    /// A report sealed for the designer (loss, test output, state, failure) in the blob.
    pub const REPORT: Op = Op(5);
    /// Each hop sends the designer its state (as reports), then passes this on.
    pub const EXPORT: Op = Op(6);
}

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The frame's length is not the session's.
    #[error("frame of {got} bytes, the session's frames have {want}")]
    Length {
        /// Bytes received.
        got: usize,
        /// The session's frame length.
        want: usize,
    },
    /// The frame names another circuit.
    #[error("unknown circuit")]
    UnknownCircuit,
    /// Forged, tampered, replayed or out of order.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// The body does not parse.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The content does not fit in the session's frame length.
    #[error("content of {0} bytes does not fit in a frame")]
    TooLarge(usize),
    /// A frame length outside the allowed range.
    #[error("frame length {0} is out of range")]
    BadFrameLen(usize),
}

/// Set in a tensor's rank byte when its values travel as bytes: each byte `k` stands for
/// exactly `k as f32 / 255.0`, as image pixels scaled to [0, 1] are. The encoder picks this
/// whenever every value round-trips, so it changes no value, only the size (a quarter).
const BYTE_VALUES: u8 = 0x80;

/// The byte `k` nearest `v * 255`, and whether `k as f32 / 255.0 == v` bit for bit. For
/// v = k / 255, v * 255 is within an ulp of k, so + 0.5 and the cast find it; the cast
/// saturates (NaN gives 0), and the check catches every value that is not a byte. No
/// branch and no libm call: it runs over every value of an image batch.
fn byte_of(v: f32) -> (u8, bool) {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let k = (v * 255.0 + 0.5) as u8;
    (k, (f32::from(k) / 255.0).to_bits() == v.to_bits())
}

/// Values checked at once for [`byte_of`]: chunks that vectorise, the check leaving at the
/// first that is not all bytes.
const BYTE_CHUNK: usize = 64;

/// Writes `values` as bytes into `out` (as long as `values`) and says whether every one
/// is a byte; `out` is meaningless if not.
fn bytes_of(values: &[f32], out: &mut [u8]) -> bool {
    values
        .chunks(BYTE_CHUNK)
        .zip(out.chunks_mut(BYTE_CHUNK))
        .all(|(values, out)| {
            let mut exact = true;
            for (o, &v) in out.iter_mut().zip(values) {
                let (k, is_byte) = byte_of(v);
                *o = k;
                exact &= is_byte;
            }
            exact
        })
}

/// Bytes of a tensor of `shape` whose values travel as bytes ([`WireTensor::encoded_len`]
/// for image batches).
pub fn byte_tensor_len(shape: &[usize]) -> usize {
    1 + 4 * shape.len() + shape.iter().product::<usize>()
}

/// A tensor as it travels: dims and `f32` values (as bytes when they are all pixels).
#[derive(Debug, Clone, PartialEq)]
pub struct WireTensor {
    /// Dimensions.
    pub shape: Vec<u32>,
    /// Values, row-major.
    pub data: Vec<f32>,
}

impl WireTensor {
    /// Whether its values travel as bytes.
    fn as_bytes(&self) -> bool {
        self.data
            .chunks(BYTE_CHUNK)
            .all(|c| c.iter().fold(true, |exact, &v| exact & byte_of(v).1))
    }

    /// Bytes of its encoding.
    pub fn encoded_len(&self) -> usize {
        let per_value = if self.as_bytes() { 1 } else { 4 };
        1 + 4 * self.shape.len() + per_value * self.data.len()
    }

    /// Appends `rank || dims || values`.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let rank = u8::try_from(self.shape.len())
            .ok()
            .filter(|&r| usize::from(r) <= MAX_RANK)
            .ok_or(ReadError::Malformed("tensor rank"))?;
        let count = self
            .shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize));
        if count != Some(self.data.len()) {
            return Err(ReadError::Malformed("tensor shape does not match its data").into());
        }
        let rank_at = out.len();
        out.push(rank);
        for d in &self.shape {
            out.extend(d.to_be_bytes());
        }
        // One pass: bytes while every value is one, else back to `f32`s.
        let values_at = out.len();
        out.resize(values_at + self.data.len(), 0);
        if bytes_of(&self.data, &mut out[values_at..]) {
            out[rank_at] |= BYTE_VALUES;
            return Ok(());
        }
        out.truncate(values_at);
        if cfg!(target_endian = "little") {
            out.extend_from_slice(bytemuck::cast_slice(&self.data));
        } else {
            for v in &self.data {
                out.extend(v.to_le_bytes());
            }
        }
        Ok(())
    }

    /// Reads what [`WireTensor::encode_into`] wrote, after its rank byte.
    fn decode_after_rank(rank: u8, r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let as_bytes = rank & BYTE_VALUES != 0;
        let rank = rank & !BYTE_VALUES;
        if usize::from(rank) > MAX_RANK {
            return Err(ReadError::Malformed("tensor rank"));
        }
        let shape = (0..rank)
            .map(|_| r.take_u32())
            .collect::<Result<Vec<_>, _>>()?;
        if as_bytes {
            let count = shape
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
                .ok_or(ReadError::Malformed("tensor too large"))?;
            let data = r
                .take(count)?
                .iter()
                .map(|&b| f32::from(b) / 255.0)
                .collect();
            return Ok(WireTensor { shape, data });
        }
        let bytes = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d as usize))
            .and_then(|c| c.checked_mul(4))
            .ok_or(ReadError::Malformed("tensor too large"))?;
        // `take` checks the bytes are there before anything is allocated.
        let raw = r.take(bytes)?;
        let mut data = vec![0f32; bytes / 4];
        if cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<f32, u8>(&mut data).copy_from_slice(raw);
        } else {
            for (v, c) in data.iter_mut().zip(raw.chunks_exact(4)) {
                *v = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        Ok(WireTensor { shape, data })
    }

    /// Reads one tensor.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, ReadError> {
        let rank = r.take_u8()?;
        Self::decode_after_rank(rank, r)
    }
}

/// The plaintext of a frame. It holds no sequence number or other value that a later link
/// would see again (P3): order is the link's implicit counter, and the blob changes at every
/// hop (see [`crate::blob`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FrameBody {
    /// What to do.
    pub op: Op,
    /// Activations or gradients, if any.
    pub tensor: Option<WireTensor>,
    /// Opaque bytes that travel with the message (labels sealed for the loss hop, reports
    /// sealed for the designer, or random bytes).
    pub blob: Vec<u8>,
    /// The paper's per-message onion ([`crate::route`]), in sessions that use it; else empty
    /// (then its length prefix is four zero bytes, as the padding would be).
    pub route: Vec<u8>,
}

const NO_TENSOR: u8 = 0xff;

/// Bytes of a frame body's header and its blob and route length prefixes.
pub const BODY_OVERHEAD: usize = 1 + 1 + 4 + 4;

impl FrameBody {
    /// Bytes the body needs before padding.
    pub fn encoded_len(&self) -> usize {
        let tensor = self.tensor.as_ref().map_or(0, |t| t.encoded_len() - 1);
        BODY_OVERHEAD + tensor + self.blob.len() + self.route.len()
    }

    /// The body, zero-padded to `capacity` bytes (what a link seals).
    pub fn encode(&self, capacity: usize) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(capacity);
        self.encode_into(&mut out, capacity)?;
        Ok(out)
    }

    /// Appends the body, zero-padded to `capacity` bytes.
    fn encode_into(&self, out: &mut Vec<u8>, capacity: usize) -> Result<(), FrameError> {
        // Written, then measured: sizing first would read an image batch twice.
        let start = out.len();
        out.push(self.op.0);
        match &self.tensor {
            None => out.push(NO_TENSOR),
            Some(t) => t.encode_into(out)?,
        }
        put_lp32(out, &self.blob);
        put_lp32(out, &self.route);
        let needed = out.len() - start;
        if needed > capacity {
            out.truncate(start);
            return Err(FrameError::TooLarge(needed));
        }
        out.resize(start + capacity, 0);
        Ok(())
    }

    /// Parses an opened body (what [`LinkEnd::open`] does after the AEAD).
    pub fn decode(bytes: &[u8]) -> Result<Self, FrameError> {
        let mut r = Reader::new(bytes);
        let op = Op(r.take_u8()?);
        let tensor = match r.take_u8()? {
            NO_TENSOR => None,
            rank => Some(WireTensor::decode_after_rank(rank, &mut r)?),
        };
        let blob = r.take_lp32(bytes.len())?.to_vec();
        let route = r.take_lp32(bytes.len())?.to_vec();
        // A fold rather than `any`: it vectorises, and the padding can be most of the frame.
        if r.take_rest().iter().fold(0u8, |acc, &b| acc | b) != 0 {
            return Err(ReadError::Malformed("non-zero padding").into());
        }
        Ok(FrameBody {
            op,
            tensor,
            blob,
            route,
        })
    }
}

/// The plaintext capacity of a frame of `frame_len` bytes.
pub fn capacity(frame_len: usize) -> usize {
    frame_len.saturating_sub(CIRCUIT_ID_LEN + TAG_LEN)
}

/// The longest blob a frame of `frame_len` bytes carries: all of it but the header (a frame
/// that carries a blob this long carries no tensor).
pub fn max_blob_len(frame_len: usize) -> usize {
    capacity(frame_len).saturating_sub(BODY_OVERHEAD)
}

/// The circuit id a frame names (to find its session), if it is long enough to name one.
pub fn circuit_of(frame: &[u8]) -> Option<CircuitId> {
    frame.get(..CIRCUIT_ID_LEN).and_then(|c| c.try_into().ok())
}

/// Which end of a link this is: the upstream end is nearer the designer's first hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Sends forward frames, receives backward ones.
    Upstream,
    /// Receives forward frames, sends backward ones.
    Downstream,
}

/// One end of a link of a session: its circuit id and its two ciphers.
#[derive(Debug, Clone)]
pub struct LinkEnd {
    circuit: CircuitId,
    frame_len: usize,
    send: LinkCipher,
    recv: LinkCipher,
}

impl LinkEnd {
    /// One end of the link with `circuit` and `secret` (from the setup), on `side`.
    pub fn new(
        circuit: CircuitId,
        secret: &Key,
        side: Side,
        frame_len: usize,
    ) -> Result<Self, FrameError> {
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&frame_len) {
            return Err(FrameError::BadFrameLen(frame_len));
        }
        let down = LinkCipher::new(&secret.derive(b"downstream"));
        let up = LinkCipher::new(&secret.derive(b"upstream"));
        let (send, recv) = match side {
            Side::Upstream => (down, up),
            Side::Downstream => (up, down),
        };
        Ok(LinkEnd {
            circuit,
            frame_len,
            send,
            recv,
        })
    }

    /// The link's circuit id.
    pub fn circuit(&self) -> CircuitId {
        self.circuit
    }

    /// Seals the next frame to send.
    pub fn seal(&mut self, body: &FrameBody) -> Result<Vec<u8>, FrameError> {
        // Encoded after the circuit id and sealed where it lies: no copy of the body.
        let mut frame = Vec::with_capacity(self.frame_len);
        frame.extend(self.circuit);
        body.encode_into(&mut frame, capacity(self.frame_len))?;
        let tag = self
            .send
            .seal_in_place(&self.circuit, &mut frame[CIRCUIT_ID_LEN..])?;
        frame.extend(tag);
        Ok(frame)
    }

    /// Opens the next frame received.
    pub fn open(&mut self, frame: &[u8]) -> Result<FrameBody, FrameError> {
        if frame.len() != self.frame_len {
            return Err(FrameError::Length {
                got: frame.len(),
                want: self.frame_len,
            });
        }
        if circuit_of(frame) != Some(self.circuit) {
            return Err(FrameError::UnknownCircuit);
        }
        let plain = self.recv.open(&self.circuit, &frame[CIRCUIT_ID_LEN..])?;
        FrameBody::decode(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(frame_len: usize) -> (LinkEnd, LinkEnd) {
        let secret = Key([9; 32]);
        (
            LinkEnd::new([1; 16], &secret, Side::Upstream, frame_len).unwrap(),
            LinkEnd::new([1; 16], &secret, Side::Downstream, frame_len).unwrap(),
        )
    }

    fn body(op: Op, values: usize) -> FrameBody {
        FrameBody {
            op,
            tensor: (values > 0).then(|| WireTensor {
                shape: vec![1, u32::try_from(values).unwrap()],
                data: (0..values).map(|v| v as f32).collect(),
            }),
            blob: vec![7; 20],
            route: Vec::new(),
        }
    }

    #[test]
    fn pixels_travel_as_bytes_and_come_back_bit_for_bit() {
        let pixels = WireTensor {
            shape: vec![2, 256],
            data: (0..512u32)
                .map(|i| f32::from(u8::try_from(i % 256).unwrap()) / 255.0)
                .collect(),
        };
        assert_eq!(pixels.encoded_len(), byte_tensor_len(&[2, 256]));
        let mut out = Vec::new();
        pixels.encode_into(&mut out).unwrap();
        assert_eq!(out.len(), 1 + 8 + 512);
        let back = WireTensor::decode(&mut Reader::new(&out)).unwrap();
        assert!(
            back.data
                .iter()
                .zip(&pixels.data)
                .all(|(a, b)| a.to_bits() == b.to_bits())
        );
        // One value that is no pixel (nor -0.0, nor a value a bit off k / 255) keeps all
        // values in f32.
        for odd in [
            0.5,
            -0.0,
            f32::from_bits((3.0f32 / 255.0).to_bits() + 1),
            f32::from_bits((200.0f32 / 255.0).to_bits() - 1),
            f32::from_bits(1.0f32.to_bits() + 1),
            2.0,
            -1.0 / 255.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ] {
            // In the first chunk the encoder checks, and in a later one.
            for at in [7, 500] {
                let mut t = pixels.clone();
                t.data[at] = odd;
                assert_eq!(t.encoded_len(), 1 + 8 + 4 * 512, "{odd}");
                let mut out = Vec::new();
                t.encode_into(&mut out).unwrap();
                assert_eq!(out.len(), 1 + 8 + 4 * 512, "{odd}");
                let back = WireTensor::decode(&mut Reader::new(&out)).unwrap();
                assert!(
                    back.data
                        .iter()
                        .zip(&t.data)
                        .all(|(a, b)| a.to_bits() == b.to_bits())
                );
            }
        }
    }

    #[test]
    fn frames_round_trip_both_ways_with_one_length() {
        let (mut up, mut down) = pair(4096);
        for (op, n) in [
            (Op::FORWARD, 100),
            (Op::TEST, 3),
            (Op::COVER, 0),
            (Op::REPORT, 0),
        ] {
            let frame = up.seal(&body(op, n)).unwrap();
            assert_eq!(frame.len(), 4096, "P5");
            assert_eq!(down.open(&frame).unwrap(), body(op, n));
        }
        let back = down.seal(&body(Op::BACKWARD, 50)).unwrap();
        assert_eq!(back.len(), 4096);
        assert_eq!(up.open(&back).unwrap(), body(Op::BACKWARD, 50));
        // A frame sent one way cannot be reflected back.
        let frame = up.seal(&body(Op::FORWARD, 1)).unwrap();
        assert!(up.open(&frame).is_err());
    }

    #[test]
    fn every_tampered_byte_replay_reorder_and_wrong_length_are_refused() {
        let (mut up, mut down) = pair(MIN_FRAME_LEN);
        let f0 = up.seal(&body(Op::FORWARD, 4)).unwrap();
        let f1 = up.seal(&body(Op::FORWARD, 5)).unwrap();
        for i in 0..f0.len() {
            let mut bad = f0.clone();
            bad[i] ^= 0x01;
            assert!(down.open(&bad).is_err(), "byte {i} flipped went unnoticed");
        }
        assert!(
            matches!(down.open(&f1), Err(FrameError::Crypto(_))),
            "reordered"
        );
        down.open(&f0).unwrap();
        assert!(
            matches!(down.open(&f0), Err(FrameError::Crypto(_))),
            "replayed"
        );
        assert!(matches!(
            down.open(&f1[..100]),
            Err(FrameError::Length { .. })
        ));
        let mut long = f1.clone();
        long.push(0);
        assert!(matches!(down.open(&long), Err(FrameError::Length { .. })));
        let mut other = f1.clone();
        other[..16].copy_from_slice(&[2; 16]);
        assert_eq!(down.open(&other), Err(FrameError::UnknownCircuit));
        down.open(&f1).unwrap();
    }

    #[test]
    fn content_must_fit_and_sizes_are_bounded() {
        let (mut up, _) = pair(MIN_FRAME_LEN);
        assert!(matches!(
            up.seal(&body(Op::FORWARD, 1000)),
            Err(FrameError::TooLarge(_))
        ));
        assert!(LinkEnd::new([0; 16], &Key([0; 32]), Side::Upstream, 10).is_err());
        assert!(LinkEnd::new([0; 16], &Key([0; 32]), Side::Upstream, MAX_FRAME_LEN + 1).is_err());
        // A body announcing a huge tensor is refused without allocating it.
        let mut lying = vec![1u8, 2];
        lying.extend(u32::MAX.to_be_bytes());
        lying.extend(u32::MAX.to_be_bytes());
        assert!(FrameBody::decode(&lying).is_err());
        let mut bad_padding = body(Op::COVER, 0).encode(300).unwrap();
        bad_padding[299] = 1;
        assert!(FrameBody::decode(&bad_padding).is_err());
    }
}
