//! Zero-downtime upgrade: `parapet serve --upgrade` takes over a running node's sockets while
//! visitors keep connecting; not one connection is refused or request lost, and the new process
//! serves the API, DNS and the edge with the same state.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use parapet_testkit::http::start_origin;
use parapet_testkit::{Node, NodeOptions, free_port};

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

/// One request on a new connection; the status line, or what went wrong.
fn request(port: u16, host: &str) -> Result<String, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /up HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("write: {e}"))?;
    let mut response = String::new();
    s.read_to_string(&mut response)
        .map_err(|e| format!("read: {e}"))?;
    let status = response.lines().next().unwrap_or_default().to_owned();
    if status.starts_with("HTTP/1.1 200") {
        Ok(status)
    } else {
        Err(format!("answer: {status:?}"))
    }
}

/// The flags of the node under upgrade, its edge on `port`.
fn node_args(port: u16) -> Vec<String> {
    [
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
        "--dns-listen",
        "127.0.0.1:0",
        "--edge-ipv4",
        "192.0.2.1",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Visitors asking for `host` on new connections, two at a time, until stopped (or `limit`
/// passes).
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicUsize>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16, host: &'static str, limit: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..2)
            .map(|_| {
                let (stop, ok, failures) =
                    (Arc::clone(&stop), Arc::clone(&ok), Arc::clone(&failures));
                std::thread::spawn(move || {
                    let deadline = Instant::now() + limit;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match request(port, host) {
                            Ok(_) => {
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => failures.lock().expect("failures").push(e),
                        }
                    }
                })
            })
            .collect();
        Self {
            stop,
            ok,
            failures,
            threads,
        }
    }

    /// How many were served so far.
    fn served(&self) -> usize {
        self.ok.load(Ordering::Relaxed)
    }

    /// Stops the visitors: how many were served, and what failed.
    fn stop(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().expect("load thread");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

#[test]
fn upgrade_takes_over_every_socket_without_refusing_a_connection() {
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let args = node_args(port);
    let mut old = Node::start(NodeOptions::new(BIN).args(args.clone()));
    let zone = old.create_zone("up.test");
    old.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        request(port, "www.up.test").is_ok()
    });

    // Visitors keep coming, each on a new connection, during the whole handover.
    let load = Load::start(port, "www.up.test", Duration::from_secs(60));
    std::thread::sleep(Duration::from_millis(300));
    let before = load.served();

    let new = Node::start(
        NodeOptions::new(BIN)
            .data_dir(old.data_dir.clone())
            .env_token(Some(old.token.clone()))
            .args(args)
            .arg("--upgrade"),
    );
    let status = old
        .wait_exit(Duration::from_secs(20))
        .expect("the old process exits after handing over");
    assert!(status.success(), "old process: {status:?}");
    let at_exit = load.served();
    std::thread::sleep(Duration::from_millis(500));
    let (total, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(
        before > 0 && total > at_exit,
        "served before {before}, at exit {at_exit}, total {total}"
    );

    // The new process has the same sockets and state, and takes changes.
    assert_eq!(new.base, old.base, "the API address is the same socket");
    assert_eq!(
        new.dns_addr(),
        old.dns_addr(),
        "the DNS address is the same socket"
    );
    let answer = parapet_testkit::dns::ask(new.dns_addr(), "www.up.test", RecordType::A);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");
    new.proxied_a(&zone, "api", "127.0.0.2");
    parapet_testkit::eventually(
        Duration::from_secs(5),
        "a name added after the upgrade",
        || request(port, "api.up.test").is_ok(),
    );
}

#[test]
fn upgrade_without_a_running_node_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--upgrade",
            "--api-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .output()
        .expect("run parapet");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no running parapet"), "{err}");
}

#[test]
fn an_upgrade_that_fails_before_serving_leaves_the_running_node_in_place() {
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let mut old = Node::start(NodeOptions::new(BIN).args([
        "--activation",
        "auto",
        "--http-listen",
        &format!("127.0.0.1:{port}"),
    ]));
    let zone = old.create_zone("stay.test");
    old.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        request(port, "www.stay.test").is_ok()
    });
    // The successor also wants an address that is taken: it takes the sockets, fails to bind,
    // and exits without confirming.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy_addr = busy.local_addr().expect("addr");
    let out = std::process::Command::new(BIN)
        .args([
            "serve",
            "--upgrade",
            "--activation",
            "auto",
            "--api-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&old.data_dir)
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--http-listen", &busy_addr.to_string()])
        .env("PARAPET_API_TOKEN", &old.token)
        .env("PARAPET_LOG", "warn")
        .output()
        .expect("run the successor");
    assert!(!out.status.success(), "the successor should fail");
    assert!(
        old.wait_exit(Duration::from_secs(2)).is_none(),
        "the running node stays"
    );
    for _ in 0..20 {
        request(port, "www.stay.test").expect("still served by the running node");
    }
    old.ok("GET", &format!("/zones/{zone}"), None);
}

#[test]
fn an_upgrade_that_cannot_open_the_store_leaves_the_running_node_serving() {
    let port = free_port();
    let _origin = start_origin("127.0.0.2", port);
    let args = node_args(port);
    let mut old = Node::start(NodeOptions::new(BIN).args(args.clone()));
    let zone = old.create_zone("kept.test");
    old.proxied_a(&zone, "www", "127.0.0.2");
    parapet_testkit::eventually(Duration::from_secs(5), "www routed", || {
        request(port, "www.kept.test").is_ok()
    });

    let load = Load::start(port, "www.kept.test", Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(300));

    // The store file the new process finds is not one it can read (damaged, or a format it
    // does not know); the running one keeps its own open until the handover starts.
    let store = old.data_dir.join("store.redb");
    let kept = old.data_dir.join("store.redb.kept");
    std::fs::rename(&store, &kept).expect("move the store aside");
    std::fs::write(&store, vec![0xa5; 64 * 1024]).expect("write a damaged store");
    let out = std::process::Command::new(BIN)
        .args(["serve", "--upgrade", "--api-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&old.data_dir)
        .args(&args)
        .env("PARAPET_API_TOKEN", &old.token)
        .env("PARAPET_LOG", "warn")
        .output()
        .expect("run the successor");
    assert!(!out.status.success(), "the successor should fail");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("opening the store"), "{err}");
    assert!(
        old.wait_exit(Duration::from_secs(2)).is_none(),
        "the running node stays"
    );
    let answer = parapet_testkit::dns::ask(old.dns_addr(), "www.kept.test", RecordType::A);
    assert_eq!(answer.answers.len(), 1, "{answer:?}");

    // The store file comes back: the running node opens it again and takes changes.
    std::fs::rename(&kept, &store).expect("put the store back");
    old.ok("GET", &format!("/zones/{zone}"), None);
    old.proxied_a(&zone, "api", "127.0.0.2");
    parapet_testkit::eventually(
        Duration::from_secs(5),
        "a name added after the failed upgrade",
        || request(port, "api.kept.test").is_ok(),
    );
    // DNS builds its index of the change on its own, after the edge may route it.
    parapet_testkit::eventually(Duration::from_secs(5), "the new name in DNS", || {
        parapet_testkit::dns::ask(old.dns_addr(), "api.kept.test", RecordType::A)
            .answers
            .len()
            == 1
    });

    let (during, failures) = load.stop();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(during > 0, "no request served during the failed upgrade");
}

/// The status line of one request on a new connection, whatever it is.
fn status_line(port: u16, host: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn a_signal_while_taking_over_stops_the_new_process_cleanly_and_unconfirmed() {
    use std::io::BufRead;
    use std::os::unix::process::ExitStatusExt;

    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");
    std::fs::create_dir(&data_dir).expect("data dir");
    std::fs::set_permissions(
        &data_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .expect("private data dir");
    // A running node, as the new process sees it: its store is held, and its upgrade socket
    // hands over no socket; it records what the new process says.
    let held = parapet_store::RedbStore::open(&data_dir.join("store.redb")).expect("store");
    let upgrade = std::os::unix::net::UnixListener::bind(data_dir.join("upgrade.sock"))
        .expect("upgrade socket");
    let said = std::thread::spawn(move || {
        let (mut conn, _) = upgrade.accept().expect("successor");
        conn.write_all(&2u32.to_be_bytes())
            .expect("manifest length");
        conn.write_all(b"[]").expect("manifest");
        let mut said = Vec::new();
        let _ = conn.read_to_end(&mut said);
        said
    });

    let port = free_port();
    let mut child = std::process::Command::new(BIN)
        .args(["serve", "--upgrade", "--api-listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data_dir)
        .args(["--http-listen", &format!("127.0.0.1:{port}")])
        .args(["--dns-listen", "127.0.0.1:0"])
        .env("PARAPET_API_TOKEN", "upgrade-test-token")
        .env("PARAPET_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run the successor");
    let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    for line in stdout.lines() {
        if line
            .expect("line")
            .starts_with("parapet: http listening on")
        {
            break;
        }
    }
    // The edge serves while the store is still held.
    let status = status_line(port, "nothing.test");
    assert!(status.starts_with("HTTP/1.1 "), "{status:?}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.signal(), None, "killed by the signal: {status:?}");
    assert!(status.success(), "{status:?}");
    let said = said.join().expect("predecessor");
    assert!(said.is_empty(), "the new process confirmed: {said:?}");
    drop(held);
}
