//! HTTP helpers for edge tests: a tiny origin that reports what it received, and curl.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;
use std::sync::mpsc;

/// A tiny origin: answers every request with 200, the request head it received as the body, and
/// a header naming its own address (which the edge must strip).
pub fn start_origin(ip: &str, port: u16) -> mpsc::Receiver<String> {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone"));
            let mut head = String::new();
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
            let _ = tx.send(head.clone());
            let body = head.into_bytes();
            let own = stream
                .local_addr()
                .map(|a| a.ip().to_string())
                .unwrap_or_default();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Backend: {own}\r\nServer: origin-server\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(&body);
        }
    });
    rx
}

pub fn curl(port: u16, host: &str, extra: &[&str]) -> (u16, String, String) {
    let out = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10", "--resolve"])
        .arg(format!("{host}:{port}:127.0.0.1"))
        .args(extra)
        .arg(format!("http://{host}:{port}/path?q=1"))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

/// An origin that accepts connections and reads, but never answers.
pub fn start_silent_origin(ip: &str, port: u16) {
    let listener = TcpListener::bind((ip, port)).expect("bind origin");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
}
