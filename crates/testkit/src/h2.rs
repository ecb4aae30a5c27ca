//! Raw HTTP/2 frames, for tests that need to say exactly what a client sends and when.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One frame: its type, flags, stream and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("small frame");
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend_from_slice(&[kind, flags]);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A GET of `/` for `authority` as an HPACK block: static-table `:method GET`, `:scheme http`,
/// `:path /`, and `:authority` as a literal without indexing.
pub fn get_block(authority: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x84];
    literal(&mut block, 0x01, authority);
    block
}

/// A GET of `path` for `authority` as an HPACK block (`:path` a literal with its static name).
pub fn get_path_block(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86];
    literal(&mut block, 0x04, path);
    literal(&mut block, 0x01, authority);
    block
}

/// A literal field without indexing, its name the static table's entry `name`.
fn literal(block: &mut Vec<u8>, name: u8, value: &str) {
    block.push(name);
    block.push(u8::try_from(value.len()).expect("a short value"));
    block.extend_from_slice(value.as_bytes());
}

/// Connects to `127.0.0.1:port` with the HTTP/2 preface and an empty SETTINGS frame.
pub fn connect(port: u16) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .expect("preface");
    s.write_all(&frame(4, 0, 0, &[])).expect("settings");
    s
}

/// A frame read: type, flags, stream and payload.
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// The next frame on `s` (`buf` keeps what was read beyond it); `None` once the connection
/// closes or stays silent for its read timeout.
pub fn read_frame(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Frame> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if buf.len() >= 9 {
            let len = usize::from(buf[0]) << 16 | usize::from(buf[1]) << 8 | usize::from(buf[2]);
            if buf.len() >= 9 + len {
                let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
                let frame = Frame {
                    kind: buf[3],
                    flags: buf[4],
                    stream,
                    payload: buf[9..9 + len].to_vec(),
                };
                buf.drain(..9 + len);
                return Some(frame);
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}
