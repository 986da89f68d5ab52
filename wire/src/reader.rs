//! One bounded reader for untrusted bytes (after arti's `tor-bytes`): every read returns a
//! `Result`, never panics, and no length read from the peer sizes an allocation beyond what
//! is actually there.

/// Why bytes could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The input ended early.
    #[error("truncated: needed {needed} more bytes")]
    Truncated {
        /// Bytes missing.
        needed: usize,
    },
    /// A field has a value the format does not allow.
    #[error("malformed: {0}")]
    Malformed(&'static str),
    /// Bytes remain after a message that should have used them all.
    #[error("{0} unexpected trailing bytes")]
    ExtraBytes(usize),
}

/// Reads fields from the front of a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ReadError> {
        if n > self.bytes.len() {
            return Err(ReadError::Truncated {
                needed: n - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// The next `N` bytes as an array.
    pub fn take_array<const N: usize>(&mut self) -> Result<[u8; N], ReadError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// A byte.
    pub fn take_u8(&mut self) -> Result<u8, ReadError> {
        Ok(self.take_array::<1>()?[0])
    }

    /// A big-endian `u16`.
    pub fn take_u16(&mut self) -> Result<u16, ReadError> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    /// A big-endian `u32`.
    pub fn take_u32(&mut self) -> Result<u32, ReadError> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    /// A big-endian `u64`.
    pub fn take_u64(&mut self) -> Result<u64, ReadError> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    /// A field prefixed by its `u32` length, at most `max` bytes.
    pub fn take_lp32(&mut self, max: usize) -> Result<&'a [u8], ReadError> {
        let len = usize::try_from(self.take_u32()?).map_err(|_| ReadError::Malformed("length"))?;
        if len > max {
            return Err(ReadError::Malformed("field longer than its maximum"));
        }
        self.take(len)
    }

    /// Everything left.
    pub fn take_rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }

    /// Fails unless every byte was read.
    pub fn should_be_exhausted(&self) -> Result<(), ReadError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(ReadError::ExtraBytes(n)),
        }
    }
}

/// Appends a field prefixed by its `u32` length.
pub fn put_lp32(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded far below 4 GiB by the callers' maxima.
    out.extend(u32::try_from(field.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(field);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_and_bounds() {
        let mut bytes = vec![7, 0, 1, 0, 0, 0, 2];
        put_lp32(&mut bytes, b"hey");
        let mut r = Reader::new(&bytes);
        assert_eq!(r.take_u8().unwrap(), 7);
        assert_eq!(r.take_u16().unwrap(), 1);
        assert_eq!(r.take_u32().unwrap(), 2);
        assert_eq!(r.take_lp32(3).unwrap(), b"hey");
        r.should_be_exhausted().unwrap();
        assert_eq!(r.take_u8(), Err(ReadError::Truncated { needed: 1 }));

        let mut long = Vec::new();
        put_lp32(&mut long, b"four");
        assert!(matches!(
            Reader::new(&long).take_lp32(3),
            Err(ReadError::Malformed(_))
        ));
        // A huge announced length with nothing behind it: truncated, no allocation.
        let lying = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(matches!(
            Reader::new(&lying).take_lp32(usize::MAX),
            Err(ReadError::Truncated { .. })
        ));
        assert_eq!(
            Reader::new(&[1, 2]).should_be_exhausted(),
            Err(ReadError::ExtraBytes(2))
        );
    }
}
