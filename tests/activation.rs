//! Zone activation against a real parent zone served by Knot on loopback.

use std::time::Duration;

use parapet_testkit::{Knot, Node, NodeOptions, eventually};

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

fn parent_zone(serial: u32, delegation: &[&str]) -> String {
    let mut z = format!(
        "$ORIGIN test.\n$TTL 300\n@ SOA ns.test. hostmaster.test. {serial} 3600 600 86400 300\n@ NS ns.test.\nns A 127.0.0.1\n"
    );
    for ns in delegation {
        z.push_str(&format!("example NS {ns}.\n"));
    }
    z
}

fn status(node: &Node, zone: &str) -> String {
    node.ok("GET", &format!("/zones/{zone}"), None)["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[test]
fn zone_turns_active_when_the_parent_delegates_and_moved_when_it_stops() {
    assert!(
        Knot::available(),
        "knotd is required (install Debian's knot; .ci/run does)"
    );
    let knot = Knot::start("test", &parent_zone(1, &["ns.elsewhere.net"]));
    let node = Node::start(
        NodeOptions::new(BIN)
            .args([
                "--activation",
                "nameservers",
                "--parent-ns",
                &knot.addr.to_string(),
                "--nameserver",
                "ns1.parapet.test",
                "--nameserver",
                "ns2.parapet.test",
                "--config",
            ])
            .arg(write_config()),
    );

    // Created while delegated elsewhere: pending, with the current delegation reported.
    let created = node.ok(
        "POST",
        "/zones",
        Some(serde_json::json!({"name": "example.test"})),
    );
    let zone = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["status"], "pending");
    assert_eq!(
        created["name_servers"],
        serde_json::json!(["ns1.parapet.test", "ns2.parapet.test"])
    );
    assert_eq!(
        created["original_name_servers"],
        serde_json::json!(["ns.elsewhere.net"])
    );

    // Only one of our nameservers: still pending.
    knot.set_zone(
        &parent_zone(2, &["ns1.parapet.test", "ns.elsewhere.net"]),
        2,
    );
    node.ok("PUT", &format!("/zones/{zone}/activation_check"), None);
    assert_eq!(status(&node, &zone), "pending");

    // Exactly ours: the background checker activates the zone without being asked.
    knot.set_zone(
        &parent_zone(3, &["ns1.parapet.test", "ns2.parapet.test"]),
        3,
    );
    eventually(
        Duration::from_secs(20),
        "background check to activate the zone",
        || status(&node, &zone) == "active",
    );
    assert!(node.ok("GET", &format!("/zones/{zone}"), None)["activated_on"].is_string());

    // Delegation removed: one failed check is not enough, several make it `moved`.
    knot.set_zone(&parent_zone(4, &[]), 4);
    let checked = node.ok("PUT", &format!("/zones/{zone}/activation_check"), None);
    assert_eq!(checked["status"], "active");
    eventually(Duration::from_secs(20), "zone to be marked moved", || {
        node.ok("PUT", &format!("/zones/{zone}/activation_check"), None)["status"] == "moved"
    });

    // Delegated back: active again.
    knot.set_zone(
        &parent_zone(5, &["ns2.parapet.test", "ns1.parapet.test"]),
        5,
    );
    assert_eq!(
        node.ok("PUT", &format!("/zones/{zone}/activation_check"), None)["status"],
        "active"
    );
}

#[test]
fn auto_activation_makes_zones_active_at_once() {
    let node = Node::start(NodeOptions::new(BIN).args(["--activation", "auto"]));
    let created = node.ok(
        "POST",
        "/zones",
        Some(serde_json::json!({"name": "auto.example"})),
    );
    assert_eq!(created["status"], "active");
}

fn write_config() -> String {
    let dir = std::env::temp_dir().join(format!("parapet-activation-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("parapet.toml");
    std::fs::write(&path, "activation_interval = \"1s\"\n").expect("write");
    path.display().to_string()
}
