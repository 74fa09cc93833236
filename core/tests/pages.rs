//! The paged task views the web UI reads: a page holds the tasks after its
//! cursor in id order, every task a filter matches appears on exactly one
//! page, and nobody sees tasks they may not; each task keeps its last
//! changes of state.

use wasmos_core::core::{TaskFilter, TaskPage};
use wasmos_core::testing::{GIB, Harness, task};
use wasmos_proto::v1;

/// 25 tasks of framework `a` (owner `alice`) and 5 of `b` (owner `bob`),
/// `a-07` and `b-02` finished.
fn thirty_tasks() -> Harness {
    let mut h = Harness::new();
    let agent = h.add_agent(64.0, 64 * GIB);
    for (name, owner, count) in [("a", "alice", 25), ("b", "bob", 5)] {
        let fw = h
            .subscribe_with(v1::FrameworkInfo {
                name: name.into(),
                role: "web".into(),
                principal: owner.into(),
                ..Default::default()
            })
            .unwrap();
        let offer = h.take_offers(&fw).pop().expect("an offer");
        let tasks = (0..count)
            .map(|i| task(&format!("{name}-{i:02}"), 0.1, 1 << 20))
            .collect();
        h.accept(&fw, &[&offer], tasks, None).unwrap();
        for i in 0..count {
            h.report(&agent, &format!("{name}-{i:02}"), v1::TaskState::Running);
        }
    }
    h.report(&agent, "a-07", v1::TaskState::Finished);
    h.report(&agent, "b-02", v1::TaskState::Finished);
    h
}

fn ids(page: &TaskPage) -> Vec<String> {
    page.tasks.iter().map(|t| t.id.to_string()).collect()
}

/// Every page of `filter` as seen by `visible`, `limit` at a time.
fn walk(h: &Harness, filter: &TaskFilter, visible: fn(&str) -> bool, limit: usize) -> Vec<String> {
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = h.core.task_page(filter, visible, after.as_deref(), limit);
        assert!(page.tasks.len() <= limit);
        seen.extend(ids(&page));
        match page.next {
            Some(next) => after = Some(next.to_string()),
            None => return seen,
        }
    }
}

#[test]
fn pages_walk_every_matching_task_once_in_id_order() {
    let h = thirty_tasks();
    let all = TaskFilter::default();
    let first = h.core.task_page(&all, |_| true, None, 7);
    assert_eq!(first.matching, 30);
    assert_eq!(
        ids(&first),
        ["a-00", "a-01", "a-02", "a-03", "a-04", "a-05", "a-06"]
    );
    assert_eq!(
        first.next.as_ref().map(|t| t.to_string()),
        Some("a-06".into())
    );

    let walked = walk(&h, &all, |_| true, 7);
    let mut sorted = walked.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(walked, sorted, "in id order, none twice");
    assert_eq!(walked.len(), 30);

    // A page exactly as long as what is left says there is no next one.
    let last = h.core.task_page(&all, |_| true, Some("a-24"), 5);
    assert_eq!(ids(&last), ["b-00", "b-01", "b-02", "b-03", "b-04"]);
    assert_eq!(last.next, None);
}

#[test]
fn filters_and_visibility_narrow_the_pages_and_their_counts() {
    let h = thirty_tasks();
    let finished = TaskFilter {
        state: Some(v1::TaskState::Finished),
        ..Default::default()
    };
    assert_eq!(walk(&h, &finished, |_| true, 1), ["a-07", "b-02"]);
    assert_eq!(walk(&h, &finished, |owner| owner == "bob", 10), ["b-02"]);
    let page = h
        .core
        .task_page(&TaskFilter::default(), |owner| owner == "bob", None, 100);
    assert_eq!(page.matching, 5);
    assert!(page.tasks.iter().all(|t| t.owner == "bob"));

    let framework_a = h.core.task_page(&TaskFilter::default(), |_| true, None, 1);
    let a = framework_a.tasks[0].framework.clone();
    let of_a = TaskFilter {
        framework: a,
        state: Some(v1::TaskState::Running),
        ..Default::default()
    };
    assert_eq!(h.core.task_page(&of_a, |_| true, None, 100).matching, 24);
    let nowhere = TaskFilter {
        agent: "no-such-agent".into(),
        ..Default::default()
    };
    assert_eq!(h.core.task_page(&nowhere, |_| true, None, 100).matching, 0);

    let counts = h.core.task_counts(|owner| owner == "alice");
    assert_eq!(counts.get(&v1::TaskState::Running), Some(&24));
    assert_eq!(counts.get(&v1::TaskState::Finished), Some(&1));
}

#[test]
fn a_task_keeps_its_changes_of_state() {
    let h = thirty_tasks();
    let task = h.core.task("a-07").unwrap();
    let states: Vec<_> = task.transitions.iter().map(|t| t.state).collect();
    assert_eq!(
        states,
        [
            v1::TaskState::Staging,
            v1::TaskState::Running,
            v1::TaskState::Finished
        ]
    );
}
