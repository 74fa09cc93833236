//! Artifacts for the executor process: it has no link to the master, so it
//! asks the agent attached to it (`artifact_request`) and waits for the
//! bytes (`artifact`). Requests outlive a restarting agent: those still
//! open are asked again of the next agent that attaches.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc::UnboundedSender, oneshot};
use wasmos_proto::v1;
use wasmos_proto::v1::from_executor::Kind;

use crate::executor::{TOO_LARGE, write_new};
use crate::{ArtifactSource, FetchFuture, SpoolFuture};

/// How long a fetch waits, an agent restart included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the agent's answer goes.
type Reply = oneshot::Sender<v1::ArtifactReply>;

#[derive(Default)]
struct Inner {
    next_id: u64,
    /// Open requests by id, and their askers.
    open: HashMap<u64, (v1::ArtifactRequest, Reply)>,
    agent: Option<UnboundedSender<v1::FromExecutor>>,
}

/// The executor's [`ArtifactSource`]: fetches through the agent.
#[derive(Default)]
pub struct AgentArtifacts {
    inner: Mutex<Inner>,
}

fn message(request: &v1::ArtifactRequest) -> v1::FromExecutor {
    v1::FromExecutor {
        kind: Some(Kind::ArtifactRequest(request.clone())),
    }
}

impl AgentArtifacts {
    /// An agent attached: open requests go to it, and new ones.
    pub fn attach(&self, agent: UnboundedSender<v1::FromExecutor>) {
        let mut inner = self.inner.lock().unwrap();
        for (request, _) in inner.open.values() {
            let _ = agent.send(message(request));
        }
        inner.agent = Some(agent);
    }

    /// The agent's answer to request `id`.
    pub fn reply(&self, reply: v1::ArtifactReply) {
        let waiter = self.inner.lock().unwrap().open.remove(&reply.request_id);
        if let Some((_, waiter)) = waiter {
            let _ = waiter.send(reply);
        }
    }

    /// Asks the agent (this one or the next to attach) and waits.
    async fn ask(&self, mut request: v1::ArtifactRequest) -> io::Result<v1::ArtifactReply> {
        let (tx, rx) = oneshot::channel();
        let id = {
            let mut inner = self.inner.lock().unwrap();
            inner.next_id += 1;
            request.request_id = inner.next_id;
            if let Some(agent) = &inner.agent {
                let _ = agent.send(message(&request));
            }
            let id = request.request_id;
            inner.open.insert(id, (request.clone(), tx));
            id
        };
        let reply = match tokio::time::timeout(FETCH_TIMEOUT, rx).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(_)) => return Err(io::Error::other("the executor stopped")),
            Err(_) => {
                self.inner.lock().unwrap().open.remove(&id);
                return Err(io::Error::other(format!(
                    "no agent delivered artifact {} within {FETCH_TIMEOUT:?}",
                    request.digest
                )));
            }
        };
        if reply.error.is_empty() {
            Ok(reply)
        } else if reply.error.contains(TOO_LARGE) {
            Err(io::Error::new(io::ErrorKind::FileTooLarge, reply.error))
        } else {
            Err(io::Error::other(reply.error))
        }
    }
}

impl ArtifactSource for AgentArtifacts {
    fn fetch<'a>(&'a self, digest: &'a str) -> FetchFuture<'a> {
        Box::pin(async move {
            let request = v1::ArtifactRequest {
                digest: digest.to_string(),
                ..Default::default()
            };
            Ok(self.ask(request).await?.data)
        })
    }

    /// The agent streams the bytes into `dest` itself; an agent of
    /// protocol 1.0 sends them whole, and they are written here.
    fn spool<'a>(&'a self, digest: &'a str, dest: &'a Path, limit: u64) -> SpoolFuture<'a> {
        Box::pin(async move {
            let request = v1::ArtifactRequest {
                digest: digest.to_string(),
                spool_path: dest.display().to_string(),
                max_bytes: limit,
                ..Default::default()
            };
            let reply = self.ask(request).await?;
            if reply.spooled {
                return Ok(reply.size);
            }
            write_new(dest, &reply.data, limit).await
        })
    }
}
