//! How the edge reaches origins, per zone: origin rules (port, Host header, origin host), zone
//! settings (timeouts, HTTP/2 to the origin), and gRPC end to end over HTTP/2.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parapet_testkit::http::{curl, start_origin, start_silent_origin};
use parapet_testkit::{Node, NodeOptions, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

fn edge_node(port: u16) -> Node {
    Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]))
}

#[test]
fn origin_rules_set_the_port_and_host_header_per_hostname() {
    let port = free_port();
    let rule_port = free_port();
    let plain = start_origin("127.0.0.2", port);
    let ruled = start_origin("127.0.0.2", rule_port);
    let node = edge_node(port);
    let zone = node.create_zone("rules.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    node.proxied_a(&zone, "api", "127.0.0.2");
    let path = format!("/zones/{zone}/rulesets/phases/http_request_origin/entrypoint");

    // Bad rules are refused, every problem listed, and nothing is stored.
    let (status, body) = node.call(
        "PUT",
        &path,
        Some(json!({"rules": [
            {"expression": "http.cookie eq \"x\"", "action": "route",
             "action_parameters": {"origin": {"port": 70000}}},
            {"expression": "http.host eq \"api.rules.test\"", "action": "redirect"}
        ]})),
    );
    assert_eq!(status, 400, "{body}");
    let text = body.to_string();
    for says in [
        "rules[0].expression",
        "rules[0].action_parameters.origin.port",
        "rules[1].action",
    ] {
        assert!(text.contains(says), "{says} missing from {text}");
    }
    assert_eq!(node.call("GET", &path, None).0, 404);

    let put = node.ok(
        "PUT",
        &path,
        Some(json!({"rules": [{
            "expression": "http.host eq \"api.rules.test\"",
            "description": "api on its own port",
            "action": "route",
            "action_parameters": {"host_header": "internal.rules.test", "origin": {"port": rule_port}}
        }]})),
    );
    assert_eq!(put["phase"], "http_request_origin");
    assert_eq!(put["version"], "1");
    let rule_id = put["rules"][0]["id"].as_str().expect("rule id").to_owned();

    parapet_testkit::eventually(
        Duration::from_secs(5),
        "api.rules.test to reach the rule's port",
        || curl(port, "api.rules.test", &[]).0 == 200,
    );
    let seen = ruled
        .recv_timeout(Duration::from_secs(5))
        .expect("the rule's origin got the request")
        .to_ascii_lowercase();
    assert!(seen.contains("host: internal.rules.test\r\n"), "{seen}");

    // Other names of the zone keep the visitor's port and Host.
    let (status, head, _) = curl(port, "www.rules.test", &[]);
    assert_eq!(status, 200, "{head}");
    let seen = plain
        .recv_timeout(Duration::from_secs(5))
        .expect("the plain origin got the request")
        .to_ascii_lowercase();
    assert!(
        seen.contains(&format!("host: www.rules.test:{port}")),
        "{seen}"
    );

    // Disabling the rule (same id) sends api back to the visitor's port.
    let put = node.ok(
        "PUT",
        &path,
        Some(json!({"rules": [{
            "id": rule_id, "enabled": false,
            "expression": "http.host eq \"api.rules.test\"", "action": "route",
            "action_parameters": {"origin": {"port": rule_port}}
        }]})),
    );
    assert_eq!(put["version"], "2");
    assert_eq!(put["rules"][0]["id"], rule_id.as_str());
    while plain.try_recv().is_ok() {}
    parapet_testkit::eventually(
        Duration::from_secs(5),
        "api.rules.test back on the visitor's port",
        || curl(port, "api.rules.test", &[]).0 == 200 && plain.try_recv().is_ok(),
    );
}

#[test]
fn zone_settings_validate_and_a_zone_read_timeout_overrides_the_node_default() {
    let port = free_port();
    start_silent_origin("127.0.0.2", port);
    let node = edge_node(port);
    let zone = node.create_zone("timeouts.test");
    node.proxied_a(&zone, "www", "127.0.0.2");

    let listed = node.ok("GET", &format!("/zones/{zone}/settings"), None);
    let ids: Vec<_> = listed
        .as_array()
        .expect("settings")
        .iter()
        .map(|s| s["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(ids.contains(&"proxy_read_timeout".to_owned()), "{ids:?}");
    let read = node.ok(
        "GET",
        &format!("/zones/{zone}/settings/proxy_read_timeout"),
        None,
    );
    assert_eq!(read["value"], 100, "the node's default: {read}");
    assert_eq!(
        node.call(
            "GET",
            &format!("/zones/{zone}/settings/no_such_thing"),
            None
        )
        .0,
        404
    );
    for bad in [json!("soon"), json!(0), json!(6001)] {
        let (status, body) = node.call(
            "PATCH",
            &format!("/zones/{zone}/settings/proxy_read_timeout"),
            Some(json!({"value": bad})),
        );
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["errors"][0]["code"], 1007, "{body}");
    }
    let set = node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings/proxy_read_timeout"),
        Some(json!({"value": 1})),
    );
    assert_eq!(set["value"], 1);
    assert!(set["modified_on"].is_string(), "{set}");

    // With the zone's 1 s, a silent origin gives a 524 long before the node's 100 s.
    parapet_testkit::eventually(Duration::from_secs(10), "a prompt 524", || {
        let started = Instant::now();
        let (status, _, _) = curl(port, "www.timeouts.test", &[]);
        status == 524 && started.elapsed() < Duration::from_secs(5)
    });
    // An origin that never reads an upload: the writes to it time out as its reads would.
    let dir = tempfile::tempdir().expect("tempdir");
    let upload = dir.path().join("upload");
    std::fs::write(&upload, vec![b'x'; 32 << 20]).expect("upload file");
    let started = Instant::now();
    let (status, _, _) = curl(
        port,
        "www.timeouts.test",
        &[
            "--max-time",
            "30",
            "--data-binary",
            &format!("@{}", upload.display()),
        ],
    );
    assert_eq!(status, 524);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

/// An h2c (prior knowledge) origin: answers each request with what it saw, and gRPC requests
/// as a gRPC server does: the message echoed back, then `grpc-status` trailers.
fn start_h2_origin(ip: &str, port: u16) {
    let listener = std::net::TcpListener::bind((ip, port)).expect("bind h2 origin");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut conn) = h2::server::handshake(socket).await else {
                        return;
                    };
                    while let Some(Ok((request, respond))) = conn.accept().await {
                        tokio::spawn(answer_h2(request, respond));
                    }
                });
            }
        });
    });
}

async fn answer_h2(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
) {
    let grpc = request
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // As gRPC servers do, a call without `te: trailers` is refused.
    if grpc && request.headers().get("te").map(|v| v.as_bytes()) != Some(b"trailers") {
        let refused = http::Response::builder().status(400).body(());
        if let Ok(refused) = refused {
            let _ = respond.send_response(refused, true);
        }
        return;
    }
    let seen = format!(
        "{:?} {} {} host={}",
        request.version(),
        request.method(),
        request.uri().path(),
        request.uri().authority().map_or("", |a| a.as_str())
    );
    let mut body = request.into_body();
    let mut received = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let mut response = http::Response::builder().status(200);
    response = if grpc {
        response.header("content-type", "application/grpc")
    } else {
        response.header("content-type", "text/plain")
    };
    let Ok(response) = response.body(()) else {
        return;
    };
    let Ok(mut send) = respond.send_response(response, false) else {
        return;
    };
    if grpc {
        let _ = send.send_data(Bytes::from(received), false);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        trailers.insert("grpc-message", http::HeaderValue::from_static("echoed"));
        trailers.insert(
            "x-served-by",
            http::HeaderValue::from_static("backend at 127.0.0.2"),
        );
        let _ = send.send_trailers(trailers);
    } else {
        let _ = send.send_data(Bytes::from(seen), true);
    }
}

#[test]
fn http2_to_the_origin_when_the_zone_sets_origin_max_http_version_2() {
    let port = free_port();
    start_h2_origin("127.0.0.2", port);
    let node = edge_node(port);
    let zone = node.create_zone("h2origin.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    let version = node.ok(
        "GET",
        &format!("/zones/{zone}/settings/origin_max_http_version"),
        None,
    );
    assert_eq!(version["value"], "1");
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings"),
        Some(json!({"items": [{"id": "origin_max_http_version", "value": "2"}]})),
    );
    let mut last = String::new();
    parapet_testkit::eventually(Duration::from_secs(5), "an HTTP/2 origin request", || {
        let (status, head, body) = curl(port, "www.h2origin.test", &[]);
        last = format!("{head}{body}");
        status == 200 && body.starts_with("HTTP/2.0 GET /path")
    });
    assert!(last.contains("host=www.h2origin.test"), "{last}");

    // From an HTTP/2 visitor too: a path not in normal form goes as the visitor wrote it, and
    // the authority is the one the answer is keyed on (the port the visitor came to).
    let body = |url: &str, extra: &[&str]| {
        let out = std::process::Command::new("curl")
            .args(["-s", "--max-time", "10", "--http2-prior-knowledge"])
            .args(extra)
            .arg(url)
            .output()
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let resolve = format!("www.h2origin.test:{port}:127.0.0.1");
    let seen = body(
        &format!("http://www.h2origin.test:{port}/a//b/%7Ex.css"),
        &["--path-as-is", "--resolve", &resolve],
    );
    assert!(seen.starts_with("HTTP/2.0 GET /a//b/%7Ex.css "), "{seen}");
    let connect = format!("www.h2origin.test:1337:127.0.0.1:{port}");
    let seen = body(
        "http://www.h2origin.test:1337/other",
        &["--connect-to", &connect],
    );
    assert!(
        seen.ends_with(&format!("host=www.h2origin.test:{port}")),
        "{seen}"
    );
}

/// One gRPC call (unary, as grpc-go frames it) over h2c to the edge.
async fn grpc_call(
    port: u16,
    host: &str,
    message: &[u8],
) -> (u16, Vec<u8>, Option<http::HeaderMap>) {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the edge");
    let (client, conn) = h2::client::handshake(tcp).await.expect("h2 handshake");
    tokio::spawn(conn);
    let mut client = client.ready().await.expect("ready");
    let request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{host}/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("request");
    let (response, mut send) = client.send_request(request, false).expect("send");
    let mut framed = vec![0u8];
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(message);
    send.send_data(Bytes::from(framed), true).expect("data");
    let response = response.await.expect("response");
    let status = response.status().as_u16();
    let mut body = response.into_body();
    let mut received = Vec::new();
    while let Some(Ok(chunk)) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.len());
        received.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await.ok().flatten();
    (status, received, trailers)
}

#[test]
fn grpc_calls_pass_through_with_their_trailers() {
    let port = free_port();
    start_h2_origin("127.0.0.2", port);
    let node = edge_node(port);
    let zone = node.create_zone("grpc.test");
    node.proxied_a(&zone, "rpc", "127.0.0.2");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body, trailers) = rt.block_on(grpc_call(port, "rpc.grpc.test", b"hello"));
        if status == 200 {
            assert_eq!(&body[..5], &[0, 0, 0, 0, 5], "length-prefixed message");
            assert_eq!(&body[5..], b"hello");
            let trailers = trailers.expect("gRPC trailers reach the client");
            assert_eq!(
                trailers.get("grpc-status").map(|v| v.as_bytes()),
                Some(&b"0"[..])
            );
            assert_eq!(
                trailers.get("grpc-message").map(|v| v.as_bytes()),
                Some(&b"echoed"[..])
            );
            // A trailer naming the origin's address does not reach the visitor.
            assert!(trailers.get("x-served-by").is_none(), "{trailers:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC answer (last status {status})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn grpc_web_goes_to_an_http1_origin_as_any_request() {
    let port = free_port();
    let seen = start_origin("127.0.0.2", port);
    let node = edge_node(port);
    let zone = node.create_zone("grpcweb.test");
    node.proxied_a(&zone, "rpc", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        curl(port, "rpc.grpcweb.test", &[]).0 == 200
    });
    while seen.try_recv().is_ok() {}
    let (status, _, _) = curl(
        port,
        "rpc.grpcweb.test",
        &["-d", "", "-H", "Content-Type: application/grpc-web-text"],
    );
    assert_eq!(status, 200);
    let head = seen
        .recv_timeout(Duration::from_secs(2))
        .expect("the origin was asked");
    assert!(head.starts_with("POST /path?q=1 HTTP/1.1"), "{head}");
    assert!(!head.to_ascii_lowercase().contains("\nte:"), "{head}");
}

#[test]
fn idempotent_requests_are_retried_on_the_next_address_after_a_failed_exchange() {
    let port = free_port();
    // 127.0.0.30 accepts, reads the request and hangs up without answering.
    let hangs_up = TcpListener::bind(("127.0.0.30", port)).expect("bind origin");
    let (seen_tx, seen_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::Read;
        for stream in hangs_up.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let n = stream.read(&mut buf).unwrap_or(0);
            let line = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or_default()
                .to_owned();
            let _ = seen_tx.send(line);
        }
    });
    let answers = start_origin("127.0.0.31", port);
    let node = edge_node(port);
    let zone = node.create_zone("retry.test");
    node.proxied_a(&zone, "www", "127.0.0.30");
    node.proxied_a(&zone, "www", "127.0.0.31");
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        curl(port, "www.retry.test", &[]).0 == 200
    });
    while answers.try_recv().is_ok() {}
    while seen_rx.try_recv().is_ok() {}

    // Each request starts at either address. A GET the first one hangs up on goes to the next.
    let mut hung_up = false;
    for _ in 0..40 {
        let (status, head, _) = curl(port, "www.retry.test", &[]);
        assert_eq!(status, 200, "{head}");
        assert!(answers.recv_timeout(Duration::from_secs(5)).is_ok());
        if seen_rx.try_recv().is_ok() {
            hung_up = true;
            break;
        }
    }
    assert!(hung_up, "no GET started at the address that hangs up");

    // A POST may change state: one the first address hangs up on is sent once, and the visitor
    // gets the origin's failure.
    let mut hung_up = false;
    for _ in 0..40 {
        let (status, head, _) = curl(port, "www.retry.test", &["-X", "POST"]);
        let Ok(first) = seen_rx.recv_timeout(Duration::from_millis(300)) else {
            assert_eq!(status, 200, "{head}");
            assert!(answers.try_recv().is_ok());
            continue;
        };
        assert!(first.starts_with("POST "), "{first}");
        assert_eq!(status, 520, "{head}");
        assert!(
            answers.recv_timeout(Duration::from_millis(500)).is_err(),
            "a POST was sent twice"
        );
        hung_up = true;
        break;
    }
    assert!(hung_up, "no POST started at the address that hangs up");
}

#[test]
fn a_request_a_pooled_connection_times_out_on_is_not_sent_again() {
    // The origin answers the first request of each connection and keeps the connection alive,
    // then never answers another on it: a request that goes out on a pooled connection times
    // out (the zone's 1 s). Timing out is the origin's doing, not a stale connection's: the
    // request is not sent again (it would be, on a fresh connection, and answered there).
    let port = free_port();
    let listener = TcpListener::bind(("127.0.0.2", port)).expect("bind origin");
    let (seen_tx, seen) = std::sync::mpsc::channel::<(bool, String)>();
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let seen_tx = seen_tx.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream.try_clone().expect("clone"));
                for fresh in [true, false] {
                    let mut head = Vec::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push(line);
                    }
                    let method = head.first().and_then(|l| l.split(' ').next());
                    let _ = seen_tx.send((fresh, method.unwrap_or_default().to_owned()));
                    if fresh {
                        let _ = stream.write_all(
                            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nCache-Control: no-store\r\n\r\nok",
                        );
                    }
                }
                std::thread::sleep(Duration::from_secs(10));
            });
        }
    });
    let node = edge_node(port);
    let zone = node.create_zone("stalls.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings/proxy_read_timeout"),
        Some(json!({"value": 1})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        curl(port, "www.stalls.test", &[]).0 == 200
    });
    std::thread::sleep(Duration::from_millis(200));
    while seen.try_recv().is_ok() {}
    // GET goes to the origin on the edge's own path, PUT through the HTTP engine: both
    // idempotent.
    for method in ["GET", "PUT"] {
        let mut timed_out = false;
        for _ in 0..20 {
            let (status, head, _) = curl(port, "www.stalls.test", &["-X", method]);
            std::thread::sleep(Duration::from_millis(300));
            let sent: Vec<_> = seen.try_iter().collect();
            if sent.iter().any(|(fresh, _)| !fresh) {
                assert_eq!(status, 524, "{method}: {head}");
                assert_eq!(sent, [(false, method.to_owned())], "{method} sent again");
                timed_out = true;
                break;
            }
            assert_eq!(status, 200, "{method}: {head}");
        }
        assert!(timed_out, "no {method} went out on a pooled connection");
    }
}

/// Moves the calling thread (and the processes it starts) into a new network namespace with
/// only loopback up, where any other address is unreachable; the namespace is removed on drop.
struct FreshNetns {
    name: String,
}

impl FreshNetns {
    fn enter() -> Self {
        let name = format!("parapet-test-{}", std::process::id());
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .expect("run ip (iproute2)");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &name]);
        let ns = Self { name };
        ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
        let file = std::fs::File::open(format!("/var/run/netns/{}", ns.name)).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        ns
    }
}

impl Drop for FreshNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

#[test]
fn an_unreachable_origin_gets_a_523() {
    // Run in a namespace of our own: there, 10.255.255.1 has no route (ENETUNREACH).
    let netns = FreshNetns::enter();
    let port = free_port();
    let node = edge_node(port);
    let zone = node.create_zone("unreachable.test");
    node.proxied_a(&zone, "www", "10.255.255.1");
    parapet_testkit::eventually(Duration::from_secs(5), "a 523 page", || {
        let (status, head, body) = curl(
            port,
            "www.unreachable.test",
            &["-H", "Accept: application/json"],
        );
        status == 523 && head.contains("cf-ray") && body.contains("523") && !body.contains("10.255")
    });
    drop(node);
    drop(netns);
}

#[test]
fn a_proxied_cname_to_an_apex_cname_outside_parapet_reaches_the_outside_origin() {
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
    let zone = node.create_zone("chain.test");
    let records = format!("/zones/{zone}/dns_records");
    // The apex is a (flattened) CNAME to another provider; www a proxied CNAME to the apex.
    for record in [
        json!({"type": "CNAME", "name": "@", "content": "app.provider.test"}),
        json!({"type": "CNAME", "name": "www", "content": "chain.test", "proxied": true}),
        json!({"type": "CNAME", "name": "old", "content": "missing.provider.test"}),
        json!({"type": "CNAME", "name": "gone", "content": "old.chain.test", "proxied": true}),
    ] {
        node.ok("POST", &records, Some(record));
    }
    parapet_testkit::eventually(
        Duration::from_secs(10),
        "www -> apex -> the provider's name to reach the origin",
        || curl(port, "www.chain.test", &[]).0 == 200,
    );
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("origin got the request")
        .to_ascii_lowercase();
    assert!(seen.contains("host: www.chain.test"), "{seen}");
    // A chain to an outside name that does not resolve: 1016, and nothing reaches an origin.
    let (status, _, body) = curl(port, "gone.chain.test", &[]);
    assert_eq!(status, 530);
    assert!(body.contains("Error 1016"), "{body}");
    assert!(origin.recv_timeout(Duration::from_millis(300)).is_err());
}

/// A request head read from `stream` byte by byte (nothing of what follows), or `None` once
/// the stream ends first.
fn read_head(stream: &mut std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).unwrap_or(0) == 0 {
            return None;
        }
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An origin that answers `Expect: 100-continue` with a 100, reads the body, then stalls; and
/// any other request with the head it received, once it read the body.
fn start_continue_origin(ip: &str, port: u16) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut stream) else {
                    return;
                };
                let head = head.to_ascii_lowercase();
                let mut body = [0u8; 5];
                if head.contains("expect: 100-continue") {
                    let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                    let _ = stream.read_exact(&mut body);
                    std::thread::sleep(Duration::from_secs(3));
                    return;
                }
                let _ = stream.read_exact(&mut body);
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
                    head.len()
                );
            });
        }
    });
}

#[test]
fn an_interim_answer_is_followed_by_a_final_one_and_http10_visitors_get_none() {
    use std::io::{Read, Write};
    let port = free_port();
    start_continue_origin("127.0.0.3", port);
    let node = edge_node(port);
    let zone = node.create_zone("interim.test");
    node.proxied_a(&zone, "www", "127.0.0.3");
    node.ok(
        "PATCH",
        &format!("/zones/{zone}/settings/proxy_read_timeout"),
        Some(json!({"value": 1})),
    );
    let exchange = |request: &str, then: Option<&str>| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut got = Vec::new();
        let mut chunk = [0u8; 4096];
        if let Some(body) = then {
            while !String::from_utf8_lossy(&got).contains("\r\n\r\n") {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            s.write_all(body.as_bytes()).expect("write the body");
        }
        while let Ok(n) = s.read(&mut chunk) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&chunk[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        exchange(
            "POST / HTTP/1.1\r\nHost: www.interim.test\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
            None,
        )
        .starts_with("HTTP/1.1 200")
    });
    // The origin sends 100 Continue, then stalls: the visitor still gets its 524.
    let answer = exchange(
        "POST / HTTP/1.1\r\nHost: www.interim.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
        Some("hello"),
    );
    assert!(answer.starts_with("HTTP/1.1 100 Continue\r\n"), "{answer}");
    assert!(answer.contains("HTTP/1.1 524"), "{answer}");
    // HTTP/1.0: the expectation is ignored, neither answered nor sent on.
    let answer = exchange(
        "POST / HTTP/1.0\r\nHost: www.interim.test\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
        None,
    );
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(!answer.contains("expect"), "{answer}");
}

/// An origin that answers each request with the bytes `answer` gives for its path, then keeps
/// the connection open until the edge closes it (or a few seconds pass).
fn start_scripted_origin(ip: &str, port: u16, answer: fn(&str) -> Vec<u8>) {
    use std::io::Write;
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
                while let Some(head) = read_head(&mut stream) {
                    let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    if stream.write_all(&answer(&path)).is_err() {
                        return;
                    }
                }
            });
        }
    });
}

/// The visitor's whole exchange for `path` (the edge closes after it, or it is cut).
fn whole_answer(port: u16, host: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    // In one write: a request that comes in pieces goes to the engine, not the edge's own path.
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).expect("write");
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn origin_answers_framed_wrongly_reach_visitors_framed_rightly_or_as_errors() {
    let port = free_port();
    start_scripted_origin("127.0.0.41", port, |path| {
        let path = path.trim_end_matches(".css");
        let answer: &[u8] = match path {
            // A stray blank line where a chunk size belongs: no last chunk.
            "/blank" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n\r\n5\r\nworld\r\n0\r\n\r\n",
            "/nocontent" => b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-Kept: yes\r\n\r\n",
            "/twice" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            "/listed" => b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello",
            "/gzip" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "/upgrade" => b"HTTP/1.1 200 OK\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok",
            // An Upgrade no Connection field names: this hop's all the same (RFC 9110 §7.8).
            "/advert" => b"HTTP/1.1 200 OK\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nok",
            "/weird" => b"HTTP/1.1 700 Weird\r\nContent-Length: 0\r\n\r\n",
            "/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "/chunky" => b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
            "/hints" => b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 9\r\nConnection: keep-alive\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        answer.to_vec()
    });
    let node = edge_node(port);
    let zone = node.create_zone("framing.test");
    node.proxied_a(&zone, "www", "127.0.0.41");
    let host = "www.framing.test";
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        whole_answer(port, host, "/").starts_with("HTTP/1.1 200")
    });
    let head = |answer: &str| {
        answer
            .split("\r\n\r\n")
            .next()
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    // The pass path (no extension: the cache is not for it), twice each; and the engine's (a
    // stylesheet the cache may keep), where its client reads the answer.
    for path in ["/blank", "/blank"] {
        let answer = whole_answer(port, host, path);
        assert!(
            !answer.contains("\r\n0\r\n\r\n") && !answer.contains("world"),
            "{path}: a cut body went out as a whole one: {answer}"
        );
    }
    for path in ["/nocontent", "/nocontent", "/nocontent.css"] {
        let answer = whole_answer(port, host, path);
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 204"), "{path}: {answer}");
        assert!(head.contains("x-kept: yes"), "{path}: {answer}");
        assert!(
            !head.contains("content-length") && !head.contains("transfer-encoding"),
            "{path}: a 204 with framing: {answer}"
        );
    }
    for path in ["/twice", "/listed", "/twice.css", "/listed.css"] {
        let answer = whole_answer(port, host, path);
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 200"), "{path}: {answer}");
        assert_eq!(
            head.matches("content-length").count(),
            1,
            "{path}: {answer}"
        );
        assert!(
            head.contains("content-length: 5\r\n") || head.ends_with("content-length: 5"),
            "{path}: {answer}"
        );
        assert!(answer.ends_with("\r\n\r\nhello"), "{path}: {answer}");
    }
    for path in ["/gzip", "/weird", "/gzip.css", "/weird.css"] {
        let answer = whole_answer(port, host, path);
        assert!(answer.starts_with("HTTP/1.1 520"), "{path}: {answer}");
    }
    for path in ["/upgrade", "/upgrade.css", "/advert", "/advert.css"] {
        let answer = whole_answer(port, host, path);
        let head = head(&answer);
        assert!(head.starts_with("http/1.1 200"), "{path}: {answer}");
        assert!(!head.contains("upgrade"), "{path}: {answer}");
    }
    // An HTTP/1.0 visitor gets no chunked coding and no compression: the body as it is, ended
    // by the close (RFC 9112 §6.1).
    for (path, extra) in [("/chunky", ""), ("/chunky", "Accept-Encoding: gzip\r\n")] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n{extra}\r\n").expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let answer = String::from_utf8_lossy(&got).into_owned();
        let head = head(&answer);
        assert!(head.contains(" 200 "), "{answer}");
        assert!(!head.contains("transfer-encoding"), "{answer}");
        assert!(!head.contains("content-encoding"), "{answer}");
        assert!(head.contains("connection: close"), "{answer}");
        assert!(answer.ends_with("\r\n\r\nhello world"), "{answer}");
    }
    // A 101 to a request that asked for no upgrade is no valid answer: 520, whatever the
    // method or path.
    for request in [
        format!(
            "POST /switch HTTP/1.1\r\nHost: {host}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
        ),
        format!("GET /switch HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!("GET /switch.css HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
    ] {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let answer = String::from_utf8_lossy(&got).into_owned();
        assert!(answer.starts_with("HTTP/1.1 520"), "{request}: {answer}");
    }
    // Bytes sent behind an upgrade request before its answer are the visitor's doing, never
    // an unreachable origin's (523).
    {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /next HTTP/1.1\r\nHost: {host}\r\n\r\n"
        )
        .expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        let answer = String::from_utf8_lossy(&got).into_owned();
        assert!(!answer.contains(" 523 "), "{answer}");
    }
    let answer = whole_answer(port, host, "/hints");
    let interim = head(&answer);
    assert!(interim.starts_with("http/1.1 103"), "{answer}");
    assert!(interim.contains("link: </a.css>"), "{answer}");
    assert!(
        !interim.contains("content-length") && !interim.contains("keep-alive"),
        "an interim answer with the final one's fields: {answer}"
    );
    assert!(answer.contains("HTTP/1.1 200"), "{answer}");
}

#[test]
fn a_field_naming_the_origin_goes_alone_and_its_siblings_stay() {
    let port = free_port();
    start_scripted_origin("127.0.0.42", port, |_| {
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nSet-Cookie: session=abc; Path=/\r\n\
Set-Cookie: backend=127.0.0.42; Path=/\r\nSet-Cookie: theme=dark\r\n\
Link: <http://127.0.0.42/a.css>; rel=preload\r\nLink: </b.css>; rel=preload\r\n\
X-Served-By: 127.0.0.42\r\n\r\nok"
            .to_vec()
    });
    let node = edge_node(port);
    let zone = node.create_zone("cookies.test");
    node.proxied_a(&zone, "www", "127.0.0.42");
    let host = "www.cookies.test";
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        whole_answer(port, host, "/").starts_with("HTTP/1.1 200")
    });
    let check = |how: &str, head: &str| {
        let head = head.to_ascii_lowercase();
        assert!(!head.contains("127.0.0.42"), "{how}: {head}");
        assert!(
            head.contains("set-cookie: session=abc; path=/"),
            "{how}: {head}"
        );
        assert!(head.contains("set-cookie: theme=dark"), "{how}: {head}");
        assert!(
            head.contains("link: </b.css>; rel=preload"),
            "{how}: {head}"
        );
        assert!(!head.contains("x-served-by"), "{how}: {head}");
    };
    // The edge's own path (a GET the cache does not keep) and the engine's (a stylesheet the
    // cache may keep), over HTTP/1.1; then both over HTTP/2 (a GET, a PUT).
    for path in ["/", "/site.css"] {
        let answer = whole_answer(port, host, path);
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
        check(path, answer.split("\r\n\r\n").next().unwrap_or_default());
    }
    for method in ["GET", "PUT"] {
        let (status, head, body) = curl(port, host, &["--http2-prior-knowledge", "-X", method]);
        assert_eq!((status, body.as_str()), (200, "ok"), "{method}: {head}");
        check(method, &head);
    }
}

#[test]
fn an_http10_origin_is_answered_in_http11_and_a_head_miss_is_stored() {
    let port = free_port();
    // As `python3 -m http.server` answers: HTTP/1.0, a length, no Cache-Control.
    start_scripted_origin("127.0.0.43", port, |_| {
        b"HTTP/1.0 200 OK\r\nContent-Type: text/css\r\nContent-Length: 7\r\nLast-Modified: Mon, 07 Dec 2026 10:00:00 GMT\r\n\r\nbody{}\n"
            .to_vec()
    });
    let node = edge_node(port);
    let zone = node.create_zone("old.test");
    node.proxied_a(&zone, "www", "127.0.0.43");
    let host = "www.old.test";
    parapet_testkit::eventually(Duration::from_secs(5), "routing", || {
        whole_answer(port, host, "/").starts_with("HTTP/1.1 200")
    });
    let head = |method: &str, path: &str| {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        String::from_utf8_lossy(&got).to_ascii_lowercase()
    };
    // A stylesheet (the cache keeps it): a miss, then hits, every answer in HTTP/1.1; a HEAD
    // first, as the README's tour asks it.
    let first = head("HEAD", "/site.css");
    assert!(first.starts_with("http/1.1 200"), "{first}");
    assert!(first.contains("cf-cache-status: miss"), "{first}");
    assert!(!first.contains("body{}"), "a HEAD has no content: {first}");
    let second = head("HEAD", "/site.css");
    assert!(second.contains("cf-cache-status: hit"), "{second}");
    let got = head("GET", "/site.css");
    assert!(got.starts_with("http/1.1 200"), "{got}");
    assert!(
        got.contains("cf-cache-status: hit") && got.ends_with("body{}\n"),
        "{got}"
    );
    // And a GET the cache does not keep.
    let fresh = head("GET", "/other.css");
    assert!(fresh.starts_with("http/1.1 200"), "{fresh}");
}
