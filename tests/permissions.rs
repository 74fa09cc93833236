//! Principals and permissions, tried as an attacker would: through real
//! processes, real TLS on loopback and the public gRPC API. Each rule of
//! SECURITY.md's permission table is a test that fails if the rule breaks.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::events::next_offer;
use support::{Cluster, guest, https_get, wait_for};
use tokio_stream::StreamExt;
use tonic::Code;
use wasmos_proto::v1;
use wasmos_proto::v1::artifacts_client::ArtifactsClient;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_proto::v1::scheduler_client::SchedulerClient;
use wasmos_sdk::{Channel, Client, ConnectOptions};

fn tls(cluster: &Cluster) -> &support::Tls {
    cluster.tls.as_ref().expect("a TLS cluster")
}

/// `wasmos token create` with `args` as the admin; the token.
fn token(cluster: &Cluster, args: &[&str]) -> String {
    cluster.token(args)
}

/// `wasmos` as the holder of `token`.
fn cli_as(cluster: &Cluster, token: &str) -> std::process::Command {
    let mut cmd = cluster.cli();
    cmd.env("WASMOS_TOKEN", token)
        .env("WASMOS_MASTER", &cluster.url);
    cmd
}

/// Runs `wasmos args` as `token`; (success, stdout, stderr).
fn run_as(cluster: &Cluster, token: &str, args: &[&str]) -> (bool, String, String) {
    let out = cli_as(cluster, token).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `wasmos ps --json` as `token`.
fn ps_as(cluster: &Cluster, token: &str) -> Vec<Value> {
    let (ok, out, err) = run_as(cluster, token, &["ps", "--json"]);
    assert!(ok, "ps: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn channel(cluster: &Cluster, token: &str) -> Channel {
    cluster.channel_as(token).await
}

fn denied<T: std::fmt::Debug>(result: Result<T, tonic::Status>, what: &str) -> String {
    match result {
        Err(status) if status.code() == Code::PermissionDenied => status.message().to_string(),
        other => panic!("{what}: expected PERMISSION_DENIED, got {other:?}"),
    }
}

/// A framework subscribed over raw gRPC as `token` in `role`: its id and
/// its event stream.
async fn subscribe(
    cluster: &Cluster,
    token: &str,
    role: &str,
    framework_id: &str,
) -> Result<(String, tonic::Streaming<v1::Event>), tonic::Status> {
    let call = SchedulerClient::new(channel(cluster, token).await)
        .subscribe(v1::SubscribeRequest {
            framework: Some(v1::FrameworkInfo {
                framework_id: framework_id.into(),
                name: "probe".into(),
                role: role.into(),
                ..Default::default()
            }),
        })
        .await;
    support::events::subscribed(call).await
}

/// The audit log as the admin reads it (`wasmos audit`).
fn audit(cluster: &Cluster) -> Vec<Value> {
    let (ok, out, err) = run_as(cluster, &tls(cluster).token, &["audit"]);
    assert!(ok, "audit: {err}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Alice (role batch) runs a detached job that writes a secret; bob (role
/// ci) tries everything the attacker did, with alice's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principal_cannot_see_use_or_take_over_another_principals_framework_and_tasks() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "4"]);
    let alice = token(&cluster, &["--principal", "alice", "--roles", "batch"]);
    let bob = token(&cluster, &["--principal", "bob", "--roles", "ci"]);

    // Alice's job: a task that writes secret.txt and one that keeps running.
    let files = guest("files").display().to_string();
    let (ok, _, err) = run_as(
        &cluster,
        &alice,
        &[
            "run",
            &files,
            "--role",
            "batch",
            "--disk",
            "1MiB",
            "--",
            "write",
            "secret.txt",
            "hunter2",
        ],
    );
    assert!(ok, "alice's job: {err}");
    let sleeper = guest("sleeper").display().to_string();
    let (ok, _, err) = run_as(
        &cluster,
        &alice,
        &[
            "run", &sleeper, "--role", "batch", "--detach", "--cpus", "0.1", "--", "60000", "0",
        ],
    );
    assert!(ok, "alice's detached job: {err}");
    let tasks = wait_for(Duration::from_secs(30), || {
        let tasks = ps_as(&cluster, &alice);
        tasks
            .iter()
            .any(|t| t["state"] == "RUNNING")
            .then_some(tasks)
    })
    .expect("alice's sleeper runs");
    assert!(tasks.iter().all(|t| t["principal"] == "alice"), "{tasks:?}");
    let writer = tasks
        .iter()
        .find(|t| t["state"] == "FINISHED")
        .expect("the writer finished");
    let writer_id = writer["id"].as_str().unwrap().to_string();
    let running = tasks.iter().find(|t| t["state"] == "RUNNING").unwrap();
    let running_id = running["id"].as_str().unwrap().to_string();
    let framework = running["framework"].as_str().unwrap().to_string();

    // Alice reads her own secret.
    let (ok, out, err) = run_as(&cluster, &alice, &["cat", &writer_id, "secret.txt"]);
    assert!(
        ok && out.contains("hunter2"),
        "alice's own file: {out} {err}"
    );

    // Bob sees none of it.
    assert!(ps_as(&cluster, &bob).is_empty(), "bob sees alice's tasks");
    let (ok, out, _) = run_as(&cluster, &bob, &["frameworks", "--json"]);
    assert!(
        ok && out.trim().is_empty(),
        "bob sees alice's framework: {out}"
    );
    // ...cannot read it, kill it or tear it down through the CLI...
    let (ok, out, err) = run_as(&cluster, &bob, &["cat", &writer_id, "secret.txt"]);
    assert!(
        !ok && !out.contains("hunter2"),
        "bob read the secret: {out}"
    );
    assert!(err.contains("alice"), "the refusal names the owner: {err}");
    let (ok, _, err) = run_as(&cluster, &bob, &["logs", &writer_id]);
    assert!(!ok, "bob read alice's logs");
    assert!(err.contains("alice"), "{err}");
    let (ok, _, err) = run_as(&cluster, &bob, &["kill", &running_id]);
    assert!(
        !ok && err.contains("alice"),
        "bob killed alice's task: {err}"
    );

    // ...nor through the Scheduler with alice's framework id.
    let channel_b = channel(&cluster, &bob).await;
    let mut scheduler = SchedulerClient::new(channel_b.clone());
    let f = || framework.clone();
    denied(
        scheduler
            .kill(v1::KillRequest {
                framework_id: f(),
                task_ids: vec![running_id.clone()],
            })
            .await,
        "kill",
    );
    denied(
        scheduler
            .reconcile(v1::ReconcileRequest {
                framework_id: f(),
                task_ids: vec![running_id.clone()],
            })
            .await,
        "reconcile",
    );
    denied(
        scheduler
            .acknowledge(v1::AcknowledgeRequest {
                framework_id: f(),
                acks: vec![],
            })
            .await,
        "acknowledge",
    );
    denied(
        scheduler
            .suppress(v1::SuppressRequest { framework_id: f() })
            .await,
        "suppress",
    );
    denied(
        scheduler
            .revive(v1::ReviveRequest {
                framework_id: f(),
                demand: None,
            })
            .await,
        "revive",
    );
    denied(
        scheduler
            .set_demand(v1::SetDemandRequest {
                framework_id: f(),
                demand: None,
            })
            .await,
        "set_demand",
    );
    denied(
        scheduler
            .accept(v1::AcceptRequest {
                framework_id: f(),
                ..Default::default()
            })
            .await,
        "accept",
    );
    let message = denied(
        scheduler
            .teardown(v1::TeardownRequest { framework_id: f() })
            .await,
        "teardown",
    );
    assert!(
        message.contains("alice") && message.contains("bob"),
        "{message}"
    );
    // Taking over the subscription.
    denied(
        subscribe(&cluster, &bob, "batch", &framework)
            .await
            .map(|_| ()),
        "re-subscribe as alice's framework",
    );
    denied(
        subscribe(&cluster, &bob, "ci", &framework)
            .await
            .map(|_| ()),
        "re-subscribe as alice's framework in bob's role",
    );
    // A role that is not bob's.
    let message = denied(
        subscribe(&cluster, &bob, "batch", "").await.map(|_| ()),
        "subscribe in alice's role",
    );
    assert!(message.contains("`batch`"), "{message}");
    // Through the Operator service.
    let mut operator = OperatorClient::new(channel_b.clone());
    denied(
        operator
            .kill_tasks(v1::OperatorKillRequest {
                task_ids: vec![running_id.clone()],
            })
            .await,
        "operator kill",
    );
    denied(
        operator
            .read_sandbox(v1::ReadSandboxRequest {
                task_id: writer_id.clone(),
                target: v1::SandboxTarget::File as i32,
                path: "secret.txt".into(),
                ..Default::default()
            })
            .await,
        "read sandbox",
    );
    denied(
        operator
            .drain_agent(v1::DrainAgentRequest {
                agent_id: cluster.agent_id(0),
            })
            .await,
        "drain",
    );
    denied(
        operator
            .update_role(v1::UpdateRoleRequest {
                role: "batch".into(),
                weight: Some(1e-300),
                quota: None,
            })
            .await,
        "weight",
    );
    denied(
        operator
            .create_token(v1::CreateTokenRequest {
                kind: v1::TokenKind::Admin as i32,
                ..Default::default()
            })
            .await,
        "create an admin token",
    );
    let listed = operator
        .list_tasks(v1::ListTasksRequest {
            task_ids: vec![writer_id.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.tasks.is_empty(), "bob lists alice's task by id");

    // Alice's offers: bob's own framework cannot use or decline them.
    let (_, mut alice_events) = subscribe(&cluster, &alice, "batch", "").await.unwrap();
    let offer = next_offer(&mut alice_events).await;
    let (bob_fw, _bob_events) = subscribe(&cluster, &bob, "ci", "").await.unwrap();
    let spec = v1::TaskSpec {
        task_id: "bob-steals".into(),
        artifact: "0".repeat(64),
        resources: Some(v1::Resources {
            cpus: 0.1,
            mem: 16 << 20,
            disk: 0,
        }),
        ..Default::default()
    };
    denied(
        scheduler
            .accept(v1::AcceptRequest {
                framework_id: bob_fw.clone(),
                offer_ids: vec![offer.offer_id.clone()],
                tasks: vec![spec.clone()],
                ..Default::default()
            })
            .await,
        "accept alice's offer",
    );
    denied(
        scheduler
            .decline(v1::DeclineRequest {
                framework_id: bob_fw.clone(),
                offer_ids: vec![offer.offer_id.clone()],
                ..Default::default()
            })
            .await,
        "decline alice's offer",
    );

    // Alice's artifact: bob can neither fetch it nor launch it.
    let digest = writer["artifact"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| wasmos_sdk::digest_of(&std::fs::read(guest("files")).unwrap()));
    let mut artifacts = ArtifactsClient::new(channel_b.clone());
    let fetched = artifacts
        .stat(v1::StatRequest {
            digest: digest.clone(),
        })
        .await;
    assert_eq!(fetched.unwrap_err().code(), Code::NotFound);
    let fetched = match artifacts
        .fetch(v1::FetchRequest {
            digest: digest.clone(),
        })
        .await
    {
        Ok(mut stream) => stream.get_mut().next().await.unwrap().map(|_| ()),
        Err(status) => Err(status),
    };
    assert_eq!(fetched.unwrap_err().code(), Code::NotFound);
    let bob_offer = {
        drop(alice_events); // alice's offers go back to the pool
        let (_, mut bob_events) = subscribe(&cluster, &bob, "ci", &bob_fw).await.unwrap();
        (next_offer(&mut bob_events).await, bob_events)
    };
    let message = denied(
        scheduler
            .accept(v1::AcceptRequest {
                framework_id: bob_fw.clone(),
                offer_ids: vec![bob_offer.0.offer_id.clone()],
                tasks: vec![v1::TaskSpec {
                    artifact: digest.clone(),
                    ..spec
                }],
                ..Default::default()
            })
            .await,
        "launch alice's artifact",
    );
    assert!(message.contains(&digest), "{message}");

    // Alice's framework and task are untouched; alice can tear it down.
    let after = ps_as(&cluster, &alice);
    let still = after
        .iter()
        .find(|t| t["id"] == running_id.as_str())
        .unwrap();
    assert_eq!(still["state"], "RUNNING", "{still}");
    let mut alice_scheduler = SchedulerClient::new(channel(&cluster, &alice).await);
    alice_scheduler
        .teardown(v1::TeardownRequest {
            framework_id: framework.clone(),
        })
        .await
        .unwrap();

    // Every refusal is in the audit log, under bob's name.
    let entries = audit(&cluster);
    let bob_refused: Vec<&Value> = entries
        .iter()
        .filter(|e| e["who"] == "bob" && e["allowed"] == false)
        .collect();
    for call in [
        "Scheduler.Kill",
        "Scheduler.Teardown",
        "Scheduler.Subscribe",
        "Scheduler.Accept",
        "Operator.KillTasks",
        "Operator.ReadSandbox",
        "Operator.DrainAgent",
        "Operator.UpdateRole",
        "Operator.CreateToken",
        "Artifacts.Read",
    ] {
        assert!(
            bob_refused.iter().any(|e| e["call"] == call),
            "no refusal of {call} in the audit log: {bob_refused:?}"
        );
    }
    assert!(
        entries.iter().any(|e| e["who"] == "alice"
            && e["call"] == "Scheduler.Teardown"
            && e["allowed"] == true
            && e["args"]["framework_id"] == framework.as_str()),
        "alice's teardown is audited"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_tokens_list_everything_and_change_nothing() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let alice = token(&cluster, &["--principal", "alice", "--roles", "batch"]);
    let viewer = token(&cluster, &["--read-only"]);
    let sleeper = guest("sleeper").display().to_string();
    let (ok, _, err) = run_as(
        &cluster,
        &alice,
        &[
            "run", &sleeper, "--role", "batch", "--detach", "--cpus", "0.1", "--", "60000", "0",
        ],
    );
    assert!(ok, "{err}");
    let task = wait_for(Duration::from_secs(30), || {
        ps_as(&cluster, &viewer)
            .into_iter()
            .find(|t| t["state"] == "RUNNING")
    })
    .expect("the read-only token sees alice's task");
    assert_eq!(task["principal"], "alice");
    let id = task["id"].as_str().unwrap().to_string();
    let (ok, out, _) = run_as(&cluster, &viewer, &["frameworks", "--json"]);
    assert!(ok && out.contains("\"principal\":\"alice\""), "{out}");
    let (ok, out, err) = run_as(&cluster, &viewer, &["token", "list"]);
    assert!(
        ok && out.contains("alice") && out.contains("read-only"),
        "{out}{err}"
    );
    assert!(
        !out.contains(alice.split('.').nth(1).unwrap()),
        "a secret is listed"
    );

    let agent = cluster.agent_id(0);
    for args in [
        vec!["kill", id.as_str()],
        vec!["agent", "drain", agent.as_str()],
        vec!["roles", "set", "batch", "--weight", "2"],
        vec!["token", "create", "--read-only"],
        vec!["agent", "revoke", agent.as_str()],
    ] {
        let (ok, _, err) = run_as(&cluster, &viewer, &args);
        assert!(!ok, "read-only could {args:?}");
        assert!(
            err.contains("read-only") || err.contains("admin"),
            "{args:?}: {err}"
        );
    }
    denied(
        subscribe(&cluster, &viewer, "default", "")
            .await
            .map(|_| ()),
        "read-only subscribes",
    );
    let still = ps_as(&cluster, &viewer);
    assert!(
        still
            .iter()
            .any(|t| t["id"] == id.as_str() && t["state"] == "RUNNING")
    );

    // /state and /metrics: read-only and admin tokens, not principals.
    let state = https_get(
        &format!("{}/state", cluster.http),
        &tls(&cluster).ca_pem,
        Some(&viewer),
    );
    let state: Value = serde_json::from_str(&state).expect("read-only reads /state");
    assert!(state["tasks"].as_array().is_some_and(|t| !t.is_empty()));
    let metrics = https_get(
        &format!("{}/metrics", cluster.http),
        &tls(&cluster).ca_pem,
        Some(&viewer),
    );
    assert!(metrics.contains("wasmos_"), "{metrics}");
    let refused = https_get(
        &format!("{}/state", cluster.http),
        &tls(&cluster).ca_pem,
        Some(&alice),
    );
    assert!(
        refused.contains(" 403 "),
        "a principal read /state: {refused}"
    );
    let refused = https_get(
        &format!("{}/metrics", cluster.http),
        &tls(&cluster).ca_pem,
        None,
    );
    assert!(
        refused.contains(" 401 "),
        "/metrics without a token: {refused}"
    );

    // whoami says who each one is.
    let (ok, out, _) = run_as(&cluster, &viewer, &["whoami"]);
    assert!(
        ok && out.contains("read-only") && out.contains("change nothing"),
        "{out}"
    );
    let (ok, out, _) = run_as(&cluster, &alice, &["whoami"]);
    assert!(
        ok && out.starts_with("alice (principal, roles batch"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_or_expired_token_fails_its_next_call_and_its_streams_close() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let alice = token(&cluster, &["--principal", "alice", "--roles", "batch"]);
    let accessor = alice.split('.').next().unwrap().to_string();
    let (_, mut events) = subscribe(&cluster, &alice, "batch", "").await.unwrap();
    let (ok, _, err) = run_as(
        &cluster,
        &tls(&cluster).token,
        &["token", "revoke", &accessor],
    );
    assert!(ok, "{err}");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the revoked token's stream closed");
    let status = ended.expect("the stream ended with a status");
    assert_eq!(status.code(), Code::Unauthenticated, "{status}");
    assert!(status.message().contains("revoked"), "{status}");
    let (ok, _, err) = run_as(&cluster, &alice, &["ps"]);
    assert!(
        !ok && err.contains("revoked"),
        "a revoked token still works: {err}"
    );
    let (_, listed, _) = run_as(&cluster, &tls(&cluster).token, &["token", "list"]);
    assert!(!listed.contains(&accessor), "{listed}");

    // A token with a short life: good, then refused; its stream closes.
    let brief = token(
        &cluster,
        &["--principal", "carol", "--roles", "batch", "--ttl", "3s"],
    );
    let (ok, _, err) = run_as(&cluster, &brief, &["ps"]);
    assert!(ok, "a fresh token is refused: {err}");
    let (_, mut events) = subscribe(&cluster, &brief, "batch", "").await.unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match events.next().await {
                Some(Ok(_)) => continue,
                Some(Err(status)) => return Some(status),
                None => return None,
            }
        }
    })
    .await
    .expect("the expired token's stream closed");
    let status = ended.expect("the stream ended with a status");
    assert!(status.message().contains("expired"), "{status}");
    let (ok, _, err) = run_as(&cluster, &brief, &["ps"]);
    assert!(
        !ok && err.contains("expired"),
        "an expired token still works: {err}"
    );

    // Each is in the audit log; no secret is.
    let entries = audit(&cluster);
    assert!(entries.iter().any(|e| e["call"] == "Operator.RevokeToken"
        && e["args"]["accessor"] == accessor.as_str()
        && e["allowed"] == true));
    assert!(
        entries
            .iter()
            .any(|e| e["call"] == "(credential)" && e["allowed"] == false)
    );
    let log = std::fs::read_to_string(cluster.dir.path().join("master/audit.log")).unwrap();
    for secret in [&alice, &brief, &tls(&cluster).token] {
        let secret = secret.split('.').nth(1).unwrap();
        assert!(!log.contains(secret), "a secret is in the audit log");
    }
}

#[test]
fn admins_drain_and_undrain_agents_and_absurd_weights_are_refused() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let admin = tls(&cluster).token.clone();
    let agent = cluster.agent_id(0);
    let state = |cluster: &Cluster| {
        let (ok, out, err) = run_as(cluster, &admin, &["agents", "--json"]);
        assert!(ok, "{err}");
        let agents: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        agents[0]["state"].as_str().unwrap().to_string()
    };
    let (ok, _, err) = run_as(&cluster, &admin, &["agent", "drain", &agent]);
    assert!(ok, "{err}");
    assert_eq!(state(&cluster), "draining");
    let (ok, _, err) = run_as(&cluster, &admin, &["agent", "undrain", &agent]);
    assert!(ok, "{err}");
    assert_eq!(state(&cluster), "connected");
    // Offered again: a job runs.
    let hello = guest("hello").display().to_string();
    let out = cli_as(&cluster, &admin)
        .args(["run", &hello, "-n", "2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    for weight in ["1e-300", "0", "1e9"] {
        let (ok, _, err) = run_as(
            &cluster,
            &admin,
            &["roles", "set", "batch", "--weight", weight],
        );
        assert!(!ok, "weight {weight} was accepted");
        assert!(err.contains("0.001..=1000"), "{weight}: {err}");
    }
    let (ok, _, err) = run_as(
        &cluster,
        &admin,
        &["roles", "set", "batch", "--weight", "2.5"],
    );
    assert!(ok, "{err}");

    let entries = audit(&cluster);
    for call in ["Operator.DrainAgent", "Operator.UndrainAgent"] {
        assert!(
            entries.iter().any(|e| e["call"] == call
                && e["allowed"] == true
                && e["args"]["agent_id"] == agent.as_str()),
            "{call} is audited"
        );
    }
    assert!(entries.iter().any(|e| e["call"] == "Operator.UpdateRole"
        && e["allowed"] == false
        && e["args"]["weight"] == 1e-300));
    assert!(entries.iter().any(|e| e["call"] == "Operator.UpdateRole"
        && e["allowed"] == true
        && e["args"]["weight"] == 2.5));
    assert!(
        entries
            .iter()
            .any(|e| e["call"] == "Operator.CreateToken" && e["allowed"] == true)
    );
    let since = run_as(&cluster, &admin, &["audit", "--since", "1h"]).1;
    assert_eq!(since.lines().count(), entries.len());
    let none = run_as(&cluster, &admin, &["audit", "--since", "1ms"]).1;
    assert!(none.lines().count() < entries.len());
}

#[test]
fn artifacts_count_against_their_principals_quota() {
    let cluster = Cluster::start_tls(0, &["--artifact-quota", "3MiB"], &[]);
    let alice = token(&cluster, &["--principal", "alice", "--roles", "batch"]);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, fill: u8| {
        let path = dir.path().join(name);
        std::fs::write(&path, vec![fill; 2 << 20]).unwrap();
        path
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upload = |token: &str, path: &std::path::Path| {
        let options = ConnectOptions {
            ca_pem: Some(tls(&cluster).ca_pem.clone()),
            token: Some(token.to_string()),
            identity: None,
        };
        rt.block_on(async {
            let client = Client::connect_with(cluster.url.clone(), options)
                .await
                .unwrap();
            client.upload_raw(&std::fs::read(path).unwrap()).await
        })
    };
    let first = write("a.bin", 1);
    upload(&alice, &first).expect("the first 2 MiB fit alice's quota");
    // The same bytes again cost nothing more.
    upload(&alice, &first).expect("re-uploading what alice owns");
    let refused = upload(&alice, &write("b.bin", 2)).unwrap_err().to_string();
    assert!(refused.contains("quota"), "{refused}");
    // Admins have no quota.
    upload(&tls(&cluster).token, &write("c.bin", 3)).expect("the admin uploads");
}

#[test]
fn metrics_public_opens_only_metrics_and_only_on_loopback() {
    let cluster = Cluster::start_tls(0, &["--metrics-public"], &[]);
    let ca = &tls(&cluster).ca_pem;
    let metrics = https_get(&format!("{}/metrics", cluster.http), ca, None);
    assert!(metrics.contains("wasmos_agents"), "{metrics}");
    let state = https_get(&format!("{}/state", cluster.http), ca, None);
    assert!(state.contains(" 401 "), "/state without a token: {state}");

    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("m");
    let out = support::wasmos()
        .args(["master", "--listen", "127.0.0.1:0", "--http", "0.0.0.0:0"])
        .arg("--metrics-public")
        .arg("--work-dir")
        .arg(&work)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("loopback"), "{err}");
    assert!(!work.exists(), "nothing was opened or written");
}

/// An agent fetches the artifacts of tasks placed on it, and no other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_fetches_only_the_artifacts_of_its_own_tasks() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let hello = guest("hello").display().to_string();
    let cluster_ref = &cluster;
    let out = tokio::task::block_in_place(|| {
        cluster_ref
            .cli()
            .args(["run", &hello, "--master", &cluster_ref.url])
            .output()
            .unwrap()
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = wasmos_sdk::digest_of(&std::fs::read(guest("hello")).unwrap());

    // Another agent, joined with the cluster's join string: its certificate
    // is good, but no task of that module was placed on it.
    let join = wasmos_tls::JoinString::parse(&tls(&cluster).join).unwrap();
    let other = wasmos_agent::identity::Identity::join(
        &cluster.dir.path().join("other-agent"),
        &join,
        "other",
    )
    .await
    .unwrap();
    let channel = tonic::transport::Endpoint::from_shared(cluster.url.clone())
        .unwrap()
        .tls_config(other.client_tls().tonic())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let refused = ArtifactsClient::new(channel)
        .stat(v1::StatRequest {
            digest: digest.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused}");
    // The admin may read it, so it exists.
    ArtifactsClient::new(channel_admin(&cluster).await)
        .stat(v1::StatRequest { digest })
        .await
        .expect("the artifact is stored");
}

async fn channel_admin(cluster: &Cluster) -> Channel {
    channel(cluster, &tls(cluster).token).await
}
