//! The systems under test, as child processes on free loopback ports: feedgate (the release
//! binary cargo built for this bench), nats-server with its WebSocket listener, and the Python
//! peer (FastAPI + uvicorn + asyncpg, `bench/peers/python`). Each is killed when dropped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The wire protocol a system speaks; the load generator has a client for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Feedgate,
    Nats,
    Python,
}

impl Proto {
    pub fn name(self) -> &'static str {
        match self {
            Proto::Feedgate => "feedgate",
            Proto::Nats => "nats",
            Proto::Python => "python",
        }
    }
}

/// A column of the results: a system as it ran. feedgate appears twice when a scenario compares
/// it with one of its features switched off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Feedgate,
    /// feedgate with `changefeed.filter_index = false`: every subscriber's filter is asked about
    /// every change (the `filtered` scenario's comparison).
    FeedgateNoIndex,
    Nats,
    Python,
}

impl System {
    /// Every column, in the table's order.
    pub const ALL: [System; 4] = [
        System::Feedgate,
        System::FeedgateNoIndex,
        System::Nats,
        System::Python,
    ];

    pub fn name(self) -> &'static str {
        match self {
            System::Feedgate => "feedgate",
            System::FeedgateNoIndex => "feedgate, no index",
            System::Nats => "nats",
            System::Python => "python",
        }
    }
}

/// A running system.
pub struct Running {
    pub proto: Proto,
    /// Its column in the results.
    pub system: System,
    /// The WebSocket URL clients connect to.
    pub url: String,
    child: Child,
    _dir: Option<tempfile::TempDir>,
}

impl Running {
    /// Resident set size of the server process, in KiB.
    pub fn rss_kib(&self) -> Result<u64> {
        self.status_kib("VmRSS:")
    }

    /// The process's peak resident set size so far, in KiB.
    pub fn peak_rss_kib(&self) -> Result<u64> {
        self.status_kib("VmHWM:")
    }

    /// CPU time the server process has used (user + system), in seconds.
    pub fn cpu_seconds(&self) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))?;
        // Fields after the command name (which may hold spaces) start at state, field 3.
        let rest = stat.rsplit_once(')').context("malformed stat")?.1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks =
            |i: usize| -> Result<f64> { Ok(fields.get(i).context("short stat")?.parse::<f64>()?) };
        // utime and stime are fields 14 and 15: indexes 11 and 12 after the name; 100 ticks/s.
        Ok((ticks(11)? + ticks(12)?) / 100.0)
    }

    fn status_kib(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .with_context(|| format!("no {field}"))
    }
}

impl Drop for Running {
    /// Stops the system as an operator would (SIGTERM), so that it cleans up after itself
    /// (feedgate removes its change-log reader, which would otherwise hold back pruning for
    /// the next run); killed when it has not exited after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn wait_listening(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited with {status} before listening");
        }
        if Instant::now() > deadline {
            bail!("{what} is not listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn quiet(command: &mut Command) -> &mut Command {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
}

/// feedgate, with the database when given (its changefeed reader connected before returning).
pub fn feedgate(database_url: Option<&str>) -> Result<Running> {
    feedgate_with(database_url, None)
}

/// feedgate with its changefeed's filter index on or off (`changefeed.filter_index`, given in
/// a configuration file either way), in the column of that name.
pub fn feedgate_filter_index(database_url: &str, on: bool) -> Result<Running> {
    let toml = format!("[changefeed]\nfilter_index = {on}\n");
    let mut running = feedgate_with(Some(database_url), Some(&toml))?;
    if !on {
        running.system = System::FeedgateNoIndex;
    }
    Ok(running)
}

/// feedgate with a configuration file of this TOML (topic routing, brokers).
pub fn feedgate_with(database_url: Option<&str>, toml: Option<&str>) -> Result<Running> {
    let port = free_port()?;
    let mut command = Command::new(env!("CARGO_BIN_EXE_feedgate"));
    command.args(["serve", "--listen", &format!("127.0.0.1:{port}")]);
    let dir = match toml {
        Some(toml) => {
            let dir = tempfile::tempdir()?;
            std::fs::write(dir.path().join("feedgate.toml"), toml)?;
            command
                .arg("--config")
                .arg(dir.path().join("feedgate.toml"));
            Some(dir)
        }
        None => None,
    };
    // As deep a queue per connection as the peers have (the Python peer's 10,000; NATS's 64 MB).
    command.args(["--outbound-queue", "10000", "--max-subscriptions", "1000"]);
    // Open like the peers: no tokens, no request rate limit, connections up to the fd limit.
    command.args(["--allow-anonymous", "--requests-per-second", "0"]);
    command.args(["--max-connections", "100000"]);
    if let Some(url) = database_url {
        command.args(["--database-url", url]);
    }
    let mut child = quiet(&mut command).env("FEEDGATE_LOG", "warn").spawn()?;
    wait_listening(port, &mut child, "feedgate")?;
    let running = Running {
        proto: Proto::Feedgate,
        system: System::Feedgate,
        url: format!("ws://127.0.0.1:{port}/v1/ws"),
        child,
        _dir: dir,
    };
    if database_url.is_some() {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let stats = http_get(port, "/v1/stats").unwrap_or_default();
            if stats.contains("\"database\":\"connected\"") {
                break;
            }
            if Instant::now() > deadline {
                bail!("feedgate's changefeed reader did not connect");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(running)
}

fn http_get(port: u16, path: &str) -> Result<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body.replace([' ', '\n'], ""))
}

/// nats-server (Debian's package) with a WebSocket listener and nothing else enabled.
pub fn nats() -> Result<Running> {
    let (port, ws_port) = (free_port()?, free_port()?);
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("nats.conf");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nwebsocket {{\n  listen: \"127.0.0.1:{ws_port}\"\n  no_tls: true\n  compression: false\n}}\n"
        ),
    )?;
    let bin = std::env::var("NATS_SERVER").unwrap_or_else(|_| "nats-server".into());
    let mut child = quiet(Command::new(&bin).arg("-c").arg(&config))
        .spawn()
        .with_context(|| format!("cannot run {bin} (apt-get install nats-server)"))?;
    wait_listening(ws_port, &mut child, "nats-server")?;
    Ok(Running {
        proto: Proto::Nats,
        system: System::Nats,
        url: format!("ws://127.0.0.1:{ws_port}"),
        child,
        _dir: Some(dir),
    })
}

/// The Python peer under uvicorn (one worker process, uvloop), with the interpreter of the
/// virtualenv `bench/run` made (`$FEEDGATE_BENCH_PYTHON`).
pub fn python(database_url: &str) -> Result<Running> {
    let port = free_port()?;
    let python = std::env::var("FEEDGATE_BENCH_PYTHON")
        .context("FEEDGATE_BENCH_PYTHON is not set: run the benchmark with bench/run")?;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bench/peers/python");
    let mut command = Command::new(&python);
    command
        .current_dir(&dir)
        .args(["-m", "uvicorn", "server:app", "--host", "127.0.0.1"])
        .args(["--port", &port.to_string(), "--log-level", "warning"])
        .args(["--ws-max-size", "1048576"])
        .env("DATABASE_URL", database_url);
    let mut child = quiet(&mut command)
        .spawn()
        .with_context(|| format!("cannot run {python} (bench/run makes that virtualenv)"))?;
    wait_listening(port, &mut child, "the Python peer")?;
    Ok(Running {
        proto: Proto::Python,
        system: System::Python,
        url: format!("ws://127.0.0.1:{port}/ws"),
        child,
        _dir: None,
    })
}
