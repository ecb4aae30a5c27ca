//! A small DNS client for tests: build a query, send it over UDP or TCP, parse the answer.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name, RecordType};

use crate::{Node, NodeOptions};

/// How a query is sent.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Edns(u16),
    NoEdns,
    Tcp,
}

pub fn build(name: &str, qtype: RecordType, mode: Mode, id: u16) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = false;
    let mut q = Query::query(Name::from_ascii(format!("{name}.")).expect("name"), qtype);
    q.set_query_class(DNSClass::IN);
    m.add_query(q);
    if let Mode::Edns(size) = mode {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode")
}

pub fn udp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    for _ in 0..3 {
        sock.send_to(packet, server).ok()?;
        let mut buf = [0u8; 65_535];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Message::from_vec(&buf[..n]).ok();
        }
    }
    None
}

pub fn tcp(server: SocketAddr, packet: &[u8]) -> Option<Message> {
    let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let len = u16::try_from(packet.len()).ok()?;
    s.write_all(&len.to_be_bytes()).ok()?;
    s.write_all(packet).ok()?;
    let mut l = [0u8; 2];
    s.read_exact(&mut l).ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(l))];
    s.read_exact(&mut buf).ok()?;
    Message::from_vec(&buf).ok()
}

/// Sends raw bytes over UDP and returns the raw reply, if any arrives within `wait`.
pub fn udp_raw(server: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(wait)).ok()?;
    sock.send_to(packet, server).ok()?;
    let mut buf = [0u8; 65_535];
    let (n, _) = sock.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

/// Asks `server` one question and returns the parsed response (UDP with EDNS 1232).
pub fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    udp(server, &build(name, qtype, Mode::Edns(1232), 7)).expect("DNS response")
}

/// Starts the `parapet` at `binary` with activation `auto`, answering DNS on a free loopback
/// port with response-rate limiting at `rrl_rate` answers a second (0 turns it off), and with
/// the `extra` arguments after those.
pub fn serving_node(binary: &str, rrl_rate: u32, extra: &[&str]) -> Node {
    let rate = rrl_rate.to_string();
    let args = [
        "--activation",
        "auto",
        "--dns-listen",
        "127.0.0.1:0",
        "--dns-rrl-rate",
        &rate,
    ];
    Node::start(NodeOptions::new(binary).args(args.iter().chain(extra).copied()))
}
