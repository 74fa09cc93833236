//! TLS, join tokens and agent identities, through real processes on
//! loopback: every rule of SECURITY.md that the wire and the agents rely on,
//! each with a test that fails if the rule breaks.

mod support;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::{Cluster, guest, https_get, output_within, wait_for, wasmos};
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;
use wasmos_agent::identity::Identity;
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;
use wasmos_proto::v1::master_message::Kind as FromMaster;
use wasmos_tls::{ClientTls, JoinString};

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tls(cluster: &Cluster) -> &support::Tls {
    cluster.tls.as_ref().expect("a TLS cluster")
}

/// `wasmos token create --agent` with `extra` flags; the join string.
fn join_token(cluster: &Cluster, extra: &[&str]) -> String {
    let out = cluster
        .cli()
        .args(["token", "create", "--agent", "--master", &cluster.url])
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Runs an agent that is expected to exit (refused); its output.
fn agent_that_exits(cluster: &Cluster, work_dir: &Path, args: &[&str]) -> Output {
    let mut cmd = wasmos();
    cmd.args(["agent", "--master", &cluster.url, "--work-dir"])
        .arg(work_dir)
        .args(args);
    output_within(cmd, Duration::from_secs(30))
}

/// `wasmos ps --json` of the cluster.
fn tasks(cluster: &Cluster) -> Vec<Value> {
    let out = cluster
        .cli()
        .args(["ps", "--json", "--master", &cluster.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Starts a detached job of `n` sleepers of `ms` each; returns at once.
fn detached_sleepers(cluster: &Cluster, n: usize, ms: u64) {
    let out = cluster
        .cli()
        .arg("run")
        .arg(guest("sleeper"))
        .args(["-n", &n.to_string(), "--cpus", "0.1", "--detach"])
        .args(["--master", &cluster.url, "--", &ms.to_string(), "{i}"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Waits until `n` tasks are RUNNING; returns them.
fn running(cluster: &Cluster, n: usize) -> Vec<Value> {
    wait_for(Duration::from_secs(30), || {
        let running: Vec<Value> = tasks(cluster)
            .into_iter()
            .filter(|t| t["state"] == "RUNNING")
            .collect();
        (running.len() >= n).then_some(running)
    })
    .unwrap_or_else(|| panic!("{n} tasks did not start"))
}

fn connected_agents(cluster: &Cluster) -> Vec<String> {
    let state: Value = serde_json::from_str(&cluster.get("/state")).unwrap();
    state["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["connected"] == true)
        .map(|a| a["id"].as_str().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn a_tls_cluster_runs_a_job_and_survives_a_master_restart_with_its_ca_and_tokens() {
    let mut cluster = Cluster::start_tls(2, &[], &["--cpus", "1"]);
    assert!(cluster.url.starts_with("https://"), "{}", cluster.url);
    let run = |cluster: &Cluster| {
        let out = cluster
            .cli()
            .arg("run")
            .arg(guest("hello"))
            .args([
                "-n",
                "20",
                "--json",
                "--master",
                &cluster.url,
                "--",
                "item-{i}",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
        let lines: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        assert_eq!(lines.len(), 20, "{lines:?}");
        for line in &lines {
            let i = line["index"].as_u64().unwrap();
            assert_eq!(line["state"], "FINISHED", "{line}");
            let stdout = line["stdout"].as_str().unwrap_or_default();
            assert!(stdout.contains(&format!("argv[1]=item-{i}")), "{line}");
        }
    };
    run(&cluster);

    // HTTP: /health is open, /state needs the token.
    let health = https_get(
        &format!("{}/health", cluster.http),
        &tls(&cluster).ca_pem,
        None,
    );
    assert_eq!(health.trim(), "ok");
    let refused = https_get(
        &format!("{}/state", cluster.http),
        &tls(&cluster).ca_pem,
        None,
    );
    assert!(refused.contains("401"), "{refused}");

    let ca_before = std::fs::read_to_string(&tls(&cluster).ca).unwrap();
    cluster.kill_master();
    cluster.restart_master();
    cluster.wait_agents(2);
    assert_eq!(
        std::fs::read_to_string(&tls(&cluster).ca).unwrap(),
        ca_before,
        "the CA comes from the registry, not a new one"
    );
    // The old admin token still works, the agents re-attached with their
    // certificates, and jobs run.
    run(&cluster);
}

#[test]
fn a_plaintext_client_of_a_tls_master_is_told_to_use_https_and_a_client_without_token_is_refused() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let plain = cluster.url.replace("https://", "http://");
    let out = cluster
        .cli()
        .args(["agents", "--master", &plain])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("use https://"), "{}", stderr(&out));

    let out = wasmos()
        .args(["agents", "--master", &cluster.url, "--ca"])
        .arg(&tls(&cluster).ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs a token"), "{}", stderr(&out));

    let out = wasmos()
        .args([
            "agents",
            "--master",
            &cluster.url,
            "--token",
            &tls(&cluster).token,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("give the cluster's CA"),
        "{}",
        stderr(&out)
    );

    // A join token is no admin token.
    let join = JoinString::parse(&join_token(&cluster, &[])).unwrap();
    let out = wasmos()
        .args(["agents", "--master", &cluster.url, "--token"])
        .arg(join.token.to_string())
        .arg("--ca")
        .arg(&tls(&cluster).ca)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("only joins agents"),
        "{}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_health_needs_no_token_and_every_other_call_does() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let channel = Endpoint::from_shared(cluster.url.clone())
        .unwrap()
        .tls_config(ClientTls::trusting(tls(&cluster).ca_pem.clone()).tonic())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status(),
        tonic_health::pb::health_check_response::ServingStatus::Serving
    );
    let refused = wasmos_proto::v1::operator_client::OperatorClient::new(channel.clone())
        .list_agents(v1::ListAgentsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
    let refused = wasmos_proto::v1::artifacts_client::ArtifactsClient::new(channel)
        .stat(v1::StatRequest {
            digest: "0".repeat(64),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");
}

#[test]
fn insecure_on_a_non_loopback_address_exits_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("m");
    let mut cmd = wasmos();
    cmd.args([
        "master",
        "--insecure",
        "--listen",
        "0.0.0.0:0",
        "--work-dir",
    ])
    .arg(&work);
    let out = output_within(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("only on a loopback address"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(!work.exists(), "nothing was opened or written");
}

#[test]
fn agents_without_a_good_token_or_with_the_wrong_ca_pin_cannot_join() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let dir = cluster.dir.path();

    let out = agent_that_exits(&cluster, &dir.join("none"), &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("must join it first"),
        "{}",
        stderr(&out)
    );

    let once = join_token(&cluster, &["--uses", "1"]);
    let mut first = wasmos();
    first
        .args(["agent", "--join", &once, "--work-dir"])
        .arg(dir.join("first"));
    let (mut first, _) = support::spawn_until(first, &["wasmos agent offering"]);
    wait_for(Duration::from_secs(30), || {
        (connected_agents(&cluster).len() == 1).then_some(())
    })
    .expect("the first agent joined");
    let out = agent_that_exits(&cluster, &dir.join("second"), &["--join", &once]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown, spent or expired"),
        "{}",
        stderr(&out)
    );
    let _ = first.kill();
    let _ = first.wait();

    let short = join_token(&cluster, &["--ttl", "300ms"]);
    std::thread::sleep(Duration::from_millis(600));
    let out = agent_that_exits(&cluster, &dir.join("late"), &["--join", &short]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown, spent or expired"),
        "{}",
        stderr(&out)
    );

    let mut wrong = JoinString::parse(&join_token(&cluster, &[])).unwrap();
    wrong.ca_pin = format!("sha256:{}", "0".repeat(64));
    let out = agent_that_exits(
        &cluster,
        &dir.join("pinned"),
        &["--join", &wrong.to_string()],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not from the CA the join string pins"),
        "{}",
        stderr(&out)
    );
    assert!(
        !dir.join("pinned/tls/agent.crt").exists(),
        "no certificate for an agent that did not trust the master"
    );
}

#[test]
fn an_agent_cannot_advertise_more_than_its_token_allows() {
    let cluster = Cluster::start_tls(0, &[], &[]);
    let capped = join_token(&cluster, &["--max-resources", "cpus:1,mem:8GiB"]);
    let out = agent_that_exits(
        &cluster,
        &cluster.dir.path().join("greedy"),
        &["--join", &capped, "--cpus", "2", "--mem", "1GiB"],
    );
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("more than its join token allows"),
        "{}",
        stderr(&out)
    );
    assert!(connected_agents(&cluster).is_empty());
}

/// A stream of `AgentLink.Attach` opened by hand, as an attacker would.
async fn attach(
    url: &str,
    tls: ClientTls,
    claimed_id: &str,
) -> Result<
    (
        mpsc::Sender<v1::AgentMessage>,
        tonic::Streaming<v1::MasterMessage>,
    ),
    tonic::Status,
> {
    let channel = Endpoint::from_shared(url.to_string())
        .unwrap()
        .tls_config(tls.tonic())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let (tx, rx) = mpsc::channel(16);
    tx.send(v1::AgentMessage {
        kind: Some(ToMaster::Register(v1::Register {
            agent: Some(v1::AgentInfo {
                agent_id: claimed_id.to_string(),
                hostname: "impostor".into(),
                resources: Some(v1::Resources {
                    cpus: 1.0,
                    mem: 1 << 30,
                    disk: 1 << 30,
                }),
                ..Default::default()
            }),
            tasks: vec![],
        })),
    })
    .await
    .unwrap();
    let inbound = AgentLinkClient::new(channel)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    Ok((tx, inbound))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_impostor_cannot_register_update_or_answer_as_another_agent() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "1"]);
    let victim = cluster.agent_id(0);
    detached_sleepers(&cluster, 1, 4000);
    let task = running(&cluster, 1)[0]["id"].as_str().unwrap().to_string();

    // No certificate: refused before registering.
    let anonymous = ClientTls::trusting(tls(&cluster).ca_pem.clone());
    let refused = attach(&cluster.url, anonymous, &victim).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused}");

    // A certificate of its own: the master takes its id from it, whatever
    // the message claims.
    let join = JoinString::parse(&tls(&cluster).join).unwrap();
    let impostor = Identity::join(&cluster.dir.path().join("impostor"), &join, "impostor")
        .await
        .unwrap();
    assert_ne!(impostor.agent_id(), victim);
    let (tx, mut inbound) = attach(&cluster.url, impostor.client_tls(), &victim)
        .await
        .unwrap();
    let Some(Ok(v1::MasterMessage {
        kind: Some(FromMaster::Registered(registered)),
    })) = inbound.next().await
    else {
        panic!("no registration")
    };
    assert_eq!(registered.agent_id, impostor.agent_id());
    // It reports the victim's running task finished: the master drops it.
    tx.send(v1::AgentMessage {
        kind: Some(ToMaster::Updates(v1::StatusUpdates {
            statuses: vec![v1::TaskStatus {
                task_id: task.clone(),
                state: v1::TaskState::Finished as i32,
                uuid: vec![7; 16],
                ..Default::default()
            }],
            unsynced: None,
        })),
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cluster = &cluster;
    let state = tokio::task::block_in_place(|| {
        tasks(cluster)
            .into_iter()
            .find(|t| t["id"] == task.as_str())
            .unwrap()
    });
    assert_eq!(state["state"], "RUNNING", "{state}");
    assert_eq!(state["agent"], victim.as_str(), "{state}");
    let connected = tokio::task::block_in_place(|| connected_agents(cluster));
    assert!(
        connected.contains(&victim),
        "the real agent is still connected: {connected:?}"
    );
    // And the task ends with its real outcome.
    let done = tokio::task::block_in_place(|| {
        wait_for(Duration::from_secs(30), || {
            tasks(cluster)
                .into_iter()
                .find(|t| t["id"] == task.as_str() && t["state"] != "RUNNING")
        })
    })
    .expect("the task ended");
    assert_eq!(done["state"], "FINISHED", "{done}");
}

#[test]
fn a_revoked_agent_is_cut_off_and_its_tasks_are_lost() {
    let mut cluster = Cluster::start_tls(1, &[], &["--cpus", "1"]);
    let agent = cluster.agent_id(0);
    detached_sleepers(&cluster, 2, 30_000);
    running(&cluster, 2);
    let out = cluster
        .cli()
        .args(["agent", "revoke", &agent, "--master", &cluster.url])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("2 of its tasks reported LOST"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lost: Vec<Value> = tasks(&cluster)
        .into_iter()
        .filter(|t| t["state"] == "LOST")
        .collect();
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert!(lost.iter().all(|t| t["reason"] == "AGENT_LOST"), "{lost:?}");
    // The agent process is refused on its next attach and exits.
    let child = cluster.agents[0].child.as_mut().unwrap();
    let status = wait_for(Duration::from_secs(30), || child.try_wait().unwrap())
        .expect("the revoked agent exits");
    assert!(!status.success());
    cluster.agents[0].child = None;
    assert!(connected_agents(&cluster).is_empty());
}

#[test]
fn a_certificate_about_to_expire_is_renewed_without_dropping_a_task() {
    let mut cluster = Cluster::start_tls(1, &["--agent-cert-ttl", "3s"], &["--cpus", "1"]);
    let identity = cluster.agents[0].work_dir.join("tls/identity.json");
    let first = std::fs::read_to_string(&identity).unwrap();
    // One task that runs through several renewals, and past the first
    // certificate's end.
    detached_sleepers(&cluster, 1, 5000);
    let task = running(&cluster, 1)[0]["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(10), || {
        (std::fs::read_to_string(&identity).ok()? != first).then_some(())
    })
    .expect("the certificate was renewed");
    let done = wait_for(Duration::from_secs(30), || {
        tasks(&cluster)
            .into_iter()
            .find(|t| t["id"] == task.as_str() && t["state"] != "RUNNING")
    })
    .expect("the task ended");
    assert_eq!(done["state"], "FINISHED", "{done}");
    // The first certificate has expired by now; a new connection (after a
    // master restart) uses the renewed one.
    cluster.kill_master();
    cluster.restart_master();
    cluster.wait_agents(1);
}

#[test]
fn login_saves_a_profile_that_later_commands_use_with_no_flags() {
    let cluster = Cluster::start_tls(1, &[], &[]);
    let profile = cluster.dir.path().join("profile.json");
    let bad = wasmos()
        .env("WASMOS_PROFILE", &profile)
        .args(["login", &cluster.url, "--ca"])
        .arg(&tls(&cluster).ca)
        .args(["--token", &format!("{}.{}", "0".repeat(16), "0".repeat(64))])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("refused these credentials"),
        "{}",
        stderr(&bad)
    );
    assert!(!profile.exists(), "nothing saved for credentials that fail");

    let out = wasmos()
        .env("WASMOS_PROFILE", &profile)
        .args(["login", &cluster.url, "--ca"])
        .arg(&tls(&cluster).ca)
        .args(["--token", &tls(&cluster).token])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&profile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the profile holds a token");
    }
    let out = wasmos()
        .env("WASMOS_PROFILE", &profile)
        .args(["agents", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
}

#[test]
fn an_operators_own_certificate_is_served_and_agents_join_by_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let own = wasmos_tls::Ca::generate("operator").unwrap();
    let served = own
        .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
        .unwrap();
    let (cert, key) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    std::fs::write(&cert, &served.cert_chain_pem).unwrap();
    std::fs::write(&key, &served.key_pem).unwrap();
    let cert = cert.to_str().unwrap().to_string();
    let key = key.to_str().unwrap().to_string();
    let cluster = Cluster::start_tls(1, &["--tls-cert", &cert, "--tls-key", &key], &[]);
    assert_eq!(
        std::fs::read_to_string(&tls(&cluster).ca).unwrap().trim(),
        own.cert_pem().trim(),
        "clients are told to trust the operator's CA"
    );
    assert!(
        tls(&cluster).join.ends_with(own.pin()),
        "the join string pins the operator's CA: {}",
        tls(&cluster).join
    );
    assert_eq!(
        connected_agents(&cluster).len(),
        1,
        "the agent joined and attached"
    );
}
