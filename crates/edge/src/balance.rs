//! Which of an origin's addresses a request tries, and in what order. A name with several
//! proxied addresses has its requests spread over them at random (as Cloudflare picks one of a
//! name's origins per request, and retries the others when it fails; a shared turn would give
//! two names whose requests alternate the same address every time). An address a connection
//! could not be made to rests for a while: it is tried after the others, as nginx passes over
//! a server after a failure (`max_fails=1 fail_timeout=10s`), so that a dead origin costs one
//! visitor a connect timeout, not every other one. A request tries at most [`MAX_TRIES`]
//! addresses, so a name with hundreds of dead origins cannot hold a visitor for hundreds of
//! connect timeouts.
//!
//! The random state and the resting addresses are kept per worker thread: no lock and no
//! shared counter on the way to an origin.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use pingora::ErrorType;

/// How long an address that failed to connect is tried after the others.
pub(crate) const RESTING: Duration = Duration::from_secs(10);

/// The most addresses one request tries.
pub(crate) const MAX_TRIES: usize = 4;

/// The most resting addresses a worker remembers (expired ones are dropped first).
const MAX_RESTING: usize = 4096;

thread_local! {
    /// A xorshift generator's state, seeded from the process's random hash keys.
    static RANDOM: Cell<u64> = Cell::new(
        std::collections::hash_map::RandomState::new().hash_one(std::thread::current().id()) | 1,
    );
    static RESTING_UNTIL: RefCell<HashMap<SocketAddr, Instant>> = RefCell::new(HashMap::new());
}

/// The addresses one request tries, in order: those not resting from a random one round the
/// list, then one resting one, at most [`MAX_TRIES`]. A single address is tried as it is. When
/// every address rests (the whole pool is down), a request tries one, so that a visitor waits
/// one connect timeout, not one for each address, for as long as the outage lasts (nginx
/// answers at once then); the one it tries tells when the pool is back.
pub(crate) fn order(addrs: &[IpAddr], port: u16) -> Cow<'_, [IpAddr]> {
    if addrs.len() <= 1 {
        return Cow::Borrowed(addrs);
    }
    let now = Instant::now();
    let order = RESTING_UNTIL.with(|resting| {
        let mut resting = resting.borrow_mut();
        if resting.is_empty() {
            return rotated(addrs).take(MAX_TRIES).collect();
        }
        resting.retain(|_, until| *until > now);
        let (awake, asleep): (Vec<IpAddr>, Vec<IpAddr>) = addrs
            .iter()
            .partition(|ip| !resting.contains_key(&SocketAddr::new(**ip, port)));
        rotated(&awake)
            .chain(rotated(&asleep).take(1))
            .take(MAX_TRIES)
            .collect()
    });
    Cow::Owned(order)
}

/// `addrs` from a random one round the list.
fn rotated(addrs: &[IpAddr]) -> impl Iterator<Item = IpAddr> + '_ {
    let start = if addrs.len() <= 1 {
        0
    } else {
        RANDOM.with(|state| {
            let mut x = state.get();
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            state.set(x);
            // The high 32 bits scaled to the list (a bias of at most len / 2^32).
            (((x >> 32) * addrs.len() as u64) >> 32) as usize
        })
    };
    addrs[start..].iter().chain(&addrs[..start]).copied()
}

/// A connection to `addr` could not be made (`e`): unless the failure was the edge's own or
/// came after the connection was made (a TLS handshake), the address rests for [`RESTING`].
pub(crate) fn failed(addr: SocketAddr, e: &ErrorType) {
    if !matches!(
        e,
        ErrorType::ConnectTimedout
            | ErrorType::ConnectRefused
            | ErrorType::ConnectNoRoute
            | ErrorType::ConnectError
    ) {
        return;
    }
    let now = Instant::now();
    RESTING_UNTIL.with(|resting| {
        let mut resting = resting.borrow_mut();
        if resting.len() >= MAX_RESTING {
            resting.retain(|_, until| *until > now);
        }
        if resting.len() < MAX_RESTING || resting.contains_key(&addr) {
            resting.insert(addr, now + RESTING);
        }
    });
}

/// A connection to `addr` was made: it rests no more.
pub(crate) fn connected(addr: SocketAddr) {
    RESTING_UNTIL.with(|resting| {
        let mut resting = resting.borrow_mut();
        if !resting.is_empty() {
            resting.remove(&addr);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(n: u8) -> Vec<IpAddr> {
        (1..=n).map(|i| IpAddr::from([192, 0, 2, i])).collect()
    }

    #[test]
    fn requests_start_at_every_address_about_as_often() {
        let addrs = ips(3);
        let firsts: Vec<IpAddr> = (0..3000).map(|_| order(&addrs, 80)[0]).collect();
        // About 1000 each: below 850 is six standard deviations off.
        for ip in &addrs {
            let led = firsts.iter().filter(|f| *f == ip).count();
            assert!(led > 850, "{ip} led {led} of 3000");
        }
        let one = order(&addrs, 80);
        let mut sorted = one.to_vec();
        sorted.sort();
        assert_eq!(sorted, addrs);
        assert!(matches!(order(&addrs[..1], 80), Cow::Borrowed(_)));
    }

    #[test]
    fn a_failed_address_is_tried_last_until_it_has_rested_or_connects() {
        let addrs = ips(3);
        failed(SocketAddr::new(addrs[1], 80), &ErrorType::ConnectRefused);
        for _ in 0..6 {
            let tried = order(&addrs, 80);
            assert_eq!(tried.len(), 3);
            assert_eq!(tried[2], addrs[1], "{tried:?}");
        }
        // The same address on another port is another origin.
        assert!((0..100).any(|_| order(&addrs, 8080)[0] == addrs[1]));
        // The others share the requests evenly meanwhile.
        let leads = (0..3000)
            .filter(|_| order(&addrs, 80)[0] == addrs[0])
            .count();
        assert!((1350..1650).contains(&leads), "{leads} of 3000");
        // A handshake that failed after the connection was made says nothing of the address.
        failed(
            SocketAddr::new(addrs[0], 80),
            &ErrorType::TLSHandshakeFailure,
        );
        assert!((0..100).any(|_| order(&addrs, 80)[0] == addrs[0]));
        connected(SocketAddr::new(addrs[1], 80));
        assert!((0..100).any(|_| order(&addrs, 80)[0] == addrs[1]));
    }

    #[test]
    fn a_request_tries_one_resting_address_after_the_others() {
        let addrs = ips(3);
        for ip in &addrs[..2] {
            failed(SocketAddr::new(*ip, 80), &ErrorType::ConnectTimedout);
        }
        let tried = order(&addrs, 80);
        assert_eq!(tried.len(), 2, "{tried:?}");
        assert_eq!(tried[0], addrs[2]);
        failed(SocketAddr::new(addrs[2], 80), &ErrorType::ConnectTimedout);
        // The whole pool rests: one address, a different one from time to time.
        let firsts: std::collections::HashSet<IpAddr> = (0..100)
            .map(|_| order(&addrs, 80))
            .inspect(|t| assert_eq!(t.len(), 1))
            .map(|t| t[0])
            .collect();
        assert_eq!(firsts.len(), 3);
    }

    #[test]
    fn a_request_tries_a_bounded_number_of_addresses() {
        let addrs = ips(200);
        for ip in &addrs[..150] {
            failed(SocketAddr::new(*ip, 80), &ErrorType::ConnectTimedout);
        }
        let tried = order(&addrs, 80);
        assert_eq!(tried.len(), MAX_TRIES);
        assert!(
            tried.iter().all(|ip| !addrs[..150].contains(ip)),
            "the awake addresses come first: {tried:?}"
        );
    }
}
