//! `wasmos master --etcd`: one of several masters sharing a registry in
//! etcd. It takes a lease, campaigns, and stands by until it leads; then it
//! starts as a lone master would, on the registry in etcd with every write
//! fenced by its election, until it stops (Ctrl-C or SIGTERM: it resigns,
//! and a standby leads at once) or loses its leadership (it exits, code 3,
//! for its supervisor to restart it as a standby).

use std::sync::Arc;
use std::time::Duration;

use wasmos_master::etcd::compaction;
use wasmos_master::etcd::leadership::{self, Lease};
use wasmos_master::etcd::{self, Etcd, Keys};
use wasmos_master::server::standby::Standby;
use wasmos_master::server::{BlobService, sweep_unindexed};
use wasmos_master::server::{Master, MasterConfig, Transport};
use wasmos_master::store::EtcdStore;
use wasmos_master::store::{Record, Store, Table};
use wasmos_proto::v1::MasterInfo;

use crate::master::Args;

/// How long to wait before asking an etcd that did not answer again.
const RETRY: Duration = Duration::from_millis(500);

pub async fn run(args: &Args, etcd_urls: &str) -> anyhow::Result<()> {
    let endpoints = etcd::endpoints(etcd_urls, args.etcd_tls().load()?.as_ref())?;
    let keys = Keys::new(args.etcd_prefix())?;
    let mut config = args.config()?;
    config.keepalive = (args.leader_lease() / 2).max(Duration::from_millis(500));
    let client = Etcd::connect(&endpoints);
    let mut info = MasterInfo {
        master_id: config.core.master_id.clone(),
        grpc_url: args.grpc_url(),
        http_url: String::new(),
        since_ms: now_ms(),
    };
    // While standing by, the master's ports tell clients where the leader
    // is (see `standby`).
    let (stop_standing_by, standing_by) = tokio::sync::oneshot::channel();
    // Where the standby's ports were bound: with `--listen` on port 0,
    // only known once it serves, and registered again then.
    let (bound_tx, mut bound) = tokio::sync::watch::channel(None);
    let standby = tokio::spawn(stand_by(
        client.clone(),
        keys.clone(),
        EtcdStore::connect(&endpoints, keys.clone(), None, args.leader_lease())?,
        config.clone(),
        args.leader_lease(),
        standing_by,
        bound_tx,
    ));
    let shutdown = crate::shutdown::requested();
    tokio::pin!(shutdown);
    let mut told_waiting = false;
    let (lease, leader) = loop {
        let lease = tokio::select! {
            lease = Lease::grant(&client, args.leader_lease()) => lease,
            why = &mut shutdown => {
                println!("stopping ({why})");
                return Ok(());
            }
        };
        let lease = match lease {
            Ok(lease) => lease,
            Err(e) => {
                if !told_waiting {
                    eprintln!(
                        "wasmos master: etcd at {etcd_urls} does not answer ({}); trying again",
                        e.message()
                    );
                    told_waiting = true;
                }
                tokio::time::sleep(RETRY).await;
                continue;
            }
        };
        (info.grpc_url, info.http_url) = standby_urls(args, *bound.borrow_and_update());
        let mut registered = leadership::register(&client, &keys, &lease, &info).await;
        if let Err(e) = &registered {
            tracing::warn!("cannot say where this master is: {}", e.message());
        }
        match leadership::current_leader(&client, &keys).await {
            Ok(Some(leader)) => println!(
                "standing by under {} on etcd: {} leads ({})",
                keys.prefix(),
                leader.master_id,
                leader.grpc_url
            ),
            _ => println!("standing by under {} on etcd: no leader yet", keys.prefix()),
        }
        // The campaign waits while another master leads; meanwhile the
        // standby may learn the port it was given (`--listen` on port 0),
        // and says so, trying again until etcd has taken it.
        let outcome = {
            // What standbys read of the leader until it proclaims where it
            // serves: no HTTP yet (its standby's port closes as it starts).
            let campaigning = MasterInfo {
                http_url: String::new(),
                ..info.clone()
            };
            let campaign = leadership::campaign(&client, &keys, &lease, &campaigning);
            tokio::pin!(campaign);
            loop {
                tokio::select! {
                    won = &mut campaign => break Campaign::Ended(won),
                    why = lease.until_lost() => break Campaign::LeaseLost(why),
                    why = &mut shutdown => break Campaign::Stop(why),
                    Ok(()) = bound.changed() => {
                        let urls = standby_urls(args, *bound.borrow_and_update());
                        if urls == (info.grpc_url.clone(), info.http_url.clone()) && registered.is_ok() {
                            continue;
                        }
                        (info.grpc_url, info.http_url) = urls;
                    }
                    _ = tokio::time::sleep(RETRY), if registered.is_err() => {}
                }
                registered = leadership::register(&client, &keys, &lease, &info).await;
                if let Err(e) = &registered {
                    tracing::warn!("cannot say where this master is: {}", e.message());
                }
            }
        };
        match outcome {
            Campaign::Ended(Ok(leader)) => break (lease, leader),
            Campaign::Ended(Err(e)) => {
                eprintln!(
                    "wasmos master: campaign failed ({}); trying again",
                    e.message()
                );
                lease.revoke().await;
                tokio::time::sleep(RETRY).await;
            }
            Campaign::LeaseLost(why) => {
                eprintln!("wasmos master: lost the standby lease ({why}); campaigning again");
            }
            Campaign::Stop(why) => {
                println!("stopping ({why})");
                lease.revoke().await;
                return Ok(());
            }
        }
    };
    // From here on a leader that cannot prove it leads ends the process.
    lease.watch_leadership();
    let _ = stop_standing_by.send(());
    let last_seen_leader = standby.await.ok().flatten();
    let gap = last_seen_leader.map(|seen| seen.elapsed());
    match leadership::begin_term(&client, &keys, gap).await {
        Ok(history) => config.leader_history = Some(history),
        Err(e) => tracing::warn!("cannot count this term in etcd: {}", e.message()),
    }
    if let Some(gap) = gap {
        println!("no master led for {:.2} s", gap.as_secs_f64());
    }
    println!(
        "leading under {} on etcd (lease {:?})",
        keys.prefix(),
        lease.ttl()
    );
    let store = EtcdStore::connect(&endpoints, keys.clone(), Some(leader.fence()), lease.ttl())?;
    config.store = Some(Arc::new(store));
    config.peers = Some(etcd::Peers {
        etcd: client.clone(),
        keys: keys.clone(),
    });
    let master = Master::start(config).await?;
    info.grpc_url = master.url();
    info.http_url = master
        .http_addr()
        .map(|http| format!("{}://{http}", master.scheme()))
        .unwrap_or_default();
    info.since_ms = now_ms();
    leader.proclaim(&client, &info).await;
    if let Err(e) = leadership::register(&client, &keys, &lease, &info).await {
        tracing::warn!("cannot say where this master is: {}", e.message());
    }
    let compaction = tokio::spawn(compaction::compact_forever(
        client.clone(),
        args.etcd_compact_every(),
    ));
    crate::master::announce(args, &master);
    // The master (in `wait`) is dropped when this ends: its servers close,
    // and a write its actor still makes is fenced once the lease is gone.
    let stopping = tokio::select! {
        result = master.wait() => return result,
        why = &mut shutdown => why,
    };
    compaction.abort();
    println!("stopping ({stopping}); resigning");
    leader.resign(&client).await;
    lease.revoke().await;
    Ok(())
}

/// Where a standby's gRPC and HTTP ports were bound.
type Bound = (std::net::SocketAddr, Option<std::net::SocketAddr>);

/// The gRPC and HTTP URLs a standby registers: before its ports are bound,
/// its `--advertise` or `--listen` address and no HTTP.
fn standby_urls(args: &Args, bound: Option<Bound>) -> (String, String) {
    let scheme = if args.insecure() { "http" } else { "https" };
    let http = bound
        .and_then(|(_, http)| http)
        .map(|http| format!("{scheme}://{http}"))
        .unwrap_or_default();
    (args.grpc_url_bound(bound.map(|(grpc, _)| grpc)), http)
}

/// How a standby's campaign ended.
enum Campaign {
    /// It won (the leader's key), or failed.
    Ended(Result<leadership::Leader, tonic::Status>),
    /// Its lease ended first.
    LeaseLost(String),
    /// The master was told to stop (by what).
    Stop(&'static str),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Serves the standby's answers on the master's ports until `stop`, with
/// the leader as etcd says (asked every [`LEADER_POLL`]). On a TLS cluster
/// it starts once the cluster's CA is in the registry (the first leader
/// makes it). Returns when it last saw another master lead.
async fn stand_by(
    etcd: Etcd,
    keys: Keys,
    registry: EtcdStore,
    config: MasterConfig,
    lease: Duration,
    mut stop: tokio::sync::oneshot::Receiver<()>,
    bound: tokio::sync::watch::Sender<Option<Bound>>,
) -> Option<std::time::Instant> {
    let registry = Arc::new(registry);
    let mut last_seen_leader = None;
    let mut next_sweep = std::time::Instant::now() + SWEEP_EVERY;
    let (leader_tx, leader_rx) = tokio::sync::watch::channel(None);
    let mut serving: Option<Standby> = None;
    let mut told = false;
    loop {
        if let Ok(leader) = leadership::current_leader(&etcd, &keys).await {
            if leader
                .as_ref()
                .is_some_and(|l| l.master_id != config.core.master_id)
            {
                last_seen_leader = Some(std::time::Instant::now());
            }
            leader_tx.send_replace(leader);
        }
        if serving.is_none() {
            let tls = match &config.transport {
                Transport::Insecure => Some(None),
                Transport::Tls(settings) => {
                    let registry = registry.clone();
                    let ca = tokio::task::spawn_blocking(move || registry.get(Table::Trust, "ca"))
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .flatten();
                    match ca {
                        Some(Record::Ca(ca)) => {
                            match wasmos_master::server::standby::tls_config(
                                &ca,
                                settings,
                                config.listen,
                            ) {
                                Ok(tls) => Some(Some(tls)),
                                Err(e) => {
                                    if !told {
                                        eprintln!(
                                            "wasmos master: cannot serve while standing by: {e:#}"
                                        );
                                        told = true;
                                    }
                                    None
                                }
                            }
                        }
                        _ => None,
                    }
                }
            };
            if let Some(tls) = tls {
                // Hinted while nobody leads: about when a lease ends.
                let retry = (lease / 5).max(Duration::from_millis(100));
                let started = async {
                    let blobs = BlobService::new(
                        &config.work_dir.join("artifacts"),
                        config.max_artifact_size,
                        tls.is_some(),
                    )?;
                    Standby::start(
                        config.listen,
                        config.http,
                        tls,
                        blobs,
                        leader_rx.clone(),
                        retry,
                    )
                    .await
                };
                match started.await {
                    Ok(standby) => {
                        // What a standby's clients, agents and tests wait
                        // for: its ports answer from here on.
                        println!(
                            "standby serving on {} (gRPC){}: calls are pointed to the leader",
                            standby.grpc_addr(),
                            standby
                                .http_addr()
                                .map(|http| format!(" and {http} (HTTP)"))
                                .unwrap_or_default()
                        );
                        bound.send_replace(Some((standby.grpc_addr(), standby.http_addr())));
                        serving = Some(standby);
                    }
                    Err(e) => {
                        if !told {
                            eprintln!("wasmos master: {e:#}");
                            told = true;
                        }
                    }
                }
            }
        }
        if std::time::Instant::now() >= next_sweep {
            next_sweep = std::time::Instant::now() + SWEEP_EVERY;
            sweep_expired_artifacts(&registry, &config.work_dir.join("artifacts")).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(LEADER_POLL) => {}
            _ = &mut stop => break,
        }
    }
    if let Some(standby) = serving {
        standby.stop().await;
    }
    last_seen_leader
}

/// How often a standby deletes the artifacts the leader expired.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Deletes the files of `dir` (a standby's artifacts) that the registry no
/// longer indexes: the leader expired them. Files younger than ten minutes
/// stay (one handed over just before its record was read).
async fn sweep_expired_artifacts(registry: &Arc<EtcdStore>, dir: &std::path::Path) {
    let registry = registry.clone();
    let indexed = tokio::task::spawn_blocking(move || {
        let mut digests = std::collections::HashSet::new();
        wasmos_master::store::scan(&*registry, Table::Artifacts, "", None, &mut |record| {
            if let Record::Artifact(artifact) = record {
                digests.insert(artifact.digest);
            }
        })
        .map(|()| digests)
    })
    .await;
    let indexed = match indexed {
        Ok(Ok(indexed)) => indexed,
        Ok(Err(e)) => {
            tracing::warn!("cannot read the artifact index to sweep: {e}");
            return;
        }
        Err(_) => return,
    };
    let known = |digest: &str| indexed.contains(digest);
    match sweep_unindexed(dir, &known, Duration::from_secs(600)).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(n, "deleted artifacts the leader expired"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("sweeping expired artifacts: {e}"),
    }
}

/// How often a standby asks etcd who leads.
const LEADER_POLL: Duration = Duration::from_millis(250);
