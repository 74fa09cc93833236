//! Running a program in a store: a module's `_start` or a component's
//! `wasi:cli/run` ([`Entry`]), with the task's fuel and `mem` cap, raced
//! against its stop and its deadline, and how its end reads as an
//! [`Outcome`].

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use wasmos_proto::v1::{TaskSpec, TaskState};
use wasmtime::{InstancePre, Store, Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::bindings::CommandPre;

use super::engine::{ComponentData, ComponentWasi, TaskData};
use super::limits::MemLimiter;
use super::shared::Shared;
use super::status::{Outcome, Reporter};
use super::task::{Stop, TaskControl, stop_outcome};

enum Ended {
    Stopped(Stop),
    TimedOut,
    Returned(wasmtime::Result<()>),
}

/// A program's entry point: what instantiating and running it means.
pub(super) trait Entry {
    /// Its WASI state in the store.
    type Wasi: Send + 'static;

    /// Instantiates and runs it; reports RUNNING once it is instantiated.
    async fn run(
        &self,
        store: &mut Store<TaskData<Self::Wasi>>,
        reporter: &mut Reporter,
    ) -> wasmtime::Result<()>;

    /// Whether `err`, which ended [`Entry::run`] and is no wasm trap, is
    /// still the program's own fault: a WASI call it made wrongly, which
    /// ends it as a trap, like a wasm instruction's.
    fn guest_fault(err: &wasmtime::Error) -> bool;
}

impl Entry for InstancePre<TaskData> {
    type Wasi = WasiP1Ctx;

    async fn run(
        &self,
        store: &mut Store<TaskData>,
        reporter: &mut Reporter,
    ) -> wasmtime::Result<()> {
        let instance = self.instantiate_async(&mut *store).await?;
        let start = instance.get_typed_func::<(), ()>(&mut *store, "_start")?;
        reporter.progress(TaskState::Running, "");
        start.call_async(store, ()).await
    }

    /// wasmtime-wasi traps a preview 1 call handed a pointer that is
    /// misaligned, or a pointer and length that reach past the end of
    /// memory or wrap around, with the guest's [`wiggle::GuestError`] (the
    /// witx rules say such a call shall trap). Its other traps are its own
    /// failures (a resource table it cannot use, ...), not the module's.
    fn guest_fault(err: &wasmtime::Error) -> bool {
        err.downcast_ref::<wiggle::GuestError>().is_some()
    }
}

impl Entry for CommandPre<ComponentData> {
    type Wasi = ComponentWasi;

    async fn run(
        &self,
        store: &mut Store<ComponentData>,
        reporter: &mut Reporter,
    ) -> wasmtime::Result<()> {
        let command = self.instantiate_async(&mut *store).await?;
        reporter.progress(TaskState::Running, "");
        match command.wasi_cli_run().call_run(store).await? {
            Ok(()) => Ok(()),
            // `run` returned its error: the command failed, as `exit(1)`.
            Err(()) => Err(I32Exit(1).into()),
        }
    }

    /// A component's WASI calls are checked with plain errors, no type to
    /// tell them by: wasmtime checks every value it hands a host function
    /// by the canonical ABI (strings, lists and return pointers in bounds
    /// and aligned, handles it owns, bytes within its hostcall fuel), and
    /// wasmtime-wasi each call's contract (at most 4096 bytes for
    /// `blocking-write-and-flush`, writes within `check-write`, ...), while
    /// the host's own I/O failures reach the guest as values (`error-code`,
    /// `stream-error`). So an error raised while the component ran (it
    /// carries the component's wasm backtrace) is the component's, unless
    /// it is an I/O error of the host.
    fn guest_fault(err: &wasmtime::Error) -> bool {
        err.downcast_ref::<WasmBacktrace>().is_some()
            && err.downcast_ref::<std::io::Error>().is_none()
    }
}

/// How a run in a store went: its outcome and what it used.
pub(super) struct Ran {
    pub outcome: Outcome,
    pub wall_time_ms: u64,
    pub fuel_consumed: u64,
    pub peak_mem: u64,
}

/// Runs `entry` in a new store of `engine` holding `wasi`, with the task's
/// fuel and `mem` cap, until it returns, is stopped or times out.
pub(super) async fn run_in_store<E: Entry>(
    entry: &E,
    engine: &wasmtime::Engine,
    wasi: E::Wasi,
    spec: &TaskSpec,
    control: &TaskControl,
    shared: &Shared,
    reporter: &mut Reporter,
) -> Ran {
    let resources = spec.resources.unwrap_or_default();
    let data = TaskData {
        wasi,
        limiter: MemLimiter::new(resources.mem),
    };
    let mut store = Store::new(engine, data);
    store.limiter(|d| &mut d.limiter);
    let fuel = if spec.max_fuel > 0 {
        spec.max_fuel
    } else {
        u64::MAX
    };
    let setup = store
        .set_fuel(fuel)
        .and_then(|()| {
            store.fuel_async_yield_interval(Some(shared.config.fuel_yield_interval.max(1)))
        })
        .and_then(|()| store.get_fuel());
    let initial_fuel = match setup {
        Ok(f) => f,
        Err(e) => {
            return Ran {
                outcome: Outcome::AgentError(format!("cannot configure fuel: {e:#}")),
                wall_time_ms: 0,
                fuel_consumed: 0,
                peak_mem: 0,
            };
        }
    };
    // Instantiation is inside the race too: a module's start function
    // runs during it and may loop as well as `_start` can.
    let started = Instant::now();
    control.sched.started.store(true, Ordering::Relaxed);
    let deadline = async {
        match spec.timeout_ms {
            0 => std::future::pending().await,
            ms => tokio::time::sleep(Duration::from_millis(ms)).await,
        }
    };
    let ended = tokio::select! {
        biased;
        stop = control.stopped() => Ended::Stopped(stop),
        () = deadline => Ended::TimedOut,
        r = entry.run(&mut store, reporter) => Ended::Returned(r),
    };
    let outcome = match ended {
        Ended::Stopped(stop) => stop_outcome(stop),
        Ended::TimedOut => Outcome::Timeout(spec.timeout_ms),
        Ended::Returned(Ok(())) => Outcome::Finished,
        Ended::Returned(Err(e)) => classify::<E>(e, &store.data().limiter, spec.max_fuel),
    };
    Ran {
        outcome,
        wall_time_ms: started.elapsed().as_millis() as u64,
        fuel_consumed: initial_fuel.saturating_sub(store.get_fuel().unwrap_or(initial_fuel)),
        peak_mem: store.data().limiter.peak_memory(),
    }
}

/// A trap's words for its status: the trap and the wasm backtrace (each
/// is in the error's chain), never the host's Rust backtrace, which the
/// error's `Debug` form adds when `RUST_BACKTRACE` is set for the agent.
fn trap_message(err: &wasmtime::Error) -> String {
    err.chain()
        .map(|cause| cause.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Turns an error from instantiation or the entry point into an outcome:
/// the program's own faults (traps, WASI calls made wrongly) are traps,
/// and only the agent's own failures are agent errors.
fn classify<E: Entry>(err: wasmtime::Error, limiter: &MemLimiter, max_fuel: u64) -> Outcome {
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return match exit.0 {
            0 => Outcome::Finished,
            code => Outcome::ExitNonzero(code),
        };
    }
    if let Some(limit) = limiter.exceeded() {
        return Outcome::MemoryLimit(limit.to_string());
    }
    if err.downcast_ref::<Trap>() == Some(&Trap::OutOfFuel) {
        return Outcome::OutOfFuel(max_fuel);
    }
    if err.downcast_ref::<Trap>().is_some() || E::guest_fault(&err) {
        return Outcome::Trap(trap_message(&err));
    }
    Outcome::AgentError(format!("{err:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::{Engine, Linker, Module, component};

    /// An I/O error of the host, raised inside a call the program made to it.
    fn host_io_failure() -> wasmtime::Result<()> {
        Err(std::io::Error::other("the disk went away").into())
    }

    fn assert_agent_error(outcome: Outcome) {
        match outcome {
            Outcome::AgentError(msg) => assert!(msg.contains("the disk went away"), "{msg}"),
            other => panic!("not an agent error: {other:?}"),
        }
    }

    #[test]
    fn an_io_error_of_the_host_in_a_programs_call_is_an_agent_error() {
        let engine = Engine::default();
        let limiter = MemLimiter::new(1 << 20);

        let mut store = Store::new(&engine, ());
        let mut linker = Linker::new(&engine);
        linker.func_wrap("host", "fail", host_io_failure).unwrap();
        let module = Module::new(
            &engine,
            r#"(module (import "host" "fail" (func $fail)) (func (export "run") (call $fail)))"#,
        )
        .unwrap();
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let run = instance
            .get_typed_func::<(), ()>(&mut store, "run")
            .unwrap();
        let err = run.call(&mut store, ()).unwrap_err();
        assert!(err.downcast_ref::<WasmBacktrace>().is_some(), "{err:?}");
        assert_agent_error(classify::<InstancePre<TaskData>>(err, &limiter, 0));

        let mut store = Store::new(&engine, ());
        let mut linker = component::Linker::new(&engine);
        linker
            .root()
            .func_wrap("fail", |_, (): ()| host_io_failure())
            .unwrap();
        let component = component::Component::new(
            &engine,
            r#"(component
  (import "fail" (func $fail))
  (core func $fail (canon lower (func $fail)))
  (core module $m (import "" "fail" (func $fail)) (func (export "run") (call $fail)))
  (core instance $i (instantiate $m (with "" (instance (export "fail" (func $fail))))))
  (func (export "run") (canon lift (core func $i "run"))))"#,
        )
        .unwrap();
        let instance = linker.instantiate(&mut store, &component).unwrap();
        let run = instance
            .get_typed_func::<(), ()>(&mut store, "run")
            .unwrap();
        let err = run.call(&mut store, ()).unwrap_err();
        assert!(err.downcast_ref::<WasmBacktrace>().is_some(), "{err:?}");
        assert_agent_error(classify::<CommandPre<ComponentData>>(err, &limiter, 0));
    }
}
