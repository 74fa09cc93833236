//! What each kind of token may reach through a sandbox read, tried as an
//! attacker would: task ids and paths that name directories outside every
//! sandbox (the agent host's `/`, the agent's own `tls/`) are refused for
//! every token, a task's files are read only by those who may see the task,
//! and every read is audited.

mod support;

use serde_json::Value;
use support::{Cluster, guest};
use tonic::Code;
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::Channel;

async fn operator(cluster: &Cluster, token: &str) -> OperatorClient<Channel> {
    OperatorClient::new(cluster.channel_as(token).await)
}

fn read(
    task_id: &str,
    target: v1::SandboxTarget,
    path: &str,
    agent: &str,
) -> v1::ReadSandboxRequest {
    v1::ReadSandboxRequest {
        task_id: task_id.into(),
        target: target.into(),
        path: path.into(),
        agent_id: agent.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_reads_reach_only_the_sandboxes_of_tasks_the_caller_may_see() {
    let cluster = Cluster::start_tls(1, &[], &["--cpus", "2"]);
    let agent = cluster.agent_id(0);
    let admin = cluster.tls.as_ref().unwrap().token.clone();
    let alice = cluster.token(&["--principal", "alice", "--roles", "batch"]);
    let bob = cluster.token(&["--principal", "bob", "--roles", "ci"]);
    let viewer = cluster.token(&["--read-only"]);

    // Alice's task writes a secret into its sandbox.
    let files = guest("files").display().to_string();
    let out = cluster
        .cli()
        .env("WASMOS_TOKEN", &alice)
        .env("WASMOS_MASTER", &cluster.url)
        .args([
            "run", &files, "--role", "batch", "--disk", "1MiB", "--json", "--",
        ])
        .args(["write", "secret.txt", "hunter2"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = cluster
        .cli()
        .env("WASMOS_TOKEN", &alice)
        .env("WASMOS_MASTER", &cluster.url)
        .args(["ps", "--json"])
        .output()
        .unwrap();
    let task: Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).lines().next().unwrap()).unwrap();
    let task_id = task["id"].as_str().unwrap().to_string();

    let mut calls = 0;
    let kinds = [
        ("admin", &admin),
        ("read-only", &viewer),
        ("alice", &alice),
        ("bob", &bob),
    ];
    for (kind, token) in kinds {
        let mut client = operator(&cluster, token).await;
        // Ids that would name a directory outside every sandbox, by agent
        // (the master lists no such task) and by themselves.
        for bad_id in ["/", "/proc/self", "..", ".", "../..", "/etc", "a/../.."] {
            for agent_id in [agent.as_str(), ""] {
                for (target, path) in [
                    (v1::SandboxTarget::List, ""),
                    (v1::SandboxTarget::List, "tls"),
                    (v1::SandboxTarget::File, "tls/agent.key"),
                    (v1::SandboxTarget::Stdout, ""),
                ] {
                    calls += 1;
                    let result = client
                        .read_sandbox(read(bad_id, target, path, agent_id))
                        .await;
                    match result {
                        Err(status) if status.code() == Code::InvalidArgument => {
                            assert!(status.message().contains("task id"), "{status:?}");
                        }
                        other => panic!(
                            "{kind}: read of task id {bad_id:?} {target:?} {path:?} at agent {agent_id:?}: {other:?}"
                        ),
                    }
                }
            }
        }
        // Paths out of alice's task's root.
        for bad_path in [
            "..",
            "../..",
            "/../../tls",
            "../../../agent_id",
            "x/../../..",
        ] {
            for target in [v1::SandboxTarget::List, v1::SandboxTarget::File] {
                calls += 1;
                let result = client
                    .read_sandbox(read(&task_id, target, bad_path, ""))
                    .await;
                match result {
                    Err(status) if status.code() == Code::InvalidArgument => {}
                    other => panic!("{kind}: {target:?} of {bad_path:?}: {other:?}"),
                }
            }
        }
        // What the task holds: for those who may see it, and nobody else.
        calls += 2;
        let listed = client
            .read_sandbox(read(&task_id, v1::SandboxTarget::List, "/", ""))
            .await;
        let file = client
            .read_sandbox(read(&task_id, v1::SandboxTarget::File, "/secret.txt", ""))
            .await;
        if kind == "bob" {
            for result in [listed, file] {
                let status = result.unwrap_err();
                assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
                assert!(status.message().contains("alice"), "{status:?}");
            }
        } else {
            let names: Vec<String> = listed
                .unwrap()
                .into_inner()
                .entries
                .into_iter()
                .map(|e| e.name)
                .collect();
            assert_eq!(names, vec!["secret.txt".to_string()], "{kind}");
            assert_eq!(file.unwrap().into_inner().data, b"hunter2", "{kind}");
        }
    }

    // Every read is in the audit log, allowed or refused: repeats of a
    // refusal are summed up into one line once their window closes.
    let audited = |entries: &[Value]| -> u64 {
        entries
            .iter()
            .map(|e| e["repeated"].as_u64().unwrap_or(1))
            .sum()
    };
    let read_audit = || -> Vec<Value> {
        let out = cluster
            .cli()
            .env("WASMOS_MASTER", &cluster.url)
            .args(["audit", "--limit", "100000"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .filter(|e: &Value| e["call"] == "Operator.ReadSandbox")
            .collect()
    };
    let entries = support::wait_for(std::time::Duration::from_secs(30), || {
        let entries = read_audit();
        (audited(&entries) >= calls).then_some(entries)
    })
    .unwrap_or_else(|| panic!("{} of {calls} reads audited", audited(&read_audit())));
    // (`wasmos run` read her task's stdout too.)
    for (target, path) in [
        ("SANDBOX_TARGET_LIST", "/"),
        ("SANDBOX_TARGET_FILE", "/secret.txt"),
    ] {
        assert!(
            entries.iter().any(|e| e["allowed"] == true
                && e["who"] == "alice"
                && e["args"]["target"] == target
                && e["args"]["path"] == path),
            "alice's {target} read: {entries:#?}"
        );
    }
    assert!(
        entries
            .iter()
            .any(|e| e["allowed"] == false && e["who"] == "bob" && e["code"] == "InvalidArgument"),
        "bob's escapes are audited: {entries:#?}"
    );
}
