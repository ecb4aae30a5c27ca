//! The edge end to end: proxied names reach their origins through Parapet with Cloudflare's
//! headers and error pages, and the origin's address never leaks. Requests are made with curl;
//! origins listen on 127.0.0.2+ on the port the visitor used.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use parapet_testkit::http::{curl, curl_code, start_origin, start_silent_origin};
use parapet_testkit::{Node, NodeOptions, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// A node with its edge on 127.0.0.1:`port` (origins on 127.0.0.2+ take the same port) and
/// `config` as its configuration file.
fn edge_node(port: u16, config: &str) -> Node {
    let options = NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]);
    Node::start(if config.is_empty() {
        options
    } else {
        options.config(config)
    })
}

#[test]
fn proxied_names_reach_their_origin_with_cloudflare_headers_and_errors() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("shop.test");
    let rec = |body: serde_json::Value| {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body))
    };
    rec(json!({"type": "A", "name": "www", "content": "127.0.0.2", "proxied": true}));
    rec(json!({"type": "CNAME", "name": "app", "content": "www.shop.test", "proxied": true}));
    rec(json!({"type": "A", "name": "direct", "content": "127.0.0.2"}));
    rec(json!({"type": "A", "name": "down", "content": "127.0.0.3", "proxied": true}));
    // A target only a wildcard answers for, as DNS answers it.
    rec(json!({"type": "A", "name": "*.pool", "content": "127.0.0.2"}));
    rec(
        json!({"type": "CNAME", "name": "pooled", "content": "app.pool.shop.test", "proxied": true}),
    );
    // A proxied wildcard, with a name below it that has records, and a closer wildcard that
    // is not proxied.
    rec(json!({"type": "A", "name": "*.wild", "content": "127.0.0.2", "proxied": true}));
    rec(json!({"type": "A", "name": "b.wild", "content": "127.0.0.2"}));
    rec(json!({"type": "A", "name": "*.open.wild", "content": "127.0.0.2"}));
    // An empty non-terminal under the wildcard, and a delegation.
    rec(json!({"type": "A", "name": "deep.ent.wild", "content": "127.0.0.2"}));
    rec(json!({"type": "NS", "name": "sub.wild", "content": "ns.elsewhere.example"}));
    parapet_testkit::eventually(
        Duration::from_secs(5),
        "the edge to route the new names",
        || curl(port, "www.shop.test", &[]).0 == 200,
    );
    while origin.try_recv().is_ok() {}

    // Proxied: the origin answers; the visitor sees the edge's headers and not the origin's address.
    let (status, head, body) = curl(
        port,
        "www.shop.test",
        &[
            "-H",
            "Connection: keep-alive, X-Secret",
            "-H",
            "X-Secret: hop",
            "-H",
            "X-Forwarded-For: 198.51.100.7",
            "-H",
            "CDN-Loop: other-cdn",
            "-H",
            "CDN-Loop: another; v=2",
        ],
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("cf-ray: ") && head.contains("-ppt"), "{head}");
    assert!(head.contains("server: parapet"), "{head}");
    assert!(
        !head.contains("127.0.0.2") && !body.contains("x-backend"),
        "origin address leaked: {head}"
    );
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got the request")
        .to_ascii_lowercase();
    assert!(seen.starts_with("get /path?q=1 http/1.1"), "{seen}");
    assert!(
        seen.contains(&format!("host: www.shop.test:{port}")),
        "original Host: {seen}"
    );
    assert!(
        seen.contains("x-forwarded-for: 198.51.100.7, 127.0.0.1"),
        "{seen}"
    );
    assert!(seen.contains("cf-connecting-ip: 127.0.0.1"), "{seen}");
    assert!(seen.contains("x-forwarded-proto: http"), "{seen}");
    assert!(seen.contains("cf-visitor: {\"scheme\":\"http\"}"), "{seen}");
    assert!(
        seen.contains("\r\ncdn-loop: other-cdn, another; v=2, parapet\r\n"),
        "{seen}"
    );
    assert!(
        !seen.contains("x-secret"),
        "a header named in Connection is hop-by-hop: {seen}"
    );

    // HTTP/2 with prior knowledge (h2c) from the visitor. Cookies it sends in pieces reach
    // the HTTP/1.1 origin as one field (RFC 9113 §8.2.3), through the edge's own path (a GET)
    // and the engine (a PUT).
    for method in ["GET", "PUT"] {
        let (status, head, _) = curl(
            port,
            "www.shop.test",
            &[
                "--http2-prior-knowledge",
                "-X",
                method,
                "-H",
                "Cookie: a=1",
                "-H",
                "Cookie: b=2",
            ],
        );
        assert_eq!(status, 200, "{head}");
        assert!(head.starts_with("http/2 200"), "{head}");
        let seen = origin
            .recv_timeout(Duration::from_secs(5))
            .expect("origin got the request")
            .to_ascii_lowercase();
        assert_eq!(seen.matches("cookie:").count(), 1, "{seen}");
        assert!(seen.contains("\r\ncookie: a=1; b=2\r\n"), "{seen}");
    }

    // A proxied CNAME reaches the target's origin, through a wildcard too.
    assert_eq!(curl(port, "app.shop.test", &[]).0, 200);
    assert_eq!(curl(port, "pooled.shop.test", &[]).0, 200);
    // A proxied wildcard answers as DNS does: for names with no closer answer only.
    assert_eq!(curl(port, "x.wild.shop.test", &[]).0, 200);
    for (name, why) in [
        ("b.wild.shop.test", "its own records"),
        (
            "a.b.wild.shop.test",
            "b has records and no wildcard: NXDOMAIN in DNS",
        ),
        ("y.open.wild.shop.test", "a closer wildcard, not proxied"),
        ("ent.wild.shop.test", "an empty non-terminal: NODATA in DNS"),
        (
            "x.ent.wild.shop.test",
            "the ENT is the closest encloser: NXDOMAIN",
        ),
        ("sub.wild.shop.test", "a delegation: a referral in DNS"),
        ("a.b.sub.wild.shop.test", "below a delegation: a referral"),
    ] {
        assert_eq!(curl(port, name, &[]).0, 409, "{name}: {why}");
    }

    // Errors a visitor understands, each with a ray id.
    let (status, head, body) = curl(port, "unknown.example", &[]);
    assert_eq!(status, 409);
    assert!(
        body.contains("Error 1001") && head.contains("cf-ray"),
        "{body}"
    );
    let (status, _, body) = curl(
        port,
        "direct.shop.test",
        &["-H", "Accept: application/json"],
    );
    assert_eq!(status, 409);
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(v["errors"][0]["code"], 1018);
    let (status, _, body) = curl(port, "down.shop.test", &[]);
    assert_eq!(status, 521, "origin refused: {body}");
    assert!(body.contains("Error 521") && !body.contains("127.0.0.3"));
    // An error page says the connection closes, as it then does, whichever path made it (a GET
    // the edge passes itself, a DELETE through the HTTP engine): a client reusing a connection
    // announced as kept would send its next request into the close.
    for method in ["GET", "DELETE"] {
        let request = format!("{method} / HTTP/1.1\r\nHost: down.shop.test\r\n\r\n");
        let head = raw_head(port, request.as_bytes());
        assert!(head.starts_with("http/1.1 521"), "{method}: {head}");
        assert!(head.contains("connection: close"), "{method}: {head}");
    }
    let (status, _, body) = curl(port, "www.shop.test", &["-H", "CDN-Loop: parapet"]);
    assert_eq!(status, 508, "{body}");

    // Metrics on the API listener, for Prometheus.
    let metrics = Command::new("curl")
        .args(["-s", &format!("{}/metrics", node.base)])
        .output()
        .expect("curl metrics");
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    assert!(
        metrics.contains(&format!(
            "parapet_edge_requests_total{{zone=\"{zone}\",status=\"200\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("parapet_edge_requests_total{zone=\"\",status=\"409\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("parapet_edge_origin_seconds_count"),
        "{metrics}"
    );
}

/// Sends `request` raw and returns the status of the response (0: connection closed without one).
fn raw(port: u16, request: &[u8]) -> u16 {
    raw_head(port, request)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Sends `request` raw and returns the response's header, lowercase (empty: none came).
fn raw_head(port: u16, request: &[u8]) -> String {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    if s.write_all(request).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while let Ok(n) = s.read(&mut chunk) {
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase()
}

#[test]
fn ambiguous_or_malformed_framing_never_reaches_the_origin() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("frame.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.frame.test", &[]).0 == 200
    });
    while origin.try_recv().is_ok() {}
    let host = "Host: www.frame.test\r\n";
    let cases: Vec<(&str, String)> = vec![
        (
            "CL and TE",
            format!(
                "POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "duplicate CL",
            format!(
                "POST / HTTP/1.1\r\n{host}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
        ),
        (
            "invalid CL",
            format!("POST / HTTP/1.1\r\n{host}Content-Length: 5x\r\n\r\nhello"),
        ),
        (
            "CL list",
            format!("POST / HTTP/1.1\r\n{host}Content-Length: 5, 5\r\n\r\nhello"),
        ),
        (
            "obs-fold",
            format!("GET / HTTP/1.1\r\n{host}X-Folded: a\r\n b\r\n\r\n"),
        ),
        (
            "bare CR",
            format!("GET / HTTP/1.1\r\n{host}X-Bad: a\rb\r\n\r\n"),
        ),
        ("bare LF", format!("GET / HTTP/1.1\n{host}X-Bad: a\n\n")),
        (
            "bad header name",
            format!("GET / HTTP/1.1\r\n{host}Bad Header: x\r\n\r\n"),
        ),
        (
            "TE not chunked",
            format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: gzip\r\n\r\nxx"),
        ),
        (
            "TE chunked not last",
            format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"),
        ),
        (
            "TE a coding before chunked",
            format!("POST / HTTP/1.1\r\n{host}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
        ),
        (
            "TE codings over two fields",
            format!(
                "POST / HTTP/1.1\r\n{host}Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "TE chunked twice",
            format!(
                "POST / HTTP/1.1\r\n{host}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n"
            ),
        ),
        (
            "absolute-form mismatch",
            format!("GET http://other.test/ HTTP/1.1\r\n{host}\r\n"),
        ),
        // Neither origin nor absolute form: the engine would read `/` and send the rest on.
        (
            "a target without a slash",
            format!("GET secret.txt HTTP/1.1\r\n{host}\r\n"),
        ),
        (
            "a target of another scheme",
            format!("GET mailto:x HTTP/1.1\r\n{host}\r\n"),
        ),
        ("a star for GET", format!("GET * HTTP/1.1\r\n{host}\r\n")),
        // Refused, not corrected into %20 and %01 (RFC 9112 §3.2).
        (
            "a space in the target",
            format!("GET /a b HTTP/1.1\r\n{host}\r\n"),
        ),
        (
            "a control character in the target",
            format!("GET /a\x01b HTTP/1.1\r\n{host}\r\n"),
        ),
        // TRACE would echo the visitor's cookies back.
        (
            "TRACE",
            format!("TRACE / HTTP/1.1\r\n{host}Cookie: secret=1\r\n\r\n"),
        ),
        (
            "a URL over 16 KiB",
            format!("GET /{} HTTP/1.1\r\n{host}\r\n", "a".repeat(17 * 1024)),
        ),
    ];
    let mut failures = Vec::new();
    for (name, request) in &cases {
        let head = raw_head(port, request.as_bytes());
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let reached = origin.recv_timeout(Duration::from_millis(300)).is_ok();
        if reached || !(status == 0 || (400..500).contains(&status) || status == 501) {
            failures.push(format!(
                "{name}: status {status}, reached origin: {reached}"
            ));
        }
        // Every refusal is the edge's own, whichever part of it refuses: its server name and
        // a ray id, never the HTTP engine's.
        if status != 0 && !(head.contains("server: parapet") && head.contains("cf-ray: ")) {
            failures.push(format!("{name}: not the edge's own refusal: {head}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let trace = raw_head(port, format!("TRACE / HTTP/1.1\r\n{host}\r\n").as_bytes());
    assert!(
        trace.starts_with("http/1.1 405") && trace.contains("allow: "),
        "{trace}"
    );
    let long = format!("GET /{} HTTP/1.1\r\n{host}\r\n", "a".repeat(17 * 1024));
    assert_eq!(raw(port, long.as_bytes()), 414);
    // An absolute-form target reaches the origin in origin form (RFC 9112 §3.2.1).
    let status = raw(
        port,
        format!("GET http://www.frame.test/abs?q=1 HTTP/1.1\r\n{host}Connection: close\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(status, 200);
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got the request");
    assert!(seen.starts_with("GET /abs?q=1 HTTP/1.1\r\n"), "{seen}");
    // An HTTP/1.1 request without Host is a 400 (RFC 9112 §3.2); an IP address for a host is
    // Cloudflare's 1003 (403).
    assert_eq!(raw(port, b"GET / HTTP/1.1\r\n\r\n"), 400);
    let head = raw_head(
        port,
        b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    );
    assert!(head.starts_with("http/1.1 403"), "{head}");
    // Requests shorter than HTTP/2's preface that start as it does (P) are answered at once.
    for short in ["PUT / HTTP/1.0\r\n\r\n", "POST / HTTP/1.0\r\n\r\n"] {
        let started = std::time::Instant::now();
        let status = raw(port, short.as_bytes());
        assert!(status >= 400, "{short:?}: {status}");
        assert!(started.elapsed() < Duration::from_secs(2), "{short:?}");
    }
}

#[test]
fn websocket_upgrades_pass_through_both_ways() {
    use std::io::Read;
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.2", port)).expect("bind origin");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut upgrade = false;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    upgrade |= line.to_ascii_lowercase().starts_with("upgrade: websocket");
                }
                if !upgrade {
                    let _ = stream.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    );
                    return;
                }
                let _ = stream.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n");
                // Echo whatever arrives after the upgrade.
                let mut buf = [0u8; 1024];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    // A small body limit: what follows an upgrade is not a body.
    let node = edge_node(port, "edge_max_body_bytes = 1000\n");
    let zone = node.create_zone("ws.test");
    node.proxied_a(&zone, "live", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "live.ws.test", &[]).0 == 200
    });
    // HTTP/2 to origins: an upgrade still goes over HTTP/1.1 (HTTP/2 has no Upgrade), while
    // other requests to this HTTP/1.1-only origin now fail.
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings"),
        Some(json!({"items": [{"id": "origin_max_http_version", "value": "2"}]})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "HTTP/2 to the origin", || {
        curl(port, "live.ws.test", &[]).0 != 200
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: live.ws.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut byte).expect("read"),
            1,
            "connection closed during the handshake"
        );
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    s.write_all(b"frame-bytes").expect("write frame");
    let mut echoed = [0u8; 11];
    s.read_exact(&mut echoed).expect("echo through the edge");
    assert_eq!(&echoed, b"frame-bytes");
    // Three times the body limit, and more.
    for round in 0..3 {
        let frames = vec![b'a' + round; 1500];
        s.write_all(&frames).expect("write frames");
        let mut echoed = vec![0u8; frames.len()];
        s.read_exact(&mut echoed).expect("echo past the body limit");
        assert_eq!(echoed, frames);
    }
}

#[test]
fn a_silent_origin_gets_a_524_and_the_visitor_a_page() {
    let port = free_port();
    start_silent_origin("127.0.0.2", port);
    let node = edge_node(port, "edge_read_timeout = \"1s\"\n");
    let zone = node.create_zone("slow.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(10), "a 524 page", || {
        let (status, _, body) = curl(port, "www.slow.test", &[]);
        status == 524 && body.contains("Error 524")
    });
}

#[test]
fn sigterm_stops_the_edge_cleanly() {
    let port = free_port();
    let mut node = edge_node(port, "");
    assert_eq!(curl(port, "nothing.test", &[]).0, 409);
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert_eq!(
        curl(port, "nothing.test", &[]).0,
        0,
        "the edge stopped listening"
    );
}

/// `parapet serve` on a data directory of its own, its edge on `http` alone.
fn serve_on(dir: &std::path::Path, http: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--data-dir"])
        .arg(dir)
        .args(["--api-listen", "127.0.0.1:0", "--http-listen", http])
        .env("PARAPET_API_TOKEN", "x");
    command
}

#[test]
fn a_busy_http_port_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = serve_on(dir.path(), &addr.to_string())
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--http-listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
    // A port another Parapet listens on (its sockets share the port among its own workers) is
    // busy too: a second node does not silently take half of its visitors.
    let port = free_port();
    let _first = edge_node(port, "");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut second = serve_on(dir.path(), &format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = second.try_wait().expect("wait") {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            let _ = second.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    if let Some(mut err) = second.stderr.take() {
        use std::io::Read;
        let _ = err.read_to_string(&mut stderr);
    }
    assert!(
        status.is_some_and(|s| !s.success()),
        "a second node shared the port: {stderr}"
    );
    assert!(stderr.contains("--http-listen"), "{stderr}");
}

#[test]
fn oversized_requests_get_413_and_431_and_expect_continue_works() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("size.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.size.test", &[]).0 == 200
    });
    while origin.try_recv().is_ok() {}
    let huge_header = format!(
        "GET / HTTP/1.1\r\nHost: www.size.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40 * 1024)
    );
    assert_eq!(raw(port, huge_header.as_bytes()), 431);
    // Too many fields, however short, are too large a header too; as many as are taken pass.
    let fields = |n: usize| {
        let mut head = String::from("GET / HTTP/1.1\r\nHost: www.size.test\r\n");
        (1..n).for_each(|i| head.push_str(&format!("X-F{i}: v\r\n")));
        head + "\r\n"
    };
    assert_eq!(raw(port, fields(256).as_bytes()), 200);
    let head = raw_head(port, fields(257).as_bytes());
    assert!(
        head.starts_with("http/1.1 431") && head.contains("server: parapet"),
        "{head}"
    );
    assert_eq!(raw(port, fields(2000).as_bytes()), 431);
    while origin.try_recv().is_ok() {}
    // A header that goes on past twice that is not taken in whole (the HTTP engine would
    // keep up to a MiB of it): the connection closes once about that much has come.
    {
        use std::io::Read;
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut sent = 0;
        let mut closed = s
            .write_all(b"GET / HTTP/1.1\r\nHost: www.size.test\r\nX-Big: ")
            .is_err();
        while !closed && sent < 2 << 20 {
            closed = s.write_all(&[b'a'; 8192]).is_err();
            sent += 8192;
            std::thread::sleep(Duration::from_millis(5));
            s.set_nonblocking(true).expect("nonblocking");
            closed |= !matches!(
                s.read(&mut [0u8; 64]),
                Err(ref e) if e.kind() == std::io::ErrorKind::WouldBlock
            );
            s.set_nonblocking(false).expect("blocking");
        }
        assert!(
            closed && sent < 512 << 10,
            "{sent} bytes of one header taken"
        );
    }
    // Over HTTP/2, the same fields measure the same.
    let big = format!("X-Big: {}", "a".repeat(40 * 1024));
    // The edge's own refusals say who answered, with the ray id the log has, over both
    // protocols.
    for version in ["--http2-prior-knowledge", "--http1.1"] {
        let (status, head, _) = curl(port, "www.size.test", &[version, "-H", &big]);
        assert_eq!(status, 431, "{version}");
        assert!(
            head.contains("server: parapet") && head.contains("cf-ray: "),
            "{version}: {head}"
        );
    }
    let huge_body = "POST / HTTP/1.1\r\nHost: www.size.test\r\nContent-Length: 200000000\r\n\r\n";
    assert_eq!(raw(port, huge_body.as_bytes()), 413);
    assert!(
        origin.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing oversized reached the origin"
    );
    // Expect: 100-continue is honoured: the body follows and reaches the origin.
    let (status, _, _) = curl(
        port,
        "www.size.test",
        &["-H", "Expect: 100-continue", "--data-binary", "hello-body"],
    );
    assert_eq!(status, 200);
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got the POST");
    assert!(
        seen.to_ascii_lowercase().contains("content-length: 10"),
        "{seen}"
    );
}

#[test]
fn a_proxied_cname_to_another_provider_is_resolved_through_the_resolver() {
    let provider = parapet_testkit::other_provider();
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
        "--resolver",
        &provider.addr.to_string(),
    ]));
    let zone = node.create_zone("customer.test");
    node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(json!({"type": "CNAME", "name": "www", "content": "app.provider.test", "proxied": true})));
    node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(json!({"type": "CNAME", "name": "gone", "content": "missing.provider.test", "proxied": true})));
    // A delegated name: its glue is not an answer, and names below it are not proxied here.
    for body in [
        json!({"type": "NS", "name": "sub", "content": "ns.sub.customer.test"}),
        json!({"type": "A", "name": "ns.sub", "content": "127.0.0.2"}),
        json!({"type": "A", "name": "x.sub", "content": "127.0.0.2", "proxied": true}),
        json!({"type": "CNAME", "name": "viasub", "content": "ns.sub.customer.test", "proxied": true}),
    ] {
        node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body));
    }
    parapet_testkit::eventually(
        Duration::from_secs(10),
        "the edge to reach the provider's origin",
        || curl(port, "www.customer.test", &[]).0 == 200,
    );
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got the request");
    assert!(
        seen.to_ascii_lowercase()
            .contains("host: www.customer.test"),
        "{seen}"
    );
    let (status, _, body) = curl(port, "gone.customer.test", &[]);
    assert_eq!(status, 530);
    assert!(body.contains("Error 1016"), "{body}");
    // The delegated target is asked of the resolver (which has no such name), not read from
    // the glue; a proxied record below the delegation is not served.
    let (status, _, body) = curl(port, "viasub.customer.test", &[]);
    assert_eq!(status, 530);
    assert!(body.contains("Error 1016"), "{body}");
    let (status, _, body) = curl(port, "x.sub.customer.test", &[]);
    assert_eq!(status, 409);
    assert!(
        body.contains("Error 1000") || body.contains("Error 1018"),
        "{body}"
    );
    assert!(
        origin.try_recv().is_err(),
        "nothing below the delegation reached the origin"
    );
}

#[test]
fn a_refusing_origin_address_fails_over_to_the_next() {
    let port = free_port();
    let origin = start_origin("127.0.0.20", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("failover.test");
    // Two origins for one name; 127.0.0.10 refuses connections.
    node.proxied_a(&zone, "www", "127.0.0.10");
    node.proxied_a(&zone, "www", "127.0.0.20");
    parapet_testkit::eventually(Duration::from_secs(5), "both origins routed", || {
        curl(port, "www.failover.test", &["-X", "POST"]).0 == 200
    });
    // Half the requests start at the refusing address: nothing was sent, so even a POST moves
    // on to the next one (and the refusing address rests meanwhile).
    for _ in 0..20 {
        let (status, head, _) = curl(port, "www.failover.test", &["-X", "POST"]);
        assert_eq!(status, 200, "{head}");
        assert!(origin.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}

/// A listener on `ip:port` with a tiny backlog, filled up and never accepting: new connections
/// to it hang. Kept while the pair lives.
fn hanging_listener(ip: [u8; 4], port: u16) -> (socket2::Socket, Vec<socket2::Socket>) {
    let addr = std::net::SocketAddr::from((ip, port));
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.bind(&addr.into()).expect("bind origin");
    socket.listen(0).expect("listen");
    let fillers: Vec<_> = (0..4)
        .filter_map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
            s.set_nonblocking(true).ok()?;
            let _ = s.connect(&addr.into());
            Some(s)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    (socket, fillers)
}

#[test]
fn an_origin_that_never_accepts_gets_a_522() {
    let port = free_port();
    let hanging = hanging_listener([127, 0, 0, 2], port);
    let node = edge_node(port, "edge_connect_timeout = \"1s\"\n");
    let zone = node.create_zone("hang.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(15), "a 522 page", || {
        let (status, _, body) = curl(port, "www.hang.test", &[]);
        status == 522 && body.contains("Error 522")
    });
    drop(hanging);
}

/// Origin requests each of `origins` received since last asked.
fn received(origins: &[std::sync::mpsc::Receiver<String>]) -> Vec<usize> {
    origins.iter().map(|o| o.try_iter().count()).collect()
}

#[test]
fn requests_are_spread_over_a_names_origins() {
    let port = free_port();
    let ips = ["127.0.0.21", "127.0.0.22", "127.0.0.23"];
    let origins: Vec<_> = ips.iter().map(|ip| start_origin(ip, port)).collect();
    let node = edge_node(port, "");
    let zone = node.create_zone("spread.test");
    for ip in ips {
        node.proxied_a(&zone, "www", ip);
    }
    let mut seen = [0; 3];
    parapet_testkit::eventually(Duration::from_secs(10), "all three origins routed", || {
        curl(port, "www.spread.test", &[]);
        for (total, n) in seen.iter_mut().zip(received(&origins)) {
            *total += n;
        }
        seen.iter().all(|&n| n > 0)
    });
    // Each request starts at a random address, so every origin gets about a third of the
    // requests (fewer than a tenth is over four standard deviations off): GETs through the
    // edge's own pass-through, DELETEs through the engine.
    let delete: &[&str] = &["-X", "DELETE"];
    for (method, args, requests, least) in [("GET", &[][..], 60, 6), ("DELETE", delete, 45, 4)] {
        for _ in 0..requests {
            let (status, head, _) = curl(port, "www.spread.test", args);
            assert_eq!(status, 200, "{head}");
        }
        let counts = received(&origins);
        assert_eq!(
            counts.iter().sum::<usize>(),
            requests,
            "{method}: {counts:?}"
        );
        assert!(counts.iter().all(|&n| n >= least), "{method}: {counts:?}");
    }
}

#[test]
fn an_origin_that_does_not_answer_rests_while_the_others_serve() {
    let port = free_port();
    let hanging = hanging_listener([127, 0, 0, 24], port);
    let live = start_origin("127.0.0.25", port);
    let node = edge_node(port, "edge_connect_timeout = \"1s\"\nedge_workers = 2\n");
    let zone = node.create_zone("rest.test");
    node.proxied_a(&zone, "www", "127.0.0.24");
    node.proxied_a(&zone, "www", "127.0.0.25");
    parapet_testkit::eventually(Duration::from_secs(10), "both origins routed", || {
        curl(port, "www.rest.test", &[]).0 == 200 && live.try_iter().count() > 0
    });
    // Half the requests start at the silent address. It costs its connect timeout at most once
    // per worker thread (two here), then rests, tried after the live one.
    let mut slow = 0;
    for _ in 0..20 {
        for args in [&[][..], &["-X", "DELETE"]] {
            let started = std::time::Instant::now();
            let (status, head, _) = curl(port, "www.rest.test", args);
            assert_eq!(status, 200, "{head}");
            if started.elapsed() > Duration::from_millis(800) {
                slow += 1;
            }
        }
    }
    assert!(
        slow <= 4,
        "{slow} of 40 requests waited for the silent origin"
    );
    drop(hanging);
}

/// An edge allowing `limit` connections per client, with `www.{zone}` proxied to an origin on
/// 127.0.0.2 and answering; the node, its HTTP port and the origin's request log.
fn edge_with_client_limit(
    zone: &str,
    limit: u32,
) -> (Node, u16, std::sync::mpsc::Receiver<String>) {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, &format!("edge_max_connections_per_ip = {limit}\n"));
    let id = node.create_zone(zone);
    node.proxied_a(&id, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        curl(port, &format!("www.{zone}"), &[]).0 == 200
    });
    (node, port, origin)
}

#[test]
fn connections_over_the_per_client_limit_are_closed_at_once() {
    let (node, port, _origin) = edge_with_client_limit("limit.test", 3);
    let connect = || std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    // Three kept-alive connections, each answered once (so the edge has accepted them all).
    let held: Vec<_> = (0..3)
        .map(|_| {
            let mut c = connect();
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            c.write_all(b"GET / HTTP/1.1\r\nHost: www.limit.test\r\n\r\n")
                .expect("write");
            let mut buf = [0u8; 12];
            std::io::Read::read_exact(&mut c, &mut buf).expect("answer");
            assert_eq!(&buf, b"HTTP/1.1 200");
            c
        })
        .collect();
    // The fourth is accepted by the kernel and closed by the edge without an answer.
    let mut fourth = connect();
    fourth
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let _ = fourth.write_all(b"GET / HTTP/1.1\r\nHost: www.limit.test\r\n\r\n");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut fourth, &mut buf).unwrap_or(0);
    assert_eq!(
        n,
        0,
        "over the limit: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let metrics = ureq::get(&format!("{}/metrics", node.base))
        .header("Authorization", &format!("Bearer {}", node.token))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("body");
    assert!(
        metrics.contains("parapet_edge_connections_refused_total 1"),
        "{metrics}"
    );
    // The held ones still work, and closing one makes room.
    drop(held);
    parapet_testkit::eventually(Duration::from_secs(5), "room again", || {
        curl(port, "www.limit.test", &[]).0 == 200
    });
}

#[test]
fn silent_kept_alive_connections_are_parked_and_served_when_they_speak_again() {
    let (mut node, port, _origin) = edge_with_client_limit("park.test", 2);
    let ask = |c: &mut std::net::TcpStream| {
        c.write_all(b"GET / HTTP/1.1\r\nHost: www.park.test\r\n\r\n")
            .expect("write");
        // The whole answer: its head, then as many body bytes as it says.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            std::io::Read::read_exact(c, &mut byte).expect("answer");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a length");
        let mut body = vec![0u8; length];
        std::io::Read::read_exact(c, &mut body).expect("body");
    };
    let open = || node.metric("parapet_edge_connections_open");
    let parked = || node.metric("parapet_edge_connections_parked");
    let mut held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            c.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            ask(&mut c);
            c
        })
        .collect();
    for round in 0..2 {
        // Silent long enough to be parked; still open, still counted against the client.
        std::thread::sleep(Duration::from_millis(1500));
        assert_eq!((open(), parked()), (2, 2), "round {round}");
        let mut third = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        third
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let _ = third.write_all(b"GET / HTTP/1.1\r\nHost: www.park.test\r\n\r\n");
        let mut buf = [0u8; 16];
        assert_eq!(
            std::io::Read::read(&mut third, &mut buf).unwrap_or(0),
            0,
            "round {round}: the parked connections hold the client's two slots"
        );
        // Each parked connection's next request is answered.
        for c in &mut held {
            ask(c);
        }
        assert_eq!(parked(), 0, "round {round}: served again");
    }
    // A visitor that closes its parked connection frees its slot and its count.
    std::thread::sleep(Duration::from_millis(1500));
    held.pop();
    parapet_testkit::eventually(Duration::from_secs(5), "closed while parked", || {
        (open(), parked()) == (1, 1)
    });
    assert_eq!(curl(port, "www.park.test", &[]).0, 200);
    // Stopping closes the one still parked, at once: the drain does not wait for it.
    let started = std::time::Instant::now();
    let status = node.terminate();
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "stopped in {:?}",
        started.elapsed()
    );
    let mut buf = [0u8; 16];
    assert_eq!(
        std::io::Read::read(&mut held[0], &mut buf).unwrap_or(0),
        0,
        "closed"
    );
}

#[test]
fn the_edges_own_pages_answer_head_with_their_header_alone() {
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]));
    let zone = node.create_zone("heads.test");
    node.proxied_a(&zone, "www.heads.test", "127.0.0.2");
    node.proxied_a(&zone, "down.heads.test", "127.0.0.3");
    parapet_testkit::eventually(Duration::from_secs(5), "the names routed", || {
        curl(port, "www.heads.test", &[]).0 == 200
    });
    let loops: &[&str] = &["-H", "CDN-Loop: parapet"];
    let engine: &[&str] = &["-H", "If-Match: *"];
    // An unknown host, a loop, and a refusing origin passed by the edge itself and by the
    // engine: over HTTP/2, content after a HEAD answer's header would be a stream error.
    let cases: [(&str, &[&str], u16); 4] = [
        ("unknown.test", &[], 409),
        ("www.heads.test", loops, 508),
        ("down.heads.test", &[], 521),
        ("down.heads.test", engine, 521),
    ];
    for protocol in ["--http1.1", "--http2-prior-knowledge"] {
        for (host, extra, want) in cases {
            let args = [&["-I", protocol][..], extra].concat();
            let (status, head, body) = curl(port, host, &args);
            assert_eq!(status, want, "{host} {args:?}\n{head}");
            assert!(head.contains("cf-ray: "), "{head}");
            assert!(body.is_empty(), "{body}");
            // The same page for a GET has its body.
            let get = [&[protocol][..], extra].concat();
            let (status, _, body) = curl(port, host, &get);
            assert_eq!(status, want, "{host} {get:?}");
            assert!(!body.is_empty(), "{host} {get:?}");
        }
    }
}

#[test]
fn access_log_lines_are_bare_json_one_per_request_on_every_path() {
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr");
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "auto",
                "--http-listen",
                &format!("127.0.0.1:{port}"),
            ])
            .log("warn,parapet::access=info")
            .stderr_to(&log),
    );
    let zone = node.create_zone("logs.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.logs.test", &[]).0 == 200
    });
    let get = |path: &str, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--resolve"])
            .arg(format!("www.logs.test:{port}:127.0.0.1"))
            .args(extra)
            .arg(format!("http://www.logs.test:{port}{path}"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    // A miss and a POST (the engine), a hit and a pass (the edge's own), HTTP/2, a hostile path.
    let requests: [(&str, &[&str]); 6] = [
        ("/logo.png", &[]),
        ("/logo.png", &[]),
        ("/page", &[]),
        ("/form", &["-d", "x=1"]),
        ("/page", &["--http2-prior-knowledge"]),
        ("/%22quoted%1b%5b31m", &[]),
    ];
    for (path, extra) in requests {
        assert_eq!(get(path, extra), "200", "{path}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).expect("log");
    assert!(!text.contains('\u{1b}'), "no colour codes: {text}");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("\"ray\""))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    // The routing probe's requests, then the six.
    let ours: Vec<&serde_json::Value> = lines.iter().rev().take(6).rev().collect();
    let seen: Vec<(&str, &str, &str)> = ours
        .iter()
        .map(|l| {
            (
                l["method"].as_str().unwrap_or(""),
                l["path"].as_str().unwrap_or(""),
                l["cache"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("GET", "/logo.png", "MISS"),
            ("GET", "/logo.png", "HIT"),
            ("GET", "/page", "DYNAMIC"),
            ("POST", "/form", "DYNAMIC"),
            ("GET", "/page", "DYNAMIC"),
            ("GET", "/%22quoted%1b%5b31m", "DYNAMIC"),
        ],
        "{text}"
    );
    for line in &ours {
        for field in [
            "time",
            "ray",
            "zone",
            "host",
            "status",
            "bytes",
            "client_ip",
        ] {
            assert!(!line[field].is_null(), "{field}: {line}");
        }
        assert_eq!(line["host"], "www.logs.test", "{line}");
        // The origin was asked for all but the hit.
        let asked = line["cache"] != "HIT";
        assert_eq!(line["origin_ms"].is_number(), asked, "{line}");
    }
    // A host no zone routes: the line says the host asked for, and no zone.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Host: nowhere.example",
        ])
        .arg(format!("http://127.0.0.1:{port}/x"))
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "409");
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).expect("log");
    let last: serde_json::Value = text
        .lines()
        .rev()
        .find(|l| l.contains("\"ray\""))
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .expect("a line");
    assert_eq!(last["host"], "nowhere.example", "{last}");
    assert!(last["zone"].is_null(), "{last}");
    assert_eq!(last["status"], 409, "{last}");
    // Headers the HTTP engine cannot parse (a folded line, a space in a name): refused with
    // 400 before any phase of the proxy runs, and still one line each, and counted.
    let unparsable = [
        "GET /folded HTTP/1.1\r\nHost: www.logs.test\r\nX-Folded: a\r\n b\r\n\r\n",
        "GET /named HTTP/1.1\r\nHost: www.logs.test\r\nBad Name: x\r\n\r\n",
    ];
    for request in unparsable {
        assert_eq!(raw(port, request.as_bytes()), 400, "{request}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).expect("log");
    let refused: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| l.contains("\"ray\""))
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .filter(|l: &serde_json::Value| l["status"] == 400)
        .collect();
    assert_eq!(refused.len(), 2, "{text}");
    for line in &refused {
        assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
        assert_eq!(line["ray"].as_str().map_or(0, str::len), 20, "{line}");
        assert!(line["zone"].is_null(), "{line}");
    }
    let metrics = || {
        let out = Command::new("curl")
            .args(["-s", &format!("{}/metrics", node.base)])
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let counted = metrics();
    assert!(
        counted.contains("parapet_edge_requests_total{zone=\"\",status=\"400\"} 2"),
        "{counted}"
    );
    // CONNECT, which the engine answers with 405 itself, is logged and counted as 405.
    assert_eq!(
        raw(
            port,
            b"CONNECT www.logs.test:443 HTTP/1.1\r\nHost: www.logs.test:443\r\n\r\n"
        ),
        405
    );
    std::thread::sleep(Duration::from_millis(300));
    let text = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        text.lines()
            .filter(|l| l.contains("\"ray\"") && l.contains("\"status\":405"))
            .count(),
        1,
        "{text}"
    );
    let counted = metrics();
    assert!(
        counted.contains("parapet_edge_requests_total{zone=\"\",status=\"405\"} 1"),
        "{counted}"
    );
}

#[test]
fn origins_at_the_edges_own_or_a_denied_address_are_refused() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    // Denied here: 127.0.0.3 to 127.0.0.5 (on loopback, so that a regression reaches nothing
    // but this machine; the default list is checked without a network). An outside provider
    // resolves a name into them.
    let provider = parapet_testkit::Knot::start(
        "rebind.test",
        "$ORIGIN rebind.test.\n$TTL 300\n@ SOA ns h 1 3600 600 86400 300\n@ NS ns\nns A 127.0.0.1\nmeta A 127.0.0.5\n",
    );
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "auto",
                "--http-listen",
                &format!("127.0.0.1:{port}"),
                "--edge-ipv4",
                "127.0.0.9",
                "--resolver",
                &provider.addr.to_string(),
            ])
            .config("origin_denied_networks = [\"127.0.0.3\", \"127.0.0.4/31\"]\n"),
    );
    let zone = node.create_zone("guard.test");
    node.proxied_a(&zone, "meta", "127.0.0.4");
    node.proxied_a(&zone, "self", "127.0.0.9");
    node.proxied_a(&zone, "mixed", "127.0.0.3");
    node.proxied_a(&zone, "mixed", "127.0.0.2");
    node.proxied_a(&zone, "ruled", "127.0.0.2");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "CNAME", "name": "rebound", "content": "meta.rebind.test", "proxied": true})),
    );
    node.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_origin/entrypoint"),
        Some(json!({"rules": [{
            "expression": "http.host eq \"ruled.guard.test\"",
            "action": "route",
            "action_parameters": {"origin": {"host": "127.0.0.3"}}
        }]})),
    );
    parapet_testkit::eventually(Duration::from_secs(10), "the zone routed", || {
        curl(port, "mixed.guard.test", &[]).0 == 200
    });
    // Denied addresses are skipped: every request reaches the allowed one.
    for _ in 0..6 {
        assert_eq!(curl(port, "mixed.guard.test", &[]).0, 200);
    }
    for (host, code) in [
        ("meta.guard.test", "1002"),
        ("self.guard.test", "1000"),
        ("ruled.guard.test", "1002"),
        ("rebound.guard.test", "1002"),
    ] {
        let (status, head, body) = curl(port, host, &[]);
        assert_eq!(status, 403, "{host}: {head}");
        assert!(body.contains(&format!("Error {code}")), "{host}: {body}");
        let (_, _, json) = curl(port, host, &["-H", "Accept: application/json"]);
        let json: serde_json::Value = serde_json::from_str(&json).expect("json");
        assert_eq!(json["errors"][0]["code"].to_string(), code, "{host}");
    }
    let mut reached = 0;
    while origin.try_recv().is_ok() {
        reached += 1;
    }
    assert_eq!(reached, 7, "only the allowed address was asked");
}

#[test]
fn a_request_the_origin_took_and_never_answered_is_not_sent_to_the_next_address() {
    let port = free_port();
    start_silent_origin("127.0.0.26", port);
    let live = start_origin("127.0.0.27", port);
    let node = edge_node(port, "edge_read_timeout = \"1s\"\n");
    let zone = node.create_zone("once.test");
    node.proxied_a(&zone, "www", "127.0.0.26");
    node.proxied_a(&zone, "www", "127.0.0.27");
    // Each try picks one of the two at random, and one at the silent origin takes the 1 s read
    // timeout: 30 s leave room for a long run of those on a busy machine.
    parapet_testkit::eventually(Duration::from_secs(30), "the live origin routed", || {
        curl(port, "www.once.test", &[]).0 == 200
    });
    while live.try_recv().is_ok() {}
    // Requests starting at the silent address time out there (524), over both the engine's
    // path (a DELETE) and the edge's own (GET); the live origin never gets them too.
    let mut timed_out = 0;
    for _ in 0..4 {
        for args in [&[][..], &["-X", "DELETE"]] {
            let (status, head, body) = curl(port, "www.once.test", args);
            match status {
                200 => assert!(live.recv_timeout(Duration::from_secs(5)).is_ok()),
                524 => {
                    assert!(body.contains("Error 524"), "{body}");
                    timed_out += 1;
                }
                _ => panic!("{head}"),
            }
        }
    }
    assert!(timed_out >= 2, "{timed_out} of 8 requests timed out");
    assert!(
        live.try_recv().is_err(),
        "a timed-out request reached the live origin"
    );
}

#[test]
fn an_edge_address_given_alone_listens_on_cloudflares_http_ports() {
    // 127.0.0.61 and .62 are this test's own: Cloudflare's ports on them are free. Port 80
    // takes the right to bind ports below 1024 (root, as CI runs).
    if let Err(e) = TcpListener::bind("127.0.0.61:80") {
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
        eprintln!("skipped: binding port 80 is not allowed here ({e})");
        return;
    }
    let origin = start_origin("127.0.0.62", 2052);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        "127.0.0.61",
    ]));
    let zone = node.create_zone("ports.test");
    let body = json!({"type": "A", "name": "www", "content": "127.0.0.62", "proxied": true});
    node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body));
    let status = |port: u16| {
        let resolve = format!("www.ports.test:{port}:127.0.0.61");
        curl_code(
            &["--resolve", &resolve],
            &format!("http://www.ports.test:{port}/"),
            10,
        )
    };
    parapet_testkit::eventually(
        Duration::from_secs(5),
        "the edge to route the new name on port 2052",
        || status(2052) == "200",
    );
    assert!(origin.try_recv().is_ok(), "the origin on 2052 was reached");
    // Every other port of the set is listened on: with no origin there, the edge answers 521.
    for port in [80, 8080, 8880, 2082, 2086, 2095] {
        assert_eq!(status(port), "521", "port {port}");
    }
    assert_eq!(status(2053), "000", "an HTTPS port is not an HTTP listener");
}

#[test]
fn the_origin_is_sent_the_host_the_answer_is_keyed_on() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("hosts.test");
    let body = json!({"type": "A", "name": "www", "content": "127.0.0.2", "proxied": true});
    node.ok("POST", &format!("/zones/{zone}/dns_records"), Some(body));
    let send = |host: &str, extra: &[&str]| {
        let host = format!("Host: {host}");
        let args = [&["-H", host.as_str()][..], extra].concat();
        curl_code(&args, &format!("http://127.0.0.1:{port}/page"), 10)
    };
    parapet_testkit::eventually(Duration::from_secs(5), "the name routed", || {
        send("www.hosts.test", &[]) == "200"
    });
    while origin.try_recv().is_ok() {}
    let canonical = format!("www.hosts.test:{port}");
    for (given, extra, want) in [
        // A port other than the one the visitor came to, case and a final dot: the origin gets
        // the name the answer is keyed on, with the visitor's port.
        ("WWW.Hosts.Test.:1337", &[][..], canonical.as_str()),
        (
            "www.hosts.test:1337",
            &["-X", "POST", "-d", "x"][..],
            canonical.as_str(),
        ),
        (
            "www.hosts.test:1337",
            &["--http2-prior-knowledge"][..],
            canonical.as_str(),
        ),
        ("www.hosts.test.", &[][..], "www.hosts.test"),
        // The scheme's own port stays (an edge behind a port mapping is reached on it).
        ("www.hosts.test:80", &[][..], "www.hosts.test:80"),
        // What is so already goes as it came.
        (canonical.as_str(), &[][..], canonical.as_str()),
        ("www.hosts.test", &[][..], "www.hosts.test"),
    ] {
        assert_eq!(send(given, extra), "200", "{given} {extra:?}");
        let seen = origin
            .recv_timeout(Duration::from_secs(5))
            .expect("origin got the request")
            .to_ascii_lowercase();
        let host = seen
            .lines()
            .find_map(|l| l.strip_prefix("host: "))
            .map(str::trim);
        assert_eq!(host, Some(want), "{given} {extra:?}: {seen}");
    }
}

#[test]
fn a_request_pipelined_behind_a_chunked_body_is_answered_in_turn() {
    use std::io::Read;
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("pipe.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.pipe.test", &[]).0 == 200
    });
    while origin.try_recv().is_ok() {}
    for body in [
        "3\r\nabc\r\n0\r\n\r\n",
        "3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n",
    ] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let sent = format!(
            "POST /first HTTP/1.1\r\nHost: www.pipe.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}\
             GET /second HTTP/1.1\r\nHost: www.pipe.test\r\nConnection: close\r\n\r\n"
        );
        s.write_all(sent.as_bytes()).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let got = String::from_utf8_lossy(&got);
        assert_eq!(got.matches("HTTP/1.1 200").count(), 2, "{body:?}: {got}");
        assert!(got.contains("POST /first"), "{got}");
        assert!(got.contains("GET /second"), "{got}");
    }
}

#[test]
fn close_in_a_second_connection_line_closes_the_connection() {
    use std::io::Read;
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("conn.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.conn.test", &[]).0 == 200
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(
        b"GET /p1 HTTP/1.1\r\nHost: www.conn.test\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n\
          GET /p2 HTTP/1.1\r\nHost: www.conn.test\r\n\r\n",
    )
    .expect("write");
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    let _ = s.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got).to_ascii_lowercase();
    assert_eq!(got.matches("http/1.1 200").count(), 1, "{got}");
    assert!(got.contains("connection: close"), "{got}");
    assert!(started.elapsed() < Duration::from_secs(5), "closed at once");
}

/// Everything `request` gets back on one connection, until the edge closes it or 3 s pass.
fn raw_all(port: u16, request: &[u8]) -> String {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .expect("timeout");
    s.write_all(request).expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).to_ascii_lowercase()
}

#[test]
fn requests_other_parsers_could_read_otherwise_are_refused_or_made_plain() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = edge_node(port, "");
    let zone = node.create_zone("lax.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.lax.test", &[]).0 == 200
    });
    while origin.try_recv().is_ok() {}
    let host = "Host: www.lax.test\r\n";
    let seen = || -> Vec<String> { origin.try_iter().collect() };

    // Chunked bodies a laxer reader (or a proxy before the edge) would end elsewhere: an empty
    // size line, a bare LF in an extension, a trailer that is a request line. The request
    // behind them never reaches the origin, and the visitor gets no answer from it.
    for body in [
        "5\r\nhello\r\n\r\nXXXX\r\n0\r\n\r\n",
        "5;a\nb\r\nhello\r\n0\r\n\r\n",
        "5\r\nhello\r\n0\r\nGET /inner HTTP/1.1\r\n\r\n",
    ] {
        let got = raw_all(
            port,
            format!(
                "POST /first HTTP/1.1\r\n{host}Transfer-Encoding: chunked\r\n\r\n{body}\
                 GET /smuggled HTTP/1.1\r\n{host}\r\n"
            )
            .as_bytes(),
        );
        assert!(!got.contains("http/1.1 200"), "{body:?}: {got}");
        std::thread::sleep(Duration::from_millis(300));
        let heads = seen();
        assert!(
            !heads.iter().any(|h| h.contains("/smuggled")),
            "{body:?}: {heads:?}"
        );
    }

    // `Upgrade` without `Connection: upgrade` is no upgrade: the origin is asked an ordinary
    // request (no tunnel), and the next request on the connection is the edge's again.
    let got = raw_all(
        port,
        format!(
            "GET /up HTTP/1.1\r\n{host}Upgrade: websocket\r\n\r\n\
             GET /after HTTP/1.1\r\n{host}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(got.matches("http/1.1 200").count(), 2, "{got}");
    std::thread::sleep(Duration::from_millis(300));
    let heads = seen();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        let head = head.to_ascii_lowercase();
        assert!(
            !head.contains("upgrade") && head.contains("cf-connecting-ip: "),
            "{head}"
        );
    }

    // A Host that is no host and port is a 400 (RFC 9112 §3.2), not an unknown host.
    for bad in [
        "www.lax.test/x",
        "www.lax .test",
        "www.lax.test:abc",
        "a, b",
    ] {
        let head = raw_head(
            port,
            format!("GET / HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(head.starts_with("http/1.1 400"), "{bad}: {head}");
    }
    // A URL over 16 KiB is a 414, even in a header over the 431 limit.
    let long = format!("GET /{} HTTP/1.1\r\n{host}\r\n", "a".repeat(40 * 1024));
    assert_eq!(raw(port, long.as_bytes()), 414);

    // HTTP/1.2 to 1.9 are read as 1.1 (RFC 9112 §2.3); a later major version is a 505.
    let _ = seen();
    let got = raw_all(
        port,
        format!(
            "GET /v12 HTTP/1.2\r\n{host}\r\nGET /v19 HTTP/1.9\r\n{host}Connection: close\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(got.matches("http/1.1 200").count(), 2, "{got}");
    for version in ["HTTP/2.0", "HTTP/3.0"] {
        let head = raw_head(port, format!("GET / {version}\r\n{host}\r\n").as_bytes());
        assert!(
            head.starts_with("http/1.1 505") && head.contains("server: parapet"),
            "{version}: {head}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let heads = seen();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(
        heads.iter().all(|h| h.contains(" HTTP/1.1\r\n")),
        "{heads:?}"
    );

    // A GET with a body is answered for it, and its answer is not stored for plain GETs.
    let _ = seen();
    let got = raw_all(
        port,
        format!("GET /k.css HTTP/1.1\r\n{host}Content-Length: 5\r\nConnection: close\r\n\r\nhello")
            .as_bytes(),
    );
    assert!(got.starts_with("http/1.1 200"), "{got}");
    for _ in 0..2 {
        let got = raw_all(
            port,
            format!("GET /k.css HTTP/1.1\r\n{host}Connection: close\r\n\r\n").as_bytes(),
        );
        assert!(got.starts_with("http/1.1 200"), "{got}");
    }
    std::thread::sleep(Duration::from_millis(300));
    // The GET with a body, then the first plain one (a miss); the second is a hit.
    assert_eq!(seen().len(), 2);
}

#[test]
fn an_origins_100_continue_leaves_the_connection_kept_alive() {
    use std::io::Read;
    let port = free_port();
    // An origin that answers `Expect: 100-continue` itself, then reads the body and answers.
    let listener = TcpListener::bind(("127.0.0.2", port)).expect("bind origin");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone");
                let mut reader = BufReader::new(stream);
                while let Some(head) = parapet_testkit::http::read_head(&mut reader) {
                    let head = head.to_ascii_lowercase();
                    if head.contains("expect: 100-continue") {
                        let _ = writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    }
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|n| n.trim().parse::<u64>().ok())
                        .unwrap_or(0);
                    let mut body = Vec::new();
                    let _ = reader.by_ref().take(length).read_to_end(&mut body);
                    let _ = writer.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
            });
        }
    });
    let node = edge_node(port, "");
    let zone = node.create_zone("continue.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "www.continue.test", &[]).0 == 200
    });
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let read_until = |s: &mut std::net::TcpStream, end: &[u8]| {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(end) && s.read(&mut byte).unwrap_or(0) == 1 {
            got.push(byte[0]);
        }
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    };
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: www.continue.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
    )
    .expect("write");
    let interim = read_until(&mut s, b"\r\n\r\n");
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    s.write_all(b"hello").expect("body");
    let last = read_until(&mut s, b"\r\n\r\nok");
    assert!(last.starts_with("http/1.1 200"), "{last}");
    assert!(!last.contains("connection: close"), "{last}");
    s.write_all(b"GET /again HTTP/1.1\r\nHost: www.continue.test\r\n\r\n")
        .expect("next request");
    let again = read_until(&mut s, b"\r\n\r\nok");
    assert!(again.starts_with("http/1.1 200"), "{again}");
}
