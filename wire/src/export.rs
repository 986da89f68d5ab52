//! Collecting the hops' states without telling any hop where it stands (P2).
//!
//! A hop that sent its state as extra frames would show every later hop how much state lies
//! upstream, hence something of its position. Instead the designer sends a number of EXPORT
//! frames that all look alike: each blob fills its frame and is sealed, under the layers of
//! the hops before it, for the hop whose part of state it asks for ([`ExportSlot`]), or is a
//! decoy that no hop can open. Every hop tries every EXPORT blob with its key, puts its part
//! (sealed for the designer, to the same length) into those that open, and passes every frame
//! on. So every hop sees the same frames whatever its place, and the designer opens the parts
//! that come out of the last hop ([`crate::circuit::DesignerCircuit::open_from_last`]).

use crate::{
    blob::SEAL_OVERHEAD,
    frame::max_blob_len,
    reader::{ReadError, Reader},
    report::STATE_OVERHEAD,
};

/// What an export blob asks of the hop it is sealed for: part `index` of `count` of its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportSlot {
    /// Which part.
    pub index: u32,
    /// How many parts the designer expects from this hop.
    pub count: u32,
}

impl ExportSlot {
    /// The bytes sealed in the blob.
    pub fn encode(&self) -> [u8; 8] {
        let mut out = [0u8; 8];
        out[..4].copy_from_slice(&self.index.to_be_bytes());
        out[4..].copy_from_slice(&self.count.to_be_bytes());
        out
    }

    /// Parses an opened slot.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReadError> {
        let mut r = Reader::new(bytes);
        let slot = ExportSlot {
            index: r.take_u32()?,
            count: r.take_u32()?,
        };
        r.should_be_exhausted()?;
        if slot.index >= slot.count {
            return Err(ReadError::Malformed("export slot index out of range"));
        }
        Ok(slot)
    }
}

/// Length of the blob of an export frame: all that a frame of `frame_len` holds.
pub fn blob_len(frame_len: usize) -> usize {
    max_blob_len(frame_len)
}

/// Bytes of state one export frame carries.
pub fn part_len(frame_len: usize) -> usize {
    blob_len(frame_len).saturating_sub(SEAL_OVERHEAD + STATE_OVERHEAD)
}

/// Export frames a hop needs for `state_len` bytes of state (at least one, even for none).
pub fn slots_for(state_len: usize, frame_len: usize) -> usize {
    state_len.div_ceil(part_len(frame_len).max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        blob::{self, Recipient},
        crypto::{Key, tests::seeded},
        report::Report,
    };

    #[test]
    fn a_full_part_fills_an_export_blob_exactly() {
        let mut entropy = seeded(3);
        let key = Key::random(&mut entropy);
        for frame_len in [256, 1024, 200_000] {
            let report = Report::State {
                index: 0,
                count: 1,
                bytes: vec![7; part_len(frame_len)],
            };
            let payload = report.encode().unwrap();
            let sealed = blob::seal(
                &key,
                Recipient::Designer,
                &payload,
                blob_len(frame_len),
                &mut entropy,
            )
            .unwrap();
            assert_eq!(sealed.len(), blob_len(frame_len));
            let too_big = [payload, vec![0]].concat();
            assert!(
                blob::seal(
                    &key,
                    Recipient::Designer,
                    &too_big,
                    blob_len(frame_len),
                    &mut entropy
                )
                .is_err()
            );
        }
        assert_eq!(slots_for(0, 1024), 1);
        assert_eq!(slots_for(part_len(1024), 1024), 1);
        assert_eq!(slots_for(part_len(1024) + 1, 1024), 2);
    }

    #[test]
    fn slots_round_trip_and_bad_ones_are_refused() {
        let slot = ExportSlot { index: 2, count: 3 };
        assert_eq!(ExportSlot::decode(&slot.encode()).unwrap(), slot);
        assert!(ExportSlot::decode(&ExportSlot { index: 3, count: 3 }.encode()).is_err());
        assert!(ExportSlot::decode(&[0; 7]).is_err());
        assert!(ExportSlot::decode(&[0; 9]).is_err());
    }
}
