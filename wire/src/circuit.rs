//! The designer's side of a session, sans IO: it plans every hop's setup (fresh circuit ids,
//! link secrets and keys), builds the op=0 onion, and keeps what it needs afterwards: its two
//! link ends (to the first hop and from the last), and every hop's blob and report keys, to
//! seal labels for the loss hop and to open the reports hops seal for it.

use crate::{
    blob::{self, BlobError, Recipient},
    crypto::{Entropy, Key, OnionPublicKey},
    export::{self, ExportSlot},
    frame::{FrameError, LinkEnd, Side, WireTensor},
    report::Report,
    setup::{
        BuildError, CIRCUIT_ID_LEN, CircuitId, HopLayer, HopSetup, Peer, SetupError, build_onion,
    },
};

/// One hop of a planned cascade.
#[derive(Debug)]
pub struct HopPlan<'a> {
    /// The host (never [`Peer::Designer`]).
    pub host: Peer,
    /// Its onion key.
    pub onion_key: &'a OnionPublicKey,
    /// The layers it runs.
    pub layers: Vec<HopLayer>,
    /// Its role ([`HopSetup::LOSS`], [`HopSetup::TEST_END`]).
    pub flags: u8,
}

/// Session-wide sizes and lifetime.
#[derive(Debug, Clone, Copy)]
pub struct SessionParams {
    /// Unix time (seconds) after which hops may drop the session (each hop's expiry is a
    /// little later, drawn at random).
    pub expires_at: u64,
    /// Length of every frame.
    pub frame_len: u32,
    /// Length of every blob.
    pub blob_len: u32,
}

/// Why a report could not be read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReportError {
    /// No hop's key opens it.
    #[error("a report that no hop of the session sealed")]
    Unknown,
    /// It opened but does not parse.
    #[error("hop {hop} sent a malformed report")]
    Malformed {
        /// The hop (0 is the first).
        hop: usize,
    },
    /// Blob handling failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
}

#[derive(Debug)]
struct HopKeys {
    blob_key: Key,
    designer_key: Key,
}

/// What the designer keeps of a session after building its onion.
#[derive(Debug)]
pub struct DesignerCircuit {
    /// The link to the first hop (the designer is its upstream end).
    pub first: LinkEnd,
    /// The link from the last hop (the designer is its downstream end).
    pub last: LinkEnd,
    hops: Vec<HopKeys>,
    loss_hop: Option<usize>,
    params: SessionParams,
}

/// The most seconds a hop's expiry exceeds the session's.
const EXPIRY_JITTER_S: usize = 300;

/// A uniform draw from `0..n` (`n > 0`), by rejection.
fn below(entropy: &mut impl Entropy, n: usize) -> usize {
    let n = n.max(1) as u64;
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let mut bytes = [0u8; 8];
        entropy.fill(&mut bytes);
        let x = u64::from_be_bytes(bytes);
        if x < zone {
            return usize::try_from(x % n).unwrap_or(0);
        }
    }
}

/// Builds the session: the onion for the first hop and the designer's circuit.
pub fn build(
    plan: Vec<HopPlan<'_>>,
    params: SessionParams,
    entropy: &mut impl Entropy,
) -> Result<(Vec<u8>, DesignerCircuit), BuildError> {
    let n = plan.len();
    if n == 0 {
        return Err(BuildError::EmptyCascade);
    }
    // Link i joins hop i-1 (or the designer) to hop i (or the designer): n + 1 links.
    let links: Vec<(CircuitId, Key)> = (0..=n)
        .map(|_| {
            let mut id = [0u8; CIRCUIT_ID_LEN];
            entropy.fill(&mut id);
            (id, Key::random(entropy))
        })
        .collect();
    let mut keys = Vec::with_capacity(n);
    let mut setups = Vec::with_capacity(n);
    let hosts: Vec<Peer> = plan.iter().map(|h| h.host.clone()).collect();
    let loss_hop = plan.iter().position(|h| h.flags & HopSetup::LOSS != 0);
    for (i, hop) in plan.into_iter().enumerate() {
        let blob_key = Key::random(entropy);
        let designer_key = Key::random(entropy);
        let setup = HopSetup {
            // Each hop its own expiry, so that colluding hops cannot match theirs (P3).
            expires_at: params
                .expires_at
                .saturating_add(u64::try_from(below(entropy, EXPIRY_JITTER_S)).unwrap_or(0)),
            prev: if i == 0 {
                Peer::Designer
            } else {
                hosts[i - 1].clone()
            },
            next: hosts.get(i + 1).cloned().unwrap_or(Peer::Designer),
            circuit_in: links[i].0,
            circuit_out: links[i + 1].0,
            link_in: links[i].1.clone(),
            link_out: links[i + 1].1.clone(),
            blob_key: blob_key.clone(),
            designer_key: designer_key.clone(),
            flags: hop.flags,
            frame_len: params.frame_len,
            blob_len: params.blob_len,
            layers: hop.layers,
        };
        keys.push(HopKeys {
            blob_key,
            designer_key,
        });
        setups.push((hop.onion_key, setup));
    }
    let onion = build_onion(&setups, entropy)?;
    let frame_len = params.frame_len as usize;
    let link = |i: usize, side| {
        LinkEnd::new(links[i].0, &links[i].1, side, frame_len).map_err(|_| BuildError::Invalid {
            hop: i.min(n - 1),
            reason: SetupError::FrameLen(params.frame_len),
        })
    };
    Ok((
        onion,
        DesignerCircuit {
            first: link(0, Side::Upstream)?,
            last: link(n, Side::Downstream)?,
            hops: keys,
            loss_hop,
            params,
        },
    ))
}

impl DesignerCircuit {
    /// Number of hops.
    pub fn len(&self) -> usize {
        self.hops.len()
    }

    /// Whether the cascade has no hop (never: [`build`] refuses it).
    pub fn is_empty(&self) -> bool {
        self.hops.is_empty()
    }

    /// The session's sizes.
    pub fn params(&self) -> SessionParams {
        self.params
    }

    /// A blob of random bytes.
    pub fn random_blob(&self, entropy: &mut impl Entropy) -> Vec<u8> {
        blob::random(self.params.blob_len as usize, entropy)
    }

    /// The blob of a forward frame: the labels sealed for the loss hop, under the layers of
    /// the hops before it; random bytes if no hop computes the loss.
    pub fn label_blob(
        &self,
        labels: &WireTensor,
        entropy: &mut impl Entropy,
    ) -> Result<Vec<u8>, FrameError> {
        let Some(loss) = self.loss_hop else {
            return Ok(self.random_blob(entropy));
        };
        let mut payload = Vec::with_capacity(labels.encoded_len());
        labels.encode_into(&mut payload)?;
        self.sealed_for(loss, &payload, self.params.blob_len as usize, entropy)
    }

    /// The blobs of the EXPORT frames that collect the hops' states ([`crate::export`]):
    /// `parts[i]` slots for hop `i`, and decoys up to a power of two, in random order.
    pub fn export_blobs(
        &self,
        parts: &[usize],
        entropy: &mut impl Entropy,
    ) -> Result<Vec<Vec<u8>>, FrameError> {
        let len = export::blob_len(self.params.frame_len as usize);
        let mut blobs = Vec::new();
        for (hop, &count) in parts.iter().enumerate().take(self.hops.len()) {
            let count = u32::try_from(count).map_err(|_| FrameError::TooLarge(count))?;
            for index in 0..count {
                let slot = ExportSlot { index, count };
                blobs.push(self.sealed_for(hop, &slot.encode(), len, entropy)?);
            }
        }
        // The total says little of the cascade's size once rounded up.
        while !blobs.len().is_power_of_two() {
            blobs.push(blob::random(len, entropy));
        }
        // Fisher-Yates: where a hop's slots fall must not tell it how many come before.
        for i in (1..blobs.len()).rev() {
            blobs.swap(i, below(entropy, i + 1));
        }
        Ok(blobs)
    }

    /// `payload` sealed for `hop` in a blob of `len`, under the layers of the hops before it
    /// and its own (which it removes on arrival).
    fn sealed_for(
        &self,
        hop: usize,
        payload: &[u8],
        len: usize,
        entropy: &mut impl Entropy,
    ) -> Result<Vec<u8>, FrameError> {
        let too_large = |_| FrameError::TooLarge(payload.len());
        let keys = self.hops.get(..=hop).ok_or(FrameError::TooLarge(hop))?;
        let mut blob = blob::seal(
            &keys[hop].designer_key,
            Recipient::Host,
            payload,
            len,
            entropy,
        )
        .map_err(too_large)?;
        for keys in keys.iter().rev() {
            blob::unlayer(&keys.blob_key, &mut blob).map_err(too_large)?;
        }
        Ok(blob)
    }

    /// Opens a report that came from the last hop (sealed by some hop, then layered by
    /// every hop after it). Returns the hop that sealed it.
    pub fn open_from_last(&self, blob: &[u8]) -> Result<(usize, Report), ReportError> {
        self.open_report(blob, (0..self.hops.len()).rev())
    }

    /// Opens a report that came from the first hop (sealed by some hop, then layered by
    /// every hop before it).
    pub fn open_from_first(&self, blob: &[u8]) -> Result<(usize, Report), ReportError> {
        self.open_report(blob, 0..self.hops.len())
    }

    fn open_report(
        &self,
        blob: &[u8],
        order: impl Iterator<Item = usize>,
    ) -> Result<(usize, Report), ReportError> {
        let mut blob = blob.to_vec();
        for i in order {
            let hop = &self.hops[i];
            if let Ok(payload) = blob::open(&hop.designer_key, Recipient::Designer, &blob) {
                let report =
                    Report::decode(&payload).map_err(|_| ReportError::Malformed { hop: i })?;
                return Ok((i, report));
            }
            blob::unlayer(&hop.blob_key, &mut blob)?;
        }
        Err(ReportError::Unknown)
    }
}
