//! Operator commands: `ps`, `logs`, `kill`, `ls`, `cat`, `agents`,
//! `frameworks`, `roles`. Each goes through the master's `Operator` service,
//! so it works from any shell on any task, and each has `--json`.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use std::path::PathBuf;

use wasmos_master::Resources;
use wasmos_proto::v1;
use wasmos_proto::v1::operator_client::OperatorClient;
use wasmos_sdk::{Channel, Client, ConnectOptions, Profile};

use crate::paging::Paging;

/// Where the master is and how to reach it. Each comes from its flag,
/// then its environment variable, then the profile `wasmos login` wrote.
#[derive(clap::Args, Debug, Clone)]
pub struct MasterArg {
    /// The master's URL, or several masters' comma-separated (the first
    /// that answers, the leader, is used) [default: the profile's, else
    /// http://127.0.0.1:5050].
    #[arg(long, env = "WASMOS_MASTER", global = true)]
    pub master: Option<String>,
    /// The cluster's CA certificate (PEM) to verify an https:// master by
    /// (a master writes it to <work-dir>/ca.pem).
    #[arg(long, env = "WASMOS_CA", global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// The token every call carries (a new master writes its admin token to
    /// <work-dir>/admin.token).
    #[arg(long, env = "WASMOS_TOKEN", global = true, hide_env_values = true)]
    pub token: Option<String>,
}

impl MasterArg {
    /// The master's URL and what to trust and show it.
    pub fn target(&self) -> anyhow::Result<(String, ConnectOptions)> {
        let profile = Profile::load()?.unwrap_or_default();
        let url = self
            .master
            .clone()
            .or(profile.master)
            .unwrap_or_else(|| "http://127.0.0.1:5050".into());
        let mut options = ConnectOptions {
            ca_pem: profile.ca,
            token: profile.token,
            identity: None,
        };
        if let Some(ca) = &self.ca {
            options = options.ca_file(ca)?;
        }
        if let Some(token) = &self.token {
            options.token = Some(token.clone());
        }
        Ok((url, options))
    }

    pub async fn client(&self) -> anyhow::Result<Client> {
        let (url, options) = self.target()?;
        client(&url, options).await
    }

    pub async fn operator(&self) -> anyhow::Result<OperatorClient<Channel>> {
        Ok(operator_of(&self.client().await?))
    }
}

/// Connects, with an error that says what to do.
pub async fn client(url: &str, options: ConnectOptions) -> anyhow::Result<Client> {
    match Client::connect_with(url, options).await {
        Ok(client) => Ok(client),
        Err(wasmos_sdk::Error::Connect { .. }) => Err(anyhow::anyhow!(
            "no master at {url}: start one with `wasmos local` or `wasmos master`, or point --master / WASMOS_MASTER at it"
        )),
        Err(e) => Err(e.into()),
    }
}

/// The operator service of a connected client.
pub fn operator_of(client: &Client) -> OperatorClient<Channel> {
    OperatorClient::new(client.channel()).max_decoding_message_size(64 << 20)
}

/// The operator service of a local (plaintext, loopback) cluster.
pub async fn operator(url: &str) -> anyhow::Result<OperatorClient<Channel>> {
    Ok(operator_of(&client(url, ConnectOptions::default()).await?))
}

/// A gRPC error as one line.
pub fn grpc(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    #[command(flatten)]
    master: MasterArg,
    /// Only tasks of this framework.
    #[arg(long)]
    framework: Option<String>,
    /// Print one JSON object per task.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    paging: Paging,
}

pub async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let framework_id = args.framework.unwrap_or_default();
    let (tasks, matching) = args
        .paging
        .collect(async |page_size, page_token| {
            let answer = client
                .list_tasks(v1::ListTasksRequest {
                    framework_id: framework_id.clone(),
                    page_size,
                    page_token,
                    ..Default::default()
                })
                .await?
                .into_inner();
            Ok((answer.tasks, answer.next_page_token, answer.matching))
        })
        .await?;
    args.paging.note_left_out(tasks.len(), matching, "tasks");
    let mut out = std::io::stdout().lock();
    if args.json {
        for t in &tasks {
            writeln!(out, "{}", task_json(t))?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<28} {:<12} {:<10} {:<18} {:<14} {:<12} {:>6} {:>9}",
        "TASK", "STATE", "REASON", "AGENT", "FRAMEWORK", "PRINCIPAL", "CPUS", "MEM"
    )?;
    for t in &tasks {
        let status = t.status.clone().unwrap_or_default();
        let r = t.resources.unwrap_or_default();
        writeln!(
            out,
            "{:<28} {:<12} {:<10} {:<18} {:<14} {:<12} {:>6} {:>9}",
            t.task_id,
            state_name(status.state()),
            reason_name(status.reason()),
            short(&t.agent_id, 18),
            short(&t.framework_id, 14),
            short(&t.principal, 12),
            r.cpus,
            wasmos_master::resources::format_size(r.mem),
        )?;
    }
    Ok(())
}

pub fn task_json(t: &v1::TaskInfo) -> serde_json::Value {
    let status = t.status.clone().unwrap_or_default();
    let usage = status.usage.unwrap_or_default();
    serde_json::json!({
        "id": t.task_id,
        "framework": t.framework_id,
        "agent": t.agent_id,
        "principal": t.principal,
        "state": state_name(status.state()),
        "reason": reason_name(status.reason()),
        "message": status.message,
        "exit_code": status.exit_code,
        "usage": usage_json(&usage),
    })
}

/// Milliseconds since the Unix epoch as RFC 3339 (UTC, seconds); `None`
/// for 0 ("never").
pub fn wall_time(ms: u64) -> Option<String> {
    (ms != 0).then(|| {
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms),
        )
        .to_string()
    })
}

pub fn usage_json(u: &v1::TaskUsage) -> serde_json::Value {
    serde_json::json!({
        "fuel": u.fuel_consumed,
        "peak_mem": u.peak_mem,
        "wall_ms": u.wall_time_ms,
        "cpu_ms": u.cpu_time_ms,
        "stdout_bytes": u.stdout_bytes,
        "stderr_bytes": u.stderr_bytes,
        "disk_bytes": u.disk_bytes,
    })
}

/// `TASK_STATE_FINISHED` → `FINISHED`.
pub fn state_name(state: v1::TaskState) -> String {
    state
        .as_str_name()
        .trim_start_matches("TASK_STATE_")
        .to_string()
}

/// `REASON_OUT_OF_FUEL` → `OUT_OF_FUEL`; unspecified → empty.
pub fn reason_name(reason: v1::Reason) -> String {
    match reason {
        v1::Reason::Unspecified => String::new(),
        r => r.as_str_name().trim_start_matches("REASON_").to_string(),
    }
}

fn short(s: &str, n: usize) -> String {
    if s.len() <= n {
        s.to_string()
    } else {
        format!("…{}", &s[s.len() - (n - 1)..])
    }
}

#[derive(clap::Args, Debug)]
pub struct AgentArg {
    /// The agent the task ran on (`wasmos run --json` prints it): reads a
    /// task the master no longer lists (acknowledged before a master
    /// restart, or past its cap of completed tasks) from that agent.
    #[arg(long, value_name = "AGENT_ID", default_value = "")]
    agent: String,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    #[command(flatten)]
    master: MasterArg,
    /// The task.
    task: String,
    #[command(flatten)]
    agent: AgentArg,
    /// Show stderr instead of stdout.
    #[arg(long)]
    stderr: bool,
    /// Keep printing output as the task writes it, until it ends.
    #[arg(long, short)]
    follow: bool,
    /// Print each piece read as a JSON object: task, stream, offset, text.
    #[arg(long)]
    json: bool,
}

pub async fn logs(args: LogsArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let target = if args.stderr {
        v1::SandboxTarget::Stderr
    } else {
        v1::SandboxTarget::Stdout
    };
    // Whose task it is: in each JSON piece, and above the output on a
    // terminal (as `tail` names its files), never mixed into stdout.
    let listed = client
        .list_tasks(v1::ListTasksRequest {
            task_ids: vec![args.task.clone()],
            ..Default::default()
        })
        .await
        .map_err(grpc)?
        .into_inner()
        .tasks
        .pop();
    let principal = listed.as_ref().map(|t| t.principal.clone());
    if let Some(t) = &listed
        && !args.json
        && std::io::IsTerminal::is_terminal(&std::io::stderr())
    {
        eprintln!(
            "==> task {} (framework {}, principal {}) <==",
            t.task_id, t.framework_id, t.principal
        );
    }
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let reply = client
            .read_sandbox(v1::ReadSandboxRequest {
                task_id: args.task.clone(),
                target: target as i32,
                path: String::new(),
                offset,
                length: 1 << 20,
                agent_id: args.agent.agent.clone(),
            })
            .await
            .map_err(grpc)?
            .into_inner();
        let stream = if args.stderr { "stderr" } else { "stdout" };
        if args.json && !reply.data.is_empty() {
            let piece = serde_json::json!({"task": args.task, "principal": principal,
                "stream": stream, "offset": offset, "text": String::from_utf8_lossy(&reply.data)});
            writeln!(out, "{piece}")?;
        } else if !args.json {
            out.write_all(&reply.data)?;
        }
        out.flush()?;
        offset += reply.data.len() as u64;
        let more = offset < reply.size;
        if more {
            continue;
        }
        if !args.follow || reply.complete {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[derive(clap::Args, Debug)]
pub struct KillArgs {
    #[command(flatten)]
    master: MasterArg,
    /// The tasks to kill.
    #[arg(required = true)]
    tasks: Vec<String>,
    /// Print one JSON object per task the kill was sent to.
    #[arg(long)]
    json: bool,
}

pub async fn kill(args: KillArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    client
        .kill_tasks(v1::OperatorKillRequest {
            task_ids: args.tasks.clone(),
        })
        .await
        .map_err(grpc)?;
    if args.json {
        for task in &args.tasks {
            println!("{}", serde_json::json!({"task": task, "kill_sent": true}));
        }
    } else {
        println!("kill sent to {}", args.tasks.join(" "));
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    master: MasterArg,
    /// The task.
    task: String,
    #[command(flatten)]
    agent: AgentArg,
    /// A directory under the task's root.
    #[arg(default_value = "/")]
    path: String,
    #[arg(long)]
    json: bool,
}

pub async fn ls(args: LsArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let reply = client
        .read_sandbox(v1::ReadSandboxRequest {
            task_id: args.task,
            target: v1::SandboxTarget::List as i32,
            path: args.path,
            offset: 0,
            length: 0,
            agent_id: args.agent.agent,
        })
        .await
        .map_err(grpc)?
        .into_inner();
    for e in reply.entries {
        if args.json {
            println!(
                "{}",
                serde_json::json!({"name": e.name, "dir": e.is_dir, "size": e.size})
            );
        } else if e.is_dir {
            println!("{:>10}  {}/", "-", e.name);
        } else {
            println!("{:>10}  {}", e.size, e.name);
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct CatArgs {
    #[command(flatten)]
    master: MasterArg,
    /// The task.
    task: String,
    #[command(flatten)]
    agent: AgentArg,
    /// A file under the task's root.
    path: String,
    /// Print the file as JSON objects: task, path, offset, text.
    #[arg(long)]
    json: bool,
}

pub async fn cat(args: CatArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let mut offset = 0;
    let mut out = std::io::stdout();
    loop {
        let reply = client
            .read_sandbox(v1::ReadSandboxRequest {
                task_id: args.task.clone(),
                target: v1::SandboxTarget::File as i32,
                path: args.path.clone(),
                offset,
                length: 1 << 20,
                agent_id: args.agent.agent.clone(),
            })
            .await
            .map_err(grpc)?
            .into_inner();
        if reply.data.is_empty() {
            return Ok(());
        }
        if args.json {
            let piece = serde_json::json!({"task": args.task, "path": args.path, "offset": offset,
                "text": String::from_utf8_lossy(&reply.data)});
            writeln!(out, "{piece}")?;
        } else {
            out.write_all(&reply.data)?;
        }
        offset += reply.data.len() as u64;
        if offset >= reply.size {
            return Ok(());
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    #[command(flatten)]
    master: MasterArg,
    #[arg(long)]
    json: bool,
}

/// `agents` and `frameworks`: a listing that pages.
#[derive(clap::Args, Debug)]
pub struct PagedListArgs {
    #[command(flatten)]
    master: MasterArg,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    paging: Paging,
}

pub async fn agents(args: PagedListArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let (agents, matching) = args
        .paging
        .collect(async |page_size, page_token| {
            let answer = client
                .list_agents(v1::ListAgentsRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((answer.agents, answer.next_page_token, answer.matching))
        })
        .await?;
    args.paging.note_left_out(agents.len(), matching, "agents");
    if !args.json {
        println!(
            "{:<22} {:<16} {:<14} {:<10} {:>6} {:>22} {:>22}",
            "AGENT", "HOST", "PLATFORM", "STATE", "TASKS", "TOTAL", "USED"
        );
    }
    for a in agents {
        let info = a.info.unwrap_or_default();
        let total = resources(info.resources.as_ref());
        let used = resources(a.used.as_ref());
        let state = if a.draining {
            "draining"
        } else if a.connected {
            "connected"
        } else {
            "away"
        };
        if args.json {
            println!(
                "{}",
                serde_json::json!({"id": info.agent_id, "hostname": info.hostname, "state": state,
                    "tasks": a.tasks, "total": total, "used": used,
                    "attributes": info.attributes.iter().map(|x| format!("{}={}", x.key, x.value)).collect::<Vec<_>>()})
            );
        } else {
            // `os/arch` as the agent reports them (`-` from an agent too old
            // to say).
            let attribute = |key: &str| {
                info.attributes
                    .iter()
                    .find(|a| a.key == key)
                    .map_or("-", |a| a.value.as_str())
            };
            println!(
                "{:<22} {:<16} {:<14} {:<10} {:>6} {:>22} {:>22}",
                info.agent_id,
                info.hostname,
                format!("{}/{}", attribute("os"), attribute("arch")),
                state,
                a.tasks,
                total.to_string(),
                used.to_string()
            );
        }
    }
    Ok(())
}

pub async fn frameworks(args: PagedListArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let (frameworks, matching) = args
        .paging
        .collect(async |page_size, page_token| {
            let answer = client
                .list_frameworks(v1::ListFrameworksRequest {
                    page_size,
                    page_token,
                })
                .await?
                .into_inner();
            Ok((answer.frameworks, answer.next_page_token, answer.matching))
        })
        .await?;
    args.paging
        .note_left_out(frameworks.len(), matching, "frameworks");
    if !args.json {
        println!(
            "{:<20} {:<16} {:<10} {:<12} {:<10} {:>6} {:>7} {:>7}",
            "FRAMEWORK", "NAME", "ROLE", "PRINCIPAL", "STATE", "TASKS", "SHARE", "FAIR"
        );
    }
    for f in frameworks {
        let info = f.info.unwrap_or_default();
        let state = if f.connected { "connected" } else { "failover" };
        if args.json {
            println!(
                "{}",
                serde_json::json!({"id": info.framework_id, "name": info.name, "role": info.role,
                    "principal": info.principal, "state": state, "active_tasks": f.active_tasks, "dominant_share": f.dominant_share,
                    "fair_share": f.fair_share,
                    "used": resources(f.used.as_ref()), "offered": resources(f.offered.as_ref())})
            );
        } else {
            println!(
                "{:<20} {:<16} {:<10} {:<12} {:<10} {:>6} {:>6.1}% {:>6.1}%",
                info.framework_id,
                info.name,
                info.role,
                info.principal,
                state,
                f.active_tasks,
                f.dominant_share * 100.0,
                f.fair_share * 100.0
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct RolesArgs {
    #[command(flatten)]
    master: MasterArg,
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    set: Option<RolesCommand>,
}

#[derive(clap::Subcommand, Debug)]
pub enum RolesCommand {
    /// Set a role's weight and/or quota guarantee.
    Set {
        /// The role.
        role: String,
        /// Its weight (its share counts as share / weight).
        #[arg(long)]
        weight: Option<f64>,
        /// Its quota guarantee, e.g. cpus:4,mem:8GiB.
        #[arg(long, value_parser = |s: &str| Resources::parse(s).map_err(|e| e.to_string()))]
        quota: Option<Resources>,
    },
}

pub async fn roles(args: RolesArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let roles = match args.set {
        Some(RolesCommand::Set {
            role,
            weight,
            quota,
        }) => {
            if weight.is_none() && quota.is_none() {
                bail!("`roles set {role}` needs --weight and/or --quota");
            }
            let info = client
                .update_role(v1::UpdateRoleRequest {
                    role,
                    weight,
                    quota: quota.as_ref().map(Into::into),
                })
                .await
                .map_err(grpc)?
                .into_inner();
            vec![info]
        }
        None => {
            client
                .list_roles(v1::ListRolesRequest {})
                .await
                .map_err(grpc)?
                .into_inner()
                .roles
        }
    };
    if !args.json {
        println!(
            "{:<16} {:>7} {:>24} {:>24} {:>8} {:>8} {:>11}",
            "ROLE", "WEIGHT", "QUOTA", "ALLOCATED", "SHARE", "FAIR", "FRAMEWORKS"
        );
    }
    for r in roles {
        let quota = resources(r.quota.as_ref());
        let allocated = resources(r.allocated.as_ref());
        if args.json {
            println!(
                "{}",
                serde_json::json!({"role": r.name, "weight": r.weight, "quota": quota, "allocated": allocated,
                    "weighted_share": r.weighted_share, "dominant_share": r.weighted_share * r.weight,
                    "fair_share": r.fair_share, "frameworks": r.frameworks})
            );
        } else {
            let quota = if quota.is_zero() {
                "-".to_string()
            } else {
                quota.to_string()
            };
            println!(
                "{:<16} {:>7} {:>24} {:>24} {:>7.1}% {:>7.1}% {:>11}",
                r.name,
                r.weight,
                quota,
                allocated.to_string(),
                r.weighted_share * r.weight * 100.0,
                r.fair_share * 100.0,
                r.frameworks
            );
        }
    }
    Ok(())
}

fn resources(r: Option<&v1::Resources>) -> Resources {
    r.and_then(|r| Resources::try_from(r).ok())
        .unwrap_or_default()
}

/// `wasmos masters`: the cluster's masters, the leader first.
pub async fn masters(args: ListArgs) -> anyhow::Result<()> {
    let mut client = args.master.operator().await?;
    let masters = client
        .list_masters(v1::ListMastersRequest {})
        .await?
        .into_inner()
        .masters;
    if !args.json {
        println!(
            "{:<10} {:<9} {:>6} {:<28} {:<28} SINCE",
            "MASTER", "ROLE", "EPOCH", "GRPC", "HTTP"
        );
    }
    for m in masters {
        let info = m.info.unwrap_or_default();
        let role = if m.leader { "leader" } else { "standby" };
        let since = (info.since_ms > 0).then(|| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(info.since_ms),
            )
            .to_string()
        });
        if args.json {
            println!(
                "{}",
                serde_json::json!({"id": info.master_id, "role": role, "epoch": m.epoch,
                    "grpc": info.grpc_url, "http": info.http_url, "since_ms": info.since_ms})
            );
        } else {
            let epoch = if m.leader {
                m.epoch.to_string()
            } else {
                "-".into()
            };
            let or_dash = |s: &str| {
                if s.is_empty() {
                    "-".to_string()
                } else {
                    s.to_string()
                }
            };
            println!(
                "{:<10} {:<9} {:>6} {:<28} {:<28} {}",
                info.master_id,
                role,
                epoch,
                or_dash(&info.grpc_url),
                or_dash(&info.http_url),
                since.unwrap_or_else(|| "-".into())
            );
        }
    }
    Ok(())
}
