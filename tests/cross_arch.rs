//! Another CPU: the cross-built aarch64 `wasmos agent`, run by
//! `qemu-aarch64`, beside a native x86_64 agent, both joined with join
//! tokens to one x86_64 master over TLS. The same jobs run on each (pinned
//! with `--on arch=...`): every task's stdout and fuel are the same on both
//! CPUs, and the memory cap, fuel limit, timeout and kill hold under the
//! emulator too.
//!
//! Ignored by `cargo test`: it needs the aarch64 binary and qemu-user.
//! `scripts/cross` (which `.ci/run` calls) builds and installs them and
//! runs it with `--ignored`. The aarch64 agent runs its executor in process:
//! qemu-user cannot start another aarch64 program (the executor process)
//! without the kernel's binfmt_misc, which a container does not have.
mod support;

use support::Cluster;
use support::foreign::{self, PATIENT_MASTER};

#[test]
#[ignore = "needs the cross-built aarch64 wasmos and qemu-user: scripts/cross runs it"]
fn the_same_job_on_aarch64_and_x86_64_gives_the_same_output_and_fuel_and_keeps_its_limits() {
    let bin = std::env::var("WASMOS_AARCH64_BIN")
        .expect("WASMOS_AARCH64_BIN names the cross-built aarch64 wasmos (scripts/cross)");
    let cluster = Cluster::start_tls(1, PATIENT_MASTER, &[]);
    let program = ["qemu-aarch64", "-L", "/usr/aarch64-linux-gnu", &bin];
    let _arm = foreign::start_agent(&cluster, &program, "emulated", &["--in-process-executor"]);
    cluster.wait_agents(2);

    let agents = foreign::agents(&cluster);
    let mut arches: Vec<&str> = agents
        .values()
        .map(|a| {
            a.iter()
                .find_map(|x| x.strip_prefix("arch="))
                .expect("an arch")
        })
        .collect();
    arches.sort();
    assert_eq!(arches, ["aarch64", "x86_64"], "{agents:?}");

    foreign::assert_same_output_and_fuel(&cluster, "arch=x86_64", "arch=aarch64");
    foreign::assert_limits_hold(&cluster, "arch=aarch64");
}
