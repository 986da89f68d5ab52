//! The directory's answers, one per request stream ([`crate::stream`]):
//!
//! - to `PUBLISH`: `0` (taken) or `1 || code` ([`Refusal`]);
//! - to `POOL`: `0 || u32 count || (u32 len || signed descriptor)*`, or `1 || code`;
//! - to `POOL || 2` (a client that reads the second version, [`POOL_V2`]):
//!   `2 || u32 count || (u64 first_seen || u32 len || signed descriptor)*`, or `1 || code`,
//!   where `first_seen` is when the directory first admitted the host (Unix seconds), for
//!   designers that prefer long-lived hosts. A directory that predates it ignores the byte
//!   after the header and answers the first version, which a new client still reads; an old
//!   client sends no such byte and gets the first version.
//!
//! A client sizes what it reads to the pool it was promised: it reads the count first, refuses
//! more hosts than it asked for at most, and then reads no more than that many descriptors of
//! at most [`MAX_DESCRIPTOR_LEN`] each ([`pool_body_max`]). Descriptors travel signed: the
//! directory cannot forge one, and clients verify each themselves.

use crate::{
    descriptor::MAX_DESCRIPTOR_LEN,
    reader::{ReadError, Reader, put_lp32},
};

/// Bytes of a pool answer's header: the status and the count.
pub const POOL_HEADER_LEN: usize = 1 + 4;
/// Bytes of a refusal: the status and the code.
pub const REFUSAL_LEN: usize = 2;
/// The byte after a `POOL` header that asks for the second version of the answer, and that
/// answer's status.
pub const POOL_V2: u8 = 2;
/// Bytes of a second-version entry's head: `first_seen` and the length.
const V2_ENTRY_HEAD: usize = 8 + 4;

/// Which answer to a pool request this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolVersion {
    /// Descriptors only.
    V1,
    /// Descriptors with when the directory first saw each host.
    V2,
}

/// A host in a pool answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolEntry<'a> {
    /// Its signed descriptor (unverified).
    pub signed: &'a [u8],
    /// When the directory first admitted it (Unix seconds), if the answer says.
    pub first_seen: Option<u64>,
}

/// Why the directory refused a request. Open: codes this version does not know still parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal(pub u8);

impl Refusal {
    /// The descriptor does not parse, or its signature does not verify.
    pub const INVALID: Refusal = Refusal(1);
    /// The directory holds a descriptor of this host at least as new (a replay).
    pub const STALE: Refusal = Refusal(2);
    /// Published too far in the future.
    pub const FROM_THE_FUTURE: Refusal = Refusal(3);
    /// The directory is full.
    pub const FULL: Refusal = Refusal(4);
    /// The directory cannot store it now (its disk).
    pub const UNAVAILABLE: Refusal = Refusal(5);
    /// The request is of an unknown kind.
    pub const UNKNOWN_REQUEST: Refusal = Refusal(6);
    /// Too many requests at once, or from this source: try later.
    pub const BUSY: Refusal = Refusal(7);
    /// The descriptor names an operator whose certificate does not verify for this host
    /// ([`crate::family::operator_of`]).
    pub const BAD_OPERATOR_CERTIFICATE: Refusal = Refusal(8);
    /// The directory admits this host by neither its allow-list nor an invitation.
    pub const NOT_ADMITTED: Refusal = Refusal(9);
    /// No proof of work, or too few bits of it ([`crate::family::check_pow`]).
    pub const PROOF_OF_WORK: Refusal = Refusal(10);
    /// The directory could not reach the host at its published address, with its published
    /// certificate.
    pub const UNREACHABLE: Refusal = Refusal(11);
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match *self {
            Refusal::INVALID => "invalid descriptor",
            Refusal::STALE => "stale descriptor (the directory has one at least as new)",
            Refusal::FROM_THE_FUTURE => "descriptor published in the future",
            Refusal::FULL => "the directory is full",
            Refusal::UNAVAILABLE => "the directory cannot store descriptors now",
            Refusal::UNKNOWN_REQUEST => "unknown request",
            Refusal::BUSY => "the directory is busy",
            Refusal::BAD_OPERATOR_CERTIFICATE => "the operator's certificate does not verify",
            Refusal::NOT_ADMITTED => "not admitted (neither allowed nor invited)",
            Refusal::PROOF_OF_WORK => "no proof of work, or too little",
            Refusal::UNREACHABLE => "unreachable at the published address and certificate",
            Refusal(code) => return write!(f, "refusal code {code}"),
        };
        f.write_str(text)
    }
}

/// Why an answer could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The directory refused.
    #[error("the directory refused: {0}")]
    Refused(Refusal),
    /// It does not parse.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// More hosts than the client takes.
    #[error("a pool of {count} hosts; this client takes at most {max}")]
    TooManyHosts {
        /// What the answer announced.
        count: usize,
        /// The client's maximum.
        max: usize,
    },
}

/// The answer to a publication.
pub fn encode_publish_answer(result: Result<(), Refusal>) -> Vec<u8> {
    match result {
        Ok(()) => vec![0],
        Err(refusal) => vec![1, refusal.0],
    }
}

/// Reads the answer to a publication.
pub fn decode_publish_answer(bytes: &[u8]) -> Result<(), AnswerError> {
    let mut r = Reader::new(bytes);
    let answer = match r.take_u8()? {
        0 => Ok(()),
        1 => Err(AnswerError::Refused(Refusal(r.take_u8()?))),
        _ => Err(ReadError::Malformed("unknown status").into()),
    };
    r.should_be_exhausted()?;
    answer
}

/// A refusal of any request.
pub fn encode_refusal(refusal: Refusal) -> Vec<u8> {
    encode_publish_answer(Err(refusal))
}

/// The answer to a pool request.
pub fn encode_pool<'a>(descriptors: impl ExactSizeIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = vec![0];
    // The directory holds far fewer than 2^32 hosts.
    out.extend(
        u32::try_from(descriptors.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for signed in descriptors {
        put_lp32(&mut out, signed);
    }
    out
}

/// The second version of the answer to a pool request: each descriptor with its host's
/// `first_seen`.
pub fn encode_pool_v2<'a>(entries: impl ExactSizeIterator<Item = (&'a [u8], u64)>) -> Vec<u8> {
    let mut out = vec![POOL_V2];
    out.extend(
        u32::try_from(entries.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    for (signed, first_seen) in entries {
        out.extend(first_seen.to_be_bytes());
        put_lp32(&mut out, signed);
    }
    out
}

/// Reads the first bytes of a pool answer: the number of hosts that follow (at most
/// `max_hosts`), or the refusal. `head` holds [`POOL_HEADER_LEN`] bytes, or
/// [`REFUSAL_LEN`] if the answer is a refusal. First version only; see
/// [`decode_pool_header_versioned`].
pub fn decode_pool_header(head: &[u8], max_hosts: usize) -> Result<usize, AnswerError> {
    match decode_pool_header_versioned(head, max_hosts)? {
        (PoolVersion::V1, count) => Ok(count),
        (PoolVersion::V2, _) => Err(ReadError::Malformed("unknown status").into()),
    }
}

/// [`decode_pool_header`] for either version of the answer.
pub fn decode_pool_header_versioned(
    head: &[u8],
    max_hosts: usize,
) -> Result<(PoolVersion, usize), AnswerError> {
    let mut r = Reader::new(head);
    let count = |r: &mut Reader<'_>| {
        usize::try_from(r.take_u32()?).map_err(|_| ReadError::Malformed("count"))
    };
    let (version, count) = match r.take_u8()? {
        0 => (PoolVersion::V1, count(&mut r)?),
        POOL_V2 => (PoolVersion::V2, count(&mut r)?),
        1 => {
            let refusal = Refusal(r.take_u8()?);
            r.should_be_exhausted()?;
            return Err(AnswerError::Refused(refusal));
        }
        _ => return Err(ReadError::Malformed("unknown status").into()),
    };
    r.should_be_exhausted()?;
    if count > max_hosts {
        return Err(AnswerError::TooManyHosts {
            count,
            max: max_hosts,
        });
    }
    Ok((version, count))
}

/// The most bytes that may follow the header of an answer of `count` hosts.
pub fn pool_body_max(count: usize) -> usize {
    count.saturating_mul(4 + MAX_DESCRIPTOR_LEN)
}

/// [`pool_body_max`] for either version.
pub fn pool_body_max_versioned(version: PoolVersion, count: usize) -> usize {
    match version {
        PoolVersion::V1 => pool_body_max(count),
        PoolVersion::V2 => count.saturating_mul(V2_ENTRY_HEAD + MAX_DESCRIPTOR_LEN),
    }
}

/// Reads the entries after the header of an answer of either version.
pub fn decode_pool_body_versioned(
    body: &[u8],
    version: PoolVersion,
    count: usize,
) -> Result<Vec<PoolEntry<'_>>, ReadError> {
    let max = pool_body_max_versioned(version, count);
    if body.len() > max {
        return Err(ReadError::ExtraBytes(body.len() - max));
    }
    let mut r = Reader::new(body);
    let pool = (0..count)
        .map(|_| {
            let first_seen = match version {
                PoolVersion::V1 => None,
                PoolVersion::V2 => Some(r.take_u64()?),
            };
            let signed = r.take_lp32(MAX_DESCRIPTOR_LEN)?;
            Ok(PoolEntry { signed, first_seen })
        })
        .collect::<Result<Vec<_>, ReadError>>()?;
    r.should_be_exhausted()?;
    Ok(pool)
}

/// Reads the descriptors after the header of an answer of `count` hosts.
pub fn decode_pool_body(body: &[u8], count: usize) -> Result<Vec<&[u8]>, ReadError> {
    if body.len() > pool_body_max(count) {
        return Err(ReadError::ExtraBytes(body.len() - pool_body_max(count)));
    }
    let mut r = Reader::new(body);
    let pool = (0..count)
        .map(|_| r.take_lp32(MAX_DESCRIPTOR_LEN))
        .collect::<Result<Vec<_>, _>>()?;
    r.should_be_exhausted()?;
    Ok(pool)
}

/// Reads a whole pool answer of at most `max_hosts` hosts.
pub fn decode_pool(answer: &[u8], max_hosts: usize) -> Result<Vec<&[u8]>, AnswerError> {
    let refused = answer.first() == Some(&1);
    let split = if refused {
        REFUSAL_LEN
    } else {
        POOL_HEADER_LEN
    };
    let (head, body) = answer.split_at(split.min(answer.len()));
    if refused && !body.is_empty() {
        return Err(ReadError::ExtraBytes(body.len()).into());
    }
    let count = decode_pool_header(head, max_hosts)?;
    Ok(decode_pool_body(body, count)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_round_trip_and_are_sized_to_the_pool() {
        let descriptors: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 10 + usize::from(i)]).collect();
        let answer = encode_pool(descriptors.iter().map(Vec::as_slice));
        // Byte-level vector: status, count, then each descriptor with its length.
        assert_eq!(&answer[..9], &[0, 0, 0, 0, 3, 0, 0, 0, 10]);
        let pool = decode_pool(&answer, 3).unwrap();
        assert_eq!(
            pool,
            descriptors.iter().map(Vec::as_slice).collect::<Vec<_>>()
        );
        assert_eq!(
            decode_pool(&answer, 2),
            Err(AnswerError::TooManyHosts { count: 3, max: 2 })
        );
        assert!(decode_pool(&answer[..answer.len() - 1], 3).is_err());
        assert!(decode_pool(&[answer.clone(), vec![0]].concat(), 3).is_err());
        // A count of 2^32 - 1 hosts is refused from its five bytes, before any is read.
        assert!(matches!(
            decode_pool_header(&[0, 0xff, 0xff, 0xff, 0xff], 10_000),
            Err(AnswerError::TooManyHosts { .. })
        ));
        assert_eq!(
            decode_pool(&encode_refusal(Refusal::BUSY), 5),
            Err(AnswerError::Refused(Refusal::BUSY))
        );
        // A refusal is all of its answer (as a publication's answer is).
        let mut junk = encode_refusal(Refusal::BUSY);
        junk.push(0);
        assert_eq!(
            decode_pool(&junk, 5),
            Err(AnswerError::Read(ReadError::ExtraBytes(1)))
        );
        assert_eq!(pool_body_max(2), 2 * (4 + MAX_DESCRIPTOR_LEN));
        assert!(decode_pool(&[], 5).is_err());
    }

    #[test]
    fn second_version_answers_carry_first_seen() {
        let descriptors: Vec<Vec<u8>> = (0..2u8).map(|i| vec![i; 5]).collect();
        let answer = encode_pool_v2(
            descriptors
                .iter()
                .zip([10u64, 20])
                .map(|(d, t)| (d.as_slice(), t)),
        );
        assert_eq!(&answer[..5], &[2, 0, 0, 0, 2]);
        let (version, count) = decode_pool_header_versioned(&answer[..5], 2).unwrap();
        assert_eq!((version, count), (PoolVersion::V2, 2));
        let pool = decode_pool_body_versioned(&answer[5..], version, count).unwrap();
        assert_eq!(pool[1].signed, &[1; 5]);
        assert_eq!(pool[1].first_seen, Some(20));
        // A first-version reader refuses it rather than misreading it.
        assert!(decode_pool(&answer, 2).is_err());
        assert!(decode_pool_body_versioned(&answer[5..answer.len() - 1], version, 2).is_err());
        // A first-version answer reads the same through the versioned functions.
        let v1 = encode_pool(descriptors.iter().map(Vec::as_slice));
        let (version, count) = decode_pool_header_versioned(&v1[..5], 2).unwrap();
        let pool = decode_pool_body_versioned(&v1[5..], version, count).unwrap();
        assert_eq!((pool[0].signed, pool[0].first_seen), (&[0u8; 5][..], None));
        assert_eq!(
            pool_body_max_versioned(PoolVersion::V2, 3),
            3 * (12 + MAX_DESCRIPTOR_LEN)
        );
    }

    #[test]
    fn publish_answers_round_trip() {
        assert_eq!(
            decode_publish_answer(&encode_publish_answer(Ok(()))),
            Ok(())
        );
        assert_eq!(
            decode_publish_answer(&encode_publish_answer(Err(Refusal::STALE))),
            Err(AnswerError::Refused(Refusal::STALE))
        );
        assert_eq!(Refusal(200).to_string(), "refusal code 200");
        assert!(decode_publish_answer(&[2]).is_err());
        assert!(decode_publish_answer(&[0, 0]).is_err());
    }
}
