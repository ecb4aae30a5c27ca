//! TLS at the edge: the certificates visitors see (custom uploads and automatic ones), chosen
//! by SNI from the snapshot, and the keys and certificates Parapet makes itself.

pub mod acme;
pub mod certgen;
pub mod chain;
pub mod origin_ca;
pub mod sni;

pub use chain::{LeafInfo, ParsedChain, check_for_zone, parse_chain};
pub use sni::{EdgeTls, SniResolver};

/// Now, in Unix seconds (the unit certificates' dates are compared in).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Every way a TLS input or operation fails.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    /// The certificate PEM is unusable (the message says why).
    #[error("certificate: {0}")]
    Certificate(String),
    /// The private key PEM is unusable.
    #[error("private_key: {0}")]
    Key(String),
    /// The private key is not the certificate's.
    #[error("private_key: {0}")]
    KeyMismatch(String),
    /// The certificate names no host of the zone it is uploaded to.
    #[error("certificate: {0}")]
    ForeignHosts(String),
    /// Making a key or certificate failed.
    #[error("generating a certificate: {0}")]
    Generate(String),
}

impl TlsError {
    /// The API field the problem is in.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Certificate(_) | Self::Generate(_) | Self::ForeignHosts(_) => "certificate",
            Self::Key(_) | Self::KeyMismatch(_) => "private_key",
        }
    }

    /// Cloudflare's code for the problem: 1002 an unusable certificate, 2103 one for no host
    /// of the zone, 2106 an unusable key, 2200 a key that is not the certificate's.
    pub fn code(&self) -> u32 {
        match self {
            Self::Certificate(_) | Self::Generate(_) => 1002,
            Self::ForeignHosts(_) => 2103,
            Self::Key(_) => 2106,
            Self::KeyMismatch(_) => 2200,
        }
    }
}
