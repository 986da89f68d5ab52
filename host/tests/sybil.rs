//! The directory's Sybil resistance over real QUIC on loopback: admission (allow-lists of
//! operators and hosts, invitations, proofs of work), reachability before a host is served and
//! at every re-check, and `first_seen` across restarts. Hosts are endpoints with the host's
//! certificate that complete handshakes (what a probe needs), and one real daemon.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    path::PathBuf,
    time::Duration,
};

use mixnn_host::{
    daemon::{Daemon, HostConfig, unix_now},
    directory::{Admission, Policy},
    directory_service::{DirectoryOptions, DirectoryServer, DirectoryStats, ReachabilityConfig},
    keys::HostKeys,
};
use mixnn_transport::{
    Endpoint, Fingerprint, TlsIdentity,
    directory_client::{self, DirectoryClientError, PoolHost},
    hex_fingerprint,
};
use mixnn_wire::{
    descriptor::{Descriptor, IdentityKey},
    directory::{AnswerError, Refusal},
    family,
};
use tokio::{sync::oneshot, task::JoinHandle};

fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A host that answers handshakes with its own certificate, until dropped.
struct FakeHost {
    keys: HostKeys,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl FakeHost {
    fn start() -> Self {
        let keys = HostKeys::generate().unwrap();
        let endpoint = Endpoint::bind(loopback(), keys.tls.clone()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let task = tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                tokio::spawn(async move {
                    if let Ok((connection, _)) = incoming.handshake().await {
                        let _ = connection.closed().await;
                    }
                });
            }
        });
        FakeHost { keys, addr, task }
    }

    fn identity(&self) -> [u8; 32] {
        self.keys.identity.public().unwrap()
    }

    /// Its descriptor at its address and certificate, with `metadata`.
    fn descriptor(&self, metadata: BTreeMap<String, String>) -> Vec<u8> {
        descriptor_at(&self.keys, self.addr, self.keys.tls.fingerprint(), metadata)
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn descriptor_at(
    keys: &HostKeys,
    addr: SocketAddr,
    fingerprint: Fingerprint,
    metadata: BTreeMap<String, String>,
) -> Vec<u8> {
    keys.identity
        .sign(Descriptor {
            identity: [0; 32],
            address: addr.to_string(),
            onion_key: keys.onion_public().unwrap().der().to_vec(),
            fingerprint,
            published_at: unix_now(),
            metadata,
        })
        .unwrap()
}

fn certified(operator: &IdentityKey, host: [u8; 32]) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            family::OPERATOR.to_owned(),
            family::to_hex(&operator.public().unwrap()),
        ),
        (
            family::OPERATOR_SIG.to_owned(),
            family::to_hex(&family::certify(operator, &host)),
        ),
    ])
}

struct Running {
    addr: SocketAddr,
    fingerprint: Fingerprint,
    stats: std::sync::Arc<mixnn_host::directory_service::DirectoryCounters>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Running {
    fn start(
        tls: TlsIdentity,
        state: PathBuf,
        policy: Policy,
        reachability: ReachabilityConfig,
    ) -> Self {
        let options = DirectoryOptions {
            policy,
            reachability,
            stats_file: None,
        };
        let server = DirectoryServer::bind_with(loopback(), tls, state, 300, options).unwrap();
        let (addr, fingerprint) = (server.local_addr().unwrap(), server.fingerprint());
        let stats = server.counters();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Running {
            addr,
            fingerprint,
            stats,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }

    fn stats(&self) -> DirectoryStats {
        self.stats.snapshot()
    }

    async fn publish(&self, client: &Endpoint, signed: &[u8]) -> Result<(), Refusal> {
        match directory_client::publish(client, self.addr, self.fingerprint, signed).await {
            Ok(()) => Ok(()),
            Err(DirectoryClientError::Answer(AnswerError::Refused(r))) => Err(r),
            Err(e) => panic!("publishing: {e}"),
        }
    }

    async fn pool(&self, client: &Endpoint) -> Vec<PoolHost> {
        directory_client::fetch_pool_entries(client, self.addr, self.fingerprint, 100)
            .await
            .unwrap()
    }

    async fn served(&self, client: &Endpoint) -> BTreeSet<[u8; 32]> {
        self.pool(client)
            .await
            .iter()
            .map(|h| mixnn_wire::descriptor::verify(&h.signed).unwrap().identity)
            .collect()
    }
}

fn quick_probes() -> ReachabilityConfig {
    ReachabilityConfig {
        enabled: true,
        interval_s: 1,
        timeout_s: 2,
        concurrency: 8,
    }
}

fn client() -> Endpoint {
    Endpoint::bind(loopback(), TlsIdentity::generate().unwrap()).unwrap()
}

#[tokio::test]
async fn an_allow_list_admits_listed_operators_and_hosts_only() {
    let dir = tempfile::tempdir().unwrap();
    let operator = IdentityKey::generate().unwrap();
    let (certified_host, listed, stranger, forger) = (
        FakeHost::start(),
        FakeHost::start(),
        FakeHost::start(),
        FakeHost::start(),
    );
    let policy = Policy {
        admission: Admission::AllowList {
            operators: BTreeSet::from([operator.public().unwrap()]),
            hosts: BTreeSet::from([listed.identity()]),
        },
        pow_bits: 0,
    };
    let directory = Running::start(
        TlsIdentity::generate().unwrap(),
        dir.path().join("state.json"),
        policy,
        ReachabilityConfig::default(),
    );
    let client = client();

    let d = certified_host.descriptor(certified(&operator, certified_host.identity()));
    assert_eq!(directory.publish(&client, &d).await, Ok(()));
    assert_eq!(
        directory
            .publish(&client, &listed.descriptor(BTreeMap::new()))
            .await,
        Ok(())
    );
    // Outside the list: refused, and so is a certificate of the forger's own making that
    // names the allowed operator.
    assert_eq!(
        directory
            .publish(&client, &stranger.descriptor(BTreeMap::new()))
            .await,
        Err(Refusal::NOT_ADMITTED)
    );
    let mut forged = certified(&IdentityKey::generate().unwrap(), forger.identity());
    forged.insert(
        family::OPERATOR.to_owned(),
        family::to_hex(&operator.public().unwrap()),
    );
    assert_eq!(
        directory.publish(&client, &forger.descriptor(forged)).await,
        Err(Refusal::BAD_OPERATOR_CERTIFICATE)
    );
    // Nor can a host reuse another's certificate.
    let stolen = certified(&operator, certified_host.identity());
    assert_eq!(
        directory.publish(&client, &forger.descriptor(stolen)).await,
        Err(Refusal::BAD_OPERATOR_CERTIFICATE)
    );

    let served = directory.served(&client).await;
    assert_eq!(
        served,
        BTreeSet::from([certified_host.identity(), listed.identity()])
    );
    // Designers can check the family of what they are served.
    let pool = directory.pool(&client).await;
    let families: BTreeSet<Option<[u8; 32]>> = pool
        .iter()
        .map(|h| family::operator_of(&mixnn_wire::descriptor::verify(&h.signed).unwrap()).unwrap())
        .collect();
    assert_eq!(
        families,
        BTreeSet::from([None, Some(operator.public().unwrap())])
    );
    let stats = directory.stats();
    assert_eq!(
        (
            stats.published,
            stats.refused_not_allowed,
            stats.refused_operator_certificate
        ),
        (2, 1, 2)
    );
    directory.stop().await;
}

#[tokio::test]
async fn invitations_and_proofs_of_work_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let directory_keys = HostKeys::generate().unwrap();
    let policy = Policy {
        admission: Admission::Invitation {
            directory: directory_keys.identity.public().unwrap(),
        },
        pow_bits: 10,
    };
    let directory = Running::start(
        directory_keys.tls.clone(),
        dir.path().join("state.json"),
        policy,
        ReachabilityConfig::default(),
    );
    let client = client();
    let host = FakeHost::start();
    let id = host.identity();
    let meta = |inviter: &IdentityKey, nonce: u64| {
        BTreeMap::from([
            (
                family::INVITATION.to_owned(),
                family::to_hex(&family::invite(inviter, &id)),
            ),
            (family::POW.to_owned(), family::pow_value(nonce)),
        ])
    };
    let nonce = family::solve_pow(&id, 10).unwrap();
    // An invitation signed by another key.
    let other = IdentityKey::generate().unwrap();
    assert_eq!(
        directory
            .publish(&client, &host.descriptor(meta(&other, nonce)))
            .await,
        Err(Refusal::NOT_ADMITTED)
    );
    // A proof of work below the bits asked.
    let weak = (0..).find(|&n| family::pow_bits(&id, n) < 10).unwrap();
    assert_eq!(
        directory
            .publish(
                &client,
                &host.descriptor(meta(&directory_keys.identity, weak))
            )
            .await,
        Err(Refusal::PROOF_OF_WORK)
    );
    assert!(directory.served(&client).await.is_empty());
    assert_eq!(
        directory
            .publish(
                &client,
                &host.descriptor(meta(&directory_keys.identity, nonce))
            )
            .await,
        Ok(())
    );
    assert_eq!(directory.served(&client).await, BTreeSet::from([id]));
    let stats = directory.stats();
    assert_eq!(
        (stats.refused_invitation, stats.refused_proof_of_work),
        (1, 1)
    );
    directory.stop().await;
}

#[tokio::test]
async fn hosts_are_served_only_while_they_answer_at_their_address() {
    let dir = tempfile::tempdir().unwrap();
    let directory = Running::start(
        TlsIdentity::generate().unwrap(),
        dir.path().join("state.json"),
        Policy::default(),
        quick_probes(),
    );
    let client = client();

    // Nothing answers there: a port just freed.
    let silent = HostKeys::generate().unwrap();
    let nowhere = {
        let socket = std::net::UdpSocket::bind(loopback()).unwrap();
        socket.local_addr().unwrap()
    };
    let d = descriptor_at(&silent, nowhere, silent.tls.fingerprint(), BTreeMap::new());
    assert_eq!(
        directory.publish(&client, &d).await,
        Err(Refusal::UNREACHABLE)
    );
    // Another certificate answers at the address published.
    let impostor = FakeHost::start();
    let claimer = HostKeys::generate().unwrap();
    let d = descriptor_at(
        &claimer,
        impostor.addr,
        claimer.tls.fingerprint(),
        BTreeMap::new(),
    );
    assert_eq!(
        directory.publish(&client, &d).await,
        Err(Refusal::UNREACHABLE)
    );
    assert!(directory.served(&client).await.is_empty());

    // A host that answers is served, until it goes away and a re-check notices.
    let host = FakeHost::start();
    let id = host.identity();
    assert_eq!(
        directory
            .publish(&client, &host.descriptor(BTreeMap::new()))
            .await,
        Ok(())
    );
    let stayer = FakeHost::start();
    assert_eq!(
        directory
            .publish(&client, &stayer.descriptor(BTreeMap::new()))
            .await,
        Ok(())
    );
    assert_eq!(
        directory.served(&client).await,
        BTreeSet::from([id, stayer.identity()])
    );
    drop(host);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let served = directory.served(&client).await;
        if !served.contains(&id) {
            assert_eq!(served, BTreeSet::from([stayer.identity()]));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still served after 20 s of re-checks"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let stats = directory.stats();
    assert!(stats.hosts_unserved >= 1, "{stats:?}");
    assert_eq!(stats.refused_unreachable, 2, "{stats:?}");
    directory.stop().await;
}

#[tokio::test]
async fn first_seen_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let tls = TlsIdentity::generate().unwrap();
    let directory = Running::start(
        tls.clone(),
        state.clone(),
        Policy::default(),
        ReachabilityConfig::default(),
    );
    let client = client();
    let host = FakeHost::start();
    let before = unix_now();
    directory
        .publish(&client, &host.descriptor(BTreeMap::new()))
        .await
        .unwrap();
    let first = directory.pool(&client).await;
    let first_seen = first[0].first_seen.unwrap();
    assert!(first_seen >= before && first_seen <= unix_now());
    directory.stop().await;

    // Later, after a restart, a newer descriptor: the same first_seen.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let directory = Running::start(tls, state, Policy::default(), ReachabilityConfig::default());
    directory
        .publish(&client, &host.descriptor(BTreeMap::new()))
        .await
        .unwrap();
    let again = directory.pool(&client).await;
    assert_eq!(again[0].first_seen, Some(first_seen));
    assert_ne!(again[0].signed, first[0].signed);
    // An old client's request gets the first version of the answer, as before.
    assert_eq!(
        directory_client::fetch_pool(&client, directory.addr, directory.fingerprint, 10)
            .await
            .unwrap(),
        vec![again[0].signed.clone()]
    );
    directory.stop().await;
}

/// A real host with an operator's certificate, a proof of work and an invitation in its
/// config registers with a directory that asks for all three; the directory's probe costs it
/// nothing it counts.
#[tokio::test]
async fn a_daemon_registers_with_its_operator_certificate_and_invitation() {
    let dir = tempfile::tempdir().unwrap();
    let host_keys = HostKeys::generate().unwrap();
    host_keys.save(&dir.path().join("keys")).unwrap();
    let host_id = host_keys.identity.public().unwrap();
    let operator = IdentityKey::generate().unwrap();
    let directory_keys = HostKeys::generate().unwrap();
    let directory = Running::start(
        directory_keys.tls.clone(),
        dir.path().join("state.json"),
        Policy {
            admission: Admission::Invitation {
                directory: directory_keys.identity.public().unwrap(),
            },
            pow_bits: 12,
        },
        quick_probes(),
    );
    let config = dir.path().join("host.toml");
    std::fs::write(
        &config,
        format!(
            "listen = \"127.0.0.1:0\"\nkeys = \"keys\"\nstats_file = \"stats.json\"\n\
             [directory]\naddress = \"{}\"\nfingerprint = \"{}\"\nheartbeat_s = 1\n\
             invitation = \"{}\"\npow_bits = 12\n\
             [operator]\nkey = \"{}\"\ncertificate = \"{}\"\n",
            directory.addr,
            hex_fingerprint::format(&directory.fingerprint),
            family::to_hex(&family::invite(&directory_keys.identity, &host_id)),
            family::to_hex(&operator.public().unwrap()),
            family::to_hex(&family::certify(&operator, &host_id)),
        ),
    )
    .unwrap();
    let daemon = Daemon::bind(HostConfig::from_file(&config).unwrap()).unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let host = tokio::spawn(daemon.serve(async {
        let _ = stopped.await;
    }));
    let client = client();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let pool = loop {
        let pool = directory.pool(&client).await;
        if !pool.is_empty() {
            break pool;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let d = mixnn_wire::descriptor::verify(&pool[0].signed).unwrap();
    assert_eq!(d.identity, host_id);
    assert_eq!(
        family::operator_of(&d).unwrap(),
        Some(operator.public().unwrap())
    );
    // Let a few re-checks probe it.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(directory.stats().probes >= 2, "{:?}", directory.stats());
    assert_eq!(directory.served(&client).await, BTreeSet::from([host_id]));
    stop.send(()).unwrap();
    host.await.unwrap().unwrap();
    let stats: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("stats.json")).unwrap()).unwrap();
    for counter in ["bad_streams", "streams_timed_out", "connections_refused"] {
        assert_eq!(stats[counter], 0, "{counter}: {stats}");
    }
    directory.stop().await;

    // A certificate for another host is refused at start, before anything is published.
    let other = HostKeys::generate().unwrap().identity.public().unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &family::to_hex(&family::certify(&operator, &host_id)),
        &family::to_hex(&family::certify(&operator, &other)),
    );
    std::fs::write(&config, text).unwrap();
    assert!(Daemon::bind(HostConfig::from_file(&config).unwrap()).is_err());
}
