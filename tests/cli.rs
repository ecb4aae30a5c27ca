//! The `parapet` CLI against a running server, as a person or script would use it.

use std::process::{Command, Output};

use parapet_testkit::{Node, NodeOptions};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

fn run(node: &Node, token: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("PARAPET_API", &node.base)
        .env("PARAPET_API_TOKEN", token)
        .env("PARAPET_LOG", "error")
        .output()
        .expect("run cli")
}

fn ok(node: &Node, args: &[&str]) -> String {
    let out = run(node, &node.token, args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn cli_manages_zones_records_and_tokens() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let table = ok(&node, &["zone", "create", "example.org"]);
    assert!(
        table.starts_with("ID") && table.contains("example.org") && table.contains("active"),
        "{table}"
    );
    ok(
        &node,
        &[
            "record",
            "add",
            "example.org",
            "A",
            "www",
            "192.0.2.1",
            "--proxied",
        ],
    );
    ok(
        &node,
        &[
            "record",
            "add",
            "example.org",
            "MX",
            "@",
            "mail.example.org",
            "--priority",
            "10",
        ],
    );
    let listed: Value =
        serde_json::from_str(&ok(&node, &["record", "list", "example.org", "--json"]))
            .expect("json");
    let names: Vec<&str> = listed
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(names.len(), 2, "{listed}");
    assert!(names.contains(&"www.example.org"));
    let exported = ok(&node, &["zone", "export", "example.org"]);
    assert!(
        exported.contains("www.example.org.\t1\tIN\tA\t192.0.2.1 ; cf_tags=cf-proxied:true"),
        "{exported}"
    );

    // Bad input: a clear error naming the field, a non-zero exit, nothing stored.
    let bad = run(
        &node,
        &node.token,
        &["record", "add", "example.org", "A", "bad", "not-an-ip"],
    );
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("content"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Import a file into a new zone, named by its $ORIGIN.
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("imported.zone");
    std::fs::write(&file, "$ORIGIN imported.example.\n$TTL 600\n@ IN A 192.0.2.5\nwww IN CNAME @ ; cf_tags=cf-proxied:true\n").expect("write");
    let imported = ok(&node, &["zone", "import", file.to_str().expect("path")]);
    assert!(imported.contains('2'), "{imported}");
    let list: Value = serde_json::from_str(&ok(
        &node,
        &[
            "record",
            "list",
            "imported.example",
            "--json",
            "--type",
            "CNAME",
        ],
    ))
    .expect("json");
    assert_eq!(list[0]["proxied"], true);
    // A refused file leaves no zone behind (the one made for it goes again).
    let refused = dir.path().join("refused.zone");
    std::fs::write(&refused, "$ORIGIN refused.example.\nwww IN A 999.0.0.1\n").expect("write");
    let out = run(
        &node,
        &node.token,
        &["zone", "import", refused.to_str().expect("path")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 2") && stderr.contains("removed"),
        "{stderr}"
    );
    let zones = node.ok("GET", "/zones?name=refused.example", None);
    assert_eq!(zones, serde_json::json!([]), "{zones}");

    // Remove a record by id.
    let id = listed
        .as_array()
        .expect("array")
        .iter()
        .find(|r| r["type"] == "MX")
        .and_then(|r| r["id"].as_str())
        .expect("mx id")
        .to_owned();
    ok(&node, &["record", "rm", "example.org", &id]);
    let after: Value =
        serde_json::from_str(&ok(&node, &["record", "list", "example.org", "--json"]))
            .expect("json");
    assert_eq!(after.as_array().expect("array").len(), 1);

    // A token limited to DNS edits on one zone.
    let created = ok(
        &node,
        &[
            "token",
            "create",
            "--name",
            "ci",
            "--permission",
            "dns-edit",
            "--zone",
            "example.org",
        ],
    );
    let secret = created
        .lines()
        .last()
        .expect("secret line")
        .trim()
        .to_owned();
    let scoped = run(&node, &secret, &["zone", "list", "--json"]);
    let zones: Value = serde_json::from_slice(&scoped.stdout).expect("json");
    assert_eq!(zones.as_array().map(Vec::len), Some(1), "{zones}");
    let denied = run(&node, &secret, &["zone", "create", "other.example"]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&denied.stderr).contains("10000"));
}

#[test]
fn cli_takes_the_apis_base_url_as_cloudflare_clients_are_given_it_and_names_a_wrong_one() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let base = format!("{}/client/v4/", node.base);
    let table = ok(&node, &["zone", "create", "base.example", "--api", &base]);
    assert!(table.contains("base.example"), "{table}");
    // An IP address is no zone name.
    let out = run(&node, &node.token, &["zone", "create", "192.0.2.1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("IP address"), "{stderr}");
    // Something that answers without JSON is named as not the API.
    let other = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = other.local_addr().expect("addr");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = other.accept() {
            let _ = s.read(&mut [0u8; 4096]);
            let _ = s.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 9\r\n\r\nForbidden");
        }
    });
    let out = run(
        &node,
        &node.token,
        &["zone", "list", "--api", &format!("http://{addr}")],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("without JSON") && stderr.contains("--api"),
        "{stderr}"
    );
}

#[test]
fn cli_without_a_token_says_how_to_get_one() {
    let out = Command::new(BIN)
        .args(["zone", "list"])
        .env_remove("PARAPET_API_TOKEN")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PARAPET_API_TOKEN"));
}

#[test]
fn cli_edits_records_lists_relative_names_and_revokes_tokens() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    ok(&node, &["zone", "create", "example.net"]);
    let added: Value = serde_json::from_str(&ok(
        &node,
        &[
            "record",
            "add",
            "example.net",
            "A",
            "www",
            "192.0.2.1",
            "--json",
        ],
    ))
    .expect("json");
    let id = added["id"].as_str().expect("id").to_owned();
    // Names are relative to the zone, as `record add` takes them.
    let listed: Value = serde_json::from_str(&ok(
        &node,
        &["record", "list", "example.net", "--name", "www", "--json"],
    ))
    .expect("json");
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    // Only the fields given change.
    let edited: Value = serde_json::from_str(&ok(
        &node,
        &[
            "record",
            "edit",
            "example.net",
            &id,
            "--content",
            "192.0.2.2",
            "--proxied",
            "true",
            "--json",
        ],
    ))
    .expect("json");
    assert_eq!(edited["content"], "192.0.2.2");
    assert_eq!(edited["proxied"], true);
    assert_eq!(edited["name"], "www.example.net");
    let nothing = run(&node, &node.token, &["record", "edit", "example.net", &id]);
    assert_eq!(nothing.status.code(), Some(2));
    ok(&node, &["record", "delete", "example.net", &id]);

    // A revoked token is refused from then on.
    let created = ok(&node, &["token", "create", "--name", "temp"]);
    let id = created
        .split_whitespace()
        .nth(1)
        .expect("token id")
        .to_owned();
    let secret = created.lines().last().expect("secret").trim().to_owned();
    assert!(run(&node, &secret, &["zone", "list"]).status.success());
    ok(&node, &["token", "delete", &id]);
    assert_eq!(
        run(&node, &secret, &["zone", "list"]).status.code(),
        Some(2)
    );

    // Mistakes get a message that says what to do.
    let out = Command::new(BIN)
        .args(["zone", "list", "--api", "127.0.0.1:8080"])
        .env("PARAPET_API_TOKEN", &node.token)
        .output()
        .expect("run");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("http://"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let plain = dir.path().join("plain.zone");
    std::fs::write(&plain, "www 300 IN A 192.0.2.1\n").expect("write");
    let out = run(
        &node,
        &node.token,
        &["zone", "import", plain.to_str().expect("path")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--zone"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
