//! The directory as a service over pinned QUIC: hosts publish signed descriptors, a forged one
//! is refused, designers fetch the pool, and a restarted directory serves the same pool from
//! its state file.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::cast_possible_truncation
)]

use std::{collections::BTreeMap, net::SocketAddr};

use mixnn_host::{
    daemon::unix_now,
    directory_service::{DirectoryOptions, DirectoryServer, ReachabilityConfig},
    keys::HostKeys,
};
use mixnn_transport::{
    Endpoint, TlsIdentity,
    directory_client::{self, DirectoryClientError},
};
use mixnn_wire::{
    descriptor::{self, Descriptor},
    directory::AnswerError,
};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

fn signed(keys: &HostKeys, port: u16) -> Vec<u8> {
    keys.identity
        .sign(Descriptor {
            identity: [0; 32],
            address: format!("127.0.0.1:{port}"),
            onion_key: keys.onion_public().unwrap().der().to_vec(),
            fingerprint: keys.tls.fingerprint(),
            published_at: unix_now(),
            metadata: BTreeMap::from([("region".to_owned(), "test".to_owned())]),
        })
        .unwrap()
}

#[tokio::test]
async fn the_pool_survives_a_restart_and_forged_descriptors_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let identity = TlsIdentity::generate().unwrap();
    let start = |identity: TlsIdentity| {
        // The hosts are descriptors only (nothing answers at their addresses): no probes here
        // (tests/sybil.rs has them).
        let options = DirectoryOptions {
            reachability: ReachabilityConfig::disabled(),
            ..DirectoryOptions::default()
        };
        let server =
            DirectoryServer::bind_with(loopback(), identity, state.clone(), 300, options).unwrap();
        let (addr, fp) = (server.local_addr().unwrap(), server.fingerprint());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        (addr, fp, stop, task)
    };
    let (addr, fp, stop, task) = start(identity.clone());
    let client = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();

    let hosts: Vec<HostKeys> = (0..3).map(|_| HostKeys::generate().unwrap()).collect();
    let descriptors: Vec<Vec<u8>> = (0..3).map(|i| signed(&hosts[i], 7000 + i as u16)).collect();
    for d in &descriptors {
        directory_client::publish(&client, addr, fp, d)
            .await
            .unwrap();
    }
    // A descriptor altered after signing (one byte of its body) is refused.
    let mut forged = descriptors[0].clone();
    let at = forged.len() - 60;
    forged[at] ^= 1;
    let refused = directory_client::publish(&client, addr, fp, &forged).await;
    assert!(
        matches!(
            refused,
            Err(DirectoryClientError::Answer(AnswerError::Refused(_)))
        ),
        "{refused:?}"
    );
    // So is a replay of a descriptor the directory already holds.
    let replayed = directory_client::publish(&client, addr, fp, &descriptors[1]).await;
    assert!(
        matches!(
            replayed,
            Err(DirectoryClientError::Answer(AnswerError::Refused(_)))
        ),
        "{replayed:?}"
    );

    let pool = directory_client::fetch_pool(&client, addr, fp, 3)
        .await
        .unwrap();
    assert_eq!(pool.len(), 3);
    // A client that takes two hosts at most refuses a pool of three from its count.
    let too_many = directory_client::fetch_pool(&client, addr, fp, 2).await;
    assert!(
        matches!(
            too_many,
            Err(DirectoryClientError::Answer(AnswerError::TooManyHosts {
                count: 3,
                max: 2
            }))
        ),
        "{too_many:?}"
    );
    let mut addresses: Vec<String> = pool
        .iter()
        .map(|d| descriptor::verify(d).unwrap().address)
        .collect();
    addresses.sort();
    assert_eq!(
        addresses,
        ["127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002"]
    );

    // A client pinning another certificate refuses the directory.
    assert!(
        directory_client::fetch_pool(&client, addr, [0; 32], 3)
            .await
            .is_err()
    );

    // Restart: the same pool, byte for byte, from the state file.
    stop.send(()).unwrap();
    task.await.unwrap();
    let (addr, fp, stop, task) = start(identity);
    let mut again = directory_client::fetch_pool(&client, addr, fp, 3)
        .await
        .unwrap();
    let mut before = pool;
    again.sort();
    before.sort();
    assert_eq!(again, before);
    stop.send(()).unwrap();
    task.await.unwrap();
}

/// Serves every request with `answer`, then `flood` bytes of garbage, as a hostile directory.
async fn hostile_directory(answer: Vec<u8>, flood: usize) -> (SocketAddr, [u8; 32]) {
    let server = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
    let (addr, fp) = (server.local_addr().unwrap(), server.fingerprint());
    tokio::spawn(async move {
        while let Some(incoming) = server.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok((connection, _)) = incoming.handshake().await else {
                    return;
                };
                while let Ok((mut send, _recv)) = connection.accept_bi().await {
                    let _ = send.write_all(&answer).await;
                    let chunk = vec![0x5a; 1 << 20];
                    for _ in 0..flood.div_ceil(chunk.len()) {
                        if send.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    let _ = send.finish();
                }
            });
        }
    });
    (addr, fp)
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb / 1024.0
}

#[tokio::test]
async fn a_hostile_directorys_answer_is_read_no_further_than_the_pool_the_client_takes() {
    let client = Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap();
    let before = peak_rss_mib();
    // A pool of four billion hosts: refused from the five bytes that announce it.
    let (addr, fp) = hostile_directory(vec![0, 0xff, 0xff, 0xff, 0xff], 256 << 20).await;
    let answer = directory_client::fetch_pool(&client, addr, fp, 100).await;
    assert!(
        matches!(
            answer,
            Err(DirectoryClientError::Answer(
                AnswerError::TooManyHosts { .. }
            ))
        ),
        "{answer:?}"
    );
    // Three hosts announced, then 256 MiB: the client stops after three descriptors' worth.
    let (addr, fp) = hostile_directory(vec![0, 0, 0, 0, 3], 256 << 20).await;
    let answer = directory_client::fetch_pool(&client, addr, fp, 100).await;
    assert!(
        matches!(answer, Err(DirectoryClientError::Stream { .. })),
        "{answer:?}"
    );
    let growth = peak_rss_mib() - before;
    assert!(
        growth < 16.0,
        "the client's peak memory grew by {growth:.1} MiB"
    );
}
