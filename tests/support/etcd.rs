//! A throwaway etcd for tests and benches of masters on etcd: Debian's
//! `etcd` binary (`scripts/test` installs `etcd-server`), one member on
//! ephemeral loopback ports, its data in a temp dir, killed when dropped.
//! Self-contained, so benches include it too (`#[path]`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Etcd {
    child: Option<Child>,
    pub url: String,
    args: Vec<String>,
    _dir: tempfile::TempDir,
}

/// A loopback port free now (the kernel's pick, released at once): for
/// processes that must be told their ports before they start.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    pub fn start() -> Etcd {
        Etcd::start_with(None)
    }

    /// An etcd that serves TLS with a certificate `ca` issues for
    /// 127.0.0.1, and admits only clients showing a certificate of `ca`.
    #[allow(dead_code)]
    pub fn start_tls(ca: &wasmos_tls::Ca) -> Etcd {
        Etcd::start_with(Some(ca))
    }

    fn start_with(ca: Option<&wasmos_tls::Ca>) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let scheme = if ca.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", free_port());
        let peer = format!("http://127.0.0.1:{}", free_port());
        let args = vec![
            "--data-dir".to_string(),
            dir.path().join("data").display().to_string(),
            "--listen-client-urls".into(),
            client.clone(),
            "--advertise-client-urls".into(),
            client.clone(),
            "--listen-peer-urls".into(),
            peer.clone(),
            "--initial-advertise-peer-urls".into(),
            peer.clone(),
            "--initial-cluster".into(),
            format!("default={peer}"),
            "--log-level".into(),
            "error".into(),
        ];
        let mut args = args;
        if let Some(ca) = ca {
            let server = ca
                .issue_server(&["127.0.0.1".into()], Duration::from_secs(3600))
                .expect("etcd's certificate");
            let file = |name: &str, text: &str| {
                let path = dir.path().join(name);
                std::fs::write(&path, text).expect("write a TLS file");
                path.display().to_string()
            };
            args.extend([
                "--cert-file".to_string(),
                file("etcd.pem", &server.cert_chain_pem),
                "--key-file".into(),
                file("etcd-key.pem", &server.key_pem),
                "--trusted-ca-file".into(),
                file("ca.pem", ca.cert_pem()),
                "--client-cert-auth".into(),
            ]);
        }
        let mut etcd = Etcd {
            child: None,
            url: client,
            args,
            _dir: dir,
        };
        etcd.resume_process();
        etcd
    }

    /// Starts the etcd process (again, on the same data and ports) and
    /// waits until it answers.
    fn resume_process(&mut self) {
        let child = Command::new("etcd")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd is missing: run scripts/test (it installs Debian's etcd-server)");
        self.child = Some(child);
        let addr = self
            .url
            .split_once("://")
            .map_or(&*self.url, |(_, a)| a)
            .to_string();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "etcd did not listen on {addr} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The etcd process's id (benches count its CPU).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("etcd runs").id()
    }

    /// Stops etcd (kill -9): masters lose it until [`Etcd::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "etcd still runs");
        self.resume_process();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
