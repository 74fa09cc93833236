//! `wasmos executor`: the [`Service`] on a Unix socket in the work dir
//! (`executor.sock`, mode 0600), one agent attached at a time (a new
//! connection replaces the old one: its agent is gone). The process writes
//! its id to `executor.pid` and removes both files when it exits.

use std::path::PathBuf;

use tokio::net::UnixListener;
use tokio::sync::mpsc;
use wasmos_proto::v1;

use super::service::{Exit, Input, Service, ServiceConfig};
use super::wire;

/// Runs the executor process until its service ends.
pub async fn serve(config: ServiceConfig) -> anyhow::Result<Exit> {
    let work_dir = config.executor.work_dir.clone();
    let service = Service::start(config)?;
    // executor.lock is ours now: a socket file left is a dead executor's.
    let socket = super::socket_path(&work_dir);
    let _ = std::fs::remove_file(&socket);
    wasmos_platform::socket::prepare(&socket)?;
    let listener = bind_private(&socket)?;
    let pid_file = super::pid_path(&work_dir);
    std::fs::write(&pid_file, format!("{}\n", std::process::id()))?;
    let mut cleanup = Cleanup(vec![socket.clone(), pid_file]);
    // A socket moved out of a deep work dir leaves no directory behind.
    if let Some(dir) = socket.parent().filter(|&dir| dir != work_dir) {
        cleanup.0.push(dir.to_path_buf());
    }
    tracing::info!(
        pid = std::process::id(),
        socket = %socket.display(),
        "wasmos executor serving"
    );
    let (inputs, rx) = mpsc::unbounded_channel();
    let service = tokio::spawn(service.run(rx));
    let accept = async move {
        let mut next_id = 0u64;
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    next_id += 1;
                    tokio::spawn(connection(next_id, stream, inputs.clone()));
                }
                Err(e) => {
                    tracing::warn!("accepting on the executor socket: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    };
    tokio::select! {
        exit = service => Ok(exit?),
        () = accept => unreachable!("the accept loop never ends"),
    }
}

/// Binds `path` with no access for anyone but this user: the socket is
/// created under a umask of 077, so there is no moment it is open wider.
fn bind_private(path: &std::path::Path) -> anyhow::Result<UnixListener> {
    // SAFETY: umask only swaps the process's file-mode mask.
    let old = unsafe { libc::umask(0o077) };
    let listener = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    listener.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", path.display()))
}

/// One agent's connection: its `hello`, then its messages, until it closes.
async fn connection(id: u64, stream: tokio::net::UnixStream, inputs: mpsc::UnboundedSender<Input>) {
    let (reader, mut writer) = stream.into_split();
    let mut reader = wire::FrameReader::new(reader);
    let hello = match tokio::time::timeout(
        std::time::Duration::from_secs(5),
        reader.read::<v1::ToExecutor>(),
    )
    .await
    {
        Ok(Ok(Some(v1::ToExecutor {
            kind: Some(v1::to_executor::Kind::Hello(hello)),
        }))) => hello,
        _ => {
            tracing::warn!("a connection to the executor socket did not say hello; closed");
            return;
        }
    };
    let (outlet, mut outgoing) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        if let Err(e) = wire::write_all(&mut writer, &mut outgoing).await {
            tracing::debug!("writing to the agent: {e}");
        }
    });
    if inputs.send(Input::Connected { id, hello, outlet }).is_err() {
        return;
    }
    loop {
        match reader.read::<v1::ToExecutor>().await {
            Ok(Some(message)) => {
                if inputs.send(Input::Message(id, message)).is_err() {
                    return;
                }
            }
            Ok(None) => break,
            Err(e) => {
                tracing::warn!("reading from the agent: {e}");
                break;
            }
        }
    }
    let _ = inputs.send(Input::Disconnected(id));
}

/// Removes the socket and pid files when the process is done with them.
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path).or_else(|_| std::fs::remove_dir(path));
        }
    }
}
