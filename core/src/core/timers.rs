//! When the core needs time, and what a tick does when it comes.
//!
//! Every timer lives in a [`Deadlines`] index, set where the deadline is
//! set: an offer's expiry when it is made, an agent's timeout at each sign
//! of life (or its re-registration deadline after a restart), a framework's
//! failover deadline when its stream drops. The allocator keeps its filters'
//! ends the same way. [`Core::next_timeout`] is the earliest of them, so the
//! shell sleeps until then (or the next input) instead of ticking on a
//! clock, and a tick touches only what is due.
//!
//! Allocation follows change, not time: every handler that frees resources
//! or makes a framework want them runs the allocator over what changed, and
//! resources a handler returns without offering them (rescinded offers) are
//! offered at the end of the same input ([`Core::offer_freed`]).

use crate::allocator::Scope;
use crate::deadlines::Deadlines;
use crate::ids::{AgentId, FrameworkId, OfferId};
use crate::time::Time;

use super::{Agent, Core, CoreError, Reply};

/// The core's timers, and the agents whose resources came back during the
/// current input without being offered yet.
#[derive(Default)]
pub(super) struct Timers {
    pub(super) offers: Deadlines<OfferId>,
    pub(super) agents: Deadlines<AgentId>,
    pub(super) frameworks: Deadlines<FrameworkId>,
    pub(super) freed: Vec<AgentId>,
}

impl Core {
    /// The earliest time at which the core has something to do without
    /// being told: an offer to expire, an agent to declare lost, a framework
    /// past its failover timeout, or a filter ending. The shell sends
    /// [`Input::Tick`](super::Input::Tick) then; `None` means only an input
    /// can give the core work. A tick before this time changes nothing.
    pub fn next_timeout(&self) -> Option<Time> {
        [
            self.timers.offers.next(),
            self.timers.agents.next(),
            self.timers.frameworks.next(),
            self.allocator.next_filter_expiry(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Expires what is due; the end of the input offers what that freed.
    pub(super) fn tick(&mut self, now: Time) -> Result<Reply, CoreError> {
        for offer in self.timers.offers.pop_due(now) {
            self.rescind(&offer, now);
        }
        for agent in self.timers.agents.pop_due(now) {
            let recovering = self.agents[&agent].recovering_until.is_some();
            let why = if recovering {
                format!(
                    "the agent did not re-register within {:?} of the master's restart",
                    self.config.agent_reregister_timeout
                )
            } else {
                "the agent stopped sending heartbeats".to_string()
            };
            self.remove_agent(&agent, &why, now);
        }
        for framework in self.timers.frameworks.pop_due(now) {
            self.remove_framework(
                &framework,
                "the framework did not re-subscribe within its failover timeout",
                now,
            );
        }
        let unfiltered = self.allocator.expire_filters(now);
        self.timers.freed.extend(unfiltered);
        Ok(Reply::Done)
    }

    /// Offers what came back during this input and was not offered yet.
    pub(super) fn offer_freed(&mut self, now: Time) {
        if self.timers.freed.is_empty() {
            return;
        }
        let mut freed = std::mem::take(&mut self.timers.freed);
        freed.sort_unstable();
        freed.dedup();
        self.allocate(now, Scope::Agents(&freed));
    }

    /// The agent showed a sign of life: its timeout moves. Nothing is
    /// written: recovery never reads a last-seen time (a restarted master
    /// gives every agent its re-registration window from its own start),
    /// so a heartbeat costs no commit, however many agents send them.
    pub(super) fn agent_seen(&mut self, id: &AgentId, now: Time) {
        let Some(agent) = self.agents.get_mut(id) else {
            return;
        };
        agent.last_seen = now;
        self.schedule_agent(id);
    }

    /// Sets an agent's deadline from its record: its re-registration
    /// deadline while it is recovering, else the first millisecond it has
    /// been silent for longer than the agent timeout. A removed agent has
    /// none.
    pub(super) fn schedule_agent(&mut self, id: &AgentId) {
        match self.agents.get(id).map(|a| self.agent_deadline(a)) {
            Some(at) => self.timers.agents.set(id.clone(), at),
            None => self.timers.agents.clear(id),
        }
    }

    /// When `agent` is to be declared gone if nothing is heard from it.
    fn agent_deadline(&self, agent: &Agent) -> Time {
        match agent.recovering_until {
            Some(until) => until,
            None => Time((agent.last_seen + self.config.agent_timeout).0 + 1),
        }
    }

    /// Sets a framework's deadline from its record: its failover deadline
    /// while disconnected, none while connected or once removed.
    pub(super) fn schedule_framework(&mut self, id: &FrameworkId) {
        match self.frameworks.get(id).and_then(|f| f.failover_deadline) {
            Some(at) => self.timers.frameworks.set(id.clone(), at),
            None => self.timers.frameworks.clear(id),
        }
    }

    /// Checks that every timer matches its record, so none is missed or
    /// left behind (part of [`Core::check_invariants`]).
    pub(super) fn check_timers(&self) -> Result<(), String> {
        for offer in self.offers.values() {
            if self.timers.offers.get(&offer.id) != offer.expires {
                return Err(format!("offer {} has no timer for its expiry", offer.id));
            }
        }
        for agent in self.agents.values() {
            let want = self.agent_deadline(agent);
            if self.timers.agents.get(&agent.id) != Some(want) {
                return Err(format!(
                    "agent {} has timer {:?}, want {want:?}",
                    agent.id,
                    self.timers.agents.get(&agent.id)
                ));
            }
        }
        for fw in self.frameworks.values() {
            if self.timers.frameworks.get(&fw.id) != fw.failover_deadline {
                return Err(format!(
                    "framework {} has timer {:?}, want {:?}",
                    fw.id,
                    self.timers.frameworks.get(&fw.id),
                    fw.failover_deadline
                ));
            }
        }
        let timers = (
            self.timers.offers.len(),
            self.timers.agents.len(),
            self.timers.frameworks.len(),
        );
        let records = (
            self.offers.values().filter(|o| o.expires.is_some()).count(),
            self.agents.len(),
            self.frameworks
                .values()
                .filter(|f| f.failover_deadline.is_some())
                .count(),
        );
        if timers != records {
            return Err(format!(
                "timers left behind: (offers, agents, frameworks) {timers:?} for {records:?}"
            ));
        }
        Ok(())
    }
}
