//! A small DNS client for reading delegations: asks one server one question, over UDP with a
//! TCP retry on truncation. Every response is checked against the question before it is used.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("{server}: no answer within {timeout:?}")]
    Timeout {
        server: SocketAddr,
        timeout: Duration,
    },
    #[error("{server}: {message}")]
    Io { server: SocketAddr, message: String },
    #[error("{server}: bad response: {message}")]
    BadResponse { server: SocketAddr, message: String },
    #[error("{server} answered {rcode}")]
    Rcode { server: SocketAddr, rcode: String },
    #[error("'{0}' is not a valid domain name")]
    BadName(String),
    #[error("no nameserver in /etc/resolv.conf")]
    NoResolver,
    #[error("could not find the parent zone's nameservers for {0}")]
    NoParent(String),
}

pub struct DnsClient {
    timeout: Duration,
}

fn normalize(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

impl DnsClient {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }

    /// Sends one question to `server` and returns the checked response.
    pub async fn ask(
        &self,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        recursion: bool,
    ) -> Result<Message, LookupError> {
        let qname = Name::from_ascii(format!("{}.", name.trim_end_matches('.')))
            .map_err(|_| LookupError::BadName(name.to_owned()))?;
        let mut request = Message::query();
        request.metadata.recursion_desired = recursion;
        request.add_query(Query::query(qname.clone(), rtype));
        let bytes = request
            .to_vec()
            .map_err(|e| LookupError::BadName(format!("{name}: {e}")))?;
        let io = |e: std::io::Error| LookupError::Io {
            server,
            message: e.to_string(),
        };
        let bind: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(bind).await.map_err(io)?;
        socket.connect(server).await.map_err(io)?;
        let mut buf = vec![0u8; 4096];
        let response = tokio::time::timeout(self.timeout, async {
            for _ in 0..2 {
                socket.send(&bytes).await.map_err(io)?;
                let Ok(received) =
                    tokio::time::timeout(self.timeout / 2, socket.recv(&mut buf)).await
                else {
                    continue;
                };
                let n = received.map_err(io)?;
                if let Ok(m) = Message::from_vec(&buf[..n])
                    && m.metadata.id == request.metadata.id
                {
                    return Ok(Some(m));
                }
            }
            Ok::<_, LookupError>(None)
        })
        .await
        .ok()
        .transpose()?
        .flatten();
        let mut response = response.ok_or(LookupError::Timeout {
            server,
            timeout: self.timeout,
        })?;
        if response.metadata.truncation {
            response = self.ask_tcp(server, &bytes).await?;
        }
        let bad = |m: &str| LookupError::BadResponse {
            server,
            message: m.to_owned(),
        };
        if response.metadata.id != request.metadata.id
            || response.metadata.message_type != MessageType::Response
        {
            return Err(bad("not a response to our query"));
        }
        if response.metadata.op_code != OpCode::Query {
            return Err(bad("unexpected opcode"));
        }
        let same_question = response
            .queries
            .first()
            .is_some_and(|q| q.name().eq_case(&qname) || normalize(q.name()) == normalize(&qname));
        if !same_question {
            return Err(bad("answer for another question"));
        }
        Ok(response)
    }

    async fn ask_tcp(&self, server: SocketAddr, bytes: &[u8]) -> Result<Message, LookupError> {
        let io = |e: std::io::Error| LookupError::Io {
            server,
            message: e.to_string(),
        };
        let run = async {
            let mut stream = TcpStream::connect(server).await.map_err(io)?;
            let len = u16::try_from(bytes.len())
                .map_err(|_| LookupError::BadName("query too long".into()))?;
            stream.write_all(&len.to_be_bytes()).await.map_err(io)?;
            stream.write_all(bytes).await.map_err(io)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(io)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.map_err(io)?;
            Message::from_vec(&buf).map_err(|e| LookupError::BadResponse {
                server,
                message: e.to_string(),
            })
        };
        tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| LookupError::Timeout {
                server,
                timeout: self.timeout,
            })?
    }

    /// The NS names that `server` (an authoritative server of the parent zone) delegates
    /// `zone` to: from the answer, or from the authority section of a referral.
    pub async fn delegation_at(
        &self,
        server: SocketAddr,
        zone: &str,
    ) -> Result<Vec<String>, LookupError> {
        let response = self.ask(server, zone, RecordType::NS, false).await?;
        match response.metadata.response_code {
            ResponseCode::NoError => {}
            ResponseCode::NXDomain => return Ok(Vec::new()),
            rcode => {
                return Err(LookupError::Rcode {
                    server,
                    rcode: rcode.to_string(),
                });
            }
        }
        let zone = zone.trim_end_matches('.').to_ascii_lowercase();
        let mut names: Vec<String> = response
            .answers
            .iter()
            .chain(response.authorities.iter())
            .filter(|r| normalize(&r.name) == zone)
            .filter_map(|r| match &r.data {
                RData::NS(ns) => Some(normalize(&ns.0)),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Finds the parent zone's authoritative servers through the system resolver, then asks
    /// them for the delegation of `zone`.
    pub async fn delegation_via_system(&self, zone: &str) -> Result<Vec<String>, LookupError> {
        let resolvers = system_resolvers();
        let resolver = *resolvers.first().ok_or(LookupError::NoResolver)?;
        let mut parent = zone.trim_end_matches('.');
        while let Some((_, up)) = parent.split_once('.') {
            parent = up;
            let response = self.ask(resolver, parent, RecordType::NS, true).await?;
            let servers: Vec<String> = response
                .answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::NS(ns) => Some(normalize(&ns.0)),
                    _ => None,
                })
                .collect();
            if servers.is_empty() {
                continue;
            }
            let mut last_error = None;
            for ns in servers {
                for addr in self.addresses(resolver, &ns).await {
                    match self.delegation_at(SocketAddr::new(addr, 53), zone).await {
                        Ok(names) => return Ok(names),
                        Err(e) => last_error = Some(e),
                    }
                }
            }
            return Err(last_error.unwrap_or_else(|| LookupError::NoParent(zone.to_owned())));
        }
        Err(LookupError::NoParent(zone.to_owned()))
    }

    async fn addresses(&self, resolver: SocketAddr, host: &str) -> Vec<IpAddr> {
        let mut out = Vec::new();
        for rtype in [RecordType::A, RecordType::AAAA] {
            if let Ok(m) = self.ask(resolver, host, rtype, true).await {
                out.extend(m.answers.iter().filter_map(|r| match &r.data {
                    RData::A(a) => Some(IpAddr::V4(a.0)),
                    RData::AAAA(a) => Some(IpAddr::V6(a.0)),
                    _ => None,
                }));
            }
        }
        out
    }
}

/// Nameservers from /etc/resolv.conf.
fn system_resolvers() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}
