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

use pingora::server::configuration::ServerConf;
use pingora::services::Service;
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

/// Starts the edge on `listen` in the current tokio runtime; it stops when `shutdown` turns true.
pub fn start_edge(
    proxy: EdgeProxy,
    listen: &[SocketAddr],
    shutdown: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, EdgeStartError> {
    // Check each address first: the engine's own bind failure is not recoverable.
    for addr in listen {
        std::net::TcpListener::bind(addr).map_err(|source| EdgeStartError::Bind {
            addr: *addr,
            source,
        })?;
    }
    let conf = Arc::new(ServerConf::default());
    let mut service = pingora::proxy::http_proxy_service_with_name(&conf, proxy, "parapet edge");
    if let Some(app) = service.app_logic_mut() {
        // HTTP/2 over cleartext with prior knowledge, beside HTTP/1.1 on the same listeners.
        let mut options = pingora::apps::HttpServerOptions::default();
        options.h2c = true;
        app.server_options = Some(options);
    }
    for addr in listen {
        service.add_tcp(&addr.to_string());
    }
    // The edge runs on its own runtime of single-threaded schedulers without work stealing (as
    // pingora's own server does): connections stay on one thread, with fewer cross-thread
    // wake-ups than a shared work-stealing runtime. It lives as long as the process.
    static RUNTIME: std::sync::OnceLock<pingora_runtime::Runtime> = std::sync::OnceLock::new();
    let threads = std::thread::available_parallelism().map_or(2, usize::from);
    let runtime =
        RUNTIME.get_or_init(|| pingora_runtime::Runtime::new_no_steal(threads, "parapet-edge"));
    Ok(runtime.get_handle().spawn(async move {
        service.start_service(None, shutdown, threads).await;
    }))
}
