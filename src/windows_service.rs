//! `wasmos agent --windows-service NAME`: the agent as a Windows service.
//!
//! The service control manager starts the program, which must hand its main
//! thread to the control dispatcher within 30 seconds; the dispatcher calls
//! [`service_main`] on a thread of its own, and that runs the agent until
//! the manager sends Stop (or the machine shuts down). A plain console
//! program started as a service is killed as unresponsive instead.

use std::ffi::OsString;
use std::sync::Mutex;
use std::time::Duration;

use clap::Parser;
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};

windows_service::define_windows_service!(ffi_service_main, service_main);

/// Hands this thread to the service control dispatcher until the service
/// stops. `name` is the name the service was created under.
pub fn run(name: &str) -> anyhow::Result<()> {
    // A service's stderr goes nowhere: a panic is said in its log.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        tracing::error!("panic: {info}");
        default_hook(info);
    }));
    windows_service::service_dispatcher::start(name, ffi_service_main).map_err(|e| {
        anyhow::anyhow!(
            "cannot reach the service control manager ({e}): --windows-service is for \
             a program the manager starts (`sc.exe create`), not a console"
        )
    })
}

/// The dispatcher's entry point. The command line is the one the service
/// was created with (`binPath=`), parsed again here: the dispatcher passes
/// only the start parameters of `sc.exe start`, which the agent ignores.
fn service_main(_start_parameters: Vec<OsString>) {
    let crate::Cli {
        command: crate::Command::Agent(args),
    } = crate::Cli::parse()
    else {
        unreachable!("main starts the dispatcher only for `wasmos agent`")
    };
    if let Err(e) = serve(*args) {
        tracing::error!("the agent service could not run: {e:#}");
    }
}

fn serve(args: crate::agent::Args) -> anyhow::Result<()> {
    let name = args.windows_service.clone().unwrap_or_default();
    let (stop, stopped) = tokio::sync::oneshot::channel::<&'static str>();
    let stop = Mutex::new(Some(stop));
    let status = service_control_handler::register(&name, move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown => {
            let why = if control == ServiceControl::Stop {
                "service stop"
            } else {
                "system shutdown"
            };
            tracing::info!("the service manager stops the agent ({why})");
            if let Some(stop) = stop.lock().expect("never poisoned").take() {
                let _ = stop.send(why);
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    })?;
    let report = |state, exit_code| {
        status.set_service_status(ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ServiceControlAccept::STOP | ServiceControlAccept::SHUTDOWN
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: 0,
            wait_hint: Duration::from_secs(10),
            process_id: None,
        })
    };
    report(ServiceState::Running, ServiceExitCode::Win32(0))?;
    tracing::info!(service = name, "running as a Windows service");
    // From here on, whatever happens ends in Stopped being reported: a
    // service that returns without it hangs in the manager's eyes.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    let result = runtime.map_err(anyhow::Error::from).and_then(|runtime| {
        runtime.block_on(crate::agent::run(args, async {
            let why = stopped.await.unwrap_or("service stop");
            if let Err(e) = report(ServiceState::StopPending, ServiceExitCode::Win32(0)) {
                tracing::warn!("cannot tell the service manager the agent is stopping: {e}");
            }
            why
        }))
    });
    // Said before Stopped is reported: the manager may end the process then.
    let exit_code = match &result {
        Ok(()) => {
            tracing::info!("the agent stopped");
            ServiceExitCode::Win32(0)
        }
        Err(e) => {
            tracing::error!("the agent stopped: {e:#}");
            ServiceExitCode::ServiceSpecific(1)
        }
    };
    report(ServiceState::Stopped, exit_code)?;
    Ok(())
}
