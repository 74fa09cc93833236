//! Simulated agents: `AgentLink` streams opened from the test (or bench)
//! process as real agents open them, for what would need hundreds of agent
//! processes. Insecure masters only (agents name their own ids).
//! Self-contained, so benches include it too (`#[path]`).

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use wasmos_proto::v1;
use wasmos_proto::v1::agent_link_client::AgentLinkClient;
use wasmos_proto::v1::agent_message::Kind as ToMaster;

/// Connections the simulated agents share (streams spread over them).
const CONNECTIONS: usize = 8;

/// An attached agent: what keeps its stream open.
pub struct Attached {
    _tx: mpsc::Sender<v1::AgentMessage>,
    _inbound: tonic::Streaming<v1::MasterMessage>,
}

/// Attaches agent `id` over `channel`; Ok once the master sent its first
/// message (`Registered`).
async fn attach(channel: Channel, id: String) -> Result<Attached, tonic::Status> {
    let (tx, rx) = mpsc::channel(4);
    let info = v1::AgentInfo {
        agent_id: id.clone(),
        hostname: id,
        resources: Some(v1::Resources {
            cpus: 2.0,
            mem: 1 << 30,
            disk: 1 << 30,
        }),
        ..Default::default()
    };
    tx.send(v1::AgentMessage {
        kind: Some(ToMaster::Register(v1::Register {
            agent: Some(info),
            tasks: vec![],
        })),
    })
    .await
    .expect("a fresh channel");
    let mut inbound = AgentLinkClient::new(channel)
        .attach(ReceiverStream::new(rx))
        .await?
        .into_inner();
    match inbound.next().await {
        Some(Ok(_)) => Ok(Attached {
            _tx: tx,
            _inbound: inbound,
        }),
        Some(Err(status)) => Err(status),
        None => Err(tonic::Status::unavailable("the stream ended")),
    }
}

/// Attaches agents `sim-0` .. `sim-<n-1>` at once to the master at `url`
/// (`http://…`), each retrying every 20 ms (for 2 minutes at most); when
/// each got in, and their streams.
pub async fn attach_all(url: &str, n: usize) -> (Vec<Instant>, Vec<Attached>) {
    let channels: Vec<Channel> = (0..CONNECTIONS)
        .map(|_| {
            tonic::transport::Endpoint::from_shared(url.to_string())
                .unwrap()
                .connect_lazy()
        })
        .collect();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let channel = channels[i % CONNECTIONS].clone();
            tokio::spawn(async move {
                let deadline = Instant::now() + Duration::from_secs(120);
                loop {
                    match attach(channel.clone(), format!("sim-{i}")).await {
                        Ok(attached) => return (Instant::now(), attached),
                        Err(e) if Instant::now() > deadline => {
                            panic!("agent sim-{i} could not attach: {e}")
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            })
        })
        .collect();
    let mut times = Vec::with_capacity(n);
    let mut attached = Vec::with_capacity(n);
    for task in tasks {
        let (at, a) = task.await.expect("an agent task");
        times.push(at);
        attached.push(a);
    }
    (times, attached)
}
