//! The compiled-module cache: one compilation for concurrent launches,
//! reuse across restarts, corrupt entries rebuilt and never run.
mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use wasmos_agent::{DirArtifacts, Executor, ExecutorConfig, ModuleSource, digest_of};
use wasmos_proto::v1::{Reason, TaskState};

#[test]
fn concurrent_launches_of_one_module_compile_it_once() {
    let h = Harness::with(|c| c.cpus(2.0));
    let module = guest("hello");
    let receivers: Vec<_> = (0..8)
        .map(|i| h.launch(spec(&format!("same-{i}"), &[]), module.clone()))
        .collect();
    for rx in receivers {
        let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    }
    let stats = h.executor.cache_stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert_eq!(stats.disk_hits, 0, "{stats:?}");
    // A later launch is a memory hit.
    h.run(spec("same-later", &[]), module);
    let stats = h.executor.cache_stats();
    assert_eq!(stats.compiled, 1, "{stats:?}");
    assert!(stats.memory_hits >= 1, "{stats:?}");
}

fn wait_for_file(path: &std::path::Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_restarted_agent_loads_compiled_code_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let module = guest("exitcode");
    let digest = digest_of(&module);
    {
        let ex = Executor::new(ExecutorConfig::new(&work)).unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ex.launch(
            "fw",
            spec("first", &["0"]),
            ModuleSource::Bytes(module.clone()),
            tx,
        )
        .unwrap();
        collect(rx, Duration::from_secs(60));
        assert_eq!(ex.cache_stats().compiled, 1);
        wait_for_file(&ex.cached_module_path(&digest).unwrap());
    }
    // Restart: only the digest is known, and no artifact source could serve
    // the bytes: the task can only run from the disk cache.
    let ex = Executor::new(ExecutorConfig::new(&work)).unwrap();
    let mut s = spec("second", &["5"]);
    s.artifact = digest;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    ex.launch("fw", s, ModuleSource::Artifact, tx).unwrap();
    let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
    assert_eq!(
        (end.reason(), end.exit_code),
        (Reason::ExitNonzero, Some(5)),
        "{}",
        end.message
    );
    let stats = ex.cache_stats();
    assert_eq!((stats.compiled, stats.disk_hits), (0, 1), "{stats:?}");
}

/// Offset and size of the section `name` in a 64-bit little-endian ELF image.
fn elf_section(elf: &[u8], name: &str) -> Option<(usize, usize)> {
    let u16_at = |o: usize| u16::from_le_bytes(elf[o..o + 2].try_into().unwrap()) as usize;
    let u32_at = |o: usize| u32::from_le_bytes(elf[o..o + 4].try_into().unwrap()) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    assert_eq!(&elf[..4], b"\x7fELF", "wasmtime serializes ELF images");
    let (shoff, shentsize, shnum, shstrndx) =
        (u64_at(0x28), u16_at(0x3a), u16_at(0x3c), u16_at(0x3e));
    let header = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(header(shstrndx) + 0x18);
    (0..shnum).find_map(|i| {
        let h = header(i);
        let name_at = strtab + u32_at(h);
        let end = elf[name_at..].iter().position(|&b| b == 0)?;
        (&elf[name_at..name_at + end] == name.as_bytes())
            .then(|| (u64_at(h + 0x18), u64_at(h + 0x20)))
    })
}

#[test]
fn a_flipped_byte_in_cached_code_is_rebuilt_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let store = Arc::new(DirArtifacts::new(dir.path().join("artifacts")).unwrap());
    let module = guest("primes");
    let digest = store.put(&module).unwrap();
    let config = || ExecutorConfig::new(&work).artifacts(store.clone());
    let path = {
        let ex = Executor::new(config()).unwrap();
        let mut s = spec("p1", &["1000"]);
        s.artifact = digest.clone();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ex.launch("fw", s, ModuleSource::Artifact, tx).unwrap();
        assert_eq!(
            collect(rx, Duration::from_secs(60)).pop().unwrap().state(),
            TaskState::Finished
        );
        let path = ex.cached_module_path(&digest).unwrap();
        wait_for_file(&path);
        path
    };
    // Flip one byte in the middle of the compiled machine code: the `.text`
    // section of the ELF image wasmtime serialized (after our 40-byte
    // header of magic and checksum).
    let mut bytes = std::fs::read(&path).unwrap();
    let (start, len) = elf_section(&bytes[40..], ".text").expect("a .text section");
    assert!(len > 1000, "{len}");
    bytes[40 + start + len / 2] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let ex = Executor::new(config()).unwrap();
    let mut s = spec("p2", &["1000"]);
    s.artifact = digest.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    ex.launch("fw", s, ModuleSource::Artifact, tx).unwrap();
    let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
    assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
    let out = ex
        .read("p2", &wasmos_agent::SandboxFile::Stdout, 0, 100)
        .unwrap();
    assert_eq!(out, b"primes below 1000: 168\n");
    let stats = ex.cache_stats();
    assert_eq!(
        (stats.rejected, stats.compiled, stats.disk_hits),
        (1, 1, 0),
        "{stats:?}"
    );
    // And the entry was rewritten correctly.
    wait_for_file(&path);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::fs::read(&path).unwrap() == bytes {
        assert!(
            std::time::Instant::now() < deadline,
            "corrupt entry not replaced"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn artifacts_are_fetched_by_digest_and_verified() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(DirArtifacts::new(dir.path().join("artifacts")).unwrap());
    let h = Harness::with(|c| c.artifacts(store.clone()));
    let digest = store.put(&fixture("hi")).unwrap();

    let mut s = spec("by-digest", &[]);
    s.artifact = digest.clone();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    h.executor
        .launch("fw", s, ModuleSource::Artifact, tx)
        .unwrap();
    assert_eq!(
        collect(rx, Duration::from_secs(30)).pop().unwrap().state(),
        TaskState::Finished
    );

    for (id, artifact) in [
        ("unknown-digest", "cd".repeat(32)),
        ("not-a-digest", "hello.wasm".into()),
    ] {
        let mut s = spec(id, &[]);
        s.artifact = artifact;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        h.executor
            .launch("fw", s, ModuleSource::Artifact, tx)
            .unwrap();
        let end = collect(rx, Duration::from_secs(30)).pop().unwrap();
        assert_eq!(
            (end.state(), end.reason()),
            (TaskState::Failed, Reason::ArtifactUnavailable),
            "{id}"
        );
    }
    // Bytes given directly must match the digest the spec names.
    let mut s = spec("mismatch", &[]);
    s.artifact = digest;
    let end = h.run(s, fixture("exit7")).pop().unwrap();
    assert_eq!(end.reason(), Reason::ArtifactUnavailable);
}

/// A small WASI command that prints `m<NN>`: distinct modules of one size.
fn numbered_module(n: usize) -> Arc<[u8]> {
    format!(
        r#"(module
  (import "wasi_snapshot_preview1" "fd_write"
    (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 16) "m{n:02}")
  (func (export "_start")
    (i32.store (i32.const 0) (i32.const 16))
    (i32.store (i32.const 4) (i32.const 3))
    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))"#
    )
    .into_bytes()
    .into()
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum()
}

#[test]
fn the_disk_cache_keeps_the_most_recent_modules_within_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let modules: Vec<Arc<[u8]>> = (0..6).map(numbered_module).collect();
    // The size of one entry, from a throwaway executor.
    let entry_size = {
        let h = Harness::new();
        let end = h
            .run(spec("measure", &[]), modules[0].clone())
            .pop()
            .unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
        let path = h
            .executor
            .cached_module_path(&digest_of(&modules[0]))
            .unwrap();
        wait_for_file(&path);
        std::fs::metadata(&path).unwrap().len()
    };
    // Room for three entries and a half.
    let cap = entry_size * 7 / 2;
    let config = || ExecutorConfig::new(&work).module_cache_bytes(cap);
    let cache_dir = work.join("modules");
    {
        let ex = Executor::new(config()).unwrap();
        let collector = wasmos_agent::gc::Collector::new();
        for (i, module) in modules.iter().enumerate() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            ex.launch(
                "fw",
                spec(&format!("m{i}"), &[]),
                ModuleSource::Bytes(module.clone()),
                tx,
            )
            .unwrap();
            let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
            assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
            wait_for_file(&ex.cached_module_path(&digest_of(module)).unwrap());
            let report = collector.collect(&ex);
            let on_disk = dir_bytes(&cache_dir);
            assert!(on_disk <= cap, "{on_disk} > {cap} after module {i}");
            assert_eq!(report.module_cache_bytes, on_disk);
            // Distinct mtimes, whatever the file system's resolution.
            std::thread::sleep(Duration::from_millis(20));
        }
        // The three most recent stay; the older ones were evicted.
        let kept: Vec<bool> = modules
            .iter()
            .map(|m| ex.cached_module_path(&digest_of(m)).unwrap().exists())
            .collect();
        assert_eq!(kept, [false, false, false, true, true, true]);
        // Evicted entries do not affect the running executor: a module
        // still in memory runs without its file.
        let end = {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            ex.launch(
                "fw",
                spec("m0-again", &[]),
                ModuleSource::Bytes(modules[0].clone()),
                tx,
            )
            .unwrap();
            collect(rx, Duration::from_secs(60)).pop().unwrap()
        };
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
        assert_eq!(ex.cache_stats().compiled, 6);
    }
    // A restarted agent loads the kept ones from disk and recompiles an
    // evicted one, which then runs correctly.
    let ex = Executor::new(config()).unwrap();
    for (id, n) in [("after-5", 5), ("after-0", 0)] {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        ex.launch(
            "fw",
            spec(id, &[]),
            ModuleSource::Bytes(modules[n].clone()),
            tx,
        )
        .unwrap();
        let end = collect(rx, Duration::from_secs(60)).pop().unwrap();
        assert_eq!(end.state(), TaskState::Finished, "{}", end.message);
        let out = ex
            .read(id, &wasmos_agent::SandboxFile::Stdout, 0, 100)
            .unwrap();
        assert_eq!(out, format!("m{n:02}").as_bytes());
    }
    let stats = ex.cache_stats();
    assert_eq!((stats.disk_hits, stats.compiled), (1, 1), "{stats:?}");
}
