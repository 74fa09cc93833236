//! Collects the messages one input produces and batches them: all offers for
//! a framework become one `Offers` event, all launches for an agent one
//! `RunTasks` message, and so on. Batching is what keeps the per-task cost of
//! the wire low (see DESIGN.md, "Cost of the wire").

use crate::maps::HashMap;
use std::hash::Hash;

use wasmos_proto::v1;
use wasmos_proto::v1::event::Kind as EventKind;
use wasmos_proto::v1::master_message::Kind as AgentKind;

use super::Output;
use crate::ids::{AgentId, FrameworkId};
use crate::limits::MAX_MESSAGE_BYTES;

/// Messages gathered while handling one input, in batches keyed by recipient.
#[derive(Default)]
pub(super) struct Outbox {
    /// Messages that are sent as they are, in order (SUBSCRIBED, FAILURE, ...).
    direct: Vec<Output>,
    rescinds: Batches<FrameworkId, String>,
    updates: Batches<FrameworkId, v1::TaskStatus>,
    offers: Batches<FrameworkId, v1::Offer>,
    runs: Batches<AgentId, v1::TaskLaunch>,
    kills: Batches<AgentId, String>,
    acks: Batches<AgentId, v1::StatusAck>,
    /// Streams to close, after everything else was sent on them.
    closes: Vec<Output>,
}

/// Items grouped by recipient, recipients in first-seen order. A full
/// allocation cycle offers to every framework, so recipients are found by
/// index, not by a search.
struct Batches<K, T> {
    order: Vec<(K, Vec<T>)>,
    index: HashMap<K, usize>,
}

impl<K, T> Default for Batches<K, T> {
    fn default() -> Self {
        Batches {
            order: Vec::new(),
            index: HashMap::default(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> Batches<K, T> {
    fn push(&mut self, key: &K, item: T) {
        // Most inputs have one recipient: the last one is the likely match.
        if let Some((last, items)) = self.order.last_mut()
            && last == key
        {
            items.push(item);
            return;
        }
        match self.index.get(key) {
            Some(&i) => self.order[i].1.push(item),
            None => {
                self.index.insert(key.clone(), self.order.len());
                self.order.push((key.clone(), vec![item]));
            }
        }
    }

    fn drain(&mut self) -> impl Iterator<Item = (K, Vec<T>)> + '_ {
        self.index.clear();
        self.order.drain(..)
    }
}

impl Outbox {
    pub fn framework_event(&mut self, framework: &FrameworkId, kind: EventKind) {
        self.direct.push(Output::Framework(
            framework.clone(),
            v1::Event { kind: Some(kind) },
        ));
    }

    pub fn agent_message(&mut self, agent: &AgentId, kind: AgentKind) {
        self.direct.push(Output::Agent(
            agent.clone(),
            v1::MasterMessage { kind: Some(kind) },
        ));
    }

    pub fn rescind(&mut self, framework: &FrameworkId, offer: String) {
        self.rescinds.push(framework, offer);
    }

    pub fn update(&mut self, framework: &FrameworkId, status: v1::TaskStatus) {
        self.updates.push(framework, status);
    }

    pub fn offer(&mut self, framework: &FrameworkId, offer: v1::Offer) {
        self.offers.push(framework, offer);
    }

    pub fn run(&mut self, agent: &AgentId, launch: v1::TaskLaunch) {
        self.runs.push(agent, launch);
    }

    pub fn kill(&mut self, agent: &AgentId, task: String) {
        self.kills.push(agent, task);
    }

    pub fn ack(&mut self, agent: &AgentId, ack: v1::StatusAck) {
        self.acks.push(agent, ack);
    }

    pub fn close(&mut self, output: Output) {
        self.closes.push(output);
    }

    /// Everything gathered, batched: direct messages first, then rescinds
    /// before updates before new offers (so a framework never sees an offer
    /// for resources it still thinks another offer holds), then agent batches,
    /// then closes.
    pub fn drain(&mut self) -> Vec<Output> {
        let mut out = std::mem::take(&mut self.direct);
        for (fw, offer_ids) in self.rescinds.drain() {
            for offer_ids in split(offer_ids) {
                out.push(event(
                    fw.clone(),
                    EventKind::Rescind(v1::Rescind { offer_ids }),
                ));
            }
        }
        for (fw, statuses) in self.updates.drain() {
            for statuses in split(statuses) {
                out.push(event(
                    fw.clone(),
                    EventKind::Updates(v1::Updates { statuses }),
                ));
            }
        }
        for (fw, offers) in self.offers.drain() {
            for offers in split(offers) {
                out.push(event(fw.clone(), EventKind::Offers(v1::Offers { offers })));
            }
        }
        for (agent, tasks) in self.kills.drain() {
            for task_ids in split(tasks) {
                out.push(message(
                    agent.clone(),
                    AgentKind::KillTasks(v1::KillTasks { task_ids }),
                ));
            }
        }
        for (agent, tasks) in self.runs.drain() {
            for tasks in split(tasks) {
                out.push(message(
                    agent.clone(),
                    AgentKind::RunTasks(v1::RunTasks { tasks }),
                ));
            }
        }
        for (agent, acks) in self.acks.drain() {
            for acks in split(acks) {
                out.push(message(
                    agent.clone(),
                    AgentKind::AckUpdates(v1::AckUpdates { acks }),
                ));
            }
        }
        out.append(&mut self.closes);
        out
    }
}

/// A batch in pieces of at most [`MAX_MESSAGE_BYTES`] (almost always one).
fn split<T: prost::Message>(items: Vec<T>) -> Vec<Vec<T>> {
    crate::limits::split_by_bytes(items, MAX_MESSAGE_BYTES - 64)
}

fn event(fw: FrameworkId, kind: EventKind) -> Output {
    Output::Framework(fw, v1::Event { kind: Some(kind) })
}

fn message(agent: AgentId, kind: AgentKind) -> Output {
    Output::Agent(agent, v1::MasterMessage { kind: Some(kind) })
}
