//! P4 and P7 against a live host process, frame by frame on its QUIC streams: a frame
//! tampered at every byte position, a replayed, a reordered and a foreign-circuit frame are
//! each refused and counted while the session goes on; a stream cut in the middle of a frame
//! ends only its session, with a report; another session on the same host keeps working
//! throughout; and a designer that pins the wrong certificate never reaches the host.
//!
//! The test plays the designer of one-hop sessions (the hop's previous and next neighbour),
//! with frames just large enough for the hop's reports.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{net::SocketAddr, time::Duration};

use mixnn_designer::local_cluster::LocalCluster;
use mixnn_wire::{
    frame::Op,
    report::{Neighbour, Report},
};

mod common;

use common::one_hop::{FRAME_LEN, OneHop as Session};

#[test]
fn tampered_replayed_reordered_foreign_and_cut_frames_are_refused_and_counted() {
    let cluster = LocalCluster::start(env!("CARGO_BIN_EXE_mixnn").as_ref(), 1).unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rejected = runtime.block_on(async {
        let (endpoint, mut pool) = common::endpoint_and_pool(&cluster).await;
        let host = pool.pop().unwrap();

        // A designer pinning another certificate never gets a connection.
        let addr: SocketAddr = host.descriptor.address.parse().unwrap();
        let mut wrong = host.descriptor.fingerprint;
        wrong[0] ^= 1;
        assert!(endpoint.connect(addr, wrong).await.is_err());

        let mut bystander = Session::open(&endpoint, &host).await;
        let mut s = Session::open(&endpoint, &host).await;
        let mut rejected = 0;

        // Every byte position of a frame, flipped: each refused; the first refusal is
        // reported to the designer through the other end; the intact frame still passes.
        let frame = s.cover();
        for at in 0..FRAME_LEN {
            let mut bad = frame.clone();
            bad[at] ^= 0x40;
            s.send(&bad).await;
            rejected += 1;
        }
        let Report::Failure(why) = s.report().await else {
            panic!("no report of the dropped frame")
        };
        assert!(why.contains("dropped a frame"), "{why}");
        s.relays(&frame).await;

        // The same frame again (a replay).
        s.send(&frame).await;
        rejected += 1;
        // Two frames in the wrong order: the later is refused, then both pass in order.
        let (second, third) = (s.cover(), s.cover());
        s.send(&third).await;
        rejected += 1;
        s.relays(&second).await;
        s.relays(&third).await;
        // A frame of another session's link (an unknown circuit on this one).
        let foreign = bystander.cover();
        s.send(&foreign).await;
        rejected += 1;
        // The bystander's own session is untouched: its frame still passes on its link.
        bystander.relays(&foreign).await;

        // A frame with a byte too many, then the end of the stream: the stray byte is a
        // frame cut short, so the link broke; the hop says so and ends this session only.
        let mut long = s.cover();
        long.push(0);
        s.send(&long).await;
        assert_eq!(s.receive().await.op, Op::COVER);
        s.first.finish().unwrap();
        let report = s.report().await;
        assert_eq!(
            report,
            Report::LinkLost(Neighbour::Prev),
            "no report of the broken link"
        );

        let after = bystander.cover();
        bystander.relays(&after).await;
        rejected
    });
    std::thread::sleep(Duration::from_millis(1500));
    let stats = cluster.host_stats(0).unwrap();
    assert_eq!(stats.frames_rejected, rejected, "{stats:?}");
    assert_eq!(stats.sessions_failed, 1, "{stats:?}");
    assert_eq!(stats.setups_accepted, 2, "{stats:?}");
    // Every frame that opened was handled: 4 from the attacked session, 2 from the other.
    assert_eq!(stats.frames_processed, 6, "{stats:?}");
    cluster.shutdown().unwrap();
}
