//! The edge: HTTP traffic for proxied names reaches their hidden origins through Parapet.
//!
//! Routing ([`route`]), header policy ([`headers`]) and error pages ([`errors`]) are ours and do
//! no IO; the HTTP engine is pingora, behind a thin `ProxyHttp` adapter ([`EdgeProxy`]). A
//! request reads one snapshot for its whole life and never touches the store.

pub mod errors;
pub mod headers;
pub mod metrics;
mod proxy;
pub mod route;

use std::net::SocketAddr;
use std::sync::Arc;

use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use pingora::server::configuration::ServerConf;
use pingora::services::Service as _;
use pingora::services::listening::Service;
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
    /// `(address, one socket per worker)`, in the order given.
    sockets: Vec<(SocketAddr, Vec<std::net::TcpListener>)>,
}

impl EdgeListeners {
    /// Binds every address `workers` times. Port 0 picks one free port shared by the workers.
    pub fn bind(listen: &[SocketAddr], workers: usize) -> Result<Self, EdgeStartError> {
        Self::bind_or_adopt(listen, workers, &mut |_| Vec::new())
    }

    /// As [`Self::bind`], but first adopting the sockets `adopt` returns for an address (handed
    /// over by a previous process; all of one address and port), binding only what is missing.
    pub fn bind_or_adopt(
        listen: &[SocketAddr],
        workers: usize,
        adopt: &mut dyn FnMut(SocketAddr) -> Vec<std::net::TcpListener>,
    ) -> Result<Self, EdgeStartError> {
        let mut sockets = Vec::with_capacity(listen.len());
        for addr in listen {
            let error = |source| EdgeStartError::Bind {
                addr: *addr,
                source,
            };
            let mut group = adopt(*addr);
            for socket in &group {
                socket.set_nonblocking(true).map_err(error)?;
            }
            if group.is_empty() {
                group.push(reuseport_listener(*addr).map_err(error)?);
            }
            let bound = group[0].local_addr().map_err(error)?;
            while group.len() < workers.max(1) {
                group.push(reuseport_listener(bound).map_err(error)?);
            }
            sockets.push((bound, group));
        }
        Ok(Self { sockets })
    }

    /// Every socket with its address (to keep copies for a successor process).
    pub fn sockets(&self) -> impl Iterator<Item = (SocketAddr, &std::net::TcpListener)> {
        self.sockets
            .iter()
            .flat_map(|(addr, group)| group.iter().map(move |s| (*addr, s)))
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(addr, _)| *addr).collect()
    }
}

/// The HTTP engine with each visitor connection counted for its whole life (every request it
/// carries, until it closes).
struct Connections {
    http: Arc<pingora::proxy::HttpProxy<EdgeProxy>>,
    metrics: Arc<EdgeMetrics>,
}

#[async_trait::async_trait]
impl ServerApp for Connections {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let _open = self.metrics.connection_opened();
        let mut next = Some(stream);
        while let Some(stream) = next {
            next = ServerApp::process_new(&self.http, stream, shutdown).await;
        }
        None
    }

    async fn cleanup(&self) {
        ServerApp::cleanup(self.http.as_ref()).await;
    }
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// Accept queue per socket (as nginx's default on Linux, 511, rounded up).
const LISTEN_BACKLOG: i32 = 4096;

/// How many edge workers run: one per core.
pub fn worker_count() -> usize {
    std::thread::available_parallelism().map_or(2, usize::from)
}

/// Starts the edge on `listeners`; it stops when `shutdown` turns true.
///
/// Each worker is a single-threaded runtime with its own accept sockets, its own connection pool
/// to origins and its own tasks (as nginx's worker processes): a request never crosses threads,
/// so the data path has no cross-thread wake-ups. The returned task ends when every worker has
/// finished its connections.
pub fn start_edge(
    proxy: EdgeProxy,
    listeners: EdgeListeners,
    shutdown: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    use std::os::fd::IntoRawFd;
    let workers = listeners.sockets.first().map_or(1, |(_, g)| g.len());
    let mut per_worker: Vec<Vec<(String, std::net::TcpListener)>> =
        (0..workers).map(|_| Vec::new()).collect();
    for (addr, group) in listeners.sockets {
        for (i, socket) in group.into_iter().enumerate() {
            // The key names the socket in the engine's table of inherited sockets.
            per_worker[i % workers].push((format!("{addr}#{i}"), socket));
        }
    }
    let conf = Arc::new(ServerConf::default());
    let mut done = Vec::with_capacity(workers);
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let mut http = pingora::proxy::http_proxy(&conf, proxy.clone());
        // HTTP/2 over cleartext with prior knowledge, beside HTTP/1.1 on the same listeners.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        http.server_options = Some(options);
        let app = Connections {
            http: Arc::new(http),
            metrics: Arc::clone(&proxy.metrics),
        };
        let mut service = Service::new("parapet edge".to_owned(), app);
        let mut fds = pingora::server::Fds::new();
        for (key, socket) in sockets {
            service.add_tcp(&key);
            fds.add(key, socket.into_raw_fd());
        }
        let fds = Arc::new(parking_lot::Mutex::new(fds));
        // One single-threaded runtime per worker; it lives as long as the process.
        let runtime: &'static pingora_runtime::Runtime = Box::leak(Box::new(
            pingora_runtime::Runtime::new_no_steal(1, &format!("parapet-edge-{i}")),
        ));
        let shutdown = shutdown.clone();
        done.push(runtime.get_handle().spawn(async move {
            service.start_service(Some(fds), shutdown, 1).await;
        }));
    }
    tokio::spawn(async move {
        for worker in done {
            let _ = worker.await;
        }
    })
}
