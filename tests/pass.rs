//! The edge's own pass-through (GET and HEAD the cache does not keep) against the HTTP engine's:
//! the same request answered by both must look the same to the visitor and to the origin.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

use parapet_testkit::http::lasting_fields;
use parapet_testkit::{Node, NodeOptions, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// An origin on keep-alive connections whose answer depends on the path; it reports each
/// request head it reads.
fn start_origin(ip: &str, port: u16) -> mpsc::Receiver<String> {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || serve(stream, &tx));
        }
    });
    rx
}

fn serve(mut stream: TcpStream, seen: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    for served in 0.. {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let _ = seen.send(head.clone());
        let first = head.lines().next().unwrap_or_default().to_owned();
        let head_only = first.starts_with("HEAD ");
        let path = first.split(' ').nth(1).unwrap_or_default().to_owned();
        if path.starts_with("/second-fails") && served > 0 {
            // A kept connection the origin gave up on: it reads the request and hangs up.
            return;
        }
        let page = "<html><body>".to_owned() + &"a page of some length ".repeat(60) + "</body>";
        let body_of = |body: &str| {
            if head_only {
                String::new()
            } else {
                body.to_owned()
            }
        };
        let answer = if path.starts_with("/chunked") {
            let body = body_of(&page);
            let mut out = String::from(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n",
            );
            if !head_only {
                for piece in body.as_bytes().chunks(500) {
                    out.push_str(&format!("{:x}\r\n", piece.len()));
                    out.push_str(std::str::from_utf8(piece).unwrap_or_default());
                    out.push_str("\r\n");
                }
                out.push_str("0\r\n\r\n");
            }
            out
        } else if path.starts_with("/close") {
            // Framed by the close: no length, no chunks.
            let out = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n{}",
                body_of("until the end")
            );
            let _ = stream.write_all(out.as_bytes());
            return;
        } else if path.starts_with("/coded.png") {
            // A transfer coding beside a length: the body ends with the close, and the bytes
            // after the (ignored) length must never read as a second answer.
            let out = "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: no-store\r\nTransfer-Encoding: gzip\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nX-Smuggled: 1\r\nContent-Length: 0\r\n\r\n";
            let _ = stream.write_all(out.as_bytes());
            return;
        } else if path.starts_with("/cut") {
            // A chunked body cut in the middle of a chunk: nothing but the framing says it is
            // short.
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n64\r\nonly this",
            );
            return;
        } else if path.starts_with("/slow") {
            // An answer that comes after the visitor has given up.
            std::thread::sleep(Duration::from_secs(5));
            "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate".to_owned()
        } else if path.starts_with("/blob") {
            // Not a type the edge compresses.
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nETag: \"b1\"\r\nContent-Length: 2000\r\n\r\n{}",
                body_of(&"b".repeat(2000))
            )
        } else if path.starts_with("/failing") {
            // Not a status the edge compresses.
            let body = body_of(&page);
            format!(
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                if head_only { page.len() } else { body.len() }
            )
        } else if path.starts_with("/empty") {
            "HTTP/1.1 204 No Content\r\nX-Note: nothing\r\n\r\n".to_owned()
        } else if path.starts_with("/hints") {
            format!(
                "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\nX-Backend: 127.0.0.2\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\n{}",
                body_of("hints")
            )
        } else if path.starts_with("/cookies") {
            // One cookie names the origin's address: every cookie goes (as the engine's filter).
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: a=1\r\nSet-Cookie: node=127.0.0.2\r\nContent-Length: 7\r\n\r\n{}",
                body_of("cookies")
            )
        } else if let Some(which) = ["/learn.png", "/relearn.png"]
            .iter()
            .position(|p| path.starts_with(p))
        {
            // Not storable at first; then storable once the cookie naming the origin is gone
            // (one URL for HTTP/1.1 visitors, one for HTTP/2 ones).
            use std::sync::atomic::{AtomicUsize, Ordering};
            static ASKED: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];
            let policy = if ASKED[which].fetch_add(1, Ordering::SeqCst) == 0 {
                "Cache-Control: no-store\r\n"
            } else {
                "Cache-Control: public, max-age=60\r\nSet-Cookie: node=127.0.0.2\r\n"
            };
            let name = ["learn", "relearn"][which];
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\n{policy}Content-Length: {}\r\n\r\n{}",
                name.len(),
                body_of(name)
            )
        } else if path.starts_with("/nostore.css") {
            // Compressible, and never stored.
            let body = body_of(&"p { margin: 0 } ".repeat(40));
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/css\r\nCache-Control: no-store\r\nContent-Length: {}\r\n\r\n{body}",
                if head_only { 640 } else { body.len() }
            )
        } else if path.starts_with("/nostore") {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: no-store\r\nContent-Length: 9\r\nKeep-Alive: timeout=5\r\nX-Origin: 127.0.0.2\r\n\r\n{}",
                body_of("not kept!")
            )
        } else {
            let body = format!("{path} {}", page);
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nETag: \"p1\"\r\nSet-Cookie: id=1\r\nContent-Length: {}\r\n\r\n{}",
                body.len(),
                body_of(&body)
            )
        };
        if stream.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

/// A request through the edge: status, lowercase head, body (raw bytes, lossy).
fn fetch(port: u16, host: &str, path: &str, extra: &[&str]) -> (u16, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    // Informational responses come first; the final one is the last head.
    let mut rest = text.as_str();
    let (mut head, mut body) = ("", "");
    while let Some((h, b)) = rest.split_once("\r\n\r\n") {
        (head, body) = (h, b);
        if !h.starts_with("HTTP/1.1 1") && !h.starts_with("HTTP/2 1") {
            break;
        }
        rest = b;
    }
    let head = head.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, body.to_owned())
}

fn metric(node: &Node, name: &str) -> u64 {
    node.metric(name)
}

/// The counter of direct passes, once it has reached `want` (or what it is after 3 s).
fn passes_reach(node: &Node, want: u64) -> u64 {
    let name = "parapet_edge_direct_passes_total";
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    loop {
        let now = metric(node, name);
        if now >= want || std::time::Instant::now() > deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The origin's view of a request, without what differs between any two (the ray) and the
/// field that sent it to the engine.
fn origin_view(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .lines()
        .map(|l| l.to_ascii_lowercase())
        .filter(|l| !l.starts_with("cf-ray:") && !l.starts_with("if-match:"))
        .collect();
    lines.sort();
    lines
}

fn drain(rx: &mpsc::Receiver<String>) -> Vec<String> {
    let mut heads = Vec::new();
    if let Ok(head) = rx.recv_timeout(Duration::from_millis(300)) {
        heads.push(head);
        // Anything more (a retried request) comes within a moment.
        while let Ok(more) = rx.recv_timeout(Duration::from_millis(30)) {
            heads.push(more);
        }
    }
    heads
}

/// The same request passed directly, then by the engine (a precondition sends it there):
/// the visitor gets the same answer and the origin the same request. The direct answer's head
/// and what the origin got.
fn direct_then_engine(
    node: &Node,
    origin: &mpsc::Receiver<String>,
    port: u16,
    (host, path): (&str, &str),
    extra: &[&str],
) -> (String, Vec<String>) {
    let before = metric(node, "parapet_edge_direct_passes_total");
    let (status, head, body) = fetch(port, host, path, extra);
    assert_eq!(
        passes_reach(node, before + 1),
        before + 1,
        "{path} {extra:?}: passed directly\n{head}"
    );
    let seen = drain(origin);
    let engine = [extra, &["-H", "If-Match: *"]].concat();
    let (status2, head2, body2) = fetch(port, host, path, &engine);
    let seen2 = drain(origin);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        metric(node, "parapet_edge_direct_passes_total"),
        before + 1,
        "{path} {extra:?}: by the engine"
    );
    assert_eq!(status, status2, "{path} {extra:?}\n{head}\n{head2}");
    assert_eq!(
        lasting_fields(&head),
        lasting_fields(&head2),
        "{path} {extra:?}"
    );
    assert_eq!(body, body2, "{path} {extra:?}");
    assert_eq!(seen.len(), 1, "{path} {extra:?}: {seen:?}");
    assert_eq!(
        seen.iter().map(|h| origin_view(h)).collect::<Vec<_>>(),
        seen2.iter().map(|h| origin_view(h)).collect::<Vec<_>>(),
        "{path} {extra:?}: what the origin got"
    );
    (head, seen)
}

#[test]
fn passes_to_the_origin_are_answered_as_the_engine_answers_them() {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let node = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]));
    let zone = node.create_zone("pass.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "down", "content": "127.0.0.3", "proxied": true})),
    );
    let host = "www.pass.test";
    parapet_testkit::eventually(Duration::from_secs(5), "the name routed", || {
        fetch(port, host, "/ready.html", &[]).0 == 200
    });
    // A rule's browser TTL on pages the cache is not for.
    node.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
        Some(json!({"rules": [
            {"expression": "starts_with(http.request.uri.path, \"/ttl\")",
             "action": "set_cache_settings",
             "action_parameters": {"browser_ttl": {"mode": "override_origin", "default": 30}}}
        ]})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "the rule in force", || {
        fetch(port, host, "/ttl", &[])
            .1
            .contains("cache-control: max-age=30")
    });
    // The first answer for an image the cache may keep says no-store: from then on it passes.
    fetch(port, host, "/nostore.png", &[]);
    fetch(port, host, "/nostore.css", &[]);
    while origin.try_recv().is_ok() {}

    let codings: [&[&str]; 8] = [
        &[],
        // Credentials for this hop are never the origin's.
        &["-H", "Proxy-Authorization: Basic cHJveHk6c2VjcmV0"],
        &["-H", "Accept-Encoding: gzip"],
        &["-H", "Accept-Encoding: br, gzip, zstd"],
        &["-I"],
        &[
            "-H",
            "X-Forwarded-For: 198.51.100.7",
            "-H",
            "Connection: keep-alive, X-Secret",
            "-H",
            "X-Secret: hop",
        ],
        // A coding the visitor takes back for this hop is not asked of the origin.
        &[
            "-H",
            "Connection: accept-encoding",
            "-H",
            "Accept-Encoding: zstd, br",
        ],
        // What only the edge may say about the visitor is its own, whatever the visitor says.
        &[
            "-H",
            "CF-Connecting-IP: 203.0.113.9",
            "-H",
            "X-Forwarded-For: 198.51.100.7",
            "-H",
            "X-Forwarded-For: 198.51.100.8",
            "-H",
            "CF-Ray: fake",
            "-H",
            "X-Forwarded-Proto: https",
            // Underscore spellings servers read as the same field, and Cloudflare's fields
            // about the client that this edge does not write.
            "-H",
            "CF_Connecting_IP: 203.0.113.9",
            "-H",
            "X_Forwarded_Proto: https",
            "-H",
            "CF-IPCountry: ZZ",
        ],
    ];
    let paths = [
        "/page.html",
        "/chunked.html",
        "/close.txt",
        "/empty",
        "/hints",
        "/nostore.png",
        "/nostore.css",
        "/ttl",
        "/cookies",
        "/blob",
        "/failing",
    ];
    for path in paths {
        for extra in codings {
            let (head, seen) = direct_then_engine(&node, &origin, port, (host, path), extra);
            assert!(
                !head.contains("127.0.0.2") && !head.contains("keep-alive: "),
                "{head}"
            );
            let origin_saw = seen[0].to_ascii_lowercase();
            assert!(!origin_saw.contains("x-secret"), "{seen:?}");
            assert!(!origin_saw.contains("proxy-authorization"), "{seen:?}");
            assert!(
                origin_saw.contains("cf-connecting-ip: 127.0.0.1\r\n")
                    && origin_saw.contains("x-forwarded-proto: http\r\n")
                    && !origin_saw.contains("203.0.113.9")
                    && !origin_saw.contains("fake")
                    && !origin_saw.contains("x_forwarded_proto")
                    && !origin_saw.contains("zz"),
                "{origin_saw}"
            );
            // Every X-Forwarded-For field the visitor sent, as one list, then the visitor.
            if extra.contains(&"X-Forwarded-For: 198.51.100.8") {
                assert!(
                    origin_saw
                        .contains("x-forwarded-for: 198.51.100.7, 198.51.100.8, 127.0.0.1\r\n"),
                    "{origin_saw}"
                );
            }
        }
    }

    // A URL remembered as uncacheable is learnt storable from the answer as the engine's filters
    // leave it (the cookie naming the origin's address is not part of it).
    let learn = |want: &str| {
        let (status, head, _) = fetch(port, host, "/learn.png", &[]);
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains(&format!("cf-cache-status: {want}")),
            "{want}: {head}"
        );
        assert!(!head.contains("set-cookie"), "{head}");
    };
    fetch(port, host, "/learn.png", &[]);
    learn("bypass");
    learn("miss");
    learn("hit");

    // Early hints pass on, without the origin's address.
    let hints = |version: &str| {
        let raw = std::process::Command::new("curl")
            .args(["-s", "-i", version, "--max-time", "10", "--resolve"])
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg(format!("http://{host}:{port}/hints"))
            .output()
            .expect("curl");
        String::from_utf8_lossy(&raw.stdout).to_ascii_lowercase()
    };
    let raw = hints("--http1.1");
    assert!(
        raw.starts_with("http/1.1 103") && raw.contains("link: </style.css>"),
        "{raw}"
    );
    assert!(!raw.contains("127.0.0.2"), "{raw}");
    // An HTTP/1.0 visitor is sent no informational answer (RFC 9110 §15.2): the final one only.
    let raw = hints("--http1.0");
    assert!(
        raw.starts_with("http/1.0 200") || raw.starts_with("http/1.1 200"),
        "{raw}"
    );
    assert!(!raw.contains(" 103"), "{raw}");

    // A `Connection` naming a field the engine protects is the engine's to refuse.
    let before = metric(&node, "parapet_edge_direct_passes_total");
    let (status, head, _) = fetch(port, host, "/page.html", &["-H", "Connection: host"]);
    assert_eq!(status, 400, "{head}");
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(metric(&node, "parapet_edge_direct_passes_total"), before);

    // A kept origin connection that turns out closed is replaced: the visitor never sees it.
    for round in 0..3 {
        let (status, head, body) = fetch(port, host, "/second-fails.html", &[]);
        assert_eq!(status, 200, "round {round}: {head}");
        assert!(body.starts_with("/second-fails.html"), "{body}");
    }

    // A transfer coding other than chunked (here beside a length) is refused on either path,
    // as nginx refuses it: the bytes after the body never read as a second answer.
    for round in 0..3 {
        let (status, head, body) = fetch(port, host, "/coded.png", &[]);
        assert_eq!(status, 520, "round {round}: {head}");
        assert!(!body.to_ascii_lowercase().contains("x-smuggled"), "{body}");
    }

    // An origin that refuses: the page, in the format asked for, as the engine's.
    let down = "down.pass.test";
    for accept in [
        &["-H", "Accept: application/json"][..],
        &["--compressed"],
        &[],
    ] {
        let before = metric(&node, "parapet_edge_direct_passes_total");
        let (status, head, body) = fetch(port, down, "/", accept);
        assert_eq!(passes_reach(&node, before + 1), before + 1);
        let (status2, head2, body2) =
            fetch(port, down, "/", &[accept, &["-H", "If-Match: *"]].concat());
        assert_eq!((status, status2), (521, 521), "{head}\n{body}");
        let ray = |h: &str| {
            h.lines()
                .find_map(|l| l.strip_prefix("cf-ray: "))
                .unwrap_or("")
                .trim()
                .to_owned()
        };
        assert_eq!(
            body.to_ascii_lowercase().replace(&ray(&head), "ray"),
            body2.to_ascii_lowercase().replace(&ray(&head2), "ray")
        );
        // The engine says keep-alive on a connection it then closes; this path says close.
        let fields = |h: &str| {
            let (mut fields, _) = lasting_fields(h);
            fields.retain(|f| !f.starts_with("connection:"));
            fields
        };
        assert_eq!(fields(&head), fields(&head2));
        assert!(head.contains("connection: close"), "{head}");
    }

    // HTTP/2 visitors: the same requests, relayed to the origin over the edge's own pool, and
    // through the engine (a precondition sends them there), look the same both ways.
    let h2 = "--http2-prior-knowledge";
    drain(&origin);
    while origin.try_recv().is_ok() {}
    // (A HEAD with weighted codings is relayed over HTTP/2; other requests with them go to
    // the engine.)
    let weighted: [&[&str]; 1] = [&["-I", "-H", "Accept-Encoding: gzip;q=0, br"]];
    for path in paths {
        for extra in codings
            .iter()
            .chain(&weighted)
            .filter(|e| !e.contains(&"Connection: accept-encoding"))
        {
            let extra = [*extra, &[h2]].concat();
            let (head, seen) = direct_then_engine(&node, &origin, port, (host, path), &extra);
            assert!(head.starts_with("http/2 "), "{head}");
            assert!(!head.contains("127.0.0.2"), "{head}");
            assert!(
                !seen[0].to_ascii_lowercase().contains("proxy-authorization"),
                "{seen:?}"
            );
        }
    }
    let relearn = |want: &str| {
        let (status, head, _) = fetch(port, host, "/relearn.png", &[h2]);
        assert_eq!(status, 200, "{head}");
        assert!(
            head.contains(&format!("cf-cache-status: {want}")),
            "{want}: {head}"
        );
        assert!(!head.contains("set-cookie"), "{head}");
    };
    fetch(port, host, "/relearn.png", &[h2]);
    relearn("bypass");
    relearn("miss");
    relearn("hit");
    for round in 0..3 {
        let before = metric(&node, "parapet_edge_direct_passes_total");
        let (status, head, body) = fetch(port, host, "/second-fails.html", &[h2]);
        assert_eq!(status, 200, "h2 round {round}: {head}");
        assert!(body.starts_with("/second-fails.html"), "{body}");
        assert_eq!(passes_reach(&node, before + 1), before + 1, "relayed");
    }
    // An answer the origin cuts short ends the visitor's stream without its end (a reset:
    // curl's exit 92), both ways.
    for engine in [&[][..], &["-H", "If-Match: *"]] {
        let before = metric(&node, "parapet_edge_direct_passes_total");
        let cut = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", h2, "--resolve"])
            .arg(format!("{host}:{port}:127.0.0.1"))
            .args(engine)
            .arg(format!("http://{host}:{port}/cut"))
            .output()
            .expect("curl");
        assert_eq!(cut.status.code(), Some(92), "{engine:?}: {cut:?}");
        let relayed = u64::from(engine.is_empty());
        assert_eq!(passes_reach(&node, before + relayed), before + relayed);
    }
    // A visitor that gives up while the origin thinks is let go at once, and the origin's
    // connection with it: nothing is left in flight, and the request is not sent again (the
    // engine, with a precondition, took the visitor's leaving for a stale pooled connection).
    for version in [
        &[h2][..],
        &[],
        &["-H", "If-Match: *"],
        &[h2, "-H", "If-Match: *"],
    ] {
        while origin.try_recv().is_ok() {}
        let gave_up = std::time::Instant::now();
        let slow = std::process::Command::new("curl")
            .args(["-s", "--max-time", "0.5"])
            .args(version)
            .arg("--resolve")
            .arg(format!("{host}:{port}:127.0.0.1"))
            .arg(format!("http://{host}:{port}/slow"))
            .output()
            .expect("curl");
        assert_eq!(slow.status.code(), Some(28), "{version:?} {slow:?}");
        parapet_testkit::eventually(Duration::from_secs(3), "nothing in flight", || {
            metric(&node, "parapet_edge_requests_in_flight") == 0
        });
        assert!(gave_up.elapsed() < Duration::from_secs(4), "{version:?}");
        std::thread::sleep(Duration::from_millis(300));
        let asked: Vec<String> = std::iter::from_fn(|| origin.try_recv().ok()).collect();
        assert_eq!(asked.len(), 1, "{version:?}: {asked:?}");
    }
    for accept in [&["-H", "Accept: application/json"][..], &[]] {
        let extra = [accept, &[h2]].concat();
        let before = metric(&node, "parapet_edge_direct_passes_total");
        let (status, head, body) = fetch(port, down, "/", &extra);
        assert_eq!(passes_reach(&node, before + 1), before + 1);
        let (status2, head2, body2) = fetch(
            port,
            down,
            "/",
            &[&extra[..], &["-H", "If-Match: *"]].concat(),
        );
        assert_eq!((status, status2), (521, 521), "{head}\n{body}");
        assert_eq!(lasting_fields(&head), lasting_fields(&head2));
        assert_eq!(body.len(), body2.len());
    }
}
