//! `parapet serve` as a real process: durability, startup, shutdown, configuration errors.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use parapet_testkit::{Node, NodeOptions, eventually};
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_parapet");

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let token = parapet_testkit::random_token();
    let mut node = Node::start(
        NodeOptions::new(BIN)
            .data_dir(&data)
            .env_token(Some(token.clone()))
            .arg("--activation")
            .arg("auto"),
    );
    let zone = node.create_zone("durable.example");
    let acknowledged = Arc::new(Mutex::new(BTreeSet::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..2)
        .map(|w| {
            let (url, token, acknowledged, stop) =
                (node.url(&format!("/zones/{zone}/dns_records")), token.clone(), Arc::clone(&acknowledged), Arc::clone(&stop));
            std::thread::spawn(move || {
                let agent = parapet_testkit::agent();
                for i in 0..10_000u32 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"type": "TXT", "name": format!("w{w}-{i}"), "content": format!("value {i}")});
                    match parapet_testkit::try_call_with(&agent, "POST", &url, &token, Some(body)) {
                        Ok((200, v)) => {
                            acknowledged.lock().expect("lock").insert(v["result"]["id"].as_str().expect("id").to_owned());
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(30), "some acknowledged writes", || {
        acknowledged.lock().expect("lock").len() >= 40
    });
    node.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().expect("writer");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    let node = Node::start(NodeOptions::new(BIN).data_dir(&data).env_token(Some(token)));
    let listed = node.ok(
        "GET",
        &format!("/zones/{zone}/dns_records?per_page=50000"),
        None,
    );
    let stored: BTreeSet<String> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    let lost: Vec<&String> = acknowledged.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost after kill -9: {lost:?}",
        lost.len()
    );
}

#[test]
fn busy_api_port_names_the_flag() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--api-listen", &addr.to_string()])
        .env("PARAPET_API_TOKEN", "x")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--api-listen") && stderr.contains(&addr.to_string()),
        "{stderr}"
    );
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let mut node = Node::start(NodeOptions::new(BIN));
    node.ok("GET", "/user/tokens/verify", None);
    let status = node.terminate();
    assert!(status.success(), "exit status {status:?}");
}

#[test]
fn sighup_does_not_stop_the_server_and_says_how_a_configuration_is_applied() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("stderr");
    let mut node = Node::start(NodeOptions::new(BIN).log("info").stderr_to(&log));
    let hup = Command::new("kill")
        .args(["-HUP", &node.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    parapet_testkit::eventually(Duration::from_secs(5), "the SIGHUP line", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains("SIGHUP"))
    });
    node.ok("GET", "/user/tokens/verify", None);
    let text = std::fs::read_to_string(&log).expect("log");
    // Where it listens is in the log too, with the time.
    assert!(text.contains("api listening on http://"), "{text}");
    assert!(node.terminate().success());
}

#[test]
fn a_data_dir_that_is_a_file_is_refused_before_anything_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, "x").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--data-dir"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a directory"), "{stderr}");
    assert!(!stderr.contains("chmod"), "{stderr}");
}

#[test]
fn check_config_prints_a_configuration_that_reads_back_the_same() {
    let dir = tempfile::tempdir().expect("tempdir");
    let check = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("check-config")
            .args(args)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let first = check(&[
        "--config",
        "parapet.example.toml",
        "--api-listen",
        "127.0.0.1:9999",
    ]);
    assert!(first.contains("api_listen = \"127.0.0.1:9999\""), "{first}");
    assert!(!first.contains("Config {"), "{first}");
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, &first).expect("write");
    let path = printed.to_str().expect("utf-8");
    let second = check(&["--config", path]);
    let body = |text: &str| text.lines().skip(1).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&second), body(&first));
    // A reader that goes away early ends the program quietly, as other tools end.
    let mut child = Command::new(BIN)
        .args(["check-config", "--config", "parapet.example.toml"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("panicked"),
        "{out:?}"
    );
}

#[test]
fn first_start_prints_an_admin_token_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let mut node = Node::start(NodeOptions::new(BIN).data_dir(&data).env_token(None));
    assert!(!node.token.is_empty(), "banner: {:?}", node.banner);
    let verified = node.ok("GET", "/user/tokens/verify", None);
    assert_eq!(verified["status"], "active");
    node.create_zone("first.example");
    node.terminate();
    let again = Node::start(NodeOptions::new(BIN).data_dir(&data).env_token(None));
    assert!(
        again.token.is_empty(),
        "a token is printed only on first start: {:?}",
        again.banner
    );
}

#[test]
fn bad_config_file_lists_every_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("parapet.toml");
    std::fs::write(
        &conf,
        "api_listen = \"nowhere\"\nnameservers = [\"bad name\"]\nunknown_key = true\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&conf)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for needle in ["api_listen", "bad name", "unknown_key", "3 error(s)"] {
        assert!(stderr.contains(needle), "missing {needle:?} in: {stderr}");
    }
}

#[test]
fn api_change_reaches_the_served_snapshot() {
    let node = Node::start(NodeOptions::new(BIN).arg("--activation").arg("auto"));
    let zone = node.create_zone("snap.example");
    node.proxied_a(&zone, "www", "192.0.2.7");
    eventually(
        Duration::from_secs(2),
        "snapshot to catch up with the store",
        || {
            let (_, s) = node.call_path("GET", "/parapet/status", None);
            let s = &s["result"];
            s["snapshot_revision"] == s["store_revision"] && s["proxied_hosts"] == 1
        },
    );
}

/// Unmounts a file system mounted by a test.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_refuses_writes_clearly_and_the_store_recovers_without_restart() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("skipped: mounting a small file system needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=32m", "tmpfs"])
        .arg(&small)
        .status()
        .expect("mount");
    if !mounted.success() {
        eprintln!("skipped: this machine does not let the test mount a tmpfs");
        return;
    }
    let _mounted = Mounted(small.clone());
    let node = Node::start(
        NodeOptions::new(BIN)
            .data_dir(small.join("data"))
            .arg("--activation")
            .arg("auto"),
    );
    let zone = node.create_zone("full.example");
    node.ok(
        "POST",
        &format!("/zones/{zone}/dns_records"),
        Some(json!({"type": "A", "name": "www", "content": "192.0.2.1"})),
    );
    // Fill the file system.
    let filler = small.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let text: String = (0..20_000)
        .map(|i| format!("h{i} 300 IN TXT \"{}\"\n", "x".repeat(100)))
        .collect();
    let refused = parapet_testkit::import_zone(&node, &zone, &text);
    assert_eq!(refused["success"], false, "{refused}");
    let message = refused["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("No space left on device") && message.contains("not written"),
        "a clear error: {message}"
    );
    let count = |node: &Node| {
        let (status, v) = node.call(
            "GET",
            &format!("/zones/{zone}/dns_records?per_page=1"),
            None,
        );
        assert_eq!(status, 200, "{v}");
        v["result_info"]["total_count"].as_u64()
    };
    assert_eq!(count(&node), Some(1), "nothing of the import was stored");
    // Room again: the same import goes through, without a restart.
    std::fs::remove_file(&filler).expect("remove filler");
    let imported = parapet_testkit::import_zone(&node, &zone, &text);
    assert_eq!(imported["result"]["recs_added"], 20_000, "{imported}");
    assert_eq!(count(&node), Some(20_001));
}

#[test]
fn an_api_token_no_request_could_carry_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new(BIN)
        .args(["serve", "--api-listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("PARAPET_API_TOKEN", "pass word")
        .output()
        .expect("run");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("PARAPET_API_TOKEN must be"), "{stderr}");
}
