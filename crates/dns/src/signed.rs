//! Ordinary queries signed with TSIG (RFC 8945), such as a secondary's refresh SOA query: the
//! signature is verified with the keys of the zone asked about, and the answer is signed, the
//! request's MAC chained; a request that fails verification gets NOTAUTH with the TSIG error.
//! Zone transfers verify their own (see `xfr`). No IO here: the caller gives the time.

use crate::engine::{Answered, Client, Limits, Transport, answer_query_reserving};
use crate::index::DnsIndex;
use crate::rrl::ResponseKind;
use crate::tsig::{self, Key, RequestTsig, TsigFailure};

/// What a query's last record says about its signature.
pub enum Signature {
    /// No TSIG record: the query is answered as any other.
    None,
    /// A TSIG record, read.
    Present(RequestTsig),
    /// A TSIG record that cannot be read, or a message that cannot be walked to it.
    Malformed,
}

/// Looks for the TSIG record that ends `packet` (cheap for the queries with no additional
/// record, which most are).
pub fn signature(packet: &[u8]) -> Signature {
    if packet.len() < 12 || packet[10..12] == [0, 0] {
        return Signature::None;
    }
    match tsig::read_request(packet) {
        Ok(request) => Signature::Present(request),
        Err(TsigFailure::Malformed) => Signature::Malformed,
        Err(_) => Signature::None,
    }
}

/// The keys a query may be signed with: those of the secondaries of the zone its question is in.
fn zone_keys(index: &DnsIndex, packet: &[u8]) -> Vec<Key> {
    if packet.get(4..6) != Some(&[0, 1]) {
        return Vec::new();
    }
    let Some((qname, _)) = tsig::read_name(packet, 12) else {
        return Vec::new();
    };
    let Some(zone) = index.zone_for(&qname) else {
        return Vec::new();
    };
    zone.transfer_peers
        .iter()
        .filter_map(|p| p.tsig.as_ref())
        .map(|k| Key {
            name: k.name.to_ascii_lowercase(),
            secret: k.secret_bytes(),
        })
        .collect()
}

/// The header (and the question, when there is one that can be read) of `packet`, as a
/// response with `rcode`.
fn error_header(packet: &[u8], rcode: u8) -> Vec<u8> {
    let question_end = (packet[4..6] == [0, 1])
        .then(|| tsig::read_name(packet, 12))
        .flatten()
        .map(|(_, len)| 12 + len + 4)
        .filter(|&end| end <= packet.len());
    let mut out = packet[..question_end.unwrap_or(12)].to_vec();
    out[2] = 0x80 | (packet[2] & 0x79); // QR, opcode and RD copied.
    out[3] = rcode;
    out[4..6].copy_from_slice(&[0, u8::from(question_end.is_some())]);
    out[6..12].fill(0);
    out
}

/// NOTAUTH: RFC 8945's rcode for a request whose signature fails.
const NOTAUTH: u8 = 9;
const FORMERR: u8 = 1;

/// Answers a query that ends with the TSIG record `request`: signed when it verifies with a key
/// of the zone, else NOTAUTH with the TSIG error (`verified` then false, for rate limiting).
pub fn answer_signed_query(
    index: &DnsIndex,
    packet: &[u8],
    request: &RequestTsig,
    transport: Transport,
    limits: Limits,
    client: Option<&Client<'_>>,
    now: u64,
) -> Option<Answered> {
    if packet[2] & 0x80 != 0 {
        return None;
    }
    let keys = zone_keys(index, packet);
    match request.verify(packet, now, |name| {
        keys.iter().find(|k| k.name == name).cloned()
    }) {
        Ok(signed) => {
            let unsigned = request.unsigned(packet, false);
            let room = tsig::signature_len(&signed.key);
            let Answered {
                mut bytes,
                kind,
                verified,
            } = answer_query_reserving(index, &unsigned, transport, limits, client, room)?;
            tsig::sign(&mut bytes, &signed.key, Some(&signed.mac), true, now);
            // A signature does not prove the source address (a signed query can be replayed
            // from a spoofed one within its fudge): rate limiting spares only a verified
            // cookie's answers.
            Some(Answered {
                bytes,
                verified,
                kind,
            })
        }
        Err(refusal) => {
            tracing::debug!(key = %request.key_name, error = refusal.error, "TSIG-signed query refused");
            let mut bytes = error_header(packet, NOTAUTH);
            // A query with an OPT gets one back (RFC 6891 §6.1.1), before the TSIG, its DO
            // bit copied (RFC 3225 §3).
            let unsigned = request.unsigned(packet, false);
            if let Ok(m) = hickory_proto::op::Message::from_vec(&unsigned)
                && let Some(edns) = &m.edns
            {
                append_opt(&mut bytes, limits.max_udp_payload, edns.flags().dnssec_ok);
            }
            request.append_error(&mut bytes, &refusal, now);
            Some(Answered {
                bytes,
                verified: false,
                kind: ResponseKind::ERROR,
            })
        }
    }
}

/// Appends a bare OPT record (root owner, our UDP payload size, no extended rcode, version 0,
/// the DO bit as given).
fn append_opt(message: &mut Vec<u8>, payload: u16, dnssec_ok: bool) {
    message.push(0);
    message.extend_from_slice(&41u16.to_be_bytes());
    message.extend_from_slice(&payload.to_be_bytes());
    message.extend_from_slice(&[0, 0, if dnssec_ok { 0x80 } else { 0 }, 0, 0, 0]);
    let arcount = u16::from_be_bytes([message[10], message[11]]).saturating_add(1);
    message[10..12].copy_from_slice(&arcount.to_be_bytes());
}

/// The answer to a query whose TSIG record cannot be read.
pub fn malformed(packet: &[u8]) -> Option<Answered> {
    (packet.len() >= 12 && packet[2] & 0x80 == 0).then(|| Answered {
        bytes: error_header(packet, FORMERR),
        verified: false,
        kind: ResponseKind::ERROR,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Message, Query, ResponseCode};
    use hickory_proto::rr::{Name, RecordType};

    #[test]
    fn a_refused_signed_query_with_an_opt_gets_one_back() {
        let now = 1_800_000_000;
        let key = Key {
            name: "unknown-key".into(),
            secret: vec![7; 32],
        };
        for (with_opt, dnssec_ok) in [(true, false), (true, true), (false, false)] {
            let mut query = Message::query();
            query.add_query(Query::query(
                Name::from_ascii("example.com.").expect("name"),
                RecordType::SOA,
            ));
            if with_opt {
                let mut edns = Edns::new();
                edns.set_dnssec_ok(dnssec_ok);
                query.set_edns(edns);
            }
            let mut packet = query.to_vec().expect("query");
            tsig::sign(&mut packet, &key, None, true, now);
            let Signature::Present(request) = signature(&packet) else {
                panic!("a signed query");
            };
            let answered = answer_signed_query(
                &DnsIndex::default(),
                &packet,
                &request,
                Transport::Udp,
                Limits {
                    max_udp_payload: 1232,
                },
                None,
                now,
            )
            .expect("an answer");
            let response = Message::from_vec(&answered.bytes).expect("a response");
            assert_eq!(response.metadata.response_code, ResponseCode::NotAuth);
            assert_eq!(response.edns.is_some(), with_opt, "{response:?}");
            assert_eq!(
                response.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok),
                dnssec_ok,
                "the DO bit copied (RFC 3225 §3)"
            );
            // The TSIG error stays last (read as a signature, or as the last record).
            let last = response
                .additionals
                .last()
                .map(|r| u16::from(r.record_type()));
            assert!(
                response.signature.is_some() || last == Some(250),
                "{response:?}"
            );
            assert_eq!(
                u16::from_be_bytes([answered.bytes[10], answered.bytes[11]]),
                1 + u16::from(with_opt)
            );
        }
    }
}
