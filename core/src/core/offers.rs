//! Offers: made from allocations, accepted (launching tasks), declined,
//! rescinded, timed out.
//!
//! An offer holds resources of one agent for one framework; offers never
//! overlap. An accept may combine several offers of one agent; whatever its
//! tasks leave unused goes back to the allocator at once (with the request's
//! filter), and freed resources trigger an allocation for that agent without
//! waiting for the next cycle.

use crate::maps::HashSet;
use std::time::Duration;

use wasmos_proto::v1;

use super::transitions::Transitions;
use super::validate::validate_task;
use super::{Core, CoreError, Offer, Reply, Task};
use crate::allocator::Scope;
use crate::ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
use crate::resources::Resources;
use crate::time::Time;

impl Core {
    /// Runs the allocator over `scope` and turns its grants into offers.
    pub(super) fn allocate(&mut self, now: Time, scope: Scope<'_>) {
        let grants = self.allocator.allocate(now, scope);
        let expires = self.config.offer_timeout.map(|t| now + t);
        for grant in grants {
            let id = OfferId::from(self.fresh_id('O'));
            let agent = self.agents.get_mut(&grant.agent).expect("allocated agent");
            agent.offers.insert(id.clone());
            let wire = v1::Offer {
                offer_id: id.to_string(),
                framework_id: grant.framework.to_string(),
                agent_id: grant.agent.to_string(),
                hostname: agent.info.hostname.clone(),
                attributes: agent.info.attributes.clone(),
                resources: Some((&grant.resources).into()),
                reservation_role: grant
                    .reservation
                    .as_ref()
                    .map(|r| r.to_string())
                    .unwrap_or_default(),
            };
            let fw = self
                .frameworks
                .get_mut(&grant.framework)
                .expect("allocated framework");
            fw.offers.insert(id.clone());
            self.out.offer(&grant.framework, wire);
            if let Some(at) = expires {
                self.timers.offers.set(id.clone(), at);
            }
            self.offers.insert(
                id.clone(),
                Offer {
                    id,
                    framework: grant.framework,
                    agent: grant.agent,
                    resources: grant.resources,
                    reservation: grant.reservation,
                    expires,
                },
            );
        }
    }

    /// Refuses `more` tasks for `framework` when its principal's
    /// frameworks would hold more than `tasks_per_principal` with them.
    fn check_principal_tasks(&self, framework: &FrameworkId, more: usize) -> Result<(), CoreError> {
        let cap = self.config.caps.tasks_per_principal;
        let principal = &self.frameworks[framework].info.principal;
        let held = self.principal_tasks.get(principal).copied().unwrap_or(0);
        if held + more > cap {
            return Err(CoreError::Exhausted(format!(
                "principal `{principal}` holds {held} tasks; {more} more would pass the limit of {cap} one principal may hold (--max-tasks-per-principal): acknowledge finished ones"
            )));
        }
        Ok(())
    }

    pub(super) fn accept(&mut self, req: v1::AcceptRequest, now: Time) -> Result<Reply, CoreError> {
        let framework = FrameworkId::from(req.framework_id.as_str());
        self.framework_mut(&framework)?;
        let refuse = self.refuse_duration(req.filters.as_ref())?;
        let offers = self.check_offers(&framework, &req.offer_ids)?;
        let agent = self.offers[&offers[0]].agent.clone();

        let held = self.frameworks[&framework].tasks.len();
        if held + req.tasks.len() > self.config.caps.tasks_per_framework {
            return Err(CoreError::Exhausted(format!(
                "framework {framework} holds {held} tasks; {} more would pass its limit of {} (--max-tasks-per-framework): acknowledge finished ones",
                req.tasks.len(),
                self.config.caps.tasks_per_framework
            )));
        }
        self.check_principal_tasks(&framework, req.tasks.len())?;
        // Validate every task before touching anything.
        let mut specs = Vec::with_capacity(req.tasks.len());
        let mut seen = HashSet::default();
        for spec in req.tasks {
            let resources = validate_task(&spec)?;
            self.check_input_bytes(&spec)?;
            let id = TaskId::from(spec.task_id.as_str());
            if self.task_id_taken(&id) || !seen.insert(id.clone()) {
                return Err(CoreError::DuplicateTask(id));
            }
            specs.push((id, spec, resources));
        }

        // Pool the offers by reservation and check the tasks fit.
        let mut pools: Vec<(Option<Role>, Resources)> = Vec::new();
        for offer in &offers {
            let o = &self.offers[offer];
            match pools.iter_mut().find(|(r, _)| *r == o.reservation) {
                Some((_, r)) => *r += o.resources,
                None => pools.push((o.reservation.clone(), o.resources)),
            }
        }
        // Reserved pools are drawn first: they can serve no one else.
        pools.sort_by_key(|(role, _)| role.is_none());
        let offered = pools.iter().fold(Resources::ZERO, |acc, (_, r)| acc + *r);
        // Summed with overflow checks: the sizes come from the framework, and
        // a sum that wrapped around would pass for a small one.
        let needed = specs
            .iter()
            .try_fold(Resources::ZERO, |acc, (_, _, r)| acc.checked_add(r))
            .ok_or_else(|| {
                CoreError::InvalidArgument(format!(
                    "the tasks together ask for more than can be counted; the offers hold {offered}"
                ))
            })?;
        if let Some(resource) = needed.first_excess(&offered) {
            return Err(CoreError::InsufficientResources {
                resource,
                needed: needed.to_string(),
                offered: offered.to_string(),
            });
        }

        // Apply: the offers are used up, the tasks launch, the rest returns.
        for offer in &offers {
            self.forget_offer(offer);
        }
        let mut launched = Vec::with_capacity(specs.len());
        let (owner, role) = self
            .frameworks
            .get(&framework)
            .map(|fw| (fw.info.principal.clone(), fw.role.clone()))
            .expect("checked: the framework is known");
        for (id, mut spec, resources) in specs {
            let consumption = draw(&mut pools, resources);
            if spec.name.is_empty() {
                spec.name = spec.task_id.clone();
            }
            let epoch = self.config.master_epoch;
            let mac = self
                .config
                .launch_key
                .sign(&agent, &framework, epoch, &spec);
            self.out.run(
                &agent,
                v1::TaskLaunch {
                    framework_id: framework.to_string(),
                    spec: Some(spec.clone()),
                    mac,
                    master_epoch: epoch,
                },
            );
            let status = v1::TaskStatus {
                task_id: id.to_string(),
                framework_id: framework.to_string(),
                agent_id: agent.to_string(),
                state: v1::TaskState::Staging as i32,
                timestamp_ms: self.wall(now),
                source: v1::StatusSource::Master as i32,
                ..Default::default()
            };
            self.insert_task(Task {
                id: id.clone(),
                framework: framework.clone(),
                agent: agent.clone(),
                spec,
                resources,
                consumption,
                transitions: Transitions::starting(&status),
                status,
                released: false,
                kill_requested: false,
                master_update: None,
                end_unsynced: false,
                archived: false,
                owner: owner.clone(),
                role: role.clone(),
                usage_counted: false,
            });
            launched.push(id);
        }
        for (reservation, rest) in pools {
            if !rest.is_zero() {
                self.allocator
                    .recover(
                        &framework,
                        &agent,
                        reservation.as_ref(),
                        rest,
                        Some(refuse),
                        now,
                    )
                    .expect("offer's framework and agent are known");
            }
        }
        self.allocator
            .launched(&framework, launched.len() as u64)
            .expect("framework known to allocator");
        self.allocate(now, Scope::Agents(std::slice::from_ref(&agent)));
        Ok(Reply::Launched(launched))
    }

    pub(super) fn decline(
        &mut self,
        req: v1::DeclineRequest,
        now: Time,
    ) -> Result<Reply, CoreError> {
        let framework = FrameworkId::from(req.framework_id.as_str());
        self.framework_mut(&framework)?;
        let refuse = self.refuse_duration(req.filters.as_ref())?;
        // An offer listed twice would be given back twice; a set keeps the
        // check cheap for a decline of thousands of offers.
        let mut offers = Vec::new();
        let mut seen = HashSet::default();
        for id in &req.offer_ids {
            let id = self.check_offer(&framework, id)?;
            if !seen.insert(id.clone()) {
                return Err(CoreError::DuplicateOffer(id));
            }
            offers.push(id);
        }
        let mut agents = Vec::new();
        for id in offers {
            let offer = self.forget_offer(&id);
            self.allocator
                .recover(
                    &framework,
                    &offer.agent,
                    offer.reservation.as_ref(),
                    offer.resources,
                    Some(refuse),
                    now,
                )
                .expect("offer's framework and agent are known");
            agents.push(offer.agent);
        }
        agents.dedup();
        // A framework that declines while its declared demand waits refused
        // its demand where it was offered (say, an agent without the
        // attributes its tasks need): its demand is looked for on every
        // agent, or nothing would offer it the others until some unrelated
        // change there.
        if self.allocator.has_unmet_demand(&framework) {
            self.allocate(now, Scope::All);
        } else {
            self.allocate(now, Scope::Agents(&agents));
        }
        Ok(Reply::Done)
    }

    pub(super) fn rescind_agent_offers(&mut self, agent: &AgentId, now: Time) {
        let ids: Vec<OfferId> = self.agents[agent].offers.iter().cloned().collect();
        for id in ids {
            self.rescind(&id, now);
        }
    }

    pub(super) fn rescind_framework_offers(&mut self, framework: &FrameworkId, now: Time) {
        let ids: Vec<OfferId> = self.frameworks[framework].offers.iter().cloned().collect();
        for id in ids {
            self.rescind(&id, now);
        }
    }

    /// Withdraws an offer: tells its framework and returns the resources.
    pub(super) fn rescind(&mut self, id: &OfferId, now: Time) {
        let offer = self.forget_offer(id);
        self.out.rescind(&offer.framework, offer.id.to_string());
        self.timers.freed.push(offer.agent.clone());
        self.allocator
            .recover(
                &offer.framework,
                &offer.agent,
                offer.reservation.as_ref(),
                offer.resources,
                None,
                now,
            )
            .expect("offer's framework and agent are known");
    }

    /// Returns a terminal task's resources to the allocator.
    pub(super) fn release(
        &mut self,
        framework: &FrameworkId,
        agent: &AgentId,
        consumption: &[(Option<Role>, Resources)],
    ) {
        for (reservation, resources) in consumption {
            self.allocator
                .recover(
                    framework,
                    agent,
                    reservation.as_ref(),
                    *resources,
                    None,
                    Time::ZERO,
                )
                .expect("task's framework and agent are known");
        }
    }

    /// Removes an offer from every index, returning it.
    fn forget_offer(&mut self, id: &OfferId) -> Offer {
        let offer = self.offers.remove(id).expect("known offer");
        self.timers.offers.clear(id);
        if let Some(agent) = self.agents.get_mut(&offer.agent) {
            agent.offers.remove(id);
        }
        if let Some(fw) = self.frameworks.get_mut(&offer.framework) {
            fw.offers.remove(id);
        }
        offer
    }

    fn check_offer(&self, framework: &FrameworkId, id: &str) -> Result<OfferId, CoreError> {
        let id = OfferId::from(id);
        let offer = self
            .offers
            .get(&id)
            .ok_or_else(|| CoreError::UnknownOffer(id.clone()))?;
        if &offer.framework != framework {
            return Err(CoreError::ForeignOffer {
                offer: id,
                framework: framework.clone(),
            });
        }
        Ok(id)
    }

    /// Checks the offers of an accept: known, the framework's, distinct, all
    /// on one agent.
    fn check_offers(
        &self,
        framework: &FrameworkId,
        ids: &[String],
    ) -> Result<Vec<OfferId>, CoreError> {
        if ids.is_empty() {
            return Err(CoreError::NoOffers);
        }
        let mut offers: Vec<OfferId> = Vec::with_capacity(ids.len());
        for id in ids {
            let id = self.check_offer(framework, id)?;
            if offers.contains(&id) {
                return Err(CoreError::DuplicateOffer(id));
            }
            if let Some(first) = offers.first()
                && self.offers[first].agent != self.offers[&id].agent
            {
                return Err(CoreError::OffersOnDifferentAgents(first.clone(), id));
            }
            offers.push(id);
        }
        Ok(offers)
    }

    fn refuse_duration(&self, filters: Option<&v1::Filters>) -> Result<Duration, CoreError> {
        match filters.and_then(|f| f.refuse_seconds) {
            None => Ok(self.config.default_refuse),
            Some(s) if s.is_finite() && (0.0..=365.0 * 86400.0).contains(&s) => {
                Ok(Duration::from_secs_f64(s))
            }
            Some(s) => Err(CoreError::InvalidArgument(format!(
                "refuse_seconds must be between 0 and one year, got {s}"
            ))),
        }
    }
}

/// Takes `need` out of the pools in their order (callers put reserved ones
/// first), one resource at a time, and says how much came from which pool.
/// The caller has checked that `need` fits in their sum.
pub(super) fn draw(
    pools: &mut [(Option<Role>, Resources)],
    need: Resources,
) -> Vec<(Option<Role>, Resources)> {
    let mut left = need;
    let mut taken = Vec::new();
    for (role, pool) in pools.iter_mut() {
        if left.is_zero() {
            break;
        }
        let take = left.min(pool);
        if !take.is_zero() {
            *pool -= take;
            left -= take;
            taken.push((role.clone(), take));
        }
    }
    debug_assert!(left.is_zero(), "the caller checked that the need fits");
    taken
}
