//! Parapet's authoritative DNS: an index compiled from the snapshot, the answer engine over it
//! (RFC 1034/2181/4592/6891/8482 behaviour, Knot as the reference), and UDP/TCP servers on
//! sockets the caller bound.
//!
//! The engine never touches the store and never blocks: a query reads one immutable
//! [`DnsIndex`] for its whole life. Proxied records of active zones are rewritten to the edge's
//! addresses when the index is built, so the origin never appears in an answer.

mod compress;
mod cookies;
mod engine;
mod fast;
mod flatten;
mod index;
mod rrl;
mod server;
mod signed;
mod tsig;
mod wire;
mod xfr;

pub use cookies::{CookieCheck, Cookies, format_secret, parse_secret, random_secret};
pub use engine::{Answer, Answered, Client, Limits, Transport, answer_query};
pub use flatten::{External, Flattener, system_resolver};
pub use index::{DnsIndex, EdgeAddrs, ZoneIndex};
pub use rrl::{RateLimiter, ResponseKind, RrlConfig, Verdict};
pub use server::{
    DnsServer, IndexHandle, TRANSFERS_OUT, bind_udp, bind_udp_and_tcp, follow_snapshots,
};
pub use xfr::{Journal, notify_all};

/// Seconds since the Unix epoch, as DNS carries them (serials, cookies, TSIG times).
pub(crate) fn unix_now() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// Whether serial `a` comes after serial `b` in serial-number arithmetic (RFC 1982).
pub(crate) fn serial_after(a: u32, b: u32) -> bool {
    a != b && a.wrapping_sub(b) < 1 << 31
}

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("{kind} record {name}: {message}")]
    BadRecord {
        kind: String,
        name: String,
        message: String,
    },
    /// A zone transfer that cannot be sent whole.
    #[error("zone transfer: {0}")]
    Transfer(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}
