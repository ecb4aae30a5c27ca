//! The `parapet` binary: `serve` runs the edge; the other commands talk to a running one.

mod cli;
mod config;
mod serve;
mod upgrade;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: the data planes allocate per packet and per request from several threads, where
/// glibc's allocator spent a tenth of the edge's time.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "parapet",
    version,
    about = "A self-hostable edge: authoritative DNS, reverse proxy, cache and shield, driven by a Cloudflare-compatible API",
    after_help = "Environment:\n  PARAPET_API_TOKEN  serve: the administrator token it takes (else it makes one on first start);\n                     zone, record, token: the token they send\n  PARAPET_API        zone, record, token: the API's base URL (as --api)\n  PARAPET_LOG        log filter, e.g. warn or parapet=debug (default info)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run Parapet on the embedded store: the API, and DNS and the edge on the addresses given.
    Serve(config::ServeFlags),
    /// Check a configuration file and print the resolved configuration.
    CheckConfig(config::ServeFlags),
    /// Manage zones through a running server's API.
    Zone {
        #[command(flatten)]
        api: cli::ApiArgs,
        #[command(subcommand)]
        command: cli::ZoneCommand,
    },
    /// Manage DNS records through a running server's API.
    Record {
        #[command(flatten)]
        api: cli::ApiArgs,
        #[command(subcommand)]
        command: cli::RecordCommand,
    },
    /// Manage API tokens through a running server's API.
    Token {
        #[command(flatten)]
        api: cli::ApiArgs,
        #[command(subcommand)]
        command: cli::TokenCommand,
    },
}

/// Logs go to standard error: the edge's access log (`parapet::access`) as bare JSON lines, one
/// per request, without colour, time or level; everything else as usual. `PARAPET_LOG` filters
/// both (default `info`, which includes the access log).
fn init_logs() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    const ACCESS: &str = "parapet::access";
    // A PARAPET_LOG that cannot be read is said, once logging works.
    let (filter, unread) = match std::env::var("PARAPET_LOG") {
        Ok(v) if !v.is_empty() => match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(f) => (f, None),
            Err(e) => (
                "info".into(),
                Some(format!(
                    "PARAPET_LOG='{v}' is not a log filter ({e}); logging at info"
                )),
            ),
        },
        _ => ("info".into(), None),
    };
    // Colour only for a terminal: a log file or a pipe gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let diagnostics = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() != ACCESS
        }));
    let access = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| {
            m.target() == ACCESS
        }));
    tracing_subscriber::registry()
        .with(filter)
        .with(diagnostics)
        .with(access)
        .init();
    if let Some(unread) = unread {
        tracing::warn!("{unread}");
    }
}

/// A `PARAPET_API_TOKEN` no request could carry is refused (nobody could use the API, and no
/// first token would be made); a short one is taken, with a warning.
fn check_env_token(token: &str) -> anyhow::Result<()> {
    if !parapet_api::plausible_secret(token) {
        anyhow::bail!(
            "PARAPET_API_TOKEN must be at most 256 letters, digits, '-', '_' or '.': no request could carry this one"
        );
    }
    if token.len() < 16 {
        eprintln!(
            "parapet: warning: PARAPET_API_TOKEN has {} characters; anyone who guesses it has every right (use 32 or more)",
            token.len()
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logs();
    let result = match cli.command {
        Command::Serve(flags) => config::load(&flags).and_then(|config| {
            let env_token = std::env::var("PARAPET_API_TOKEN")
                .ok()
                .filter(|t| !t.is_empty());
            if let Some(token) = &env_token {
                check_env_token(token)?;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)?;
            let served = runtime.block_on(serve::serve(config, env_token, flags.upgrade));
            // Work still blocking a thread (a store write, a lookup) gets a bounded time: the
            // process stops promptly once told to.
            runtime.shutdown_timeout(std::time::Duration::from_secs(2));
            served
        }),
        Command::CheckConfig(flags) => config::load(&flags).map(|c| {
            // As a file `serve --config` reads back; secrets are not printed, only how many
            // there are.
            let source = flags
                .config
                .as_ref()
                .map_or_else(|| "the flags".to_owned(), |p| p.display().to_string());
            let mut text = format!(
                "# {source}: valid. The settings in effect, flags and defaults included:\n{}",
                c.effective_toml()
            );
            text.push_str(&format!(
                "# dns_cookie_secrets: {} given (not shown)\n",
                c.dns_cookie_secrets.len()
            ));
            for (zone, rules) in &c.cache_rules {
                text.push_str(&format!(
                    "# cache_rules: {} for zone {zone} (as in the file)\n",
                    rules.len()
                ));
            }
            cli::out(&text);
        }),
        Command::Zone { api, command } => cli::zone(&api, command),
        Command::Record { api, command } => cli::record(&api, command),
        Command::Token { api, command } => cli::token(&api, command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("parapet: {e:#}");
            ExitCode::from(2)
        }
    }
}
