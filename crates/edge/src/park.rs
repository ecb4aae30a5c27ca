//! Kept-alive visitor connections that stay silent are parked. Their socket leaves the runtime
//! for this worker's own epoll set, and their task ends: what remains is one small entry, until
//! the visitor sends its next request (a new task then serves it) or the idle timeout ends the
//! connection. A task, its future and the socket's registration held about 1.6 KiB per idle
//! connection; nginx holds one in about 0.6 KiB.
//!
//! A connection is parked only after [`PARK_AFTER`] of silence, so that back-to-back requests
//! never pay for leaving and re-entering the runtime (two `epoll_ctl` calls each way).

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use pingora::apps::HttpPersistentSettings;
use pingora::server::ShutdownWatch;
use tokio::io::unix::AsyncFd;

use crate::stream::{ParkedStream, VisitorStream};
use crate::{ClientSlot, Connections};

/// How long a kept-alive connection waits for its next request in its own task before it is
/// parked.
pub(crate) const PARK_AFTER: Duration = Duration::from_millis(100);

/// How often parked connections are checked for their idle timeout.
const SWEEP: Duration = Duration::from_secs(1);

/// Readiness events taken from the set at once.
const EVENTS: usize = 256;

/// Parked connections are held in blocks of this many: the store grows by a block, never by
/// doubling (ten thousand parked connections would leave room for six thousand more).
const BLOCK: usize = 256;

/// A parked connection: its socket, and what the connection holds for its whole life (about
/// 150 bytes in all).
pub(crate) struct Parked {
    pub(crate) stream: ParkedStream,
    pub(crate) slot: ClientSlot,
    /// The engine's settings for the connection's next request, when it handled one (boxed:
    /// most connections have none).
    pub(crate) settings: Option<Box<HttpPersistentSettings>>,
    /// When the idle timeout closes it.
    pub(crate) deadline: Instant,
}

/// A worker's parked connections.
pub(crate) struct Parking {
    epoll: AsyncFd<EpollFd>,
    slots: Mutex<Slots>,
}

/// The epoll set, as the runtime polls it for readiness.
struct EpollFd(Epoll);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// Parked connections by slot number (the number is each one's epoll token), in blocks of
/// [`BLOCK`].
#[derive(Default)]
struct Slots {
    blocks: Vec<Vec<Option<Parked>>>,
    free: Vec<usize>,
    /// The worker no longer serves parked connections (it stopped): none is taken in.
    closed: bool,
}

impl Slots {
    fn insert(&mut self, parked: Parked) -> usize {
        if let Some(i) = self.free.pop()
            && let Some(slot) = self.get_mut(i)
        {
            *slot = Some(parked);
            return i;
        }
        if self.blocks.last().is_none_or(|b| b.len() == BLOCK) {
            self.blocks.push(Vec::with_capacity(BLOCK));
        }
        let n = self.blocks.len() - 1;
        let block = &mut self.blocks[n];
        block.push(Some(parked));
        n * BLOCK + block.len() - 1
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<Parked>> {
        self.blocks.get_mut(i / BLOCK)?.get_mut(i % BLOCK)
    }

    fn get(&self, i: usize) -> Option<&Parked> {
        self.blocks.get(i / BLOCK)?.get(i % BLOCK)?.as_ref()
    }

    fn take(&mut self, i: usize) -> Option<Parked> {
        let parked = self.get_mut(i)?.take()?;
        self.free.push(i);
        Some(parked)
    }

    /// Slot numbers in use or freed.
    fn len(&self) -> usize {
        self.blocks.iter().map(Vec::len).sum()
    }
}

impl Parking {
    /// A worker's parking, in the worker's runtime.
    pub(crate) fn new() -> std::io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        // Sound: `EpollFd` owns its descriptor and always gives that one, for as long as the
        // registration lives (the reason the runtime now marks its safe constructors deprecated,
        // pointing to unsafe ones).
        #[allow(deprecated)]
        let epoll = AsyncFd::with_interest(EpollFd(epoll), tokio::io::Interest::READABLE)?;
        Ok(Self {
            epoll,
            slots: Mutex::default(),
        })
    }

    fn slots(&self) -> std::sync::MutexGuard<'_, Slots> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks a connection until its visitor sends more (`None`); gives it back when it cannot
    /// be watched (the worker stopped, or the set is full).
    pub(crate) fn park(&self, parked: Parked) -> Option<Parked> {
        let mut slots = self.slots();
        if slots.closed {
            return Some(parked);
        }
        let i = slots.insert(parked);
        let added = match slots.get(i) {
            Some(entry) => {
                let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLRDHUP, i as u64);
                self.epoll.get_ref().0.add(&entry.stream.tcp, event)
            }
            None => Err(nix::errno::Errno::ENOENT),
        };
        match added {
            Ok(()) => None,
            Err(e) => {
                tracing::debug!("parking a visitor connection: {e}");
                slots.take(i)
            }
        }
    }

    /// The connections with something to read (a request, or their close), out of the set;
    /// and how many events the set gave (all it had when fewer than `events` hold).
    fn ready(&self, events: &mut [EpollEvent]) -> std::io::Result<(Vec<Parked>, usize)> {
        let n = self.epoll.get_ref().0.wait(events, EpollTimeout::ZERO)?;
        let mut slots = self.slots();
        let mut out = Vec::with_capacity(n);
        for event in &events[..n] {
            let Ok(i) = usize::try_from(event.data()) else {
                continue;
            };
            if let Some(parked) = slots.take(i) {
                let _ = self.epoll.get_ref().0.delete(&parked.stream.tcp);
                out.push(parked);
            }
        }
        Ok((out, n))
    }

    /// Takes out the connections whose idle time is over.
    fn expired(&self, now: Instant) -> Vec<Parked> {
        self.take_out(|p| p.deadline <= now)
    }

    /// Takes out every connection, and takes none in from now on.
    fn close(&self) -> Vec<Parked> {
        self.slots().closed = true;
        self.take_out(|_| true)
    }

    fn take_out(&self, which: impl Fn(&Parked) -> bool) -> Vec<Parked> {
        let mut slots = self.slots();
        let mut out = Vec::new();
        for i in 0..slots.len() {
            if slots.get(i).is_some_and(&which)
                && let Some(parked) = slots.take(i)
            {
                let _ = self.epoll.get_ref().0.delete(&parked.stream.tcp);
                out.push(parked);
            }
        }
        out
    }
}

/// Serves the parked connections of a worker: each that becomes readable is resumed on a task
/// of its own; each whose idle time is over is closed; all are closed when the edge stops.
pub(crate) async fn run(app: Arc<Connections>, parking: Arc<Parking>, mut shutdown: ShutdownWatch) {
    let mut events = vec![EpollEvent::empty(); EVENTS];
    // The resumed connections' own receiver (the one below is borrowed while waiting).
    let stopping = shutdown.clone();
    let mut sweep = tokio::time::interval(SWEEP);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            // A visitor's request first: one arriving at its deadline is served, not reset.
            biased;
            ready = parking.epoll.readable() => {
                let Ok(mut guard) = ready else { break };
                match parking.ready(&mut events) {
                    Ok((ready, n)) => {
                        if n < EVENTS {
                            guard.clear_ready();
                        }
                        for parked in ready {
                            resume(&app, parked, &stopping);
                        }
                    }
                    Err(e) => {
                        tracing::warn!("parked visitor connections: {e}");
                        break;
                    }
                }
            }
            _ = sweep.tick() => {
                for parked in parking.expired(Instant::now()) {
                    close(&app, parked);
                }
            }
            _ = shutdown.wait_for(|stopping| *stopping) => break,
        }
    }
    // Stopping (or the set failed): every parked connection is closed, and none is parked from
    // now on (one that would be waits in its own task, which ends it if the edge is stopping).
    for parked in parking.close() {
        close(&app, parked);
    }
}

/// Closes a parked connection (its socket and client slot go with it).
fn close(app: &Connections, parked: Parked) {
    app.metrics.parked_closed();
    drop(parked);
}

/// Serves a parked connection's next request on a new task.
fn resume(app: &Arc<Connections>, parked: Parked, shutdown: &ShutdownWatch) {
    // Most parked connections end with their visitor closing them: that is seen here, without
    // a task and a registration for each (a peek on a non-blocking socket never waits).
    let mut byte = [0u8; 1];
    match parked.stream.tcp.peek(&mut byte) {
        Ok(0) => return close(app, parked),
        Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => return close(app, parked),
        _ => {}
    }
    let Parked {
        stream,
        slot,
        settings,
        ..
    } = parked;
    let stream = match VisitorStream::unpark(stream) {
        Ok(stream) => Box::new(stream),
        Err(e) => {
            tracing::debug!("resuming a parked visitor connection: {e}");
            app.metrics.parked_closed();
            return;
        }
    };
    let app = Arc::clone(app);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        app.resume(stream, slot, settings.map(|s| *s), &shutdown)
            .await;
    });
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use tokio::io::AsyncReadExt;

    use super::*;

    /// A visitor connection parked in `parking` until `deadline`; the visitor's end.
    async fn park_one(parking: &Parking, deadline: Instant) -> std::net::TcpStream {
        let (visitor, parked) = idle_one(deadline).await;
        assert!(parking.park(parked).is_none());
        visitor
    }

    /// As [`park_one`], for a `parking` that refuses it.
    async fn park_one_refused(parking: &Parking) -> std::net::TcpStream {
        let (visitor, parked) = idle_one(Instant::now()).await;
        assert!(parking.park(parked).is_some());
        visitor
    }

    /// An idle visitor connection ready to park; the visitor's end.
    async fn idle_one(deadline: Instant) -> (std::net::TcpStream, Parked) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let visitor =
            std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (tcp, peer) = listener.accept().await.expect("accept");
        let Ok(Ok(stream)) = Box::new(VisitorStream::new(tcp, peer, None)).park() else {
            panic!("an idle connection is parked");
        };
        let parked = Parked {
            stream,
            slot: ClientSlot(None),
            settings: None,
            deadline,
        };
        (visitor, parked)
    }

    #[tokio::test]
    async fn a_parked_connection_comes_back_when_its_visitor_writes_or_its_time_is_over() {
        let parking = Parking::new().expect("parking");
        let mut events = vec![EpollEvent::empty(); EVENTS];
        let later = Instant::now() + Duration::from_secs(60);
        let mut writing = park_one(&parking, later).await;
        let _expiring = park_one(&parking, Instant::now()).await;
        assert!(
            parking.ready(&mut events).expect("wait").0.is_empty(),
            "silent connections stay parked"
        );
        assert_eq!(parking.expired(Instant::now()).len(), 1);

        writing.write_all(b"GET / HTTP/1.1\r\n").expect("write");
        tokio::time::timeout(Duration::from_secs(5), parking.epoll.readable())
            .await
            .expect("the set becomes readable")
            .expect("readiness")
            .retain_ready();
        let (mut ready, _) = parking.ready(&mut events).expect("wait");
        assert_eq!(ready.len(), 1);
        let resumed = ready.pop().expect("one");
        assert_eq!(resumed.deadline, later);
        // Back in the runtime, with the visitor's bytes unread.
        let mut stream = VisitorStream::unpark(resumed.stream).expect("unpark");
        let mut got = [0u8; 16];
        stream.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"GET / HTTP/1.1\r\n");
        // Nothing is left parked but the expired one's slot is used again.
        assert!(parking.expired(later).is_empty());
        let _next = park_one(&parking, later).await;
        assert_eq!(parking.slots().len(), 2);
        // Once the worker stops, every parked connection is taken out and none is taken in.
        assert_eq!(parking.close().len(), 1);
        let _refused = park_one_refused(&parking).await;
    }
}
