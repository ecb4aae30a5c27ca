//! TCP under pressure: when every connection slot is taken, idle connections make room for a
//! new client (RFC 7766 §6.2.3), so a few prefixes holding idle connections cannot lock others
//! out of the TCP fallback.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parapet_dns::{Cookies, DnsIndex, DnsServer, Limits, RrlConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

mod common;

/// A query for `example.com` of type `qtype`, framed for TCP.
fn framed(id: u16, qtype: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07example\x03com\x00");
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&[0, 1]);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    framed
}

/// A query for `example.com A`, framed for TCP.
fn framed_query(id: u16) -> Vec<u8> {
    framed(id, 1)
}

async fn connect_from(source: &str, server: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{source}:0").parse().expect("address"))
        .expect("bind");
    socket.connect(server).await.expect("connect")
}

/// Sends one query on `stream` and reads its answer's id.
async fn ask(stream: &mut TcpStream, id: u16) -> std::io::Result<u16> {
    stream.write_all(&framed_query(id)).await?;
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await?;
    Ok(u16::from_be_bytes([answer[0], answer[1]]))
}

/// A server for `index` with rate limiting off.
fn server_of(index: DnsIndex) -> DnsServer {
    DnsServer::new(
        Arc::new(ArcSwap::from_pointee(index)),
        Limits {
            max_udp_payload: 1232,
        },
        RrlConfig { rate: 0, slip: 2 },
        Cookies::random(),
    )
}

/// Serves TCP for `server` on a port of its own; its address.
async fn listen(server: &Arc<DnsServer>) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    (addr, server.spawn_tcp(listener))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_make_room_when_every_slot_is_taken() {
    let mut server = server_of(DnsIndex::default());
    server.tcp_max_connections = 8;
    server.tcp_per_source = 4;
    let server = Arc::new(server);
    let (addr, _serving) = listen(&server).await;

    // Two prefixes take every slot, each connection answered once, then idle.
    let mut held = Vec::new();
    for (i, source) in ["127.0.1.1", "127.0.2.1"]
        .iter()
        .cycle()
        .take(8)
        .enumerate()
    {
        let mut stream = connect_from(source, addr).await;
        let id = 100 + i as u16;
        assert_eq!(ask(&mut stream, id).await.expect("answered"), id);
        held.push(stream);
    }
    // While they are fresh, a ninth client finds no room.
    let mut early = connect_from("127.0.3.1", addr).await;
    assert!(
        ask(&mut early, 1).await.is_err(),
        "served beyond the connection limit"
    );
    // Once they have idled a while, it gets in, and the idle ones were closed.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut late = connect_from("127.0.3.1", addr).await;
    let answered = tokio::time::timeout(Duration::from_secs(2), ask(&mut late, 7)).await;
    assert_eq!(answered.expect("in time").expect("answered"), 7);
    let mut closed = 0;
    for stream in &mut held {
        let mut byte = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_secs(1), stream.read(&mut byte)).await
        {
            closed += 1;
        }
    }
    assert!(closed > 0, "no idle connection was closed");
}

/// Sends an AXFR request on `stream` and reads the first answer's rcode.
async fn transfer_rcode(stream: &mut TcpStream, id: u16) -> u8 {
    // (Type 252: AXFR.)
    stream.write_all(&framed(id, 252)).await.expect("send");
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.expect("length");
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut answer).await.expect("answer");
    assert_eq!(u16::from_be_bytes([answer[0], answer[1]]), id);
    answer[3] & 0x0f
}

/// The index of the active zone `example.com`, whose transfers 127.0.0.1 may take.
fn transferable() -> DnsIndex {
    let peer = parapet_model::transfer::Peer {
        id: "p1".into(),
        name: "secondary".into(),
        ip: Some("127.0.0.1".parse().expect("ip")),
        port: 53,
        tsig_id: None,
        ixfr_enable: false,
    };
    let outgoing = parapet_model::transfer::Outgoing {
        zone_id: "z".into(),
        name: "example.com".into(),
        peers: vec!["p1".into()],
        enabled: true,
        notifies: 0,
    };
    let entries = [
        common::active_zone_entry("example.com"),
        (
            parapet_snapshot::keys::peer_key("p1"),
            serde_json::to_vec(&peer).expect("peer"),
        ),
        (
            parapet_snapshot::keys::outgoing_key("z"),
            serde_json::to_vec(&outgoing).expect("outgoing"),
        ),
    ];
    let snapshot = parapet_snapshot::compile_snapshot(
        entries.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
        1,
    )
    .expect("compiles");
    DnsIndex::build(&snapshot, &parapet_dns::EdgeAddrs::default(), None, None).0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_beyond_the_limit_get_servfail_until_one_ends() {
    let server = Arc::new(server_of(transferable()));
    let (addr, _serving) = listen(&server).await;
    const NOERROR: u8 = 0;
    const SERVFAIL: u8 = 2;
    const NOTAUTH: u8 = 9;
    let mut peer = connect_from("127.0.0.1", addr).await;
    let mut stranger = connect_from("127.0.0.2", addr).await;
    // Every transfer slot taken (as by transfers in progress): the peer is refused for now,
    // its connection kept; a client the ACL refuses is told so, taking no slot.
    let running = Arc::clone(&server.transfers_out)
        .acquire_many_owned(parapet_dns::TRANSFERS_OUT as u32)
        .await
        .expect("slots");
    assert_eq!(transfer_rcode(&mut peer, 1).await, SERVFAIL);
    assert_eq!(transfer_rcode(&mut stranger, 2).await, NOTAUTH);
    // Once one ends, the peer gets its transfer, and its slot is let go after it.
    drop(running);
    assert_eq!(transfer_rcode(&mut peer, 3).await, NOERROR);
    let all_free = async {
        while server.transfers_out.available_permits() != parapet_dns::TRANSFERS_OUT {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(2), all_free)
        .await
        .expect("the transfer's slot let go once it was sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_sent_a_byte_at_a_time_loses_its_connection_within_two_seconds() {
    let server = Arc::new(server_of(DnsIndex::default()));
    let (addr, _serving) = listen(&server).await;

    // The length and half the query, then a byte every 500 ms: never idle, never whole.
    let query = framed_query(7);
    let mut stream = connect_from("127.0.4.1", addr).await;
    stream.write_all(&query[..10]).await.expect("write");
    let started = std::time::Instant::now();
    let mut closed = false;
    for byte in &query[10..query.len() - 1] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(1), stream.read(&mut probe)).await
        {
            closed = true;
            break;
        }
    }
    let took = started.elapsed();
    assert!(closed, "the connection stayed open");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "{took:?}"
    );
    // A query sent whole is answered.
    let mut other = connect_from("127.0.4.2", addr).await;
    assert_eq!(ask(&mut other, 8).await.expect("answered"), 8);
}
