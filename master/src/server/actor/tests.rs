use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::core::CoreConfig;
use crate::store::{GatedStore, MemoryStore};

/// A role update: one registry write, answered once it is durable.
fn role_update(i: usize) -> (Command, oneshot::Receiver<Result<Reply, CoreError>>) {
    let (reply, answer) = oneshot::channel();
    let command = Command::Call {
        input: Input::UpdateRole {
            role: format!("role-{i}"),
            weight: Some(2.0),
            quota: None,
        },
        who: None,
        reply,
    };
    (command, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_that_does_not_end_stops_the_actor_taking_commands_at_its_backlog() {
    const BACKLOG: usize = 100;
    const QUEUE: usize = 10;
    const CALLS: usize = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("hold");
    let memory = Arc::new(MemoryStore::new());
    let store = Arc::new(GatedStore::new(memory.clone(), gate.clone()));
    let config = ActorConfig {
        min_tick_interval: Duration::from_millis(50),
        max_backlog: BACKLOG,
    };
    let actor = Actor::new(
        Core::new(CoreConfig::default()),
        config,
        Clock::start(),
        store,
    );
    let (commands, inbox) = mpsc::channel(QUEUE);
    let running = tokio::spawn(actor.run(inbox));

    // The first call's commit waits while the gate stands.
    std::fs::write(&gate, b"").unwrap();
    let (command, first) = role_update(0);
    commands.send(command).await.unwrap();
    let listing = dir.path().join("hold.launches");
    while !listing.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let sent = Arc::new(AtomicUsize::new(1));
    let sender = tokio::spawn({
        let sent = sent.clone();
        async move {
            let mut answers = vec![first];
            for i in 1..CALLS {
                let (command, answer) = role_update(i);
                commands.send(command).await.expect("the actor runs");
                sent.fetch_add(1, Ordering::SeqCst);
                answers.push(answer);
            }
            answers
        }
    });
    // The calls stop going in: the first in the held commit, as many as
    // the backlog holds behind it (a write and an answer each), and the
    // queue.
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = sent.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    assert!(
        (1 + BACKLOG / 2..=1 + BACKLOG / 2 + QUEUE + 1).contains(&last),
        "{last} calls went in with a backlog of {BACKLOG} and a queue of {QUEUE}"
    );

    // With the gate down, every call goes through and is durable.
    std::fs::remove_file(&gate).unwrap();
    let answers = tokio::time::timeout(Duration::from_secs(60), sender)
        .await
        .expect("the calls went in once the commit ended")
        .unwrap();
    for answer in answers {
        assert!(matches!(answer.await.unwrap(), Ok(Reply::Done)));
    }
    assert_eq!(memory.load().unwrap().roles.len(), CALLS);
    running.abort();
}
