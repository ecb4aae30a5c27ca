//! The edge cache end to end, against an origin whose answers the test controls: what is
//! stored (RFC 9111 and Cloudflare's defaults), `CF-Cache-Status`, revalidation, Vary, purge
//! through the API, one origin request for many concurrent misses, and keys that visitors'
//! headers cannot poison.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parapet_testkit::http::lasting_fields;
use parapet_testkit::{Node, NodeOptions, free_port};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// Requests the origin received, by path.
#[derive(Clone, Default)]
struct Hits(Arc<Mutex<HashMap<String, usize>>>);

impl Hits {
    fn of(&self, path: &str) -> usize {
        self.0.lock().expect("hits").get(path).copied().unwrap_or(0)
    }
}

/// An origin whose answer depends on the path: see `answer`.
fn start_cache_origin(ip: &str, port: u16) -> Hits {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    let hits = Hits::default();
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let hits = counted.clone();
            std::thread::spawn(move || serve_one(stream, &hits));
        }
    });
    hits
}

fn serve_one(mut stream: TcpStream, hits: &Hits) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut head = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        if line == "\r\n" {
            break;
        }
        head.push(line.trim_end().to_owned());
    }
    let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let header = |name: &str| {
        head.iter().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    };
    if let Some(n) = header("content-length").and_then(|n| n.parse::<usize>().ok()) {
        let mut body = vec![0; n];
        let _ = reader.read_exact(&mut body);
    }
    let n = {
        let mut map = hits.0.lock().expect("hits");
        let n = map.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    if path.contains("lying") {
        // Promises 1000 bytes, sends 5, hangs up: a torn body.
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: image/png\r\nCache-Control: public, max-age=60\r\n\r\ntorn!"
        );
        return;
    }
    if path.contains("dribble") {
        // Half the body, then the rest after 1.5 s.
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: 10\r\nContent-Type: image/png\r\nCache-Control: public, max-age=60\r\n\r\nfirst"
        );
        let _ = stream.flush();
        std::thread::sleep(Duration::from_millis(1500));
        let _ = stream.write_all(b"-last");
        return;
    }
    if path.contains("siecut") && n > 1 {
        // Stored with stale-if-error, then the origin hangs up without an answer.
        return;
    }
    if let Some(coding) = ["gzip", "br"]
        .into_iter()
        .find(|c| path.contains(&format!("pre{c}")))
    {
        // Kept compressed, as object stores keep files: sent in its coding whatever was asked.
        let cache_control = match (path.contains("nostore"), path.contains("notransform")) {
            (true, true) => "no-store, no-transform",
            (true, false) => "no-store",
            (false, true) => "public, max-age=60, no-transform",
            (false, false) => "public, max-age=60",
        };
        let body = encoded(coding, precoded_text(&path).as_bytes());
        let _ = write!(
            stream,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: text/css\r\nContent-Encoding: {coding}\r\nCache-Control: {cache_control}\r\nETag: \"pre1\"\r\nConnection: close\r\n\r\n",
            body.len()
        );
        if method != "HEAD" {
            let _ = stream.write_all(&body);
        }
        return;
    }
    if let Some(size) = path.strip_prefix("/big/").and_then(big_size) {
        // `gen` in the name: other bytes at every request (shifted by its count).
        let shift = if path.contains("gen") { n } else { 0 };
        serve_big(&mut stream, size, path.contains("slow"), shift);
        return;
    }
    let (status, headers, body) = answer(&method, &path, n, &header);
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    if method != "HEAD" {
        let _ = stream.write_all(body.as_bytes());
    }
}

/// The stylesheet `/pregzip…` and `/prebr…` hold, before their coding.
fn precoded_text(path: &str) -> String {
    format!("/* {path} */\n{}", "a { color: red; }\n".repeat(300))
}

/// `bytes` in `coding` (gzip or br).
fn encoded(coding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    if coding == "gzip" {
        let mut encoder = flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
        encoder.write_all(bytes).expect("gzip");
        encoder.finish().expect("gzip");
    } else {
        let mut encoder = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
        encoder.write_all(bytes).expect("br");
        drop(encoder);
    }
    out
}

/// `/big/40.bin` is 40 MiB, `/big/100k-3.bin` 100 KiB, `/big/slow-24.bin` 24 MiB sent over
/// about five seconds: the bytes of `big_byte` (from the origin's count of requests for it, for
/// `/big/100k-gen.bin`).
fn big_size(name: &str) -> Option<usize> {
    let name = name.strip_prefix("slow-").unwrap_or(name);
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    let n: usize = digits.parse().ok()?;
    Some(if name[digits.len()..].starts_with('k') {
        n << 10
    } else {
        n << 20
    })
}

fn big_byte(i: usize) -> u8 {
    (i % 251) as u8
}

fn serve_big(stream: &mut TcpStream, size: usize, slow: bool, shift: usize) {
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nContent-Type: application/octet-stream\r\nCache-Control: public, max-age=600\r\nConnection: close\r\n\r\n"
    );
    let chunk = 256 * 1024;
    for start in (0..size).step_by(chunk) {
        let bytes: Vec<u8> = (start + shift..size.min(start + chunk) + shift)
            .map(big_byte)
            .collect();
        if stream.write_all(&bytes).is_err() {
            return;
        }
        if slow {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn answer(
    method: &str,
    path: &str,
    n: usize,
    header: &dyn Fn(&str) -> Option<String>,
) -> (&'static str, String, String) {
    if method == "POST" {
        // `/form?next=URL` (percent-encoded) answers with that URL in `Location`.
        let location = path
            .strip_prefix("/form?next=")
            .map_or(String::new(), |next| {
                let next = next
                    .replace("%3F", "?")
                    .replace("%3D", "=")
                    .replace("%26", "&");
                format!("Location: {next}\r\n")
            });
        return ("200 OK", location, "posted".into());
    }
    if path.contains("slow") {
        std::thread::sleep(Duration::from_millis(300));
    }
    if path.contains("sleepy") {
        std::thread::sleep(Duration::from_millis(1500));
    }
    let body = format!("{path} answer {n}");
    if path.contains("moved") {
        return (
            "301 Moved Permanently",
            "Content-Type: text/html\r\nLocation: /new.png\r\nCache-Control: public, max-age=60\r\n"
                .into(),
            format!("<html><body>{path} moved permanently</body></html>"),
        );
    }
    if path.contains("tefield") {
        // A field of this hop that an HTTP/2 stream may not carry (RFC 9113 §8.2.2).
        return (
            "200 OK",
            "Content-Type: text/css\r\nTE: gzip\r\nCache-Control: public, max-age=600\r\n".into(),
            "te-answer".into(),
        );
    }
    if path.contains("partial") {
        // A part, though the whole was asked for.
        return (
            "206 Partial Content",
            "Content-Type: image/png\r\nContent-Range: bytes 0-3/100\r\nCache-Control: public, max-age=60\r\n"
                .into(),
            "abcd".into(),
        );
    }
    if path.contains("forbidden") {
        return ("403 Forbidden", "Content-Type: image/png\r\n".into(), body);
    }
    if path.contains("strong") {
        // Compressible, with a strong ETag that only an exact match revalidates.
        if header("if-none-match").as_deref() == Some("\"s1\"") {
            return (
                "304 Not Modified",
                "ETag: \"s1\"\r\nCache-Control: max-age=60\r\nX-Version: 2\r\nCache-Tag: v2\r\n"
                    .into(),
                String::new(),
            );
        }
        let css = format!(
            "/* {path} answer {n} */\n{}",
            "p { margin: 0; }\n".repeat(300)
        );
        let cache_control = if path.contains("nostore") {
            "no-store"
        } else if path.contains("lasting") {
            "max-age=60"
        } else {
            "max-age=1"
        };
        return (
            "200 OK",
            format!(
                "Content-Type: text/css\r\nCache-Control: {cache_control}\r\nETag: \"s1\"\r\nX-Version: 1\r\n"
            ),
            css,
        );
    }
    if path.contains("language") {
        return (
            "200 OK",
            "Content-Type: image/png\r\nCache-Control: public, max-age=60\r\nVary: Accept-Language\r\n"
                .into(),
            body,
        );
    }
    if path.contains("useragent") {
        return (
            "200 OK",
            "Content-Type: image/png\r\nCache-Control: public, max-age=60\r\nVary: User-Agent\r\n"
                .into(),
            body,
        );
    }
    if path.contains("text") {
        // Compressible: a stylesheet of some size.
        let css = format!(
            "/* {path} answer {n} */\n{}",
            "body { margin: 0; padding: 0; }\n".repeat(200)
        );
        // The origin may forbid transforming it (RFC 9110 §7.7).
        let cache_control = if path.contains("notransform-nostore") {
            "no-store, no-transform"
        } else if path.contains("notransform") {
            "public, max-age=60,No-Transform"
        } else {
            "public, max-age=60"
        };
        let dated = if path.contains("dated") {
            "Last-Modified: Mon, 02 Jan 2023 00:00:00 GMT\r\n"
        } else {
            ""
        };
        return (
            "200 OK",
            format!(
                "Content-Type: text/css\r\nCache-Control: {cache_control}\r\nETag: \"css1\"\r\n{dated}"
            ),
            css,
        );
    }
    let mut headers = String::from("Content-Type: image/png\r\n");
    if path.contains("cdnprivate") {
        // The edge's own field says private: Cache-Control no longer decides (RFC 9213).
        headers.push_str("CDN-Cache-Control: private\r\nCache-Control: public, max-age=600\r\n");
    } else if path.contains("cdnnocache") {
        if header("if-none-match").as_deref() == Some("\"c1\"") {
            return ("304 Not Modified", "ETag: \"c1\"\r\n".into(), String::new());
        }
        headers.push_str(
            "CDN-Cache-Control: no-cache, max-age=600\r\nCache-Control: public, max-age=600\r\nETag: \"c1\"\r\n",
        );
    } else if path.contains("nostore") {
        headers.push_str("Cache-Control: no-store\r\n");
    } else if path.contains("twoprivate") {
        // Private in one field; a later field names one private field only.
        headers.push_str(
            "Cache-Control: private, max-age=600\r\nCache-Control: private=\"X-Debug\"\r\n",
        );
    } else if path.contains("fieldprivate") {
        // Shareable, except one field (RFC 9111 §5.2.2.7).
        headers.push_str(&format!(
            "Cache-Control: public, max-age=60, private=\"X-Visitor\"\r\nX-Visitor: visitor {n}\r\n"
        ));
    } else if path.contains("private") {
        headers.push_str("Cache-Control: private, max-age=60\r\n");
    } else if path.contains("revalidated-swr") {
        headers.push_str(
            "Cache-Control: no-cache, stale-while-revalidate=600, stale-if-error=600\r\n",
        );
    } else if path.contains("swr") {
        headers.push_str("Cache-Control: max-age=1, stale-while-revalidate=30\r\n");
    } else if path.contains("sie") {
        if n > 1 {
            return ("500 Internal Server Error", String::new(), "broken".into());
        }
        headers.push_str("Cache-Control: max-age=1, stale-if-error=60\r\n");
    } else if path.contains("short") {
        if header("if-none-match").as_deref() == Some("\"v1\"") {
            return (
                "304 Not Modified",
                "ETag: \"v1\"\r\nCache-Control: max-age=1\r\n".into(),
                String::new(),
            );
        }
        headers.push_str("Cache-Control: max-age=1\r\nETag: \"v1\"\r\n");
    } else if !path.contains("noheaders") {
        headers.push_str("Cache-Control: public, max-age=60\r\n");
    }
    if path.contains("cookie") {
        headers.push_str("Set-Cookie: session=secret\r\n");
    }
    if path.contains("visitorip") {
        // An answer for the address the edge names: per visitor.
        headers.push_str("Vary: CF-Connecting-IP\r\n");
    }
    if path.contains("dated") {
        headers.push_str("Last-Modified: Mon, 02 Jan 2023 00:00:00 GMT\r\n");
    }
    if path.contains("hop") {
        // For this hop only: never stored, never repeated.
        headers.push_str("Keep-Alive: timeout=5, max=100\r\n");
    }
    if let Some(tag) = path.split("tag-").nth(1).and_then(|t| t.split('.').next()) {
        headers.push_str(&format!("Cache-Tag: {tag}, all\r\n"));
    }
    let body = if path.contains("vary") {
        headers.push_str("Vary: Accept-Encoding\r\n");
        format!(
            "{body} for {}",
            header("accept-encoding").unwrap_or_default()
        )
    } else {
        body
    };
    ("200 OK", headers, body)
}

/// GET (or `method`) through the edge: status, `CF-Cache-Status`, lowercase head, body.
fn fetch(port: u16, host: &str, path: &str, extra: &[&str]) -> (u16, String, String, String) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let head = head.to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let cache = head
        .lines()
        .find_map(|l| l.strip_prefix("cf-cache-status: "))
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    (status, cache, head.clone(), body.to_owned())
}

struct Site {
    node: Node,
    zone: String,
    port: u16,
    hits: Hits,
}

fn site(name: &str) -> Site {
    site_with(name, |port| {
        Node::start(NodeOptions::new(BIN).args([
            "--activation",
            "auto",
            "--http-listen",
            &format!("127.0.0.1:{port}"),
        ]))
    })
}

/// `site`, on a data directory of its own (kept across restarts) and with this configuration.
fn site_on_disk(name: &str, config: &str) -> (Site, tempfile::TempDir, std::path::PathBuf) {
    // Beside the build, on a disk (a temporary directory may be in memory, whose pages the
    // page-cache test cannot drop).
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("tmp");
    let data = tmp.path().join("data");
    let site = site_with(name, |port| node_on(&data, port, config));
    (site, tmp, data)
}

impl Site {
    /// The zone's Cache Rules entrypoint in the API.
    fn cache_rules_path(&self) -> String {
        format!(
            "/zones/{}/rulesets/phases/http_request_cache_settings/entrypoint",
            self.zone
        )
    }
}

fn site_with(name: &str, start: impl FnOnce(u16) -> Node) -> Site {
    let port = free_port();
    let hits = start_cache_origin("127.0.0.2", port);
    let node = start(port);
    let zone = node.create_zone(name);
    node.proxied_a(&zone, "www", "127.0.0.2");
    let host = format!("www.{name}");
    parapet_testkit::eventually(Duration::from_secs(5), "the name routed", || {
        fetch(port, &host, "/ready.html", &[]).0 == 200
    });
    Site {
        node,
        zone,
        port,
        hits,
    }
}

#[test]
fn static_files_are_cached_as_the_origin_allows_and_pages_are_not() {
    let s = site("cache.test");
    let host = "www.cache.test";
    let get = |path: &str| fetch(s.port, host, path, &[]);

    let (status, cache, _, first) = get("/app.js");
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let (_, cache, head, second) = get("/app.js");
    assert_eq!(cache, "HIT", "{head}");
    assert_eq!(first, second, "the stored body");
    assert!(head.contains("age: "), "{head}");
    assert!(head.contains("cache-status: parapet; hit"), "{head}");
    assert!(!head.contains("cache-tag"), "{head}");
    assert_eq!(s.hits.of("/app.js"), 1);
    // HEAD is answered from the stored GET.
    let (status, cache, _, _) = fetch(s.port, host, "/app.js", &["-I"]);
    assert_eq!((status, cache.as_str()), (200, "HIT"));
    assert_eq!(s.hits.of("/app.js"), 1);

    // Not eligible by default (HTML), or the origin says no.
    for (path, expect) in [
        ("/page.html", "DYNAMIC"),
        ("/nostore.css", "BYPASS"),
        ("/private.png", "BYPASS"),
        ("/twoprivate.png", "BYPASS"),
        ("/cookie.png", "BYPASS"),
        ("/cdnprivate.png", "BYPASS"),
        ("/visitorip.png", "BYPASS"),
    ] {
        assert_eq!(get(path).1, expect, "{path}");
        assert_eq!(get(path).1, expect, "{path} again");
        assert_eq!(s.hits.of(path), 2, "{path} reaches the origin each time");
    }
    // The edge's own field says no-cache: stored, and revalidated before every use.
    assert_eq!(get("/cdnnocache.png").1, "MISS");
    assert_eq!(get("/cdnnocache.png").1, "REVALIDATED");
    assert_eq!(s.hits.of("/cdnnocache.png"), 2);
    // A field the origin marks private is never stored: the next visitor does not get it.
    let (_, cache, head, _) = get("/fieldprivate.png");
    assert_eq!(cache, "MISS");
    assert!(head.contains("x-visitor: visitor 1"), "{head}");
    let (_, cache, head, _) = get("/fieldprivate.png");
    assert_eq!(cache, "HIT");
    assert!(
        !head.contains("x-visitor:"),
        "a private field was shared: {head}"
    );
    // No freshness information: Cloudflare's default TTL for a 200.
    assert_eq!(get("/noheaders.png").1, "MISS");
    assert_eq!(get("/noheaders.png").1, "HIT");
    // A request with credentials is not answered from, or stored in, the shared cache unless
    // the response says public.
    let auth = ["-H", "Authorization: Bearer x"];
    assert_eq!(fetch(s.port, host, "/short-auth.png", &auth).1, "BYPASS");
    assert_eq!(s.hits.of("/short-auth.png"), 1);

    // The key is the zone, host, port, path and query: a different query is another object,
    // and headers visitors choose do not change which object they get.
    assert_eq!(get("/app.js?v=2").1, "MISS");
    let (_, cache, _, body) = fetch(
        s.port,
        host,
        "/app.js",
        &[
            "-H",
            "X-Forwarded-Host: evil.test",
            "-H",
            "X-Original-URL: /evil.js",
        ],
    );
    assert_eq!((cache.as_str(), body), ("HIT", first));
    // On a miss, a field that rewrites the request at many origins makes the answer that
    // visitor's alone: not stored (the key does not say it), and the key stays cacheable for
    // plain requests.
    // So with underscores, which CGI-style servers (Rack, PHP) read as the same field.
    let unkeyed: [&[&str]; 5] = [
        &["-H", "X-Original-URL: /evil.js"],
        &["-H", "X-Forwarded-Host: evil.test"],
        &["-H", "Forwarded: host=evil.test"],
        &["-H", "X_Forwarded_Host: evil.test"],
        &["-H", "X-Original_URL: /evil.js"],
    ];
    for (i, extra) in unkeyed.iter().enumerate() {
        let path = format!("/unkeyed-{i}.js");
        let (status, cache, ..) = fetch(s.port, host, &path, extra);
        assert_eq!(status, 200, "{extra:?}");
        assert_ne!(cache, "HIT", "{extra:?}");
        assert_eq!(get(&path).1, "MISS", "{extra:?}: stored");
        assert_eq!(get(&path).1, "HIT", "{extra:?}");
    }
    // A Host naming another port than the one used is sent to the origin with the port used
    // (the key's): its answer is stored for everyone.
    let path = "/other-port.js";
    let other_port = format!("Host: {host}:1");
    assert_eq!(fetch(s.port, host, path, &["-H", &other_port]).1, "MISS");
    assert_eq!(get(path).1, "HIT");
    // So with credentials, for an answer that does not say it is shared.
    let path = "/credentials-noheaders.js";
    let (_, cache, ..) = fetch(s.port, host, path, &["-H", "Authorization: Bearer x"]);
    assert_ne!(cache, "HIT");
    assert_eq!(get(path).1, "MISS", "the key stays cacheable");
    assert_eq!(get(path).1, "HIT");

    // Revalidation: after max-age the stored ETag is sent, a 304 refreshes the object.
    assert_eq!(get("/short.js").1, "MISS");
    std::thread::sleep(Duration::from_millis(2100));
    let (status, cache, _, body) = get("/short.js");
    assert_eq!((status, cache.as_str()), (200, "REVALIDATED"));
    assert_eq!(body, "/short.js answer 1", "the stored body, revalidated");
    assert_eq!(s.hits.of("/short.js"), 2);

    // A successful POST to a URL makes its stored copy go (RFC 9111 §4.4).
    assert_eq!(get("/app.js").1, "HIT");
    let (status, _, _, _) = fetch(s.port, host, "/app.js", &["-X", "POST", "-d", "x"]);
    assert_eq!(status, 200);
    assert_eq!(get("/app.js").1, "MISS");

    // A response fetched while a POST to its own URL succeeded is not stored (it may predate
    // the change), whether the POST came before its header or during its body; one fetched
    // while another URL of the zone was changed is.
    for (path, posted, stored) in [
        ("/dribble-a.png", "/other.png", true),
        ("/sleepy-b.png", "/sleepy-b.png", false),
        ("/dribble-c.png", "/dribble-c.png", false),
    ] {
        let port = s.port;
        let fetching = std::thread::spawn(move || fetch(port, host, path, &[]));
        // The origin has the request (and a dribble's header is on its way): 1.5 s before
        // the header (sleepy) or the body's end (dribble).
        parapet_testkit::eventually(Duration::from_secs(5), "the fetch at the origin", || {
            s.hits.of(path) == 1
        });
        std::thread::sleep(Duration::from_millis(100));
        let (status, _, _, _) = fetch(s.port, host, posted, &["-X", "POST", "-d", "x"]);
        assert_eq!(status, 200);
        let (status, cache, _, _) = fetching.join().expect("fetch");
        assert_eq!((status, cache.as_str()), (200, "MISS"), "{path}");
        let expected = if stored { "HIT" } else { "MISS" };
        assert_eq!(get(path).1, expected, "{path} after a POST to {posted}");
    }

    // Development mode bypasses the zone's cache.
    s.node.ok(
        "PATCH",
        &format!("/zones/{}/settings/development_mode", s.zone),
        Some(json!({"value": "on"})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "development mode", || {
        get("/app.js").1 == "DYNAMIC"
    });
}

/// An answer of known length whose origin pauses after a part of it: the header and that part
/// reach the visitor at once, not with the rest (on the engine's path: a miss the cache keeps,
/// a POST).
#[test]
fn an_answer_whose_origin_pauses_reaches_the_visitor_as_far_as_it_came() {
    let s = site("pause.test");
    let host = "www.pause.test";
    for (method, path) in [("GET", "/dribble-get.png"), ("POST", "/dribble-post.png")] {
        let mut conn = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
        conn.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            conn,
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n"
        )
        .expect("request");
        let started = std::time::Instant::now();
        let mut got = Vec::new();
        let mut read_until = |end: &[u8]| {
            let mut chunk = [0u8; 4096];
            while !got.ends_with(end) {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                }
            }
            (
                started.elapsed(),
                String::from_utf8_lossy(&got).into_owned(),
            )
        };
        // The origin sends the rest 1.5 s after the first part.
        let (waited, text) = read_until(b"\r\n\r\nfirst");
        assert!(
            waited < Duration::from_millis(1000),
            "{method} {path}: the first part after {waited:?}: {text}"
        );
        let (_, text) = read_until(b"first-last");
        assert!(
            text.ends_with("\r\n\r\nfirst-last"),
            "{method} {path}: {text}"
        );
    }
}

/// A visitor's copy is current by `If-None-Match: *` (any stored copy) and, for a stored answer
/// without `Last-Modified`, by `If-Modified-Since` against its `Date` (RFC 9110 §13.1.2, RFC
/// 9111 §4.3.2), on the edge's own hits and through the engine alike.
#[test]
fn conditional_requests_find_a_stored_copy_current_without_its_validators() {
    let s = site("cond.test");
    let host = "www.cond.test";
    assert_eq!(fetch(s.port, host, "/cond.png", &[]).1, "MISS");
    assert_eq!(fetch(s.port, host, "/cond.png", &[]).1, "HIT");
    let engine = ["-H", "If-Unmodified-Since: Fri, 01 Jan 2100 00:00:00 GMT"];
    for path in [&[][..], &engine] {
        for (field, status) in [
            ("If-None-Match: *", 304),
            ("If-None-Match: \"other\"", 200),
            ("If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT", 304),
            ("If-Modified-Since: Mon, 01 Jan 1990 00:00:00 GMT", 200),
        ] {
            let (got, cache, head, _) =
                fetch(s.port, host, "/cond.png", &[path, &["-H", field]].concat());
            assert_eq!(got, status, "{field} {path:?} ({cache}): {head}");
        }
    }
    assert_eq!(s.hits.of("/cond.png"), 1);
}

#[test]
fn a_conditional_request_that_misses_gets_the_whole_answer_and_fills_the_cache() {
    let s = site("condmiss.test");
    let host = "www.condmiss.test";
    let since = ["-H", "If-Modified-Since: Fri, 01 Jan 2100 00:00:00 GMT"];
    for (path, protocol) in [
        ("/one-dated.png", &[][..]),
        ("/two-dated.png", &["--http2-prior-knowledge"][..]),
    ] {
        // Fetched from the origin now: the whole answer (the engine cut it to a header the
        // stored copy never finished, and over HTTP/2 broke the stream).
        let (status, cache, head, body) = fetch(s.port, host, path, &[protocol, &since].concat());
        assert_eq!((status, cache.as_str()), (200, "MISS"), "{path}: {head}");
        assert!(body.starts_with(path), "{path}: {body}");
        let (status, cache, head, _) = fetch(s.port, host, path, protocol);
        assert_eq!((status, cache.as_str()), (200, "HIT"), "{path}: {head}");
        let (status, cache, head, _) = fetch(s.port, host, path, &[protocol, &since].concat());
        assert_eq!((status, cache.as_str()), (304, "HIT"), "{path}: {head}");
        assert_eq!(s.hits.of(path), 1, "{path}");
    }
}

#[test]
fn stale_objects_are_served_while_revalidating_or_when_the_origin_fails() {
    let s = site("stale.test");
    let host = "www.stale.test";
    let get = |path: &str| fetch(s.port, host, path, &[]);
    let answered = || {
        let name = format!(
            "parapet_edge_requests_total{{zone=\"{}\",status=\"200\"}}",
            s.zone
        );
        metric(&s.node, &name)
    };
    assert_eq!(get("/swr.js").1, "MISS");
    assert_eq!(get("/sie.js").1, "MISS");
    std::thread::sleep(Duration::from_millis(2100));

    // stale-while-revalidate: the stale copy at once, refreshed in the background.
    let before = answered();
    let (status, cache, head, body) = get("/swr.js");
    assert_eq!((status, cache.as_str()), (200, "UPDATING"));
    assert_eq!(body, "/swr.js answer 1");
    assert!(head.contains("cache-status: parapet; hit\r\n"), "{head}");
    parapet_testkit::eventually(Duration::from_secs(5), "the background refresh", || {
        s.hits.of("/swr.js") == 2
    });
    // The refresh is the edge's own request, not a visitor's: one request answered.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(answered(), before + 1);
    parapet_testkit::eventually(Duration::from_secs(5), "the refreshed copy", || {
        let (_, cache, _, body) = get("/swr.js");
        cache == "HIT" && body == "/swr.js answer 2"
    });

    // stale-if-error: the origin now fails; the stale copy is served instead of its 500.
    let (status, cache, head, body) = get("/sie.js");
    assert_eq!((status, cache.as_str()), (200, "STALE"), "{body}");
    // It went forward, and got nothing usable: no hit (RFC 9211).
    assert!(
        head.contains("cache-status: parapet; fwd=stale\r\n"),
        "{head}"
    );
    assert_eq!(body, "/sie.js answer 1");

    // `no-cache` forbids serving a copy without asking the origin, whatever stale windows the
    // response gives: every request goes to the origin, and gets its answer.
    assert_eq!(get("/revalidated-swr.js").1, "MISS");
    for n in 2..4 {
        let (status, cache, _, body) = get("/revalidated-swr.js");
        assert_eq!(status, 200);
        assert_ne!(cache, "UPDATING");
        assert_ne!(cache, "HIT");
        assert_eq!(body, format!("/revalidated-swr.js answer {n}"));
    }

    // The origin hangs up: the stale copy still comes, and the connection it comes on is as
    // its answer says: kept (the next request on it is answered) or closed.
    assert_eq!(get("/siecut.js").1, "MISS");
    std::thread::sleep(Duration::from_millis(2100));
    let (first, second) = two_on_one(s.port, host, "/siecut.js");
    assert!(first.contains("cf-cache-status: stale"), "{first}");
    if first.contains("connection: keep-alive") {
        assert!(second.is_some(), "announced kept, then closed: {first}");
    } else {
        assert!(first.contains("connection: close"), "{first}");
    }
}

/// Two GETs of `path` one after the other on one connection: the first answer's header, and
/// the second's (`None`: the connection closed first), lowercase.
fn two_on_one(port: u16, host: &str, path: &str) -> (String, Option<String>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    let read_answer = |s: &mut TcpStream| -> Option<String> {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).ok()? == 0 {
                return None;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        s.read_exact(&mut body).ok()?;
        Some(head)
    };
    s.write_all(request.as_bytes()).expect("first request");
    let first = read_answer(&mut s).expect("first answer");
    // Given time to close, if it will.
    std::thread::sleep(Duration::from_millis(100));
    let second = s
        .write_all(request.as_bytes())
        .ok()
        .and_then(|()| read_answer(&mut s));
    (first, second)
}

#[test]
fn ranges_are_served_from_the_stored_object() {
    let s = site("range.test");
    let host = "www.range.test";
    let (_, cache, _, full) = fetch(s.port, host, "/big.bin", &[]);
    assert_eq!(cache, "MISS");
    let (status, cache, head, part) = fetch(s.port, host, "/big.bin", &["-H", "Range: bytes=1-4"]);
    assert_eq!((status, cache.as_str()), (206, "HIT"), "{head}");
    assert_eq!(part, full[1..5]);
    assert!(
        head.contains(&format!("content-range: bytes 1-4/{}", full.len())),
        "{head}"
    );
    let (status, _, _, _) = fetch(s.port, host, "/big.bin", &["-H", "Range: bytes=9999-"]);
    assert_eq!(status, 416);
    // A suffix of no bytes selects nothing: 416, with the length (not an empty 206).
    let (status, _, head, _) = fetch(s.port, host, "/big.bin", &["-H", "Range: bytes=-0"]);
    assert_eq!(status, 416, "{head}");
    assert!(
        head.contains(&format!("content-range: bytes */{}", full.len())),
        "{head}"
    );
    // A part the origin sent for the whole is not the object: never stored.
    for _ in 0..2 {
        let (status, cache, head, _) = fetch(s.port, host, "/partial.png", &[]);
        assert_eq!(status, 206, "{head}");
        assert_ne!(cache, "HIT", "{head}");
    }
    assert_eq!(s.hits.of("/partial.png"), 2);
    // Ranges that select nothing are dropped from a set with others: the rest is answered
    // whole (the engine announced them and cut the connection).
    let (status, _, head, part) = fetch(s.port, host, "/big.bin", &["-H", "Range: bytes=0-0,-0"]);
    assert_eq!((status, part.as_str()), (206, &full[..1]), "{head}");
    assert!(
        head.contains(&format!("content-range: bytes 0-0/{}", full.len())),
        "{head}"
    );
    let (status, _, head, parts) = fetch(
        s.port,
        host,
        "/big.bin",
        &["-H", "Range: bytes=1-2, 99999999-, 4-5"],
    );
    assert_eq!(status, 206, "{head}");
    assert!(head.contains("multipart/byteranges"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", parts.len())),
        "{head}"
    );
    for (range, bytes) in [("1-2", &full[1..3]), ("4-5", &full[4..6])] {
        let part = format!("bytes {range}/{}\r\n\r\n{bytes}", full.len());
        assert!(parts.contains(&part), "{range}: {parts}");
    }
    // A weak validator never matches If-Range: the whole object.
    let (status, _, head, whole) = fetch(
        s.port,
        host,
        "/big.bin",
        &["-H", "Range: bytes=1-4", "-H", "If-Range: W/\"x\""],
    );
    assert_eq!((status, whole.len()), (200, full.len()), "{head}");
    // An octet stream is not compressed, whatever the visitor accepts: the stored bytes, with
    // their length.
    let (status, _, head, same) = fetch(
        s.port,
        host,
        "/big.bin",
        &["-H", "Accept-Encoding: br, gzip"],
    );
    assert_eq!(status, 200);
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", full.len())),
        "{head}"
    );
    assert_eq!(same, full);
    assert_eq!(s.hits.of("/big.bin"), 1);
}

#[test]
fn compressible_responses_are_compressed_as_the_visitor_accepts() {
    let s = site("gzip.test");
    let host = "www.gzip.test";
    let (_, _, head, plain) = fetch(s.port, host, "/text.css", &[]);
    assert!(!head.contains("content-encoding"), "{head}");
    assert!(plain.len() > 6000, "{}", plain.len());
    assert_eq!(s.hits.of("/text.css"), 1);
    // gzip, br and zstd are stored compressed, each made once: the first request of a coding
    // is a miss, the next ones are hits of the stored compressed copy.
    for (i, coding) in ["gzip", "br", "zstd"].into_iter().enumerate() {
        for expected in ["MISS", "HIT", "HIT"] {
            let (status, cache, head, _) = fetch(
                s.port,
                host,
                "/text.css",
                &["-H", &format!("Accept-Encoding: {coding}")],
            );
            assert_eq!((status, cache.as_str()), (200, expected), "{coding}");
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{coding}: {head}"
            );
            assert!(
                head.contains("etag: w/\"css1\""),
                "a compressed copy's ETag is weak: {head}"
            );
        }
        assert_eq!(
            s.hits.of("/text.css"),
            2 + i,
            "one origin request per coding"
        );
    }
    // Weights count: a refused coding (q=0) is never used.
    for (accept, coding) in [
        ("gzip;q=0, identity", None),
        ("br;q=0, zstd", Some("zstd")),
        ("br;q=0, zstd;q=0, gzip;q=0.5", Some("gzip")),
        // `*` accepts the codings not listed.
        ("identity;q=0, *", Some("br")),
        ("br;q=0, *", Some("zstd")),
    ] {
        let (status, _, head, _) = fetch(
            s.port,
            host,
            "/text.css",
            &["-H", &format!("Accept-Encoding: {accept}")],
        );
        assert_eq!(status, 200);
        let used = head
            .lines()
            .find_map(|l| l.strip_prefix("content-encoding: "))
            .map(str::trim);
        assert_eq!(used, coding, "{accept}: {head}");
    }
    assert_eq!(s.hits.of("/text.css"), 4);
    // curl decodes gzip: the same stylesheet, fewer bytes on the wire.
    let out = std::process::Command::new("curl")
        .args([
            "-s",
            "--compressed",
            "-H",
            "Accept-Encoding: gzip",
            "-w",
            "\n%{size_download}",
            "--resolve",
        ])
        .arg(format!("{host}:{}:127.0.0.1", s.port))
        .arg(format!("http://{host}:{}/text.css", s.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, size) = text.rsplit_once('\n').expect("size");
    // The stored gzip copy: the origin's second answer (the first one is the uncompressed copy).
    assert!(body.starts_with("/* /text.css answer 2 */"), "{body}");
    assert_eq!(
        body.split_once('\n').map(|b| b.1),
        plain.split_once('\n').map(|b| b.1)
    );
    let size: usize = size.trim().parse().expect("number");
    assert!(
        size * 10 < plain.len(),
        "{size} bytes on the wire for {}",
        plain.len()
    );
    // Types that do not compress pass unchanged.
    let (_, _, head, _) = fetch(s.port, host, "/logo.png", &["-H", "Accept-Encoding: gzip"]);
    assert!(!head.contains("content-encoding"), "{head}");
    // A date in If-Range matches the stored bytes only: not a copy the edge encoded, whose
    // bytes differ under the same Last-Modified.
    let if_range = [
        "-H",
        "Range: bytes=0-9",
        "-H",
        "If-Range: Mon, 02 Jan 2023 00:00:00 GMT",
    ];
    fetch(s.port, host, "/text-dated.css", &[]);
    fetch(
        s.port,
        host,
        "/text-dated.css",
        &["-H", "Accept-Encoding: gzip"],
    );
    let (status, _, head, _) = fetch(
        s.port,
        host,
        "/text-dated.css",
        &[&if_range[..], &["-H", "Accept-Encoding: gzip"]].concat(),
    );
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    let (status, _, head, body) = fetch(s.port, host, "/text-dated.css", &if_range);
    assert_eq!((status, body.len()), (206, 10), "{head}");
    // Nor do answers the origin forbids transforming, on every path: stored and hit (directly
    // and through the engine, with a precondition), passed, over both protocols.
    let gzip = ["-H", "Accept-Encoding: gzip, br"];
    for path in ["/text-notransform.css", "/text-notransform-nostore.css"] {
        for extra in [
            &gzip[..],
            &gzip,
            &[&gzip[..], &["-H", "If-Match: \"css1\""]].concat(),
            &[&gzip[..], &["--http2-prior-knowledge"]].concat(),
        ] {
            let (status, cache, head, body) = fetch(s.port, host, path, extra);
            assert_eq!(status, 200, "{path} {extra:?}: {head}");
            assert!(
                !head.contains("content-encoding") && !head.contains("vary"),
                "{path} {extra:?} ({cache}): {head}"
            );
            assert!(head.contains("etag: \"css1\""), "{path}: {head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{path}: {head}"
            );
        }
    }
}

#[test]
fn an_origins_gzip_or_brotli_is_decoded_for_a_visitor_that_does_not_accept_it() {
    let s = site("coded.test");
    let host = "www.coded.test";
    let h2 = "--http2-prior-knowledge";
    // Stored: each coding class is asked of the origin once and kept as it is served; passed
    // (no-store): decoded on the way, through the edge's own paths and the engine's (a POST).
    for (path, statuses) in [
        ("/pregzip.css", ["MISS", "HIT", "HIT"]),
        ("/prebr.css", ["MISS", "HIT", "HIT"]),
        ("/pregzip-nostore.css", ["BYPASS"; 3]),
    ] {
        let text = precoded_text(path);
        for (extra, expected) in [
            (&[][..], statuses[0]),
            (&[], statuses[1]),
            (&[h2], statuses[2]),
            (&["-X", "POST"], "DYNAMIC"),
            (&["-X", "POST", h2], "DYNAMIC"),
        ] {
            let (status, cache, head, body) = fetch(s.port, host, path, extra);
            assert_eq!(
                (status, cache.as_str()),
                (200, expected),
                "{path} {extra:?}"
            );
            assert!(
                !head.contains("content-encoding"),
                "{path} {extra:?}: {head}"
            );
            assert_eq!(body, text, "{path} {extra:?}: {head}");
            assert!(
                !head.contains("etag: \"pre1\""),
                "a decoded copy's ETag is not the coded one's: {head}"
            );
        }
        // A visitor that accepts the coding gets it as the origin sent it (curl decodes it).
        for extra in [&[][..], &[h2]] {
            let accept = ["--compressed", "-H", "Accept-Encoding: gzip, br"];
            let (status, _, head, body) = fetch(s.port, host, path, &[&accept[..], extra].concat());
            assert_eq!(status, 200, "{path}");
            let coding = if path.contains("br") { "br" } else { "gzip" };
            assert!(
                head.contains(&format!("content-encoding: {coding}")),
                "{path} {extra:?}: {head}"
            );
            assert_eq!(body, text, "{path} {extra:?}");
        }
    }
    assert_eq!(s.hits.of("/pregzip.css"), 4, "none, two POSTs, then gzip");
    // A brotli-only visitor gets brotli, not gzip.
    let accept = ["--compressed", "-H", "Accept-Encoding: br"];
    let (_, _, head, body) = fetch(s.port, host, "/pregzip.css", &accept);
    assert!(head.contains("content-encoding: br"), "{head}");
    assert_eq!(body, precoded_text("/pregzip.css"));
    // An answer the origin forbids transforming goes as it came, on every path.
    for path in [
        "/pregzip-notransform.css",
        "/pregzip-notransform-nostore.css",
    ] {
        for extra in [&[][..], &[], &[h2]] {
            let (status, _, head, _) = fetch(s.port, host, path, extra);
            assert_eq!(status, 200, "{path}");
            assert!(
                head.contains("content-encoding: gzip"),
                "{path} {extra:?}: {head}"
            );
        }
    }
}

#[test]
fn a_respect_strong_etags_rule_keeps_the_origins_bytes_and_validator() {
    let s = site("etag.test");
    let host = "www.etag.test";
    s.node.ok(
        "PUT",
        &s.cache_rules_path(),
        Some(json!({"rules": [{
            "expression": "starts_with(http.request.uri.path, \"/kept/\")",
            "action": "set_cache_settings",
            "action_parameters": {"respect_strong_etags": true}}]})),
    );
    let gzip = ["-H", "Accept-Encoding: gzip"];
    parapet_testkit::eventually(Duration::from_secs(5), "the rule applied", || {
        let (_, _, head, _) = fetch(s.port, host, "/kept/ready-strong.css", &gzip);
        !head.contains("content-encoding")
    });
    // Under the rule: stored and served as the origin sent it, its ETag strong, whatever the
    // visitor accepts; once stale, revalidated with that ETag (the origin matches it exactly),
    // the 304's fields then stored and served with it.
    let mut seen = Vec::new();
    for (i, extra) in [&gzip[..], &gzip, &[], &gzip, &gzip]
        .into_iter()
        .enumerate()
    {
        if i == 3 {
            std::thread::sleep(Duration::from_millis(2100));
        }
        let (status, cache, head, body) = fetch(s.port, host, "/kept/strong.css", extra);
        assert_eq!(status, 200, "{head}");
        assert!(!head.contains("content-encoding"), "{head}");
        assert!(!head.contains("vary: accept-encoding"), "{head}");
        assert!(head.contains("etag: \"s1\""), "{head}");
        assert!(
            body.starts_with("/* /kept/strong.css answer 1 */"),
            "{body:.40}"
        );
        let version = if i < 3 { "1" } else { "2" };
        assert!(head.contains(&format!("x-version: {version}")), "{head}");
        seen.push(cache);
    }
    assert_eq!(seen, ["MISS", "HIT", "HIT", "REVALIDATED", "HIT"]);
    assert_eq!(
        s.hits.of("/kept/strong.css"),
        2,
        "one fetch, one revalidation"
    );
    // Over HTTP/2, a hit the edge answers itself is the engine's answer under the rule too:
    // the origin's bytes and strong ETag, whatever the visitor accepts.
    let h2 = "--http2-prior-knowledge";
    let lasting = "/kept/strong-lasting.css";
    assert_eq!(fetch(s.port, host, lasting, &[h2]).1, "MISS");
    for extra in [&gzip[..], &[], &["-I"]] {
        let extra = [extra, &[h2]].concat();
        let head = hit_as_the_engine(&s, host, lasting, &extra).0;
        assert!(!head.contains("content-encoding"), "{head}");
        assert!(head.contains("etag: \"s1\""), "{head}");
    }
    // The tag the 304 brought purges the object.
    s.node.ok(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"tags": ["v2"]})),
    );
    let (_, cache, _, _) = fetch(s.port, host, "/kept/strong.css", &gzip);
    assert_eq!(cache, "MISS");
    // Not stored: passed on as the origin sent it too, through the engine and then (the URL
    // known as uncacheable) the edge's own pass-through.
    for expected in ["BYPASS", "BYPASS", "BYPASS"] {
        let (status, cache, head, _) = fetch(s.port, host, "/kept/strong-nostore.css", &gzip);
        assert_eq!((status, cache.as_str()), (200, expected), "{head}");
        assert!(!head.contains("content-encoding"), "{head}");
        assert!(head.contains("etag: \"s1\""), "{head}");
    }
    // Elsewhere: compressed for the visitor, the ETag made weak, and a weak ETag never
    // matches the origin's strong one exactly.
    let (_, cache, head, _) = fetch(s.port, host, "/strong.css", &gzip);
    assert_eq!(cache, "MISS");
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("etag: w/\"s1\""), "{head}");
}

#[test]
fn torn_bodies_and_endless_variants_are_not_stored() {
    let s = site("hostile.test");
    let host = "www.hostile.test";
    // The origin promised more than it sent: the visitor's response is cut, nothing is stored.
    for _ in 0..2 {
        let (_, cache, _, body) = fetch(s.port, host, "/lying.png", &[]);
        assert_ne!(cache, "HIT", "a torn object was served: {body:?}");
    }
    assert_eq!(s.hits.of("/lying.png"), 2);
    // Vary: User-Agent from 40 different agents: only the first variants are kept.
    for i in 0..40 {
        fetch(
            s.port,
            host,
            "/useragent.png",
            &["-A", &format!("agent {i}")],
        );
    }
    let metrics = ureq::get(&format!("{}/metrics", s.node.base))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("body");
    let objects: usize = metrics
        .lines()
        .find_map(|l| l.strip_prefix("parapet_cache_objects "))
        .and_then(|n| n.trim().parse().ok())
        .expect("objects gauge");
    assert!(objects <= 32 + 1, "{objects} objects for one URL");
    let (_, cache, _, _) = fetch(s.port, host, "/useragent.png", &["-A", "agent 3"]);
    assert_eq!(cache, "HIT", "the first variants stay");
}

#[test]
fn variants_are_selected_by_their_lists_without_whitespace_and_other_fields_as_they_came() {
    let s = site("selecting.test");
    let host = "www.selecting.test";
    let language = |values: &[&str]| {
        let headers: Vec<String> = values
            .iter()
            .map(|v| format!("Accept-Language: {v}"))
            .collect();
        let args: Vec<&str> = headers.iter().flat_map(|h| ["-H", h.as_str()]).collect();
        fetch(s.port, host, "/language.png", &args).1
    };
    assert_eq!(language(&["en, de"]), "MISS");
    // The same list: spaced otherwise, in other case, on two lines.
    assert_eq!(language(&[" en ,   de"]), "HIT");
    assert_eq!(language(&["EN,De"]), "HIT");
    assert_eq!(language(&["en", "de"]), "HIT");
    assert_eq!(language(&["en,,de, "]), "HIT");
    // Another list: another variant.
    assert_eq!(language(&["de, en"]), "MISS");
    assert_eq!(language(&["de,en"]), "HIT");
    // Inside a quoted string, whitespace is part of the value.
    assert_eq!(language(&["\"x, y\""]), "MISS");
    assert_eq!(language(&["\"x,y\""]), "MISS");
    assert_eq!(s.hits.of("/language.png"), 4);
    // A field that is not a list is compared as it came: another spacing, another variant.
    let agent = |a: &str| fetch(s.port, host, "/useragent-spaced.png", &["-A", a]).1;
    assert_eq!(agent("x (K, G)"), "MISS");
    assert_eq!(agent("x (K,G)"), "MISS");
    assert_eq!(agent("x (K, G)"), "HIT");
}

#[test]
fn vary_accept_encoding_keeps_variants_apart() {
    let s = site("vary.test");
    let host = "www.vary.test";
    let gz = ["-H", "Accept-Encoding: gzip, deflate"];
    let br = ["-H", "Accept-Encoding: br;q=1, gzip"];
    assert_eq!(fetch(s.port, host, "/vary.js", &gz).1, "MISS");
    assert_eq!(fetch(s.port, host, "/vary.js", &br).1, "MISS");
    let (_, cache, _, body) = fetch(s.port, host, "/vary.js", &["-H", "Accept-Encoding: gzip"]);
    assert_eq!(cache, "HIT", "gzip variants are one variant");
    assert!(
        body.ends_with("for gzip"),
        "the origin is asked for the coding class only: {body}"
    );
    let (_, cache, _, body) = fetch(s.port, host, "/vary.js", &br);
    assert_eq!(cache, "HIT");
    assert!(body.ends_with("for br"), "{body}");
    assert_eq!(s.hits.of("/vary.js"), 2);
}

#[test]
fn purge_through_the_api_is_effective_on_the_next_request() {
    let s = site("purge.test");
    let host = "www.purge.test";
    let get = |path: &str| fetch(s.port, host, path, &[]).1;
    let purge = |body: serde_json::Value| {
        let r = s.node.ok(
            "POST",
            &format!("/zones/{}/purge_cache", s.zone),
            Some(body),
        );
        assert_eq!(r["id"], s.zone.as_str());
    };
    let warm = |paths: &[&str]| {
        for p in paths {
            get(p);
            assert_eq!(get(p), "HIT", "{p}");
        }
    };

    warm(&["/a.css", "/b.css"]);
    purge(json!({"files": [format!("http://{host}:{}/a.css", s.port)]}));
    assert_eq!(get("/a.css"), "MISS");
    assert_eq!(get("/b.css"), "HIT", "other files stay");

    warm(&["/tag-blue.js", "/tag-red.js"]);
    purge(json!({"tags": ["blue"]}));
    assert_eq!(get("/tag-blue.js"), "MISS");
    assert_eq!(get("/tag-red.js"), "HIT");

    warm(&["/img/1.png", "/img/2.png", "/css/x.css"]);
    purge(json!({"prefixes": [format!("{host}/img/")]}));
    assert_eq!(get("/img/1.png"), "MISS");
    assert_eq!(get("/img/2.png"), "MISS");
    assert_eq!(get("/css/x.css"), "HIT");

    warm(&["/css/x.css"]);
    purge(json!({"hosts": [host]}));
    assert_eq!(get("/css/x.css"), "MISS");

    warm(&["/a.css", "/b.css"]);
    purge(json!({"purge_everything": true}));
    assert_eq!(get("/a.css"), "MISS");
    assert_eq!(get("/b.css"), "MISS");

    let (status, body) = s.node.call(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"files": ["ftp://nope/x"]})),
    );
    assert_eq!(status, 400, "{body}");
    let metrics = ureq::get(&format!("{}/metrics", s.node.base))
        .call()
        .expect("metrics")
        .into_body()
        .read_to_string()
        .expect("body");
    assert!(metrics.contains("parapet_cache_objects"), "{metrics}");
}

#[test]
fn concurrent_misses_for_one_object_make_one_origin_request() {
    let s = site("coalesce.test");
    let port = s.port;
    let threads: Vec<_> = (0..500)
        .map(|_| {
            std::thread::spawn(move || {
                let mut c = TcpStream::connect(("127.0.0.1", port)).expect("connect");
                c.set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("timeout");
                c.write_all(
                    b"GET /slow.js HTTP/1.1\r\nHost: www.coalesce.test\r\nConnection: close\r\n\r\n",
                )
                .expect("write");
                let mut response = String::new();
                let _ = c.read_to_string(&mut response);
                response
            })
        })
        .collect();
    for t in threads {
        let response = t.join().expect("client");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        assert!(response.ends_with("/slow.js answer 1"), "{response}");
    }
    assert_eq!(
        s.hits.of("/slow.js"),
        1,
        "one origin request for 500 visitors"
    );
}

#[test]
fn cache_rules_make_pages_cacheable_bypass_paths_and_shape_the_key() {
    let s = site("rules.test");
    let host = "www.rules.test";
    let get = |path: &str| fetch(s.port, host, path, &[]);
    let path = s.cache_rules_path();
    let (status, body) = s.node.call(
        "PUT",
        &path,
        Some(
            json!({"rules": [{"expression": "true", "action": "set_cache_settings",
            "action_parameters": {"edge_ttl": {"mode": "sometimes"}}}]}),
        ),
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.to_string().contains("edge_ttl.mode"), "{body}");
    s.node.ok(
        "PUT",
        &path,
        Some(json!({"rules": [
            {"expression": "http.request.uri.path.extension eq \"html\"",
             "action": "set_cache_settings",
             "action_parameters": {"cache": true,
                "edge_ttl": {"mode": "override_origin", "default": 60},
                "browser_ttl": {"mode": "override_origin", "default": 30}}},
            {"expression": "starts_with(http.request.uri.path, \"/api/\")",
             "action": "set_cache_settings", "action_parameters": {"cache": false}},
            {"expression": "true", "action": "set_cache_settings",
             "action_parameters": {"cache_key": {"ignore_query_strings_order": true,
                "custom_key": {"query_string": {"exclude": {"list": ["utm_source"]}}}}}},
            {"expression": "starts_with(http.request.uri.path, \"/always/\")",
             "action": "set_cache_settings",
             "action_parameters": {"edge_ttl": {"mode": "override_origin", "default": 60,
                "status_code_ttl": [{"status_code": 200, "value": 0}]}}},
            {"expression": "starts_with(http.request.uri.path, \"/never/\")",
             "action": "set_cache_settings",
             "action_parameters": {"edge_ttl": {"mode": "override_origin", "default": 60,
                "status_code_ttl": [{"status_code_range": {"from": 200}, "value": -1}]}}},
            {"expression": "starts_with(http.request.uri.path, \"/gated/\")",
             "action": "set_cache_settings",
             "action_parameters": {"edge_ttl": {"mode": "respect_origin",
                "status_code_ttl": [{"status_code": 403, "value": 60}]}}}
        ]})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "the rules in force", || {
        get("/page.html").1 == "MISS"
    });
    let (_, cache, head, _) = get("/page.html");
    assert_eq!(cache, "HIT");
    assert!(head.contains("cache-control: max-age=30"), "{head}");
    // A rule's edge TTL never stores a response to a request with credentials.
    let auth = ["-H", "Authorization: Bearer secret"];
    assert_eq!(fetch(s.port, host, "/short-mine.html", &auth).1, "BYPASS");
    // The next request goes to the origin (a URL last answered uncacheably is passed on, and
    // learnt cacheable on the way), and the one after is stored.
    assert_ne!(
        get("/short-mine.html").1,
        "HIT",
        "the credentialed response was not stored"
    );
    assert_ne!(get("/short-mine.html").1, "BYPASS");
    assert_eq!(get("/short-mine.html").1, "HIT");
    // The edge TTL overrides even the origin's no-store.
    assert_eq!(get("/nostore.html").1, "MISS");
    assert_eq!(get("/nostore.html").1, "HIT");
    // A status TTL of 0 stores the answer but asks the origin before every use; a negative
    // one does not store it.
    assert_eq!(get("/always/a.js").1, "MISS");
    assert_ne!(get("/always/a.js").1, "HIT");
    assert_eq!(s.hits.of("/always/a.js"), 2);
    assert_ne!(get("/never/a.js").1, "HIT");
    assert_ne!(get("/never/a.js").1, "HIT");
    assert_eq!(s.hits.of("/never/a.js"), 2);
    // A status TTL makes a status cacheable that is not by default.
    let (status, cache, ..) = get("/gated/forbidden.png");
    assert_eq!((status, cache.as_str()), (403, "MISS"));
    let (status, cache, ..) = get("/gated/forbidden.png");
    assert_eq!((status, cache.as_str()), (403, "HIT"));
    assert_eq!(s.hits.of("/gated/forbidden.png"), 1);
    assert_ne!(get("/forbidden.png").1, "HIT");
    assert_ne!(get("/forbidden.png").1, "HIT");
    // Bypassed by rule although .js is eligible by default.
    assert_eq!(get("/api/x.js").1, "BYPASS");
    assert_eq!(get("/api/x.js").1, "BYPASS");
    assert_eq!(s.hits.of("/api/x.js"), 2);
    // Rules see the normalized path: an encoded or dotted spelling does not slip past.
    assert_eq!(get("/%61pi/y.js").1, "BYPASS");
    assert_eq!(
        fetch(s.port, host, "/img/../api/z.js", &["--path-as-is"]).1,
        "BYPASS"
    );
    // Query parameters sorted, utm_source left out of the key.
    assert_eq!(get("/q.js?b=2&utm_source=x&a=1").1, "MISS");
    assert_eq!(get("/q.js?a=1&b=2").1, "HIT");
    assert_eq!(get("/q.js?a=1&b=3").1, "MISS");
    // A POST to the URL drops the object stored under the rule-shaped key; so does a POST
    // elsewhere whose answer names the URL in `Location`.
    for posted_to in [
        "/q.js?b=2&a=1&utm_source=y",
        "/form?next=/q.js%3Fb%3D2%26a%3D1",
    ] {
        assert_eq!(get("/q.js?a=1&b=2").1, "HIT");
        let posted = fetch(s.port, host, posted_to, &["-X", "POST", "-d", "x"]);
        assert_eq!(posted.0, 200);
        assert_eq!(
            get("/q.js?a=1&b=2").1,
            "MISS",
            "after a POST to {posted_to}"
        );
    }
    // An absolute `Location` names its own scheme and port: the same origin's drops the
    // object, another scheme's or port's does not.
    let port = s.port;
    let upper = host.to_ascii_uppercase();
    for (location, dropped) in [
        (format!("https://{host}:{port}/q.js%3Fb%3D2%26a%3D1"), false),
        (format!("http://{host}:1/q.js%3Fb%3D2%26a%3D1"), false),
        (format!("http://{upper}:{port}/q.js%3Fb%3D2%26a%3D1"), true),
    ] {
        assert_eq!(get("/q.js?a=1&b=2").1, "HIT");
        let posted = fetch(
            s.port,
            host,
            &format!("/form?next={location}"),
            &["-X", "POST"],
        );
        assert_eq!(posted.0, 200);
        let want = if dropped { "MISS" } else { "HIT" };
        assert_eq!(get("/q.js?a=1&b=2").1, want, "after a Location {location}");
    }
}

/// GET a large object through the edge into memory: `CF-Cache-Status`, body length, and
/// whether every byte is the origin's (from `offset`).
fn fetch_big(
    port: u16,
    host: &str,
    path: &str,
    extra: &[&str],
    offset: usize,
) -> (String, usize, bool) {
    let out = std::process::Command::new("curl")
        .args(["-s", "-D", "/dev/stderr", "--max-time", "30", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("http://{host}:{port}{path}"))
        .output()
        .expect("curl");
    let head = String::from_utf8_lossy(&out.stderr).to_ascii_lowercase();
    let cache = head
        .lines()
        .find_map(|l| l.strip_prefix("cf-cache-status: "))
        .unwrap_or("")
        .trim()
        .to_ascii_uppercase();
    let intact = out
        .stdout
        .iter()
        .enumerate()
        .all(|(i, b)| *b == big_byte(offset + i));
    (cache, out.stdout.len(), intact)
}

fn metric(node: &Node, name: &str) -> u64 {
    node.metric(name)
}

/// A node on `data` serving `port`, with this configuration.
fn node_on(data: &std::path::Path, port: u16, config: &str) -> Node {
    Node::start(NodeOptions::new(BIN).data_dir(data).config(config).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]))
}

#[test]
fn the_disk_tier_keeps_objects_across_a_crash_and_purges_stay_purged() {
    let (site, _tmp, data) = site_on_disk("disk.test", "");
    let Site {
        mut node,
        zone,
        port,
        hits,
    } = site;
    let host = "www.disk.test";
    let get = |path: &str| fetch(port, host, path, &[]).1;
    for path in ["/keep.png", "/gone.png", "/tag-x.js"] {
        assert_eq!(get(path), "MISS");
        assert_eq!(get(path), "HIT");
    }
    let purge = |node: &Node, body: serde_json::Value| {
        node.ok("POST", &format!("/zones/{zone}/purge_cache"), Some(body));
    };
    purge(
        &node,
        json!({"files": [format!("http://{host}:{port}/gone.png")]}),
    );
    purge(&node, json!({"tags": ["x"]}));

    node.kill9();
    let mut node = node_on(&data, port, "");
    parapet_testkit::eventually(Duration::from_secs(10), "the disk tier indexed", || {
        metric(&node, "parapet_cache_disk_objects") == 1
    });
    assert_eq!(get("/keep.png"), "HIT", "served from disk after a crash");
    assert_eq!(hits.of("/keep.png"), 1);
    assert_eq!(
        metric(&node, "parapet_edge_direct_hits_total"),
        1,
        "a small file is read whole and answered without the HTTP engine"
    );
    assert_eq!(get("/gone.png"), "MISS", "a purged file stays purged");
    assert_eq!(get("/tag-x.js"), "MISS", "a purged tag stays purged");

    purge(&node, json!({"purge_everything": true}));
    node.kill9();
    let mut node = node_on(&data, port, "");
    let objects = data.join("cache").join("objects");
    parapet_testkit::eventually(Duration::from_secs(10), "purged files deleted", || {
        std::fs::read_dir(&objects)
            .expect("objects")
            .flatten()
            .all(|fan| std::fs::read_dir(fan.path()).expect("fan").count() == 0)
    });
    assert_eq!(get("/keep.png"), "MISS", "purged everything stays purged");
    assert_eq!(hits.of("/keep.png"), 2);
    // What is stored after the purge is kept across the next restart.
    assert_eq!(get("/keep.png"), "HIT");
    node.kill9();
    let node = node_on(&data, port, "");
    parapet_testkit::eventually(Duration::from_secs(10), "the disk tier indexed", || {
        metric(&node, "parapet_cache_disk_objects") >= 1
    });
    assert_eq!(
        get("/keep.png"),
        "HIT",
        "stored after the purge, kept after a restart"
    );
    assert_eq!(hits.of("/keep.png"), 2);
    drop(node);
}

#[test]
fn large_objects_stream_through_the_disk_tier_and_a_crash_mid_write_stores_nothing() {
    let config = "cache_memory_bytes = 8388608\ncache_disk_bytes = 536870912\n";
    let (site, _tmp, data) = site_on_disk("large.test", config);
    let Site {
        mut node,
        port,
        hits,
        ..
    } = site;
    let host = "www.large.test";

    // 40 MiB: more than the memory tier holds; kept on disk, served from the file.
    let size = 40 << 20;
    let before_kib = peak_resident_kib(&node);
    assert_eq!(
        fetch_big(port, host, "/big/40.bin", &[], 0),
        ("MISS".into(), size, true)
    );
    assert_eq!(
        fetch_big(port, host, "/big/40.bin", &[], 0),
        ("HIT".into(), size, true)
    );
    assert_eq!(
        fetch_big(
            port,
            host,
            "/big/40.bin",
            &["-r", "30000000-30000999"],
            30_000_000
        ),
        ("HIT".into(), 1000, true)
    );
    assert_eq!(hits.of("/big/40.bin"), 1);
    let grown_kib = peak_resident_kib(&node) - before_kib;
    assert!(
        grown_kib < 30 * 1024,
        "peak resident memory grew by {grown_kib} KiB for a 40 MiB object"
    );

    // Killed while a slow object is being written: after the restart it is fetched again,
    // never served torn.
    let slow =
        std::thread::spawn(move || fetch_big(port, "www.large.test", "/big/slow-24.bin", &[], 0));
    parapet_testkit::eventually(Duration::from_secs(5), "the slow object started", || {
        hits.of("/big/slow-24.bin") == 1
    });
    std::thread::sleep(Duration::from_millis(1500));
    node.kill9();
    let (_, cut_len, _) = slow.join().expect("slow fetch");
    assert!(cut_len < 24 << 20, "the kill came after the whole object");
    let node = node_on(&data, port, config);
    parapet_testkit::eventually(Duration::from_secs(10), "the disk tier indexed", || {
        metric(&node, "parapet_cache_disk_objects") >= 1
    });
    assert_eq!(
        fetch_big(port, host, "/big/40.bin", &[], 0),
        ("HIT".into(), size, true)
    );
    assert_eq!(
        fetch_big(port, host, "/big/slow-24.bin", &[], 0),
        ("MISS".into(), 24 << 20, true)
    );
    assert_eq!(hits.of("/big/slow-24.bin"), 2);
    drop(node);
}

#[test]
fn large_hits_go_from_their_file_to_plain_connections_whole_and_current() {
    let (s, _tmp, data) = site_on_disk("file.test", "");
    let host = "www.file.test";
    let path = "/big/100k-gen.bin";
    let from_files = || metric(&s.node, "parapet_edge_hits_from_files_total");
    let on_disk = || {
        parapet_testkit::eventually(Duration::from_secs(10), "the object on disk", || {
            metric(&s.node, "parapet_cache_disk_objects") == 1
        });
    };
    let whole = |cache: &str| (cache.to_owned(), 100 << 10, true);
    // Hits of the stored object go from its file (the memory tier holds it too).
    assert_eq!(fetch_big(s.port, host, path, &[], 1), whole("MISS"));
    on_disk();
    for round in 1..=2 {
        assert_eq!(fetch_big(s.port, host, path, &[], 1), whole("HIT"));
        assert_eq!(from_files(), round);
    }
    // A visitor reading slowly through a small window gets it whole.
    let (head, body) = slow_get(s.port, host, path);
    assert!(
        head.starts_with("http/1.1 200") && head.contains("cf-cache-status: hit"),
        "{head}"
    );
    assert_eq!(body.len(), 100 << 10);
    assert!(body.iter().enumerate().all(|(i, b)| *b == big_byte(1 + i)));
    assert_eq!(from_files(), 3);
    // A header alone is not read from the file.
    let (cache, ..) = fetch_big(s.port, host, path, &["-I", "-o", "/dev/null"], 1);
    assert_eq!(cache, "HIT");
    assert_eq!(from_files(), 3);
    // A file the kernel no longer caches is not read while a visitor waits: the memory tier's
    // copy answers, and the file is read back in the background for the next hits. (A file
    // found cached is not looked at again for 100 ms. On tmpfs the pages cannot be dropped.)
    use nix::sys::statfs::{TMPFS_MAGIC, statfs};
    let on_tmpfs = statfs(&data).is_ok_and(|f| f.filesystem_type() == TMPFS_MAGIC);
    if !on_tmpfs {
        std::thread::sleep(Duration::from_millis(150));
        let files = files_under(&data.join("cache").join("objects"));
        let [file] = &files[..] else {
            panic!("one object file: {files:?}")
        };
        let file = std::fs::File::open(file).expect("the object's file");
        file.sync_all().expect("written back");
        let evict = nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED;
        nix::fcntl::posix_fadvise(&file, 0, 0, evict).expect("pages dropped");
        assert_eq!(fetch_big(s.port, host, path, &[], 1), whole("HIT"));
        assert_eq!(from_files(), 3);
        std::thread::sleep(Duration::from_millis(150));
        parapet_testkit::eventually(Duration::from_secs(5), "sent from the file again", || {
            assert_eq!(fetch_big(s.port, host, path, &[], 1), whole("HIT"));
            from_files() > 3
        });
    }
    // Purged and stored again with other bytes: hits send the new file.
    let before = from_files();
    s.node.ok(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"files": [format!("http://{host}:{}{path}", s.port)]})),
    );
    assert_eq!(fetch_big(s.port, host, path, &[], 2), whole("MISS"));
    on_disk();
    assert_eq!(fetch_big(s.port, host, path, &[], 2), whole("HIT"));
    assert_eq!(from_files(), before + 1);
    assert_eq!(s.hits.of(path), 2);
}

/// A GET read a little at a time through a small receive window: its header (lowercase) and
/// body.
fn slow_get(port: u16, host: &str, path: &str) -> (String, Vec<u8>) {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    let (got, error) = read_slowly(port, request.as_bytes(), Duration::ZERO, b"");
    assert!(error.is_none(), "reading the answer: {error:?}");
    split_answer(&got)
}

/// What the edge sends for `sent`, read after `wait` (and `later` sent then) a little at a time
/// through a small receive window until it closes, and the error that ended the reading, if
/// one did.
fn read_slowly(
    port: u16,
    sent: &[u8],
    wait: Duration,
    later: &[u8],
) -> (Vec<u8>, Option<std::io::Error>) {
    use std::io::Read as _;
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("small window");
    let addr: std::net::SocketAddr = ([127, 0, 0, 1], port).into();
    socket.connect(&addr.into()).expect("connect");
    let mut tcp = TcpStream::from(socket);
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    tcp.write_all(sent).expect("request");
    std::thread::sleep(wait);
    if let Err(e) = tcp.write_all(later) {
        return (Vec::new(), Some(e));
    }
    let (mut got, mut piece) = (Vec::new(), [0u8; 2000]);
    loop {
        match tcp.read(&mut piece) {
            Ok(0) => return (got, None),
            Ok(n) => got.extend_from_slice(&piece[..n]),
            Err(e) => return (got, Some(e)),
        }
        std::thread::sleep(Duration::from_micros(300));
    }
}

/// An answer's header (lowercase) and body.
fn split_answer(got: &[u8]) -> (String, Vec<u8>) {
    let end = got
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a header");
    let head = String::from_utf8_lossy(&got[..end]).to_ascii_lowercase();
    (head, got[end + 4..].to_vec())
}

#[test]
fn an_answer_before_a_close_arrives_whole_when_the_visitor_sent_more_than_was_read() {
    let s = site("linger.test");
    let host = "www.linger.test";
    let hit = "/big/100k-4.bin";
    assert_eq!(fetch_big(s.port, host, hit, &[], 0).0, "MISS");
    assert_eq!(fetch_big(s.port, host, hit, &[], 0).0, "HIT");
    // A visitor asks for an object with `Connection: close` and sends 64 KiB more behind the
    // request, then reads the answer slowly: the edge is done answering while most of the
    // answer waits in its socket and the visitor's bytes lie unread. Closing then would reset
    // the connection and throw the rest of the answer away; so would bytes the visitor sends
    // after the edge is done (here 300 ms later). A miss is answered by the HTTP engine, a hit
    // by the edge's own path: both close the connection.
    for (path, status) in [("/big/100k-5.bin", "MISS"), (hit, "HIT")] {
        let mut sent = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .into_bytes();
        sent.extend_from_slice(&[b'x'; 64 << 10]);
        let wait = Duration::from_millis(300);
        let (got, error) = read_slowly(s.port, &sent, wait, &[b'y'; 1000]);
        assert!(
            error.is_none(),
            "{status}: after {} bytes: {error:?}",
            got.len()
        );
        let (head, body) = split_answer(&got);
        assert!(
            head.starts_with("http/1.1 200")
                && head.contains("connection: close")
                && head.contains(&format!("cf-cache-status: {}", status.to_lowercase())),
            "{head}"
        );
        assert_eq!(body.len(), 100 << 10, "{status}");
        assert!(body.iter().enumerate().all(|(i, b)| *b == big_byte(i)));
    }
}

#[test]
fn requests_pipelined_behind_ones_the_engine_answers_are_answered_in_turn() {
    let s = site("pipelined.test");
    let host = "www.pipelined.test";
    assert_eq!(fetch_big(s.port, host, "/big/100k-7.bin", &[], 0).0, "MISS");
    // Misses and a POST with a body (the engine's), a hit (the edge's own), sent at once:
    // every answer comes back, in order, on the one connection; then it stays open.
    let requests = [
        format!("GET /big/100k-8.bin HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("POST /form HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\n\r\nhello"),
        format!("GET /big/100k-7.bin HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        format!("GET /piped.css HTTP/1.1\r\nHost: {host}\r\n\r\n"),
    ];
    let mut visitor = TcpStream::connect(("127.0.0.1", s.port)).expect("connect");
    visitor
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    visitor
        .write_all(requests.concat().as_bytes())
        .expect("requests");
    let mut reader = BufReader::new(visitor.try_clone().expect("clone"));
    let mut answers = Vec::new();
    for _ in &requests {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            let read = reader.read_line(&mut line).expect("an answer");
            assert!(read > 0, "closed after {} answers", answers.len());
            if line == "\r\n" {
                break;
            }
            head.push_str(&line.to_ascii_lowercase());
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a length");
        let mut body = vec![0; length];
        reader.read_exact(&mut body).expect("the body");
        let cache = head
            .lines()
            .find_map(|l| l.strip_prefix("cf-cache-status: "))
            .unwrap_or("-")
            .trim()
            .to_owned();
        answers.push((
            head.lines().next().unwrap_or("").trim().to_owned(),
            cache,
            body,
        ));
    }
    let statuses: Vec<(&str, &str)> = answers
        .iter()
        .map(|(status, cache, _)| (status.as_str(), cache.as_str()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("http/1.1 200 ok", "miss"),
            ("http/1.1 200 ok", "dynamic"),
            ("http/1.1 200 ok", "hit"),
            ("http/1.1 200 ok", "miss"),
        ]
    );
    assert!(
        answers[0]
            .2
            .iter()
            .enumerate()
            .all(|(i, b)| *b == big_byte(i))
    );
    assert_eq!(answers[1].2, b"posted");
    assert_eq!(answers[2].2.len(), 100 << 10);
    assert!(String::from_utf8_lossy(&answers[3].2).starts_with("/piped.css answer 1"));
    // Still open: one more request is answered.
    let again =
        format!("GET /big/100k-7.bin HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    visitor.write_all(again.as_bytes()).expect("one more");
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).expect("the last answer");
    assert!(
        rest.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&rest[..rest.len().min(200)])
    );
}

#[test]
fn the_disk_tier_stays_within_its_size() {
    let config = "cache_memory_bytes = 262144\ncache_disk_bytes = 1048576\n";
    let (site, _tmp, data) = site_on_disk("bounded.test", config);
    let Site { node, port, .. } = site;
    let host = "www.bounded.test";
    for i in 0..30 {
        let path = format!("/big/100k-{i}.bin");
        assert_eq!(
            fetch_big(port, host, &path, &[], 0),
            ("MISS".into(), 100 << 10, true)
        );
    }
    assert!(metric(&node, "parapet_cache_disk_bytes") <= 1 << 20);
    assert!(metric(&node, "parapet_cache_disk_evicted_total") >= 19);
    let on_disk: u64 = files_under(&data.join("cache").join("objects"))
        .iter()
        .filter_map(|f| f.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(on_disk <= 1 << 20, "{on_disk} bytes of files");
    // The most recent objects are still there.
    assert_eq!(fetch_big(port, host, "/big/100k-29.bin", &[], 0).0, "HIT");
    // An object larger than an eighth of the tier passes through uncached: it never empties
    // the tier (2 MiB, more than all of it, would have taken everything else out).
    for _ in 0..2 {
        let (status, len, intact) = fetch_big(port, host, "/big/2.bin", &[], 0);
        assert!(
            status != "HIT" && len == 2 << 20 && intact,
            "{status} {len}"
        );
    }
    for i in 27..30 {
        let path = format!("/big/100k-{i}.bin");
        assert_eq!(fetch_big(port, host, &path, &[], 0).0, "HIT", "{path}");
    }
}

fn peak_resident_kib(node: &Node) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{}/status", node.pid())).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM")
}

/// The files under `dir` and its subdirectories.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn cache_rules_from_the_configuration_file_apply_under_the_zones_own() {
    let port = free_port();
    let hits = start_cache_origin("127.0.0.2", port);
    let node = Node::start(
        NodeOptions::new(BIN)
            .args(["--activation", "auto", "--http-listen", &format!("127.0.0.1:{port}")])
            .config(
                "[[cache_rules]]\nzone = \"configured.test\"\nexpression = 'http.request.uri.path.extension eq \"html\"'\naction_parameters = { cache = true, edge_ttl = { mode = \"override_origin\", default = 60 } }\n",
            ),
    );
    let zone = node.create_zone("configured.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    let other = node.create_zone("unconfigured.test");
    node.proxied_a(&other, "www", "127.0.0.2");
    let get = |host: &str, path: &str| fetch(port, host, path, &[]).1;
    parapet_testkit::eventually(Duration::from_secs(5), "the names routed", || {
        fetch(port, "www.configured.test", "/ready.css", &[]).0 == 200
            && fetch(port, "www.unconfigured.test", "/ready.css", &[]).0 == 200
    });
    // Pages are not cached by default; the file's rule caches them in its zone only.
    assert_eq!(get("www.configured.test", "/page.html"), "MISS");
    assert_eq!(get("www.configured.test", "/page.html"), "HIT");
    assert_eq!(get("www.unconfigured.test", "/page.html"), "DYNAMIC");
    assert_eq!(get("www.unconfigured.test", "/page.html"), "DYNAMIC");
    // The zone's own rules (API) come after the file's and win where both say something.
    node.ok(
        "PUT",
        &format!("/zones/{zone}/rulesets/phases/http_request_cache_settings/entrypoint"),
        Some(json!({"rules": [{
            "expression": "starts_with(http.request.uri.path, \"/private/\")",
            "action": "set_cache_settings",
            "action_parameters": {"cache": false}}]})),
    );
    parapet_testkit::eventually(Duration::from_secs(5), "the zone's rule applied", || {
        get("www.configured.test", "/private/a.html") == "BYPASS"
    });
    assert_eq!(get("www.configured.test", "/private/a.html"), "BYPASS");
    assert_eq!(get("www.configured.test", "/page.html"), "HIT");
    assert_eq!(
        hits.of("/page.html"),
        3,
        "one fetch for the cached zone, two for the other"
    );
}

#[test]
fn cache_rules_put_listed_headers_and_cookies_in_the_key() {
    let s = site("keyed.test");
    let host = "www.keyed.test";
    let path = s.cache_rules_path();
    let (status, body) = s.node.call(
        "PUT",
        &path,
        Some(json!({"rules": [{"expression": "true", "action": "set_cache_settings",
            "action_parameters": {"cache_key": {"custom_key": {"header": {"include": ["bad name"]}}}}}]})),
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("custom_key.header.include[0]"),
        "{body}"
    );
    s.node.ok(
        "PUT",
        &path,
        Some(
            json!({"rules": [{"expression": "true", "action": "set_cache_settings",
            "action_parameters": {"cache_key": {"custom_key": {
                "header": {"include": ["X-Device"]},
                "cookie": {"include": ["lang"], "check_presence": ["session"]}}}}}]}),
        ),
    );
    let get = |extra: &[&str]| fetch(s.port, host, "/keyed.css", extra);
    parapet_testkit::eventually(Duration::from_secs(5), "the rule applied", || {
        get(&["-H", "X-Device: phone"]).1 == "HIT"
    });
    let before = s.hits.of("/keyed.css");
    // Another header value, cookie value or cookie presence is another object...
    for extra in [
        &["-H", "X-Device: tablet"][..],
        &["-H", "X-Device: phone", "-H", "Cookie: lang=fr"],
        &["-H", "X-Device: phone", "-H", "Cookie: session=1"],
    ] {
        assert_eq!(get(extra).1, "MISS", "{extra:?}");
        let (_, cache, _, body) = get(extra);
        assert_eq!(cache, "HIT", "{extra:?}");
        assert!(body.contains("answer"), "{body}");
    }
    assert_eq!(s.hits.of("/keyed.css"), before + 3);
    // ...while a checked cookie's value and unlisted headers and cookies are not.
    for extra in [
        &["-H", "X-Device: phone", "-H", "Cookie: session=2; other=x"][..],
        &["-H", "X-Device: phone", "-H", "X-Other: 1"],
    ] {
        assert_eq!(get(extra).1, "HIT", "{extra:?}");
    }
    // A purge of the URL removes every variant.
    s.node.ok(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"files": [format!("http://{host}:{}/keyed.css", s.port)]})),
    );
    assert_eq!(get(&["-H", "X-Device: tablet"]).1, "MISS");
    assert_eq!(get(&["-H", "X-Device: phone"]).1, "MISS");
}

#[test]
fn http2_hits_from_memory_are_answered_as_the_engine_answers_them() {
    let s = site("h2direct.test");
    let host = "www.h2direct.test";
    let direct = || metric(&s.node, "parapet_edge_direct_hits_total");
    let h2 = "--http2-prior-knowledge";
    let paths = HIT_PATHS;
    for path in paths {
        assert_eq!(fetch(s.port, host, path, &[h2]).1, "MISS", "{path}");
    }
    // The same hit twice: answered by the edge, then by the engine. Nothing tells them apart,
    // the visitor's compression (zstd, made from the stored copy) included.
    let reload = ["-H", "Cache-Control: max-age=0", "-H", "Pragma: no-cache"];
    let codings: [&[&str]; 5] = [
        &[],
        &["-H", "Accept-Encoding: gzip"],
        &["-H", "Accept-Encoding: zstd"],
        &["-I"],
        &reload,
    ];
    for path in paths {
        for coding in codings {
            let extra = [coding, &[h2]].concat();
            fetch(s.port, host, path, &extra);
            let head = hit_as_the_engine(&s, host, path, &extra).0;
            assert!(head.starts_with("http/2 200"), "{head}");
        }
    }
    let (_, _, head, _) = fetch(
        s.port,
        host,
        "/text.css",
        &[h2, "-H", "Accept-Encoding: zstd"],
    );
    assert!(head.contains("content-encoding: zstd"), "{head}");
    let (_, _, head, body) = fetch(s.port, host, "/logo.png", &[h2, "-I"]);
    assert!(head.contains("content-length: "), "{head}");
    assert!(body.is_empty(), "a HEAD has no body");
    // Validators, ranges and framing fields are the engine's.
    for extra in [
        &["-H", "If-None-Match: \"css1\""][..],
        &["-H", "Range: bytes=0-3"],
        &["-H", "Content-Length: 0"],
    ] {
        let before = direct();
        let (status, cache, head, _) =
            fetch(s.port, host, "/text.css", &[&[h2][..], extra].concat());
        assert_eq!(cache, "HIT", "{extra:?}: {head}");
        assert!([200, 206, 304].contains(&status), "{extra:?}: {head}");
        assert_eq!(direct(), before, "{extra:?}: the engine's");
    }
    // A GET with a body is the engine's too: answered whole every time (the body it does not
    // read is read before the stream goes, or the stream's reset would take the answer).
    for round in 0..200 {
        let extra = [h2, "-X", "GET", "--data", "x"];
        let (status, cache, head, _) = fetch(s.port, host, "/text.css", &extra);
        assert_eq!(
            (status, cache.as_str()),
            (200, "HIT"),
            "round {round}: {head}"
        );
    }
}

/// Streams that arrive together are answered together: what the connection writes for them
/// leaves in one send (the HTTP/2 implementation flushes after every DATA frame), counted in
/// the TCP segments the edge's socket sends.
#[test]
fn http2_answers_to_streams_that_arrive_together_leave_together() {
    use parapet_testkit::h2::{connect, frame, get_path_block, read_frame};
    let s = site("h2together.test");
    let host = "www.h2together.test";
    // Answers of 6.4 KB: frames the HTTP/2 implementation sends from where they are.
    let path = "/text.css";
    fetch(s.port, host, path, &[]);
    assert_eq!(fetch(s.port, host, path, &[]).1, "HIT");
    let direct = || metric(&s.node, "parapet_edge_direct_hits_total");
    let mut c = connect(s.port);
    // Room for every answer in the connection's window.
    c.write_all(&frame(8, 0, 0, &(1u32 << 20).to_be_bytes()))
        .expect("window");
    let mut buf = Vec::new();
    // The edge's SETTINGS, acknowledged, and its acknowledgement of ours.
    let mut settled = (false, false);
    while settled != (true, true) {
        let f = read_frame(&mut c, &mut buf).expect("the edge's settings");
        if f.kind == 4 && f.flags & 1 == 0 {
            c.write_all(&frame(4, 1, 0, &[])).expect("settings ack");
            settled.0 = true;
        } else if f.kind == 4 {
            settled.1 = true;
        }
    }
    std::thread::sleep(Duration::from_millis(200));
    let client = c.local_addr().expect("client address").port();
    let sent = || segments_sent(s.port, client);
    let (before, hits) = (sent(), direct());
    let authority = format!("{host}:{}", s.port);
    let streams = 16u32;
    let burst: Vec<u8> = (0..streams)
        .flat_map(|i| frame(1, 0x5, 2 * i + 1, &get_path_block(&authority, path)))
        .collect();
    c.write_all(&burst).expect("streams");
    let mut ended = 0;
    while ended < streams {
        let f = read_frame(&mut c, &mut buf).expect("the answers");
        assert!(
            f.kind != 3 && f.kind != 7,
            "stream {} reset or gone",
            f.stream
        );
        if (f.kind == 0 || f.kind == 1) && f.flags & 1 == 1 {
            ended += 1;
        }
    }
    assert_eq!(
        direct() - hits,
        u64::from(streams),
        "hits answered by the edge"
    );
    let segments = sent() - before;
    // About 100 KB: two sends of at most 64 KiB, which the kernel may cut into a few segments
    // each as its pacing says (and an ACK of the burst may be one more); one send per answer
    // made 16.
    assert!(segments <= 8, "{streams} answers took {segments} segments");
}

/// An HTTP/2 request whose `:path` is not an absolute path is refused and never reaches the
/// origin (the cache would have keyed it as another port's path); an origin's `TE` field does
/// not break HTTP/2 answers, stored or passed.
#[test]
fn http2_paths_must_be_absolute_and_hop_fields_stay_behind() {
    use parapet_testkit::h2::{connect, frame, get_path_block, read_frame};
    let s = site("h2path.test");
    let host = "www.h2path.test";
    let authority = format!("{host}:{}", s.port);
    for (i, path) in ["80/app.js", "app.js", "*"].into_iter().enumerate() {
        let mut c = connect(s.port);
        let mut buf = Vec::new();
        let stream = 2 * i as u32 + 1;
        c.write_all(&frame(1, 0x5, stream, &get_path_block(&authority, path)))
            .expect("request");
        let answer = loop {
            let f = read_frame(&mut c, &mut buf).expect("an answer");
            if f.stream == stream && (f.kind == 1 || f.kind == 3) {
                break f;
            }
        };
        // :status 400 is the static table's entry 12, or the stream was reset.
        assert!(
            answer.kind == 3 || answer.payload.first() == Some(&0x8c),
            "{path}: frame {} {:?}",
            answer.kind,
            answer.payload
        );
        assert_eq!(s.hits.of(path), 0, "{path} reached the origin");
    }
    for round in ["MISS", "HIT"] {
        let (status, cache, head, body) =
            fetch(s.port, host, "/tefield.css", &["--http2-prior-knowledge"]);
        assert_eq!(
            (status, body.as_str()),
            (200, "te-answer"),
            "{round}: {head}"
        );
        assert_eq!(cache, round, "{head}");
        assert!(!head.contains("\nte:"), "{head}");
    }
}

/// TCP segments the edge's socket on `port` has sent to the client on `client` (`ss`).
fn segments_sent(port: u16, client: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-tinH", "state", "established"])
        .arg(format!("( sport = :{port} and dport = :{client} )"))
        .output()
        .expect("ss");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("segs_out:"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no segs_out in {text}"))
}

/// Objects the hit comparisons use: an image, a stylesheet stored per coding class, a body too
/// large to go out with its header, a response with a `Keep-Alive` of the origin's, and one
/// with a `Last-Modified`.
const HIT_PATHS: [&str; 5] = [
    "/logo.png",
    "/text.css",
    "/big/100k-3.bin",
    "/hop.png",
    "/dated.png",
];

/// `path` fetched twice with `extra`: a hit the edge answers itself (its count of direct hits
/// moves), then the same hit answered by the engine (`If-Match` keeps the request from the
/// edge's path). Both must be the same, field by field; the edge's header and body.
fn hit_as_the_engine(s: &Site, host: &str, path: &str, extra: &[&str]) -> (String, String) {
    let direct = || metric(&s.node, "parapet_edge_direct_hits_total");
    let before = direct();
    let (status, cache, head, body) = fetch(s.port, host, path, extra);
    assert_eq!(direct(), before + 1, "{path} {extra:?}: answered directly");
    let engine = [extra, &["-H", "If-Match: *"]].concat();
    let (status2, cache2, head2, body2) = fetch(s.port, host, path, &engine);
    assert_eq!(direct(), before + 1, "{path} {extra:?}: by the engine");
    let want = if path.contains("moved") { 301 } else { 200 };
    assert_eq!((status, cache.as_str()), (want, "HIT"), "{head}");
    assert_eq!((status2, cache2.as_str()), (want, "HIT"), "{head2}");
    // The same fields; the same age, but for a second that may pass between the two.
    let ((fields, age), (fields2, age2)) = (lasting_fields(&head), lasting_fields(&head2));
    assert_eq!(fields, fields2, "{path} {extra:?}");
    assert!(
        age2.abs_diff(age) <= 1,
        "{path} {extra:?}: age {age} then {age2}"
    );
    assert_eq!(body, body2, "{path} {extra:?}");
    (head, body)
}

/// Writes `pieces` on one connection, 100 ms apart, and reads until the edge closes it (or 2 s
/// pass); whether it closed.
fn exchange(port: u16, pieces: &[&str]) -> (String, bool) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(100));
        }
        stream.write_all(piece.as_bytes()).expect("write");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let closed = loop {
        match stream.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[test]
fn hits_from_memory_are_answered_as_the_engine_answers_them() {
    let s = site("direct.test");
    let host = "www.direct.test";
    let direct = || metric(&s.node, "parapet_edge_direct_hits_total");
    // (And a stored redirect's page, which the edge does not compress: it varies on nothing.)
    let paths: Vec<&str> = HIT_PATHS.into_iter().chain(["/moved.png"]).collect();
    for path in &paths {
        assert_eq!(fetch(s.port, host, path, &[]).1, "MISS", "{path}");
    }
    assert_eq!(direct(), 0, "a miss is the engine's");

    // The same hit twice: answered from memory directly, then by the engine (`If-Match` sends a
    // request there, and a stored response satisfies it). Nothing tells them apart.
    // A browser's reload says `Cache-Control: max-age=0`: hits do not read it, either way.
    let reload = ["-H", "Cache-Control: max-age=0", "-H", "Pragma: no-cache"];
    let codings: [&[&str]; 4] = [&[], &["-H", "Accept-Encoding: gzip"], &["-I"], &reload];
    for &path in &paths {
        for extra in codings {
            let first = fetch(s.port, host, path, extra);
            if extra.contains(&"Accept-Encoding: gzip") && path == "/text.css" {
                // The gzip variant is made and stored by the engine first.
                assert_eq!(first.1, "MISS");
            }
            let head = hit_as_the_engine(&s, host, path, extra).0;
            assert!(!head.contains("keep-alive: "), "hop-by-hop: {head}");
        }
    }
    // A visitor whose copy is current gets a 304 the same way.
    let ims = |date: &str| format!("If-Modified-Since: {date}");
    for (path, validator, status) in [
        ("/text.css", "If-None-Match: \"css1\"".to_owned(), 304),
        (
            "/text.css",
            "If-None-Match: \"old\", W/\"css1\"".to_owned(),
            304,
        ),
        ("/text.css", "If-None-Match: \"old\"".to_owned(), 200),
        ("/dated.png", ims("Tue, 03 Jan 2023 00:00:00 GMT"), 304),
        ("/dated.png", ims("Sun, 01 Jan 2023 00:00:00 GMT"), 200),
        ("/dated.png", ims("not a date"), 200),
    ] {
        for method in [&[][..], &["-I"][..]] {
            let before = direct();
            let extra = [method, &["-H", validator.as_str()]].concat();
            let (got, cache, head, body) = fetch(s.port, host, path, &extra);
            assert_eq!(
                direct(),
                before + 1,
                "{path} {validator}: answered directly"
            );
            let engine = [&extra[..], &["-H", "If-Match: *"]].concat();
            let (got2, _, head2, body2) = fetch(s.port, host, path, &engine);
            assert_eq!(
                (got, got2, cache.as_str()),
                (status, status, "HIT"),
                "{head}"
            );
            assert_eq!(
                lasting_fields(&head).0,
                lasting_fields(&head2).0,
                "{path} {validator}"
            );
            assert_eq!(body, body2);
        }
    }
    let (_, _, head, _) = fetch(s.port, host, "/text.css", &["-H", "Accept-Encoding: gzip"]);
    assert!(head.contains("content-encoding: gzip"), "{head}");
    assert!(head.contains("vary: accept-encoding"), "{head}");
    let (_, _, head, body) = fetch(s.port, host, "/logo.png", &["-I"]);
    assert!(head.contains("content-length: "), "{head}");
    assert!(body.is_empty(), "a HEAD has no body");

    // zstd is stored once, as the other codings: its hits are the edge's own too.
    let zstd = ["-H", "Accept-Encoding: zstd"];
    assert_eq!(fetch(s.port, host, "/text.css", &zstd).1, "MISS");
    let before = direct();
    let (_, cache, head, _) = fetch(s.port, host, "/text.css", &zstd);
    assert_eq!(cache, "HIT");
    assert!(head.contains("content-encoding: zstd"), "{head}");
    assert_eq!(direct(), before + 1);

    // Pipelined requests on one connection, then an HTTP/1.0 one that closes it.
    let before = direct();
    let get = format!("GET /logo.png HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let last = format!("GET /logo.png HTTP/1.0\r\nHost: {host}\r\n\r\n");
    let (answers, closed) = exchange(s.port, &[&format!("{get}{get}{last}")]);
    assert_eq!(
        answers.matches("HTTP/1.1 200 OK\r\n").count(),
        3,
        "{answers}"
    );
    assert_eq!(
        answers.matches("/logo.png answer 1").count(),
        3,
        "{answers}"
    );
    assert_eq!(
        answers.matches("Connection: keep-alive\r\n").count(),
        2,
        "{answers}"
    );
    assert!(answers.contains("Connection: close\r\n"), "{answers}");
    assert!(
        closed,
        "HTTP/1.0 without keep-alive: closed after the answer"
    );
    assert_eq!(direct(), before + 3);
    // A hit then a request for the engine, in one segment: each gets its own answer.
    let before = direct();
    let engine = format!(
        "GET /logo.png HTTP/1.1\r\nHost: {host}\r\nIf-Match: *\r\nConnection: close\r\n\r\n"
    );
    let (answers, closed) = exchange(s.port, &[&format!("{get}{engine}")]);
    assert_eq!(
        answers.matches("/logo.png answer 1").count(),
        2,
        "{answers}"
    );
    assert!(closed);
    assert_eq!(direct(), before + 1);
    // `Connection` read as the engine reads it: `keep-alive` only alone, `close` anywhere.
    for (connection, version, stays) in [
        ("close, keep-alive", "1.1", false),
        ("keep-alive", "1.0", true),
        ("keep-alive, x-trace", "1.0", false),
        ("x-trace", "1.1", true),
    ] {
        let request = format!(
            "GET /logo.png HTTP/{version}\r\nHost: {host}\r\nConnection: {connection}\r\n\r\n"
        );
        let (got, closed) = exchange(s.port, &[&request]);
        assert!(got.contains("/logo.png answer 1"), "{connection}: {got}");
        assert_eq!(closed, !stays, "{connection} over HTTP/{version}: {got}");
    }
    // A request that arrives in pieces is the engine's, and answered the same.
    let before = direct();
    let rest = format!("Host: {host}\r\nConnection: close\r\n\r\n");
    let (answers, closed) = exchange(s.port, &["GET /logo.png HTTP/1.1\r\n", &rest]);
    assert!(answers.contains("/logo.png answer 1"), "{answers}");
    assert!(answers.contains("cf-cache-status: HIT"), "{answers}");
    assert!(closed);
    assert_eq!(direct(), before);

    // Purging is effective for hits answered directly too.
    s.node.ok(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"purge_everything": true})),
    );
    assert_eq!(fetch(s.port, host, "/logo.png", &[]).1, "MISS");
    assert_eq!(s.hits.of("/logo.png"), 2);
}

#[test]
fn without_a_cache_every_answer_is_passed_under_the_zones_rules() {
    let port = free_port();
    let hits = start_cache_origin("127.0.0.2", port);
    let node = Node::start(
        NodeOptions::new(BIN)
            .args(["--activation", "auto", "--http-listen", &format!("127.0.0.1:{port}")])
            .config(
                "cache_memory_bytes = 0\ncache_disk_bytes = 0\n[[cache_rules]]\nzone = \"uncached.test\"\nexpression = 'true'\naction_parameters = { browser_ttl = { mode = \"override_origin\", default = 120 } }\n",
            ),
    );
    let zone = node.create_zone("uncached.test");
    node.proxied_a(&zone, "www", "127.0.0.2");
    let host = "www.uncached.test";
    parapet_testkit::eventually(Duration::from_secs(5), "the name routed", || {
        fetch(port, host, "/ready.css", &[]).0 == 200
    });
    let passes = || node.metric("parapet_edge_direct_passes_total");
    let mut asked = 0;
    for protocol in [&[][..], &["--http2-prior-knowledge"]] {
        for path in ["/a.css", "/page.html"] {
            // Passed by the edge itself, then by the engine (a precondition sends it there):
            // the zone's browser TTL either way, and the origin asked each time.
            let before = passes();
            let (status, cache, head, _) = fetch(port, host, path, protocol);
            parapet_testkit::eventually(Duration::from_secs(3), "passed directly", || {
                passes() > before
            });
            let engine = [protocol, &["-H", "If-Match: *"]].concat();
            let (status2, cache2, head2, _) = fetch(port, host, path, &engine);
            std::thread::sleep(Duration::from_millis(50));
            asked += 2;
            assert_eq!((status, status2), (200, 200), "{head}\n{head2}");
            assert_eq!((cache.as_str(), cache2.as_str()), ("DYNAMIC", "DYNAMIC"));
            for head in [&head, &head2] {
                assert!(head.contains("cache-control: max-age=120"), "{head}");
            }
            assert_eq!(lasting_fields(&head), lasting_fields(&head2), "{path}");
            assert_eq!(
                passes(),
                before + 1,
                "{path} {protocol:?}: the engine's not counted"
            );
        }
        assert_eq!(hits.of("/a.css") + hits.of("/page.html"), asked);
    }
}

#[test]
fn equivalent_urls_share_one_object_stored_from_the_normal_form_alone() {
    let s = site("normal.test");
    let host = "www.normal.test";
    // `--path-as-is`: curl sends the path as written, dot segments included.
    let get = |path: &str, extra: &[&str]| {
        let mut args = vec!["--path-as-is"];
        args.extend_from_slice(extra);
        fetch(s.port, host, path, &args).1
    };
    assert_eq!(get("/app.js?v=1", &[]), "MISS");
    for same in [
        "/%61pp.js?v=1",
        "/x/../app.js?v=1",
        "/./app.js?v=1",
        "//app.js?v=1",
        "/%2e%2e/app.js?v=1",
    ] {
        assert_eq!(get(same, &[]), "HIT", "{same}");
        assert_eq!(
            get(same, &["--http2-prior-knowledge"]),
            "HIT",
            "{same} over HTTP/2"
        );
    }
    assert_eq!(s.hits.of("/app.js?v=1"), 1);
    // The query is part of the key as it was sent.
    assert_eq!(get("/app.js?v=%31", &[]), "MISS");

    // A request in another spelling that misses reaches the origin as the visitor wrote it
    // (as Cloudflare sends it), and its answer is not stored under the normal form's key:
    // an origin may answer spellings differently.
    for extra in [&[][..], &["--http2-prior-knowledge"][..]] {
        assert_eq!(get("/lib/%7Euser/../b.css", extra), "BYPASS", "{extra:?}");
    }
    assert_eq!(s.hits.of("/lib/%7Euser/../b.css"), 2);
    assert_eq!(s.hits.of("/lib/b.css"), 0);
    assert_eq!(get("/lib/b.css", &[]), "MISS");
    assert_eq!(get("/lib/b.css", &[]), "HIT");

    // Purge by any of the forms purges the object.
    let purge = |url: String| {
        s.node.ok(
            "POST",
            &format!("/zones/{}/purge_cache", s.zone),
            Some(json!({"files": [url]})),
        );
    };
    purge(format!("http://{host}:{}/%61pp.js?v=1", s.port));
    assert_eq!(get("/app.js?v=1", &[]), "MISS");
    s.node.ok(
        "POST",
        &format!("/zones/{}/purge_cache", s.zone),
        Some(json!({"prefixes": [format!("{host}/%6Cib/")]})),
    );
    assert_eq!(get("/lib/b.css", &[]), "MISS");
}

#[test]
fn objects_streaming_to_disk_together_never_take_the_tier_past_its_size() {
    // 8 MiB of disk: an eighth is kept for files being written, so one 1 MiB object at a time
    // streams into it. Four slow 1 MiB misses at once would take 4 MiB of files.
    let config = "cache_memory_bytes = 262144\ncache_disk_bytes = 8388608\n";
    let (site, _tmp, _data) = site_on_disk("streaming.test", config);
    let Site { port, .. } = &site;
    let host = "www.streaming.test";
    let fetches: Vec<_> = (0..4)
        .map(|i| {
            let port = *port;
            std::thread::spawn(move || {
                fetch_big(port, host, &format!("/big/slow-1-{i}.bin"), &[], 0)
            })
        })
        .collect();
    for fetch in fetches {
        let (status, len, intact) = fetch.join().expect("fetch");
        assert!(
            status == "MISS" && len == 1 << 20 && intact,
            "{status} {len}"
        );
    }
    let stored = (0..4)
        .filter(|i| fetch_big(*port, host, &format!("/big/slow-1-{i}.bin"), &[], 0).0 == "HIT")
        .count();
    assert!(stored < 4, "every object was written at once");
    // The room is given back: an object alone is stored.
    let alone = "/big/slow-1-alone.bin";
    assert_eq!(fetch_big(*port, host, alone, &[], 0).0, "MISS");
    assert_eq!(fetch_big(*port, host, alone, &[], 0).0, "HIT");
}

#[test]
fn cache_deception_armor_stores_no_answer_whose_type_the_extension_does_not_name() {
    let s = site("armor.test");
    let host = "www.armor.test";
    let get = |path: &str| fetch(s.port, host, path, &[]).1;
    s.node.ok(
        "PUT",
        &s.cache_rules_path(),
        Some(json!({"rules": [
            {"expression": "true", "action": "set_cache_settings",
             "action_parameters": {"cache_key": {"cache_deception_armor": true}}},
            {"expression": "starts_with(http.request.uri.path, \"/open/\")",
             "action": "set_cache_settings",
             "action_parameters": {"cache_key": {"cache_deception_armor": false}}}
        ]})),
    );
    let probes = std::cell::Cell::new(0);
    parapet_testkit::eventually(Duration::from_secs(5), "the rules in force", || {
        probes.set(probes.get() + 1);
        let probe = format!("/probe/{}.css", probes.get());
        get(&probe);
        get(&probe) == "BYPASS"
    });
    // The origin answers an image: a `.css` URL answered so is not stored, a `.png` one is.
    assert_eq!(get("/me/avatar.css"), "BYPASS");
    assert_eq!(get("/me/avatar.css"), "BYPASS", "not stored");
    assert_eq!(get("/logo.png"), "MISS");
    assert_eq!(get("/logo.png"), "HIT");
    // A stylesheet answered as one is stored.
    assert_eq!(get("/styles/text.css"), "MISS");
    assert_eq!(get("/styles/text.css"), "HIT");
    // Without the armor, the same mismatch is stored.
    assert_eq!(get("/open/avatar.css"), "MISS");
    assert_eq!(get("/open/avatar.css"), "HIT");
}

#[test]
fn a_device_type_key_keeps_phones_tablets_and_desktops_apart() {
    let s = site("devices.test");
    let host = "www.devices.test";
    let as_agent = |path: &str, agent: &str| fetch(s.port, host, path, &["-A", agent]).1;
    s.node.ok(
        "PUT",
        &s.cache_rules_path(),
        Some(json!({"rules": [
            {"expression": "true", "action": "set_cache_settings",
             "action_parameters": {"cache_key": {"custom_key": {"user": {"device_type": true}}}}}
        ]})),
    );
    let phone = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148";
    let other_phone = "Mozilla/5.0 (Linux; Android 14; Pixel 8) Chrome/120.0 Mobile Safari/537.36";
    let tablet = "Mozilla/5.0 (iPad; CPU OS 17_0 like Mac OS X) Safari/604.1";
    let desktop = "Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0";
    let probes = std::cell::Cell::new(0);
    parapet_testkit::eventually(Duration::from_secs(5), "the rule in force", || {
        probes.set(probes.get() + 1);
        let probe = format!("/probe/{}.png", probes.get());
        as_agent(&probe, phone);
        as_agent(&probe, desktop) == "MISS"
    });
    assert_eq!(as_agent("/logo.png", phone), "MISS");
    assert_eq!(
        as_agent("/logo.png", other_phone),
        "HIT",
        "one variant for phones"
    );
    assert_eq!(as_agent("/logo.png", tablet), "MISS");
    assert_eq!(as_agent("/logo.png", tablet), "HIT");
    assert_eq!(as_agent("/logo.png", desktop), "MISS");
    assert_eq!(as_agent("/logo.png", desktop), "HIT");
    assert_eq!(s.hits.of("/logo.png"), 3);
}
