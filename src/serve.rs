//! `parapet serve`: every role in one process, on the embedded store.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use parapet_activation::{ActivationMode, Activator};
use parapet_api::{ApiConfig, ApiState};
use parapet_dns::{
    Cookies, DnsIndex, DnsServer, EdgeAddrs, Flattener, IndexHandle, Limits, RrlConfig,
    bind_udp_and_tcp, follow_snapshots, notify_all, system_resolver,
};
use parapet_model::ids;
use parapet_snapshot::{
    LastGood, Published, publish_last_good, run_snapshot_watcher, save_store_state,
};
use parapet_store::{RedbStore, Store, StoreError, Txn};
use serde::{Deserialize, Serialize};

use crate::config::{ActivationFlag, Config, is_local};
use crate::upgrade::{Handover, Inherited, ReleasableStore, Role, UpgradeSocket};

const ACCOUNT_KEY: &str = "meta/account";

#[derive(Serialize, Deserialize)]
struct Account {
    id: String,
    name: String,
}

/// This installation's account, created on first start.
async fn account(store: &dyn Store) -> anyhow::Result<Account> {
    loop {
        if let Some(e) = store.get(ACCOUNT_KEY).await? {
            return serde_json::from_slice(&e.value).context("stored account is unreadable");
        }
        let account = Account {
            id: ids::new_id(),
            name: "Parapet".into(),
        };
        let value = serde_json::to_vec(&account)?;
        match store
            .commit(Txn::new().expect(ACCOUNT_KEY, 0).put(ACCOUNT_KEY, value))
            .await
        {
            Ok(_) => return Ok(account),
            Err(StoreError::Conflict) => continue,
            Err(e) => return Err(e.into()),
        }
    }
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Says where something listens, and logs it with its time too (standard output may go
/// elsewhere than the log).
fn announce(line: &str) {
    say(&format!("parapet: {line}"));
    tracing::info!("{line}");
}

/// Whether SIGTERM or SIGINT arrived. Installed before anything serves: from then on a signal
/// stops the process cleanly (its data planes drain), whatever it is doing, starting included.
#[derive(Clone)]
struct StopSignal(tokio::sync::watch::Receiver<bool>);

impl StopSignal {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("catching SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("catching SIGINT")?;
        // SIGHUP (a closed terminal, or an operator used to nginx's or Knot's reload) does not
        // stop the process. Zones, records and rules change through the API, at once; the
        // configuration is read at the start, and `serve --upgrade` applies a new one without
        // dropping a connection.
        let mut hup = signal(SignalKind::hangup()).context("catching SIGHUP")?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = hup.recv() => tracing::info!(
                        "SIGHUP: nothing to reload (zones and rules change through the API); a new configuration takes effect with `parapet serve --upgrade`"
                    ),
                }
            }
            tracing::info!("shutting down");
            let _ = tx.send(true);
        });
        Ok(Self(rx))
    }

    /// Returns once a signal arrived.
    async fn requested(mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// DNS as it runs: what a start or a takeover does to it once the process serves alone.
struct RunningDns {
    server: Arc<DnsServer>,
    /// The TCP listeners' accept tasks.
    accepting: Vec<tokio::task::AbortHandle>,
    /// Where NOTIFYs leave from.
    notify_from: Vec<std::net::IpAddr>,
}

impl RunningDns {
    /// Stops answering (a successor took the sockets over): UDP threads return, TCP listeners
    /// stop accepting; transfers and connections under way finish.
    fn stop_answering(&self) {
        self.server.stop_udp();
        self.accepting
            .iter()
            .for_each(tokio::task::AbortHandle::abort);
    }

    /// Once this process alone answers (`after` a predecessor's last answers) and its index
    /// has the store's `revision`: every zone's NOTIFY to its secondaries, as BIND and Knot
    /// send them once they load their zones (the serials may have moved meanwhile, and a
    /// secondary that checked with the predecessor holds the old one).
    async fn announce(self: Arc<Self>, revision: u64, after: std::time::Duration) {
        tokio::time::sleep(after).await;
        let deadline = tokio::time::Instant::now() + UPGRADE_SNAPSHOT_WAIT;
        while self.server.index.load().revision < revision {
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(
                    "DNS did not reach the store's revision {revision}: no NOTIFY sent at start"
                );
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        notify_all(
            &self.server.index.load(),
            &self.notify_from,
            &self.server.journal,
        );
    }
}

/// Binds every `--dns-listen` address (UDP and TCP) and serves DNS from the snapshot.
async fn start_dns(
    config: &Config,
    published: &Arc<Published>,
    flattener: &Arc<Flattener>,
    inherited: &mut Inherited,
    handover: &Handover,
) -> anyhow::Result<Option<Arc<RunningDns>>> {
    if config.dns_listen.is_empty() {
        return Ok(None);
    }
    let edge = EdgeAddrs {
        v4: config.edge_ipv4.clone(),
        v6: config.edge_ipv6.clone(),
    };
    if edge.v4.is_empty() && edge.v6.is_empty() {
        tracing::warn!(
            "no --edge-ipv4/--edge-ipv6 given: proxied names in active zones will have no addresses"
        );
    }
    let index: IndexHandle = Arc::new(ArcSwap::from_pointee(DnsIndex::default()));
    let server = Arc::new(
        DnsServer::new(
            Arc::clone(&index),
            Limits {
                max_udp_payload: config.dns_udp_payload,
            },
            RrlConfig {
                rate: config.dns_rrl_rate,
                slip: config.dns_rrl_slip,
            },
            dns_cookies(config)?,
        )
        .with_identity(config.dns_identity.as_deref()),
    );
    let mut accepting = Vec::new();
    for addr in &config.dns_listen {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let adopted_udp = inherited.take(Role::DnsUdp, *addr);
        let adopted_tcp = inherited.take(Role::DnsTcp, *addr);
        let (udp, tcp) = match (adopted_udp.is_empty(), adopted_tcp.into_iter().next()) {
            (false, Some((_, tcp))) => {
                let tcp = std::net::TcpListener::from(tcp);
                tcp.set_nonblocking(true)?;
                let udp = adopted_udp
                    .into_iter()
                    .map(|(_, fd)| std::net::UdpSocket::from(fd))
                    .collect();
                (udp, tcp)
            }
            _ => bind_udp_and_tcp(*addr, workers).map_err(|e| {
                anyhow::anyhow!("cannot listen on {addr} (UDP and TCP) for DNS: {e}; choose another address with --dns-listen")
            })?,
        };
        let bound = tcp.local_addr()?;
        for socket in &udp {
            handover.keep(Role::DnsUdp, bound, socket);
        }
        handover.keep(Role::DnsTcp, bound, &tcp);
        server.spawn_udp(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        announce(&format!("dns listening on {bound}"));
        accepting.push(server.spawn_tcp(tcp).abort_handle());
    }
    let (built, _) = DnsIndex::build(&published.load(), &edge, Some(flattener), None);
    index.store(Arc::new(built));
    let notify_from: Vec<std::net::IpAddr> = config.dns_listen.iter().map(SocketAddr::ip).collect();
    tokio::spawn(follow_snapshots(
        Arc::clone(published),
        edge,
        index,
        Arc::clone(&server.journal),
        Arc::clone(flattener),
        notify_from.clone(),
    ));
    Ok(Some(Arc::new(RunningDns {
        server,
        accepting,
        notify_from,
    })))
}

/// The DNS cookie secrets: the configured ones, or the one kept in the data directory (made on
/// first start), so that a restart or an upgrade does not void the cookies clients hold.
fn dns_cookies(config: &Config) -> anyhow::Result<Cookies> {
    if let Some((first, rest)) = config.dns_cookie_secrets.split_first() {
        return Ok(Cookies::new(*first, rest));
    }
    let path = config.data_dir.join(DNS_COOKIE_SECRET_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => match parapet_dns::parse_secret(&text) {
            Some(secret) => Ok(Cookies::new(secret, &[])),
            None => bail!(
                "{} does not hold a DNS cookie secret (32 hexadecimal digits); remove it to have a new one made",
                path.display()
            ),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = parapet_dns::random_secret();
            std::fs::create_dir_all(&config.data_dir)?;
            let partial = path.with_extension("partial");
            {
                use std::io::Write as _;
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&partial)?;
                file.write_all(parapet_dns::format_secret(&secret).as_bytes())?;
                file.sync_all()?;
            }
            std::fs::rename(&partial, &path)?;
            Ok(Cookies::new(secret, &[]))
        }
        Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
    }
}

/// Where the DNS cookie secret made on first start is kept, in the data directory.
const DNS_COOKIE_SECRET_FILE: &str = "dns-cookie-secret";

/// Opens the store. While a previous process hands over (`upgrading`), waits for it to let go
/// of the file (it does when the handover starts; an operation of its that was cancelled may
/// hold it a moment longer); any other failure is final at once.
async fn open_store(path: &std::path::Path, upgrading: bool) -> anyhow::Result<RedbStore> {
    let deadline = std::time::Instant::now() + UPGRADE_STORE_WAIT;
    loop {
        match RedbStore::open(path) {
            Ok(store) => return Ok(store),
            // redb's lock refusal is told apart only by its text.
            Err(e)
                if upgrading
                    && e.to_string().contains("already open")
                    && std::time::Instant::now() < deadline =>
            {
                tracing::debug!("store still held by the previous process: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) if upgrading => bail!(
                "opening the store {}: {e}; the running parapet goes on serving",
                path.display()
            ),
            Err(e) => bail!(
                "opening the store {}: {e} (is another parapet using it? to replace it without downtime, start this one with --upgrade)",
                path.display()
            ),
        }
    }
}

/// How long a process replaced by `--upgrade` lets its requests finish before it exits.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);
/// How long `--upgrade` waits for the previous process to let go of the store. Within the time
/// the previous process waits for the confirmation (30 s), with room to start after.
const UPGRADE_STORE_WAIT: std::time::Duration = std::time::Duration::from_secs(15);
/// How long `--upgrade` waits for the snapshot to reach the store's revision.
const UPGRADE_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn serve(config: Config, env_token: Option<String>, upgrade: bool) -> anyhow::Result<()> {
    let stop = StopSignal::install()?;
    // The store holds private keys (uploaded and automatic certificates, the CAs'): a data
    // directory Parapet makes is its owner's only; an existing one open to others is reported.
    {
        use std::os::unix::fs::PermissionsExt;
        if config.data_dir.exists() {
            let metadata = std::fs::metadata(&config.data_dir)
                .with_context(|| format!("--data-dir {}", config.data_dir.display()))?;
            if !metadata.is_dir() {
                anyhow::bail!(
                    "--data-dir {} is not a directory: give a directory (made if missing)",
                    config.data_dir.display()
                );
            }
            let mode = metadata.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "--data-dir {} is readable by other users (mode {:o}); it holds private keys: chmod 700 it",
                    config.data_dir.display(),
                    mode & 0o777
                );
            }
        } else {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating --data-dir {}", config.data_dir.display()))?;
            std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700))
                .with_context(|| format!("restricting --data-dir {}", config.data_dir.display()))?;
        }
    }
    raise_open_file_limit();
    let last_good_path = config.data_dir.join("snapshot.json");
    let mut inherited = if upgrade {
        let data_dir = config.data_dir.clone();
        let receive = tokio::task::spawn_blocking(move || Inherited::receive(&data_dir));
        tokio::select! {
            received = receive => received??,
            () = stop.clone().requested() => return Ok(()),
        }
    } else {
        Inherited::default()
    };
    let handover = Arc::new(Handover::default());

    // The data planes start from the last good state (exactly the running one's when taking
    // over) and need no store: they serve while the store is still held by a previous process.
    let published = Arc::new(Published::new());
    // Applied by the edge before each zone's own, and by purges by URL.
    published.set_configured_cache_rules(config.cache_rules.clone());
    publish_last_good(&published, &LastGood::new(&last_good_path));
    // One cache of outside names' addresses, for apex CNAME flattening and for edge origins.
    let resolver = Arc::new(Flattener::new(config.resolver.or_else(system_resolver)));
    // Refreshed ahead of expiry in the background, for DNS (apex flattening) and the edge
    // (proxied CNAMEs to other providers) alike, whichever of them runs.
    tokio::spawn({
        let resolver = Arc::clone(&resolver);
        async move { resolver.run().await }
    });
    let dns = start_dns(&config, &published, &resolver, &mut inherited, &handover).await?;
    let mut metrics: Vec<parapet_api::MetricsSource> = Vec::new();
    let (edge_shutdown, edge_shutdown_rx) = tokio::sync::watch::channel(false);
    let mut edge = None;
    let mut purge = None;
    let origin_ca = Some(Arc::new(origin_ca(&config)?));
    if !config.http_listen.is_empty() || !config.https_listen.is_empty() {
        let mut proxy = parapet_edge::EdgeProxy::new(Arc::clone(&published));
        let (trust, roots) = origin_trust(&config, origin_ca.as_deref())?;
        // The same roots, for zones that trust more CAs (custom origin trust stores).
        proxy.trust_roots = Arc::new(roots);
        proxy.origin_trust = Some(trust);
        proxy.origin_pull = Some(origin_pull_identity(&config)?);
        if let Some(port) = config.https_listen.first().map(SocketAddr::port) {
            proxy.https_port = port;
        }
        if let Some(port) = config.http_listen.first().map(SocketAddr::port) {
            proxy.http_port = port;
        }
        proxy.resolver = Some(Arc::clone(&resolver));
        proxy.origin_policy = Arc::new(parapet_edge::route::OriginPolicy {
            own: (config.edge_ipv4.iter().copied().map(std::net::IpAddr::from))
                .chain(config.edge_ipv6.iter().copied().map(std::net::IpAddr::from))
                .collect(),
            denied: config.origin_denied_networks.clone(),
        });
        let edge_metrics = Arc::clone(&proxy.metrics);
        metrics.push(Arc::new({
            let m = Arc::clone(&edge_metrics);
            move || m.render()
        }) as parapet_api::MetricsSource);
        proxy.connect_timeout = config.edge_connect_timeout;
        proxy.read_timeout = config.edge_read_timeout;
        proxy.body_timeout = config.edge_body_timeout;
        proxy.max_body_bytes = config.edge_max_body_bytes;
        proxy.client_limit = Arc::new(parapet_edge::ClientLimit::new(
            config.edge_max_connections_per_ip,
        ));
        if config.cache_memory_bytes > 0 || config.cache_disk_bytes > 0 {
            let disk = if config.cache_disk_bytes > 0 {
                let dir = config
                    .cache_dir
                    .clone()
                    .unwrap_or_else(|| config.data_dir.join("cache"));
                let tier = parapet_cache::DiskTier::open(
                    &dir,
                    config.cache_disk_bytes,
                    config.cache_max_object_bytes,
                )
                .with_context(|| format!("opening the disk cache in {}", dir.display()))?;
                Some(tier)
            } else {
                None
            };
            let cache = parapet_cache::EdgeCache::leak(config.cache_memory_bytes, disk);
            cache
                .store
                .set_max_object_bytes(config.cache_max_object_bytes);
            proxy.cache = Some(cache);
            // A URL without a port stands for every port the edge serves its scheme on.
            let ports = |addrs: &[SocketAddr]| addrs.iter().map(SocketAddr::port).collect();
            let (http_ports, https_ports): (Vec<u16>, Vec<u16>) =
                (ports(&config.http_listen), ports(&config.https_listen));
            purge = Some(
                Arc::new(move |zone: &str, what: &parapet_model::purge::Purge| {
                    let what = what.clone().on_ports(&http_ports, &https_ports);
                    cache.store.purge(zone, &what)
                }) as parapet_api::PurgeFn,
            );
            metrics.push(Arc::new(move || cache.render_metrics()) as parapet_api::MetricsSource);
        }
        let role = |tls| if tls { Role::Https } else { Role::Http };
        let listeners = parapet_edge::EdgeListeners::bind_or_adopt(
            &config.http_listen,
            &config.https_listen,
            config
                .edge_workers
                .unwrap_or_else(parapet_edge::worker_count),
            &mut |addr, tls| {
                inherited
                    .take(role(tls), addr)
                    .into_iter()
                    .map(|(_, fd)| std::net::TcpListener::from(fd))
                    .collect()
            },
        )
        .map_err(|e| {
            anyhow::anyhow!("{e}; choose another address with --http-listen or --https-listen")
        })?;
        for (addr, tls, socket) in listeners.sockets() {
            handover.keep(role(tls), addr, socket);
        }
        for (addr, tls) in listeners.addrs() {
            let scheme = if tls { "https" } else { "http" };
            announce(&format!("{scheme} listening on {addr}"));
        }
        let tls = if config.https_listen.is_empty() {
            None
        } else {
            let tls = Arc::new(
                parapet_tls::EdgeTls::new(Arc::clone(&published))
                    .map_err(|e| anyhow::anyhow!("starting TLS: {e}"))?,
            );
            // Parse every certificate now rather than in the first visitor's handshake.
            let resolver = Arc::clone(&tls.resolver);
            tokio::task::spawn_blocking(move || resolver.names());
            Some(tls)
        };
        edge = Some((
            parapet_edge::start_edge(proxy, listeners, tls, edge_shutdown_rx),
            edge_metrics,
        ));
    }
    if config
        .edge_ipv4
        .iter()
        .map(|ip| (*ip).into())
        .chain(config.edge_ipv6.iter().map(|ip| (*ip).into()))
        .any(is_local)
    {
        tracing::warn!(
            "an --edge-ipv4/--edge-ipv6 address is loopback or unspecified: visitors elsewhere cannot reach it"
        );
    }
    let api_socket = match inherited
        .take(Role::Api, config.api_listen)
        .into_iter()
        .next()
    {
        Some((_, fd)) => {
            let socket = std::net::TcpListener::from(fd);
            socket.set_nonblocking(true)?;
            socket
        }
        None => match std::net::TcpListener::bind(config.api_listen) {
            Ok(socket) => {
                socket.set_nonblocking(true)?;
                socket
            }
            Err(e) => bail!(
                "cannot listen on {} for the API: {e}; choose another address with --api-listen",
                config.api_listen
            ),
        },
    };
    let local = api_socket.local_addr()?;
    handover.keep(Role::Api, local, &api_socket);
    for addr in inherited.unused() {
        tracing::warn!("{addr} was handed over but is no longer configured: closing it");
    }

    // Everything that can fail or wait happens before the previous process is told to stop: a
    // failure leaves it serving (this process lets the edge requests it took finish, and exits
    // with the error), and a signal stops this one cleanly.
    let started = tokio::select! {
        started = start_control_plane(
            &config,
            dns.as_ref().map(|d| &d.server.journal),
            upgrade,
            env_token.is_some(),
            &published,
            &last_good_path,
            edge_shutdown.subscribe(),
        ) => started.and_then(|control| {
            Ok((control, tokio::net::TcpListener::from_std(api_socket)?))
        }),
        () = stop.clone().requested() => {
            drop(inherited);
            let _ = edge_shutdown.send(true);
            finish_edge(edge).await;
            return Ok(());
        }
    };
    let confirmed = started.and_then(|started| {
        // Every role serves here now: the previous process may stop.
        inherited.confirm()?;
        Ok(started)
    });
    drop(inherited);
    let (control, api_listener) = match confirmed {
        Ok(started) => started,
        Err(e) => {
            let _ = edge_shutdown.send(true);
            finish_edge(edge).await;
            return Err(e);
        }
    };
    let ControlPlane {
        store: releasable,
        account,
        activator,
        upgrade_socket,
    } = control;
    let store: Arc<dyn Store> = Arc::clone(&releasable) as Arc<dyn Store>;
    if let Some(dns) = &dns {
        // A predecessor stops answering once it reads the confirmation: its last answers
        // are out well within this.
        let after = if upgrade {
            PREDECESSOR_SILENT
        } else {
            std::time::Duration::ZERO
        };
        let revision = *store.revision_watch().borrow();
        tokio::spawn(Arc::clone(dns).announce(revision, after));
    }
    let stopping_dns = dns.clone();

    // A successor started with --upgrade takes the sockets over; this process then stops.
    let (upgraded, mut upgraded_rx) = tokio::sync::watch::channel(false);
    {
        let runtime = tokio::runtime::Handle::current();
        let last_good = LastGood::new(&last_good_path);
        let (prepared, resumed) = (Arc::clone(&releasable), Arc::clone(&releasable));
        let answered = upgrade_socket.answer_successors(
            handover,
            move || {
                prepared.release_with(|store| {
                    Ok(runtime.block_on(save_store_state(store, &last_good))?)
                })
            },
            move || resumed.reopen(),
            move || {
                // The successor answers DNS from now on: NOTIFYs it sends must not find this
                // process answering a secondary's check with the serials it had.
                if let Some(dns) = &stopping_dns {
                    dns.stop_answering();
                }
                releasable.handed_over();
                let _ = upgraded.send(true);
            },
        );
        // This process serves alone now: it goes on, only without upgrades.
        if let Err(e) = answered {
            tracing::error!("this process cannot hand over to a successor: {e:#}");
        }
    }

    let state = Arc::new(ApiState {
        store,
        config: ApiConfig {
            nameservers: config.nameservers.clone(),
            account_id: account.id,
            account_name: account.name,
            env_token,
            setting_defaults: [
                (
                    "proxy_connect_timeout",
                    serde_json::json!(whole_seconds(config.edge_connect_timeout)),
                ),
                (
                    "proxy_read_timeout",
                    serde_json::json!(whole_seconds(config.edge_read_timeout)),
                ),
            ]
            .into(),
            max_records_per_zone: config.max_records_per_zone,
        },
        activator,
        published,
        metrics,
        purge,
        origin_ca,
    });
    tracing::info!(data_dir = %config.data_dir.display(), "parapet started");
    announce(&format!("api listening on http://{local}"));
    // Stopping (a signal, or a successor that confirmed): the edge and the API stop accepting
    // at once and get a bounded time to finish what they started.
    let (stopping, mut stopping_rx) = tokio::sync::watch::channel(false);
    let stopped = async move {
        let upgraded = async {
            if upgraded_rx.changed().await.is_err() {
                // The upgrade listener is gone: only a signal stops this process now.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = stop.requested() => {}
            () = upgraded => tracing::info!("a new process took over; finishing"),
        }
        let _ = stopping.send(true);
        let _ = edge_shutdown.send(true);
    };
    let api = axum::serve(api_listener, parapet_api::router(state)).with_graceful_shutdown(stopped);
    let api_grace = async move {
        let _ = stopping_rx.wait_for(|s| *s).await;
        tokio::time::sleep(DRAIN_GRACE).await;
    };
    tokio::select! {
        served = api => served.context("API server")?,
        () = api_grace => tracing::warn!("API requests still running after {DRAIN_GRACE:?}; stopping"),
    }
    finish_edge(edge).await;
    Ok(())
}

/// The edge's accept task and its metrics.
type RunningEdge = (tokio::task::JoinHandle<()>, Arc<parapet_edge::EdgeMetrics>);

/// Once the edge is told to stop: waits for it to stop accepting, then lets the requests in
/// progress finish (bounded).
async fn finish_edge(edge: Option<RunningEdge>) {
    if let Some((task, metrics)) = edge {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        let deadline = tokio::time::Instant::now() + DRAIN_GRACE;
        while metrics.open_connections() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}

/// What runs on the store, started before a predecessor is told to stop.
struct ControlPlane {
    store: Arc<ReleasableStore>,
    account: Account,
    activator: Arc<Activator>,
    upgrade_socket: UpgradeSocket,
}

/// How long after confirming a takeover the predecessor may still send DNS answers (its UDP
/// threads look whether to stop every 100 ms, and answer the queries they hold first).
const PREDECESSOR_SILENT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where the store records the edge addresses active zones' serials were last moved for.
const EDGE_ADDRESSES_KEY: &str = "node/edge-addresses";

/// The `--edge-ipv4`/`--edge-ipv6` addresses are data of every active zone (its proxied names
/// answer with them), beside the records: when they differ from those the zones' serials were
/// last moved for, every active zone's serial moves, so that secondaries transfer the new
/// answers. Recorded in the store, fleet-wide (the nodes of a fleet share their addresses).
/// Returns the revision of the last serial moved, if any moved.
async fn move_serials_for_edge_addresses(
    store: &dyn Store,
    config: &Config,
) -> anyhow::Result<Option<parapet_store::Revision>> {
    let addresses = serde_json::to_vec(&serde_json::json!({
        "v4": config.edge_ipv4,
        "v6": config.edge_ipv6,
    }))?;
    let recorded = store.get(EDGE_ADDRESSES_KEY).await?;
    if recorded.as_ref().is_some_and(|e| e.value == addresses) {
        return Ok(None);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (mut moved, mut last) = (0, None);
    for entry in store.list(parapet_snapshot::keys::ZONES).await?.entries {
        let mut entry = entry;
        while let Ok(mut zone) = serde_json::from_slice::<parapet_model::Zone>(&entry.value) {
            if zone.status != parapet_model::ZoneStatus::Active {
                break;
            }
            zone.serial = zone.next_serial(now);
            let txn = Txn::new()
                .expect(&entry.key, entry.mod_revision)
                .put(&entry.key, serde_json::to_vec(&zone)?);
            match store.commit(txn).await {
                Ok(revision) => {
                    moved += 1;
                    last = Some(revision);
                    break;
                }
                // Changed meanwhile: read again (gone: nothing to move).
                Err(StoreError::Conflict) => match store.get(&entry.key).await? {
                    Some(again) => entry = again,
                    None => break,
                },
                Err(e) => return Err(e.into()),
            }
        }
    }
    let record = match &recorded {
        Some(e) => Txn::new().expect(EDGE_ADDRESSES_KEY, e.mod_revision),
        None => Txn::new().expect(EDGE_ADDRESSES_KEY, 0),
    }
    .put(EDGE_ADDRESSES_KEY, addresses);
    match store.commit(record).await {
        // Another node of the fleet recorded them meanwhile.
        Ok(_) | Err(StoreError::Conflict) => {}
        Err(e) => return Err(e.into()),
    }
    if moved > 0 {
        tracing::info!(
            zones = moved,
            "the edge addresses changed: active zones' serials moved"
        );
    }
    Ok(last)
}

/// Opens the store and starts what runs on it: the account, the first admin token, the
/// snapshot watcher, activation and ACME; binds the upgrade socket. Taking over (`upgrading`),
/// it also waits for the served snapshot to have the store's state, so that the previous
/// process is told to stop only once this one can serve everything.
async fn start_control_plane(
    config: &Config,
    dns_journal: Option<&Arc<parapet_dns::Journal>>,
    upgrading: bool,
    has_env_token: bool,
    published: &Arc<Published>,
    last_good_path: &std::path::Path,
    acme_shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<ControlPlane> {
    let path = config.data_dir.join("store.redb");
    let releasable = Arc::new(ReleasableStore::new(
        open_store(&path, upgrading).await?,
        &path,
    ));
    let store: Arc<dyn Store> = Arc::clone(&releasable) as Arc<dyn Store>;
    let account = account(store.as_ref()).await?;

    if !has_env_token && !parapet_api::has_stored_tokens(store.as_ref()).await? {
        let (token, secret) = parapet_api::create_token(
            store.as_ref(),
            "admin (created on first start)",
            vec![parapet_model::Grant {
                permission: parapet_model::Permission::All,
                zones: parapet_model::ZoneScope::All,
            }],
        )
        .await?;
        say(&format!(
            "parapet: created an admin API token (id {}); it is shown only now:\nparapet: PARAPET_API_TOKEN={secret}",
            token.id
        ));
    }

    match move_serials_for_edge_addresses(store.as_ref(), config).await {
        // The index served from the last good snapshot answers with the new addresses under
        // the old serials: no secondary is sent a change from those.
        Ok(Some(moved)) => {
            if let Some(journal) = dns_journal {
                journal.forget_changes_before(moved);
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(
            "the edge addresses changed, and active zones' serials could not be moved: {e}"
        ),
    }
    tokio::spawn(run_snapshot_watcher(
        Arc::clone(&store),
        Arc::clone(published),
        Some(LastGood::new(last_good_path)),
    ));
    if upgrading {
        // The last good snapshot the previous process wrote has the store's state: normally
        // it is served already. A state that does not compile is served as the last good one.
        let revision = *store.revision_watch().borrow();
        let caught_up = tokio::time::timeout(UPGRADE_SNAPSHOT_WAIT, async {
            while published.load().revision < revision && published.rejected().is_empty() {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        })
        .await;
        if caught_up.is_err() {
            bail!(
                "the snapshot did not reach the store's revision {revision} within {UPGRADE_SNAPSHOT_WAIT:?}; the running parapet goes on serving"
            );
        }
    }
    let upgrade_socket = UpgradeSocket::bind(&config.data_dir)?;

    let mode = match config.activation {
        ActivationFlag::Auto => ActivationMode::Auto,
        ActivationFlag::Nameservers => ActivationMode::Nameservers {
            parent_ns: config.parent_ns,
        },
    };
    let activator = Arc::new(Activator::new(
        Arc::clone(&store),
        mode,
        config.activation_interval,
    ));
    tokio::spawn(Arc::clone(&activator).run_background());

    // Certificates for proxied names, when visitors can use HTTPS.
    if let (false, Some(directory)) = (config.https_listen.is_empty(), &config.acme_directory) {
        let mut acme = parapet_tls::acme::AcmeConfig::new(directory.clone());
        acme.ca_file = config.acme_ca_file.clone();
        acme.order_timeout = config.acme_order_timeout;
        acme.contact = config
            .acme_email
            .iter()
            .map(|e| format!("mailto:{e}"))
            .collect();
        let manager = parapet_tls::acme::AcmeManager::new(acme, store, Arc::clone(published));
        tokio::spawn(manager.run(acme_shutdown));
    }
    Ok(ControlPlane {
        store: releasable,
        account,
        activator,
        upgrade_socket,
    })
}

/// Every visitor connection is a file descriptor: use all the system allows this process
/// (the soft limit is often 1024; the hard limit much higher).
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!("cannot raise the open file limit: {e}");
        }
    }
}

/// A duration as the whole seconds an API setting shows (at least 1).
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}

/// Where distributions keep the system's root bundle (Debian and Ubuntu, Fedora and RHEL,
/// openSUSE, Alpine and BSDs).
const SYSTEM_ROOTS: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The roots origins' certificates are checked against in `strict` mode: the system's, the
/// Origin CA's and `origin_ca_file`'s, written as one bundle in the data directory. Returns
/// the bundle's path and its certificates (DER).
fn origin_trust(
    config: &Config,
    origin_ca: Option<&parapet_tls::certgen::Authority>,
) -> anyhow::Result<(String, Vec<Vec<u8>>)> {
    let system = SYSTEM_ROOTS
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok());
    if system.is_none() {
        tracing::warn!(
            "no system root bundle found ({}): strict mode accepts only origins with certificates from the Origin CA or origin_ca_file",
            SYSTEM_ROOTS.join(", ")
        );
    }
    let mut bundle = system.unwrap_or_default();
    let mut add = |pem: &str| {
        if !bundle.is_empty() && !bundle.ends_with('\n') {
            bundle.push('\n');
        }
        bundle.push_str(pem);
    };
    if let Some(ca) = origin_ca {
        add(&ca.cert_pem);
    }
    if let Some(extra) = &config.origin_ca_file {
        let extra_pem = std::fs::read_to_string(extra)
            .map_err(|e| anyhow::anyhow!("origin_ca_file {}: {e}", extra.display()))?;
        let count = parapet_tls::chain::count_certificates(&extra_pem)
            .map_err(|e| anyhow::anyhow!("origin_ca_file {}: {e}", extra.display()))?;
        if count == 0 {
            anyhow::bail!(
                "origin_ca_file {}: no PEM certificate in it",
                extra.display()
            );
        }
        add(&extra_pem);
    }
    if parapet_tls::chain::count_certificates(&bundle).unwrap_or(0) == 0 {
        anyhow::bail!(
            "no roots to check origins' certificates against: no system bundle and no origin_ca_file"
        );
    }
    let path = config.data_dir.join("origin-trust.pem");
    std::fs::write(&path, &bundle)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok((
        path.to_string_lossy().into_owned(),
        parapet_tls::chain::bundle_der(&bundle),
    ))
}

/// The Origin CA's common name.
const ORIGIN_CA_NAME: &str = "Parapet Origin CA";

/// Parapet's Origin CA: made in the data directory on first start, kept after.
fn origin_ca(config: &Config) -> anyhow::Result<parapet_tls::certgen::Authority> {
    let dir = config.data_dir.join("origin-ca");
    let (cert, key) = (dir.join("ca.pem"), dir.join("key.pem"));
    if cert.exists() && key.exists() {
        let read = |p: &PathBuf| {
            std::fs::read_to_string(p).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
        };
        return parapet_tls::certgen::Authority::load(ORIGIN_CA_NAME, &read(&cert)?, &read(&key)?)
            .map_err(|e| anyhow::anyhow!("Origin CA in {}: {e}", dir.display()));
    }
    let ca = parapet_tls::certgen::Authority::new(ORIGIN_CA_NAME, 5475)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
    write_private(&key, &ca.key_pem())?;
    std::fs::write(&cert, &ca.cert_pem)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", cert.display()))?;
    Ok(ca)
}

/// Writes a private key readable by its owner only.
fn write_private(path: &std::path::Path, pem: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    // A file there before keeps its mode on open: made the owner's alone before the key goes in.
    use std::os::unix::fs::PermissionsExt;
    file.set_permissions(std::fs::Permissions::from_mode(0o600))
        .map_err(|e| anyhow::anyhow!("restricting {}: {e}", path.display()))?;
    file.write_all(pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// The client certificate for Authenticated Origin Pulls: the configured one, or the one made
/// in the data directory on first start (with the CA origins should trust beside it).
fn origin_pull_identity(config: &Config) -> anyhow::Result<parapet_edge::tls::ClientIdentity> {
    let (cert_path, key_path) = match (&config.origin_pull_certificate, &config.origin_pull_key) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let dir = config.data_dir.join("origin-pull");
            let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
            if !cert.exists() || !key.exists() {
                let ca = parapet_tls::certgen::Authority::new("Parapet Origin Pull CA", 3650)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let client = ca
                    .issue(
                        &["origin-pull.parapet.invalid".to_owned()],
                        3650,
                        parapet_tls::certgen::Usage::Client,
                    )
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
                let write = |path: PathBuf, text: &str| {
                    std::fs::write(&path, text)
                        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
                };
                write(dir.join("ca.pem"), &ca.cert_pem)?;
                write_private(&key, &client.key_pem)?;
                write(cert.clone(), &client.cert_pem)?;
            }
            (cert, key)
        }
    };
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    };
    parapet_edge::tls::client_identity(&read(&cert_path)?, &read(&key_path)?).map_err(|e| {
        anyhow::anyhow!(
            "origin pull certificate {}: {}",
            cert_path.display(),
            e.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_written_over_a_readable_file_is_the_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "old").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        write_private(&path, "-----BEGIN PRIVATE KEY-----\n").expect("written");
        let mode = std::fs::metadata(&path)
            .expect("metadata")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "-----BEGIN PRIVATE KEY-----\n"
        );
    }
}
