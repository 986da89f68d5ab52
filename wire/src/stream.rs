//! The header that opens every QUIC stream: a kind byte, then what that kind needs. A host
//! reads it before anything else a peer sends, so it is short, of a length the kind byte
//! fixes, and read under a deadline ([`StreamHeader::len_for`]).

use crate::{
    frame::{CIRCUIT_ID_LEN, CircuitId},
    reader::{ReadError, Reader},
};

/// The first byte of a stream: what it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamKind(pub u8);

impl StreamKind {
    /// An op=0 onion (`u32` length, bytes), then the link's frames both ways.
    pub const SETUP: StreamKind = StreamKind(0);
    /// The designer attaching to the last hop: the link's circuit id, then its frames.
    pub const ATTACH: StreamKind = StreamKind(1);
    /// A host publishing its signed descriptor to the directory (`u32` length, bytes).
    pub const PUBLISH: StreamKind = StreamKind(0x10);
    /// A designer asking the directory for the live pool.
    pub const POOL: StreamKind = StreamKind(0x11);
}

/// Why a host closed a stream it would not serve: the code it resets the stream with, so
/// that whoever opened it (a designer, or the hop before) can say why. Open: codes this
/// version does not know still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StreamRefusal(pub u32);

impl StreamRefusal {
    /// A reason this version has no code for.
    pub const OTHER: StreamRefusal = StreamRefusal(1);
    /// The header, or the op=0 message, does not parse or is not for this host.
    pub const MALFORMED: StreamRefusal = StreamRefusal(2);
    /// The op=0 layer asks for more than the host grants (a size, the lifetime).
    pub const OUT_OF_BOUNDS: StreamRefusal = StreamRefusal(3);
    /// Over a setup rate (the peer's, its source's, or the host's).
    pub const RATE_LIMITED: StreamRefusal = StreamRefusal(4);
    /// Too many op=0 messages being read at once.
    pub const BUSY: StreamRefusal = StreamRefusal(5);
    /// The host holds as many sessions (or frame bytes) as it takes.
    pub const FULL: StreamRefusal = StreamRefusal(6);
    /// The op=0 layer was seen before.
    pub const REPLAYED: StreamRefusal = StreamRefusal(7);
    /// The stream is not from the neighbour the setup names.
    pub const WRONG_NEIGHBOUR: StreamRefusal = StreamRefusal(8);
    /// What the stream had to carry did not arrive in time.
    pub const TIMED_OUT: StreamRefusal = StreamRefusal(9);
    /// An attach for a circuit no session waits on (or attached twice).
    pub const NO_SESSION: StreamRefusal = StreamRefusal(10);
    /// The host is shutting down: it takes no new session.
    pub const SHUTTING_DOWN: StreamRefusal = StreamRefusal(11);
}

impl std::fmt::Display for StreamRefusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match *self {
            StreamRefusal::OTHER => "refused",
            StreamRefusal::MALFORMED => "malformed, or not for this host",
            StreamRefusal::OUT_OF_BOUNDS => "asks for more than the host grants",
            StreamRefusal::RATE_LIMITED => "rate limited",
            StreamRefusal::BUSY => "too many setups being read",
            StreamRefusal::FULL => "the host is full",
            StreamRefusal::REPLAYED => "a replayed setup",
            StreamRefusal::WRONG_NEIGHBOUR => "not from the neighbour the setup names",
            StreamRefusal::TIMED_OUT => "timed out",
            StreamRefusal::NO_SESSION => "no session for this circuit",
            StreamRefusal::SHUTTING_DOWN => "the host is shutting down",
            StreamRefusal(code) => return write!(f, "refused (code {code})"),
        };
        f.write_str(text)
    }
}

/// A stream's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamHeader {
    /// An op=0 message of `len` bytes follows.
    Setup {
        /// Its length (the host checks it against its own maximum).
        len: u32,
    },
    /// The designer attaches to the link with this circuit id.
    Attach {
        /// The circuit id of the link between the last hop and the designer.
        circuit: CircuitId,
    },
    /// A signed descriptor of `len` bytes follows.
    Publish {
        /// Its length.
        len: u32,
    },
    /// A request for the pool; nothing follows.
    Pool,
}

impl StreamHeader {
    /// The longest header.
    pub const MAX_LEN: usize = 1 + CIRCUIT_ID_LEN;

    /// The length of the whole header of a stream whose first byte is `kind`, or `None` for
    /// a kind this version does not know.
    pub fn len_for(kind: u8) -> Option<usize> {
        match StreamKind(kind) {
            StreamKind::SETUP | StreamKind::PUBLISH => Some(1 + 4),
            StreamKind::ATTACH => Some(1 + CIRCUIT_ID_LEN),
            StreamKind::POOL => Some(1),
            _ => None,
        }
    }

    /// Its kind.
    pub fn kind(&self) -> StreamKind {
        match self {
            StreamHeader::Setup { .. } => StreamKind::SETUP,
            StreamHeader::Attach { .. } => StreamKind::ATTACH,
            StreamHeader::Publish { .. } => StreamKind::PUBLISH,
            StreamHeader::Pool => StreamKind::POOL,
        }
    }

    /// The header's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![self.kind().0];
        match self {
            StreamHeader::Setup { len } | StreamHeader::Publish { len } => {
                out.extend(len.to_be_bytes());
            }
            StreamHeader::Attach { circuit } => out.extend(circuit),
            StreamHeader::Pool => {}
        }
        out
    }

    /// Parses a whole header (exactly [`StreamHeader::len_for`] bytes).
    pub fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let header = match StreamKind(r.take_u8()?) {
            StreamKind::SETUP => StreamHeader::Setup { len: r.take_u32()? },
            StreamKind::ATTACH => StreamHeader::Attach {
                circuit: r.take_array()?,
            },
            StreamKind::PUBLISH => StreamHeader::Publish { len: r.take_u32()? },
            StreamKind::POOL => StreamHeader::Pool,
            _ => return Err(ReadError::Malformed("unknown stream kind")),
        };
        r.should_be_exhausted()?;
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_at_the_length_their_kind_says() {
        for header in [
            StreamHeader::Setup { len: 1234 },
            StreamHeader::Attach { circuit: [7; 16] },
            StreamHeader::Publish { len: 9 },
            StreamHeader::Pool,
        ] {
            let bytes = header.encode();
            assert_eq!(StreamHeader::len_for(bytes[0]), Some(bytes.len()));
            assert!(bytes.len() <= StreamHeader::MAX_LEN);
            assert_eq!(StreamHeader::decode(&bytes).unwrap(), header);
            assert!(StreamHeader::decode(&bytes[..bytes.len() - 1]).is_err() || bytes.len() == 1);
            assert!(StreamHeader::decode(&[bytes.clone(), vec![0]].concat()).is_err());
        }
        // Byte-level vectors: what the daemon and the designer send.
        assert_eq!(
            StreamHeader::Setup { len: 0x0102_0304 }.encode(),
            [0, 1, 2, 3, 4]
        );
        assert_eq!(StreamHeader::Pool.encode(), [0x11]);
        assert_eq!(StreamHeader::len_for(0x42), None);
        assert!(StreamHeader::decode(&[0x42]).is_err());
        assert!(StreamHeader::decode(&[]).is_err());
    }
}
