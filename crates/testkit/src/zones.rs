//! Test zones.

use std::fmt::Write as _;

/// A zone named `diff.test` with every supported type, wildcards, delegations with glue,
/// CNAME chains (long, looping, dangling, into a delegation), empty non-terminals and TXT
/// RRsets large enough to force truncation.
pub fn every_type_zone() -> String {
    let mut z = String::from("$ORIGIN diff.test.\n$TTL 3600\n");
    z.push_str("@ 600 A 192.0.2.1\n@ 600 AAAA 2001:db8::1\n@ MX 10 mail\n@ MX 20 mail2.elsewhere.net.\n@ TXT \"v=spf1 -all\"\n@ CAA 0 issue \"ca.example\"\n");
    z.push_str("mail A 192.0.2.25\nmail AAAA 2001:db8::25\n");
    for i in 0..160u32 {
        let _ = writeln!(z, "host{i} 300 A 10.0.{}.{}", i / 256, i % 256);
        if i % 2 == 0 {
            let _ = writeln!(z, "host{i} AAAA 2001:db8::{i:x}");
        }
        if i % 3 == 0 {
            let _ = writeln!(z, "host{i} TXT \"text for host {i}\"");
        }
    }
    z.push_str(concat!(
        "www CNAME host1\n",
        "chain1 CNAME chain2\nchain2 CNAME chain3\nchain3 A 192.0.2.3\n",
        "ext CNAME target.elsewhere.net.\n",
        "loop1 CNAME loop2\nloop2 CNAME loop1\n",
        "dangling CNAME missing\n",
        "long1 CNAME long2\nlong2 CNAME long3\nlong3 CNAME long4\nlong4 CNAME long5\nlong5 CNAME long6\nlong6 CNAME long7\nlong7 A 192.0.2.7\n",
        "todeleg CNAME x.sub\ntobig CNAME bigtxt\n",
        "*.gp A 192.0.2.80\nc.gp A 192.0.2.81\nx.e.gp A 192.0.2.82\n",
        "*.wild A 192.0.2.50\n*.wild TXT \"wildcard\"\nexplicit.wild A 192.0.2.51\n",
        "*.wc CNAME host2\n",
        "deep.ent.a A 192.0.2.60\n",
        "x.y.z.ent2 TXT \"deep\"\n",
        "*.ent3 A 192.0.2.61\nb.a.ent3 A 192.0.2.62\n",
        "sub NS ns1.sub\nsub NS ns2.sub\nns1.sub A 192.0.2.70\nns2.sub AAAA 2001:db8::70\n",
        "sub DS 12345 13 2 3490A6806D47F17A34C29E2CE80E8A999FFBE4BE2F3A1C9A96B4F1B3A1D2E0F8\n",
        "other NS ns.elsewhere.net.\n",
        "mixed NS ns1.sub\nmixed NS ns.elsewhere.net.\n",
        "_sip._tcp SRV 10 5 5060 host3\n",
        "_http._tcp URI 10 1 \"https://diff.test/\"\n",
        "_443._tcp.host4 TLSA 3 1 1 0C72AC70B745AC19998811B131D662C9AC69DBDBE7CB23E5B514B56664C5D3D6\n",
        "host5 SSHFP 4 2 123456789ABCDEF67890123456789ABCDEF67890123456789ABCDEF123456789\n",
        "naptr NAPTR 100 10 \"S\" \"SIP+D2U\" \"\" _sip._udp.diff.test.\n",
        "https HTTPS 1 . alpn=h2\n",
        "svcb SVCB 1 host6 port=8443\n",
        "ptr PTR host7.diff.test.\n",
        "loc LOC 37 46 46.000 N 122 23 35.000 W 10.00m 100.00m 10.00m 10.00m\n",
        "cert CERT 1 12345 8 AQIDBA==\n",
    ));
    for i in 0..12 {
        let _ = writeln!(z, "bigtxt TXT \"{i:02} {}\"", "x".repeat(180));
    }
    // An RRset larger than any message (TCP's too), and one reached through a CNAME.
    for i in 0..6000 {
        let _ = writeln!(z, "hugetxt TXT \"{i:05}\"");
    }
    z.push_str("tohuge CNAME hugetxt\n");
    // A delegation whose second nameserver's glue overflows even a TCP message.
    z.push_str("bigdeleg NS ns1.bigdeleg\nbigdeleg NS ns2.bigdeleg\n");
    for i in 0..200 {
        let _ = writeln!(z, "ns1.bigdeleg A 10.2.0.{}", i + 1);
    }
    for i in 0..4400 {
        let _ = writeln!(z, "ns2.bigdeleg A 10.3.{}.{}", i / 250, i % 250 + 1);
    }
    // An answer that fits a TCP message whose additional section does not (the encoder
    // compresses the first 120 names of a message only).
    for i in 0..600 {
        let _ = writeln!(z, "manymx MX {i} mx{i}.manymx");
        let _ = writeln!(z, "mx{i}.manymx A 10.1.{}.{}", i / 256, i % 256);
        let _ = writeln!(z, "mx{i}.manymx AAAA 2001:db8:1::{i:x}");
    }
    let _ = writeln!(
        z,
        "longtxt TXT \"{}\" \"{}\" \"{}\"",
        "a".repeat(255),
        "b".repeat(255),
        "c".repeat(100)
    );
    z
}
