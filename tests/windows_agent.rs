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
    let exe = std::env::var("WASMOS_WINDOWS_BIN")
        .expect("WASMOS_WINDOWS_BIN names the cross-built wasmos.exe (scripts/release)");
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
