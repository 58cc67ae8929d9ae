//! The `feedgate` command: parse arguments, load configuration, start logging (text or JSON, as
//! configured), run the server until SIGINT/SIGTERM, and map failures to exit codes (2: bad
//! configuration, 1: runtime). A configuration error is printed as plain text: logging, whose
//! format is part of the configuration, has not started yet.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use feedgate::app::Server;
use feedgate::changefeed::{Changefeed, ChangefeedSettings};
use feedgate::config::{Config, LogFormat, Overrides};
use tracing::info;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "feedgate",
    version = feedgate::version::LONG,
    about = "A subscription server over one WebSocket"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (settings: --config file, FEEDGATE_* variables, flags; flags win).
    Serve(Overrides),
    /// Apply feedgate's migrations to the database and watch the configured tables, then exit.
    Migrate(Overrides),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (overrides, migrate_only) = match cli.command {
        Command::Serve(overrides) => (overrides, false),
        Command::Migrate(overrides) => (overrides, true),
    };
    let config = match Config::load(&overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("feedgate: {err}");
            return ExitCode::from(2);
        }
    };
    start_logging(config.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("feedgate: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = if migrate_only {
        runtime.block_on(migrate(config))
    } else {
        runtime.block_on(serve(config))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("feedgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr, filtered by `FEEDGATE_LOG` (default `info,sqlx=warn`). JSON lines carry the
/// event's fields at the top level (`message` among them) and the span it happened in as
/// `span` (a connection's `session_id`, `connection`, `user`, `tenant`).
fn start_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_env("FEEDGATE_LOG")
                .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn")),
        );
    match format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

async fn migrate(config: Config) -> anyhow::Result<()> {
    let Some(url) = &config.database_url else {
        anyhow::bail!("migrate needs a database: set --database-url or FEEDGATE_DATABASE_URL");
    };
    let settings = ChangefeedSettings::new(url, config.watch.clone(), config.changefeed.clone())?;
    let watched = Changefeed::migrate(&settings).await?;
    info!(watched = ?watched, "migrations applied");
    Ok(())
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let server = Server::start(config).await?;
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        info!("shutdown signal received");
        shutdown.cancel();
    });
    server.wait().await?;
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
