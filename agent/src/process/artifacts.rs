//! Artifacts for the executor process: it has no link to the master, so it
//! asks the agent attached to it (`artifact_request`) and waits for the
//! bytes (`artifact`). Requests outlive a restarting agent: those still
//! open are asked again of the next agent that attaches.

use std::collections::HashMap;
use std::io;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc::UnboundedSender, oneshot};
use wasmos_proto::v1;
use wasmos_proto::v1::from_executor::Kind;

use crate::{ArtifactSource, FetchFuture};

/// How long a fetch waits, an agent restart included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a fetch's bytes (or its error) go.
type Reply = oneshot::Sender<io::Result<Vec<u8>>>;

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Open requests by id: the digest asked for, and its asker.
    open: HashMap<u64, (String, Reply)>,
    agent: Option<UnboundedSender<v1::FromExecutor>>,
}

/// The executor's [`ArtifactSource`]: fetches through the agent.
#[derive(Default)]
pub struct AgentArtifacts {
    inner: Mutex<Inner>,
}

fn request(id: u64, digest: &str) -> v1::FromExecutor {
    v1::FromExecutor {
        kind: Some(Kind::ArtifactRequest(v1::ArtifactRequest {
            request_id: id,
            digest: digest.to_string(),
        })),
    }
}

impl AgentArtifacts {
    /// An agent attached: open requests go to it, and new ones.
    pub fn attach(&self, agent: UnboundedSender<v1::FromExecutor>) {
        let mut inner = self.inner.lock().unwrap();
        for (id, (digest, _)) in &inner.open {
            let _ = agent.send(request(*id, digest));
        }
        inner.agent = Some(agent);
    }

    /// The agent's answer to request `id`.
    pub fn reply(&self, reply: v1::ArtifactReply) {
        let waiter = self.inner.lock().unwrap().open.remove(&reply.request_id);
        if let Some((_, waiter)) = waiter {
            let result = if reply.error.is_empty() {
                Ok(reply.data)
            } else {
                Err(io::Error::other(reply.error))
            };
            let _ = waiter.send(result);
        }
    }
}

impl ArtifactSource for AgentArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let (tx, rx) = oneshot::channel();
            let id = {
                let mut inner = self.inner.lock().unwrap();
                inner.next_id += 1;
                let id = inner.next_id;
                inner.open.insert(id, (digest.to_string(), tx));
                if let Some(agent) = &inner.agent {
                    let _ = agent.send(request(id, digest));
                }
                id
            };
            match tokio::time::timeout(FETCH_TIMEOUT, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(io::Error::other("the executor stopped")),
                Err(_) => {
                    self.inner.lock().unwrap().open.remove(&id);
                    Err(io::Error::other(format!(
                        "no agent delivered artifact {digest} within {FETCH_TIMEOUT:?}"
                    )))
                }
            }
        })
    }
}
