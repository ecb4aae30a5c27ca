//! Differential test: the same zone in Parapet and in Knot, thousands of queries, zero
//! differences in rcode, flags, answer section, and authority/glue for negative answers and
//! referrals.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RecordType};
use parapet_testkit::Knot;
use parapet_testkit::dns::{Mode, build, serving_node, tcp, udp};
use parapet_testkit::zones::every_type_zone;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");
const ZONE: &str = "diff.test";

const QTYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::MX,
    RecordType::TXT,
    RecordType::NS,
    RecordType::SOA,
    RecordType::CNAME,
    RecordType::SRV,
    RecordType::CAA,
    RecordType::DS,
    RecordType::PTR,
    RecordType::HTTPS,
    RecordType::SVCB,
    RecordType::TLSA,
    RecordType::SSHFP,
    RecordType::NAPTR,
    RecordType::RRSIG,
    RecordType::NSEC,
];

/// Records the shared test zone lacks: an owner whose first label starts with '-' (escaped as
/// `\-` in presentation form, found by its bytes).
const EXTRA_RECORDS: &str = "-foo A 192.0.2.90\n-foo.wild TXT \"hyphen\"\n-deleg NS ns.elsewhere.net.\n\
    keys DNSKEY 257 3 13 mdsswUyr3DPW132mOi8V9xESWE8jTo0dxCjjnopKl+GqJxpVXckHAeF+KkxLbxILfDLUT0rAK9iUzy1L53eKGQ==\n\
    keys DNSKEY 256 3 RSASHA256 AwEAAa ( vPt5yJOg4= )\n\
    x._smimecert SMIMEA 3 1 1 0c72ac70b745ac19998811b131d662c9 ac69dbdbe7cb23e5b514b56664c5d3d6\n\
    y._openpgpkey OPENPGPKEY mQINBFit2jsBEADrbl5vjVxYeAE0g0IDYCBpHirv1Sjlqxx5gjtPhb2YhvyDMXjq\n";

/// RRsets with more names than the codec compresses in one message (120): 64 PTR records,
/// which fit a 1,232-byte answer only with every name compressed, and 2,500 addresses, which
/// fit a TCP answer only so.
fn large_sets() -> String {
    let mut z = String::new();
    for i in 0..64 {
        let _ = writeln!(z, "p64 PTR a{i}.{ZONE}.");
    }
    for i in 0..2500 {
        let _ = writeln!(z, "biga A 10.9.{}.{}", i / 250, i % 250 + 1);
    }
    z
}

/// Names of the records above whose types the main query list does not hold, and their type
/// numbers: each is asked in every mode.
const EXTRA_TYPED: [(&str, u16); 3] = [("keys", 48), ("x._smimecert", 53), ("y._openpgpkey", 61)];

fn query_names(zone_text: &str) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for line in zone_text.lines().filter(|l| !l.starts_with('$')) {
        let owner = line.split_whitespace().next().unwrap_or("@");
        // Of the mail hosts behind `manymx`, a few are enough.
        if owner.ends_with(".manymx") && !owner.starts_with("mx1.") {
            continue;
        }
        let fq = if owner == "@" {
            ZONE.to_owned()
        } else {
            // A leading '-' is written `\-` in presentation form.
            let owner = owner.replace("*.", "star.");
            match owner.strip_prefix('-') {
                Some(rest) => format!("\\-{rest}.{ZONE}"),
                None => format!("{owner}.{ZONE}"),
            }
        };
        names.insert(fq);
    }
    for extra in [
        "nx1",
        "nx2.host1",
        "a.b.wild",
        "q.wild",
        "explicit.wild",
        "x.wc",
        "ent.a",
        "a",
        "y.z.ent2",
        "z.ent2",
        "a.ent3",
        "c.a.ent3",
        "b.a.ent3",
        "x.sub",
        "deep.x.sub",
        "ns1.sub",
        "sub",
        "x.other",
        "host1.host1",
        "_tcp",
        "_udp",
        "mixed",
        // A dot inside a label is no label boundary: these are one label under the zone or
        // `wild` (never below the delegation `sub`, nor `wild`'s wildcard for `a\.wild`).
        "a\\.sub",
        "x.a\\.sub",
        "a\\.wild",
        "q\\.x.wild",
        "\\-x.wild",
        "x.\\-deleg",
    ] {
        names.insert(format!("{extra}.{ZONE}"));
    }
    names.insert("example.org".into());
    names.insert("test".into());
    names.insert("x.diff\\.test".into());
    names.insert("WwW.DiFf.TeSt".into());
    names.insert("HOST12.DIFF.TEST".into());
    names.into_iter().collect()
}

fn rrsets(records: &[hickory_proto::rr::Record], types: Option<&[RecordType]>) -> Vec<String> {
    let mut out: Vec<String> = records
        .iter()
        .filter(|r| types.is_none_or(|t| t.contains(&r.record_type())))
        .map(|r| {
            format!(
                "{} {} {} {}",
                r.name.to_ascii().to_lowercase(),
                r.record_type(),
                r.ttl,
                r.data.to_string().to_lowercase()
            )
        })
        .collect();
    out.sort();
    out
}

/// A name in presentation form, read by its labels: `\\x` stands for `x` (hickory's parser
/// refuses a label starting with '-', even escaped, though the wire carries it).
fn name_of(text: &str) -> Name {
    let mut labels: Vec<Vec<u8>> = vec![Vec::new()];
    let mut bytes = text.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'\\' => labels
                .last_mut()
                .expect("a label")
                .push(bytes.next().expect("an escaped character")),
            b'.' => labels.push(Vec::new()),
            _ => labels.last_mut().expect("a label").push(b),
        }
    }
    Name::from_labels(labels).expect("name")
}

/// The query for `name` (in presentation form), as `build` writes it; `flagged`: with RD and CD
/// set.
fn query_packet(name: &str, qtype: RecordType, mode: Mode, id: u16, flagged: bool) -> Vec<u8> {
    let mut query = Message::from_vec(&build("stand.in", qtype, mode, id)).expect("own query");
    query.queries[0].set_name(name_of(name));
    query.metadata.recursion_desired = flagged;
    query.metadata.checking_disabled = flagged;
    query.to_vec().expect("encode")
}

/// What is compared, as dnsdiff.py compares it, with the RD and CD bits the answer copied.
fn summary(
    server: SocketAddr,
    name: &str,
    qtype: RecordType,
    (mode, flagged): (Mode, bool),
) -> String {
    let packet = query_packet(name, qtype, mode, 4242, flagged);
    let (response, tc) = match mode {
        Mode::Tcp => (tcp(server, &packet), false),
        _ => match udp(server, &packet) {
            Some(r) if r.metadata.truncation => (tcp(server, &packet), true),
            other => (other, false),
        },
    };
    let Some(r) = response else {
        return "no response".into();
    };
    let answer = rrsets(&r.answers, None);
    let auth = rrsets(&r.authorities, Some(&[RecordType::SOA, RecordType::NS]));
    let referral =
        answer.is_empty() && auth.iter().any(|a| a.contains(" NS ")) && !r.metadata.authoritative;
    let mut s = format!(
        "rcode={} aa={} rd={} cd={} tc={tc} answer={answer:?}",
        r.metadata.response_code,
        r.metadata.authoritative,
        r.metadata.recursion_desired,
        r.metadata.checking_disabled
    );
    if answer.is_empty() {
        let _ = write!(s, " authority={auth:?}");
    }
    if referral {
        let _ = write!(
            s,
            " glue={:?}",
            rrsets(&r.additionals, Some(&[RecordType::A, RecordType::AAAA]))
        );
    }
    s
}

#[test]
fn answers_match_knot_for_the_same_zone() {
    assert!(
        Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
    let node = serving_node(
        BIN,
        0,
        &[
            "--nameserver",
            "ns1.parapet.test",
            "--nameserver",
            "ns2.parapet.test",
        ],
    );
    let dns = node.dns_addr();
    let zone = node.create_zone(ZONE);
    let text = every_type_zone() + EXTRA_RECORDS + &large_sets();
    let imported = parapet_testkit::import_zone(&node, &zone, &text);
    assert_eq!(imported["success"], true, "{imported}");
    let exported = parapet_testkit::export_zone(&node, &zone);
    let knot = Knot::start(ZONE, &exported);

    // The DNS index follows the snapshot: wait until Parapet serves the imported zone.
    parapet_testkit::eventually(Duration::from_secs(5), "parapet to serve the zone", || {
        summary(
            dns,
            &format!("host1.{ZONE}"),
            RecordType::A,
            (Mode::Edns(1232), false),
        )
        .contains("10.0.0.1")
    });

    let names = query_names(&text);
    let modes = [Mode::Edns(1232), Mode::NoEdns, Mode::Edns(512), Mode::Tcp];
    let mut differences = Vec::new();
    let mut count = 0;
    for (i, name) in names.iter().enumerate() {
        for (j, qtype) in QTYPES.iter().chain([RecordType::ANY].iter()).enumerate() {
            // The second EDNS query, in other case, is answered from Parapet's response cache.
            let upper = name.to_ascii_uppercase();
            // The third also with RD and CD set, which the answer copies.
            for (mode, qname) in [
                ((Mode::Edns(1232), false), name),
                ((modes[(i + j) % modes.len()], false), name),
                ((Mode::Edns(1232), true), &upper),
            ] {
                count += 1;
                let ours = summary(dns, qname, *qtype, mode);
                let theirs = summary(knot.addr, qname, *qtype, mode);
                if ours != theirs {
                    differences.push(format!(
                        "{qname} {qtype} {mode:?}\n  parapet: {ours}\n  knot:    {theirs}"
                    ));
                }
            }
        }
    }
    for (owner, code) in EXTRA_TYPED {
        let name = format!("{owner}.{ZONE}");
        for mode in modes {
            count += 1;
            let qtype = RecordType::from(code);
            let ours = summary(dns, &name, qtype, (mode, false));
            let theirs = summary(knot.addr, &name, qtype, (mode, false));
            assert!(!ours.contains("answer=[]"), "{name} {qtype:?}: {ours}");
            if ours != theirs {
                differences.push(format!(
                    "{name} {qtype} {mode:?}\n  parapet: {ours}\n  knot:    {theirs}"
                ));
            }
        }
    }
    for (owner, qtype) in [("p64", RecordType::PTR), ("biga", RecordType::A)] {
        let name = format!("{owner}.{ZONE}");
        for mode in modes {
            count += 1;
            let ours = summary(dns, &name, qtype, (mode, false));
            let theirs = summary(knot.addr, &name, qtype, (mode, false));
            if ours != theirs {
                differences.push(format!(
                    "{name} {qtype} {mode:?}\n  parapet: {ours}\n  knot:    {theirs}"
                ));
            }
        }
    }
    // Types no zone holds: reserved (0), meta and pseudo types, a private one; at a few names.
    let rare = [
        RecordType::ZERO,
        RecordType::OPT,
        RecordType::TSIG,
        RecordType::Unknown(249),
        RecordType::Unknown(253),
        RecordType::Unknown(65280),
    ];
    for name in names.iter().step_by(names.len().div_ceil(12).max(1)) {
        for qtype in rare {
            for mode in [(Mode::Edns(1232), false), (Mode::NoEdns, false)] {
                count += 1;
                let ours = summary(dns, name, qtype, mode);
                let theirs = summary(knot.addr, name, qtype, mode);
                if ours != theirs {
                    differences.push(format!(
                        "{name} {qtype} {mode:?}\n  parapet: {ours}\n  knot:    {theirs}"
                    ));
                }
            }
        }
    }
    assert!(count > 2000, "only {count} queries");
    assert!(
        differences.is_empty(),
        "{} of {count} queries differ from Knot:\n{}",
        differences.len(),
        differences
            .iter()
            .take(25)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}
