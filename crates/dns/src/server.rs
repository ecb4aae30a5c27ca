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

use crate::cookies::Cookies;
use crate::engine::{Answered, Client, Limits, Transport, answer_query};
use crate::flatten::Flattener;
use crate::index::{DnsIndex, EdgeAddrs};
use crate::rrl::{RateLimiter, RrlConfig, Verdict, client_prefix, slipped};
use crate::signed::{Signature, answer_signed_query, signature};
use crate::unix_now;
use crate::xfr::{Journal, Transfer, is_transfer, notify_changes, transfer};

/// The index the servers answer from; swapped whole.
pub type IndexHandle = Arc<ArcSwap<DnsIndex>>;

/// Queries received (and answers sent) per system call on a UDP socket.
const UDP_BATCH: usize = 32;
/// Empty non-blocking receives after a batch before a receive blocks again.
const UDP_POLLS: u32 = 64;
/// How long a blocking UDP receive waits before its thread looks whether it is to stop.
const UDP_STOP_CHECK: Duration = Duration::from_millis(100);
/// Largest UDP query read; longer ones are cut and answered FORMERR or dropped.
const UDP_QUERY_MAX: usize = 4096;
/// Idle TCP connections are closed after this long (RFC 7766 recommends seconds, not minutes),
/// and so are those whose answers the peer does not take for as long.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// How long the rest of a TCP query may take once its length has come (Knot's
/// `tcp-io-timeout` is half a second).
const TCP_QUERY_TIME: Duration = Duration::from_secs(2);
/// TCP connections served at once.
const TCP_MAX_CONNECTIONS: usize = 1024;
/// Zone transfers served at once (BIND's `transfers-out` default): each holds its zone's
/// messages; one beyond is answered SERVFAIL, and the secondary tries again later.
pub const TRANSFERS_OUT: usize = 10;
/// When every TCP slot is taken, connections idle for this long are closed to make room (RFC
/// 7766 §6.2.3: a server short of resources closes idle connections); the new one waits
/// [`TCP_ROOM_WAIT`] for a slot.
const TCP_IDLE_UNDER_PRESSURE: Duration = Duration::from_secs(1);
const TCP_ROOM_WAIT: Duration = Duration::from_millis(300);
/// New connections waiting for room at once; more are closed at once.
const TCP_MAX_WAITING: usize = 16;
/// Idle connections are told of pressure at most this often.
const TCP_PRESS_EVERY: Duration = Duration::from_millis(100);

/// Binds `addr` for UDP with `workers` `SO_REUSEPORT` sockets (the first decides the port when
/// `addr` has port 0).
pub fn bind_udp(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::UdpSocket>> {
    let first = reuseport_udp(addr)?;
    let bound = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.max(1) {
        sockets.push(reuseport_udp(bound)?);
    }
    Ok(sockets)
}

/// Binds UDP and TCP on the same address. With port 0, the port the UDP socket got may be
/// taken for TCP: another port is tried then.
pub fn bind_udp_and_tcp(
    addr: SocketAddr,
    workers: usize,
) -> std::io::Result<(Vec<std::net::UdpSocket>, std::net::TcpListener)> {
    let mut attempts = 0;
    loop {
        let udp = bind_udp(addr, workers)?;
        let bound = udp[0].local_addr()?;
        match bind_tcp(bound) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempts < 20 =>
            {
                attempts += 1
            }
            Err(e) => return Err(e),
        }
    }
}

/// A TCP listener on `addr`: on an IPv6 address, IPv6 alone (as the UDP sockets), so that
/// `0.0.0.0` and `[::]` are bound side by side and IPv4 clients keep their own addresses
/// (transfer ACLs, limits per prefix).
fn bind_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}

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
    let socket: std::net::UdpSocket = socket.into();
    // Before any query arrives: a query queued before the kernel was asked for its local
    // address comes without one.
    wildcard_control(&socket)?;
    Ok(socket)
}

/// Rebuilds the DNS index for every published snapshot, forever; journals each zone's changes
/// for IXFR and notifies its secondaries.
pub async fn follow_snapshots(
    published: Arc<Published>,
    edge: EdgeAddrs,
    index: IndexHandle,
    journal: Arc<Journal>,
    flattener: Arc<Flattener>,
    notify_from: Vec<std::net::IpAddr>,
) {
    let mut last = None;
    let mut external_changed = false;
    loop {
        let snapshot = published.load();
        if last != Some(snapshot.revision) || external_changed {
            let previous = index.load();
            let started = std::time::Instant::now();
            // A large zone takes a while to index: off the runtime's threads.
            let (edge_now, flattener_now, snapshot_now, journal_now) = (
                edge.clone(),
                Arc::clone(&flattener),
                Arc::clone(&snapshot),
                Arc::clone(&journal),
            );
            let built = tokio::task::spawn_blocking(move || {
                let (built, warnings) = DnsIndex::build(
                    &snapshot_now,
                    &edge_now,
                    Some(&flattener_now),
                    Some(&previous),
                );
                // Journaled before the new index is served: an IXFR from the serial before
                // (its NOTIFY's, or a secondary's own check's) always finds the change to the
                // serial served. Journaling compares the zones that changed, record by record.
                journal_now.record(&previous, &built);
                (built, warnings)
            })
            .await;
            last = Some(snapshot.revision);
            match built {
                Ok((built, warnings)) => {
                    for w in warnings {
                        tracing::warn!("DNS index: {w}");
                    }
                    tracing::debug!(
                        revision = snapshot.revision,
                        millis = started.elapsed().as_millis() as u64,
                        "DNS index built"
                    );
                    let built = Arc::new(built);
                    let old = index.swap(Arc::clone(&built));
                    // The old index (with its share of the old snapshot) is freed off the
                    // runtime's threads too. Awaited, so that NOTIFYs go out in order.
                    let (journal, notify_from) = (Arc::clone(&journal), notify_from.clone());
                    let notified = tokio::task::spawn_blocking(move || {
                        notify_changes(&old, &built, &notify_from, &journal);
                    })
                    .await;
                    if let Err(e) = notified {
                        tracing::error!("DNS NOTIFY: {e}");
                    }
                }
                // The index served stays.
                Err(e) => tracing::error!("DNS index build failed: {e}"),
            }
        }
        // A new snapshot, or an apex CNAME target that now resolves differently.
        tokio::select! {
            () = published.wait_for(snapshot.revision + 1) => external_changed = false,
            () = flattener.changed.notified() => external_changed = true,
        }
    }
}

/// Serves DNS on already-bound sockets.
pub struct DnsServer {
    pub index: IndexHandle,
    pub limits: Limits,
    pub rrl: RateLimiter,
    pub cookies: Cookies,
    pub journal: Arc<Journal>,
    /// TCP connections the clients of one prefix (as RRL counts them: /24 for IPv4, /56 for
    /// IPv6) may hold open at once: a host with many addresses is one client.
    pub tcp_per_source: usize,
    /// TCP connections served at once.
    pub tcp_max_connections: usize,
    /// Zone transfers served at once.
    pub transfers_out: Arc<Semaphore>,
    /// Connections open, by client prefix.
    tcp_clients: std::sync::Mutex<std::collections::HashMap<u128, usize>>,
    /// Told when a connection found every slot taken: idle ones close.
    tcp_pressure: tokio::sync::Notify,
    /// New connections waiting for room.
    tcp_waiting: std::sync::atomic::AtomicUsize,
    /// When idle connections were last told of pressure, in milliseconds since `started`.
    tcp_pressed_ms: std::sync::atomic::AtomicU64,
    started: std::time::Instant,
    /// The name this node gives when asked which it is.
    identity: Option<Arc<str>>,
    /// UDP threads stop (the process handed its sockets to a successor).
    udp_stopped: std::sync::atomic::AtomicBool,
}

/// Releases a client's TCP connection slot when the connection ends.
struct TcpSlot<'a> {
    server: &'a DnsServer,
    prefix: u128,
}

impl Drop for TcpSlot<'_> {
    fn drop(&mut self) {
        let mut clients = self
            .server
            .tcp_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = clients.get_mut(&self.prefix) {
            *n -= 1;
            if *n == 0 {
                clients.remove(&self.prefix);
            }
        }
    }
}

impl DnsServer {
    pub fn new(index: IndexHandle, limits: Limits, rrl: RrlConfig, cookies: Cookies) -> Self {
        Self {
            index,
            limits,
            rrl: RateLimiter::new(rrl),
            cookies,
            journal: Arc::new(Journal::default()),
            tcp_per_source: 32,
            tcp_max_connections: TCP_MAX_CONNECTIONS,
            transfers_out: Arc::new(Semaphore::new(TRANSFERS_OUT)),
            tcp_clients: std::sync::Mutex::default(),
            tcp_pressure: tokio::sync::Notify::new(),
            tcp_waiting: std::sync::atomic::AtomicUsize::new(0),
            tcp_pressed_ms: std::sync::atomic::AtomicU64::new(0),
            started: std::time::Instant::now(),
            identity: None,
            udp_stopped: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The name this node gives when asked which it is (CH TXT `id.server`, NSID).
    pub fn with_identity(mut self, identity: Option<&str>) -> Self {
        self.identity = identity.map(Arc::from);
        self
    }

    fn tcp_slot(&self, ip: std::net::IpAddr) -> Option<TcpSlot<'_>> {
        let mut clients = self
            .tcp_clients
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let prefix = client_prefix(ip);
        let n = clients.entry(prefix).or_insert(0);
        if *n >= self.tcp_per_source {
            return None;
        }
        *n += 1;
        Some(TcpSlot {
            server: self,
            prefix,
        })
    }
}

impl DnsServer {
    /// The response to a query other than a zone transfer: signed when the query is (`None`:
    /// send nothing).
    fn answer(
        &self,
        index: &DnsIndex,
        query: &[u8],
        transport: Transport,
        client: &Client<'_>,
    ) -> Option<Answered> {
        match signature(query) {
            Signature::None => answer_query(index, query, transport, self.limits, Some(client)),
            Signature::Present(request) => answer_signed_query(
                index,
                query,
                &request,
                transport,
                self.limits,
                Some(client),
                u64::from(client.now),
            ),
            Signature::Malformed => crate::signed::malformed(query),
        }
    }

    /// Stops answering on UDP: the threads [`Self::spawn_udp`] started return within
    /// [`UDP_STOP_CHECK`] (after the queries they hold), leaving the sockets' queries to the
    /// process that shares them.
    pub fn stop_udp(&self) {
        self.udp_stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Serves already-bound UDP sockets (the `SO_REUSEPORT` group of one address), one thread
    /// each.
    pub fn spawn_udp(self: &Arc<Self>, sockets: Vec<std::net::UdpSocket>) -> std::io::Result<()> {
        // Every socket of the group is set before any thread serves: a thread also serves its
        // siblings' queues.
        let mut control = None;
        for socket in &sockets {
            control = wildcard_control(socket).map_err(std::io::Error::from)?;
            if usize::from(self.limits.max_udp_payload) <= UNFRAGMENTED_PAYLOAD {
                dont_fragment(socket)?;
            }
        }
        for socket in &sockets {
            socket.set_read_timeout(Some(UDP_STOP_CHECK))?;
        }
        let sockets = Arc::new(sockets);
        for i in 0..sockets.len() {
            let (server, sockets, control) =
                (Arc::clone(self), Arc::clone(&sockets), control.clone());
            std::thread::Builder::new()
                .name(format!("dns-udp-{i}"))
                .spawn(move || server.serve_udp_blocking(&sockets, i, control))?;
        }
        Ok(())
    }

    /// The response to one UDP query from `peer`, after rate limiting (`None`: send nothing).
    fn udp_response(&self, index: &DnsIndex, query: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let client = Client {
            ip: peer.ip(),
            cookies: &self.cookies,
            now: unix_now(),
            identity: self.identity.as_deref(),
        };
        let Answered {
            bytes: response,
            verified,
            kind,
        } = self.answer(index, query, Transport::Udp, &client)?;
        // A valid server cookie proves the source address: no rate limit.
        let verdict = if verified {
            Verdict::Send
        } else {
            self.rrl.check(peer.ip(), kind)
        };
        match verdict {
            Verdict::Send => Some(response),
            Verdict::Slip => slipped(&response),
            Verdict::Drop => None,
        }
    }

    /// Serves `sockets[own]`: receives up to [`UDP_BATCH`] queries per system call (recvmmsg)
    /// and sends their answers in one call (sendmmsg). While queries keep coming, the thread
    /// polls; when its own socket is empty it serves its siblings' queues before giving up the
    /// core, so that threads sharing a core (a server confined to fewer cores than it has
    /// threads) hand queries over without a context switch per batch.
    ///
    /// On a socket bound to a wildcard address, each answer leaves from the address its query
    /// came to: on a host with several addresses (an anycast one among them), the kernel would
    /// otherwise pick the source by route, and clients drop answers from an address they did
    /// not ask.
    ///
    /// `control` is the control buffer [`wildcard_control`] gave for the group.
    fn serve_udp_blocking(
        &self,
        sockets: &[std::net::UdpSocket],
        own: usize,
        control: Option<Vec<u8>>,
    ) {
        use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage};

        let mut receiver = Receiver {
            bufs: vec![[0u8; UDP_QUERY_MAX]; UDP_BATCH],
            headers: MultiHeaders::<SockaddrStorage>::preallocate(UDP_BATCH, control.clone()),
            control: control.clone(),
            received: Vec::with_capacity(UDP_BATCH),
        };
        let mut senders = Senders {
            plain: MultiHeaders::preallocate(UDP_BATCH, None),
            sourced: MultiHeaders::preallocate(UDP_BATCH, control),
        };
        let mut answers = Vec::with_capacity(UDP_BATCH);
        // Empty polls left before the next receive blocks: while queries keep coming, the
        // thread polls (yielding the core between polls) instead of sleeping and being woken
        // for each batch.
        let mut polls = 0u32;
        loop {
            if self.udp_stopped.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let mut from = None;
            if polls == 0 {
                match receiver.receive(&sockets[own], MsgFlags::MSG_WAITFORONE) {
                    Ok(()) => from = Some(own),
                    Err(nix::errno::Errno::EAGAIN) => {}
                    Err(e) => tracing::debug!("DNS UDP receive: {e}"),
                }
            } else {
                for k in 0..sockets.len() {
                    let i = (own + k) % sockets.len();
                    match receiver.receive(&sockets[i], MsgFlags::MSG_DONTWAIT) {
                        Ok(()) => {
                            from = Some(i);
                            break;
                        }
                        Err(nix::errno::Errno::EAGAIN) => {}
                        Err(e) => tracing::debug!("DNS UDP receive: {e}"),
                    }
                }
            }
            let Some(from) = from else {
                // Each empty receive counts, whichever socket it was on: a round over all of
                // them is as many polls.
                polls = polls.saturating_sub(u32::try_from(sockets.len()).unwrap_or(u32::MAX));
                std::thread::yield_now();
                continue;
            };
            // Queries on its own socket keep a thread polling; a sibling's do not (else every
            // thread would poll for as long as any socket has queries, and none would sleep).
            if receiver.received.is_empty() {
                polls = 0;
            } else if from == own {
                polls = UDP_POLLS;
            } else {
                polls = polls.saturating_sub(1);
            }
            let index = self.index.load();
            answers.clear();
            for &(i, n, addr, local) in &receiver.received {
                let peer = match (addr.as_sockaddr_in(), addr.as_sockaddr_in6()) {
                    (Some(v4), _) => SocketAddr::from(std::net::SocketAddrV4::from(*v4)),
                    (_, Some(v6)) => SocketAddr::from(std::net::SocketAddrV6::from(*v6)),
                    _ => continue,
                };
                let query = &receiver.bufs[i][..n.min(UDP_QUERY_MAX)];
                if let Some(out) = self.udp_response(&index, query, peer) {
                    answers.push((out, addr, local));
                }
            }
            senders.send(&sockets[from], &answers);
        }
    }

    pub fn spawn_tcp(self: &Arc<Self>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
        let server = Arc::clone(self);
        let permits = Arc::new(Semaphore::new(self.tcp_max_connections));
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
                let permits = Arc::clone(&permits);
                let server = Arc::clone(&server);
                tokio::spawn(async move {
                    // Over the per-client (prefix) limit: close at once.
                    let Some(slot) = server.tcp_slot(peer.ip()) else {
                        return;
                    };
                    // Every slot taken: idle connections make room, or this one closes.
                    let permit = match Arc::clone(&permits).try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => match server.wait_for_room(&permits).await {
                            Some(permit) => permit,
                            None => return,
                        },
                    };
                    if let Err(e) = server.serve_tcp(stream, peer).await {
                        tracing::debug!(%peer, "DNS TCP: {e}");
                    }
                    drop(slot);
                    drop(permit);
                });
            }
        })
    }

    /// A slot for a new connection that found none: idle connections are told to make room (at
    /// most every [`TCP_PRESS_EVERY`]) and it waits [`TCP_ROOM_WAIT`], unless
    /// [`TCP_MAX_WAITING`] already do.
    async fn wait_for_room(
        &self,
        permits: &Arc<Semaphore>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        use std::sync::atomic::Ordering::Relaxed;
        if self.tcp_waiting.fetch_add(1, Relaxed) >= TCP_MAX_WAITING {
            self.tcp_waiting.fetch_sub(1, Relaxed);
            return None;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.tcp_pressed_ms.load(Relaxed);
        let every = u64::try_from(TCP_PRESS_EVERY.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= every)
            && self
                .tcp_pressed_ms
                .compare_exchange(last, now.max(1), Relaxed, Relaxed)
                .is_ok()
        {
            self.tcp_pressure.notify_waiters();
        }
        let got = tokio::time::timeout(TCP_ROOM_WAIT, Arc::clone(permits).acquire_owned()).await;
        self.tcp_waiting.fetch_sub(1, Relaxed);
        got.ok()?.ok()
    }

    /// Answers length-prefixed queries on one connection, in order, until the peer closes it,
    /// stays idle too long or takes no answer for as long (pipelined queries are read and
    /// answered one after another).
    async fn serve_tcp(&self, mut stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
        let mut len = [0u8; 2];
        let mut buf = vec![0u8; 65_535];
        loop {
            // Waiting for the next query: closed when idle too long, or idle at all while
            // other clients wait for a slot.
            let idle_since = tokio::time::Instant::now();
            let read = stream.read_exact(&mut len);
            tokio::pin!(read);
            let next = loop {
                tokio::select! {
                    r = &mut read => break Some(r),
                    () = tokio::time::sleep_until(idle_since + TCP_IDLE) => break None,
                    () = self.tcp_pressure.notified() => {
                        if idle_since.elapsed() >= TCP_IDLE_UNDER_PRESSURE {
                            break None;
                        }
                    }
                }
            };
            match next {
                Some(Ok(_)) => {}
                Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
            let n = usize::from(u16::from_be_bytes(len));
            // A query begun comes whole promptly: one sent a byte at a time does not hold its
            // slot (the idle and pressure rules apply only between queries).
            match tokio::time::timeout(TCP_QUERY_TIME, stream.read_exact(&mut buf[..n])).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(()),
            }
            if is_transfer(&buf[..n]) {
                // A large zone takes a while to encode: off the runtime's threads.
                let (index, journal) = (self.index.load_full(), Arc::clone(&self.journal));
                let request = buf[..n].to_vec();
                let client = peer.ip();
                let slots = Arc::clone(&self.transfers_out);
                let built = tokio::task::spawn_blocking(move || {
                    let now = u64::from(unix_now());
                    transfer(&index, &journal, &request, client, (now, &slots))
                })
                .await;
                // (The slot, if it took one, is let go once every message is written.)
                let Ok(Transfer {
                    messages,
                    mut signer,
                    slot: _slot,
                }) = built
                else {
                    return Ok(());
                };
                for mut m in messages {
                    // Signed as it goes: each message carries the time it left.
                    if let Some(signer) = &mut signer {
                        signer.sign(&mut m, u64::from(unix_now()));
                    }
                    write_framed(&mut stream, &m).await?;
                }
                continue;
            }
            let index = self.index.load();
            let client = Client {
                ip: peer.ip(),
                cookies: &self.cookies,
                now: unix_now(),
                identity: self.identity.as_deref(),
            };
            // A message that gets no answer (a response, one unreadable) is skipped; the
            // queries behind it are answered, as Knot answers them.
            let Some(Answered {
                bytes: response, ..
            }) = self.answer(&index, &buf[..n], Transport::Tcp, &client)
            else {
                continue;
            };
            write_framed(&mut stream, &response).await?;
        }
    }
}

/// Writes one message with its two-byte length (RFC 1035 §4.2.2), within [`TCP_IDLE`]; one
/// too long to frame ends the connection.
async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let Ok(len) = u16::try_from(message.len()) else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "a message too long for TCP",
        ));
    };
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    write_within_idle(stream, &framed).await
}

/// Writes `bytes` whole, or fails when the peer has not taken them within [`TCP_IDLE`]: a client
/// that sends queries and never reads the answers would otherwise hold its connection (and a
/// slot of its per-client limit) forever.
async fn write_within_idle(stream: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(TCP_IDLE, stream.write_all(bytes)).await {
        Ok(written) => written,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the peer took no answer within the idle timeout",
        )),
    }
}

/// The largest UDP payload that fits any IPv6 link (1280 bytes less 48 of headers), and so any
/// path worth answering on (DNS Flag Day 2020's figure).
const UNFRAGMENTED_PAYLOAD: usize = 1232;

/// Answers leave with Don't Fragment set and the path MTU the kernel learnt from ICMP ignored
/// (RFC 9715 §3.1, as BIND sets it): a forged "fragmentation needed" cannot make the kernel
/// split an answer into fragments someone could replace. Only while answers are no larger
/// than [`UNFRAGMENTED_PAYLOAD`], which every link carries whole.
fn dont_fragment(socket: &std::net::UdpSocket) -> std::io::Result<()> {
    use rustix::net::sockopt;
    if socket.local_addr()?.is_ipv4() {
        sockopt::set_ip_mtu_discover(socket, sockopt::Ipv4PathMtuDiscovery::PROBE)?;
    } else {
        sockopt::set_ipv6_mtu_discover(socket, sockopt::Ipv6PathMtuDiscovery::PROBE)?;
    }
    Ok(())
}

/// Where a UDP answer leaves from.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Local {
    /// The socket is bound to one address: the kernel sends from it.
    Bound,
    /// The IPv4 address the query came to.
    V4(std::net::Ipv4Addr),
    /// The IPv6 address the query came to, and for a link-local one its interface.
    V6(std::net::Ipv6Addr, u32),
}

/// On a socket bound to a wildcard address: asks the kernel for each query's local address, and
/// gives the control buffer that holds it. `None` for a socket bound to one address. Asking
/// twice is harmless.
fn wildcard_control(socket: &std::net::UdpSocket) -> nix::Result<Option<Vec<u8>>> {
    use nix::sys::socket::{setsockopt, sockopt};
    let local = socket
        .local_addr()
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
    if !local.ip().is_unspecified() {
        return Ok(None);
    }
    if local.is_ipv4() {
        setsockopt(socket, sockopt::Ipv4PacketInfo, &true)?;
        Ok(Some(nix::cmsg_space!(nix::libc::in_pktinfo)))
    } else {
        setsockopt(socket, sockopt::Ipv6RecvPacketInfo, &true)?;
        Ok(Some(nix::cmsg_space!(nix::libc::in6_pktinfo)))
    }
}

/// The local address a query came to, from its control message.
fn local_address<S>(message: &nix::sys::socket::RecvMsg<'_, '_, S>) -> Option<Local> {
    use nix::sys::socket::ControlMessageOwned;
    for c in message.cmsgs().ok()? {
        match c {
            ControlMessageOwned::Ipv4PacketInfo(info) => {
                let ip = std::net::Ipv4Addr::from(u32::from_be(info.ipi_spec_dst.s_addr));
                // None known: the kernel picks, as for a bound socket.
                return Some(if ip.is_unspecified() {
                    Local::Bound
                } else {
                    Local::V4(ip)
                });
            }
            ControlMessageOwned::Ipv6PacketInfo(info) => {
                let ip = std::net::Ipv6Addr::from(info.ipi6_addr.s6_addr);
                let link_local = ip.segments()[0] & 0xffc0 == 0xfe80;
                return Some(Local::V6(
                    ip,
                    if link_local { info.ipi6_ifindex } else { 0 },
                ));
            }
            _ => {}
        }
    }
    None
}

/// Buffers and message headers for recvmmsg, and what the last call received.
struct Receiver {
    bufs: Vec<[u8; UDP_QUERY_MAX]>,
    headers: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    /// The control buffer for a wildcard socket's local addresses (`None`: bound to one).
    control: Option<Vec<u8>>,
    /// (buffer, length, client, local address) of each query received.
    received: Vec<(usize, usize, nix::sys::socket::SockaddrStorage, Local)>,
}

impl Receiver {
    fn receive(
        &mut self,
        socket: &std::net::UdpSocket,
        flags: nix::sys::socket::MsgFlags,
    ) -> nix::Result<()> {
        use std::io::IoSliceMut;

        self.received.clear();
        let mut lost_control = false;
        {
            let mut iovs: Vec<[IoSliceMut<'_>; 1]> = self
                .bufs
                .iter_mut()
                .map(|b| [IoSliceMut::new(&mut b[..])])
                .collect();
            let messages = nix::sys::socket::recvmmsg(
                std::os::fd::AsRawFd::as_raw_fd(socket),
                &mut self.headers,
                iovs.iter_mut(),
                flags,
                None,
            )?;
            for (i, m) in messages.enumerate() {
                let Some(addr) = m.address else { continue };
                let local = if self.control.is_some() {
                    match local_address(&m) {
                        Some(local) => local,
                        None => {
                            lost_control = true;
                            continue;
                        }
                    }
                } else {
                    Local::Bound
                };
                self.received.push((i, m.bytes, addr, local));
            }
        }
        if lost_control {
            // The kernel shrinks a header's control length to what it wrote; one that came
            // without the local address would keep its slot from receiving one again.
            self.headers =
                nix::sys::socket::MultiHeaders::preallocate(UDP_BATCH, self.control.clone());
        }
        Ok(())
    }
}

/// Message headers for sendmmsg: without control data, and with room for one source address.
struct Senders {
    plain: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
    sourced: nix::sys::socket::MultiHeaders<nix::sys::socket::SockaddrStorage>,
}

impl Senders {
    /// Sends every answer, in runs that share a source address (one system call per run when
    /// the socket takes them all).
    fn send(
        &mut self,
        socket: &std::net::UdpSocket,
        answers: &[(Vec<u8>, nix::sys::socket::SockaddrStorage, Local)],
    ) {
        use std::io::IoSlice;

        use nix::sys::socket::{ControlMessage, MsgFlags, sendmmsg};

        let fd = std::os::fd::AsRawFd::as_raw_fd(socket);
        let mut sent = 0;
        while sent < answers.len() {
            let local = answers[sent].2;
            let run = &answers[sent..];
            let run = &run[..run.iter().take_while(|a| a.2 == local).count()];
            let slices: Vec<[IoSlice<'_>; 1]> = run.iter().map(|a| [IoSlice::new(&a.0)]).collect();
            let addrs: Vec<Option<nix::sys::socket::SockaddrStorage>> =
                run.iter().map(|a| Some(a.1)).collect();
            let v4;
            let v6;
            let source = match local {
                Local::Bound => None,
                Local::V4(ip) => {
                    v4 = nix::libc::in_pktinfo {
                        ipi_ifindex: 0,
                        ipi_spec_dst: nix::libc::in_addr {
                            s_addr: u32::from(ip).to_be(),
                        },
                        ipi_addr: nix::libc::in_addr { s_addr: 0 },
                    };
                    Some(ControlMessage::Ipv4PacketInfo(&v4))
                }
                Local::V6(ip, ifindex) => {
                    v6 = nix::libc::in6_pktinfo {
                        ipi6_addr: nix::libc::in6_addr {
                            s6_addr: ip.octets(),
                        },
                        ipi6_ifindex: ifindex,
                    };
                    Some(ControlMessage::Ipv6PacketInfo(&v6))
                }
            };
            let (headers, source) = match &source {
                Some(source) => (&mut self.sourced, std::slice::from_ref(source)),
                None => (&mut self.plain, &[][..]),
            };
            let result = sendmmsg(
                fd,
                headers,
                slices.iter(),
                &addrs,
                source,
                MsgFlags::empty(),
            )
            .map(Iterator::count);
            match result {
                Ok(0) => break,
                Ok(n) => sent += n,
                Err(e) => {
                    tracing::debug!("DNS UDP send: {e}");
                    // Skip the message that failed and go on with the rest.
                    sent += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_on_an_ipv6_address_takes_ipv6_alone_as_udp_does() {
        let addr: SocketAddr = "[::1]:0".parse().expect("address");
        let Ok((udp, tcp)) = bind_udp_and_tcp(addr, 1) else {
            // No IPv6 loopback here: nothing to check.
            return;
        };
        let tcp = socket2::Socket::from(tcp);
        assert!(tcp.only_v6().expect("IPV6_V6ONLY"));
        let udp = socket2::Socket::from(udp.into_iter().next().expect("a socket"));
        assert!(udp.only_v6().expect("IPV6_V6ONLY"));
    }
}
