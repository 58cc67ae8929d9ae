//! The `feedgate` command: parse arguments, load configuration, start logging (text or JSON, as
//! configured), run the server until SIGINT/SIGTERM, and map failures to exit codes (2: bad
//! configuration, 1: runtime). A configuration error is printed as plain text: logging, whose
//! format is part of the configuration, has not started yet.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use feedgate::app::Server;
use feedgate::changefeed::{Changefeed, ChangefeedSettings};
use feedgate::config::{Config, LogFormat, Overrides};
use tokio::signal::unix::{signal, Signal, SignalKind};
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
///
/// A line that cannot be written (stderr's reader has gone) is dropped: tracing-subscriber
/// would otherwise report it with `eprintln!`, which panics on that same closed stderr and takes
/// the logging task with it (the signal task, say, before it starts shutdown).
fn start_logging(format: LogFormat) {
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
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
    // Before the server starts: a SIGTERM as soon as the port is open must stop it cleanly, not
    // kill it by the signal's default action.
    let signalled = shutdown_signal();
    let server = Server::start(config).await?;
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        signalled.await;
        shutdown.cancel();
        info!("shutdown signal received");
    });
    server.wait().await?;
    Ok(())
}

/// Resolves at the first SIGINT or SIGTERM. The handlers are installed now, not when the
/// future is first polled; one that cannot be installed is left out (its signal keeps its
/// default action).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let mut interrupt = signal(SignalKind::interrupt()).ok();
    let mut terminate = signal(SignalKind::terminate()).ok();
    async move {
        tokio::select! {
            () = received(interrupt.as_mut()) => {}
            () = received(terminate.as_mut()) => {}
        }
    }
}

/// Resolves when `signal` arrives; never without a handler.
async fn received(signal: Option<&mut Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
