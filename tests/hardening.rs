//! Bad input and overload, through real processes on loopback: each bound
//! of `core/src/limits.rs` and `wasmos master --max-…` is tried as an
//! attacker would, and the test fails if the bound breaks.

mod support;

use std::time::{Duration, Instant};

use support::{Cluster, rss};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::scheduler_client::SchedulerClient;

async fn scheduler(cluster: &Cluster) -> SchedulerClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(cluster.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    SchedulerClient::new(channel)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

async fn subscribe(
    client: &mut SchedulerClient<tonic::transport::Channel>,
    name: &str,
) -> Result<(String, tonic::Streaming<v1::Event>), tonic::Status> {
    let call = client
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                name: name.into(),
                failover_timeout_ms: 600_000,
                ..Default::default()
            }),
        })
        .await;
    support::events::subscribed(call).await
}

/// A framework that never reads its stream floods the master with
/// reconciliations: repeated ids cost what one does, distinct ones fill its
/// queue until the stream is closed with the reason, the master's memory
/// stays bounded, and another framework keeps getting its heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconcile_flood_from_a_framework_that_never_reads_is_bounded() {
    let cluster = Cluster::start(0, &["--framework-heartbeat", "100ms"], &[]);
    let pid = cluster.master_pid();
    let mut client = scheduler(&cluster).await;
    let (flooder, mut flooded) = subscribe(&mut client, "flooder").await.unwrap();
    let mut other_client = scheduler(&cluster).await;
    let (_, mut other) = subscribe(&mut other_client, "bystander").await.unwrap();
    // The bystander reads every event; the gaps between its heartbeats are
    // what it would notice of the flood.
    let watcher = tokio::spawn(async move {
        let mut last = Instant::now();
        let mut longest = Duration::ZERO;
        let mut beats = 0;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(6) {
            match tokio::time::timeout(Duration::from_secs(5), other.next()).await {
                Ok(Some(Ok(v1::Event {
                    kind: Some(EventKind::Heartbeat(_)),
                }))) => {
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                    beats += 1;
                }
                Ok(Some(Ok(_))) => {}
                other => panic!("the bystander's stream broke: {other:?}"),
            }
        }
        (beats, longest)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let idle = rss(pid);
    let (cpu_before, flood_start) = (support::cpu_ms(pid), Instant::now());

    // One id a million times: one answer.
    for _ in 0..8 {
        client
            .reconcile(v1::ReconcileRequest {
                framework_id: flooder.clone(),
                task_ids: vec!["t".into(); 1_000_000],
            })
            .await
            .expect("repeats are folded");
    }
    // Distinct unknown ids: each answered LOST, until the queue is full.
    let distinct: Vec<String> = (0..50_000).map(|i| format!("task-{i:07}")).collect();
    for _ in 0..6 {
        let _ = client
            .reconcile(v1::ReconcileRequest {
                framework_id: flooder.clone(),
                task_ids: distinct.clone(),
            })
            .await;
    }
    let too_many: Vec<String> = (0..50_001).map(|i| format!("x{i}")).collect();
    let refused = client
        .reconcile(v1::ReconcileRequest {
            framework_id: flooder.clone(),
            task_ids: too_many,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("50000"), "{refused}");
    let flooded_rss = rss(pid);
    eprintln!(
        "master under the reconcile flood: RSS {} -> {} MiB, CPU {} ms in {} ms",
        idle >> 20,
        flooded_rss >> 20,
        support::cpu_ms(pid) - cpu_before,
        flood_start.elapsed().as_millis()
    );
    assert!(
        flooded_rss < idle + (64 << 20),
        "the master grew from {idle} to {flooded_rss} bytes"
    );

    // The flooder's stream: what fit, then the reason it was closed; no
    // event larger than 1 MiB.
    let mut events = 0;
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(10), flooded.next()).await {
            Ok(Some(Ok(event))) => {
                assert!(prost::Message::encoded_len(&event) <= 1 << 20);
                events += 1;
            }
            Ok(Some(Err(status))) => break status,
            other => panic!("the flooder's stream did not end with a reason: {other:?}"),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status}");
    assert!(status.message().contains("fell behind"), "{status}");
    assert!(events > 0);

    let (beats, longest) = watcher.await.unwrap();
    assert!(beats >= 20, "the bystander got {beats} heartbeats in 6 s");
    assert!(
        longest < Duration::from_secs(2),
        "the bystander waited {longest:?} for a heartbeat"
    );
    let metrics = support::http_get(&format!("{}/metrics", cluster.http));
    assert!(
        metrics.contains("wasmos_shed_total{what=\"stream\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_names_and_absurd_claims_are_refused_naming_the_field() {
    let cluster = Cluster::start(0, &["--max-agents", "1"], &[]);
    let mut client = scheduler(&cluster).await;
    let refused = subscribe(&mut client, &"n".repeat(1 << 20))
        .await
        .map(|_| ())
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(
        refused.message().contains("framework.name") && refused.message().contains("256"),
        "{refused}"
    );
    let frameworks = support::http_get(&format!("{}/state", cluster.http));
    assert!(!frameworks.contains("nnnn"), "the name was kept");

    // Agents: a 3 MB host name, a million cpus, then more agents than the
    // master takes.
    let attach = |info: v1::AgentInfo| {
        let url = cluster.url.clone();
        async move {
            let channel = tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .connect()
                .await
                .unwrap();
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            tx.send(v1::AgentMessage {
                kind: Some(ToMaster::Register(v1::Register {
                    agent: Some(info),
                    tasks: vec![],
                })),
            })
            .await
            .unwrap();
            let mut inbound = AgentLinkClient::new(channel)
                .max_encoding_message_size(8 << 20)
                .attach(ReceiverStream::new(rx))
                .await?
                .into_inner();
            let first = inbound.next().await;
            drop(tx);
            match first {
                Some(Ok(_)) => Ok(inbound),
                Some(Err(status)) => Err(status),
                None => Err(tonic::Status::unknown("the stream ended")),
            }
        }
    };
    let agent = |id: &str, hostname: String, cpus: f64| v1::AgentInfo {
        agent_id: id.into(),
        hostname,
        resources: Some(v1::Resources {
            cpus,
            mem: 1 << 30,
            disk: 1 << 30,
        }),
        ..Default::default()
    };
    let refused = attach(agent("a1", "h".repeat(3 << 20), 1.0))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
    assert!(refused.message().contains("agent.hostname"), "{refused}");
    let refused = attach(agent("a1", "h".into(), 1_000_000.0))
        .await
        .unwrap_err();
    assert!(
        refused.message().contains("--max-agent-resources"),
        "{refused}"
    );
    let _first = attach(agent("a1", "h".into(), 2.0))
        .await
        .expect("a sane agent");
    let refused = attach(agent("a2", "h".into(), 2.0)).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("--max-agents"), "{refused}");
}

/// `wasmos run --json` on the cluster; the tasks' JSON lines.
fn run_json(cluster: &Cluster, options: &[&str], args: &[&str]) -> Vec<serde_json::Value> {
    let out = support::wasmos()
        .arg("run")
        .args(["--json", "--master", &cluster.url])
        .args(options)
        .arg(support::guest("files"))
        .arg("--")
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The disk cap holds at the end of a task however short it ran, bounds
/// the overshoot of a running one, and counts inputs.
#[test]
fn the_disk_cap_fails_a_task_that_writes_past_it_even_a_short_one() {
    let cluster = Cluster::start(1, &[], &["--cpus", "2"]);
    // 2 MiB at once with no disk: it ends within milliseconds, before any
    // periodic check.
    let tasks = run_json(&cluster, &[], &["fill", "big", "2"]);
    let task = &tasks[0];
    assert_eq!(task["state"], "FAILED", "{task}");
    assert_eq!(task["reason"], "DISK_LIMIT", "{task}");

    // A steady writer (64 KiB every 10 ms, ~6.4 MB/s) against 1 MiB: it is
    // stopped within a few check intervals (200 ms each) of passing it.
    let tasks = run_json(&cluster, &["--disk", "1MiB"], &["pace", "log", "64", "10"]);
    let task = &tasks[0];
    assert_eq!(task["reason"], "DISK_LIMIT", "{task}");
    let written = task["usage"]["disk_bytes"].as_u64().unwrap_or(0);
    let bound = (1 << 20) + 6_400_000 / 5 * 5; // the cap + 1 s of writing
    assert!(
        written <= bound,
        "the task wrote {written} bytes past a 1 MiB cap (bound {bound})"
    );

    // Inputs count: a 2 MiB input with `--disk 0` runs (the CLI adds the
    // input's size), and it can read it; asking the master directly for a
    // task whose inputs pass its disk is refused before any agent fetches.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, vec![7u8; 2 << 20]).unwrap();
    let tasks = run_json(&cluster, &["--input", input.to_str().unwrap()], &["ls"]);
    assert_eq!(tasks[0]["state"], "FINISHED", "{}", tasks[0]);

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = wasmos_sdk::Client::connect_with(cluster.url.clone(), Default::default())
            .await
            .unwrap();
        let module = client
            .upload_raw(&std::fs::read(support::guest("files")).unwrap())
            .await
            .unwrap()
            .digest;
        let data = client.upload_raw(&vec![1u8; 1 << 20]).await.unwrap().digest;
        let mut scheduler = scheduler(&cluster).await;
        let (fw, mut events) = subscribe(&mut scheduler, "inputs").await.unwrap();
        let offer = support::events::next_offer(&mut events).await;
        let task = |disk: u64| v1::TaskSpec {
            task_id: format!("copies-{disk}"),
            artifact: module.clone(),
            args: vec!["ls".into()],
            inputs: (0..16)
                .map(|i| v1::Input {
                    path: format!("copy-{i}"),
                    artifact: data.clone(),
                    kind: v1::InputKind::File as i32,
                })
                .collect(),
            resources: Some(v1::Resources {
                cpus: 0.1,
                mem: 32 << 20,
                disk,
            }),
            ..Default::default()
        };
        let refused = scheduler
            .accept(v1::AcceptRequest {
                framework_id: fw.clone(),
                offer_ids: vec![offer.offer_id.clone()],
                tasks: vec![task(0)],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused}");
        assert!(refused.message().contains("inputs"), "{refused}");
        // With room for the 16 copies, one fetch places them all.
        scheduler
            .accept(v1::AcceptRequest {
                framework_id: fw.clone(),
                offer_ids: vec![offer.offer_id.clone()],
                tasks: vec![task(16 << 20)],
                ..Default::default()
            })
            .await
            .expect("16 copies fit 16 MiB");
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(30), events.next()).await {
                Ok(Some(Ok(v1::Event {
                    kind: Some(EventKind::Updates(u)),
                }))) => {
                    if let Some(s) = u.statuses.iter().find(|s| {
                        matches!(
                            s.state(),
                            v1::TaskState::Finished | v1::TaskState::Failed | v1::TaskState::Lost
                        )
                    }) {
                        break s.clone();
                    }
                }
                Ok(Some(Ok(_))) => continue,
                other => panic!("no end: {other:?}"),
            }
        };
        assert_eq!(end.state(), v1::TaskState::Finished, "{end:?}");
        let usage = end.usage.unwrap_or_default();
        assert_eq!(usage.disk_bytes, 16 << 20, "{usage:?}");
    });
}

/// An input is streamed from the master into the sandbox: placing a 64 MiB
/// input raises neither the agent's nor the executor's peak memory by
/// anything near its size (both held it whole before).
#[test]
fn an_input_is_streamed_to_disk_never_held_whole() {
    let cluster = Cluster::start(1, &[], &["--cpus", "2"]);
    // A first task, so both processes are warm (engine, module cache).
    let tasks = run_json(&cluster, &[], &["ls"]);
    assert_eq!(tasks[0]["state"], "FINISHED", "{}", tasks[0]);
    let agent = cluster.agents[0].child.as_ref().unwrap().id();
    let executor = cluster.executor_pid(0);
    let (agent_before, executor_before) = (support::peak_rss(agent), support::peak_rss(executor));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("big.bin");
    std::fs::write(&input, vec![7u8; 64 << 20]).unwrap();
    let tasks = run_json(&cluster, &["--input", input.to_str().unwrap()], &["ls"]);
    assert_eq!(tasks[0]["state"], "FINISHED", "{}", tasks[0]);
    assert_eq!(tasks[0]["usage"]["disk_bytes"], 64 << 20, "{}", tasks[0]);
    let grew = |before: u64, pid: u32| support::peak_rss(pid).saturating_sub(before) >> 20;
    let (agent_grew, executor_grew) = (grew(agent_before, agent), grew(executor_before, executor));
    eprintln!("a 64 MiB input: peak RSS +{agent_grew} MiB agent, +{executor_grew} MiB executor");
    assert!(agent_grew < 24, "the agent's peak grew {agent_grew} MiB");
    assert!(
        executor_grew < 24,
        "the executor's peak grew {executor_grew} MiB"
    );
}

/// Run as a helper process (see below): opens `WASMOS_TEST_HOLD` = `N@ADDR`
/// idle connections from 127.0.0.2, says how many it got, and holds them.
#[test]
fn helper_holds_idle_connections() {
    let Ok(spec) = std::env::var("WASMOS_TEST_HOLD") else {
        return; // an ordinary run: nothing to do
    };
    let (n, addr) = spec.split_once('@').unwrap();
    let (n, addr): (usize, std::net::SocketAddr) = (n.parse().unwrap(), addr.parse().unwrap());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut held = Vec::with_capacity(n);
        for _ in 0..n {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            match socket.connect(addr).await {
                Ok(stream) => held.push(stream),
                Err(e) => {
                    eprintln!("connect: {e}");
                    break;
                }
            }
        }
        println!("held {}", held.len());
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

/// 15,000 idle connections from 127.0.0.2 (two helper processes: one may
/// hold 20,000 descriptors here) are shed by the per-address cap, while
/// `/health` and `wasmos run` from 127.0.0.1 keep working.
#[test]
fn idle_connections_from_one_address_are_shed_and_everyone_else_is_served() {
    let cluster = Cluster::start(1, &["--max-connections", "12000"], &["--cpus", "2"]);
    let addr = cluster.url.trim_start_matches("http://").to_string();
    let idle = rss(cluster.master_pid());
    let (cpu_before, flood_start) = (support::cpu_ms(cluster.master_pid()), Instant::now());
    let helpers: Vec<std::process::Child> = (0..2)
        .map(|_| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args(["--exact", "helper_holds_idle_connections", "--nocapture"])
                .env("WASMOS_TEST_HOLD", format!("7500@{addr}"))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut helpers = helpers;
    for helper in &mut helpers {
        // The test harness speaks first; the helper's own line follows.
        let out = std::io::BufReader::new(helper.stdout.take().unwrap());
        let held = std::io::BufRead::lines(out)
            .map_while(Result::ok)
            .find(|l| l.starts_with("held "))
            .expect("the helper says how many it holds");
        assert_eq!(held, "held 7500", "{held}");
    }
    // The master admits at most its per-address cap (3,000) of them; the
    // rest are closed as they come.
    let metrics = support::wait_for(Duration::from_secs(60), || {
        let metrics = support::http_get(&format!("{}/metrics", cluster.http));
        metrics
            .lines()
            .find_map(|l| l.strip_prefix("wasmos_shed_total{what=\"connection\"} "))
            .and_then(|v| v.parse::<f64>().ok())
            // The kernel hands the master the rest of the flood as its
            // accept queue drains (SYN-ACK retries back off), so wait for
            // some of it shed (at the kernel's pace), not for all 12,000;
            // the descriptor count below shows the cap held.
            .filter(|shed| *shed >= 1_000.0)
            .map(|_| metrics)
    })
    .unwrap_or_else(|| {
        panic!(
            "the master did not shed the flood: {}",
            support::http_get(&format!("{}/metrics", cluster.http))
                .lines()
                .filter(|l| l.starts_with("wasmos_shed"))
                .collect::<Vec<_>>()
                .join("; ")
        )
    });
    let fds = std::fs::read_dir(format!("/proc/{}/fd", cluster.master_pid()))
        .unwrap()
        .count();
    assert!(fds < 3_500, "the master holds {fds} descriptors");

    // Everyone else is served.
    assert_eq!(
        support::http_get(&format!("{}/health", cluster.http)),
        "ok\n"
    );
    let out = support::wasmos()
        .args(["run", "--master", &cluster.url])
        .arg(support::guest("hello"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let flooded = rss(cluster.master_pid());
    eprintln!(
        "master under 15,000 idle connections: {fds} fds, RSS {} -> {} MiB, CPU {} ms in {} ms; {}",
        idle >> 20,
        flooded >> 20,
        support::cpu_ms(cluster.master_pid()) - cpu_before,
        flood_start.elapsed().as_millis(),
        metrics
            .lines()
            .find(|l| l.starts_with("wasmos_shed_total{what=\"connection\"}"))
            .unwrap_or_default()
    );
    for mut helper in helpers {
        let _ = helper.kill();
        let _ = helper.wait();
    }
}

/// The HTTP port passes the same gate: past the per-address cap a peer's
/// connections are closed at once, while `/health` from 127.0.0.1 is
/// served.
#[test]
fn the_http_port_sheds_connections_past_the_per_address_cap() {
    let cluster = Cluster::start(0, &["--max-connections-per-address", "16"], &[]);
    let http: std::net::SocketAddr = cluster.http.trim_start_matches("http://").parse().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let held: Vec<std::net::TcpStream> = rt.block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut held = Vec::new();
        for _ in 0..40 {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
            let mut stream = socket.connect(http).await.unwrap();
            // Half a request: past the first-byte deadline, never done.
            stream.write_all(b"GET /health HTTP/1.1\r\n").await.unwrap();
            held.push(stream.into_std().unwrap());
        }
        held
    });
    std::thread::sleep(Duration::from_secs(1));
    let closed = held
        .iter()
        .filter(|stream| {
            use std::io::Read;
            // Non-blocking (as tokio left it): nothing to read yet is open.
            let mut stream: &std::net::TcpStream = stream;
            match stream.read(&mut [0u8; 1]) {
                Ok(0) => true,
                Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                Ok(_) => panic!("an answer to half a request"),
            }
        })
        .count();
    assert_eq!(closed, 24, "16 held open, the rest closed at once");
    assert_eq!(
        support::http_get(&format!("{}/health", cluster.http)),
        "ok\n"
    );
    let metrics = support::http_get(&format!("{}/metrics", cluster.http));
    let shed = metrics
        .lines()
        .find_map(|l| l.strip_prefix("wasmos_shed_total{what=\"connection\"} "))
        .and_then(|v| v.parse::<f64>().ok());
    assert!(shed.is_some_and(|n| n >= 24.0), "{metrics}");
}
