//! The bodies of wasmos' fuzz targets. `fuzz/cargo-fuzz` runs them under
//! libFuzzer (nightly, `cargo fuzz run <target>`); `tests/corpus.rs` replays
//! every checked-in input of `fuzz/corpus/<target>/` on stable, so CI runs
//! them as ordinary tests and every crash found stays fixed.
//!
//! Each target panics only on a bug: bad input must come back as an error.

mod sandbox_reads;

pub use sandbox_reads::sandbox_reads;

use std::time::Duration;

use prost::Message;
use sha2::{Digest, Sha256};
use wasmos_core::testing::Harness;
use wasmos_master::Time;
use wasmos_master::core::Input;
use wasmos_proto::v1;

/// A fuzz target: takes any bytes, panics only on a bug.
pub type Target = fn(&[u8]);

/// The targets by name, as `fuzz/corpus/<name>/` and `cargo fuzz run
/// <name>` call them.
pub const TARGETS: &[(&str, Target)] = &[
    ("core_inputs", core_inputs),
    ("wire_messages", wire_messages),
    ("tar_input", tar_input),
    ("module_validation", module_validation),
    ("parsers", parsers),
    ("sandbox_reads", sandbox_reads),
    ("upload_streams", upload_streams),
];

/// A core with two agents and two frameworks, so that inputs meet state,
/// in the harness that checks it after every step.
fn seeded_core() -> Harness {
    let mut h = Harness::new();
    h.now = Time::ZERO;
    for name in ["a1", "a2"] {
        h.register_agent(
            v1::AgentInfo {
                agent_id: name.to_string(),
                hostname: name.to_string(),
                resources: Some(v1::Resources {
                    cpus: 4.0,
                    mem: 4 << 30,
                    disk: 4 << 30,
                }),
                ..Default::default()
            },
            vec![],
        )
        .expect("a seed agent registers");
    }
    for (i, role) in ["batch", "default"].iter().enumerate() {
        h.subscribe_with(v1::FrameworkInfo {
            name: format!("fw{i}"),
            role: role.to_string(),
            ..Default::default()
        })
        .expect("a seed framework subscribes");
    }
    h
}

/// One input decoded from `selector` and protobuf `bytes`, if they decode.
fn decode_input(selector: u8, bytes: &[u8]) -> Option<Input> {
    let agent = |i: u8| wasmos_master::AgentId::from(if i.is_multiple_of(2) { "a1" } else { "a2" });
    Some(match selector % 12 {
        0 => Input::Tick,
        1 => Input::Accept(v1::AcceptRequest::decode(bytes).ok()?),
        2 => Input::Decline(v1::DeclineRequest::decode(bytes).ok()?),
        3 => Input::Kill(v1::KillRequest::decode(bytes).ok()?),
        4 => Input::Acknowledge(v1::AcknowledgeRequest::decode(bytes).ok()?),
        5 => Input::Reconcile(v1::ReconcileRequest::decode(bytes).ok()?),
        6 => Input::Subscribe {
            connection: 100 + u64::from(selector),
            framework: v1::SubscribeRequest::decode(bytes).ok()?.framework?,
        },
        7 => Input::AgentRegister {
            connection: 200 + u64::from(selector),
            register: v1::Register::decode(bytes).ok()?,
        },
        8 => Input::AgentUpdates {
            agent: agent(selector),
            statuses: v1::StatusUpdates::decode(bytes).ok()?.statuses,
            unsynced: None,
        },
        9 => Input::Teardown(v1::TeardownRequest::decode(bytes).ok()?),
        10 => {
            let r = v1::UpdateRoleRequest::decode(bytes).ok()?;
            Input::UpdateRole {
                role: r.role,
                weight: r.weight,
                quota: r
                    .quota
                    .as_ref()
                    .and_then(|q| wasmos_master::Resources::try_from(q).ok()),
            }
        }
        _ => Input::OperatorKill {
            task_ids: v1::KillRequest::decode(bytes).ok()?.task_ids,
        },
    })
}

/// Feeds `input` to the core at `now`; the core must keep its invariants
/// (and its registry match it) whatever the input, and answer (not panic).
fn feed(h: &mut Harness, input: Input, now: Time) {
    h.now = now;
    let _ = h.handle(input);
}

/// Sequences of core inputs: frames of `[selector, length, bytes...]`,
/// with time advancing between them.
pub fn core_inputs(data: &[u8]) {
    let mut core = seeded_core();
    let mut now = Time::ZERO;
    let mut rest = data;
    while let [selector, len, tail @ ..] = rest {
        let len = usize::from(*len).min(tail.len());
        let (bytes, after) = tail.split_at(len);
        now = now + std::time::Duration::from_millis(u64::from(*selector) * 37);
        if let Some(input) = decode_input(*selector, bytes) {
            feed(&mut core, input, now);
        }
        rest = after;
    }
}

/// One wire message (its type chosen by the first byte) decoded and fed to
/// the core, as the gRPC shell would.
pub fn wire_messages(data: &[u8]) {
    let [selector, bytes @ ..] = data else {
        return;
    };
    let mut core = seeded_core();
    if let Some(input) = decode_input(*selector, bytes) {
        feed(&mut core, input, Time::ZERO);
    }
    // Messages no input carries still decode safely.
    let _ = v1::AgentMessage::decode(bytes);
    let _ = v1::ToExecutor::decode(bytes);
    let _ = v1::FromExecutor::decode(bytes);
}

/// A tar input unpacked into a sandbox root with a budget: never a link,
/// never a path outside the root, never more than the budget.
pub fn tar_input(data: &[u8]) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let root = cap_std::fs::Dir::open_ambient_dir(dir.path(), cap_std::ambient_authority())
        .expect("the temp dir opens");
    let budget = 64 << 10;
    if let Ok(written) = wasmos_agent::unpack_tar(&root, std::path::Path::new("in"), data, budget) {
        assert!(
            written <= budget,
            "{written} bytes written past a budget of {budget}"
        );
    }
    let outside = std::fs::read_dir(dir.path())
        .expect("readable")
        .filter_map(Result::ok)
        .filter(|e| e.file_name() != "in")
        .count();
    assert_eq!(outside, 0, "the archive wrote beside its directory");
}

/// Module validation: what wasmparser accepts, wasmtime must judge without
/// panicking, and the reverse.
pub fn module_validation(data: &[u8]) {
    let parsed = wasmparser::Validator::new().validate_all(data);
    let engine = wasmtime::Engine::default();
    let checked = wasmtime::Module::validate(&engine, data);
    if checked.is_ok() {
        assert!(parsed.is_ok(), "wasmtime took a module wasmparser refused");
    }
}

/// The size and resource parsers the CLI and master use.
pub fn parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(size) = wasmos_master::resources::parse_size(text) {
        let shown = wasmos_master::resources::format_size(size);
        assert!(!shown.is_empty());
    }
    if let Ok(resources) = wasmos_master::Resources::parse(text) {
        let again = wasmos_master::Resources::parse(&resources.to_string());
        assert!(again.is_ok(), "{resources} does not parse back");
    }
}

/// An upload as the master's intake sees it (`UploadState`): limits from
/// the first bytes, then chunks (with or without a digest, of any size),
/// pauses and rate checks, and the end. Whatever arrives, the bytes taken
/// never pass the size limit, a cut is final, nothing is cut for its rate
/// within the grace, and the end agrees with the digest named.
pub fn upload_streams(data: &[u8]) {
    use wasmos_master::server::{MinRate, Refused, UploadState};
    let [size, rate, window, grace, rest @ ..] = data else {
        return;
    };
    let max_size = u64::from(*size) * 64;
    let floor = MinRate {
        bytes_per_sec: u64::from(*rate) * 16,
        window: Duration::from_millis(u64::from(*window) * 20),
        grace: Duration::from_millis(u64::from(*grace) * 20),
    };
    let mut state = UploadState::new(max_size, floor);
    let mut hasher = Sha256::new();
    let mut named: Option<String> = None;
    let mut first = true;
    let mut elapsed = Duration::ZERO;
    let mut ops = rest;
    while let [op, pause, len, after @ ..] = ops {
        elapsed += Duration::from_millis(u64::from(*pause) * 10);
        let len = usize::from(*len).min(after.len());
        let (body, after) = after.split_at(len);
        ops = after;
        let outcome = match op % 4 {
            0 | 1 => {
                let digest = if op % 4 == 1 {
                    // A real digest of the bytes so far, or the body as text.
                    if body.first().is_some_and(|b| b % 2 == 0) {
                        hex::encode(Sha256::digest(body))
                    } else {
                        String::from_utf8_lossy(body).into_owned()
                    }
                } else {
                    String::new()
                };
                let chunk = v1::UploadChunk {
                    digest: digest.clone(),
                    data: body.to_vec(),
                };
                let outcome = state.chunk(elapsed, &chunk);
                if first && !digest.is_empty() && !matches!(outcome, Err(Refused::Invalid(_))) {
                    named = Some(digest);
                }
                first = false;
                if outcome.is_ok() {
                    hasher.update(body);
                }
                outcome
            }
            2 => state.tick(elapsed),
            _ => break,
        };
        match outcome {
            Ok(()) => assert!(state.size() <= max_size, "{} bytes taken", state.size()),
            Err(Refused::TooSlow(_)) => {
                assert!(elapsed >= floor.grace, "cut within the grace");
                return;
            }
            Err(_) => return,
        }
    }
    let digest = hex::encode(hasher.finalize());
    let finished = state.finish(&digest);
    match named {
        Some(named) if named != digest => assert!(finished.is_err(), "a mismatch was taken"),
        _ => assert!(finished.is_ok(), "{finished:?}"),
    }
}
