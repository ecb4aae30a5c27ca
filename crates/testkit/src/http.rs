//! HTTP helpers for edge tests: a tiny origin that reports what it received, and curl.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::mpsc;

/// A tiny origin: answers every request with 200, the request head it received as the body, and
/// a header naming its own address (which the edge must strip).
pub fn start_origin(ip: &str, port: u16) -> mpsc::Receiver<String> {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let head = read_head(&mut reader).unwrap_or_default();
            // The request's body is read before the answer: a socket closed with bytes
            // unread is reset, and the reset can reach the edge before the answer does.
            skip_body(&mut reader, &head);
            let _ = tx.send(head.clone());
            let body = head.into_bytes();
            let own = stream
                .local_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {own}\r\nServer: origin-server\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    rx
}

/// Reads a request's head off `reader`, up to its blank line (which it leaves out); `None` when
/// the connection ends before that.
pub fn read_head(reader: &mut impl BufRead) -> Option<String> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        if line == "\r\n" {
            return Some(head);
        }
        head.push_str(&line);
    }
}

/// Reads the body of the request whose head is `head` (by its Content-Length, or its chunks)
/// off `reader`, as far as it comes.
fn skip_body(reader: &mut impl BufRead, head: &str) {
    let field = |name: &str| {
        head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_ascii_lowercase())
        })
    };
    if field("transfer-encoding").is_some_and(|v| v.ends_with("chunked")) {
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let size = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = u64::from_str_radix(size, 16) else {
                return;
            };
            if size == 0 {
                // Trailers, up to the blank line.
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        return;
                    }
                }
            }
            let _ = std::io::copy(&mut reader.by_ref().take(size + 2), &mut std::io::sink());
        }
    } else if let Some(length) = field("content-length").and_then(|v| v.parse::<u64>().ok()) {
        let _ = std::io::copy(&mut reader.by_ref().take(length), &mut std::io::sink());
    }
}

/// A response head's fields (lowercase lines), sorted, without those that differ between any
/// two responses (`Date`, `Age`, the ray id); and its `Age` (`u64::MAX` without one).
pub fn lasting_fields(head: &str) -> (Vec<String>, u64) {
    let mut fields: Vec<String> = head
        .lines()
        .filter(|l| {
            !["date:", "age:", "cf-ray:"]
                .iter()
                .any(|f| l.starts_with(f))
        })
        .map(|l| l.trim().to_owned())
        .collect();
    fields.sort();
    let age = head
        .lines()
        .find_map(|l| l.strip_prefix("age: "))
        .and_then(|a| a.trim().parse().ok())
        .unwrap_or(u64::MAX);
    (fields, age)
}

pub fn curl(port: u16, host: &str, extra: &[&str]) -> (u16, String, String) {
    curl_scheme("http", port, host, extra)
}

/// `curl https://host:port/path?q=1` (to 127.0.0.1), trusting the CA in PEM file `cacert`.
/// Status 0 when no response came (a failed handshake).
pub fn curl_https(port: u16, host: &str, cacert: &Path, extra: &[&str]) -> (u16, String, String) {
    let mut args = vec!["--cacert", cacert.to_str().unwrap_or_default()];
    args.extend_from_slice(extra);
    curl_scheme("https", port, host, &args)
}

fn curl_scheme(scheme: &str, port: u16, host: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("{scheme}://{host}:{port}/path?q=1"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// The status code curl reports for `url` with `args` ("000" when no response came), within
/// `max_time` seconds.
pub fn curl_code(args: &[&str], url: &str, max_time: u32) -> String {
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time"])
        .arg(max_time.to_string())
        .args(args)
        .arg(url)
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An origin that accepts connections and reads, but never answers.
pub fn start_silent_origin(ip: &str, port: u16) {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
}

/// What a TLS origin saw of one connection: the request head, and whether the client presented
/// a certificate.
#[derive(Debug, Clone)]
pub struct TlsSeen {
    pub head: String,
    pub client_certificate: bool,
}

/// An HTTPS origin with certificate `cert_pem` and key `key_pem`; with `client_ca`, it requires
/// a client certificate issued by that CA (PEM). Answers as [`start_origin`] does.
pub fn start_tls_origin(
    ip: &str,
    port: u16,
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&str>,
) -> mpsc::Receiver<TlsSeen> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .expect("origin certificate");
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("origin key");
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .expect("versions");
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
                roots.add(c.expect("client CA")).expect("client CA");
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .expect("client verifier");
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = Arc::new(builder.with_single_cert(certs, key).expect("origin config"));
    let listener = TcpListener::bind((ip, port)).expect("bind TLS origin");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(tcp) = stream else { continue };
            let config = Arc::clone(&config);
            let tx = tx.clone();
            std::thread::spawn(move || {
                let _ = tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)));
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match tls.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let client_certificate =
                    tls.conn.peer_certificates().is_some_and(|c| !c.is_empty());
                let _ = tx.send(TlsSeen {
                    head: head.clone(),
                    client_certificate,
                });
                let _ = write!(
                    tls,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    rx
}
