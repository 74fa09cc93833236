//! The job service inside the actor's turns: its frameworks' events come
//! to it at the end of the turn that made them (see the actor's doc), and
//! what it does is core inputs and registry writes of that turn.

use wasmos_proto::v1;

use super::{Actor, Stream};
use crate::access::Principal;
use crate::core::{Core, CoreError, Input, Reply};
use crate::ids::FrameworkId;
use crate::jobs::Owner;
use crate::server::jobs::driver::{Answer, Driver, Host};
use crate::store::Write;

impl Actor {
    /// Runs `f` on the job service, if this master has one. The driver is
    /// taken out meanwhile: events its own inputs cause queue up for
    /// [`Actor::drive_jobs`] instead of reaching it mid-change.
    pub(super) fn with_driver(&mut self, f: impl FnOnce(&mut Driver, &mut Actor)) {
        let Some(mut driver) = self.jobs.take() else {
            return;
        };
        f(&mut driver, self);
        self.jobs = Some(driver);
    }

    /// Hands the job service the events routed to its frameworks, until
    /// none are left (what it does may route more, such as offers of what
    /// it declined to other frameworks of its own).
    pub(super) fn drive_jobs(&mut self) {
        while !self.job_events.is_empty() && self.jobs.is_some() {
            let events = std::mem::take(&mut self.job_events);
            self.with_driver(|driver, actor| {
                for (owner, event) in events {
                    driver.event(&owner, event, actor);
                }
            });
        }
        self.job_events.clear();
    }
}

impl Host for Actor {
    fn core(&self) -> &Core {
        &self.core
    }

    fn apply(&mut self, input: Input) -> Result<Reply, CoreError> {
        Actor::apply(self, input)
    }

    fn subscribe(
        &mut self,
        who: &Principal,
        owner: &Owner,
        mut info: v1::FrameworkInfo,
    ) -> Result<FrameworkId, CoreError> {
        let connection = self.connection();
        info.principal = who.name.clone();
        let input = Input::Subscribe {
            connection,
            framework: info,
        };
        self.core.authorize(who, &input)?;
        // The stream is known before the core's SUBSCRIBED and first
        // offers are routed: they are routed at the turn's end.
        match Actor::apply(self, input)? {
            Reply::Subscribed(id) => {
                self.frameworks
                    .insert(id.clone(), (connection, Stream::Jobs(owner.clone())));
                Ok(id)
            }
            other => unreachable!("subscribe replied {other:?}"),
        }
    }

    fn persist(&mut self, writes: Vec<Write>) {
        self.writes.extend(writes);
    }

    fn when_durable(&mut self, answer: Answer) {
        self.held_replies.push(answer);
    }
}
