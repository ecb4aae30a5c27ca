//! HTTPS visitors: the TLS handshake (certificate by SNI, TLS versions by the zone's minimum)
//! and the decrypted stream the HTTP engine reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use parapet_tls::EdgeTls;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::SslDigest;
use pingora::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::server::TlsStream;

use crate::stream::{Buffers, EngineReads, FlushGate, IdleFlush, VisitorStream};

/// How long a visitor has to finish its handshake (a slow or silent one is dropped).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads of decrypted data at a time while peeking.
const PEEK_READ: usize = 4 * 1024;
/// Writes are gathered up to one TLS record's payload until a flush, so that a response
/// header and a small body are encrypted as one record.
const GATHER: usize = 16 * 1024;

/// A visitor's connection after its TLS handshake.
pub struct TlsVisitorStream {
    tls: TlsStream<Box<VisitorStream>>,
    /// Decrypted bytes peeked but not yet read, and plaintext gathered for the next record.
    buffers: Buffers,
    ssl: Arc<SslDigest>,
    alpn: Option<ALPN>,
    /// The name the visitor's ClientHello asked for (lower case, no final dot).
    sni: Option<Box<str>>,
    established: SystemTime,
    /// An HTTP/2 connection's: flushes held back while it says so (here and underneath).
    gate: Option<FlushGate>,
    /// How the HTTP engine reads the request it handles.
    pub(crate) engine_reads: EngineReads,
    idle_flush: IdleFlush,
}

impl std::fmt::Debug for TlsVisitorStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsVisitorStream")
            .field("ssl", &self.ssl)
            .finish_non_exhaustive()
    }
}

/// Runs the server side of a handshake on `tcp`: the ClientHello's SNI picks the zone, whose
/// minimum TLS version picks the configuration, whose resolver picks the certificate. `None`
/// when the handshake fails (no SNI, a name without a certificate, a bad or slow client); the
/// client has then been sent an alert where TLS allows one. The stream is boxed: its TLS state
/// is large, and the caller's future should not carry it inline.
pub async fn handshake(tcp: Box<VisitorStream>, tls: &EdgeTls) -> Option<Box<TlsVisitorStream>> {
    let handshake = async {
        let acceptor =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), tcp);
        let start = acceptor.await.ok()?;
        let hello = start.client_hello();
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == parapet_tls::sni::ACME_TLS_ALPN));
        if acme {
            // A CA validating a TLS-ALPN-01 challenge: the handshake is the whole answer.
            let config = tls.challenge_config(hello.server_name())?;
            let mut stream = start.into_stream(config).await.ok()?;
            use tokio::io::AsyncWriteExt;
            let _ = stream.shutdown().await;
            return None;
        }
        let sni = hello.server_name().map(|n| {
            n.trim_end_matches('.')
                .to_ascii_lowercase()
                .into_boxed_str()
        });
        let config = tls.config_for(hello.server_name());
        Some((start.into_stream(config).await.ok()?, sni))
    };
    let (stream, sni) = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake)
        .await
        .ok()??;
    let (_, conn) = stream.get_ref();
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let cipher = conn
        .negotiated_cipher_suite()
        .and_then(|s| s.suite().as_str())
        .unwrap_or("unknown");
    let alpn = match conn.alpn_protocol() {
        Some(b"h2") => Some(ALPN::H2),
        Some(b"http/1.1") => Some(ALPN::H1),
        _ => None,
    };
    Some(Box::new(TlsVisitorStream {
        tls: stream,
        buffers: Buffers::default(),
        ssl: Arc::new(SslDigest::new(cipher, version, None, None, Vec::new())),
        alpn,
        sni,
        established: SystemTime::now(),
        gate: None,
        engine_reads: EngineReads::default(),
        idle_flush: IdleFlush::default(),
    }))
}

/// The certificate and key the edge presents to origins that ask for one.
pub type ClientIdentity = Arc<pingora::utils::tls::CertKey>;

/// A client identity from PEM, checked (the key matches the leaf).
pub fn client_identity(
    certificate_pem: &str,
    key_pem: &str,
) -> Result<ClientIdentity, Vec<parapet_tls::TlsError>> {
    let (certs, key) = parapet_tls::chain::der_of(certificate_pem, key_pem)?;
    Ok(Arc::new(pingora::utils::tls::CertKey::new(certs, key)))
}

impl TlsVisitorStream {
    pub fn is_h2(&self) -> bool {
        self.alpn == Some(ALPN::H2)
    }

    /// The name the handshake was for (lower case, no final dot).
    pub(crate) fn sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// The visitor's address.
    pub(crate) fn peer(&self) -> std::net::SocketAddr {
        self.tls.get_ref().0.peer()
    }
}

impl AsyncRead for TlsVisitorStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Self {
            tls,
            buffers,
            engine_reads,
            gate,
            idle_flush,
            ..
        } = this;
        let read = engine_reads.poll_read(buffers, tls, cx, buf);
        if read.is_pending() && gate.is_none() {
            idle_flush.poll(buffers, tls, cx);
        }
        read
    }
}

impl AsyncWrite for TlsVisitorStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let limit = FlushGate::gather_limit(this.gate.as_ref(), GATHER);
        this.engine_reads
            .poll_write(&mut this.buffers, &mut this.tls, cx, buf, limit)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if FlushGate::holds(this.gate.as_ref()) {
            return Poll::Ready(Ok(()));
        }
        std::task::ready!(this.buffers.poll_drain(&mut this.tls, cx))?;
        Pin::new(&mut this.tls).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.buffers.poll_drain(&mut this.tls, cx))?;
        Pin::new(&mut this.tls).poll_shutdown(cx)
    }
}

impl TlsVisitorStream {
    /// Decrypted bytes read ahead (a request the connection waited for, as far as it has
    /// arrived).
    pub(crate) fn ahead(&self) -> &[u8] {
        self.buffers.ahead()
    }

    /// The TCP connection underneath.
    pub(crate) fn tcp(&self) -> &VisitorStream {
        self.tls.get_ref().0
    }

    /// Flushes on this connection, and on the TCP connection underneath, from now on wait
    /// while `gate` is held.
    pub(crate) fn gate_flushes(&mut self, gate: FlushGate) {
        self.tls.get_mut().0.gate_flushes(gate.clone());
        self.gate = Some(gate);
    }
}

#[async_trait]
impl Peek for TlsVisitorStream {
    /// Waits until `buf.len()` decrypted bytes have arrived and copies them without consuming.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if self.buffers.ahead_len() < buf.len() {
            self.tls.get_mut().0.rest();
        }
        while self.buffers.ahead_len() < buf.len() {
            // Decrypted into this thread's scratch space: a waiting connection holds no buffer.
            let n = std::future::poll_fn(|cx| {
                crate::stream::with_scratch(|scratch| {
                    let mut read = ReadBuf::new(&mut scratch[..PEEK_READ]);
                    ready!(Pin::new(&mut self.tls).poll_read(cx, &mut read))?;
                    self.buffers.keep_ahead(read.filled());
                    Poll::Ready(Ok::<_, io::Error>(read.filled().len()))
                })
            })
            .await?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        self.buffers.peek_into(buf);
        Ok(true)
    }
}

#[async_trait]
impl Shutdown for TlsVisitorStream {
    /// Sends the end of the TLS session and of the stream, then lingers as a plain connection
    /// does ([`crate::stream::VisitorStream::linger`]).
    async fn shutdown(&mut self) {
        use tokio::io::AsyncWriteExt;
        if AsyncWriteExt::shutdown(self).await.is_ok() {
            let unread = self.buffers.ahead_len() > 0;
            self.tls.get_mut().0.linger(unread).await;
        }
    }
}

impl UniqueID for TlsVisitorStream {
    fn id(&self) -> UniqueIDType {
        self.tls.get_ref().0.id()
    }
}

impl Ssl for TlsVisitorStream {
    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        Some(Arc::clone(&self.ssl))
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.alpn.clone()
    }
}

impl GetTimingDigest for TlsVisitorStream {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        let mut digest = self.tls.get_ref().0.get_timing_digest();
        digest.push(Some(TimingDigest {
            established_ts: self.established,
            ..TimingDigest::default()
        }));
        digest
    }
}

impl GetProxyDigest for TlsVisitorStream {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for TlsVisitorStream {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.tls.get_ref().0.get_socket_digest()
    }

    fn set_socket_digest(&mut self, socket_digest: SocketDigest) {
        self.tls.get_mut().0.set_socket_digest(socket_digest);
    }
}
