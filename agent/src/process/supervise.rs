//! Keeps an agent attached to its executor process: connects to the
//! executor on the work dir's socket, or starts one (in its own session,
//! logging to `<work-dir>/executor.log`); shakes hands; drains and replaces
//! an executor of an incompatible protocol; starts a new one when it dies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio::net::UnixStream;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use wasmos_proto::v1;
use wasmos_proto::v1::from_executor::Kind as Out;
use wasmos_proto::v1::to_executor::Kind as In;

use super::handle::Event;
use super::service::ServiceConfig;
use super::wire;

/// How long a new executor may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// How a session with one executor ended.
enum Ended {
    /// Drained for being of another protocol: start ours.
    Replaced,
    /// It died or closed the socket.
    Died(String),
    /// The agent is shutting down.
    AgentGone,
}

/// Runs until the agent drops its handle.
pub async fn supervise(
    program: PathBuf,
    config: ServiceConfig,
    hello: v1::ExecutorHello,
    mut commands: UnboundedReceiver<v1::ToExecutor>,
    events: UnboundedSender<Event>,
) {
    let work_dir = config.executor.work_dir.clone();
    let mut child: Option<tokio::process::Child> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        let stream = match connect_or_start(&program, &config, &mut child).await {
            Ok(stream) => stream,
            Err(e) => {
                tracing::error!("no executor: {e:#}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(100);
        match session(stream, &config, &hello, &mut commands, &events).await {
            Ended::Replaced => {}
            Ended::AgentGone => return,
            Ended::Died(why) => {
                // Reap it if it was ours.
                if let Some(mut c) = child.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(1), c.wait()).await;
                }
                tracing::warn!(
                    "the executor went away ({why}); starting a new one (see {})",
                    work_dir.join("executor.log").display()
                );
                if events.send(Event::Detached(why)).is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// The executor on the socket, or a new one.
async fn connect_or_start(
    program: &Path,
    config: &ServiceConfig,
    child: &mut Option<tokio::process::Child>,
) -> anyhow::Result<UnixStream> {
    let work_dir = &config.executor.work_dir;
    let socket = super::socket_path(work_dir);
    if let Ok(stream) = UnixStream::connect(&socket).await {
        return Ok(stream);
    }
    let log_path = work_dir.join("executor.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", log_path.display()))?;
    let mut command = tokio::process::Command::new(program);
    command
        .arg("executor")
        .args(executor_args(config))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    // SAFETY: setsid is async-signal-safe and touches only the child.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut started = command
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start `{} executor`: {e}", program.display()))?;
    tracing::info!(pid = started.id(), "started the executor process");
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(stream) = UnixStream::connect(&socket).await {
            *child = Some(started);
            return Ok(stream);
        }
        if let Some(status) = started.try_wait()? {
            anyhow::bail!(
                "the executor exited with {status} before it served; see {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            let _ = started.start_kill();
            anyhow::bail!("the executor did not open {} in time", socket.display());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The flags `wasmos executor` takes for `config` (`src/executor.rs`
/// parses them).
pub fn executor_args(config: &ServiceConfig) -> Vec<String> {
    let e = &config.executor;
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut args = vec![
        "--work-dir".into(),
        e.work_dir.display().to_string(),
        "--cpus".into(),
        e.cpus.to_string(),
        "--mem".into(),
        e.mem.to_string(),
        "--output-cap".into(),
        e.output_cap.to_string(),
        "--module-cache-size".into(),
        e.module_cache_bytes.to_string(),
        "--min-free-disk".into(),
        e.min_free_disk.to_string(),
        "--gc-interval".into(),
        ms(e.gc_interval),
        "--sandbox-retention".into(),
        ms(e.sandbox_retention),
        "--max-sandboxes".into(),
        e.max_sandboxes.to_string(),
        "--protocol".into(),
        super::show(&config.protocol),
    ];
    if let Some(limit) = e.sandbox_disk_limit {
        args.extend(["--sandbox-disk-limit".into(), limit.to_string()]);
    }
    if let Some(timeout) = config.orphan_timeout {
        args.extend(["--orphan-timeout".into(), ms(timeout)]);
    }
    if config.checkpoint == crate::checkpoint::Backend::PowerLoss {
        args.extend(["--checkpoint".into(), "power-loss".into()]);
    }
    args
}

/// One executor: hello, welcome, then messages both ways until it ends.
async fn session(
    stream: UnixStream,
    config: &ServiceConfig,
    hello: &v1::ExecutorHello,
    commands: &mut UnboundedReceiver<v1::ToExecutor>,
    events: &UnboundedSender<Event>,
) -> Ended {
    let (reader, mut writer) = stream.into_split();
    let mut reader = wire::FrameReader::new(reader);
    let (to_executor, mut outgoing) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let _ = wire::write_all(&mut writer, &mut outgoing).await;
    });
    // Frames are read on a task of their own: a read cut off half-way by
    // `select!` would lose its bytes.
    let (frames_tx, mut frames) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let frame = reader.read::<v1::FromExecutor>().await;
            let end = !matches!(frame, Ok(Some(_)));
            if frames_tx.send(frame).is_err() || end {
                return;
            }
        }
    });
    let _ = to_executor.send(v1::ToExecutor {
        kind: Some(In::Hello(hello.clone())),
    });
    let welcome = match tokio::time::timeout(Duration::from_secs(30), frames.recv()).await {
        Ok(Some(Ok(Some(v1::FromExecutor {
            kind: Some(Out::Welcome(welcome)),
        })))) => welcome,
        Ok(Some(Err(e))) => return Ended::Died(format!("handshake failed: {e}")),
        Err(_) => return Ended::Died("no welcome within 30 s".into()),
        _ => return Ended::Died("the executor's first message was not a welcome".into()),
    };
    let theirs = welcome.protocol.clone().unwrap_or_default();
    if !welcome.compatible || !super::compatible(&theirs, &config.protocol) {
        tracing::warn!(
            pid = welcome.pid,
            executor_protocol = %super::show(&theirs),
            protocol = %super::show(&config.protocol),
            "the executor speaks another protocol: draining it (its running tasks finish), then starting one of ours"
        );
        let _ = to_executor.send(v1::ToExecutor {
            kind: Some(In::Drain(v1::ExecutorDrain {})),
        });
        // What it says now is in its checkpoint: our executor sends it on.
        while let Some(Ok(Some(_))) = frames.recv().await {}
        wait_for_exit(welcome.pid).await;
        return Ended::Replaced;
    }
    tracing::info!(
        pid = welcome.pid,
        protocol = %super::show(&theirs),
        tasks = welcome.tasks.len(),
        pending = welcome.pending.len(),
        "attached to the executor"
    );
    if events.send(Event::Attached(welcome)).is_err() {
        return Ended::AgentGone;
    }
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(command) => {
                    let _ = to_executor.send(command);
                }
                None => return Ended::AgentGone,
            },
            frame = frames.recv() => match frame {
                Some(Ok(Some(message))) => {
                    if let Some(kind) = message.kind
                        && events.send(Event::Message(kind)).is_err()
                    {
                        return Ended::AgentGone;
                    }
                }
                Some(Err(e)) => return Ended::Died(e.to_string()),
                Some(Ok(None)) | None => return Ended::Died("it closed the socket".into()),
            },
        }
    }
}

/// Waits until process `pid` is gone (it is not our child: its own parent
/// or init reaps it).
async fn wait_for_exit(pid: u32) {
    loop {
        // SAFETY: signal 0 only checks that the process exists.
        if unsafe { libc::kill(pid as libc::pid_t, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
