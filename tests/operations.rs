//! What operators see (docs/operations.md): `/health` and `/health/ready` with real dependencies
//! up, down and absent, and while shutting down; the per-source-kind counts and delivery rates
//! of `/v1/stats` after a known workload; and the binary's JSON log lines, every one of a
//! connection's carrying its session id. Real PostgreSQL, RabbitMQ and Kafka (tansu).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use feedgate::protocol::pb;
use feedgate::version::{COMMIT, VERSION};
use serde_json::Value;
use support::db::{config_for, table_feed, wait_connected, TestDb};
use support::rabbit::wait_rabbit_connected;
use support::tokens::{hello, now, SECRET};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `path` as JSON, with its status code.
async fn get_json(addr: SocketAddr, path: &str) -> (u16, Value) {
    let (status, body) = http_get(addr, path).await;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    (status, json)
}

/// Checks the fields every health report has, and returns its `dependencies`.
fn dependencies(report: &Value) -> &Value {
    assert!(report["uptime_seconds"].is_u64(), "{report}");
    assert_eq!(report["version"], VERSION);
    assert_eq!(report["commit"], COMMIT);
    &report["dependencies"]
}

/// An address where nothing listens (bound, then released).
fn closed_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

#[tokio::test]
async fn ready_is_200_when_every_configured_dependency_is_up() {
    let db = TestDb::new().await;
    let exchange = support::rabbit::exchange();
    let mut config = config_for(&db);
    config.rabbitmq = support::rabbit::config(&exchange).rabbitmq;
    config.kafka = support::kafka::config().kafka;
    let server = start_with(config).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    wait_rabbit_connected(addr).await;

    let (status, report) = get_json(addr, "/health/ready").await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["status"], "ok");
    let deps = dependencies(&report);
    assert_eq!(deps["postgres"], "ok");
    assert_eq!(deps["rabbitmq"], "ok");
    assert_eq!(deps["kafka"], "ok");
    let (status, live) = get_json(addr, "/health").await;
    assert_eq!(status, 200);
    assert_eq!(live["status"], "ok");
    assert_eq!(live["dependencies"], report["dependencies"]);

    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn ready_is_503_naming_a_configured_dependency_that_is_down_and_liveness_stays_200() {
    let mut config = test_config();
    config.database_url = Some(format!("postgres://postgres@{}/postgres", closed_port()));
    let mut rabbit = support::rabbit::config(&support::rabbit::exchange())
        .rabbitmq
        .expect("a rabbitmq config");
    rabbit.url = format!("amqp://guest:guest@{}/%2f", closed_port());
    config.rabbitmq = Some(rabbit);
    let server = start_with(config).await;
    let addr = server.local_addr();

    let (status, report) = get_json(addr, "/health/ready").await;
    assert_eq!(status, 503, "{report}");
    assert_eq!(report["status"], "degraded");
    let deps = dependencies(&report);
    assert_eq!(deps["postgres"], "unavailable");
    assert_eq!(deps["rabbitmq"], "unavailable");
    assert_eq!(deps["kafka"], "not_configured");
    let (status, live) = get_json(addr, "/health").await;
    assert_eq!(status, 200, "the process serves: {live}");
    assert_eq!(live["status"], "degraded");
    // The rest of the server works meanwhile.
    let mut client = Client::connect(addr).await;
    client.subscribe_topic(1, "local.ok").await;

    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn absent_dependencies_are_not_configured_and_do_not_hold_readiness() {
    let server = start().await;
    let (status, report) = get_json(server.local_addr(), "/health/ready").await;
    assert_eq!(status, 200, "{report}");
    let deps = dependencies(&report);
    for dependency in ["postgres", "kafka", "rabbitmq"] {
        assert_eq!(deps[dependency], "not_configured");
    }
    server.shutdown().await.expect("shutdown");
}

/// Once shutdown begins the listener closes, so the only requests still answered are those on a
/// connection already open. One whose head has begun to arrive is answered (hyper finishes a
/// request it is reading and then closes): the test sends half a request, starts shutdown, and
/// sends the rest.
#[tokio::test]
async fn both_endpoints_answer_503_once_shutdown_has_begun() {
    for path in ["/health/ready", "/health"] {
        let server = start().await;
        let addr = server.local_addr();
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        tcp.write_all(head.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let stopping = tokio::spawn(server.shutdown());
        tokio::time::sleep(Duration::from_millis(100)).await;
        tcp.write_all(b"Connection: close\r\n\r\n")
            .await
            .expect("write");
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.expect("read");
        assert!(response.starts_with("HTTP/1.1 503"), "{path}: {response}");
        let body = response.split_once("\r\n\r\n").expect("a body").1;
        let report: Value = serde_json::from_str(body).expect("json");
        assert_eq!(report["status"], "shutting_down");
        stopping.await.expect("join").expect("clean shutdown");
    }
}

/// A kind's field in `/v1/stats`'s `sources`.
fn kind(stats: &Value, kind: &str, field: &str) -> u64 {
    stats["sources"][kind][field]
        .as_u64()
        .unwrap_or_else(|| panic!("sources.{kind}.{field} in {stats}"))
}

#[tokio::test]
async fn stats_count_subscriptions_and_deliveries_per_source_kind() {
    let db = TestDb::new().await;
    db.execute("CREATE TABLE public.items (id bigint PRIMARY KEY, name text)")
        .await;
    let mut config = config_for(&db);
    config.watch = vec!["public.items".into()];
    let server = start_with(config).await;
    let addr = server.local_addr();
    wait_connected(addr).await;

    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    let mut publisher = Client::connect(addr).await;
    a.subscribe_topic(1, "prices").await;
    b.subscribe_topic(1, "prices").await;
    a.subscribed_then_ready(table_feed(2, "public.items", false))
        .await;
    let stats = stats(addr).await;
    assert_eq!(kind(&stats, "memory", "subscriptions"), 2, "{stats}");
    assert_eq!(kind(&stats, "table", "subscriptions"), 1);
    assert_eq!(kind(&stats, "kafka", "subscriptions"), 0);
    assert_eq!(kind(&stats, "rabbitmq", "subscriptions"), 0);
    assert_eq!(stats["subscriptions"], 3, "the total stays");
    assert_eq!(stats["rate_window_seconds"], 10);

    // 5 messages to 2 subscribers, and 3 rows to 1.
    for i in 0..5 {
        publisher.publish("prices", format!("{i}").as_bytes()).await;
    }
    for _ in 0..5 {
        a.recv_message(1).await;
        b.recv_message(1).await;
    }
    db.execute("INSERT INTO public.items VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await;
    for _ in 0..3 {
        let event = a.recv_event().await;
        assert_eq!(event.subscription_id, 2);
        assert!(matches!(event.body, Some(pb::event::Body::Change(_))));
    }
    let stats = wait_for_stats(addr, "10 topic and 3 table deliveries", |s| {
        s["sources"]["memory"]["delivered"] == 10 && s["sources"]["table"]["delivered"] == 3
    })
    .await;
    assert_eq!(stats["delivered"], 13);
    // The server is younger than the window, so its rates are since start: above zero.
    let rate = |s: &Value, k: &str| s["sources"][k]["delivered_per_second"].as_f64();
    assert!(rate(&stats, "memory") > Some(0.0), "{stats}");
    assert!(rate(&stats, "table") > Some(0.0), "{stats}");
    assert_eq!(rate(&stats, "kafka"), Some(0.0));
    assert!(stats["delivered_per_second"].as_f64() > Some(0.0));

    b.request(unsubscribe(1)).await;
    wait_for_stats(addr, "one topic subscription left", |s| {
        s["sources"]["memory"]["subscriptions"] == 1
    })
    .await;
    a.close().await;
    wait_for_stats(addr, "no subscriptions left", |s| s["subscriptions"] == 0).await;
    let stats = support::stats(addr).await;
    assert_eq!(
        stats["delivered"], 13,
        "totals stay after subscribers leave"
    );

    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// The binary with `--log-format json`: every line on stderr (and stdout) is one JSON object with
/// timestamp, level, target and message, and a connection's lines carry its session id (the one
/// `Welcome` names), and its user and tenant once it authenticated; never its token.
#[tokio::test]
async fn json_logs_are_one_object_per_line_and_carry_the_session() {
    let addr = closed_port();
    let mut child = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--log-format",
            "json",
        ])
        .env("FEEDGATE_HS256_SECRET", SECRET)
        .env("FEEDGATE_LOG", "info,feedgate=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn feedgate");
    let readers = [
        lines(child.stdout.take().expect("stdout")),
        lines(child.stderr.take().expect("stderr")),
    ];
    let mut child = Reaped(Some(child));
    listening(addr).await;

    let claims = serde_json::json!({"sub": "alice", "tenant_id": "acme", "exp": now() + 600});
    let token = support::tokens::sign(jsonwebtoken::Algorithm::HS256, None, &claims);
    let mut client = Client::connect(addr).await;
    let Some(pb::response::Result::Welcome(welcome)) = client.request(hello(&token)).await.result
    else {
        panic!("expected Welcome");
    };
    client.subscribe_topic(1, "greetings").await;
    // Its own message and the answer to its publish, in either order.
    client.send(publish("greetings", b"hi")).await;
    for _ in 0..2 {
        match client.recv().await.expect("a message") {
            Received::Response(r) => assert!(
                matches!(r.result, Some(pb::response::Result::Published(_))),
                "{r:?}"
            ),
            Received::Event(e) => assert_eq!(e.subscription_id, 1),
            Received::Close(close) => panic!("closed: {close:?}"),
        }
    }
    client.close().await;
    // The session ends (and says so) before shutdown is done with it.
    let mut child = child.0.take().expect("running");
    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
    let [stdout, stderr] = readers.map(|reader| reader.join().expect("reader thread"));
    assert!(stdout.is_empty(), "logs go to stderr: {stdout:?}");

    let mut session_messages = Vec::new();
    for line in &stderr {
        assert!(!line.contains(&token) && !line.contains(SECRET), "{line}");
        let json: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for field in ["timestamp", "level", "target", "message"] {
            assert!(json[field].is_string(), "no {field}: {line}");
        }
        let span = &json["span"];
        if span["session_id"] == welcome.session_id.as_str() {
            assert_eq!(span["name"], "session", "{line}");
            let message = json["message"].as_str().unwrap_or_default().to_owned();
            if message != "session started" && message != "hello" {
                assert_eq!(span["user"], "alice", "{line}");
                assert_eq!(span["tenant"], "acme", "{line}");
            }
            session_messages.push(message);
        }
    }
    for expected in [
        "session started",
        "hello",
        "authenticated",
        "subscribed",
        "session ended",
    ] {
        assert!(
            session_messages.iter().any(|m| m == expected),
            "no {expected:?} line with the session id; the session's lines: {session_messages:?}\n\
             all lines: {stderr:#?}"
        );
    }
    let listening_line = stderr
        .iter()
        .find(|line| line.contains("\"listening\""))
        .expect("a listening line");
    let listening_line: Value = serde_json::from_str(listening_line).expect("json");
    assert_eq!(listening_line["commit"], COMMIT);
    assert_eq!(listening_line["version"], VERSION);
}

/// A server whose stderr reader has gone (a log collector that died) still stops on SIGTERM
/// and exits 0: a log line it cannot write is dropped, not reported with a panic that would take
/// the signal task with it before shutdown starts.
#[tokio::test]
async fn sigterm_stops_the_server_after_its_stderr_reader_has_gone() {
    let addr = closed_port();
    let mut child = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve", "--listen", &addr.to_string(), "--allow-anonymous"])
        .env("FEEDGATE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn feedgate");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let mut child = Reaped(Some(child));
    let first = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        stderr.read_line(&mut line).map(|_| line)
    });
    let first = first.await.expect("join").expect("a first log line");
    assert!(!first.is_empty(), "feedgate logs at start");
    listening(addr).await; // the reader is dropped: nobody reads stderr any more

    let mut child = child.0.take().expect("running");
    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("try_wait") {
            break exit;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("still running 15 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit:?}");
}

/// A child process killed if the test fails before it stops it.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Collects a child's output lines on a thread until it closes.
fn lines(output: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || {
        BufReader::new(output)
            .lines()
            .map_while(Result::ok)
            .collect()
    })
}

async fn listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("feedgate never listened on {addr}");
}
