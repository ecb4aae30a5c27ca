//! The edge: HTTP traffic for proxied names reaches their hidden origins through Parapet.
//!
//! Routing ([`route`]), header policy ([`headers`]) and error pages ([`errors`]) are ours and do
//! no IO; the HTTP engine is pingora, behind a thin `ProxyHttp` adapter ([`EdgeProxy`]). A
//! request reads one snapshot for its whole life and never touches the store.

mod balance;
pub mod errors;
mod freshness;
mod h2;
pub mod headers;
mod hit;
pub mod metrics;
mod park;
mod pass;
mod proxy;
mod relay;
mod reply;
pub mod route;
mod stream;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::apps::{HttpPersistentSettings, HttpServerApp, ReusedHttpStream, ServerApp};
use pingora::protocols::http::ServerSession;
use pingora::protocols::{Peek, Stream};
use pingora::server::ShutdownWatch;
use pingora::server::configuration::ServerConf;
use tokio::sync::watch;

pub use errors::EdgeError;
pub use metrics::EdgeMetrics;
pub use proxy::EdgeProxy;

/// Cloudflare's HTTP ports; `--http-listen` may add any.
pub const CLOUDFLARE_HTTP_PORTS: &[u16] = &[80, 8080, 8880, 2052, 2082, 2086, 2095];

#[derive(Debug, thiserror::Error)]
pub enum EdgeStartError {
    #[error("cannot listen on {addr} for HTTP: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The edge's listening sockets: for each address, one socket per worker thread, bound with
/// `SO_REUSEPORT` so the kernel spreads new connections over the workers.
pub struct EdgeListeners {
    /// `(address, HTTPS?, one socket per worker)`, in the order given.
    sockets: Vec<(SocketAddr, bool, Vec<std::net::TcpListener>)>,
}

impl EdgeListeners {
    /// Binds every address of `http` (plain HTTP) and `https` `workers` times (port 0 picks one
    /// free port shared by the workers), first adopting the sockets `adopt(address, https)`
    /// returns (handed over by a previous process; all of one address and port), binding only
    /// what is missing.
    pub fn bind_or_adopt(
        http: &[SocketAddr],
        https: &[SocketAddr],
        workers: usize,
        adopt: &mut dyn FnMut(SocketAddr, bool) -> Vec<std::net::TcpListener>,
    ) -> Result<Self, EdgeStartError> {
        let mut sockets = Vec::with_capacity(http.len() + https.len());
        let all = http
            .iter()
            .map(|a| (a, false))
            .chain(https.iter().map(|a| (a, true)));
        for (addr, tls) in all {
            let error = |source| EdgeStartError::Bind {
                addr: *addr,
                source,
            };
            let mut group = adopt(*addr, tls);
            for socket in &group {
                socket.set_nonblocking(true).map_err(error)?;
            }
            if group.is_empty() {
                // Another process listening there (with `SO_REUSEPORT` too) would silently share
                // the address's visitors: a plain bind finds it first.
                if addr.port() != 0 {
                    exclusive_probe(*addr).map_err(error)?;
                }
                group.push(reuseport_listener(*addr).map_err(error)?);
            }
            let bound = group[0].local_addr().map_err(error)?;
            while group.len() < workers.max(1) {
                group.push(reuseport_listener(bound).map_err(error)?);
            }
            sockets.push((bound, tls, group));
        }
        Ok(Self { sockets })
    }

    /// Every socket with its address and whether it is for HTTPS (to keep copies for a
    /// successor process).
    pub fn sockets(&self) -> impl Iterator<Item = (SocketAddr, bool, &std::net::TcpListener)> {
        self.sockets
            .iter()
            .flat_map(|(addr, tls, group)| group.iter().map(move |s| (*addr, *tls, s)))
    }

    /// The addresses actually bound (port 0 resolved), each with whether it is for HTTPS.
    pub fn addrs(&self) -> Vec<(SocketAddr, bool)> {
        self.sockets
            .iter()
            .map(|(addr, tls, _)| (*addr, *tls))
            .collect()
    }
}

/// How long a visitor connection may stay open without sending a request (the first one, or
/// the next one on a kept-alive connection).
const IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Open connections per client (an IPv4 address, an IPv6 /64), shared by every worker.
pub struct ClientLimit {
    max: u32,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, u32>>,
}

impl ClientLimit {
    /// `max` connections per client; 0: no limit.
    pub fn new(max: u32) -> Self {
        Self {
            max,
            open: std::sync::Mutex::default(),
        }
    }

    fn key(ip: std::net::IpAddr) -> std::net::IpAddr {
        match ip {
            std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.into(),
                None => std::net::Ipv6Addr::from(
                    u128::from(v6) & 0xffff_ffff_ffff_ffff_0000_0000_0000_0000,
                )
                .into(),
            },
            v4 => v4,
        }
    }

    /// A slot for one more connection from `ip`, or `None` when it has its maximum open.
    fn acquire(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<ClientSlot> {
        if self.max == 0 {
            return Some(ClientSlot(None));
        }
        let key = Self::key(ip);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(key).or_default();
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(Some((Arc::clone(self), key))))
    }
}

/// One open connection counted against its client; released on drop.
struct ClientSlot(Option<(Arc<ClientLimit>, std::net::IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if let Some((limit, key)) = self.0.take() {
            let mut open = limit
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = open.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    open.remove(&key);
                }
            }
        }
    }
}

/// Streams one HTTP/2 connection may have open at once.
const H2_MAX_STREAMS: u32 = 128;

/// HTTP/2 flow-control windows a visitor may fill before the edge reads on: per stream, and
/// for the whole connection.
const H2_STREAM_WINDOW: u32 = 1 << 20;
const H2_CONNECTION_WINDOW: u32 = 2 << 20;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Waits until `buf.len()` bytes have arrived on `stream` without consuming them; false when
/// the visitor went away or stayed silent for [`IDLE_TIMEOUT`]. For a new connection: it was
/// accepted, so its first request is served even when the edge is stopping (the drain grace
/// bounds the wait).
async fn wait_for_bytes<S: Peek + Send + ?Sized>(stream: &mut S, buf: &mut [u8]) -> bool {
    wait_for_bytes_within(stream, buf, IDLE_TIMEOUT).await == Some(true)
}

/// As [`wait_for_bytes`], for at most `wait`: `None` when it passed.
async fn wait_for_bytes_within<S: Peek + Send + ?Sized>(
    stream: &mut S,
    buf: &mut [u8],
    wait: std::time::Duration,
) -> Option<bool> {
    // The engine's shared coarse timer: polled first, the peek arms it only when it has to wait
    // (tokio's timer woke the runtime with a write each time it was armed).
    match pingora::prelude::fast_timeout::fast_timeout(wait, stream.try_peek(buf)).await {
        Ok(peeked) => Some(peeked.is_ok()),
        Err(_) => None,
    }
}

/// As [`wait_for_bytes_within`], for a kept-alive connection between requests: false as soon
/// as the edge is stopping too. `stop` is the connection's own receiver, made once for all its
/// requests (a clone per request would touch the shared count from every worker).
async fn wait_for_request(
    stream: &mut Stream,
    buf: &mut [u8],
    stop: &mut ShutdownWatch,
    wait: std::time::Duration,
) -> Option<bool> {
    if is_stopping(stop) {
        return Some(false);
    }
    tokio::select! {
        // Stopping first: a connection is not parked once the edge stops.
        biased;
        _ = stop.wait_for(|stopping| *stopping) => Some(false),
        peeked = wait_for_bytes_within(&mut **stream, buf, wait) => peeked,
    }
}

/// Whether the edge is stopping, as `stop` says: its version is read first (a load; reading
/// the value takes the lock every worker's receivers share), the value only once it changed.
fn is_stopping(stop: &ShutdownWatch) -> bool {
    match stop.has_changed() {
        Ok(false) => false,
        _ => *stop.borrow(),
    }
}

/// A plain HTTP/1 connection between requests, with what it holds until it closes.
struct Waiting<'a> {
    stream: Stream,
    settings: Option<HttpPersistentSettings>,
    held: (metrics::OpenConnection<'a>, ClientSlot),
}

/// The HTTP engine with each visitor connection counted for its whole life (every request it
/// carries, until it closes).
struct Connections {
    http: Arc<pingora::proxy::HttpProxy<EdgeProxy>>,
    /// The same proxy, for the hits answered without the engine.
    proxy: EdgeProxy,
    metrics: Arc<EdgeMetrics>,
    limit: Arc<ClientLimit>,
    /// Certificates and TLS settings for HTTPS listeners.
    tls: Option<Arc<parapet_tls::EdgeTls>>,
    /// This worker's parked connections (set once its runtime runs).
    parking: std::sync::OnceLock<Arc<park::Parking>>,
}

impl Connections {
    /// Serves one plain-HTTP visitor connection until it closes (or is parked).
    async fn serve(
        self: &Arc<Self>,
        mut stream: Box<stream::VisitorStream>,
        slot: ClientSlot,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let open = self.metrics.connection_served();
        let mut first = [0u8; 1];
        if !wait_for_bytes(&mut *stream, &mut first).await {
            return None;
        }
        // HTTP/2 with prior knowledge starts with its preface ("PRI * HTTP/2.0..."), waited
        // for only while what came matches it: a short request starting with P (a PUT, a
        // POST) goes on at once.
        if first[0] == b'P' {
            let mut preface = [0u8; 24];
            // The whole preface within the idle timeout, not each of its bytes.
            let deadline = std::time::Instant::now() + IDLE_TIMEOUT;
            loop {
                let came = stream.ahead().len().min(preface.len());
                if !H2_PREFACE.starts_with(&stream.ahead()[..came]) || came == preface.len() {
                    break;
                }
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                if wait_for_bytes_within(&mut *stream, &mut preface[..=came], left).await
                    != Some(true)
                {
                    return None;
                }
            }
            if stream.ahead().starts_with(H2_PREFACE) {
                let gate = stream::FlushGate::default();
                stream.gate_flushes(gate.clone());
                // Boxed: an HTTP/1 connection's task is not sized by it.
                Box::pin(self.serve_h2(stream, gate, shutdown)).await;
                return None;
            }
        }
        self.serve_h1(stream, (open, slot), None, shutdown).await
    }

    /// Serves a parked connection that has something to read again.
    async fn resume(
        &self,
        stream: Box<stream::VisitorStream>,
        slot: ClientSlot,
        settings: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let open = self.metrics.connection_resumed();
        let mut stream: Stream = stream;
        let mut first = [0u8; 1];
        if !wait_for_bytes(&mut *stream, &mut first).await {
            return None;
        }
        self.serve_h1(stream, (open, slot), settings, shutdown)
            .await
    }

    /// Serves one HTTPS visitor connection until it closes: HTTP/2 when ALPN chose it.
    async fn serve_tls(
        self: &Arc<Self>,
        tcp: Box<stream::VisitorStream>,
        slot: ClientSlot,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let open = self.metrics.connection_served();
        let tls = self.tls.as_ref()?;
        // The handshake's state (about 9 KiB) lives on the heap only while it runs: inline, it
        // would size every connection's task, plain HTTP ones and idle kept-alive ones too.
        let Some(stream) = Box::pin(tls::handshake(tcp, tls)).await else {
            self.metrics.handshake_failed();
            return None;
        };
        let mut stream = stream;
        if stream.is_h2() {
            let gate = stream::FlushGate::default();
            stream.gate_flushes(gate.clone());
            Box::pin(self.serve_h2(stream, gate, shutdown)).await;
            return None;
        }
        let mut stream: Stream = stream;
        let mut first = [0u8; 1];
        if !wait_for_bytes(&mut *stream, &mut first).await {
            return None;
        }
        self.serve_h1(stream, (open, slot), None, shutdown).await
    }

    /// HTTP/1 on a connection whose first request has started to arrive. `held` is what the
    /// connection holds until it closes; a plain one that stays silent after a response is
    /// parked with it.
    async fn serve_h1(
        &self,
        stream: Stream,
        held: (metrics::OpenConnection<'_>, ClientSlot),
        settings: Option<HttpPersistentSettings>,
        shutdown: &ShutdownWatch,
    ) -> Option<()> {
        let mut first = [0u8; 1];
        // HTTP/1: one request at a time. Between requests, only this small future waits for the
        // next one; the engine's per-request state (its session and the request's future, tens
        // of KiB) is on the heap only while a request is handled, so an idle kept-alive
        // connection costs little more than its socket.
        let mut stop = shutdown.clone();
        let mut stream = stream;
        let mut settings = settings;
        let mut held = held;
        loop {
            // A fresh object in memory is answered here; every other request by the engine.
            // (The engine runs without pipelining: the stream keeps what the visitor sends
            // behind a request the engine handles read ahead (`stream::EngineReads`), so what
            // is read ahead on the stream is all there is.)
            let stopping = is_stopping(&stop);
            // Boxed, and made before any waiting: an idle connection's task is sized by its
            // largest state.
            let answered = {
                let direct: Option<std::pin::Pin<Box<dyn Future<Output = bool> + Send + '_>>> =
                    match self.proxy.direct(&stream, stopping) {
                        Some(hit::Direct::Hit(answer)) => {
                            Some(Box::pin(hit::send(&mut stream, answer, &self.metrics)))
                        }
                        Some(hit::Direct::Pass(passed)) => {
                            Some(Box::pin(pass::send(&mut stream, passed, &self.proxy)))
                        }
                        None => None,
                    };
                match direct {
                    Some(direct) => Some(direct.await),
                    None => None,
                }
            };
            match answered {
                Some(true) => {}
                Some(false) => return None,
                None => {
                    let started = std::time::Instant::now();
                    let outcome = stream::engine_reads(&stream)
                        .map(|reads| reads.begin(self.proxy.max_header_bytes));
                    let peer = stream::visitor_peer(&stream);
                    let reused = self.request(stream, settings, shutdown).await;
                    // A request the engine refused before the proxy saw it (its own 400 for a
                    // header it cannot parse) is logged and counted all the same.
                    if let Some(outcome) = outcome.as_deref()
                        && let Some(status) = outcome.unseen_status()
                        && !is_stopping(shutdown)
                    {
                        let ray = outcome.ray();
                        self.proxy
                            .unseen_request_finished((status, ray), peer, started);
                    }
                    (stream, settings) = reused?.consume();
                    if let Some(reads) = stream::engine_reads(&stream) {
                        reads.end();
                    }
                }
            }
            // The next request usually comes within the first wait. It does not watch for the
            // edge stopping (that watch takes a lock all workers share, twice per request): a
            // request that comes during it once the edge stops is answered with
            // `Connection: close`; a connection still silent when it ends is not parked once
            // the edge stops, and closes then.
            match wait_for_bytes_within(&mut *stream, &mut first, park::PARK_AFTER).await {
                Some(true) => continue,
                Some(false) => return None,
                None => {}
            }
            // Silent for a while: parked, when it is a plain connection with nothing pending.
            let waiting = Waiting {
                stream,
                settings,
                held,
            };
            Waiting {
                stream,
                settings,
                held,
            } = self.park(waiting)?;
            let rest = IDLE_TIMEOUT.saturating_sub(park::PARK_AFTER);
            if wait_for_request(&mut stream, &mut first, &mut stop, rest).await != Some(true) {
                return None;
            }
        }
    }

    /// Parks a silent plain-HTTP connection on this worker: `None` once it is parked (or lost
    /// trying); the connection back when it cannot be parked (a TLS one, or one with bytes
    /// pending).
    fn park<'a>(&'a self, waiting: Waiting<'a>) -> Option<Waiting<'a>> {
        let Some(parking) = self.parking.get() else {
            return Some(waiting);
        };
        if !waiting.stream.as_any().is::<stream::VisitorStream>() {
            return Some(waiting);
        }
        let Waiting {
            stream,
            settings,
            held: (open, slot),
        } = waiting;
        let Ok(visitor) = stream.into_any().downcast::<stream::VisitorStream>() else {
            return None; // Checked above.
        };
        let parked = match visitor.park() {
            Err(visitor) => {
                return Some(Waiting {
                    stream: visitor,
                    settings,
                    held: (open, slot),
                });
            }
            Ok(Err(e)) => {
                tracing::debug!("parking a visitor connection: {e}");
                return None;
            }
            Ok(Ok(parked)) => parked,
        };
        let parked = park::Parked {
            stream: parked,
            slot,
            settings: settings.map(Box::new),
            // Silent since the wait began.
            deadline: std::time::Instant::now() + IDLE_TIMEOUT.saturating_sub(park::PARK_AFTER),
        };
        match parking.park(parked) {
            None => {
                self.metrics.connection_parked(open);
                None
            }
            // Not watched (the worker is stopping, or the set is full): it waits in its task.
            Some(parked) => {
                let stream = stream::VisitorStream::unpark(parked.stream).ok()?;
                Some(Waiting {
                    stream: Box::new(stream),
                    settings: parked.settings.map(|s| *s),
                    held: (open, parked.slot),
                })
            }
        }
    }

    /// The engine's handling of the next request on `stream` (a plain function: the session it
    /// builds goes straight into the boxed future, never into the caller's). The caller has
    /// begun the stream's [`stream::EngineReads`].
    fn request<'a>(
        &'a self,
        stream: Stream,
        settings: Option<HttpPersistentSettings>,
        shutdown: &'a ShutdownWatch,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<ReusedHttpStream>> + Send + 'a>> {
        let mut session = ServerSession::new_http1(stream);
        if let Some(settings) = settings {
            settings.apply_to_session(&mut session);
        }
        session.set_write_timeout(Some(stream::SEND_TIMEOUT));
        session.set_keepalive((!is_stopping(shutdown)).then_some(IDLE_TIMEOUT.as_secs()));
        HttpServerApp::process_new_http(&self.http, session, shutdown)
    }
}

/// Binds `addr` without `SO_REUSEPORT` and lets it go: `EADDRINUSE` when any socket, shared
/// or not, listens there.
fn exclusive_probe(addr: SocketAddr) -> std::io::Result<()> {
    bound_socket(addr, false).map(drop)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let socket = bound_socket(addr, true)?;
    socket.set_nonblocking(true)?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A TCP socket bound to `addr` (IPv6 alone for an IPv6 address), sharing it with others that
/// set `SO_REUSEPORT` when `shared`.
fn bound_socket(addr: SocketAddr, shared: bool) -> std::io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if shared {
        socket.set_reuse_port(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// Accept queue per socket (as nginx's default on Linux, 511, rounded up).
const LISTEN_BACKLOG: i32 = 4096;

/// How many edge workers run: one per core.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Starts the edge on `listeners` (HTTPS ones with `tls`); it stops when `shutdown` turns true.
///
/// Each worker is a single-threaded runtime with its own accept sockets, its own connection pool
/// to origins and its own tasks (as nginx's worker processes): a request never crosses threads,
/// so the data path has no cross-thread wake-ups. The returned task ends when every worker has
/// finished its connections.
pub fn start_edge(
    proxy: EdgeProxy,
    listeners: EdgeListeners,
    tls: Option<Arc<parapet_tls::EdgeTls>>,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let workers = listeners.sockets.first().map_or(1, |(_, _, g)| g.len());
    let mut per_worker: Vec<Vec<(std::net::TcpListener, bool)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (_, is_tls, group) in listeners.sockets {
        for (i, socket) in group.into_iter().enumerate() {
            per_worker[i % workers].push((socket, is_tls));
        }
    }
    // Origins' certificates are checked against these roots (the system's, unless the
    // operator gave a bundle).
    let conf = Arc::new(ServerConf {
        ca_file: proxy.origin_trust.clone(),
        ..ServerConf::default()
    });
    let mut done = Vec::with_capacity(workers);
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let mut http = pingora::proxy::http_proxy(&conf, proxy.clone());
        // An HTTP/2 connection without streams is closed as an idle HTTP/1 one is (by the edge's
        // own HTTP/2 accept loop, which reads it here; it tells HTTP/2 with prior knowledge
        // from HTTP/1.1 itself).
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2_idle_timeout = Some(IDLE_TIMEOUT);
        http.server_options = Some(options);
        // HTTP/2 limits: concurrent streams per connection as Cloudflare's edge, and header
        // blocks of twice the HTTP/1 limit: HTTP/2 counts 32 bytes more per field, and the
        // edge measures the fields as HTTP/1 would and answers its own 431 (the h2 engine's
        // carries no ray id and is never logged). The h2 engine also ends connections that
        // reset streams faster than it accepts them (rapid reset) or send endless
        // CONTINUATION frames.
        // Flow-control windows of 1 MiB a stream and 2 MiB a connection: with HTTP/2's default
        // of 64 KiB, an upload moves 64 KiB per round trip (0.6 MB/s at 100 ms).
        let mut h2 = pingora::protocols::http::v2::server::H2Options::new();
        h2.initial_window_size(H2_STREAM_WINDOW)
            .initial_connection_window_size(H2_CONNECTION_WINDOW)
            .max_concurrent_streams(H2_MAX_STREAMS)
            .max_header_list_size(
                u32::try_from(proxy.max_header_bytes.saturating_mul(2)).unwrap_or(u32::MAX),
            );
        http.h2_options = Some(h2);
        let app = Arc::new(Connections {
            http: Arc::new(http),
            proxy: proxy.clone(),
            metrics: Arc::clone(&proxy.metrics),
            limit: Arc::clone(&proxy.client_limit),
            tls: tls.clone(),
            parking: std::sync::OnceLock::new(),
        });
        // One single-threaded runtime per worker; it lives as long as the process.
        let runtime: &'static pingora_runtime::Runtime = Box::leak(Box::new(
            pingora_runtime::Runtime::new_no_steal(1, &format!("parapet-edge-{i}")),
        ));
        let shutdown = shutdown.clone();
        done.push(runtime.get_handle().spawn(async move {
            match park::Parking::new() {
                Ok(parking) => {
                    let parking = Arc::new(parking);
                    let _ = app.parking.set(Arc::clone(&parking));
                    tokio::spawn(park::run(Arc::clone(&app), parking, shutdown.clone()));
                }
                // Connections then wait in their own tasks.
                Err(e) => tracing::warn!("edge worker: no parking for idle connections: {e}"),
            }
            let mut loops = Vec::with_capacity(sockets.len());
            for (socket, is_tls) in sockets {
                match tokio::net::TcpListener::from_std(socket) {
                    Ok(listener) => loops.push(tokio::spawn(accept_loop(
                        Arc::clone(&app),
                        listener,
                        is_tls,
                        shutdown.clone(),
                    ))),
                    Err(e) => tracing::error!("edge listener: {e}"),
                }
            }
            for accepting in loops {
                let _ = accepting.await;
            }
            // Stopping: wake the connections waiting for a request so that they close.
            ServerApp::cleanup(app.http.as_ref()).await;
        }));
    }
    tokio::spawn(async move {
        for worker in done {
            let _ = worker.await;
        }
    })
}

/// Accepts visitor connections until `shutdown`; each is served by a task on this worker.
async fn accept_loop(
    app: Arc<Connections>,
    listener: tokio::net::TcpListener,
    is_tls: bool,
    mut shutdown: ShutdownWatch,
) {
    // The edge's own address of every connection, unless the listener is a wildcard one (then
    // the engine asks the socket when a request needs it).
    let bound = listener
        .local_addr()
        .ok()
        .filter(|a| !a.ip().is_unspecified());
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.wait_for(|stopping| *stopping) => return,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let Some(slot) = app.limit.acquire(peer.ip()) else {
                    // Over its limit: closed at once, before any work is done for it.
                    app.metrics.connection_refused();
                    drop(tcp);
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                // Counted open now: its task may not run before a stop looks.
                app.metrics.connection_accepted();
                // Boxed at once: the connection's task holds a pointer, not the stream.
                let stream = stream::VisitorStream::new(tcp, peer, bound);
                let stream = Box::new(if is_tls {
                    stream
                } else {
                    stream.sending_vectored_writes_at_once()
                });
                let app = Arc::clone(&app);
                let shutdown = shutdown.clone();
                tokio::spawn(async move {
                    if is_tls {
                        app.serve_tls(stream, slot, &shutdown).await;
                    } else {
                        app.serve(stream, slot, &shutdown).await;
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors (or another resource): accept() would fail at once
                // again; let connections finish and free some.
                tracing::warn!("edge accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// A connected pair over loopback: the connecting end, the accepted end and its peer address.
#[cfg(test)]
pub(crate) async fn loopback_pair() -> (
    tokio::net::TcpStream,
    tokio::net::TcpStream,
    std::net::SocketAddr,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let client = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let (accepted, peer) = listener.accept().await.expect("accept");
    (client, accepted, peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn of a connection returns.
    fn future_size<'a, A, B, F>(
        _: fn(&'a Arc<Connections>, A, B, &'a ShutdownWatch) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// As [`future_size`], for one more argument.
    fn future_size4<'a, A, B, C, F>(
        _: fn(&'a Connections, A, B, C, &'a ShutdownWatch) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn an_idle_connection_carries_no_handshake_or_request_state_inline() {
        // Each connection's task is sized by its largest state: the TLS handshake's (about
        // 9 KiB), the engine's session and the sending of a direct hit must stay boxed, or
        // every connection waiting for a request pays for them (sending a hit inline added
        // 0.4 KiB per connection in a release build). A plain connection waits in its task only
        // until it is parked; a TLS one waits there. In a debug build, once parking came: 840,
        // 808, 672 and 848 bytes.
        for (name, size) in [
            ("serve", future_size(Connections::serve)),
            ("serve_tls", future_size(Connections::serve_tls)),
            ("serve_h1", future_size4(Connections::serve_h1)),
            ("resume", future_size4(Connections::resume)),
        ] {
            assert!(size <= 896, "{name}'s future is {size} bytes");
        }
    }

    #[test]
    fn stopping_is_read_from_the_watch_once_it_changes() {
        let (tx, rx) = watch::channel(false);
        let stop = rx.clone();
        assert!(!is_stopping(&stop));
        tx.send(true).expect("send");
        assert!(is_stopping(&stop));
        assert!(is_stopping(&rx.clone()));
        drop(tx);
        assert!(is_stopping(&stop), "still stopping once the sender is gone");
    }

    #[test]
    fn client_limits_count_ipv4_addresses_and_ipv6_64s() {
        let limit = Arc::new(ClientLimit::new(2));
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().expect("ip");
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
        let other: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        let first = limit.acquire(a).expect("first");
        let _second = limit.acquire(b).expect("second, same /64");
        assert!(
            limit.acquire(a).is_none(),
            "a third from the /64 is refused"
        );
        assert!(
            limit.acquire(other).is_some(),
            "another /64 has its own count"
        );
        drop(first);
        assert!(
            limit.acquire(b).is_some(),
            "a closed connection frees its slot"
        );
        let v4: std::net::IpAddr = "192.0.2.1".parse().expect("ip");
        let mapped: std::net::IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        let _x = limit.acquire(v4).expect("v4");
        let _y = limit
            .acquire(mapped)
            .expect("mapped counts as the same address");
        assert!(limit.acquire(v4).is_none());
        assert!(
            Arc::new(ClientLimit::new(0)).acquire(v4).is_some(),
            "0: no limit"
        );
    }
}
