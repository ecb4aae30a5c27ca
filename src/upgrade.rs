//! Zero-downtime upgrade: `parapet serve --upgrade` takes over the listening sockets of the
//! `parapet serve` running on the same data directory, through a Unix socket there
//! (`upgrade.sock`; a JSON manifest, then each socket passed with `SCM_RIGHTS`).
//!
//! The running process lets go of the store (waiting for the operations in progress), writes
//! its state as the last good snapshot, so the new one serves exactly what it served, and hands
//! over every listening socket. It goes on serving DNS and the edge from its snapshot meanwhile;
//! store operations wait. The new process opens the store, starts everything, and only then
//! confirms; the running one then stops accepting, finishes the requests it has and exits. A
//! new process that fails, exits or stays silent before confirming leaves the running one in
//! place: it opens the store again and goes on. The sockets never close in between: a
//! connection arriving at any moment waits in the same accept queue and is accepted by one
//! process or the other, never refused.

use std::io::{IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{Context, bail};
use parapet_store::{
    Event, Listing, RedbStore, Revision, Store, StoreError, Txn, Watch, follow_log,
};
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

/// The upgrade socket of this process, bound beside the one successors look for
/// (`upgrade.sock.<pid>`) until [`UpgradeSocket::answer_successors`] moves it there: a process
/// that fails before it serves leaves the running one's socket in place.
pub struct UpgradeSocket {
    listener: UnixListener,
    staged: PathBuf,
    path: PathBuf,
}

impl UpgradeSocket {
    /// Binds this process's upgrade socket, readable by its user only.
    pub fn bind(data_dir: &Path) -> anyhow::Result<Self> {
        let path = socket_path(data_dir);
        let staged = data_dir.join(format!("{SOCKET_NAME}.{}", std::process::id()));
        let _ = std::fs::remove_file(&staged);
        let listener =
            UnixListener::bind(&staged).with_context(|| format!("binding {}", staged.display()))?;
        let socket = Self {
            listener,
            staged,
            path,
        };
        {
            use std::os::unix::fs::PermissionsExt;
            // Only this user may take the sockets over.
            std::fs::set_permissions(&socket.staged, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("restricting {}", socket.staged.display()))?;
        }
        Ok(socket)
    }

    /// Moves the socket to where successors look for it (replacing the previous process's, in
    /// one step) and answers them in a thread of its own. When one connects: `prepare` (let go
    /// of the store, write the last good snapshot), hand over every kept socket, and wait for
    /// the successor's confirmation; then `handed_over` (the caller stops accepting and exits),
    /// or, when the successor fails before confirming, `resume` (take the store back).
    pub fn answer_successors(
        mut self,
        handover: Arc<Handover>,
        prepare: impl Fn() -> anyhow::Result<()> + Send + 'static,
        resume: impl Fn() + Send + 'static,
        handed_over: impl FnOnce() + Send + 'static,
    ) -> anyhow::Result<()> {
        std::fs::rename(&self.staged, &self.path).with_context(|| {
            format!(
                "moving {} to {}",
                self.staged.display(),
                self.path.display()
            )
        })?;
        // Moved: nothing left to remove when `self` drops.
        self.staged = PathBuf::new();
        let listener = self.listener.try_clone()?;
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
                            // The successor's socket has replaced this one's: nothing to remove.
                            tracing::info!(
                                "handed {n} listening sockets to a new process; stopping"
                            );
                            handed_over();
                            return;
                        }
                        Err(e) => {
                            tracing::error!("handing over failed, still serving: {e:#}");
                            resume();
                        }
                    }
                }
            })?;
        Ok(())
    }
}

impl Drop for UpgradeSocket {
    fn drop(&mut self) {
        if !self.staged.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.staged);
        }
    }
}

/// How long the running process waits for its successor to say it serves on every socket.
/// The successor opens the store, loads it and starts every role in that time.
const CONFIRM_WAIT: std::time::Duration = std::time::Duration::from_secs(30);
const CONFIRM: u8 = b'!';

/// Waits for the successor's confirmation; an error (it exited, failed or stayed silent)
/// leaves this process serving. Giving up is final for both: the connection is shut down
/// first, so a confirmation written after it fails in the successor (which then exits), and
/// one written before it is still read here.
fn await_confirmation(conn: &mut UnixStream) -> anyhow::Result<()> {
    conn.set_read_timeout(Some(CONFIRM_WAIT))?;
    let mut byte = [0u8; 1];
    if let Err(e) = conn.read_exact(&mut byte) {
        let _ = conn.shutdown(std::net::Shutdown::Both);
        let late = conn.read(&mut byte).is_ok_and(|n| n == 1);
        if !late {
            return Err(e).context("the new process did not confirm that it serves");
        }
    }
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

/// How long a store operation waits while the store is released for a successor: the handover
/// ends within [`CONFIRM_WAIT`], then the store is back or this process stops.
const RELEASED_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the store of a running process stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    /// Let go of for a successor, which has not confirmed yet.
    Released,
    /// The successor confirmed and has the store; this process stops.
    HandedOver,
}

type StoreFuture<'a, T> =
    std::pin::Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The embedded store of a process that may hand over to a successor. redb locks its file for
/// one process at a time, and the successor must open it before it confirms; so this process
/// lets go of it when a successor connects ([`ReleasableStore::release_with`]) and opens it
/// again if the successor fails ([`ReleasableStore::reopen`]). Operations meanwhile wait; the
/// data planes, which serve from the snapshot, do not notice. Its revision watch outlives the
/// file being closed and opened again.
pub struct ReleasableStore {
    path: PathBuf,
    open: tokio::sync::RwLock<Option<RedbStore>>,
    phase: tokio::sync::watch::Sender<Phase>,
    revision: tokio::sync::watch::Sender<Revision>,
}

impl ReleasableStore {
    pub fn new(store: RedbStore, path: &Path) -> Self {
        let revision = *store.revision_watch().borrow();
        Self {
            path: path.to_owned(),
            open: tokio::sync::RwLock::new(Some(store)),
            phase: tokio::sync::watch::channel(Phase::Open).0,
            revision: tokio::sync::watch::channel(revision).0,
        }
    }

    /// The open store, held open while the guard lives (a release waits for it).
    async fn acquire(&self) -> Result<tokio::sync::RwLockReadGuard<'_, RedbStore>, StoreError> {
        let deadline = tokio::time::Instant::now() + RELEASED_WAIT;
        loop {
            if let Ok(open) =
                tokio::sync::RwLockReadGuard::try_map(self.open.read().await, Option::as_ref)
            {
                return Ok(open);
            }
            let mut phase = self.phase.subscribe();
            let waited =
                tokio::time::timeout_at(deadline, phase.wait_for(|p| *p != Phase::Released))
                    .await
                    .map(|p| p.map(|p| *p));
            match waited {
                Ok(Ok(Phase::Open)) => {}
                Ok(_) => {
                    return Err(StoreError::Storage(
                        "the store was handed over to a new process".into(),
                    ));
                }
                Err(_) => {
                    return Err(StoreError::Storage(
                        "the store is still held by a new process taking over".into(),
                    ));
                }
            }
        }
    }

    /// Waits for the operations in progress, runs `last` on the store (writing the last good
    /// snapshot), and closes it; operations wait from then on. An error from `last` keeps the
    /// store open. Blocking: for the upgrade thread.
    pub fn release_with(
        &self,
        last: impl FnOnce(&RedbStore) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut open = self.open.blocking_write();
        let Some(store) = open.as_ref() else {
            bail!("the store is not open");
        };
        last(store)?;
        self.phase.send_replace(Phase::Released);
        // Closes the file once the operations that were cancelled but still run have ended.
        drop(open.take());
        Ok(())
    }

    /// Opens the store again after a successor failed: retries until the file is free (the
    /// successor may hold it until it has exited). Blocking: for the upgrade thread.
    pub fn reopen(&self) {
        let mut failures = 0u32;
        let store = loop {
            match RedbStore::open(&self.path) {
                Ok(store) => break store,
                Err(e) => {
                    if failures.is_multiple_of(50) {
                        tracing::warn!("opening the store again, retrying: {e}");
                    }
                    failures += 1;
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
            }
        };
        let revision = *store.revision_watch().borrow();
        let mut open = self.open.blocking_write();
        *open = Some(store);
        // The successor may have written before it failed.
        self.revision.send_if_modified(|current| {
            let newer = revision > *current;
            if newer {
                *current = revision;
            }
            newer
        });
        self.phase.send_replace(Phase::Open);
        tracing::info!("store {} open again", self.path.display());
    }

    /// The successor confirmed: operations waiting for the store fail now.
    pub fn handed_over(&self) {
        self.phase.send_replace(Phase::HandedOver);
    }
}

impl Store for ReleasableStore {
    fn get<'s, 'k, 'f>(&'s self, key: &'k str) -> StoreFuture<'f, Option<parapet_store::Entry>>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.acquire().await?.get(key).await })
    }

    fn list<'s, 'k, 'f>(&'s self, prefix: &'k str) -> StoreFuture<'f, Listing>
    where
        's: 'f,
        'k: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.acquire().await?.list(prefix).await })
    }

    fn commit<'s, 'f>(&'s self, txn: Txn) -> StoreFuture<'f, Revision>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let revision = self.acquire().await?.commit(txn).await?;
            self.revision.send_if_modified(|current| {
                let newer = revision > *current;
                if newer {
                    *current = revision;
                }
                newer
            });
            Ok(revision)
        })
    }

    fn changes_since<'s, 'f>(&'s self, after: Revision, limit: usize) -> StoreFuture<'f, Vec<Event>>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move { self.acquire().await?.changes_since(after, limit).await })
    }

    fn revision_watch(&self) -> tokio::sync::watch::Receiver<Revision> {
        self.revision.subscribe()
    }

    fn watch(self: Arc<Self>, after: Revision) -> Watch {
        follow_log(self, after)
    }
}
