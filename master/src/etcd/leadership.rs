//! Who leads: masters campaign through etcd's election service, each on a
//! lease of its own; the winner leads until its lease ends.
//!
//! - [`Lease::grant`] takes a lease and keeps it alive from a thread of
//!   its own that renews it every third of its time to live. The lease's
//!   deadline, as this master knows it, is the moment a renewal was *sent*
//!   plus the TTL etcd answered: never later than etcd's own.
//! - [`register`] puts where this master is under its id, on its lease,
//!   for [`masters`] (`wasmos masters`).
//! - [`campaign`] waits until this master leads and returns its
//!   [`Leader`] key, whose creation revision fences every registry write
//!   (`store::EtcdStore`).
//! - [`Lease::watch_leadership`] arms a watchdog on a thread of its own
//!   (a busy or blocked runtime cannot starve it): a fifth of the lease
//!   before its deadline without a renewal, or at etcd's word that the
//!   lease is gone, it ends the process at once, so a leader that can no
//!   longer prove it leads sends nothing more (Mesos's "lost leadership,
//!   committing suicide"); a supervisor restarts it as a standby.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use wasmos_proto::etcd::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeRequest,
    PutRequest, RangeRequest,
};
use wasmos_proto::etcd::v3electionpb::{
    CampaignRequest, LeaderKey, LeaderRequest, ProclaimRequest, ResignRequest,
};
use wasmos_proto::v1::MasterInfo;

use super::{Etcd, Keys};
use crate::store::Fence;

/// The exit code of a master that lost its leadership.
pub const LOST_LEADERSHIP_EXIT: i32 = 3;

/// A lease this master holds in etcd, kept alive while it lives.
#[derive(Debug)]
pub struct Lease {
    id: i64,
    ttl: Duration,
    state: Arc<LeaseState>,
    /// Ends the renewals when the lease is dropped or revoked.
    _stop: tokio::sync::oneshot::Sender<()>,
    etcd: Etcd,
}

#[derive(Debug)]
struct LeaseState {
    /// What deadlines are measured from.
    base: Instant,
    /// Milliseconds after `base` until which the lease surely holds.
    valid_until_ms: AtomicU64,
    /// Why the lease is gone, once etcd said so.
    lost: Mutex<Option<String>>,
}

impl LeaseState {
    fn deadline(&self) -> Instant {
        self.base + Duration::from_millis(self.valid_until_ms.load(Ordering::Acquire))
    }

    fn lost(&self) -> Option<String> {
        self.lost.lock().unwrap().clone()
    }
}

impl Lease {
    /// Takes a lease of `ttl` (whole seconds, at least 1; etcd may raise a
    /// very short one to its own minimum) and starts keeping it alive.
    pub async fn grant(etcd: &Etcd, ttl: Duration) -> Result<Lease, tonic::Status> {
        let seconds = ttl.as_secs().max(1) as i64;
        let sent = Instant::now();
        let granted = etcd
            .lease
            .clone()
            .lease_grant(LeaseGrantRequest {
                ttl: seconds,
                id: 0,
            })
            .await?
            .into_inner();
        if !granted.error.is_empty() {
            return Err(tonic::Status::unavailable(granted.error));
        }
        let ttl = Duration::from_secs(granted.ttl.max(1) as u64);
        let state = Arc::new(LeaseState {
            base: sent,
            valid_until_ms: AtomicU64::new(ttl.as_millis() as u64),
            lost: Mutex::new(None),
        });
        // Renewals run on a thread and runtime of their own: a master busy
        // on its own thread (loading a large registry) must not lose its
        // leadership for it.
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let renewing = (etcd.clone(), granted.id, state.clone());
        std::thread::Builder::new()
            .name("wasmos-lease".into())
            .spawn(move || {
                let (etcd, id, state) = renewing;
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        *state.lost.lock().unwrap() = Some(format!("cannot renew it: {e}"));
                        return;
                    }
                };
                runtime.block_on(async move {
                    tokio::select! {
                        () = keep_alive(etcd.reconnect(), id, ttl, state) => {}
                        _ = stopped => {}
                    }
                });
            })
            .map_err(|e| {
                tonic::Status::internal(format!("cannot start renewing the lease: {e}"))
            })?;
        Ok(Lease {
            id: granted.id,
            ttl,
            state,
            _stop: stop,
            etcd: etcd.clone(),
        })
    }

    /// The lease's time to live, as etcd granted it.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Why the lease is gone, or `None` while it holds (etcd has not said
    /// it expired and its deadline has not passed).
    pub fn lost(&self) -> Option<String> {
        if let Some(why) = self.state.lost() {
            return Some(why);
        }
        let deadline = self.state.deadline();
        (Instant::now() >= deadline).then(|| {
            format!(
                "its lease was last renewed {:?} ago, longer than its time to live ({:?})",
                Instant::now() - deadline + self.ttl,
                self.ttl
            )
        })
    }

    /// Resolves once the lease is gone, with why.
    pub async fn until_lost(&self) -> String {
        loop {
            if let Some(why) = self.lost() {
                return why;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Arms the watchdog of a leader: from now on, the process ends (exit
    /// code [`LOST_LEADERSHIP_EXIT`]) once the lease may have ended, a fifth
    /// of its time to live before its deadline.
    pub fn watch_leadership(&self) {
        let state = self.state.clone();
        let margin = self.ttl / 5;
        let spawned = std::thread::Builder::new()
            .name("wasmos-leadership".into())
            .spawn(move || {
                loop {
                    let why = state.lost().or_else(|| {
                        let give_up = state.deadline() - margin;
                        (Instant::now() >= give_up).then(|| {
                            "its lease could not be renewed in time (etcd did not answer)".to_string()
                        })
                    });
                    if let Some(why) = why {
                        tracing::error!("lost leadership: {why}; exiting so nothing more is sent");
                        eprintln!(
                            "wasmos master: lost leadership: {why}; exiting (restart it to stand by)"
                        );
                        std::process::exit(LOST_LEADERSHIP_EXIT);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            });
        if let Err(e) = spawned {
            eprintln!("wasmos master: cannot start the leadership watchdog ({e}); exiting");
            std::process::exit(LOST_LEADERSHIP_EXIT);
        }
    }

    /// Gives the lease back: every key on it (the campaign key) goes at
    /// once, so a standby leads without waiting for it to expire.
    pub async fn revoke(self) {
        let revoked = self
            .etcd
            .lease
            .clone()
            .lease_revoke(LeaseRevokeRequest { id: self.id })
            .await;
        if let Err(e) = revoked {
            tracing::warn!(
                "cannot revoke the lease ({}); it expires in {:?}",
                e.message(),
                self.ttl
            );
        }
    }
}

/// Renews the lease every third of its time to live, on one stream
/// (opened again when it breaks), moving the deadline on with each answer.
async fn keep_alive(etcd: Etcd, id: i64, ttl: Duration, state: Arc<LeaseState>) {
    let every = ttl / 3;
    let mut stream = None;
    loop {
        let sent = Instant::now();
        match tokio::time::timeout(every, renew(&etcd, id, &mut stream)).await {
            Ok(Some(answer)) if answer.ttl > 0 => {
                let until = sent + Duration::from_secs(answer.ttl as u64);
                let ms = (until - state.base).as_millis() as u64;
                state.valid_until_ms.fetch_max(ms, Ordering::AcqRel);
            }
            Ok(Some(_)) => {
                *state.lost.lock().unwrap() = Some("etcd says its lease expired".into());
                return;
            }
            Ok(None) | Err(_) => {
                tracing::warn!("the lease's renewal went unanswered; trying again");
                stream = None;
            }
        }
        tokio::time::sleep_until((sent + every).into()).await;
    }
}

/// A keep-alive stream: requests in, answers out.
type KeepAlive = (
    mpsc::Sender<LeaseKeepAliveRequest>,
    tonic::Streaming<LeaseKeepAliveResponse>,
);

/// Sends one renewal on `stream` (opening it first if there is none) and
/// waits for its answer; `None` if the stream broke.
async fn renew(
    etcd: &Etcd,
    id: i64,
    stream: &mut Option<KeepAlive>,
) -> Option<LeaseKeepAliveResponse> {
    match stream {
        Some((tx, _)) => tx.send(LeaseKeepAliveRequest { id }).await.ok()?,
        None => {
            // etcd sends the call's headers with its first answer, so the
            // first request goes in before the call is made.
            let (tx, rx) = mpsc::channel(4);
            tx.send(LeaseKeepAliveRequest { id }).await.ok()?;
            let mut lease = etcd.lease.clone();
            match lease.lease_keep_alive(ReceiverStream::new(rx)).await {
                Ok(answers) => *stream = Some((tx, answers.into_inner())),
                Err(e) => {
                    tracing::warn!("cannot renew the lease: {}", e.message());
                    return None;
                }
            }
        }
    }
    let (_, answers) = stream.as_mut()?;
    answers.message().await.ok().flatten()
}

/// This master's leadership: its campaign key in etcd.
#[derive(Clone, Debug)]
pub struct Leader {
    key: LeaderKey,
}

impl Leader {
    /// What its registry writes are fenced by.
    pub fn fence(&self) -> Fence {
        Fence {
            key: self.key.key.clone(),
            revision: self.key.rev,
        }
    }

    /// Replaces what the leader proclaims (its URLs, once it serves).
    pub async fn proclaim(&self, etcd: &Etcd, info: &MasterInfo) {
        let proclaimed = etcd
            .election
            .clone()
            .proclaim(ProclaimRequest {
                leader: Some(self.key.clone()),
                value: info.encode_to_vec(),
            })
            .await;
        if let Err(e) = proclaimed {
            tracing::warn!("cannot proclaim this master's address: {}", e.message());
        }
    }

    /// Steps down: the election's next campaigner leads at once.
    pub async fn resign(&self, etcd: &Etcd) {
        let resigned = etcd
            .election
            .clone()
            .resign(ResignRequest {
                leader: Some(self.key.clone()),
            })
            .await;
        if let Err(e) = resigned {
            tracing::warn!("cannot resign: {}", e.message());
        }
    }
}

/// Waits until this master, on `lease`, leads the cluster under `keys`,
/// proclaiming `info`.
pub async fn campaign(
    etcd: &Etcd,
    keys: &Keys,
    lease: &Lease,
    info: &MasterInfo,
) -> Result<Leader, tonic::Status> {
    let answer = etcd
        .election
        .clone()
        .campaign(CampaignRequest {
            name: keys.election(),
            lease: lease.id,
            value: info.encode_to_vec(),
        })
        .await?
        .into_inner();
    let key = answer
        .leader
        .ok_or_else(|| tonic::Status::internal("etcd's campaign answer holds no leader key"))?;
    Ok(Leader { key })
}

/// The leader now, as it proclaimed itself; `None` while nobody leads.
pub async fn current_leader(etcd: &Etcd, keys: &Keys) -> Result<Option<MasterInfo>, tonic::Status> {
    let answer = etcd
        .election
        .clone()
        .leader(LeaderRequest {
            name: keys.election(),
        })
        .await;
    match answer {
        Ok(answer) => Ok(answer
            .into_inner()
            .kv
            .and_then(|kv| MasterInfo::decode(kv.value.as_slice()).ok())),
        // etcd answers "election: no leader" as an error.
        Err(status) if status.message().contains("no leader") => Ok(None),
        Err(status) => Err(status),
    }
}

/// Says where this master is, for `wasmos masters`: `info` under its id,
/// on its lease (gone with it).
pub async fn register(
    etcd: &Etcd,
    keys: &Keys,
    lease: &Lease,
    info: &MasterInfo,
) -> Result<(), tonic::Status> {
    etcd.kv
        .clone()
        .put(PutRequest {
            key: keys.master(&info.master_id),
            value: info.encode_to_vec(),
            lease: lease.id,
            ..Default::default()
        })
        .await?;
    Ok(())
}

/// Every master that said where it is and whose lease holds, by id.
pub async fn masters(etcd: &Etcd, keys: &Keys) -> Result<Vec<MasterInfo>, tonic::Status> {
    let start = keys.master("");
    let answer = etcd
        .kv
        .clone()
        .range(RangeRequest {
            range_end: super::prefix_end(&start),
            key: start,
            ..Default::default()
        })
        .await?
        .into_inner();
    Ok(answer
        .kvs
        .iter()
        .filter_map(|kv| MasterInfo::decode(kv.value.as_slice()).ok())
        .collect())
}

/// What the leaders of one prefix did so far, kept in etcd
/// (`<prefix>/history`) for the metrics of whoever leads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaderHistory {
    /// Terms begun (the first leader's is the first).
    pub terms: u64,
    /// Time without a leader between terms, as the next leader saw it:
    /// from the last time it saw the old leader to its own win.
    pub leaderless_ms: u64,
    /// The last such gap.
    pub last_gap_ms: u64,
}

impl LeaderHistory {
    /// Terms that followed another: leader changes.
    pub fn changes(&self) -> u64 {
        self.terms.saturating_sub(1)
    }
}

/// Counts a new term in etcd's history, `gap` after the last leader was
/// seen (`None`: none was, this master found nobody leading). Written by
/// the new leader only, once, right after it won.
pub async fn begin_term(
    etcd: &Etcd,
    keys: &Keys,
    gap: Option<Duration>,
) -> Result<LeaderHistory, tonic::Status> {
    let answer = etcd
        .kv
        .clone()
        .range(RangeRequest {
            key: keys.history(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut history: LeaderHistory = answer
        .kvs
        .first()
        .and_then(|kv| serde_json::from_slice(&kv.value).ok())
        .unwrap_or_default();
    history.terms += 1;
    if let Some(gap) = gap {
        let gap_ms = gap.as_millis() as u64;
        history.leaderless_ms += gap_ms;
        history.last_gap_ms = gap_ms;
    }
    etcd.kv
        .clone()
        .put(PutRequest {
            key: keys.history(),
            value: serde_json::to_vec(&history).expect("plain numbers"),
            ..Default::default()
        })
        .await?;
    Ok(history)
}
