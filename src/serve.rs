//! `parapet serve`: every role in one process, on the embedded store.

use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;
use parapet_activation::{ActivationMode, Activator};
use parapet_api::{ApiConfig, ApiState};
use parapet_dns::{
    DnsIndex, DnsServer, EdgeAddrs, Flattener, IndexHandle, Limits, RrlConfig, bind_udp_and_tcp,
    follow_snapshots, system_resolver,
};
use parapet_model::ids;
use parapet_snapshot::{LastGood, Published, run_snapshot_watcher};
use parapet_store::{RedbStore, Store, StoreError, Txn};
use serde::{Deserialize, Serialize};

use crate::config::{ActivationFlag, Config, is_local};

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

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
    tracing::info!("shutting down");
}

/// Binds every `--dns-listen` address (UDP and TCP) and serves DNS from the snapshot.
async fn start_dns(
    config: &Config,
    published: &Arc<Published>,
    flattener: &Arc<Flattener>,
) -> anyhow::Result<()> {
    if config.dns_listen.is_empty() {
        return Ok(());
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
    let server = Arc::new(DnsServer::new(
        Arc::clone(&index),
        Limits {
            max_udp_payload: config.dns_udp_payload,
        },
        RrlConfig {
            rate: config.dns_rrl_rate,
            slip: config.dns_rrl_slip,
        },
    ));
    for addr in &config.dns_listen {
        let workers = std::thread::available_parallelism().map_or(2, usize::from);
        let (udp, tcp) = bind_udp_and_tcp(*addr, workers).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr} (UDP and TCP) for DNS: {e}; choose another address with --dns-listen")
        })?;
        let bound = tcp.local_addr()?;
        server.spawn_udp(udp)?;
        let tcp = tokio::net::TcpListener::from_std(tcp)?;
        say(&format!("parapet: dns listening on {bound}"));
        server.spawn_tcp(tcp);
    }
    let (built, _) = DnsIndex::build(&published.load(), &edge, Some(flattener));
    index.store(Arc::new(built));
    tokio::spawn({
        let flattener = Arc::clone(flattener);
        async move { flattener.run().await }
    });
    tokio::spawn(follow_snapshots(
        Arc::clone(published),
        edge,
        index,
        Arc::clone(&server.journal),
        Arc::clone(flattener),
    ));
    Ok(())
}

pub async fn serve(config: Config, env_token: Option<String>) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating --data-dir {}", config.data_dir.display()))?;
    let store_path = config.data_dir.join("store.redb");
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&store_path).map_err(|e| {
        anyhow::anyhow!(
            "opening the store in --data-dir {}: {e} (is another parapet using it?)",
            config.data_dir.display()
        )
    })?);
    let account = account(store.as_ref()).await?;

    if env_token.is_none() && !parapet_api::has_stored_tokens(store.as_ref()).await? {
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

    let published = Arc::new(Published::new());
    tokio::spawn(run_snapshot_watcher(
        Arc::clone(&store),
        Arc::clone(&published),
        Some(LastGood::new(config.data_dir.join("snapshot.json"))),
    ));

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

    // One cache of outside names' addresses, for apex CNAME flattening and for edge origins.
    let resolver = Arc::new(Flattener::new(config.resolver.or_else(system_resolver)));
    start_dns(&config, &published, &resolver).await?;
    let mut metrics: Vec<parapet_api::MetricsSource> = Vec::new();
    let (edge_shutdown, edge_shutdown_rx) = tokio::sync::watch::channel(false);
    let edge = if config.http_listen.is_empty() {
        None
    } else {
        let mut proxy = parapet_edge::EdgeProxy::new(Arc::clone(&published));
        proxy.resolver = Some(Arc::clone(&resolver));
        let edge_metrics = Arc::clone(&proxy.metrics);
        metrics.push(Arc::new(move || edge_metrics.render()) as parapet_api::MetricsSource);
        proxy.connect_timeout = config.edge_connect_timeout;
        proxy.read_timeout = config.edge_read_timeout;
        proxy.max_body_bytes = config.edge_max_body_bytes;
        let listeners =
            parapet_edge::EdgeListeners::bind(&config.http_listen, parapet_edge::worker_count())
                .map_err(|e| anyhow::anyhow!("{e}; choose another address with --http-listen"))?;
        for addr in listeners.addrs() {
            say(&format!("parapet: http listening on {addr}"));
        }
        Some(parapet_edge::start_edge(proxy, listeners, edge_shutdown_rx))
    };
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

    let listener = match tokio::net::TcpListener::bind(config.api_listen).await {
        Ok(l) => l,
        Err(e) => bail!(
            "cannot listen on {} for the API: {e}; choose another address with --api-listen",
            config.api_listen
        ),
    };
    let local = listener.local_addr()?;
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
        },
        activator,
        published,
        metrics,
    });
    tracing::info!(data_dir = %config.data_dir.display(), "parapet started");
    say(&format!("parapet: api listening on http://{local}"));
    axum::serve(listener, parapet_api::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("API server")?;
    let _ = edge_shutdown.send(true);
    if let Some(task) = edge {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    Ok(())
}

/// A duration as the whole seconds an API setting shows (at least 1).
fn whole_seconds(d: std::time::Duration) -> u64 {
    d.as_secs_f64().ceil().max(1.0) as u64
}
