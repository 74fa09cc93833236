//! Executor benchmarks: `cargo bench -p wasmos-agent --bench executor [-- --case NAME]`.
//!
//! Prints one JSON line per case:
//! - `launch`: a trivial cached task (write "hi", exit 0) through the
//!   executor on one core, versus raw wasmtime on the same engine (Store +
//!   WASI ctx + instantiate + call, pooling allocator included); on the
//!   work dir's disk too, with and without durable outputs (a terminal
//!   status waits for its task's outputs to be synced, as in
//!   `wasmos executor`). `raw_over_executor_cpu` compares CPU time (every
//!   thread of the process, the sandboxes written behind included) per
//!   task, where `raw_over_executor` compares throughput.
//! - `fuel`: the prime counter under the executor at cpus=1 versus the same
//!   guest on an engine without fuel or epochs.
//! - `density`: 1,000 sleeping Rust tasks at once (`--tasks N` for more,
//!   `--guest nap` for a `.wat` sleeper that holds no file descriptor), on
//!   an executor with just enough cpus for them (0.001 each): extra RSS
//!   per task, and the engine's memory model.
//! - `compile`: a 2 MB Rust guest: cold compile versus cached load.
//! - `component`: the Rust `hello` guest built as a preview 1 module and as
//!   a preview 2 component, launched through the executor in alternating
//!   rounds: launch rates of both and their ratio (medians of one run).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use wasmos_agent::{
    DirArtifacts, EngineSettings, Executor, ExecutorConfig, MemoryModel, ModuleSource,
    build_engine, is_terminal, thread_cpu_ns,
};
use wasmos_proto::v1::{Resources, TaskSpec, TaskState, TaskStatus};
use wasmtime::{Engine, Linker, Module, Store};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

fn guest(name: &str) -> Arc<[u8]> {
    built_guest("wasm32-wasip1", name)
}

fn built_guest(target: &str, name: &str) -> Arc<[u8]> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/guests/target")
        .join(target)
        .join("release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}: run scripts/test to build the guests",
                path.display()
            )
        })
        .into()
}

fn fixture(name: &str) -> Arc<[u8]> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/{name}.wat"));
    std::fs::read(path).unwrap().into()
}

fn spec(id: String, args: &[&str], cpus: f64) -> TaskSpec {
    TaskSpec {
        task_id: id,
        args: args.iter().map(|s| s.to_string()).collect(),
        resources: Some(Resources {
            cpus,
            mem: 64 << 20,
            disk: 1 << 20,
        }),
        ..Default::default()
    }
}

fn recv(rt: &tokio::runtime::Runtime, rx: &mut UnboundedReceiver<TaskStatus>) -> TaskStatus {
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("status in time")
            .expect("channel open")
    })
}

/// CPU seconds used so far by this process's threads named `name`.
fn thread_cpu_s(name: &str) -> f64 {
    let ticks = 100.0; // USER_HZ on Linux
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let fields: Vec<&str> = after.split_whitespace().collect();
        // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after `)`.
        let cpu: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        total += cpu / ticks;
    }
    total
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct Raw {
    wasi: WasiP1Ctx,
}

/// Raw wasmtime: Store + WASI ctx + instantiate + call, `n` times.
fn raw_launches(engine: &Engine, wasm: &[u8], n: usize) -> f64 {
    let mut linker: Linker<Raw> = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |r: &mut Raw| &mut r.wasi).unwrap();
    let module = Module::new(engine, wasm).unwrap();
    let pre = linker.instantiate_pre(&module).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let t = Instant::now();
        for _ in 0..n {
            let stdout = MemoryOutputPipe::new(1 << 10);
            let wasi = WasiCtxBuilder::new().arg("hi").stdout(stdout).build_p1();
            let mut store = Store::new(engine, Raw { wasi });
            store.set_fuel(u64::MAX).unwrap();
            store.fuel_async_yield_interval(Some(1_000_000)).unwrap();
            let instance = pre.instantiate_async(&mut store).await.unwrap();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .unwrap();
            start.call_async(&mut store, ()).await.unwrap();
        }
        n as f64 / t.elapsed().as_secs_f64()
    })
}

fn bench_launch(work: &std::path::Path) -> serde_json::Value {
    // Sandboxes are directories: their cost is the file system's. Measure
    // on tmpfs (the executor's own cost) and on the work dir's disk.
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let mut result = launch_on(tmpfs.as_ref().map_or(work, |t| t.path()), 20_000, false);
    if std::env::var_os("WASMOS_BENCH_SKIP_DISK").is_some() {
        return result;
    }
    // Plain and durable outputs (as `wasmos executor` runs: a terminal
    // status waits until its outputs would survive a crash), alternating
    // three times on fresh dirs: the medians are compared.
    let mut plain = Vec::new();
    let mut durable = Vec::new();
    for round in 0..3 {
        plain.push(launch_on(
            &work.join(format!("plain-{round}")),
            5_000,
            false,
        ));
        durable.push(launch_on(
            &work.join(format!("durable-{round}")),
            5_000,
            true,
        ));
    }
    let rate = |r: &serde_json::Value| r["tasks_per_s"].as_f64().unwrap_or(0.0);
    let median = |runs: &mut Vec<serde_json::Value>| {
        runs.sort_by(|a, b| rate(a).total_cmp(&rate(b)));
        runs.swap_remove(1)
    };
    let rounds = |runs: &[serde_json::Value]| runs.iter().map(rate).collect::<Vec<f64>>();
    result["disk_work_dir_tasks_per_s_rounds"] = json!(rounds(&plain));
    result["disk_work_dir_durable_outputs_tasks_per_s_rounds"] = json!(rounds(&durable));
    let (disk, durable) = (median(&mut plain), median(&mut durable));
    result["work_dir_fs"] = json!(if tmpfs.is_some() { "tmpfs" } else { "disk" });
    result["disk_work_dir_tasks_per_s"] = disk["tasks_per_s"].clone();
    result["disk_work_dir_sandboxes_on_disk_tasks_per_s"] =
        disk["sandboxes_on_disk_tasks_per_s"].clone();
    result["disk_work_dir_durable_outputs_tasks_per_s"] = durable["tasks_per_s"].clone();
    let ratio = rate(&durable) / rate(&disk).max(1.0);
    result["durable_over_plain_outputs"] = json!((ratio * 1000.0).round() / 1000.0);
    result["target_durable_over_plain_outputs"] = json!(0.9);
    result
}

/// `n` tasks through an executor on `work`; with `durable`, each terminal
/// status waits for the task's outputs to be synced.
/// CPU seconds this process has used, all threads, user and system.
fn process_cpu_s() -> f64 {
    // SAFETY: getrusage writes into the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn launch_on(work: &std::path::Path, n: usize, durable: bool) -> serde_json::Value {
    // Start with nothing dirty: the last run's write-back is not this one's.
    std::fs::create_dir_all(work).unwrap();
    // SAFETY: sync takes no arguments.
    unsafe { libc::sync() };
    let in_flight = 256;
    let wasm = fixture("hi");
    let mut rig = Rig::new(work, &wasm, durable);

    let t = Instant::now();
    let process_cpu_before = process_cpu_s();
    let worker_cpu_before = thread_cpu_s("wasmos-worker-0");
    let io_cpu_before = thread_cpu_s("wasmos-io");
    let persist_cpu_before = thread_cpu_s("wasmos-persist");
    let driver_cpu_before = thread_cpu_ns();
    let (mut launched, mut done, mut finished) = (0, 0, 0);
    while done < n {
        while launched < n && launched - done < in_flight {
            rig.launch(format!("t{launched}"), &[], 1.0);
            launched += 1;
        }
        let status = match rig.rx.try_recv() {
            Ok(s) => s,
            Err(_) => rig.next(),
        };
        if is_terminal(status.state()) {
            done += 1;
            finished += (status.state() == TaskState::Finished) as usize;
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let rate = n as f64 / elapsed;
    let worker_cpu = thread_cpu_s("wasmos-worker-0") - worker_cpu_before;
    let worker_busy = worker_cpu / elapsed;
    let io_busy = (thread_cpu_s("wasmos-io") - io_cpu_before) / elapsed;
    let persist_cpu = thread_cpu_s("wasmos-persist") - persist_cpu_before;
    let driver_busy = (thread_cpu_ns() - driver_cpu_before) as f64 / 1e9 / elapsed;
    assert_eq!(finished, n, "every task must finish");
    // Sandboxes are written behind the tasks: dropping the executor waits
    // for the last of them, so this rate counts every task's files on disk.
    let engine = rig.ex.engine().clone();
    drop(rig);
    let on_disk_rate = n as f64 / t.elapsed().as_secs_f64();
    // Every thread's CPU, the sandboxes written behind included.
    let executor_cpu = process_cpu_s() - process_cpu_before;
    // A task that touches no file gets a sandbox without a root.
    assert!(work.join("launch/sandboxes/t0").is_dir());
    assert!(!work.join("launch/sandboxes/t0/root").exists());
    assert_eq!(
        std::fs::read(work.join(format!("launch/sandboxes/t{}/stdout", n - 1))).unwrap(),
        b"hi"
    );
    let raw_cpu_before = process_cpu_s();
    let raw = raw_launches(&engine, &wasm, n);
    let raw_cpu = process_cpu_s() - raw_cpu_before;
    let raw_on_demand = raw_launches(
        &build_engine(&EngineSettings {
            memory: MemoryModel::OnDemand,
            ..EngineSettings::default()
        })
        .unwrap(),
        &wasm,
        n / 4,
    );
    json!({
        "case": "launch", "tasks": n, "in_flight": in_flight, "agent_cpus": 1,
        "tasks_per_s": rate.round(), "raw_tasks_per_s": raw.round(),
        "worker_thread_busy": (worker_busy * 100.0).round() / 100.0,
        "worker_cpu_us_per_task": (worker_cpu * 1e6 / n as f64).round(),
        "io_thread_busy": (io_busy * 100.0).round() / 100.0,
        "persist_thread_busy": (persist_cpu / elapsed * 100.0).round() / 100.0,
        "persist_cpu_us_per_task": (persist_cpu * 1e6 / n as f64).round(),
        "sandboxes_on_disk_tasks_per_s": on_disk_rate.round(),
        "driver_thread_busy": (driver_busy * 100.0).round() / 100.0,
        "raw_on_demand_tasks_per_s": raw_on_demand.round(),
        "raw_over_executor": (raw / rate * 100.0).round() / 100.0,
        "executor_cpu_us_per_task": (executor_cpu * 1e6 / n as f64).round(),
        "raw_cpu_us_per_task": (raw_cpu * 1e6 / n as f64 * 10.0).round() / 10.0,
        "raw_over_executor_cpu": (executor_cpu / raw_cpu.max(1e-9) * 100.0).round() / 100.0,
        "target_raw_over_executor_cpu": 2.5,
        "target_tasks_per_s": 20000, "target_raw_over_executor": 1.5,
    })
}

fn bench_fuel(work: &std::path::Path) -> serde_json::Value {
    let wasm = guest("primes");
    let args = ["3000000"];
    let ex = Executor::new(ExecutorConfig::new(work.join("fuel")).cpus(1.0)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // CPU time, not wall time: the ratio must not move when other processes
    // share the machine. Wall times are reported too.
    let (mut executor_ms, mut executor_wall_ms) = (Vec::new(), Vec::new());
    for i in 0..6 {
        let (tx, mut rx) = unbounded_channel();
        ex.launch(
            "bench",
            spec(format!("f{i}"), &args, 1.0),
            ModuleSource::Bytes(wasm.clone()),
            tx,
        )
        .unwrap();
        loop {
            let s = recv(&rt, &mut rx);
            if is_terminal(s.state()) {
                assert_eq!(s.state(), TaskState::Finished, "{}", s.message);
                let usage = s.usage.unwrap();
                executor_ms.push(usage.cpu_time_ms as f64);
                executor_wall_ms.push(usage.wall_time_ms as f64);
                break;
            }
        }
    }
    executor_ms.remove(0); // the first run pays for cold caches
    executor_wall_ms.remove(0);
    let plain = build_engine(&EngineSettings {
        fuel: false,
        epochs: false,
        ..EngineSettings::default()
    })
    .unwrap();
    let mut linker: Linker<Raw> = Linker::new(&plain);
    wasmtime_wasi::p1::add_to_linker_async(&mut linker, |r: &mut Raw| &mut r.wasi).unwrap();
    let module = Module::new(&plain, &wasm).unwrap();
    let (mut plain_ms, mut plain_wall_ms) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        rt.block_on(async {
            let wasi = WasiCtxBuilder::new()
                .arg("primes")
                .args(&args)
                .stdout(MemoryOutputPipe::new(1 << 10))
                .build_p1();
            let mut store = Store::new(&plain, Raw { wasi });
            let instance = linker.instantiate_async(&mut store, &module).await.unwrap();
            let start = instance
                .get_typed_func::<(), ()>(&mut store, "_start")
                .unwrap();
            let (t, cpu) = (Instant::now(), thread_cpu_ns());
            start.call_async(&mut store, ()).await.unwrap();
            plain_ms.push((thread_cpu_ns() - cpu) as f64 / 1e6);
            plain_wall_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        });
    }
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let (e, p) = (min(&executor_ms), min(&plain_ms));
    json!({
        "case": "fuel", "guest": "primes 3000000", "measure": "min CPU time of 5 runs",
        "executor_cpu_ms": e.round(), "no_fuel_no_epochs_cpu_ms": p.round(),
        "executor_wall_ms": min(&executor_wall_ms).round(), "no_fuel_no_epochs_wall_ms": min(&plain_wall_ms).round(),
        "overhead_ratio": (e / p * 1000.0).round() / 1000.0, "target_overhead_ratio": 1.2,
    })
}

fn bench_density(work: &std::path::Path) -> serde_json::Value {
    let n: usize = option("--tasks").map_or(1000, |t| t.parse().expect("--tasks N"));
    let name = option("--guest").unwrap_or_else(|| "sleeper".into());
    let wasm = match name.as_str() {
        "nap" => fixture("nap"),
        _ => guest(&name),
    };
    let cpus = (n as f64 / 1000.0).max(1.0);
    let ex = Executor::new(ExecutorConfig::new(work.join("density")).cpus(cpus)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (tx, mut rx) = unbounded_channel();
    ex.launch(
        "bench",
        spec("warm".into(), &["1"], 0.001),
        ModuleSource::Bytes(wasm.clone()),
        tx.clone(),
    )
    .unwrap();
    // Warm the caches with one task (a `nap` never ends by itself).
    while recv(&rt, &mut rx).state() != TaskState::Running {}
    let _ = ex.kill("warm");
    while !is_terminal(recv(&rt, &mut rx).state()) {}
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();
    let t = Instant::now();
    for i in 0..n {
        let s = spec(format!("s{i}"), &["600000"], 0.001);
        ex.launch("bench", s, ModuleSource::Bytes(wasm.clone()), tx.clone())
            .unwrap();
    }
    let mut running = 0;
    while running < n {
        let s = recv(&rt, &mut rx);
        assert!(!is_terminal(s.state()), "{}: {}", s.task_id, s.message);
        running += (s.state() == TaskState::Running) as usize;
    }
    let launched_s = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_bytes();
    for i in 0..n {
        ex.kill(&format!("s{i}")).unwrap();
    }
    let mut killed = 0;
    while killed < n {
        killed += (recv(&rt, &mut rx).state() == TaskState::Killed) as usize;
    }
    let per_task = after.saturating_sub(before) as f64 / n as f64;
    json!({
        "case": "density", "tasks": n, "guest": name, "executor_cpus": cpus,
        "memory_model": format!("{:?}", ex.memory_model()),
        "all_running_after_s": (launched_s * 10.0).round() / 10.0,
        "rss_before_mib": before >> 20, "rss_after_mib": after >> 20,
        "extra_rss_per_task_kib": (per_task / 1024.0).round(), "target_per_task_kib": 1024,
    })
}

fn time_to_running(ex: &Executor, rt: &tokio::runtime::Runtime, id: &str, wasm: &Arc<[u8]>) -> f64 {
    let (tx, mut rx) = unbounded_channel();
    let t = Instant::now();
    ex.launch(
        "bench",
        spec(id.into(), &["10"], 1.0),
        ModuleSource::Bytes(wasm.clone()),
        tx,
    )
    .unwrap();
    loop {
        let s = recv(rt, &mut rx);
        if s.state() == TaskState::Running {
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            while !is_terminal(recv(rt, &mut rx).state()) {}
            return ms;
        }
        assert!(!is_terminal(s.state()), "{}", s.message);
    }
}

fn bench_compile(work: &std::path::Path) -> serde_json::Value {
    let wasm = guest("primes");
    let dir = work.join("compile");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let cold = {
        let ex = Executor::new(ExecutorConfig::new(&dir).cpus(1.0)).unwrap();
        let ms = time_to_running(&ex, &rt, "cold", &wasm);
        let path = ex
            .cached_module_path(&wasmos_agent::digest_of(&wasm))
            .unwrap();
        while !path.exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        ms
    };
    let ex = Executor::new(ExecutorConfig::new(&dir).cpus(1.0)).unwrap();
    let disk = time_to_running(&ex, &rt, "disk", &wasm);
    let memory = time_to_running(&ex, &rt, "memory", &wasm);
    assert_eq!(ex.cache_stats().disk_hits, 1);
    json!({
        "case": "compile", "guest": "primes.wasm", "module_bytes": wasm.len(),
        "cold_compile_ms": (cold * 10.0).round() / 10.0,
        "disk_cache_load_ms": (disk * 10.0).round() / 10.0,
        "memory_cache_ms": (memory * 100.0).round() / 100.0,
        "note": "launch to RUNNING, sandbox and instantiation included",
    })
}

/// A one-cpu executor on `work` that launches one program by its artifact
/// digest, as the agent does, its compiled form cached by a first launch.
struct Rig {
    ex: Executor,
    digest: String,
    rt: tokio::runtime::Runtime,
    tx: tokio::sync::mpsc::UnboundedSender<TaskStatus>,
    rx: UnboundedReceiver<TaskStatus>,
}

impl Rig {
    /// With `durable`, each terminal status waits for its task's outputs
    /// to be synced.
    fn new(work: &std::path::Path, wasm: &[u8], durable: bool) -> Self {
        let store = Arc::new(DirArtifacts::new(work.join("launch-artifacts")).unwrap());
        let digest = store.put(wasm).unwrap();
        let ex = Executor::new(
            ExecutorConfig::new(work.join("launch"))
                .cpus(1.0)
                .durable_outputs(durable)
                .artifacts(store),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (tx, rx) = unbounded_channel();
        let mut rig = Self {
            ex,
            digest,
            rt,
            tx,
            rx,
        };
        // Warm the cache (and the pool).
        rig.launch("warm".into(), &[], 1.0);
        while !is_terminal(rig.next().state()) {}
        rig
    }

    fn launch(&self, id: String, args: &[&str], cpus: f64) {
        let s = TaskSpec {
            artifact: self.digest.clone(),
            ..spec(id, args, cpus)
        };
        self.ex
            .launch("bench", s, ModuleSource::Artifact, self.tx.clone())
            .unwrap();
    }

    fn next(&mut self) -> TaskStatus {
        recv(&self.rt, &mut self.rx)
    }
}

/// Tasks per second of `n` launches of `wasm` with `args` through a
/// [`Rig`] on `work`, 64 in flight.
fn launch_rate(work: &std::path::Path, wasm: &Arc<[u8]>, args: &[&str], n: usize) -> f64 {
    std::fs::create_dir_all(work).unwrap();
    let mut rig = Rig::new(work, wasm, false);
    let t = Instant::now();
    let (mut launched, mut done) = (0, 0);
    while done < n {
        while launched < n && launched - done < 64 {
            rig.launch(format!("t{launched}"), args, 0.01);
            launched += 1;
        }
        let status = rig.next();
        if is_terminal(status.state()) {
            assert_eq!(status.state(), TaskState::Finished, "{}", status.message);
            done += 1;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    drop(rig);
    rate
}

fn bench_component(work: &std::path::Path) -> serde_json::Value {
    let shm = std::path::Path::new("/dev/shm");
    let tmpfs = shm.is_dir().then(|| tempfile::tempdir_in(shm).unwrap());
    let dir = tmpfs.as_ref().map_or(work, |t| t.path());
    let module = built_guest("wasm32-wasip1", "hello");
    let component = built_guest("wasm32-wasip2", "hello");
    let n = 2_000;
    let (mut modules, mut components) = (Vec::new(), Vec::new());
    for round in 0..3 {
        let at = |kind: &str| dir.join(format!("{kind}-{round}"));
        modules.push(launch_rate(&at("module"), &module, &["hi"], n));
        components.push(launch_rate(&at("component"), &component, &["hi"], n));
    }
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    };
    let rounds = (modules.clone(), components.clone());
    let (m, c) = (median(&mut modules), median(&mut components));
    json!({
        "case": "component", "guest": "hello (Rust)", "tasks_per_round": n, "rounds": 3,
        "work_dir_fs": if tmpfs.is_some() { "tmpfs" } else { "disk" },
        "module_tasks_per_s": m.round(), "component_tasks_per_s": c.round(),
        "module_rounds": rounds.0.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "component_rounds": rounds.1.iter().map(|r| r.round()).collect::<Vec<_>>(),
        "component_over_module": (c / m * 1000.0).round() / 1000.0,
        "module_bytes": module.len(), "component_bytes": component.len(),
    })
}

/// One benchmark case: work dir in, one JSON object out.
type Case = fn(&std::path::Path) -> serde_json::Value;

/// The value after `flag` on the command line.
fn option(flag: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() {
    let only = option("--case");
    let work = tempfile::tempdir().unwrap();
    let cases: [(&str, Case); 5] = [
        ("launch", bench_launch),
        ("fuel", bench_fuel),
        ("density", bench_density),
        ("compile", bench_compile),
        ("component", bench_component),
    ];
    for (name, run) in cases {
        if only.as_deref().is_none_or(|o| o == name) {
            println!("{}", run(work.path()));
        }
    }
}
