//! Speaking to etcd, the consensus engine a cluster of several masters
//! stands on: where its members are ([`endpoints`]), where the masters'
//! keys live under their prefix ([`Keys`]), and the clients of the calls
//! masters make ([`Etcd`]). The registry on etcd is `store::EtcdStore`;
//! who leads is [`leadership`].
//!
//! Files: `mod.rs`, `leadership.rs`, `compaction.rs`.

pub mod compaction;
pub mod leadership;

use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use wasmos_proto::etcd::etcdserverpb::kv_client::KvClient;
use wasmos_proto::etcd::etcdserverpb::lease_client::LeaseClient;
use wasmos_proto::etcd::etcdserverpb::maintenance_client::MaintenanceClient;
use wasmos_proto::etcd::v3electionpb::election_client::ElectionClient;

use crate::store::Table;

/// The largest answer the master takes from etcd: a page of the registry
/// read at start, or a whole range of a job's chunks.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// Parses `--etcd`: comma-separated URLs of etcd's members, reached with
/// `tls` (etcd's CA and, for an etcd that asks, a client certificate) at
/// `https://` URLs. Plaintext (`http://`) reaches only loopback
/// addresses: the registry holds the cluster CA's key and token hashes,
/// which must not cross a network in the clear.
pub fn endpoints(list: &str, tls: Option<&wasmos_tls::ClientTls>) -> anyhow::Result<Vec<Endpoint>> {
    let mut endpoints = Vec::new();
    for url in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let uri: tonic::codegen::http::Uri = url
            .parse()
            .map_err(|e| anyhow::anyhow!("--etcd {url}: not a URL ({e})"))?;
        let host = uri.host().unwrap_or_default();
        let loopback = host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        match (uri.scheme_str(), tls) {
            (Some("https"), Some(_)) => {}
            (Some("https"), None) => anyhow::bail!(
                "--etcd {url}: give the CA etcd's certificate chains to with --etcd-ca (and --etcd-cert/--etcd-key if etcd asks for client certificates)"
            ),
            (Some("http"), Some(_)) => {
                anyhow::bail!("--etcd {url}: --etcd-ca is for etcd over TLS: give its https:// URL")
            }
            (Some("http"), None) if !loopback => anyhow::bail!(
                "--etcd {url}: plaintext etcd only on a loopback address: the registry holds the cluster CA's key; reach etcd over TLS (https:// with --etcd-ca)"
            ),
            (Some("http"), None) => {}
            _ => anyhow::bail!(
                "--etcd {url}: give etcd's client URL as http://HOST:PORT or https://HOST:PORT"
            ),
        }
        let mut endpoint = Endpoint::from(uri)
            .connect_timeout(Duration::from_secs(2))
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        if let Some(tls) = tls {
            endpoint = endpoint
                .tls_config(tls.tonic())
                .map_err(|e| anyhow::anyhow!("--etcd {url}: TLS: {e}"))?;
        }
        endpoints.push(endpoint);
    }
    if endpoints.is_empty() {
        anyhow::bail!("--etcd: no URL given (e.g. --etcd http://127.0.0.1:2379)");
    }
    Ok(endpoints)
}

/// The clients of the etcd calls masters make, on one channel spread over
/// etcd's members (any member answers; it forwards to etcd's own leader).
#[derive(Clone, Debug)]
pub struct Etcd {
    endpoints: Vec<Endpoint>,
    pub kv: KvClient<Channel>,
    pub lease: LeaseClient<Channel>,
    pub election: ElectionClient<Channel>,
    pub maintenance: MaintenanceClient<Channel>,
}

impl Etcd {
    /// Clients for `endpoints`. Connects lazily: an etcd that is down is
    /// an error of the first call, which callers retry. Must be called
    /// within the tokio runtime the clients will be used on.
    pub fn connect(endpoints: &[Endpoint]) -> Etcd {
        let channel = match endpoints {
            [one] => one.connect_lazy(),
            many => Channel::balance_list(many.iter().cloned()),
        };
        Etcd {
            endpoints: endpoints.to_vec(),
            kv: KvClient::new(channel.clone()).max_decoding_message_size(MAX_ANSWER_BYTES),
            lease: LeaseClient::new(channel.clone()),
            election: ElectionClient::new(channel.clone()),
            maintenance: MaintenanceClient::new(channel),
        }
    }
}

impl Etcd {
    /// The same etcd on a channel of the current runtime's own (a
    /// channel's connection is driven by the runtime it was made on).
    pub fn reconnect(&self) -> Etcd {
        Etcd::connect(&self.endpoints)
    }
}

/// How a leader lists the masters of its cluster: etcd, and the keys
/// they register under.
#[derive(Clone, Debug)]
pub struct Peers {
    pub etcd: Etcd,
    pub keys: Keys,
}

/// Where a cluster's keys live under its prefix (`/wasmos` by default):
/// `<prefix>/registry/<table>/<key>` for each record of the registry, and
/// `<prefix>/leader` the election's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (a leading `/` is added, a trailing one
    /// dropped).
    pub fn new(prefix: &str) -> anyhow::Result<Keys> {
        let trimmed = prefix.trim_end_matches('/');
        if trimmed.is_empty() {
            anyhow::bail!("--etcd-prefix: give a prefix such as /wasmos, not the whole key space");
        }
        let prefix = if trimmed.starts_with('/') {
            trimmed.to_string()
        } else {
            format!("/{trimmed}")
        };
        Ok(Keys { prefix })
    }

    /// The prefix, as given to [`Keys::new`] but normalised.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The key of a record.
    pub fn record(&self, table: Table, key: &str) -> Vec<u8> {
        format!("{}/registry/{}/{key}", self.prefix, table.name()).into_bytes()
    }

    /// The first key of `table`'s records.
    pub fn table_start(&self, table: Table) -> Vec<u8> {
        self.record(table, "")
    }

    /// The record key back from an etcd key of `table`.
    pub fn record_key<'a>(&self, table: Table, key: &'a [u8]) -> Option<&'a str> {
        let start = self.table_start(table);
        std::str::from_utf8(key.strip_prefix(start.as_slice())?).ok()
    }

    /// The election's name: campaigners' keys are `<prefix>/leader/<lease>`.
    pub fn election(&self) -> Vec<u8> {
        format!("{}/leader", self.prefix).into_bytes()
    }

    /// The leaders' history (see [`leadership::LeaderHistory`]).
    pub fn history(&self) -> Vec<u8> {
        format!("{}/history", self.prefix).into_bytes()
    }

    /// Where each master says it is, on its lease:
    /// `<prefix>/masters/<master id>`.
    pub fn master(&self, id: &str) -> Vec<u8> {
        format!("{}/masters/{id}", self.prefix).into_bytes()
    }

    /// The first key after every key of the registry: with
    /// `record(Table::Meta, "")`'s prefix, the whole registry's range.
    pub fn registry_range(&self) -> (Vec<u8>, Vec<u8>) {
        let start = format!("{}/registry/", self.prefix).into_bytes();
        let end = prefix_end(&start);
        (start, end)
    }
}

/// The first key after every key starting with `prefix` (etcd's way of
/// asking for a prefix: the last byte below 0xff, plus one).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Is this an error to try again (etcd, or the way to it, is down or
/// busy), rather than an answer?
pub fn is_transient(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Aborted | Code::ResourceExhausted => {
            true
        }
        // etcd's own "leader changed" / "no leader" errors, and a
        // connection torn mid-call, come as Unknown.
        Code::Unknown => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sit_under_the_prefix() {
        let keys = Keys::new("wasmos/").unwrap();
        assert_eq!(keys.prefix(), "/wasmos");
        assert_eq!(
            keys.record(Table::Tasks, "a/b"),
            b"/wasmos/registry/tasks/a/b"
        );
        assert_eq!(
            keys.record_key(Table::Tasks, b"/wasmos/registry/tasks/a/b"),
            Some("a/b")
        );
        assert_eq!(
            keys.record_key(Table::Jobs, b"/wasmos/registry/tasks/a"),
            None
        );
        assert_eq!(keys.election(), b"/wasmos/leader");
        assert!(Keys::new("/").is_err());
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_prefix() {
        assert_eq!(prefix_end(b"a/"), b"a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff"), b"\0");
    }

    #[test]
    fn plaintext_etcd_only_on_loopback_and_tls_only_with_a_ca() {
        assert_eq!(
            endpoints("http://127.0.0.1:2379, http://[::1]:2379", None)
                .unwrap()
                .len(),
            2
        );
        assert!(endpoints("http://localhost:2379", None).is_ok());
        let err = endpoints("http://10.0.0.1:2379", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("loopback"), "{err}");
        assert!(endpoints("", None).is_err());
        assert!(endpoints("127.0.0.1:2379", None).is_err());

        let err = endpoints("https://10.0.0.1:2379", None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--etcd-ca"), "{err}");
        let ca = wasmos_tls::Ca::generate("t").unwrap();
        let tls = wasmos_tls::ClientTls::trusting(ca.cert_pem());
        assert!(endpoints("https://10.0.0.1:2379", Some(&tls)).is_ok());
        let err = endpoints("http://127.0.0.1:2379", Some(&tls))
            .unwrap_err()
            .to_string();
        assert!(err.contains("https://"), "{err}");
    }
}
