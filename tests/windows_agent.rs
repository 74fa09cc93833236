//! Another OS: the cross-built `wasmos.exe agent`, run by wine, beside a
//! native Linux agent, both joined with join tokens to one Linux master
//! over TLS. The same jobs run on each (pinned with `--on os=...`): every
//! task's stdout and fuel are the same on Windows, where wasmtime has no
//! copy-on-write memory images, as on Linux, where it has; the limits hold
//! there too. A Windows agent runs its tasks in its own process (no Unix
//! sockets, no executor process).
//!
//! Ignored by `cargo test`: it needs the Windows build and wine.
//! `scripts/release` builds the one, installs the other (with the one
//! Windows DLL wine 8 lacks, `scripts/lib/wine/`), and runs it with
//! `--ignored`.
mod support;

use support::Cluster;
use support::foreign::{self, PATIENT_MASTER};

#[test]
#[ignore = "needs the cross-built wasmos.exe and wine: scripts/release runs it"]
fn a_windows_agent_runs_the_same_job_with_the_same_output_and_fuel_and_keeps_its_limits() {
    let exe = windows_exe();
    let cluster = Cluster::start_tls(1, PATIENT_MASTER, &[]);
    let _windows = foreign::start_agent(&cluster, &["wine", &exe], "windows", &[]);
    cluster.wait_agents(2);

    let agents = foreign::agents(&cluster);
    let windows: Vec<_> = agents
        .values()
        .filter(|a| a.iter().any(|x| x == "os=windows"))
        .collect();
    assert_eq!(windows.len(), 1, "{agents:?}");
    assert!(windows[0].iter().any(|x| x == "arch=x86_64"), "{agents:?}");

    foreign::assert_same_output_and_fuel(&cluster, "os=linux", "os=windows");
    foreign::assert_limits_hold(&cluster, "os=windows");
}

#[test]
#[ignore = "needs the cross-built wasmos.exe and wine: scripts/release runs it"]
fn a_windows_agent_runs_as_a_service_and_stops_when_the_service_manager_says() {
    let exe = windows_exe();
    let cluster = Cluster::start_tls(0, PATIENT_MASTER, &[]);
    // A service gets its environment from the manager, not from us: the
    // join string comes from a file.
    let join = cluster.dir.path().join("join");
    std::fs::write(&join, &cluster.tls.as_ref().unwrap().join).unwrap();
    let work_dir = cluster.dir.path().join("agent-service");
    let windows = |p: &std::path::Path| format!("Z:{}", p.display()).replace('/', "\\");
    let name = format!("wasmos-test-{}", std::process::id());
    let command = format!(
        "{} agent --windows-service {name} --master {} --work-dir {} --join-file {} \
         --hostname windows-service --cpus 2 --mem 1GiB",
        windows(std::path::Path::new(&exe)),
        cluster.url,
        windows(&work_dir),
        windows(&join),
    );
    // Its output goes to a file, not a pipe: the wine processes a first
    // `wine` starts (services.exe, ...) inherit its pipes and hold them
    // open for as long as they run.
    let sc_output = cluster.dir.path().join("sc.out");
    let sc = |args: &[&str]| {
        let out = std::fs::File::create(&sc_output).unwrap();
        let status = std::process::Command::new("wine")
            .arg("sc")
            .args(args)
            .env("WINEDEBUG", "-all")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .status()
            .expect("wine sc");
        let said = std::fs::read_to_string(&sc_output).unwrap_or_default();
        assert!(status.success(), "sc {args:?}: {status}: {said}");
    };
    // Wine ends its services once no other wine program runs (Windows'
    // service manager never does): a shell waiting on its input keeps
    // this session up until the test ends.
    let _session = Session(
        std::process::Command::new("wine")
            .arg("cmd")
            .env("WINEDEBUG", "-all")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("wine cmd"),
    );
    sc(&["create", &name, "binPath=", &command]);
    let _delete = Deleted(name.clone());
    sc(&["start", &name]);
    let log = work_dir.join("agent.log");
    let joined = support::wait_for(foreign::PATIENCE, || {
        (foreign::agents(&cluster).len() == 1).then_some(())
    });
    assert!(joined.is_some(), "{:?}", std::fs::read_to_string(&log));
    let agents = foreign::agents(&cluster);
    assert!(
        agents.values().all(|a| a.iter().any(|x| x == "os=windows")),
        "{agents:?}"
    );
    let tasks = foreign::run_on(&cluster, "os=windows", "primes", &["-n", "2"], &["20000"]);
    assert!(tasks.iter().all(|t| t["state"] == "FINISHED"), "{tasks:?}");

    sc(&["stop", &name]);
    // It logs to its work dir (a service has no console): it ran as a
    // service, was told to stop, and stopped cleanly.
    let said = support::wait_for(foreign::PATIENCE, || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("the agent stopped").then_some(text)
    });
    let said = said.unwrap_or_else(|| panic!("{:?}", std::fs::read_to_string(&log)));
    assert!(said.contains("running as a Windows service"), "{said}");
    assert!(
        said.contains("the service manager stops the agent (service stop)"),
        "{said}"
    );
    // Its stream closed with it: the master sees no agent.
    cluster.wait_agents(0);
}

/// The cross-built `wasmos.exe` scripts/release names.
fn windows_exe() -> String {
    std::env::var("WASMOS_WINDOWS_BIN")
        .expect("WASMOS_WINDOWS_BIN names the cross-built wasmos.exe (scripts/release)")
}

/// A wine program that keeps wine's services running while it does; as the
/// first, it starts them.
struct Session(std::process::Child);

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deletes the service when the test ends, passed or not.
struct Deleted(String);

impl Drop for Deleted {
    fn drop(&mut self) {
        for action in ["stop", "delete"] {
            let _ = std::process::Command::new("wine")
                .args(["sc", action, &self.0])
                .env("WINEDEBUG", "-all")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
