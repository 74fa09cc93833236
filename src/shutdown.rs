//! What stops a daemon (`wasmos master`, `agent`, `local`) cleanly: Ctrl-C
//! at a terminal, or the SIGTERM a service manager (systemd, launchd,
//! `kill`) sends. A Windows service is stopped by its control manager
//! instead (`windows_service.rs`), which hands the agent its own future.

/// Resolves when the process is asked to stop, with what asked.
pub async fn requested() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => tokio::select! {
                _ = tokio::signal::ctrl_c() => "interrupt",
                _ = terminate.recv() => "SIGTERM",
            },
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); Ctrl-C still stops");
                interrupted().await
            }
        }
    }
    #[cfg(not(unix))]
    {
        interrupted().await
    }
}

async fn interrupted() -> &'static str {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::warn!("cannot listen for Ctrl-C ({e}): only killing stops this process");
        std::future::pending::<()>().await;
    }
    "interrupt"
}
