//! Who may hold a connection to the master, and for how long without a
//! word: caps on connections in total and per peer address, and a deadline
//! for a new connection's first byte.
//!
//! Without them, idle TCP connections exhaust the master's file
//! descriptors and nobody else gets in (`accept: Too many open files`).
//! One gate serves the gRPC and the HTTP port ([`GatedListener`]): the caps
//! count a peer's connections to both. A connection past a cap is accepted and closed at once (the peer sees a
//! reset, the master keeps serving everyone else) and counted in
//! `wasmos_shed_total{what="connection"}`. The TLS handshake has its own
//! deadline (`tls_config().timeout`), and HTTP/2 keepalives close peers that
//! stopped answering.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// The caps (`wasmos master --max-connections`, `--max-connections-per-address`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    pub total: usize,
    pub per_address: usize,
    /// A connection that sends nothing for this long after it is accepted
    /// is closed.
    pub first_byte: Duration,
}

impl ConnectionLimits {
    /// Defaults from this process's file-descriptor limit (raised to its
    /// hard limit first): all of it but a reserve for the registry,
    /// artifacts and logs; a quarter of that per address.
    pub fn from_fd_limit() -> ConnectionLimits {
        let fds = raise_fd_limit();
        let total = fds.saturating_sub(512).max(64) as usize;
        ConnectionLimits {
            total,
            per_address: (total / 4).max(16),
            first_byte: Duration::from_secs(10),
        }
    }
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one; returns the soft limit
/// in force.
fn raise_fd_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// Counts connections and sheds those past the caps.
pub struct Gatekeeper {
    limits: ConnectionLimits,
    open: Mutex<Open>,
    shed: Arc<AtomicU64>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

impl Gatekeeper {
    pub fn new(limits: ConnectionLimits) -> Arc<Gatekeeper> {
        Arc::new(Gatekeeper {
            limits,
            open: Mutex::new(Open::default()),
            shed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Connections closed for passing a cap, since the start (for the
    /// metrics).
    pub fn shed_counter(&self) -> Arc<AtomicU64> {
        self.shed.clone()
    }

    /// Admits a connection from `ip`, or refuses it (and counts that).
    fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut open = self.open.lock().expect("not poisoned");
        let from_ip = open.by_address.get(&ip).copied().unwrap_or(0);
        if open.total >= self.limits.total || from_ip >= self.limits.per_address {
            drop(open);
            let shed = self.shed.fetch_add(1, Ordering::Relaxed) + 1;
            if shed.is_power_of_two() {
                tracing::warn!(
                    %ip,
                    shed,
                    "shedding connections: {from_ip} open from {ip} (limit {}), total limit {}",
                    self.limits.per_address,
                    self.limits.total
                );
            }
            return None;
        }
        open.total += 1;
        *open.by_address.entry(ip).or_default() += 1;
        Some(Ticket {
            keeper: self.clone(),
            ip,
        })
    }
}

/// An admitted connection's place; given back when it closes.
struct Ticket {
    keeper: Arc<Gatekeeper>,
    ip: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.keeper.open.lock().expect("not poisoned");
        open.total -= 1;
        if let Some(n) = open.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&self.ip);
            }
        }
    }
}

/// The listener's connections that pass the gate, with `TCP_NODELAY`
/// (without it, Nagle's algorithm holds each small reply until the peer's
/// delayed ACK, 40 ms on Linux). Accept errors (out of descriptors) are
/// logged and waited out, never the end of the server.
pub fn admitted(
    listener: TcpListener,
    keeper: Arc<Gatekeeper>,
) -> impl Stream<Item = io::Result<Guarded>> {
    futures::stream::unfold((listener, keeper), |(listener, keeper)| async move {
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    let Some(ticket) = keeper.admit(peer.ip()) else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let first_byte = keeper.limits.first_byte;
                    let guarded = Guarded {
                        inner: stream,
                        peer,
                        _ticket: ticket,
                        silent: Some(Box::pin(tokio::time::sleep(first_byte))),
                    };
                    return Some((Ok(guarded), (listener, keeper)));
                }
                Err(e) => {
                    tracing::warn!("accept: {e}; retrying in 50 ms");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    })
}

/// The HTTP port's listener: the connections that pass the gate.
pub struct GatedListener {
    admitted: Pin<Box<dyn Stream<Item = io::Result<Guarded>> + Send>>,
    local_addr: SocketAddr,
}

impl GatedListener {
    pub fn new(listener: TcpListener, keeper: Arc<Gatekeeper>) -> io::Result<GatedListener> {
        Ok(GatedListener {
            local_addr: listener.local_addr()?,
            admitted: Box::pin(admitted(listener, keeper)),
        })
    }
}

impl axum::serve::Listener for GatedListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Guarded, SocketAddr) {
        use tokio_stream::StreamExt;
        loop {
            // `admitted` waits out accept errors itself and never ends.
            match self.admitted.next().await {
                Some(Ok(guarded)) => {
                    let peer = guarded.peer;
                    return (guarded, peer);
                }
                Some(Err(_)) => continue,
                None => std::future::pending().await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// An admitted connection: closed if its first byte does not come in time.
pub struct Guarded {
    inner: TcpStream,
    peer: SocketAddr,
    _ticket: Ticket,
    /// Until the first byte: the deadline for it.
    silent: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(deadline) = self.silent.as_mut() {
            match &read {
                Poll::Ready(Ok(())) if buf.filled().len() > before => self.silent = None,
                Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the connection sent nothing in time",
                    )));
                }
                _ => {}
            }
        }
        read
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn caps_per_address_and_in_total_and_give_places_back() {
        let keeper = Gatekeeper::new(ConnectionLimits {
            total: 3,
            per_address: 2,
            first_byte: Duration::from_secs(1),
        });
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.1".parse().unwrap();
        let a1 = keeper.admit(a).unwrap();
        let _a2 = keeper.admit(a).unwrap();
        assert!(keeper.admit(a).is_none(), "a third from one address");
        let _b1 = keeper.admit(b).unwrap();
        assert!(keeper.admit(b).is_none(), "past the total");
        assert_eq!(keeper.shed_counter().load(Ordering::Relaxed), 2);
        drop(a1);
        assert!(
            keeper.admit(a).is_some(),
            "a closed connection's place is free"
        );
    }

    #[test]
    fn the_default_total_comes_from_the_fd_limit() {
        let limits = ConnectionLimits::from_fd_limit();
        assert!(limits.total >= 64 && limits.per_address <= limits.total);
    }
}
