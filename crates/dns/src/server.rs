//! UDP and TCP servers over sockets the caller bound, and the task that rebuilds the index
//! whenever a new snapshot is published.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parapet_snapshot::Published;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::engine::{Limits, Transport, answer_query};
use crate::index::{DnsIndex, EdgeAddrs};

/// The index the servers answer from; swapped whole.
pub type IndexHandle = Arc<ArcSwap<DnsIndex>>;

/// Idle TCP connections are closed after this long (RFC 7766 recommends seconds, not minutes).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// TCP connections served at once.
const TCP_MAX_CONNECTIONS: usize = 1024;

fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    let _ = socket.set_recv_buffer_size(4 << 20);
    let _ = socket.set_send_buffer_size(4 << 20);
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// Rebuilds the DNS index for every published snapshot, forever.
pub async fn follow_snapshots(published: Arc<Published>, edge: EdgeAddrs, index: IndexHandle) {
    let mut last = None;
    loop {
        let snapshot = published.load();
        if last != Some(snapshot.revision) {
            let (built, warnings) = DnsIndex::build(&snapshot, &edge);
            for w in warnings {
                tracing::warn!("DNS index: {w}");
            }
            index.store(Arc::new(built));
            last = Some(snapshot.revision);
        }
        published.wait_for(snapshot.revision + 1).await;
    }
}

/// Serves DNS on already-bound sockets.
pub struct DnsServer {
    pub index: IndexHandle,
    pub limits: Limits,
}

impl DnsServer {
    /// Binds `addr` for UDP with one `SO_REUSEPORT` socket per worker thread (the kernel spreads
    /// queries over them) and serves each on its own thread with blocking IO. Returns the bound
    /// address (with the real port when `addr` had port 0).
    pub fn spawn_udp_workers(
        self: &Arc<Self>,
        addr: SocketAddr,
        workers: usize,
    ) -> std::io::Result<SocketAddr> {
        let first = reuseport_udp(addr)?;
        let bound = first.local_addr()?;
        let mut sockets = vec![first];
        for _ in 1..workers.max(1) {
            sockets.push(reuseport_udp(bound)?);
        }
        for (i, socket) in sockets.into_iter().enumerate() {
            let server = Arc::clone(self);
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || server.serve_udp_blocking(&socket))?;
        }
        Ok(bound)
    }

    fn serve_udp_blocking(&self, socket: &std::net::UdpSocket) {
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf) {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("DNS UDP receive: {e}");
                    continue;
                }
            };
            let index = self.index.load();
            if let Some(response) = answer_query(&index, &buf[..n], Transport::Udp, self.limits)
                && let Err(e) = socket.send_to(&response, peer)
            {
                tracing::debug!(%peer, "DNS UDP send: {e}");
            }
        }
    }

    pub fn spawn_tcp(self: &Arc<Self>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let server = Arc::clone(self);
        let permits = Arc::new(Semaphore::new(TCP_MAX_CONNECTIONS));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::debug!("DNS TCP accept: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    drop(stream); // Over the connection limit: close at once.
                    continue;
                };
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    if let Err(e) = server.serve_tcp(stream, peer).await {
                        tracing::debug!(%peer, "DNS TCP: {e}");
                    }
                    drop(permit);
                });
            }
        })
    }

    /// Answers length-prefixed queries on one connection, in order, until the peer closes it or
    /// stays idle too long (pipelined queries are read and answered one after another).
    async fn serve_tcp(&self, mut stream: TcpStream, _peer: SocketAddr) -> std::io::Result<()> {
        let mut len = [0u8; 2];
        let mut buf = vec![0u8; 65_535];
        loop {
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut len)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
            let n = usize::from(u16::from_be_bytes(len));
            match tokio::time::timeout(TCP_IDLE, stream.read_exact(&mut buf[..n])).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
            let index = self.index.load();
            let Some(response) = answer_query(&index, &buf[..n], Transport::Tcp, self.limits)
            else {
                return Ok(());
            };
            let Ok(rlen) = u16::try_from(response.len()) else {
                return Ok(());
            };
            let mut framed = Vec::with_capacity(response.len() + 2);
            framed.extend_from_slice(&rlen.to_be_bytes());
            framed.extend_from_slice(&response);
            stream.write_all(&framed).await?;
        }
    }
}
