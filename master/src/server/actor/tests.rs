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

/// The next message on an agent's stream, within a few seconds.
async fn next_message(
    messages: &mut mpsc::Receiver<Result<v1::MasterMessage, Status>>,
) -> AgentKind {
    tokio::time::timeout(Duration::from_secs(5), messages.recv())
        .await
        .expect("a message for the agent")
        .expect("the stream is open")
        .expect("not an error")
        .kind
        .expect("a kind")
}

/// An agent's report of `task`'s new state.
fn report(agent: &AgentId, task: &str, state: v1::TaskState) -> Command {
    Command::FromAgent {
        agent: agent.clone(),
        message: v1::agent_message::Kind::Updates(v1::StatusUpdates {
            statuses: vec![v1::TaskStatus {
                task_id: task.into(),
                agent_id: agent.to_string(),
                state: state as i32,
                exit_code: Some(0),
                uuid: format!("{task}-{state:?}").into_bytes(),
                source: v1::StatusSource::Agent as i32,
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

/// An actor running the job service on `store`, and its command queue.
fn actor_with_jobs(
    store: Arc<dyn Store>,
) -> (
    mpsc::Sender<Command>,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    use crate::jobs::Jobs;
    use crate::server::jobs::driver::Driver;
    let driver = Driver::new(Jobs::new(1), Duration::from_secs(3600), || 1_000);
    let actor = Actor::new(
        Core::new(CoreConfig::default()),
        ActorConfig {
            min_tick_interval: Duration::from_millis(50),
            max_backlog: MAX_BACKLOG,
        },
        Clock::start(),
        store,
    )
    .with_jobs(driver);
    let (commands, inbox) = mpsc::channel(64);
    (commands, tokio::spawn(actor.run(inbox)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_service_runs_inside_the_actors_turns_and_an_end_costs_it_no_commit() {
    use crate::jobs::tests::job_spec;
    use crate::server::jobs::driver::Call;

    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("hold");
    let memory = Arc::new(MemoryStore::new());
    let store = Arc::new(GatedStore::new(memory.clone(), gate.clone()));
    let (commands, running) = actor_with_jobs(store);

    // An agent with room for one index at a time.
    let (agent_tx, mut agent_rx) = mpsc::channel(64);
    let (reply, attached) = oneshot::channel();
    commands
        .send(Command::AttachAgent {
            register: v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "host".into(),
                    resources: Some(v1::Resources {
                        cpus: 1.0,
                        mem: 1 << 30,
                        disk: 0,
                    }),
                    ..Default::default()
                }),
                tasks: vec![],
            },
            messages: agent_tx,
            reply,
        })
        .await
        .unwrap();
    let agent = attached.await.unwrap().unwrap().agent;
    assert!(matches!(
        next_message(&mut agent_rx).await,
        AgentKind::Registered(_)
    ));

    // The actor alone runs the job: nothing but the test sends commands,
    // yet the service takes the offer and launches the first index.
    let submit = |spec: v1::JobSpec| {
        let commands = commands.clone();
        async move {
            let (reply, submitted) = oneshot::channel();
            commands
                .send(Command::Jobs(Call::Submit {
                    who: Principal::local(),
                    spec: Box::new(spec),
                    loaded: Vec::new(),
                    reply,
                }))
                .await
                .unwrap();
            submitted.await.unwrap().unwrap().job_id
        }
    };
    let job = submit(job_spec(1)).await;
    // A job that starts once the first succeeded: only the service's
    // hearing of that end launches it.
    let then = submit(v1::JobSpec {
        after: vec![job.clone()],
        ..job_spec(1)
    })
    .await;
    let launches = |kind: AgentKind| match kind {
        AgentKind::RunTasks(run) => run
            .tasks
            .into_iter()
            .map(|t| t.spec.unwrap().task_id)
            .collect::<Vec<_>>(),
        other => panic!("expected a launch, got {other:?}"),
    };
    let (first, second) = (format!("{job}-0-1"), format!("{then}-0-1"));
    let launch = next_message(&mut agent_rx).await;
    let AgentKind::RunTasks(run) = &launch else {
        panic!("expected a launch, got {launch:?}");
    };
    let framework = run.tasks[0].framework_id.clone();
    assert_eq!(launches(launch), vec![first.clone()]);

    // No client takes the service's framework over.
    let (events, _stream) = crate::server::event_queue::queue(1 << 20);
    let (reply, subscribed) = oneshot::channel();
    commands
        .send(Command::Subscribe {
            who: Principal::local(),
            info: v1::FrameworkInfo {
                framework_id: framework.clone(),
                name: "impostor".into(),
                role: "default".into(),
                ..Default::default()
            },
            events,
            reply,
        })
        .await
        .unwrap();
    let refused = subscribed.await.unwrap().expect_err("refused");
    assert!(refused.to_string().contains("job service"), "{refused}");

    // RUNNING, acknowledged by the service once durable.
    commands
        .send(report(&agent, &first, v1::TaskState::Running))
        .await
        .unwrap();
    match next_message(&mut agent_rx).await {
        AgentKind::AckUpdates(acks) => assert_eq!(acks.acks[0].task_id, first),
        other => panic!("expected the RUNNING's acknowledgement, got {other:?}"),
    }

    // The end's commit is held. The service heard of the end in its turn
    // all the same: the next job is launched meanwhile, and launched by
    // that very commit, which holds the end, the jobs' progress and the
    // end's acknowledgement (sent once it is durable).
    std::fs::write(&gate, b"").unwrap();
    commands
        .send(report(&agent, &first, v1::TaskState::Finished))
        .await
        .unwrap();
    assert_eq!(
        launches(next_message(&mut agent_rx).await),
        vec![second.clone()]
    );
    let listing = dir.path().join("hold.launches");
    while !listing.exists() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(std::fs::read_to_string(&listing).unwrap(), second);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        agent_rx.try_recv().is_err(),
        "nothing but the launch leaves while the end's commit is held"
    );
    std::fs::remove_file(&gate).unwrap();
    match next_message(&mut agent_rx).await {
        AgentKind::AckUpdates(acks) => assert_eq!(acks.acks[0].task_id, first),
        other => panic!("expected the end's acknowledgement, got {other:?}"),
    }
    let stored = memory.load().unwrap();
    let record = stored.jobs.iter().find(|j| j.job_id == job).unwrap();
    assert_eq!(record.succeeded, 1);
    running.abort();
}

/// A job is checked against the artifact index as a launch is: a principal
/// cannot run another's artifact by naming its digest in a job, nor a task
/// whose inputs pass its disk.
#[tokio::test]
async fn a_job_naming_another_principals_artifact_is_refused_at_submit() {
    use crate::access::Grant;
    use crate::jobs::tests::job_spec;
    use crate::server::jobs::driver::Call;

    let memory = Arc::new(MemoryStore::new());
    let (commands, running) = actor_with_jobs(memory.clone());
    let handle = crate::server::handle::ActorHandle::new(commands.clone());
    let principal = |name: &str| Principal {
        name: name.into(),
        accessor: format!("acc-{name}"),
        grant: Grant::Roles(vec!["default".into()]),
    };
    let (alice, bob) = (principal("alice"), principal("bob"));
    let (module, input) = ("ab".repeat(32), "cd".repeat(32));
    for (digest, size) in [(&module, 10), (&input, 5000)] {
        handle
            .call(Input::StoreArtifact {
                owner: alice.clone(),
                digest: digest.clone(),
                size,
            })
            .await
            .unwrap();
    }
    let submit = |who: &Principal, spec: v1::JobSpec| {
        let commands = commands.clone();
        let who = who.clone();
        async move {
            let (reply, submitted) = oneshot::channel();
            commands
                .send(Command::Jobs(Call::Submit {
                    who,
                    spec: Box::new(spec),
                    loaded: Vec::new(),
                    reply,
                }))
                .await
                .unwrap();
            submitted.await.unwrap()
        }
    };
    let refused = submit(&bob, job_spec(1)).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused}");
    assert!(refused.message().contains("not uploaded by"), "{refused}");

    let mut spec = job_spec(1);
    let task = spec.task.as_mut().unwrap();
    task.inputs.push(v1::Input {
        path: "data".into(),
        artifact: input.clone(),
        kind: v1::InputKind::File as i32,
    });
    task.resources.as_mut().unwrap().disk = 4096;
    let refused = submit(&alice, spec.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{refused}");
    assert!(
        refused.message().contains("its inputs are 5000 bytes"),
        "{refused}"
    );
    spec.task.as_mut().unwrap().resources.as_mut().unwrap().disk = 5000;
    submit(&alice, spec).await.expect("alice's own artifacts");
    assert!(
        memory.load().unwrap().jobs.len() == 1,
        "the refused left nothing"
    );
    running.abort();
}

/// A job whose task the core refuses as invalid at every launch (an input
/// uploaded after the submit, larger than the task's disk) fails, saying
/// why, instead of waiting for offers for ever.
#[tokio::test]
async fn a_job_whose_task_can_never_launch_fails_saying_why() {
    use crate::jobs::tests::job_spec;
    use crate::server::jobs::driver::Call;

    let memory = Arc::new(MemoryStore::new());
    let (commands, running) = actor_with_jobs(memory.clone());
    let handle = crate::server::handle::ActorHandle::new(commands.clone());

    // Submitted while nobody stores its input: it passes.
    let input = "cd".repeat(32);
    let mut spec = job_spec(3);
    let task = spec.task.as_mut().unwrap();
    task.inputs.push(v1::Input {
        path: "data".into(),
        artifact: input.clone(),
        kind: v1::InputKind::File as i32,
    });
    task.resources.as_mut().unwrap().disk = 100;
    let (reply, submitted) = oneshot::channel();
    commands
        .send(Command::Jobs(Call::Submit {
            who: Principal::local(),
            spec: Box::new(spec),
            loaded: Vec::new(),
            reply,
        }))
        .await
        .unwrap();
    let job = submitted.await.unwrap().unwrap().job_id;
    handle
        .call(Input::StoreArtifact {
            owner: Principal::local(),
            digest: input,
            size: 5000,
        })
        .await
        .unwrap();

    // An agent comes: its offer is taken, the accept refused.
    let (agent_tx, _agent_rx) = mpsc::channel(64);
    let (reply, attached) = oneshot::channel();
    commands
        .send(Command::AttachAgent {
            register: v1::Register {
                agent: Some(v1::AgentInfo {
                    hostname: "host".into(),
                    resources: Some(v1::Resources {
                        cpus: 4.0,
                        mem: 8 << 30,
                        disk: 1 << 30,
                    }),
                    ..Default::default()
                }),
                tasks: vec![],
            },
            messages: agent_tx,
            reply,
        })
        .await
        .unwrap();
    attached.await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let record = loop {
        let stored = memory.load().unwrap();
        if let Some(record) = stored
            .jobs
            .iter()
            .find(|j| j.job_id == job && j.state() == v1::JobState::Failed)
        {
            break record.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the job never failed: {:?}",
            stored.jobs
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        record.reason.contains("its inputs are 5000 bytes"),
        "{}",
        record.reason
    );
    running.abort();
}
