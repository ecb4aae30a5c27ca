//! Zero-downtime upgrade: `parapet serve --upgrade` takes over the listening sockets of the
//! `parapet serve` running on the same data directory, through a Unix socket there
//! (`upgrade.sock`; a JSON manifest, then each socket passed with `SCM_RIGHTS`).
//!
//! The running process first writes its store state as the last good snapshot, so the new one
//! serves exactly what it served; then it hands over every listening socket, stops accepting,
//! finishes the requests it has, and exits, which frees the store for the new process. The
//! sockets never close in between: a connection arriving at any moment waits in the same accept
//! queue and is accepted by one process or the other, never refused.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

const SOCKET_NAME: &str = "upgrade.sock";
/// Largest manifest accepted.
const MANIFEST_BYTES: usize = 1024 * 1024;

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    Api,
    Http,
    Https,
    DnsUdp,
    DnsTcp,
}

#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    role: Role,
    addr: SocketAddr,
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}

/// The listening sockets of this process, as copies to hand to a successor.
#[derive(Default)]
pub struct Handover {
    sockets: Mutex<Vec<(Role, SocketAddr, OwnedFd)>>,
}

impl Handover {
    /// Keeps a copy of `fd` (a listening socket for `role` on `addr`) for a successor.
    pub fn keep(&self, role: Role, addr: SocketAddr, fd: &impl std::os::fd::AsFd) {
        match fd.as_fd().try_clone_to_owned() {
            Ok(copy) => self
                .sockets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((role, addr, copy)),
            Err(e) => tracing::warn!("cannot keep {addr} for an upgrade: {e}"),
        }
    }

    /// Sends the manifest (length-prefixed JSON), then each socket as one byte carrying it.
    fn send_all(&self, conn: &mut UnixStream) -> anyhow::Result<usize> {
        use std::os::fd::AsFd;
        let sockets = self.sockets.lock().unwrap_or_else(PoisonError::into_inner);
        let manifest: Vec<Entry> = sockets
            .iter()
            .map(|(role, addr, _)| Entry {
                role: *role,
                addr: *addr,
            })
            .collect();
        let data = serde_json::to_vec(&manifest)?;
        let len = u32::try_from(data.len()).context("manifest too large")?;
        conn.write_all(&len.to_be_bytes())?;
        conn.write_all(&data)?;
        for (_, addr, fd) in sockets.iter() {
            let fds = [fd.as_fd()];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
                bail!("no room to pass {addr}");
            }
            sendmsg(
                &*conn,
                &[IoSlice::new(&[1])],
                &mut control,
                SendFlags::empty(),
            )
            .with_context(|| format!("passing {addr}"))?;
        }
        Ok(sockets.len())
    }
}

/// Listens for a successor on the data directory's upgrade socket, in a thread of its own. When
/// one connects, writes the last good snapshot (`prepare`), hands over every kept socket and
/// calls `handed_over`; the caller then stops accepting and exits.
pub fn await_successor(
    data_dir: &Path,
    handover: Arc<Handover>,
    prepare: impl Fn() -> anyhow::Result<()> + Send + 'static,
    handed_over: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let path = socket_path(data_dir);
    // This process holds the store's lock, so a socket file left here is from a dead process.
    let _ = std::fs::remove_file(&path);
    let listener =
        UnixListener::bind(&path).with_context(|| format!("binding {}", path.display()))?;
    {
        use std::os::unix::fs::PermissionsExt;
        // Only this user may take the sockets over.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::thread::Builder::new()
        .name("upgrade".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let mut conn = match conn {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("upgrade socket: {e}");
                        continue;
                    }
                };
                if let Err(e) = prepare() {
                    tracing::error!("not handing over: {e:#}");
                    continue;
                }
                match handover.send_all(&mut conn).and_then(|n| {
                    await_confirmation(&mut conn)?;
                    Ok(n)
                }) {
                    Ok(n) => {
                        tracing::info!("handed {n} listening sockets to a new process; stopping");
                        let _ = std::fs::remove_file(&path);
                        handed_over();
                        return;
                    }
                    Err(e) => tracing::error!("handing over failed, still serving: {e:#}"),
                }
            }
        })?;
    Ok(())
}

/// How long the running process waits for its successor to say it serves on every socket.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
const CONFIRM: u8 = b'!';

/// Waits for the successor's confirmation; an error (it exited, failed or stayed silent)
/// leaves this process serving.
fn await_confirmation(conn: &mut UnixStream) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(CONFIRM_WAIT))?;
    let mut byte = [0u8; 1];
    conn.read_exact(&mut byte)
        .context("the new process did not confirm that it serves")?;
    if byte[0] != CONFIRM {
        bail!("the new process answered something other than its confirmation");
    }
    Ok(())
}

/// Sockets received from the previous process, taken by role and address as this one binds.
#[derive(Default)]
pub struct Inherited {
    sockets: Vec<(Role, SocketAddr, OwnedFd)>,
    /// The previous process, waiting for [`Inherited::confirm`].
    previous: Option<UnixStream>,
}

impl Inherited {
    /// Takes the previous process's sockets: connects to its upgrade socket and receives them.
    pub fn receive(data_dir: &Path) -> anyhow::Result<Self> {
        let path = socket_path(data_dir);
        let mut conn = match UnixStream::connect(&path) {
            Ok(c) => c,
            Err(e) => bail!(
                "--upgrade: no running parapet answers on {} ({e}); start without --upgrade",
                path.display()
            ),
        };
        conn.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        let mut len = [0u8; 4];
        conn.read_exact(&mut len)
            .context("the running parapet did not hand over its sockets")?;
        let len = u32::from_be_bytes(len) as usize;
        if len > MANIFEST_BYTES {
            bail!("upgrade manifest of {len} bytes is too large");
        }
        let mut data = vec![0u8; len];
        conn.read_exact(&mut data)?;
        let manifest: Vec<Entry> = serde_json::from_slice(&data).context("upgrade manifest")?;
        let mut sockets = Vec::with_capacity(manifest.len());
        for entry in manifest {
            let mut byte = [0u8; 1];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = recvmsg(
                &conn,
                &mut [IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )
            .with_context(|| format!("receiving {}", entry.addr))?;
            if got.bytes != 1 {
                bail!("the running parapet stopped before passing {}", entry.addr);
            }
            let mut fd: Option<OwnedFd> = None;
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(fds) = message {
                    for received in fds {
                        fd.get_or_insert(received);
                    }
                }
            }
            let Some(fd) = fd else {
                bail!("no socket arrived for {}", entry.addr);
            };
            sockets.push((entry.role, entry.addr, fd));
        }
        Ok(Self {
            sockets,
            previous: Some(conn),
        })
    }

    /// The inherited sockets for `role` on `addr` (port 0: any port on that IP), in the order
    /// they were bound; empty when there are none and the caller must bind.
    pub fn take(&mut self, role: Role, addr: SocketAddr) -> Vec<(SocketAddr, OwnedFd)> {
        let matches = |r: &Role, a: &SocketAddr| {
            *r == role && (*a == addr || (addr.port() == 0 && a.ip() == addr.ip()))
        };
        let Some(first) = self
            .sockets
            .iter()
            .find(|(r, a, _)| matches(r, a))
            .map(|(_, a, _)| *a)
        else {
            return Vec::new();
        };
        let (taken, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|(r, a, _)| *r == role && *a == first);
        self.sockets = rest;
        taken.into_iter().map(|(_, a, fd)| (a, fd)).collect()
    }

    /// Tells the previous process that this one now serves on every socket (it then stops).
    /// Until then it keeps serving, and goes on if this process fails before confirming.
    pub fn confirm(&mut self) -> anyhow::Result<()> {
        if let Some(mut conn) = self.previous.take() {
            conn.write_all(&[CONFIRM])
                .context("confirming the takeover to the previous process")?;
        }
        Ok(())
    }

    /// Sockets no longer configured; closing them ends their queues.
    pub fn unused(&self) -> Vec<SocketAddr> {
        self.sockets.iter().map(|(_, a, _)| *a).collect()
    }
}
