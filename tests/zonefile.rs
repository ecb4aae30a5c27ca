//! Zone files: what Parapet exports is accepted by BIND's checker and re-imports to the same
//! records; bad files are refused whole, with every bad line listed.

use std::process::Command;

use parapet_testkit::zones::every_type_zone;
use parapet_testkit::{Node, NodeOptions, export_zone, import_zone};
use serde_json::Value;

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

#[test]
fn export_passes_named_checkzone_and_reimports_identically() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let zone = node.create_zone("diff.test");
    let imported = import_zone(&node, &zone, &every_type_zone());
    assert_eq!(imported["success"], true, "{imported}");
    let exported = export_zone(&node, &zone);

    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("diff.test.zone");
    std::fs::write(&file, &exported).expect("write");
    let checker = ["/usr/bin/named-checkzone", "/usr/sbin/named-checkzone"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists());
    let checker =
        checker.expect("named-checkzone is required (Debian bind9-utils; .ci/run installs it)");
    let out = Command::new(checker)
        .args(["-k", "fail", "-i", "local", "diff.test"])
        .arg(&file)
        .output()
        .expect("run named-checkzone");
    assert!(
        out.status.success(),
        "named-checkzone rejected the export:\n{}\n{exported}",
        String::from_utf8_lossy(&out.stdout)
    );

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
    let messages: Vec<&str> = result["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter_map(|e| e["message"].as_str())
        .collect();
    for line in ["line 3", "line 4", "line 5", "line 6", "line 7"] {
        assert!(
            messages.iter().any(|m| m.starts_with(line)),
            "{line} not reported: {messages:?}"
        );
    }
    let list = node.ok("GET", &format!("/zones/{zone}/dns_records"), None);
    assert_eq!(list, Value::Array(vec![]), "nothing imported");
}
