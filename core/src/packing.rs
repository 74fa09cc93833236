//! How a framework fills its offers: the one packing every wasmos
//! scheduler uses (the SDK's `Job`, `wasmos run`, the simulator, the
//! benches and, inside the master, the job service), so that they all
//! count resources as the master does (millicores, exact) and none of them
//! grows a subtly different copy.
//!
//! Offers are pooled per agent first: one `Accept` may name several offers
//! of one agent, never two agents. Then tasks are taken from a queue while
//! they fit, in one of two orders ([`Fill`]).

use crate::maps::HashMap;
use std::collections::VecDeque;

use wasmos_proto::v1;

use crate::Resources;

/// The offers a framework holds on one agent, pooled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentOffers {
    pub agent_id: String,
    /// Every offer of this agent, to name together in one `Accept`.
    pub offer_ids: Vec<String>,
    /// What they offer together, less what [`take`] has taken so far.
    pub free: Resources,
    /// The agent's attributes (its `os` and `arch` among them), as its
    /// first offer gave them.
    pub attributes: Vec<v1::Attribute>,
}

impl AgentOffers {
    /// True when the agent has every attribute `on` asks for (key and
    /// value alike): where a job that asked for `arch=aarch64` may run.
    pub fn matches(&self, on: &[v1::Attribute]) -> bool {
        on.iter().all(|want| {
            self.attributes
                .iter()
                .any(|a| a.key == want.key && a.value == want.value)
        })
    }

    /// How many tasks of one shape fit in what is left (`u64::MAX` for an
    /// empty shape: it takes nothing).
    pub fn copies_of(&self, need: &Resources) -> u64 {
        copies_in(&self.free, need)
    }

    /// Takes tasks from `pending` that fit in what is left (see [`take`]).
    pub fn take<T>(
        &mut self,
        pending: &mut VecDeque<T>,
        fill: Fill,
        need: impl FnMut(&T) -> Resources,
    ) -> Vec<T> {
        take(&mut self.free, pending, fill, need)
    }
}

/// Pools offers per agent, agents in the order they first appear. An offer
/// without resources, or with resources no master sends (negative cpus),
/// adds nothing to its agent's pool but is still named, so accepting or
/// declining the pool returns it.
pub fn by_agent(offers: impl IntoIterator<Item = v1::Offer>) -> Vec<AgentOffers> {
    let mut agents: Vec<AgentOffers> = Vec::new();
    // Where each agent's pool is in `agents`: a full cycle offers a
    // framework thousands of agents, and a search per offer was quadratic.
    let mut index: HashMap<String, usize> = HashMap::default();
    for offer in offers {
        let offered = offer
            .resources
            .as_ref()
            .and_then(|r| Resources::try_from(r).ok())
            .unwrap_or_default();
        let pool = match index.get(&offer.agent_id) {
            Some(&i) => &mut agents[i],
            None => {
                index.insert(offer.agent_id.clone(), agents.len());
                agents.push(AgentOffers {
                    agent_id: offer.agent_id,
                    offer_ids: Vec::new(),
                    free: Resources::ZERO,
                    attributes: offer.attributes,
                });
                agents.last_mut().expect("just pushed")
            }
        };
        pool.offer_ids.push(offer.offer_id);
        pool.free = pool.free.checked_add(&offered).unwrap_or(Resources::MAX);
    }
    agents
}

/// The order in which [`take`] walks its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// Strictly in queue order: stop at the first task that does not fit,
    /// so no later task overtakes it (a priority queue, a FIFO).
    InOrder,
    /// Every task that fits, skipping those that do not; the skipped keep
    /// their order. Packs mixed shapes tighter.
    FirstFit,
}

/// Takes tasks from the front of `pending` while they fit in `free`, taking
/// each one's resources out of `free`, and returns them in queue order.
pub fn take<T>(
    free: &mut Resources,
    pending: &mut VecDeque<T>,
    fill: Fill,
    mut need: impl FnMut(&T) -> Resources,
) -> Vec<T> {
    let mut taken = Vec::new();
    match fill {
        Fill::InOrder => {
            while let Some(left) = pending.front().and_then(|t| free.checked_sub(&need(t))) {
                *free = left;
                taken.extend(pending.pop_front());
            }
        }
        Fill::FirstFit => {
            let mut skipped = VecDeque::new();
            while let Some(task) = pending.pop_front() {
                match free.checked_sub(&need(&task)) {
                    Some(left) => {
                        *free = left;
                        taken.push(task);
                    }
                    None => skipped.push_back(task),
                }
                // Every valid task asks for a millicore at least: no
                // need to walk a long queue once the cpus are gone.
                if free.cpu_millis == 0 {
                    break;
                }
            }
            skipped.append(pending);
            *pending = skipped;
        }
    }
    taken
}

/// How many tasks of shape `need` fit in `free` (`u64::MAX` for an empty
/// shape).
pub fn copies_in(free: &Resources, need: &Resources) -> u64 {
    let per = |have: u64, want: u64| have.checked_div(want).unwrap_or(u64::MAX);
    per(free.cpu_millis, need.cpu_millis)
        .min(per(free.mem, need.mem))
        .min(per(free.disk, need.disk))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str, cpus: f64, mem: u64) -> v1::Offer {
        v1::Offer {
            offer_id: id.into(),
            agent_id: agent.into(),
            resources: Some(v1::Resources { cpus, mem, disk: 0 }),
            ..Default::default()
        }
    }

    #[test]
    fn offers_pool_per_agent_in_first_seen_order() {
        let pools = by_agent([
            offer("o1", "b", 0.5, 10),
            offer("o2", "a", 1.0, 20),
            offer("o3", "b", 0.25, 5),
        ]);
        assert_eq!(pools.len(), 2);
        assert_eq!(pools[0].agent_id, "b");
        assert_eq!(pools[0].offer_ids, ["o1", "o3"]);
        assert_eq!(pools[0].free, Resources::new(0.75, 15, 0));
        assert_eq!(pools[1].free, Resources::new(1.0, 20, 0));
    }

    #[test]
    fn an_offer_with_bad_resources_is_named_but_adds_nothing() {
        let mut bad = offer("o2", "a", -1.0, 99);
        let pools = by_agent([offer("o1", "a", 1.0, 1), bad.clone()]);
        assert_eq!(pools[0].offer_ids, ["o1", "o2"]);
        assert_eq!(pools[0].free, Resources::new(1.0, 1, 0));
        bad.resources = None;
        assert_eq!(by_agent([bad])[0].free, Resources::ZERO);
    }

    #[test]
    fn cpus_count_in_millicores_so_ten_tenths_fill_a_core() {
        let mut free = Resources::new(1.0, 100, 0);
        let mut pending: VecDeque<u32> = (0..12).collect();
        let taken = take(&mut free, &mut pending, Fill::InOrder, |_| {
            Resources::new(0.1, 1, 0)
        });
        assert_eq!(taken, (0..10).collect::<Vec<_>>());
        assert_eq!(free, Resources::new(0.0, 90, 0));
        assert_eq!(pending, [10, 11]);
    }

    #[test]
    fn in_order_stops_at_the_first_misfit_and_first_fit_skips_it() {
        let shape = |t: &u64| Resources::new(*t as f64, 0, 0);
        let mut free = Resources::new(3.0, 0, 0);
        let mut pending: VecDeque<u64> = VecDeque::from([1, 4, 1, 1, 1]);
        assert_eq!(take(&mut free, &mut pending, Fill::InOrder, shape), [1]);
        assert_eq!(pending, [4, 1, 1, 1]);

        let mut free = Resources::new(3.0, 0, 0);
        let mut pending: VecDeque<u64> = VecDeque::from([1, 4, 1, 1, 1]);
        assert_eq!(
            take(&mut free, &mut pending, Fill::FirstFit, shape),
            [1, 1, 1]
        );
        assert_eq!(pending, [4, 1], "the skipped keep their order");
        assert!(free.is_zero());
    }

    #[test]
    fn copies_of_one_shape() {
        let pool = AgentOffers {
            agent_id: "a".into(),
            offer_ids: vec![],
            free: Resources::new(1.0, 10, 0),
            attributes: vec![],
        };
        assert_eq!(pool.copies_of(&Resources::new(0.3, 2, 0)), 3);
        assert_eq!(pool.copies_of(&Resources::new(0.1, 4, 0)), 2);
        assert_eq!(pool.copies_of(&Resources::ZERO), u64::MAX);
    }

    #[test]
    fn an_agent_matches_when_it_has_every_attribute_asked_for() {
        let attribute = |key: &str, value: &str| v1::Attribute {
            key: key.into(),
            value: value.into(),
        };
        let offer = |id: &str, agent: &str| v1::Offer {
            offer_id: id.into(),
            agent_id: agent.into(),
            attributes: vec![attribute("os", "linux"), attribute("arch", "aarch64")],
            ..Default::default()
        };
        let pools = by_agent([offer("o1", "a"), offer("o2", "a")]);
        let [pool] = &pools[..] else {
            panic!("{pools:?}")
        };
        assert!(pool.matches(&[]));
        assert!(pool.matches(&[attribute("arch", "aarch64")]));
        assert!(pool.matches(&[attribute("arch", "aarch64"), attribute("os", "linux")]));
        assert!(!pool.matches(&[attribute("arch", "x86_64")]));
        assert!(!pool.matches(&[attribute("arch", "aarch64"), attribute("zone", "eu")]));
        assert!(!pool.matches(&[attribute("aarch64", "arch")]));
    }
}
