//! What a hop tells the designer, sealed in a blob ([`crate::blob`]) so that no other hop can
//! read it: setup complete, the loss of a batch, a test output, a chunk of its state, a
//! failure, or a lost neighbour.

use crate::{
    frame::{FrameError, WireTensor},
    reader::{ReadError, Reader, put_lp32},
};

/// Longest failure message a report carries.
pub const MAX_MESSAGE_LEN: usize = 400;

/// Bytes of the longest failure report: kind, length and message. Every session's blobs hold
/// at least this much sealed ([`crate::setup::MIN_BLOB_LEN`]), so any hop can always report.
pub const MAX_FAILURE_LEN: usize = 1 + 4 + MAX_MESSAGE_LEN;

/// Bytes a [`Report::State`] adds to its part: kind, index, count and length.
pub const STATE_OVERHEAD: usize = 1 + 4 + 4 + 4;

/// A report from a hop to the designer.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// Every hop up to the sender has loaded its layers.
    Ready,
    /// The mean loss of the batch just forwarded.
    Loss(f32),
    /// The test-end hop's output for the test batch just forwarded.
    Output(WireTensor),
    /// Part `index` of `count` of the hop's state.
    State {
        /// Which part.
        index: u32,
        /// How many parts.
        count: u32,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// The hop failed; its session is over.
    Failure(String),
    /// The hop lost its link with a neighbour (the neighbour's host died, or the network
    /// between them failed, or it cannot be reached): its session is over. The designer
    /// knows which host that is; the hop does not.
    LinkLost(Neighbour),
}

/// One of a hop's two neighbours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Neighbour {
    /// The one frames come from on the way forward (the designer, for the first hop).
    Prev,
    /// The one frames go to on the way forward (the designer, for the last hop).
    Next,
}

/// `text` cut to at most [`MAX_MESSAGE_LEN`] bytes, at a character boundary.
fn cut(text: &str) -> &str {
    let mut end = text.len().min(MAX_MESSAGE_LEN);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Report {
    /// A failure report, its message cut to [`MAX_MESSAGE_LEN`].
    pub fn failure(message: impl std::fmt::Display) -> Self {
        Report::Failure(cut(&message.to_string()).to_owned())
    }

    /// The bytes that get sealed.
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::new();
        match self {
            Report::Ready => out.push(0),
            Report::Loss(loss) => {
                out.push(1);
                out.extend(loss.to_le_bytes());
            }
            Report::Output(tensor) => {
                out.push(2);
                tensor.encode_into(&mut out)?;
            }
            Report::State {
                index,
                count,
                bytes,
            } => {
                out.push(3);
                out.extend(index.to_be_bytes());
                out.extend(count.to_be_bytes());
                put_lp32(&mut out, bytes);
            }
            Report::Failure(message) => {
                out.push(4);
                put_lp32(&mut out, cut(message).as_bytes());
            }
            Report::LinkLost(side) => {
                out.push(5);
                out.push(match side {
                    Neighbour::Prev => 0,
                    Neighbour::Next => 1,
                });
            }
        }
        Ok(out)
    }

    /// Parses an opened report.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let report = match r.take_u8()? {
            0 => Report::Ready,
            1 => Report::Loss(f32::from_le_bytes(r.take_array()?)),
            2 => Report::Output(WireTensor::decode(&mut r)?),
            3 => Report::State {
                index: r.take_u32()?,
                count: r.take_u32()?,
                bytes: r.take_lp32(bytes.len())?.to_vec(),
            },
            // Strict UTF-8: a lossy decoding could grow past the maximum (found by fuzzing).
            4 => Report::Failure(
                std::str::from_utf8(r.take_lp32(MAX_MESSAGE_LEN)?)
                    .map_err(|_| ReadError::Malformed("a failure message that is not UTF-8"))?
                    .to_owned(),
            ),
            5 => Report::LinkLost(match r.take_u8()? {
                0 => Neighbour::Prev,
                1 => Neighbour::Next,
                _ => return Err(ReadError::Malformed("an unknown neighbour")),
            }),
            _ => return Err(ReadError::Malformed("unknown report")),
        };
        r.should_be_exhausted()?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_round_trip_and_garbage_is_refused() {
        for report in [
            Report::Ready,
            Report::Loss(0.25),
            Report::Output(WireTensor {
                shape: vec![2, 2],
                data: vec![1.0, 2.0, 3.0, 4.0],
            }),
            Report::State {
                index: 1,
                count: 3,
                bytes: vec![9; 10],
            },
            Report::failure("é".repeat(300)),
            Report::LinkLost(Neighbour::Prev),
            Report::LinkLost(Neighbour::Next),
        ] {
            let bytes = report.encode().unwrap();
            assert_eq!(Report::decode(&bytes).unwrap(), report);
        }
        assert_eq!(
            Report::failure("x".repeat(1000)).encode().unwrap().len(),
            MAX_FAILURE_LEN
        );
        assert!(Report::decode(&[9]).is_err());
        // Regression (fuzzing, report): bytes that are not UTF-8 are refused, not replaced
        // (each replacement grew the message by two bytes, past its maximum).
        let mut bad = vec![4];
        put_lp32(&mut bad, &[0xff; MAX_MESSAGE_LEN]);
        assert!(Report::decode(&bad).is_err());
        // A message longer than the maximum, built by hand, is cut when encoded.
        let long = Report::Failure("é".repeat(MAX_MESSAGE_LEN));
        let Report::Failure(back) = Report::decode(&long.encode().unwrap()).unwrap() else {
            panic!("not a failure")
        };
        assert_eq!(back.len(), MAX_MESSAGE_LEN);
        assert!(Report::decode(&[1, 0]).is_err());
        assert!(Report::decode(&[0, 0]).is_err());
        assert!(Report::decode(&[5, 2]).is_err());
        assert!(Report::decode(&[5]).is_err());
    }
}
