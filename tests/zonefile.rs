//! Zone files: what Parapet exports is accepted by BIND's checker and re-imports to the same
//! records; bad files are refused whole, with every bad line listed.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use hickory_proto::rr::{RData, RecordType};
use parapet_testkit::dns::{Mode, build, serving_node, tcp};
use parapet_testkit::zones::every_type_zone;
use parapet_testkit::{Knot, Node, NodeOptions, eventually, export_zone, import_zone};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// The zone's records with both test zone names written `Z` (a URI's target keeps the original
/// zone's name through the textual rename).
fn records(node: &Node, zone: &str) -> Vec<String> {
    let z = |s: &str| s.replace("diff.test", "Z").replace("copy.test", "Z");
    // Every page, up to one that is not full.
    let mut list = Vec::new();
    for page in 1.. {
        let got = node.ok(
            "GET",
            &format!("/zones/{zone}/dns_records?per_page=5000&page={page}"),
            None,
        );
        let got = got.as_array().expect("list").clone();
        let full = got.len() == 5000;
        list.extend(got);
        if !full {
            break;
        }
    }
    let mut out: Vec<String> = list
        .iter()
        .map(|r| {
            format!(
                "{} {} {} {} {} {}",
                z(r["name"].as_str().unwrap_or("")),
                r["type"],
                z(r["content"].as_str().unwrap_or("")),
                r["ttl"],
                r["proxied"],
                r["priority"]
            )
        })
        .collect();
    out.sort();
    out
}

fn named_checkzone() -> PathBuf {
    ["/usr/bin/named-checkzone", "/usr/sbin/named-checkzone"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("named-checkzone is required (Debian bind9-utils; .ci/run installs it)")
}

/// The import `result` names each of `lines` ("line 3") in an error message.
fn assert_lines_reported(result: &Value, lines: &[&str]) {
    let messages: Vec<&str> = result["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for line in lines {
        assert!(
            messages.iter().any(|m| m.starts_with(line)),
            "{line} not reported: {messages:?}"
        );
    }
}

/// BIND's checker accepts `exported` as the zone `zone`.
fn assert_checkzone_accepts(zone: &str, exported: &str) {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(format!("{zone}.zone"));
    std::fs::write(&file, exported).expect("write");
    let out = Command::new(named_checkzone())
        .args(["-k", "fail", "-i", "local", zone])
        .arg(&file)
        .output()
        .expect("run named-checkzone");
    assert!(
        out.status.success(),
        "named-checkzone rejected the export:\n{}\n{exported}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn export_passes_named_checkzone_and_reimports_identically() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let zone = node.create_zone("diff.test");
    let imported = import_zone(&node, &zone, &every_type_zone());
    assert_eq!(imported["success"], true, "{imported}");
    let exported = export_zone(&node, &zone);

    assert_checkzone_accepts("diff.test", &exported);

    let copy = node.create_zone("copy.test");
    let reimported = import_zone(&node, &copy, &exported.replace("diff.test.", "copy.test."));
    assert_eq!(reimported["success"], true, "{reimported}");
    let (original, copied) = (records(&node, &zone), records(&node, &copy));
    let missing: Vec<&String> = original.iter().filter(|r| !copied.contains(r)).collect();
    let extra: Vec<&String> = copied.iter().filter(|r| !original.contains(r)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "lost in the round trip: {missing:?}\ngained: {extra:?}"
    );
}

#[test]
fn an_apex_cname_exports_as_a_file_bind_accepts_and_imports_back() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let zone = node.create_zone("flat.test");
    let text = "$ORIGIN flat.test.\n@ 300 IN CNAME target.example.net. ; cf_tags=cf-proxied:false\n@ 300 IN MX 10 mail.example.net.\n@ 300 IN TXT \"v=spf1 -all\"\nwww 300 IN A 192.0.2.1\n";
    let imported = import_zone(&node, &zone, text);
    assert_eq!(imported["success"], true, "{imported}");
    let exported = export_zone(&node, &zone);
    assert_checkzone_accepts("flat.test", &exported);
    let copy = node.create_zone("flatten.test");
    let reimported = import_zone(
        &node,
        &copy,
        &exported.replace("flat.test.", "flatten.test."),
    );
    assert_eq!(reimported["success"], true, "{reimported}");
    let (original, copied) = (records(&node, &zone), records(&node, &copy));
    assert_eq!(original.len(), 4, "{original:?}");
    assert_eq!(
        original,
        copied
            .iter()
            .map(|r| r.replace("flatten.test", "flat.test"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn bad_zone_files_are_refused_whole_with_every_line_named() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let zone = node.create_zone("bad.test");
    let bad = [
        "$ORIGIN bad.test.",
        "ok 300 IN A 192.0.2.1",
        "$INCLUDE other.zone",
        "broken IN A 192.0.2.999",
        "weird IN CH A 192.0.2.1",
        "outside.example. IN A 192.0.2.2",
        "multi IN TXT ( \"never closed\"",
    ]
    .join("\n");
    let result = import_zone(&node, &zone, &bad);
    assert_eq!(result["success"], false);
    assert_lines_reported(&result, &["line 3", "line 4", "line 5", "line 6", "line 7"]);
    let list = node.ok("GET", &format!("/zones/{zone}/dns_records"), None);
    assert_eq!(list, Value::Array(vec![]), "nothing imported");
}

/// The character strings `name` answers with (over TCP: long TXT exceeds a UDP answer), from
/// a Parapet node or from Knot.
fn txt_strings(dns: std::net::SocketAddr, name: &str) -> Vec<Vec<Vec<u8>>> {
    let answer = tcp(dns, &build(name, RecordType::TXT, Mode::Tcp, 7)).expect("DNS answer");
    let mut got: Vec<Vec<Vec<u8>>> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::TXT(t) => Some(t.txt_data.iter().map(|s| s.to_vec()).collect()),
            _ => None,
        })
        .collect();
    got.sort();
    got
}

#[test]
fn awkward_txt_is_served_and_exported_exactly_as_imported() {
    let node = serving_node(BIN, 0, &[]);
    let dns = node.dns_addr();
    let zone = node.create_zone("txt.test");
    let (a, b) = ("a".repeat(255), "b".repeat(255));
    let file = format!(
        "$ORIGIN txt.test.\n$TTL 300\n\
         quotes TXT \"say \\\"hi\\\"\"\n\
         slashes TXT \"back\\\\slash\" \\\\\n\
         bytes TXT \"\\000\\200\\255\" \"caf\\195\\169\" \"tab\\009\"\n\
         utf8 TXT \"café ünïcode\"\n\
         spaces TXT \" lead \"\nspaces TXT \"  \" \"\"\n\
         long TXT \"{a}\" \"{b}\" \"ccc\"\n\
         looksquoted TXT \"\\\"quoted\\\" word\"\n"
    );
    let imported = import_zone(&node, &zone, &file);
    assert_eq!(imported["success"], true, "{imported}");
    let api = |name: &str, content: String| {
        node.ok(
            "POST",
            &format!("/zones/{zone}/dns_records"),
            Some(json!({"type": "TXT", "name": name, "content": content})),
        )
    };
    let api_long = format!("{} é {}", "x".repeat(1000), "y".repeat(900));
    api("apilong", api_long.clone());
    api("apiquoted", "\"one\"   \"two\\\\\"".into());
    api("apiedges", " edge spaces ".into());
    // A quoted string over 255 bytes is sent split, as Cloudflare splits it.
    api("apisplit", format!("\"{}\"", "z".repeat(256)));

    let s = |t: &[u8]| t.to_vec();
    let expected: Vec<(&str, Vec<Vec<Vec<u8>>>)> = vec![
        ("quotes", vec![vec![s(b"say \"hi\"")]]),
        ("slashes", vec![vec![s(b"back\\slash"), s(b"\\")]]),
        (
            "bytes",
            vec![vec![s(&[0, 200, 255]), s("café".as_bytes()), s(b"tab\t")]],
        ),
        ("utf8", vec![vec![s("café ünïcode".as_bytes())]]),
        ("spaces", vec![vec![s(b"  "), s(b"")], vec![s(b" lead ")]]),
        (
            "long",
            vec![vec![s(a.as_bytes()), s(b.as_bytes()), s(b"ccc")]],
        ),
        ("looksquoted", vec![vec![s(b"\"quoted\" word")]]),
        (
            "apilong",
            vec![api_long.as_bytes().chunks(255).map(s).collect()],
        ),
        ("apiquoted", vec![vec![s(b"one"), s(b"two\\")]]),
        ("apiedges", vec![vec![s(b" edge spaces ")]]),
        ("apisplit", vec![vec![s(&[b'z'; 255]), s(b"z")]]),
    ];
    eventually(Duration::from_secs(5), "the records to be served", || {
        !txt_strings(dns, "apiedges.txt.test").is_empty()
    });
    for (name, want) in &expected {
        assert_eq!(
            &txt_strings(dns, &format!("{name}.txt.test")),
            want,
            "{name}"
        );
    }

    let exported = export_zone(&node, &zone);
    assert_checkzone_accepts("txt.test", &exported);
    // Knot loads the export and reads every string as Parapet serves it.
    assert!(Knot::available(), "knotd is required (.ci/run installs it)");
    let knot = Knot::start("txt.test", &exported);
    for (name, want) in &expected {
        assert_eq!(
            &txt_strings(knot.addr, &format!("{name}.txt.test")),
            want,
            "Knot: {name}"
        );
    }

    let copy = node.create_zone("copy.test");
    let reimported = import_zone(&node, &copy, &exported.replace("txt.test.", "copy.test."));
    assert_eq!(reimported["success"], true, "{reimported}");
    let contents = |zone: &str| {
        let list = node.ok(
            "GET",
            &format!("/zones/{zone}/dns_records?per_page=100"),
            None,
        );
        let mut v: Vec<String> = list
            .as_array()
            .expect("list")
            .iter()
            .map(|r| {
                format!(
                    "{} {}",
                    r["name"]
                        .as_str()
                        .unwrap_or("")
                        .split('.')
                        .next()
                        .unwrap_or(""),
                    // Content is kept as written: compared as the strings it sends.
                    parapet_model::txt::canonical(r["content"].as_str().unwrap_or(""))
                        .unwrap_or_default()
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(contents(&zone), contents(&copy));
}

#[test]
fn malformed_txt_is_refused_with_nothing_stored() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let zone = node.create_zone("badtxt.test");
    let file = format!(
        "$ORIGIN badtxt.test.\nok TXT \"fine\"\nescape TXT \"\\999\"\nlong TXT \"{}\"\nshort TXT \"\\25\"\n",
        "a".repeat(300)
    );
    let result = import_zone(&node, &zone, &file);
    assert_eq!(result["success"], false, "{result}");
    assert_lines_reported(&result, &["line 3", "line 4", "line 5"]);
    for content in [
        "\"\\999\"".to_owned(),
        "\"open".to_owned(),
        "x".repeat(2049),
    ] {
        let (status, body) = node.call(
            "POST",
            &format!("/zones/{zone}/dns_records"),
            Some(json!({"type": "TXT", "name": "api", "content": content})),
        );
        assert_eq!(status, 400, "{content}: {body}");
    }
    let list = node.ok("GET", &format!("/zones/{zone}/dns_records"), None);
    assert_eq!(list, Value::Array(vec![]), "nothing stored");
}
