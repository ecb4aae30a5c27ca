//! Purge by URL end to end: a URL is purged by the cache key a request for it gets, that is
//! with its query shaped by the zone's cache rules (sorted, parameters left out, or ignored),
//! as Cloudflare purges it.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parapet_testkit::{Node, NodeOptions, eventually, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// Requests the origin received, by path and query.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn of(&self, target: &str) -> usize {
        self.0
            .lock()
            .expect("hits")
            .get(target)
            .copied()
            .unwrap_or(0)
    }
}

/// An origin that answers every GET with a body naming the request, cacheable for an hour.
fn start_origin(ip: &str, port: u16) -> Hits {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    let hits = Hits::default();
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let hits = counted.clone();
            std::thread::spawn(move || answer(stream, &hits));
        }
    });
    hits
}

fn answer(mut stream: TcpStream, hits: &Hits) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let target = request_line
        .split(' ')
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    let n = {
        let mut map = hits.0.lock().expect("hits");
        let n = map.entry(target.clone()).or_default();
        *n += 1;
        *n
    };
    let body = format!("{target} answer {n}");
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/css\r\nCache-Control: public, max-age=3600\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// `CF-Cache-Status` of a GET through the edge.
fn cache_status(port: u16, host: &str, target: &str) -> String {
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "--max-time",
            "10",
            "--resolve",
        ])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg(format!("http://{host}:{port}{target}"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("cf-cache-status: ")
                .map(|s| s.trim().to_ascii_uppercase())
        })
        .unwrap_or_default()
}

/// A node whose zone `name` proxies `www` to an origin on 127.0.0.2, with these cache rules
/// in force.
struct Site {
    node: Node,
    zone: String,
    port: u16,
    host: String,
    hits: Hits,
}

impl Site {
    fn start(name: &str, rules: serde_json::Value) -> Self {
        Self::start_with(name, rules, "")
    }

    /// As `start`, with this node configuration (which may hold cache rules of its own).
    fn start_with(name: &str, rules: serde_json::Value, config: &str) -> Self {
        let port = free_port();
        let hits = start_origin("127.0.0.2", port);
        let node = Node::start(
            NodeOptions::new(BIN)
                .args([
                    "--activation",
                    "auto",
                    "--http-listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .config(config),
        );
        let zone = node.create_zone(name);
        node.proxied_a(&zone, "www", "127.0.0.2");
        node.ok(
            "PUT",
            &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
            Some(json!({ "rules": rules })),
        );
        Self {
            node,
            zone,
            port,
            host: format!("www.{name}"),
            hits,
        }
    }

    fn get(&self, target: &str) -> String {
        cache_status(self.port, &self.host, target)
    }

    fn purge_url(&self, target: &str) {
        let url = format!("http://{}:{}{target}", self.host, self.port);
        let result = self.node.ok(
            "POST",
            &format!("/zones/{}/purge_cache", self.zone),
            Some(json!({ "files": [url] })),
        );
        assert_eq!(result["id"], self.zone.as_str());
    }
}

#[test]
fn purge_by_url_removes_the_object_under_its_sorted_query_key() {
    let s = Site::start(
        "sorted.test",
        json!([{"expression": "true", "action": "set_cache_settings",
            "action_parameters": {"cache_key": {"ignore_query_strings_order": true}}}]),
    );
    eventually(Duration::from_secs(5), "the sorting rule in force", || {
        s.get("/probe.css?b=1&a=2");
        s.get("/probe.css?a=2&b=1") == "HIT"
    });
    assert_eq!(s.get("/a.css?b=1&a=2"), "MISS");
    assert_eq!(s.get("/a.css?b=1&a=2"), "HIT");
    assert_eq!(
        s.get("/a.css?a=2&b=1"),
        "HIT",
        "stored under the sorted key"
    );
    s.get("/other.css?y=1&x=2");
    assert_eq!(s.get("/other.css?y=1&x=2"), "HIT");

    s.purge_url("/a.css?b=1&a=2");
    assert_eq!(
        s.get("/a.css?b=1&a=2"),
        "MISS",
        "purged as the visitor spelt it"
    );
    assert_eq!(s.get("/other.css?y=1&x=2"), "HIT", "other URLs stay");

    // Any spelling of the query names the same key.
    assert_eq!(s.get("/a.css?b=1&a=2"), "HIT");
    s.purge_url("/a.css?a=2&b=1");
    assert_eq!(s.get("/a.css?b=1&a=2"), "MISS");
    assert_eq!(s.hits.of("/a.css?b=1&a=2"), 3);
}

#[test]
fn purge_by_url_removes_the_object_under_its_query_free_key() {
    let s = Site::start(
        "noquery.test",
        json!([{"expression": "starts_with(http.request.uri.path, \"/static/\")",
            "action": "set_cache_settings",
            "action_parameters": {"cache_key": {"custom_key":
                {"query_string": {"exclude": {"all": true}}}}}}]),
    );
    eventually(
        Duration::from_secs(5),
        "the ignore-query rule in force",
        || {
            s.get("/static/probe.css?v=1");
            s.get("/static/probe.css?v=2") == "HIT"
        },
    );
    assert_eq!(s.get("/static/a.css?v=1"), "MISS");
    assert_eq!(
        s.get("/static/a.css?v=2"),
        "HIT",
        "the query is not in the key"
    );

    s.purge_url("/static/a.css?v=3");
    assert_eq!(
        s.get("/static/a.css?v=1"),
        "MISS",
        "any query purges the one key"
    );
    assert_eq!(s.get("/static/a.css"), "HIT");
    s.purge_url("/static/a.css");
    assert_eq!(s.get("/static/a.css?v=9"), "MISS");

    // Outside the rule's path the query is in the key, and only that URL is purged.
    s.get("/b.css?v=1");
    s.get("/b.css?v=2");
    s.purge_url("/b.css?v=1");
    assert_eq!(s.get("/b.css?v=1"), "MISS");
    assert_eq!(s.get("/b.css?v=2"), "HIT");
}

#[test]
fn purge_by_url_follows_the_cache_rules_of_the_node_configuration() {
    let s = Site::start_with(
        "configured.test",
        json!([]),
        "[[cache_rules]]\nzone = \"configured.test\"\nexpression = 'true'\naction_parameters = { cache_key = { ignore_query_strings_order = true } }\n",
    );
    eventually(
        Duration::from_secs(5),
        "the configured rule in force",
        || {
            s.get("/probe.css?b=1&a=2");
            s.get("/probe.css?a=2&b=1") == "HIT"
        },
    );
    assert_eq!(s.get("/a.css?b=1&a=2"), "MISS");
    assert_eq!(s.get("/a.css?a=2&b=1"), "HIT");
    s.purge_url("/a.css?b=1&a=2");
    assert_eq!(s.get("/a.css?a=2&b=1"), "MISS");
}

#[test]
fn a_purge_written_outside_ascii_removes_what_browsers_requested() {
    let s = Site::start("utf8.test", json!([]));
    eventually(Duration::from_secs(5), "the zone served", || {
        s.get("/probe.css");
        s.get("/probe.css") == "HIT"
    });
    // Browsers send the path percent-encoded.
    assert_eq!(s.get("/caf%C3%A9.png"), "MISS");
    assert_eq!(s.get("/caf%C3%A9.png"), "HIT");
    s.purge_url("/café.png");
    assert_eq!(s.get("/caf%C3%A9.png"), "MISS");
    assert_eq!(s.hits.of("/caf%C3%A9.png"), 2);
}

#[test]
fn a_url_without_a_port_purges_the_object_on_the_port_the_edge_listens_on() {
    // The edge listens on a port of its own (behind a port mapping, visitors write none).
    let s = Site::start("ports.test", json!([]));
    assert_eq!(s.get("/a.css"), "MISS");
    assert_eq!(s.get("/a.css"), "HIT");
    assert_eq!(s.get("/b.css"), "MISS");
    assert_eq!(s.get("/c.css"), "MISS");
    let purge = |body: serde_json::Value| {
        s.node.ok(
            "POST",
            &format!("/zones/{}/purge_cache", s.zone),
            Some(body),
        )
    };
    purge(json!({"files": [format!("http://{}/a.css", s.host)]}));
    assert_eq!(s.get("/a.css"), "MISS", "purged on the edge's port");
    assert_eq!(s.get("/b.css"), "HIT", "other URLs stay");
    // Several kinds in one request (as flarectl sends them) are each purged.
    purge(json!({
        "files": [format!("http://{}/b.css", s.host)],
        "prefixes": [format!("{}/c", s.host)]
    }));
    assert_eq!(s.get("/b.css"), "MISS");
    assert_eq!(s.get("/c.css"), "MISS");
}
