//! The UDP socket under every endpoint: quinn's own, except that it never hands the kernel a
//! segmentation-offload (GSO) batch larger than one UDP datagram may be.
//!
//! quinn batches up to ten packets of the path's MTU into one `sendmsg` with `UDP_SEGMENT`.
//! Linux refuses a batch whose total exceeds an IP packet (`EMSGSIZE`), and quinn-udp takes
//! `EMSGSIZE` for a failed MTU probe and drops the batch without a word. Once MTU discovery
//! has raised a link's MTU past about 6.5 KB (to 65,000 on loopback: [`crate::MAX_DATAGRAM`]),
//! every batch of a bulk transfer (an op=0 onion of megabytes, an export) was lost: measured
//! here, half the packets of a 2.3 MB setup message, which then took 140-250 ms instead of
//! 10 ms. A frame of training (one packet) was never batched, so only bulk transfers paid.
//!
//! It also tells quinn how many segments a received buffer may hold so that quinn's receive
//! buffer fits what the kernel can deliver: quinn sizes it as the largest datagram times the
//! GRO segments (64) times its batch (32), 133 MB per endpoint at a 65,000-byte datagram,
//! zeroed on every bind (300 ms where the allocator had to clear reused memory). A coalesced
//! (GRO) datagram never exceeds 64 KB, so a buffer of two of our largest datagrams holds one.

use std::{
    fmt,
    io::{self, IoSliceMut},
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use quinn::{AsyncUdpSocket, UdpPoller, udp::RecvMeta, udp::Transmit};

/// The most bytes one `sendmsg` may carry over IPv4 or IPv6: an IPv4 packet's 65,535 less
/// its 20-byte header and UDP's 8.
pub const MAX_SEND_BYTES: usize = 65_507;

/// The most bytes the kernel hands over as one received (GRO-coalesced) datagram.
const MAX_RECEIVE_BYTES: usize = 65_535;

/// quinn's socket for the tokio runtime, its GSO batches split to fit [`MAX_SEND_BYTES`].
pub(crate) struct BoundedGso {
    inner: Arc<dyn AsyncUdpSocket>,
    /// Segments of the largest datagram that a received buffer must hold.
    receive_segments: usize,
}

impl BoundedGso {
    /// Wraps `socket` as quinn's tokio runtime would, then bounds its batches; `max_datagram`
    /// is the endpoint's largest UDP payload (quinn's `max_udp_payload_size`).
    pub(crate) fn wrap(
        socket: std::net::UdpSocket,
        max_datagram: u16,
    ) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        let inner = quinn::Runtime::wrap_udp_socket(&quinn::TokioRuntime, socket)?;
        let receive_segments = MAX_RECEIVE_BYTES
            .div_ceil(usize::from(max_datagram).max(1))
            .min(inner.max_receive_segments())
            .max(1);
        Ok(Arc::new(BoundedGso {
            inner,
            receive_segments,
        }))
    }
}

impl fmt::Debug for BoundedGso {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedGso")
            .field("inner", &self.inner)
            .finish()
    }
}

/// The pieces `transmit` goes out as: whole segments, each piece at most [`MAX_SEND_BYTES`]
/// (a single segment is sent as a plain datagram).
fn pieces<'a>(transmit: &Transmit<'a>) -> impl Iterator<Item = Transmit<'a>> {
    let segment = transmit
        .segment_size
        .filter(|&s| s > 0)
        .unwrap_or(transmit.contents.len().max(1));
    let per_piece = (MAX_SEND_BYTES / segment).max(1) * segment;
    let (destination, ecn, src_ip) = (transmit.destination, transmit.ecn, transmit.src_ip);
    transmit
        .contents
        .chunks(per_piece)
        .map(move |contents| Transmit {
            destination,
            ecn,
            contents,
            segment_size: (contents.len() > segment).then_some(segment),
            src_ip,
        })
}

impl AsyncUdpSocket for BoundedGso {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Arc::clone(&self.inner).create_io_poller()
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if transmit.contents.len() <= MAX_SEND_BYTES {
            return self.inner.try_send(transmit);
        }
        // A piece that would block fails the whole transmit, and quinn sends it all again
        // when the socket is writable: the pieces already sent arrive twice, and the peer
        // drops the duplicates by packet number (cheaper than a loss, which would shrink the
        // congestion window).
        for piece in pieces(transmit) {
            self.inner.try_send(&piece)?;
        }
        Ok(())
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        self.inner.poll_recv(cx, bufs, meta)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn max_transmit_segments(&self) -> usize {
        self.inner.max_transmit_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.receive_segments
    }

    fn may_fragment(&self) -> bool {
        self.inner.may_fragment()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transmit(contents: &[u8], segment_size: Option<usize>) -> Transmit<'_> {
        Transmit {
            destination: SocketAddr::from(([127, 0, 0, 1], 9)),
            ecn: None,
            contents,
            segment_size,
            src_ip: None,
        }
    }

    /// (bytes, segment size) of each piece.
    fn shape(contents: &[u8], segment: Option<usize>) -> Vec<(usize, Option<usize>)> {
        pieces(&transmit(contents, segment))
            .map(|p| (p.contents.len(), p.segment_size))
            .collect()
    }

    #[test]
    fn batches_are_split_on_segment_boundaries_within_a_datagram() {
        let bytes = vec![0u8; 10 * 9000];
        // Seven 9,000-byte segments fit 65,507 bytes; the last three go as a second batch.
        assert_eq!(
            shape(&bytes, Some(9000)),
            [(63_000, Some(9000)), (27_000, Some(9000))]
        );
        // Segments past half the bound go one by one, as plain datagrams.
        let bytes = vec![0u8; 2 * 65_000 - 100];
        assert_eq!(
            shape(&bytes, Some(65_000)),
            [(65_000, None), (64_900, None)]
        );
        let bytes: Vec<u8> = (0..200_000u32).map(|i| i.to_le_bytes()[0]).collect();
        // Small segments stay batched (54 to a piece), and every byte is sent once, in order.
        assert_eq!(shape(&bytes[..70_000], Some(1200))[0], (64_800, Some(1200)));
        let sent: Vec<u8> = pieces(&transmit(&bytes, Some(1200)))
            .flat_map(|p| {
                assert!(p.contents.len() <= MAX_SEND_BYTES);
                p.contents.to_vec()
            })
            .collect();
        assert_eq!(sent, bytes);
    }

    #[test]
    fn a_received_buffer_holds_a_coalesced_datagram_and_no_more() {
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _entered = runtime.enter();
        let wrapped = BoundedGso::wrap(socket, crate::MAX_DATAGRAM).unwrap();
        let segments = wrapped.max_receive_segments();
        // Two 65,000-byte datagrams (one where the kernel does not coalesce), not quinn's 64.
        assert!(segments <= 2, "{segments}");
        assert!(segments == 1 || segments * usize::from(crate::MAX_DATAGRAM) >= MAX_RECEIVE_BYTES);
    }
}
