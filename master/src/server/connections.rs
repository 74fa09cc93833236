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
//!
//! A quarter of the total is kept for connections that proved who they
//! are: a connection starts *unvouched*, and is vouched for once a call on
//! it passes the gRPC gate (a valid token, or an agent's certificate).
//! Unvouched connections may hold at most three quarters of the total; when
//! they hold that share, or the total is reached, a newcomer takes the
//! place of the oldest unvouched connection, which is closed. So anonymous
//! floods from a few addresses can hold the port only as long as they keep
//! opening connections, every newcomer gets in, and a principal's
//! connection, once vouched for, is never closed to make room.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
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
    /// artifacts and logs; a quarter of that per address. Where the OS has
    /// no such limit (Windows), as if it were 16,384.
    pub fn from_fd_limit() -> ConnectionLimits {
        let fds = wasmos_platform::limits::raise_open_files().unwrap_or(16_384);
        let total = fds.saturating_sub(512).max(64) as usize;
        ConnectionLimits {
            total,
            per_address: (total / 4).max(16),
            first_byte: Duration::from_secs(10),
        }
    }
}

/// Counts connections and sheds those past the caps.
pub struct Gatekeeper {
    limits: ConnectionLimits,
    /// The most unvouched connections at once: the total less the share
    /// kept for vouched ones.
    unvouched_share: usize,
    open: Mutex<Open>,
    shed: Arc<AtomicU64>,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
    /// Open connections by peer, to vouch for them.
    by_peer: HashMap<SocketAddr, Arc<Standing>>,
    unvouched: usize,
    /// Unvouched connections, oldest first; entries of connections since
    /// vouched for or closed are skipped (and compacted away).
    queue: VecDeque<Arc<Standing>>,
}

/// Where a connection stands.
struct Standing {
    peer: SocketAddr,
    state: AtomicU8,
    /// Wakes the connection's reader when it is evicted.
    reader: AtomicWaker,
}

const UNVOUCHED: u8 = 0;
const VOUCHED: u8 = 1;
const EVICTED: u8 = 2;
const CLOSED: u8 = 3;

impl Open {
    /// Closes the oldest unvouched connection; false if there is none.
    fn evict_oldest_unvouched(&mut self) -> bool {
        while let Some(standing) = self.queue.pop_front() {
            if standing
                .state
                .compare_exchange(UNVOUCHED, EVICTED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                self.unvouched -= 1;
                standing.reader.wake();
                return true;
            }
        }
        false
    }
}

impl Gatekeeper {
    pub fn new(limits: ConnectionLimits) -> Arc<Gatekeeper> {
        Arc::new(Gatekeeper {
            limits,
            unvouched_share: (limits.total - limits.total / 4).max(1),
            open: Mutex::new(Open::default()),
            shed: Arc::new(AtomicU64::new(0)),
        })
    }

    /// Vouches for the connection from `peer`: a call on it proved who it
    /// is, so it is never closed to make room for a newcomer.
    pub fn vouch(&self, peer: SocketAddr) {
        let mut open = self.open.lock().expect("not poisoned");
        if let Some(standing) = open.by_peer.get(&peer)
            && standing
                .state
                .compare_exchange(UNVOUCHED, VOUCHED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            open.unvouched -= 1;
        }
    }

    /// Connections closed for passing a cap, since the start (for the
    /// metrics).
    pub fn shed_counter(&self) -> Arc<AtomicU64> {
        self.shed.clone()
    }

    /// Admits a connection from `peer`, or refuses it (and counts that).
    fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Ticket> {
        let ip = peer.ip();
        let mut open = self.open.lock().expect("not poisoned");
        let from_ip = open.by_address.get(&ip).copied().unwrap_or(0);
        let full = open.total >= self.limits.total || open.unvouched >= self.unvouched_share;
        if from_ip >= self.limits.per_address || (full && !open.evict_oldest_unvouched()) {
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
        let standing = Arc::new(Standing {
            peer,
            state: AtomicU8::new(UNVOUCHED),
            reader: AtomicWaker::new(),
        });
        open.unvouched += 1;
        open.by_peer.insert(peer, standing.clone());
        open.queue.push_back(standing.clone());
        // Entries of vouched and closed connections go once they are most.
        if open.queue.len() > 2 * open.unvouched + 64 {
            open.queue
                .retain(|s| s.state.load(Ordering::Acquire) == UNVOUCHED);
        }
        Some(Ticket {
            keeper: self.clone(),
            standing,
        })
    }
}

/// An admitted connection's place; given back when it closes.
struct Ticket {
    keeper: Arc<Gatekeeper>,
    standing: Arc<Standing>,
}

impl Ticket {
    fn evicted(&self) -> bool {
        self.standing.state.load(Ordering::Acquire) == EVICTED
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut open = self.keeper.open.lock().expect("not poisoned");
        open.total -= 1;
        let peer = self.standing.peer;
        if self.standing.state.swap(CLOSED, Ordering::AcqRel) == UNVOUCHED {
            open.unvouched -= 1;
        }
        if open
            .by_peer
            .get(&peer)
            .is_some_and(|s| Arc::ptr_eq(s, &self.standing))
        {
            open.by_peer.remove(&peer);
        }
        if let Some(n) = open.by_address.get_mut(&peer.ip()) {
            *n -= 1;
            if *n == 0 {
                open.by_address.remove(&peer.ip());
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
                    let Some(ticket) = keeper.admit(peer) else {
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let first_byte = keeper.limits.first_byte;
                    let guarded = Guarded {
                        inner: stream,
                        peer,
                        ticket,
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
    ticket: Ticket,
    /// Until the first byte: the deadline for it.
    silent: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl AsyncRead for Guarded {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.ticket.standing.reader.register(cx.waker());
        if self.ticket.evicted() {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "closed to make room: the connection never proved who it is",
            )));
        }
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

    fn peer(ip: &str, port: u16) -> SocketAddr {
        SocketAddr::new(ip.parse().unwrap(), port)
    }

    #[tokio::test]
    async fn caps_per_address_and_in_total_and_give_places_back() {
        let keeper = Gatekeeper::new(ConnectionLimits {
            total: 3,
            per_address: 2,
            first_byte: Duration::from_secs(1),
        });
        let a1 = keeper.admit(peer("127.0.0.2", 1)).unwrap();
        keeper.vouch(peer("127.0.0.2", 1));
        let _a2 = keeper.admit(peer("127.0.0.2", 2)).unwrap();
        keeper.vouch(peer("127.0.0.2", 2));
        assert!(
            keeper.admit(peer("127.0.0.2", 3)).is_none(),
            "a third from one address"
        );
        let _b1 = keeper.admit(peer("127.0.0.1", 1)).unwrap();
        keeper.vouch(peer("127.0.0.1", 1));
        assert!(
            keeper.admit(peer("127.0.0.1", 2)).is_none(),
            "past the total, with every place vouched for"
        );
        assert_eq!(keeper.shed_counter().load(Ordering::Relaxed), 2);
        drop(a1);
        assert!(
            keeper.admit(peer("127.0.0.2", 4)).is_some(),
            "a closed connection's place is free"
        );
    }

    #[tokio::test]
    async fn unvouched_connections_make_room_for_newcomers_oldest_first() {
        let keeper = Gatekeeper::new(ConnectionLimits {
            total: 8,
            per_address: 100,
            first_byte: Duration::from_secs(1),
        });
        // Unvouched connections hold at most 6 of the 8 places.
        let flood: Vec<Ticket> = (1..=6)
            .map(|port| keeper.admit(peer("127.0.0.2", port)).unwrap())
            .collect();
        assert!(flood.iter().all(|t| !t.evicted()));
        // A newcomer takes the oldest one's place.
        let alice = keeper.admit(peer("127.0.0.1", 1)).unwrap();
        assert!(flood[0].evicted() && !flood[1].evicted());
        // Once vouched for, it is never evicted, and vouched connections
        // may use the places kept for them.
        keeper.vouch(peer("127.0.0.1", 1));
        let bob = keeper.admit(peer("127.0.0.1", 2)).unwrap();
        keeper.vouch(peer("127.0.0.1", 2));
        let more: Vec<Ticket> = (10..30)
            .map(|port| keeper.admit(peer("127.0.0.3", port)).unwrap())
            .collect();
        assert!(!alice.evicted() && !bob.evicted());
        // (Evicted connections here stay open, so their places count until
        // they close, as they would at once.)
        assert!(more[0].evicted() && !more[19].evicted());
        assert!(more.iter().filter(|t| !t.evicted()).count() <= 6);
        // With every place vouched for, a newcomer is shed.
        drop(flood);
        drop(more);
        let vouched: Vec<Ticket> = (40..46)
            .map(|port| {
                let t = keeper.admit(peer("127.0.0.4", port)).unwrap();
                keeper.vouch(peer("127.0.0.4", port));
                t
            })
            .collect();
        assert!(keeper.admit(peer("127.0.0.5", 1)).is_none());
        drop(vouched);
        let open = keeper.open.lock().unwrap();
        assert_eq!((open.total, open.unvouched), (2, 0));
        assert!(open.queue.len() <= 2 * open.unvouched + 64);
    }

    #[test]
    fn the_default_total_comes_from_the_fd_limit() {
        let limits = ConnectionLimits::from_fd_limit();
        assert!(limits.total >= 64 && limits.per_address <= limits.total);
    }
}
