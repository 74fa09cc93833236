//! `--etcd-ca`, `--etcd-cert` and `--etcd-key`: how a master (and
//! `wasmos registry migrate`) reaches an etcd that serves TLS. Off loopback
//! etcd must be reached this way: the registry holds the cluster CA's key
//! and token hashes.

use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct EtcdTlsArgs {
    /// The CA etcd's certificate chains to (PEM): reach etcd at https://
    /// URLs.
    #[arg(long, value_name = "FILE")]
    etcd_ca: Option<PathBuf>,
    /// The client certificate (PEM) shown to etcd, with --etcd-key: what an
    /// etcd started with --client-cert-auth asks for.
    #[arg(long, value_name = "FILE", requires_all = ["etcd_key", "etcd_ca"])]
    etcd_cert: Option<PathBuf>,
    /// The key of --etcd-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    /// The TLS to speak to etcd with, read from the files given; `None`
    /// without --etcd-ca (plaintext, loopback only).
    pub fn load(&self) -> anyhow::Result<Option<wasmos_tls::ClientTls>> {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("{what} {}: {e}", path.display()))
        };
        let Some(ca) = &self.etcd_ca else {
            return Ok(None);
        };
        let mut tls = wasmos_tls::ClientTls::trusting(read(ca, "--etcd-ca")?);
        if let (Some(cert), Some(key)) = (&self.etcd_cert, &self.etcd_key) {
            tls.identity = Some((read(cert, "--etcd-cert")?, read(key, "--etcd-key")?));
        }
        Ok(Some(tls))
    }
}
