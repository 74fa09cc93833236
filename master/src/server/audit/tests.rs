//! The audit log's tests, with an injected clock.

use super::*;
use crate::access::Grant;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

fn clock_at(ms: u64) -> (Arc<AtomicU64>, WallClock) {
    let now = Arc::new(AtomicU64::new(ms));
    let read = now.clone();
    (
        now,
        WallClock(Arc::new(move || read.load(Ordering::SeqCst))),
    )
}

fn principal(name: &str) -> Principal {
    Principal {
        name: name.into(),
        accessor: format!("acc-{name}"),
        grant: Grant::Roles(vec!["batch".into()]),
    }
}

fn parsed(read: &AuditRead) -> Vec<Value> {
    read.entries
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn entries_say_who_what_when_and_whether() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock_at(1000);
    let audit = Audit::open(dir.path(), clock).unwrap();
    let alice = principal("alice");
    audit.record::<()>(
        Actor::Principal(&alice),
        "Scheduler.Teardown",
        json!({"framework_id": "F1"}),
        &Ok(()),
    );
    now.store(2000, Ordering::SeqCst);
    audit.refusal::<()>(
        Actor::Principal(&alice),
        "Operator.ListTasks",
        Value::Null,
        &Err(Status::not_found("not a refusal")),
    );
    audit.refusal::<()>(
        Actor::Principal(&alice),
        "Operator.DrainAgent",
        json!({"agent_id": "A1"}),
        &Err(Status::permission_denied("needs an admin token")),
    );
    let all = audit.read(0, 100).unwrap();
    assert_eq!(all.entries.len(), 2, "{all:?}");
    assert_eq!((all.dropped_until_ms, all.oldest_kept_ms), (0, 1000));
    let entries = parsed(&all);
    assert_eq!(entries[0]["who"], "alice");
    assert_eq!(entries[0]["accessor"], "acc-alice");
    assert_eq!(entries[0]["allowed"], true);
    assert_eq!(entries[0]["ts_ms"], 1000);
    assert_eq!(entries[1]["allowed"], false);
    assert_eq!(entries[1]["code"], "PermissionDenied");
    assert_eq!(audit.read(1500, 100).unwrap().entries.len(), 1);
    assert_eq!(
        audit.read(0, 1).unwrap().entries,
        vec![all.entries[1].clone()]
    );
    // Reopened, it appends.
    drop(audit);
    let audit = Audit::open(dir.path(), WallClock::system()).unwrap();
    audit.refused_credential(
        Status::unauthenticated("token x is unknown"),
        Some("10.0.0.1".parse().unwrap()),
    );
    let all = parsed(&audit.read(0, 100).unwrap());
    assert_eq!(all.len(), 3);
    assert_eq!(all[2]["source"], "10.0.0.1");
}

#[test]
fn a_flood_of_refusals_is_one_line_in_full_and_one_summary_with_its_count() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock_at(1_000_000);
    let audit = Audit::open(dir.path(), clock).unwrap();
    let bob = principal("bob");
    let ids: Vec<String> = (0..20).map(|i| format!("alices-task-{i:0>150}")).collect();
    for i in 0..35_000u64 {
        now.store(1_000_000 + i / 10, Ordering::SeqCst);
        audit.record::<()>(
            Actor::Principal(&bob),
            "Scheduler.Kill",
            json!({"framework_id": "F-alice", "task_ids": ids, "count": 20}),
            &Err(Status::permission_denied(format!("task {i} is not bob's"))),
        );
    }
    let size = std::fs::metadata(dir.path().join("audit.log"))
        .unwrap()
        .len();
    assert!(size < 8 << 10, "{size} bytes");
    let before = parsed(&audit.read(0, 100).unwrap());
    assert_eq!(
        before.len(),
        1,
        "the first in full, the rest counted: {before:?}"
    );
    assert_eq!(before[0]["error"], "task 0 is not bob's");
    // The window closes: the next write (or read, or tick) sums it up.
    now.store(1_000_000 + refusals::WINDOW_MS, Ordering::SeqCst);
    let after = parsed(&audit.read(0, 100).unwrap());
    assert_eq!(after.len(), 2, "{after:?}");
    let summary = &after[1];
    assert_eq!(summary["repeated"], 34_999);
    assert_eq!(summary["first_ts_ms"], 1_000_000);
    assert_eq!(summary["last_ts_ms"], 1_003_499);
    assert_eq!(summary["call"], "Scheduler.Kill");
    assert_eq!(summary["accessor"], "acc-bob");
    assert_eq!(
        summary["summary"],
        "bob: 34,999 × Scheduler.Kill refused PERMISSION_DENIED in 3.5 s"
    );
    // An open window is summed up when the master stops.
    audit.record::<()>(
        Actor::Principal(&bob),
        "Scheduler.Kill",
        Value::Null,
        &Err(Status::permission_denied("x")),
    );
    audit.record::<()>(
        Actor::Principal(&bob),
        "Scheduler.Kill",
        Value::Null,
        &Err(Status::permission_denied("x")),
    );
    audit.flush_all();
    let last = parsed(&audit.read(0, 100).unwrap());
    assert_eq!(last.len(), 4);
    assert_eq!(last[3]["repeated"], 1);
}

#[test]
fn callers_refused_too_often_are_throttled_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock_at(5_000);
    let audit = Audit::open(dir.path(), clock).unwrap();
    let (bob, alice) = (principal("bob"), principal("alice"));
    for _ in 0..refusals::BURST as usize {
        audit.throttle(&bob, "Scheduler").unwrap();
        audit.record::<()>(
            Actor::Principal(&bob),
            "Scheduler.Kill",
            Value::Null,
            &Err(Status::permission_denied("no")),
        );
    }
    let throttled = audit.throttle(&bob, "Scheduler").unwrap_err();
    assert_eq!(throttled.code(), tonic::Code::ResourceExhausted);
    assert!(
        throttled.message().contains("at most 10 a second"),
        "{}",
        throttled.message()
    );
    audit.throttle(&alice, "Scheduler").unwrap();
    now.store(5_100, Ordering::SeqCst);
    audit.throttle(&bob, "Scheduler").unwrap();
    // Without a credential: by address.
    let (a, b) = ("10.0.0.1".parse().ok(), "10.0.0.2".parse().ok());
    let codes: Vec<_> = (0..refusals::BURST + 5)
        .map(|_| {
            audit
                .refused_credential(Status::unauthenticated("no token"), a)
                .code()
        })
        .collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == tonic::Code::Unauthenticated)
            .count(),
        refusals::BURST as usize
    );
    assert_eq!(codes.last(), Some(&tonic::Code::ResourceExhausted));
    let other = audit.refused_credential(Status::unauthenticated("no token"), b);
    assert_eq!(other.code(), tonic::Code::Unauthenticated);
    // Each kind is written once in full.
    let entries = parsed(&audit.read(0, 100).unwrap());
    let calls: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e["call"].as_str().unwrap(),
                e["code"].as_str().unwrap(),
                e["source"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("Scheduler.Kill", "PermissionDenied", ""),
            ("Scheduler.*", "ResourceExhausted", ""),
            ("(credential)", "Unauthenticated", "10.0.0.1"),
            ("(credential)", "ResourceExhausted", "10.0.0.1"),
            ("(credential)", "Unauthenticated", "10.0.0.2"),
        ]
    );
}

#[test]
fn rotation_keeps_its_files_within_the_budget_and_reads_say_what_went() {
    let dir = tempfile::tempdir().unwrap();
    let (now, clock) = clock_at(1);
    let audit = Audit::open_rotating(dir.path(), clock, 10_000, 4).unwrap();
    let alice = principal("alice");
    for i in 0..2_000u64 {
        now.store(i + 1, Ordering::SeqCst);
        audit.record::<()>(
            Actor::Principal(&alice),
            "Scheduler.Kill",
            json!({"i": i}),
            &Ok(()),
        );
    }
    let mut total = 0;
    for name in ["audit.log", "audit.log.1", "audit.log.2", "audit.log.3"] {
        let size = std::fs::metadata(dir.path().join(name)).unwrap().len();
        assert!(size <= 10_000, "{name}: {size}");
        total += size;
    }
    assert!(total <= 40_000);
    assert!(!dir.path().join("audit.log.4").exists());
    let read = audit.read(0, 100_000).unwrap();
    let entries = parsed(&read);
    let first = entries[0]["ts_ms"].as_u64().unwrap();
    assert!(
        entries.len() < 2_000 && entries.len() > 200,
        "{}",
        entries.len()
    );
    assert_eq!(read.oldest_kept_ms, first);
    assert_eq!(
        read.dropped_until_ms,
        first - 1,
        "every line up to the oldest kept went"
    );
    // The newest are all there, in order.
    assert_eq!(entries.last().unwrap()["ts_ms"], 2_000);
    assert!(
        entries
            .windows(2)
            .all(|w| w[0]["ts_ms"].as_u64() < w[1]["ts_ms"].as_u64())
    );
    // Reopened, it still knows.
    drop(audit);
    let audit = Audit::open_rotating(dir.path(), WallClock::system(), 10_000, 4).unwrap();
    assert_eq!(audit.read(0, 10).unwrap().dropped_until_ms, first - 1);
}
