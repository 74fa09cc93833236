//! No principal can starve the others of a shared cap, tried as an
//! attacker would against a TLS master: a role's framework slots, the
//! connection cap, built-in names, and an agent's claim on a default join
//! token.

mod support;

use std::time::Duration;

use support::{Cluster, output_within, wasmos};
use tonic::Code;
use wasmos_proto::v1;
use wasmos_proto::v1::scheduler_client::SchedulerClient;

/// A framework subscribed as `token` in `role`, on a connection of its own;
/// its stream (dropping it disconnects the framework).
async fn subscribe(
    cluster: &Cluster,
    token: &str,
    role: &str,
) -> Result<tonic::Streaming<v1::Event>, tonic::Status> {
    let channel = cluster.channel_as(token).await;
    let call = SchedulerClient::new(channel)
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                name: "probe".into(),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await;
    support::events::subscribed(call).await.map(|(_, s)| s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_cannot_take_every_framework_slot_of_a_shared_role() {
    let cluster = Cluster::start_tls(
        0,
        &[
            "--max-frameworks-per-role",
            "4",
            "--max-frameworks-per-principal",
            "2",
            "--framework-slot-grace",
            "1s",
        ],
        &[],
    );
    let alice = cluster.token(&["--principal", "alice", "--roles", "r1"]);
    let bob = cluster.token(&["--principal", "bob", "--roles", "r1"]);
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(subscribe(&cluster, &alice, "r1").await.unwrap());
    }
    let refused = subscribe(&cluster, &alice, "r1").await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(
        refused.message().contains("`alice`")
            && refused.message().contains("--max-frameworks-per-principal"),
        "{refused:?}"
    );
    // Bob still gets in.
    let _bob = subscribe(&cluster, &bob, "r1").await.unwrap();
    // Frameworks alice leaves disconnected give their slots back after the
    // grace, though they keep their failover timeout.
    drop(held);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let again = loop {
        match subscribe(&cluster, &alice, "r1").await {
            Ok(stream) => break Some(stream),
            Err(status) if std::time::Instant::now() < deadline => {
                assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(_) => break None,
        }
    };
    assert!(again.is_some(), "alice's old frameworks kept their slots");
}

#[test]
fn an_anonymous_flood_cannot_lock_a_principal_out_of_the_connection_cap() {
    let cluster = Cluster::start_tls(
        0,
        &[
            "--max-connections",
            "64",
            "--max-connections-per-address",
            "16",
        ],
        &[],
    );
    let alice = cluster.token(&["--principal", "alice", "--roles", "r1"]);
    let addr: std::net::SocketAddr = cluster.url.trim_start_matches("https://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // Four source addresses, each at the per-address cap: together they
    // reach the total, and send nothing.
    let flood = rt.block_on(async {
        let mut held = Vec::new();
        for source in 2..=5 {
            for _ in 0..16 {
                let socket = tokio::net::TcpSocket::new_v4().unwrap();
                socket
                    .bind(format!("127.0.0.{source}:0").parse().unwrap())
                    .unwrap();
                held.push(socket.connect(addr).await.unwrap());
            }
        }
        held
    });
    // Alice's CLI gets in, twice, while the flood is held.
    for _ in 0..2 {
        let out = wasmos()
            .env("WASMOS_CA", &cluster.tls.as_ref().unwrap().ca)
            .env("WASMOS_TOKEN", &alice)
            .args(["whoami", "--master", &cluster.url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "alice was locked out: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("alice"));
    }
    drop(flood);
}

#[test]
fn principals_cannot_take_built_in_names() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    for name in ["admin", "local", "read-only"] {
        let out = cluster
            .cli()
            .args(["token", "create", "--master", &cluster.url])
            .args(["--principal", name, "--roles", "r1"])
            .output()
            .unwrap();
        assert!(!out.status.success(), "a principal named {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("keeps for its own"), "{stderr}");
    }
}

#[test]
fn a_default_join_token_caps_an_agent_at_the_masters_modest_default() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let mut cmd = wasmos();
    cmd.args(["agent", "--master", &cluster.url, "--work-dir"])
        .arg(cluster.dir.path().join("greedy"))
        .args(["--cpus", "300", "--mem", "8GiB"])
        .env("WASMOS_JOIN", &cluster.tls.as_ref().unwrap().join);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-agent-resources") && stderr.contains("256"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_that_took_a_built_in_name_before_the_rule_is_refused() {
    use wasmos_master::store::{Record, RedbStore, Store, Write};
    let mut cluster = Cluster::start_tls(0, &[], &[]);
    cluster.kill_master();
    // A principal token named `admin`, as an older master let one be made.
    let secret = wasmos_tls::Secret::generate();
    let registry =
        RedbStore::open(&RedbStore::path_in(&cluster.dir.path().join("master"))).unwrap();
    registry
        .commit(&[Write::Put(Record::Token(v1::StoredToken {
            accessor: secret.accessor.clone(),
            secret_sha256: secret.hash(),
            kind: v1::TokenKind::Principal as i32,
            principal: "admin".into(),
            roles: vec!["r1".into()],
            ..Default::default()
        }))])
        .unwrap();
    drop(registry);
    cluster.restart_master();
    let refused = subscribe(&cluster, &secret.to_string(), "r1")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    assert!(
        refused.message().contains("keeps for its own")
            && refused.message().contains("wasmos token revoke"),
        "{refused:?}"
    );
}
