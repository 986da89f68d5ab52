//! A one-hop session the test runs as its designer (the hop's previous and next neighbour),
//! frame by frame on its QUIC streams.

use std::{net::SocketAddr, time::Duration};

use mixnn_designer::pool::Candidate;
use mixnn_host::daemon::unix_now;
use mixnn_transport::Endpoint;
use mixnn_wire::{
    blob::SEAL_OVERHEAD,
    circuit::{self, DesignerCircuit, HopPlan, SessionParams},
    crypto::SystemEntropy,
    frame::{FrameBody, Op, WireTensor},
    report::{MAX_MESSAGE_LEN, Report},
    setup::HopLayer,
    stream::StreamHeader,
};

/// A blob with room for any failure report.
pub const BLOB_LEN: usize = SEAL_OVERHEAD + MAX_MESSAGE_LEN + 16;
/// Frames just large enough for the hop's reports.
pub const FRAME_LEN: usize = BLOB_LEN + 64;

/// The identity layer, as a dummy hop runs it.
pub fn identity() -> HopLayer {
    layer(mixnn_components::IDENTITY, "{}")
}

/// A layer of `component` with `config` as its `layer` settings.
pub fn layer(component: &[u8], config: &str) -> HopLayer {
    HopLayer {
        component: component.to_vec(),
        config: format!(r#"{{"seed":0,"optimizer":{{"lr":0,"momentum":0}},"layer":{config}}}"#)
            .into_bytes(),
        state: Vec::new(),
    }
}

/// A one-hop session.
pub struct OneHop {
    pub circuit: DesignerCircuit,
    pub first: quinn::SendStream,
    pub last: quinn::RecvStream,
    /// The first link's stream back from the hop (the host closes it if it refuses the setup).
    pub first_recv: quinn::RecvStream,
    frame_len: usize,
    _keep: Vec<quinn::Connection>,
    _last_send: quinn::SendStream,
}

impl OneHop {
    /// Sets up an identity hop on `host` with the small frames, and waits for it to be ready.
    pub async fn open(endpoint: &Endpoint, host: &Candidate) -> Self {
        Self::open_with(endpoint, host, identity(), FRAME_LEN).await
    }

    /// Sets up a hop running `layer` with frames of `frame_len`, and waits for it to be ready.
    pub async fn open_with(
        endpoint: &Endpoint,
        host: &Candidate,
        layer: HopLayer,
        frame_len: usize,
    ) -> Self {
        let mut session = Self::start(endpoint, host, layer, frame_len).await;
        assert_eq!(session.report().await, Report::Ready);
        session
    }

    /// Sends the setup and attaches, without waiting.
    pub async fn start(
        endpoint: &Endpoint,
        host: &Candidate,
        layer: HopLayer,
        frame_len: usize,
    ) -> Self {
        let plan = vec![HopPlan {
            host: host.peer(),
            onion_key: &host.onion_key,
            layers: vec![layer],
            flags: 0,
        }];
        let params = SessionParams {
            expires_at: unix_now() + 600,
            frame_len: frame_len as u32,
            blob_len: BLOB_LEN as u32,
        };
        let (onion, circuit) = circuit::build(plan, params, &mut SystemEntropy).unwrap();
        let addr: SocketAddr = host.descriptor.address.parse().unwrap();
        let fp = host.descriptor.fingerprint;
        let a = endpoint.connect(addr, fp).await.unwrap();
        let (mut first, first_recv) = a.open_bi().await.unwrap();
        let len = onion.len() as u32;
        first
            .write_all(&StreamHeader::Setup { len }.encode())
            .await
            .unwrap();
        first.write_all(&onion).await.unwrap();
        let b = endpoint.connect(addr, fp).await.unwrap();
        let (mut last_send, last) = b.open_bi().await.unwrap();
        let attach = StreamHeader::Attach {
            circuit: circuit.last.circuit(),
        };
        last_send.write_all(&attach.encode()).await.unwrap();
        OneHop {
            circuit,
            first,
            last,
            first_recv,
            frame_len,
            _keep: vec![a, b],
            _last_send: last_send,
        }
    }

    /// The next frame out of the hop, towards the designer at the last end.
    pub async fn receive(&mut self) -> FrameBody {
        let mut frame = vec![0u8; self.frame_len];
        tokio::time::timeout(Duration::from_secs(10), self.last.read_exact(&mut frame))
            .await
            .expect("the hop answers")
            .unwrap();
        self.circuit.last.open(&frame).unwrap()
    }

    /// The next report out of the hop.
    pub async fn report(&mut self) -> Report {
        let body = self.receive().await;
        assert_eq!(body.op, Op::REPORT);
        self.circuit.open_from_last(&body.blob).unwrap().1
    }

    /// A cover frame, sealed as the next frame of the first link.
    pub fn cover(&mut self) -> Vec<u8> {
        self.frame(Op::COVER, None)
    }

    /// A frame of `op` carrying `tensor`, sealed as the next frame of the first link.
    pub fn frame(&mut self, op: Op, tensor: Option<WireTensor>) -> Vec<u8> {
        let blob = self.circuit.random_blob(&mut SystemEntropy);
        self.circuit
            .first
            .seal(&FrameBody {
                op,
                tensor,
                blob,
                route: Vec::new(),
            })
            .unwrap()
    }

    /// Sends bytes on the first link.
    pub async fn send(&mut self, bytes: &[u8]) {
        self.first.write_all(bytes).await.unwrap();
    }

    /// Sends `frame` and expects it through the hop.
    pub async fn relays(&mut self, frame: &[u8]) {
        self.send(frame).await;
        assert_eq!(self.receive().await.op, Op::COVER);
    }
}
