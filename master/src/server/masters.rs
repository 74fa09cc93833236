//! The masters of a cluster as its leader sees them: for `ListMasters`,
//! `/state` and the leadership metrics. A lone master (no `--etcd`) is
//! the only one, and leads.

use serde_json::{Value, json};
use tonic::Status;
use wasmos_proto::v1;

use crate::etcd::leadership::LeaderHistory;

#[derive(Clone, Debug)]
pub struct Masters {
    pub master_id: String,
    pub epoch: u64,
    /// Of masters on etcd: where to list them.
    pub peers: Option<crate::etcd::Peers>,
    /// Of masters on etcd: the leaders so far, this one's term counted.
    pub history: Option<LeaderHistory>,
    /// When this master began to lead (ms since the Unix epoch).
    pub since_ms: u64,
}

impl Masters {
    /// Since when this master leads, if others led before it (their audit
    /// lines are in their own logs); 0 otherwise.
    pub fn led_after_others_since_ms(&self) -> u64 {
        match &self.history {
            Some(history) if history.terms > 1 => self.since_ms,
            _ => 0,
        }
    }
}

impl Masters {
    /// Every master: this one (the leader) first, then the standbys by id.
    pub async fn list(&self) -> Result<Vec<v1::MasterState>, Status> {
        let me = v1::MasterState {
            info: Some(v1::MasterInfo {
                master_id: self.master_id.clone(),
                ..Default::default()
            }),
            leader: true,
            epoch: self.epoch,
        };
        let Some(peers) = &self.peers else {
            return Ok(vec![me]);
        };
        let mut listed = crate::etcd::leadership::masters(&peers.etcd, &peers.keys)
            .await
            .map_err(|e| Status::unavailable(format!("cannot ask etcd: {}", e.message())))?;
        listed.sort_by(|a, b| a.master_id.cmp(&b.master_id));
        let mut masters = Vec::with_capacity(listed.len() + 1);
        let (mine, others): (Vec<_>, Vec<_>) = listed
            .into_iter()
            .partition(|info| info.master_id == self.master_id);
        masters.push(v1::MasterState {
            info: mine.into_iter().next().or(me.info),
            ..me
        });
        masters.extend(others.into_iter().map(|info| v1::MasterState {
            info: Some(info),
            leader: false,
            epoch: 0,
        }));
        Ok(masters)
    }

    /// The other masters' gRPC `host:port`, for join strings (none when
    /// etcd cannot say: the string still names this master).
    pub async fn others_host_port(&self) -> Vec<String> {
        let Some(peers) = &self.peers else {
            return Vec::new();
        };
        match crate::etcd::leadership::masters(&peers.etcd, &peers.keys).await {
            Ok(masters) => masters
                .into_iter()
                .filter(|m| m.master_id != self.master_id)
                .filter(|m| super::artifacts::reachable(&m.grpc_url))
                .filter_map(|m| Some(m.grpc_url.split_once("://")?.1.to_string()))
                .collect(),
            Err(e) => {
                tracing::warn!(
                    "cannot list the other masters for a join string: {}",
                    e.message()
                );
                Vec::new()
            }
        }
    }

    /// [`Masters::list`] as `/state` shows it (an error as its message).
    pub async fn json(&self) -> Value {
        match self.list().await {
            Ok(masters) => masters
                .iter()
                .map(|m| {
                    let info = m.info.clone().unwrap_or_default();
                    json!({
                        "id": info.master_id,
                        "leader": m.leader,
                        "epoch": m.epoch,
                        "grpc": info.grpc_url,
                        "http": info.http_url,
                        "since_ms": info.since_ms,
                    })
                })
                .collect(),
            Err(e) => json!({ "error": e.message() }),
        }
    }

    /// The leadership metrics, Prometheus text.
    pub fn render_metrics(&self, out: &mut String) {
        use super::metrics::{counter, gauge};
        gauge(
            out,
            "wasmos_master_epoch",
            "The leading master's epoch: one more at every start or new leader.",
            &[(String::new(), self.epoch as f64)],
        );
        let Some(history) = &self.history else {
            return;
        };
        counter(
            out,
            "wasmos_leader_changes_total",
            "Times another master took over from a leader (masters on etcd).",
            &[(String::new(), history.changes() as f64)],
        );
        counter(
            out,
            "wasmos_leaderless_seconds_total",
            "Time without a leader between terms, as each new leader saw it.",
            &[(String::new(), history.leaderless_ms as f64 / 1000.0)],
        );
        gauge(
            out,
            "wasmos_leaderless_last_seconds",
            "Time without a leader before the current term.",
            &[(String::new(), history.last_gap_ms as f64 / 1000.0)],
        );
    }
}
