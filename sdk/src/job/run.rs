//! The engine behind [`Job::run`](super::Job::run): places pending tasks
//! on offers, follows their updates, retries, cancels.

use std::collections::{HashMap, HashSet, VecDeque};

use wasmos_core::Resources;
use wasmos_core::packing::{self, Fill};
use wasmos_proto::v1;

use super::{Job, JobUpdate, TaskOutcome, TaskTemplate};
use crate::error::{Error, Result};
use crate::scheduler::{Event, Events, Scheduler, is_terminal};

/// What a template asks for, as the master counts it. A template with
/// resources no master takes (negative cpus) counts as nothing here, so it
/// is sent, and the master's refusal fails the job with its reason.
fn need_of(template: &TaskTemplate) -> Resources {
    Resources::try_from(&template.resources()).unwrap_or_default()
}

pub(super) struct Run {
    pub(super) job: Job,
    pub(super) prefix: String,
    pub(super) scheduler: Scheduler,
    pub(super) pending: VecDeque<usize>,
    pub(super) attempts: Vec<u32>,
    pub(super) last: Vec<Option<v1::TaskStatus>>,
    pub(super) outcomes: Vec<Option<TaskOutcome>>,
    /// Launched attempts not yet terminal: task id -> index.
    pub(super) active: HashMap<String, usize>,
    /// Active tasks whose `Accept` got no answer: launched or not, the
    /// master's first word on them says.
    pub(super) in_doubt: HashSet<String>,
    pub(super) done: usize,
    pub(super) suppressed: bool,
    pub(super) cancelling: bool,
    /// The one shape of the job's tasks, declared as its demand.
    pub(super) shape: Option<v1::Resources>,
}

impl Run {
    pub(super) async fn drive(&mut self, mut events: Events) -> Result<()> {
        let cancel = self.job.cancel.clone();
        while self.done < self.outcomes.len() {
            let event = tokio::select! {
                _ = cancel.cancelled() => break,
                event = events.next() => event,
            };
            self.event(event).await?;
        }
        if self.done == self.outcomes.len() {
            return Ok(());
        }
        // Cancelled: kill what runs, wait a little for the KILLED updates.
        self.cancelling = true;
        self.pending.clear();
        let ids: Vec<String> = self.active.keys().cloned().collect();
        if !ids.is_empty() {
            if let Err(e) = self.scheduler.kill(ids).await {
                tracing::warn!(error = %e, "killing the cancelled job's tasks failed");
            }
            let deadline = tokio::time::Instant::now() + self.job.kill_grace;
            while !self.active.is_empty() {
                match tokio::time::timeout_at(deadline, events.next()).await {
                    Ok(event) => self.event(event).await?,
                    Err(_) => break,
                }
            }
        }
        Ok(())
    }

    fn fail(&self, message: String) -> Error {
        Error::Job {
            job: self.job.name.clone(),
            message,
        }
    }

    async fn event(&mut self, event: Option<Event>) -> Result<()> {
        match event {
            None => Err(self.fail("the framework's session ended unexpectedly".into())),
            Some(Event::Error(message)) => {
                Err(self.fail(format!("the master ended the job's framework: {message}")))
            }
            Some(Event::Offers(offers)) => self.place(offers).await,
            Some(Event::Update(status)) => self.update(status).await,
            Some(Event::Disconnected { reason }) => {
                tracing::warn!(job = %self.job.name, %reason, "lost the master; reconnecting");
                Ok(())
            }
            Some(Event::Resubscribed { .. }) => {
                if !self.pending.is_empty() {
                    self.revive().await;
                }
                Ok(())
            }
            Some(Event::Rescind(_) | Event::Failure { .. }) => Ok(()),
        }
    }

    /// Asks for offers again, declaring what is pending as the demand.
    async fn revive(&mut self) {
        let revived = match self.shape {
            Some(task) => {
                let pending = self.pending.len() as u64;
                self.scheduler.revive_with_demand(task, pending).await
            }
            None => self.scheduler.revive().await,
        };
        match revived {
            Ok(()) => self.suppressed = false,
            Err(e) => tracing::warn!(error = %e, "revive failed; will retry on the next change"),
        }
    }

    /// Packs pending tasks onto the offers, agent by agent.
    async fn place(&mut self, offers: Vec<v1::Offer>) -> Result<()> {
        let mut unused = Vec::new();
        let mut elsewhere = Vec::new();
        for mut pool in packing::by_agent(offers) {
            if !pool.matches(&self.job.on) {
                elsewhere.extend(pool.offer_ids);
                continue;
            }
            if self.pending.is_empty() || self.cancelling {
                unused.extend(pool.offer_ids);
                continue;
            }
            let templates = &self.job.templates;
            let chosen = pool.take(&mut self.pending, Fill::FirstFit, |&index| {
                need_of(&templates[index])
            });
            let ids = pool.offer_ids;
            if chosen.is_empty() {
                unused.extend(ids);
                continue;
            }
            let specs: Vec<v1::TaskSpec> = chosen
                .iter()
                .map(|&index| {
                    self.attempts[index] += 1;
                    let id = format!("{}-{index}-{}", self.prefix, self.attempts[index]);
                    self.active.insert(id.clone(), index);
                    self.job.templates[index].spec(id)
                })
                .collect();
            let task_ids: Vec<String> = specs.iter().map(|s| s.task_id.clone()).collect();
            if let Err(e) = self
                .scheduler
                .accept(ids, specs, Some(self.job.refuse_seconds))
                .await
            {
                if e.code() == Some(tonic::Code::InvalidArgument) {
                    return Err(self.fail(format!("the master refused its tasks: {e}")));
                }
                if e.code().is_some_and(crate::scheduler::launch_in_doubt) {
                    // The master may have launched them (it went away before
                    // answering). They stay active under their ids; the
                    // session reconciles them once it is back, and a launch
                    // that never happened comes back as TASK_UNKNOWN.
                    tracing::info!(error = %e, tasks = task_ids.len(), "accept in doubt; reconciling its tasks");
                    self.in_doubt.extend(task_ids.iter().cloned());
                    if let Err(e) = self.scheduler.reconcile(task_ids).await {
                        tracing::debug!(error = %e, "reconcile failed; the session reconciles after re-subscribing");
                    }
                    continue;
                }
                // The offers went away (rescinded, re-subscribed): nothing
                // was launched, and the tasks wait for new offers.
                tracing::debug!(error = %e, "accept failed; the tasks wait for other offers");
                for (index, id) in chosen.iter().zip(task_ids) {
                    self.active.remove(&id);
                    self.attempts[*index] -= 1;
                }
                for index in chosen.into_iter().rev() {
                    self.pending.push_front(index);
                }
            }
        }
        if !elsewhere.is_empty() {
            let refuse = Some(ELSEWHERE_REFUSE_SECONDS);
            if let Err(e) = self.scheduler.decline(elsewhere, refuse).await {
                tracing::debug!(error = %e, "decline failed (the offers are gone anyway)");
            }
        }
        if !unused.is_empty() {
            let refuse = if self.pending.is_empty() {
                30.0
            } else {
                self.job.refuse_seconds
            };
            if let Err(e) = self.scheduler.decline(unused, Some(refuse)).await {
                tracing::debug!(error = %e, "decline failed (the offers are gone anyway)");
            }
        }
        if self.pending.is_empty() && !self.suppressed {
            match self.scheduler.suppress().await {
                Ok(()) => self.suppressed = true,
                Err(e) => tracing::debug!(error = %e, "suppress failed"),
            }
        }
        Ok(())
    }

    async fn update(&mut self, status: v1::TaskStatus) -> Result<()> {
        // Updates of earlier attempts, duplicates after the end: ignored.
        let Some(&index) = self.active.get(&status.task_id) else {
            return Ok(());
        };
        let state = status.state();
        if self.in_doubt.remove(&status.task_id) && status.reason() == v1::Reason::TaskUnknown {
            // A launch in doubt that never happened: not an attempt.
            self.active.remove(&status.task_id);
            self.attempts[index] -= 1;
            self.pending.push_front(index);
            self.revive().await;
            return Ok(());
        }
        let attempt = self.attempts[index];
        let terminal = is_terminal(state);
        let retrying =
            terminal && !self.cancelling && self.job.retry.should_retry(&status, attempt);
        self.last[index] = Some(status.clone());
        if terminal {
            self.active.remove(&status.task_id);
            if retrying {
                tracing::info!(task = %status.task_id, ?state, reason = ?status.reason(), "retrying");
                self.pending.push_front(index);
                // Also clears the long filters of offers declined while
                // nothing was pending.
                self.revive().await;
            } else {
                self.outcomes[index] = Some(TaskOutcome {
                    index,
                    task_id: status.task_id.clone(),
                    state,
                    reason: status.reason(),
                    message: status.message.clone(),
                    exit_code: status.exit_code,
                    usage: status.usage,
                    agent_id: status.agent_id.clone(),
                    attempts: attempt,
                });
                self.done += 1;
            }
        }
        if let Some(callback) = self.job.on_update.as_mut() {
            callback(&JobUpdate {
                index,
                attempt,
                status,
                retrying,
                done: self.done,
                total: self.outcomes.len(),
            });
        }
        Ok(())
    }
}

/// How long offers of agents that do not match the job's [`Job::on`] are
/// held back: an agent's attributes do not change while it runs.
const ELSEWHERE_REFUSE_SECONDS: f64 = 300.0;
