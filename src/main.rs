//! The `feedgate` command: parse arguments, load configuration, start logging (text or JSON, as
//! configured), run the server until SIGINT/SIGTERM, and map failures to exit codes (2: bad
//! configuration, 1: runtime). A configuration error is printed as plain text: logging, whose
//! format is part of the configuration, has not started yet.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use feedgate::app::Server;
use feedgate::changefeed::{uninstall, Changefeed, ChangefeedSettings};
use feedgate::config::{Config, ConfigError, LogFormat, Overrides};
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
    /// Remove feedgate from the database: its replication slot, publication, triggers, replica
    /// identities and schema. Without --yes, print what would be removed and change nothing.
    Uninstall(UninstallArgs),
}

#[derive(Debug, clap::Args)]
struct UninstallArgs {
    /// Remove (without it: only say what would be removed).
    #[arg(long)]
    yes: bool,
    /// With --yes: terminate the replication connection of a node that leads capture instead
    /// of refusing (the node keeps running without feedgate's schema: stop it).
    #[arg(long)]
    force: bool,
    /// TOML configuration file (read for `database_url` and `changefeed.slot`; the server's
    /// other settings are not checked).
    #[arg(long, env = "FEEDGATE_CONFIG", value_name = "PATH")]
    config: Option<PathBuf>,
    /// PostgreSQL URL of the database to remove feedgate from.
    #[arg(
        long,
        env = "FEEDGATE_DATABASE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    database_url: Option<String>,
}

/// What the command does once the configuration is loaded.
enum Action {
    Serve,
    Migrate,
    Uninstall { yes: bool, force: bool },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (config, action) = match load(cli.command) {
        Ok(loaded) => loaded,
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
    let result = match action {
        Action::Serve => runtime.block_on(serve(config)),
        Action::Migrate => runtime.block_on(migrate(config)),
        Action::Uninstall { yes, force } => runtime.block_on(uninstall(config, yes, force)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("feedgate: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration and what to do with it. `uninstall` reads only the file and the database
/// URL: it needs no listener or authentication settings.
fn load(command: Command) -> Result<(Config, Action), ConfigError> {
    match command {
        Command::Serve(overrides) => Ok((Config::load(&overrides)?, Action::Serve)),
        Command::Migrate(overrides) => Ok((Config::load(&overrides)?, Action::Migrate)),
        Command::Uninstall(args) => {
            let mut config = match &args.config {
                Some(path) => Config::from_file(path)?,
                None => Config::default(),
            };
            if args.database_url.is_some() {
                config.database_url = args.database_url;
            }
            let action = Action::Uninstall {
                yes: args.yes,
                force: args.force,
            };
            Ok((config, action))
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

/// Prints what feedgate has in the database and, with `yes`, removes it (see
/// `changefeed::uninstall`).
async fn uninstall(config: Config, yes: bool, force: bool) -> anyhow::Result<()> {
    let Some(url) = &config.database_url else {
        anyhow::bail!("uninstall needs a database: set --database-url or FEEDGATE_DATABASE_URL");
    };
    let settings = ChangefeedSettings::new(url, Vec::new(), config.changefeed.clone())?;
    let plan = if yes {
        uninstall::remove(&settings, force).await?
    } else {
        uninstall::inspect(&settings).await?
    };
    if plan.is_empty() {
        println!(
            "feedgate uninstall: nothing to remove in database {}",
            plan.database
        );
        return Ok(());
    }
    let heading = if yes {
        "done"
    } else {
        "dry run: nothing changed; --yes does it"
    };
    print!(
        "feedgate uninstall, database {} ({heading}):\n{}",
        plan.database,
        plan.report(yes)
    );
    if !yes && !plan.leaders.0.is_empty() {
        println!(
            "  but a node leads capture now ({}): --yes refuses while it does; stop the nodes \
             first, or add --force to terminate its replication connection",
            plan.leaders
        );
    }
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
