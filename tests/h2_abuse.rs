//! HTTP/2 with raw frames: HEAD answers without content, uploads within the edge's windows, and
//! floods against the edge: rapid reset (CVE-2023-44487),
//! CONTINUATION floods and streams of malformed requests end the attacking connection, reach
//! the origin little or not at all, and leave the edge serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use parapet_testkit::h2::{connect as h2_connect, frame, get_block, get_path_block, read_frame};
use parapet_testkit::http::{curl, start_origin};
use parapet_testkit::{Node, NodeOptions, eventually, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// Reads frames until the connection closes or `within` passes; returns the GOAWAY error code
/// if one came.
fn goaway(s: &mut TcpStream, within: Duration) -> Option<u32> {
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let mut code = None;
    while Instant::now() < deadline {
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
        while buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == 7 && len >= 8 {
                code = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
    }
    code
}

/// An edge with www.shop.test proxied to an origin on 127.0.0.2, routing: its port, the edge,
/// and what the origin receives.
fn shop() -> (u16, Node, std::sync::mpsc::Receiver<String>) {
    shop_with("")
}

/// As [`shop`], the node started with this configuration file (TOML; empty: none).
fn shop_with(config: &str) -> (u16, Node, std::sync::mpsc::Receiver<String>) {
    let port = free_port();
    let origin = start_origin("127.0.0.2", port);
    let options = NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]);
    let node = Node::start(if config.is_empty() {
        options
    } else {
        options.config(config)
    });
    let zone = node.create_zone("shop.test");
    node.proxied_a(&zone, "www.shop.test", "127.0.0.2");
    eventually(Duration::from_secs(5), "the edge to route", || {
        curl(port, "www.shop.test", &[]).0 == 200
    });
    while origin.try_recv().is_ok() {}
    (port, node, origin)
}

#[test]
fn rapid_reset_and_continuation_floods_end_the_connection_not_the_edge() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");

    // A well-formed stream over raw frames reaches the origin (the frames below are real).
    let mut s = h2_connect(port);
    s.write_all(&frame(1, 0x5, 1, &get_block(&authority)))
        .expect("headers");
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("a raw-frame request reaches the origin");
    assert!(
        seen.to_ascii_lowercase().starts_with("get / http/1.1"),
        "{seen}"
    );
    drop(s);

    // Rapid reset: open a stream and cancel it at once, thousands of times.
    let mut s = h2_connect(port);
    let attempts = 5000u32;
    let mut batch = Vec::new();
    let mut sent = 0u32;
    for i in 0..attempts {
        let id = 2 * i + 1;
        batch.extend(frame(1, 0x5, id, &get_block(&authority)));
        batch.extend(frame(3, 0, id, &8u32.to_be_bytes()));
        if batch.len() > 32 * 1024 {
            if s.write_all(&batch).is_err() {
                break;
            }
            sent = i + 1;
            batch.clear();
        }
    }
    let _ = s.write_all(&batch);
    let code = goaway(&mut s, Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(500));
    let reached = origin.try_iter().count();
    eprintln!("rapid reset: sent about {sent} streams, goaway {code:?}, origin saw {reached}");
    assert!(
        reached < 500,
        "{reached} of {attempts} reset streams reached the origin"
    );

    // CONTINUATION flood: a header block that never ends.
    let mut s = h2_connect(port);
    let mut flood = frame(1, 0x1, 1, &get_block(&authority));
    let filler = vec![0x40, 0x01, b'x', 0x01, b'y'];
    for _ in 0..20_000 {
        flood.extend(frame(9, 0, 1, &filler));
    }
    let _ = s.write_all(&flood);
    let code = goaway(&mut s, Duration::from_secs(5));
    eprintln!("continuation flood: goaway {code:?}");
    assert!(code.is_some(), "the flood ends with GOAWAY");

    // SETTINGS and PING floods: answered or refused, never queued without bound.
    let mut s = h2_connect(port);
    let mut flood = Vec::new();
    for i in 0u64..50_000 {
        if i % 2 == 0 {
            flood.extend(frame(6, 0, 0, &i.to_be_bytes()));
        } else {
            flood.extend(frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]));
        }
    }
    let started = Instant::now();
    let _ = s.write_all(&flood);
    drop(s);
    assert_eq!(curl(port, "www.shop.test", &[]).0, 200);
    assert!(started.elapsed() < Duration::from_secs(5));

    // Everyone else is still served.
    assert_eq!(
        curl(port, "www.shop.test", &["--http2-prior-knowledge"]).0,
        200
    );
    assert_eq!(curl(port, "www.shop.test", &[]).0, 200);
}

#[test]
fn refused_streams_leave_the_connection_serving_good_ones() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");
    // Two different lengths (HPACK: `content-length`, static index 28, as literals), and a
    // control byte in `:path` (a literal with the static name 4): the HTTP/2 implementation
    // refuses each stream.
    let mut lengths = get_block(&authority);
    lengths.extend_from_slice(&[0x0f, 0x0d, 0x01, b'1', 0x0f, 0x0d, 0x01, b'2']);
    let mut control = vec![0x82, 0x86, 0x04, 0x05];
    control.extend_from_slice(b"/?a\x01b");
    control.extend_from_slice(&get_block(&authority)[3..]);
    let mut s = h2_connect(port);
    for i in 0..10u32 {
        let (flags, block) = if i % 2 == 0 {
            (0x4, &lengths)
        } else {
            (0x5, &control)
        };
        s.write_all(&frame(1, flags, 2 * i + 1, block))
            .expect("headers");
    }
    s.write_all(&frame(1, 0x5, 21, &get_block(&authority)))
        .expect("headers");
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("a good stream after refused ones reaches the origin");
    assert!(seen.to_ascii_lowercase().starts_with("get / "), "{seen}");
    assert!(
        origin.recv_timeout(Duration::from_millis(300)).is_err(),
        "no refused stream reached the origin"
    );
}

/// Whether the edge closes `s` within `within` (frames before the close are read and let go).
fn closes_within(s: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    let mut chunk = [0u8; 16 * 1024];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .expect("timeout");
        match s.read(&mut chunk) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) => {
                return !matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                );
            }
        }
    }
    false
}

#[test]
fn a_connection_is_closed_once_it_has_sent_32_refused_streams() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");
    // Streams the engine's HTTP/2 reader refuses (with a 400) after the HTTP/2 implementation
    // has let them through: no `:authority` and no `Host`.
    let unnamed = [0x82, 0x86, 0x84];
    let mut s = h2_connect(port);
    // Good streams between refused ones do not reset the count.
    for i in 0..31u32 {
        s.write_all(&frame(1, 0x5, 4 * i + 1, &unnamed))
            .expect("headers");
        s.write_all(&frame(1, 0x5, 4 * i + 3, &get_block(&authority)))
            .expect("headers");
    }
    for _ in 0..31 {
        origin
            .recv_timeout(Duration::from_secs(5))
            .expect("the good streams among the first 31 refused ones are served");
    }
    assert!(
        !closes_within(&mut s, Duration::from_millis(300)),
        "31 refused streams leave the connection open"
    );
    // The 32nd ends the connection: a good stream after it is not served.
    let _ = s.write_all(&frame(1, 0x5, 125, &unnamed));
    let _ = s.write_all(&frame(1, 0x5, 127, &get_block(&authority)));
    assert!(
        closes_within(&mut s, Duration::from_secs(5)),
        "the 32nd refused stream closes the connection"
    );
    assert!(
        origin.recv_timeout(Duration::from_millis(300)).is_err(),
        "nothing after the 32nd refused stream reached the origin"
    );
    // Other connections are served.
    assert_eq!(
        curl(port, "www.shop.test", &["--http2-prior-knowledge"]).0,
        200
    );
}

#[test]
fn streams_reset_a_few_at_a_time_never_reach_the_origin_and_end_the_connection() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");
    // Paced rapid reset: ten streams opened and cancelled at once, then a PING whose answer
    // says the edge read them; fewer than the HTTP/2 implementation's own limit each round.
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    let mut code = None;
    let mut id = 1u32;
    for round in 0u64..60 {
        let mut batch = Vec::new();
        for _ in 0..10 {
            batch.extend(frame(1, 0x5, id, &get_block(&authority)));
            batch.extend(frame(3, 0, id, &8u32.to_be_bytes()));
            id += 2;
        }
        batch.extend(frame(6, 0, 0, &round.to_be_bytes()));
        if s.write_all(&batch).is_err() {
            break;
        }
        if let Err(ended) = until_ping_answered(&mut s, &mut buf) {
            code = ended;
            break;
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let reached = origin.try_iter().count();
    eprintln!(
        "paced resets: {} streams, goaway {code:?}, origin saw {reached}",
        id / 2
    );
    assert_eq!(code, Some(11), "ENHANCE_YOUR_CALM ends the connection");
    assert!(id / 2 < 200, "closed after {} streams", id / 2);
    assert!(reached < 20, "{reached} reset streams reached the origin");
    // Others are served.
    assert_eq!(
        curl(port, "www.shop.test", &["--http2-prior-knowledge"]).0,
        200
    );
}

#[test]
fn streams_the_engine_answers_count_toward_the_reset_limit_when_reset_mid_request() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");
    // POSTs (the engine's: never a hit or a direct pass) whose bodies never come: ten opened,
    // a PING whose answer says the edge has taken them, then all ten reset, round after round.
    let mut post = get_block(&authority);
    post[0] = 0x83;
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    let mut code = None;
    let mut id = 1u32;
    let ping = |s: &mut TcpStream, round: u64, batch: &mut Vec<u8>| {
        batch.extend(frame(6, 0, 0, &round.to_be_bytes()));
        s.write_all(batch).is_ok()
    };
    'rounds: for round in 0u64..60 {
        let first = id;
        let mut batch = Vec::new();
        for _ in 0..10 {
            batch.extend(frame(1, 0x4, id, &post));
            id += 2;
        }
        let mut resets = Vec::new();
        for stream in (first..id).step_by(2) {
            resets.extend(frame(3, 0, stream, &8u32.to_be_bytes()));
        }
        for (k, batch) in [batch, resets].iter_mut().enumerate() {
            if !ping(&mut s, round * 2 + k as u64, batch) {
                break 'rounds;
            }
            if let Err(ended) = until_ping_answered(&mut s, &mut buf) {
                code = ended;
                break 'rounds;
            }
        }
    }
    let reached = origin.try_iter().count();
    eprintln!(
        "resets mid-request: {} streams, goaway {code:?}, origin saw {reached}",
        id / 2
    );
    assert_eq!(code, Some(11), "ENHANCE_YOUR_CALM ends the connection");
    assert!(id / 2 < 250, "closed after {} streams", id / 2);
    // Others are served.
    assert_eq!(
        curl(port, "www.shop.test", &["--http2-prior-knowledge"]).0,
        200
    );
}

/// Reads frames up to a PING's answer; `Err` when the connection ends first, with the GOAWAY's
/// error code if one came.
fn until_ping_answered(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), Option<u32>> {
    loop {
        match read_frame(s, buf) {
            Some(f) if f.kind == 7 => {
                return Err(f
                    .payload
                    .get(4..8)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]])));
            }
            Some(f) if f.kind == 6 && f.flags & 1 == 1 => return Ok(()),
            Some(_) => {}
            None => return Err(None),
        }
    }
}

/// The frames on `s` up to the first with `kind` on `stream` (`None`: closed or silent).
fn frame_of(
    s: &mut TcpStream,
    buf: &mut Vec<u8>,
    kind: u8,
    stream: u32,
) -> Option<parapet_testkit::h2::Frame> {
    loop {
        let f = read_frame(s, buf)?;
        if f.kind == kind && f.stream == stream {
            return Some(f);
        }
    }
}

/// The DATA of `stream` on `s` up to its end.
fn body_of(s: &mut TcpStream, buf: &mut Vec<u8>, stream: u32) -> Vec<u8> {
    let mut body = Vec::new();
    loop {
        let f = frame_of(s, buf, 0, stream).expect("the answer's body");
        body.extend_from_slice(&f.payload);
        if f.flags & 1 == 1 {
            return body;
        }
    }
}

#[test]
fn a_hit_the_visitors_window_cannot_hold_waits_for_the_window_to_open() {
    let (port, _node, _origin) = shop();
    let authority = format!("www.shop.test:{port}");
    let block = get_path_block(&authority, "/style.css");
    // Stored by a first request (a stylesheet is kept by default).
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    s.write_all(&frame(1, 0x5, 1, &block)).expect("headers");
    let body = body_of(&mut s, &mut buf, 1);
    drop(s);
    // A visitor with no window for streams: the hit's header comes, its body waits.
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    s.write_all(&frame(4, 0, 0, &[0, 4, 0, 0, 0, 0]))
        .expect("settings");
    s.write_all(&frame(1, 0x5, 1, &block)).expect("headers");
    let mut buf = Vec::new();
    let head = frame_of(&mut s, &mut buf, 1, 1).expect("the hit's header");
    assert_eq!(head.flags & 1, 0, "a body follows");
    s.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    assert!(
        frame_of(&mut s, &mut buf, 0, 1).is_none(),
        "no body before the window opens"
    );
    // The window opens: the whole body comes, and the stream ends.
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let room = u32::try_from(body.len()).expect("small");
    s.write_all(&frame(8, 0, 1, &room.to_be_bytes()))
        .expect("window update");
    assert_eq!(body_of(&mut s, &mut buf, 1), body);
}

/// An HPACK block for `method` (a literal with its static name) of `path` for `authority`.
fn method_block(method: &str, authority: &str, path: &str) -> Vec<u8> {
    let mut block = Vec::new();
    for (name, value) in [(0x02, method), (0x04, path), (0x01, authority)] {
        block.push(name);
        block.push(u8::try_from(value.len()).expect("short"));
        block.extend_from_slice(value.as_bytes());
    }
    block.push(0x86);
    block
}

#[test]
fn a_head_the_cache_asks_the_origin_for_gets_no_content_and_the_get_after_it_all() {
    let (port, _node, _origin) = shop();
    let authority = format!("www.shop.test:{port}");
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    // A stylesheet not stored yet: the cache asks the origin with a GET.
    s.write_all(&frame(
        1,
        0x5,
        1,
        &method_block("HEAD", &authority, "/head.css"),
    ))
    .expect("headers");
    let head = frame_of(&mut s, &mut buf, 1, 1).expect("the answer's header");
    if head.flags & 1 == 0 {
        let rest = body_of(&mut s, &mut buf, 1);
        assert!(
            rest.is_empty(),
            "a HEAD got {} bytes of content",
            rest.len()
        );
    }
    // The stored answer has its content, and the connection still serves.
    s.write_all(&frame(1, 0x5, 3, &get_path_block(&authority, "/head.css")))
        .expect("headers");
    frame_of(&mut s, &mut buf, 1, 3).expect("the GET's header");
    let body = body_of(&mut s, &mut buf, 3);
    assert!(
        String::from_utf8_lossy(&body).starts_with("GET /head.css"),
        "{}",
        String::from_utf8_lossy(&body)
    );
}

#[test]
fn an_upload_of_a_megabyte_goes_without_waiting_for_window_updates() {
    let (port, _node, _origin) = shop();
    let authority = format!("www.shop.test:{port}");
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    // The edge's SETTINGS give each stream a 1 MiB window.
    let settings = frame_of(&mut s, &mut buf, 4, 0).expect("the edge's settings");
    let window = settings
        .payload
        .chunks(6)
        .find(|p| p.len() == 6 && p[..2] == [0, 4])
        .map(|p| u32::from_be_bytes([p[2], p[3], p[4], p[5]]));
    assert_eq!(window, Some(1 << 20));
    s.write_all(&frame(4, 1, 0, &[])).expect("settings taken");
    // A whole megabyte sent at once is taken: no flow-control error, an answer comes.
    s.write_all(&frame(
        1,
        0x4,
        1,
        &method_block("POST", &authority, "/upload"),
    ))
    .expect("headers");
    let chunk = vec![b'x'; 16 * 1024];
    for i in 0..64 {
        let end = if i == 63 { 1 } else { 0 };
        s.write_all(&frame(0, end, 1, &chunk)).expect("data");
    }
    loop {
        let f = read_frame(&mut s, &mut buf).expect("an answer before the connection ends");
        let code = f
            .payload
            .get(..4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        assert!(f.kind != 7, "GOAWAY {:?}", f.payload.get(4..8));
        assert!(!(f.kind == 3 && code == Some(3)), "FLOW_CONTROL_ERROR");
        if f.kind == 1 && f.stream == 1 {
            break;
        }
    }
}

#[test]
fn connect_over_http2_gets_the_edges_405_with_allow() {
    let (port, _node, origin) = shop();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (status, fields) = runtime.block_on(async {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (client, conn) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(conn);
        let mut client = client.ready().await.expect("ready");
        // CONNECT carries its target in :authority alone (RFC 9113 §8.5).
        let request = http::Request::builder()
            .method("CONNECT")
            .uri(format!("www.shop.test:{port}"))
            .body(())
            .expect("request");
        let (response, _) = client.send_request(request, true).expect("send");
        let response = response.await.expect("an answer");
        (response.status().as_u16(), response.headers().clone())
    });
    assert_eq!(status, 405, "{fields:?}");
    assert!(fields.contains_key("allow"), "{fields:?}");
    assert!(fields.contains_key("cf-ray"), "{fields:?}");
    assert_eq!(
        fields.get("server").and_then(|v| v.to_str().ok()),
        Some("parapet")
    );
    assert!(origin.try_recv().is_err(), "nothing reaches the origin");
}

#[test]
fn a_request_body_that_stops_arriving_ends_its_stream_and_frees_the_origin() {
    let (port, _node, origin) = shop_with("edge_body_timeout = \"1s\"\n");
    let authority = format!("www.shop.test:{port}");
    let post = method_block("POST", &authority, "/upload");
    let mut s = h2_connect(port);
    let mut buf = Vec::new();

    // Five bytes of a body, then nothing: the stream is reset about a second later (not
    // answered as the origin's fault once the origin's read timeout passes), and the origin's
    // connection is closed, which ends the body the origin was reading.
    let sent = Instant::now();
    s.write_all(&frame(1, 0x4, 1, &post)).expect("headers");
    s.write_all(&frame(0, 0, 1, b"hello")).expect("data");
    let first = loop {
        let f = read_frame(&mut s, &mut buf).expect("a frame for the stream");
        if f.stream == 1 {
            break f;
        }
    };
    assert_eq!(first.kind, 3, "the stream is reset, not answered");
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    let seen = origin
        .recv_timeout(Duration::from_secs(5))
        .expect("the origin's connection is closed");
    assert!(seen.starts_with("POST /upload"), "{seen}");

    // The connection serves its next stream.
    s.write_all(&frame(1, 0x5, 3, &get_block(&authority)))
        .expect("headers");
    let head = frame_of(&mut s, &mut buf, 1, 3).expect("an answer");
    assert_eq!(head.payload.first(), Some(&0x88), ":status 200");

    // A body that keeps coming, however slowly, is not cut.
    s.write_all(&frame(1, 0x4, 5, &post)).expect("headers");
    for _ in 0..5 {
        s.write_all(&frame(0, 0, 5, b"x")).expect("data");
        std::thread::sleep(Duration::from_millis(400));
    }
    s.write_all(&frame(0, 1, 5, b"end")).expect("data");
    let head = frame_of(&mut s, &mut buf, 1, 5).expect("an answer");
    assert_eq!(head.payload.first(), Some(&0x88), ":status 200");
    while origin.try_recv().is_ok() {}

    // Over HTTP/1.1, the same timeout ends the request: an answer (400), then the close.
    let mut h1 = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    h1.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let sent = Instant::now();
    h1.write_all(
        format!("POST /upload HTTP/1.1\r\nHost: {authority}\r\nContent-Length: 10\r\n\r\nhello")
            .as_bytes(),
    )
    .expect("request");
    let mut answer = Vec::new();
    let _ = h1.read_to_end(&mut answer);
    let waited = sent.elapsed();
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    assert!(
        answer.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&answer)
    );
}

#[test]
fn a_get_whose_body_ends_empty_is_stored_and_answered_from_the_cache() {
    let (port, _node, origin) = shop();
    let authority = format!("www.shop.test:{port}");
    let block = get_path_block(&authority, "/empty-body.css");
    let mut s = h2_connect(port);
    let mut buf = Vec::new();
    // HEADERS without END_STREAM, then an empty DATA frame that ends the stream: no body.
    for stream in [1, 3] {
        s.write_all(&frame(1, 0x4, stream, &block))
            .expect("headers");
        s.write_all(&frame(0, 1, stream, &[])).expect("data");
        assert!(!body_of(&mut s, &mut buf, stream).is_empty());
    }
    // So over HTTP/1.1 with a chunked body of the last chunk alone.
    let chunked = format!(
        "GET /empty-chunked.css HTTP/1.1\r\nHost: {authority}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    );
    for _ in 0..2 {
        let mut h1 = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        h1.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        h1.write_all(chunked.as_bytes()).expect("request");
        let mut answer = [0u8; 12];
        h1.read_exact(&mut answer).expect("an answer");
        assert_eq!(&answer, b"HTTP/1.1 200");
    }
    std::thread::sleep(Duration::from_millis(300));
    let asked: Vec<String> = origin.try_iter().collect();
    assert_eq!(
        asked.len(),
        2,
        "one origin request per URL, then hits: {asked:?}"
    );
}
