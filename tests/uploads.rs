//! Uploads tried as an attacker would, through real processes and real TLS
//! on loopback: many at once, trickling, outliving their token, and one
//! principal filling the shared caps. Each bound of SECURITY.md's upload
//! section is a test here that fails if the bound breaks.

mod support;

use std::time::{Duration, Instant};

use support::{Cluster, peak_rss, rss};
use tonic::Code;
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;
use wasmos_sdk::Channel;

const MIB: usize = 1 << 20;

/// A principal token for `name` (role batch), made with `wasmos token
/// create` as the admin, with `args` added.
fn token(cluster: &Cluster, name: &str, args: &[&str]) -> String {
    let mut all = vec!["--principal", name, "--roles", "batch"];
    all.extend_from_slice(args);
    cluster.token(&all)
}

/// A new connection as the holder of `token`: each upload of the tests has
/// its own, as an attacker's would.
async fn artifacts(cluster: &Cluster, token: &str) -> ArtifactsClient<Channel> {
    ArtifactsClient::new(cluster.channel_as(token).await)
}

/// `size` bytes in chunks of `chunk`, made as they are sent; `seed` makes
/// each upload's bytes (and so its digest) its own.
fn bytes(
    seed: u64,
    size: usize,
    chunk: usize,
) -> impl tokio_stream::Stream<Item = v1::UploadChunk> + Send + 'static {
    let chunks = size.div_ceil(chunk);
    tokio_stream::iter((0..chunks).map(move |i| {
        let len = chunk.min(size - i * chunk);
        let mut data = vec![(i % 251) as u8; len];
        data[..8].copy_from_slice(&seed.to_le_bytes());
        v1::UploadChunk {
            digest: String::new(),
            data,
        }
    }))
}

/// A hundred uploads of 12 MiB at once, in 1 MiB chunks from 13
/// principals (at most 8 each, the default), each on its own TLS
/// connection: all are stored, and the master's resident memory stays
/// within idle + 192 MiB, since each upload streams to its file as chunks
/// arrive and holds about 1.4 MiB (the 1 MiB chunk bound being decoded or
/// written, and a 256 KiB HTTP/2 window). Before: 261 MiB peak from 19 MiB
/// idle, with 8 MiB chunks allowed and a 1 MiB window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_uploads_of_12_mib_keep_the_masters_memory_bounded() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let pid = cluster.master_pid();
    let cluster_ref = &cluster;
    let tokens: Vec<String> = tokio::task::block_in_place(|| {
        (0..13)
            .map(|i| token(cluster_ref, &format!("uploader-{i}"), &[]))
            .collect()
    });
    let mut clients = Vec::new();
    for i in 0..100 {
        clients.push(artifacts(&cluster, &tokens[i / 8]).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = rss(pid);
    let idle_peak = peak_rss(pid);
    let start = Instant::now();
    let uploads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut client)| {
            tokio::spawn(async move { client.upload(bytes(i as u64, 12 * MIB, MIB)).await })
        })
        .collect();
    for (i, upload) in uploads.into_iter().enumerate() {
        let info = upload
            .await
            .unwrap()
            .unwrap_or_else(|e| panic!("upload {i}: {e}"))
            .into_inner();
        assert_eq!(info.size, 12 * MIB as u64);
    }
    let elapsed = start.elapsed();
    let peak = peak_rss(pid);
    eprintln!(
        "100 concurrent uploads of 12 MiB in {} ms: master RSS idle {} MiB (peak so far {} MiB), peak {} MiB, after {} MiB",
        elapsed.as_millis(),
        idle >> 20,
        idle_peak >> 20,
        peak >> 20,
        rss(pid) >> 20
    );
    assert!(
        peak < idle + (192 << 20),
        "the master's peak RSS was {} MiB, idle {} MiB",
        peak >> 20,
        idle >> 20
    );
    assert_eq!(temp_files(&cluster), 0);
}

/// The master's upload temp files.
fn temp_files(cluster: &Cluster) -> usize {
    std::fs::read_dir(cluster.dir.path().join("master/artifacts/tmp")).map_or(0, |dir| dir.count())
}

/// An upload whose chunks the test sends as it likes: the sender, and the
/// call's outcome.
async fn open_upload(
    cluster: &Cluster,
    token: &str,
) -> (
    tokio::sync::mpsc::Sender<v1::UploadChunk>,
    tokio::task::JoinHandle<Result<v1::ArtifactInfo, tonic::Status>>,
) {
    let mut client = artifacts(cluster, token).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let call = tokio::spawn(async move {
        client
            .upload(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .map(|r| r.into_inner())
    });
    (tx, call)
}

/// Sends `chunk` bytes every `every` until the upload ends or `limit`
/// passes; its outcome.
async fn send_until_it_ends(
    tx: tokio::sync::mpsc::Sender<v1::UploadChunk>,
    call: tokio::task::JoinHandle<Result<v1::ArtifactInfo, tonic::Status>>,
    chunk: usize,
    every: Duration,
    limit: Duration,
) -> Result<v1::ArtifactInfo, tonic::Status> {
    let sender = tokio::spawn(async move {
        let start = Instant::now();
        while start.elapsed() < limit {
            let data = vec![1u8; chunk];
            if tx
                .send(v1::UploadChunk {
                    digest: String::new(),
                    data,
                })
                .await
                .is_err()
            {
                break;
            }
            tokio::time::sleep(every).await;
        }
    });
    let outcome = tokio::time::timeout(limit + Duration::from_secs(10), call)
        .await
        .expect("the upload ended")
        .unwrap();
    sender.abort();
    outcome
}

/// An upload that trickles a byte every half second is cut once its grace
/// is over, naming the rate, and its temp file is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_upload_is_cut_after_its_grace_and_its_temp_file_removed() {
    let cluster = Cluster::start_tls(
        0,
        &[
            "--upload-min-rate",
            "1KiB",
            "--upload-rate-window",
            "2s",
            "--upload-grace",
            "2s",
        ],
        &[],
    );
    let cluster_ref = &cluster;
    let alice = tokio::task::block_in_place(|| token(cluster_ref, "alice", &[]));
    let (tx, call) = open_upload(&cluster, &alice).await;
    let start = Instant::now();
    tx.send(v1::UploadChunk {
        digest: String::new(),
        data: vec![1],
    })
    .await
    .unwrap();
    support::wait_for(Duration::from_secs(10), || {
        (temp_files(&cluster) == 1).then_some(())
    })
    .expect("the upload's temp file");
    let outcome = send_until_it_ends(
        tx,
        call,
        1,
        Duration::from_millis(500),
        Duration::from_secs(30),
    )
    .await;
    let cut = outcome.expect_err("a trickle is cut");
    let took = start.elapsed();
    assert_eq!(cut.code(), Code::DeadlineExceeded, "{cut}");
    assert!(
        cut.message().contains("bytes/s") && cut.message().contains("--upload-min-rate"),
        "{cut}"
    );
    assert!(took < Duration::from_secs(15), "cut after {took:?}");
    support::wait_for(Duration::from_secs(10), || {
        (temp_files(&cluster) == 0).then_some(())
    })
    .expect("the cut upload's temp file was removed");
}

/// An upload in progress ends with UNAUTHENTICATED when its token is
/// revoked, and when its token expires, saying which; nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_ends_when_its_token_is_revoked_or_expires() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let cluster_ref = &cluster;
    let alice = tokio::task::block_in_place(|| token(cluster_ref, "alice", &[]));
    let accessor = alice.split('.').next().unwrap().to_string();

    let (tx, call) = open_upload(&cluster, &alice).await;
    let steady = tokio::spawn(send_until_it_ends(
        tx,
        call,
        64 << 10,
        Duration::from_millis(100),
        Duration::from_secs(30),
    ));
    support::wait_for(Duration::from_secs(10), || {
        (temp_files(&cluster) == 1).then_some(())
    })
    .expect("the upload's temp file");
    let out = tokio::task::block_in_place(|| {
        cluster
            .cli()
            .args(["token", "revoke", &accessor, "--master", &cluster.url])
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ended = steady.await.unwrap().expect_err("the upload was cut");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended}");
    assert!(
        ended.message().contains("revoked") && ended.message().contains("in progress"),
        "{ended}"
    );

    let carol = tokio::task::block_in_place(|| token(cluster_ref, "carol", &["--ttl", "4s"]));
    let (tx, call) = open_upload(&cluster, &carol).await;
    let ended = send_until_it_ends(
        tx,
        call,
        64 << 10,
        Duration::from_millis(100),
        Duration::from_secs(30),
    )
    .await
    .expect_err("the upload was cut");
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended}");
    assert!(
        ended.message().contains("expired") && ended.message().contains("in progress"),
        "{ended}"
    );
    support::wait_for(Duration::from_secs(10), || {
        (temp_files(&cluster) == 0).then_some(())
    })
    .expect("the cut uploads' temp files were removed");
}

/// Uploads one small artifact of its own (`seed`) as `token`.
async fn upload_small(
    cluster: &Cluster,
    token: &str,
    seed: u64,
) -> Result<v1::ArtifactInfo, tonic::Status> {
    let mut client = artifacts(cluster, token).await;
    tokio::time::timeout(
        Duration::from_secs(30),
        client.upload(bytes(seed, 4096, 4096)),
    )
    .await
    .expect("the upload was answered")
    .map(|r| r.into_inner())
}

fn exhausted<T: std::fmt::Debug>(outcome: Result<T, tonic::Status>) -> String {
    match outcome {
        Err(status) if status.code() == Code::ResourceExhausted => status.message().to_string(),
        other => panic!("expected RESOURCE_EXHAUSTED, got {other:?}"),
    }
}

/// Alice fills her share of the stored artifacts and of the uploads in
/// progress; bob's uploads still go through, and alice's refusals name the
/// limit and her. When the master as a whole is full, the refusal says so
/// and names the top holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_principal_cannot_starve_another_of_artifacts_or_uploads() {
    let cluster = Cluster::start_tls(
        0,
        &[
            "--max-artifacts",
            "10",
            "--max-artifacts-per-principal",
            "5",
            "--max-uploads",
            "8",
            "--max-uploads-per-principal",
            "3",
        ],
        &[],
    );
    let cluster_ref = &cluster;
    let (alice, bob, carol) = tokio::task::block_in_place(|| {
        (
            token(cluster_ref, "alice", &[]),
            token(cluster_ref, "bob", &[]),
            token(cluster_ref, "carol", &[]),
        )
    });
    for seed in 0..5 {
        upload_small(&cluster, &alice, seed)
            .await
            .expect("within alice's count");
    }
    let refused = exhausted(upload_small(&cluster, &alice, 5).await);
    assert!(
        refused.contains("principal alice holds 5 artifacts")
            && refused.contains("--max-artifacts-per-principal"),
        "{refused}"
    );

    // Alice holds three uploads open; her fourth is refused.
    let mut held = Vec::new();
    for _ in 0..3 {
        let (tx, call) = open_upload(&cluster, &alice).await;
        tx.send(v1::UploadChunk {
            digest: String::new(),
            data: vec![0; 1024],
        })
        .await
        .unwrap();
        held.push((tx, call));
    }
    let mut refused = None;
    for _ in 0..50 {
        let (tx, mut call) = open_upload(&cluster, &alice).await;
        let _ = tx
            .send(v1::UploadChunk {
                digest: String::new(),
                data: vec![0; 1024],
            })
            .await;
        match tokio::time::timeout(Duration::from_millis(500), &mut call).await {
            Ok(outcome) => {
                refused = Some(exhausted(outcome.unwrap()));
                break;
            }
            // Alice's three are not all in yet: this one took a slot; end it.
            Err(_) => {
                call.abort();
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
    let refused = refused.expect("alice's fourth upload at once was refused");
    assert!(
        refused.contains("principal alice holds 3 uploads in progress")
            && refused.contains("--max-uploads-per-principal"),
        "{refused}"
    );

    // Bob is unaffected by either.
    for seed in 100..105 {
        upload_small(&cluster, &bob, seed)
            .await
            .expect("bob's upload");
    }
    // The master as a whole is full now: carol hears that, and who holds most.
    let refused = exhausted(upload_small(&cluster, &carol, 200).await);
    assert!(
        refused.contains("the master is full")
            && refused.contains("--max-artifacts")
            && refused.contains("principal alice's: 5 artifacts"),
        "{refused}"
    );
    for (tx, call) in held {
        drop(tx);
        call.abort();
    }
}
