//! Answers over UDP leave from the address the query came to, also on a socket bound to a
//! wildcard address: a client (dig, a resolver) drops an answer from any other address, so a
//! host with several addresses (an anycast one among them) would otherwise answer nobody who
//! asked the others.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use parapet_dns::{Cookies, DnsIndex, DnsServer, Limits, RrlConfig, bind_udp};

fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    q.extend_from_slice(b"\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

/// A server of no zones (it answers REFUSED), with the default payload limit.
fn server() -> Arc<DnsServer> {
    let index = Arc::new(ArcSwap::from_pointee(DnsIndex::default()));
    Arc::new(DnsServer::new(
        index,
        Limits {
            max_udp_payload: 1232,
        },
        RrlConfig { rate: 0, slip: 2 },
        Cookies::random(),
    ))
}

fn serve(bind: &str) -> u16 {
    let server = server();
    let sockets = bind_udp(bind.parse().expect("address"), 2).expect("bind");
    let port = sockets[0].local_addr().expect("address").port();
    server.spawn_udp(sockets).expect("serve");
    port
}

/// Asks `server` from a socket connected to it (so that only an answer from that very address
/// is read) and gives the answer's id.
fn ask(client_ip: &str, server: SocketAddr, id: u16) -> std::io::Result<u16> {
    let client = UdpSocket::bind((client_ip, 0))?;
    client.set_read_timeout(Some(Duration::from_secs(2)))?;
    client.connect(server)?;
    client.send(&query(id))?;
    let mut answer = [0u8; 512];
    let n = client.recv(&mut answer)?;
    assert!(n >= 12, "a short answer");
    Ok(u16::from_be_bytes([answer[0], answer[1]]))
}

#[test]
fn a_wildcard_ipv4_socket_answers_from_each_address_asked() {
    let port = serve("0.0.0.0:0");
    for (n, (from, to)) in [
        ("127.0.0.1", "127.0.0.2"),
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.5", "127.0.0.3"),
        ("127.0.0.1", "127.0.0.2"),
    ]
    .into_iter()
    .enumerate()
    {
        let server: SocketAddr = format!("{to}:{port}").parse().expect("address");
        let id = 7000 + n as u16;
        let got = ask(from, server, id)
            .unwrap_or_else(|e| panic!("no answer from {server} to {from}: {e}"));
        assert_eq!(got, id);
    }
}

#[test]
fn a_wildcard_ipv6_socket_answers() {
    if UdpSocket::bind("[::1]:0").is_err() {
        // No IPv6 loopback here: nothing to check.
        return;
    }
    let port = serve("[::]:0");
    let server: SocketAddr = format!("[::1]:{port}").parse().expect("address");
    assert_eq!(ask("::1", server, 9).expect("answered"), 9);
}

#[test]
fn a_socket_bound_to_one_address_still_answers() {
    let port = serve("127.0.0.4:0");
    let server: SocketAddr = format!("127.0.0.4:{port}").parse().expect("address");
    assert_eq!(ask("127.0.0.1", server, 11).expect("answered"), 11);
}

#[test]
fn answers_leave_unfragmented_at_the_default_payload() {
    use rustix::net::sockopt;
    let server = server();
    let sockets = bind_udp("127.0.0.1:0".parse().expect("address"), 1).expect("bind");
    let watched = sockets[0].try_clone().expect("clone");
    server.spawn_udp(sockets).expect("serve");
    assert_eq!(
        sockopt::ip_mtu_discover(&watched).expect("IP_MTU_DISCOVER"),
        sockopt::Ipv4PathMtuDiscovery::PROBE
    );
}
