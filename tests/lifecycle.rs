//! Connection lifecycle: idle timeout, slow consumers, graceful shutdown, and the `feedgate`
//! binary's start-up, configuration errors and signal handling.

mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command as Process, Stdio};
use std::time::Duration;

use support::raw::RawClient;
use support::*;

#[tokio::test]
async fn a_silent_client_is_closed_after_the_idle_timeout_and_a_live_one_is_not() {
    let mut config = test_config();
    config.websocket.ping_interval = Duration::from_millis(200);
    config.websocket.idle_timeout = Duration::from_secs(2);
    let idle_timeout = config.websocket.idle_timeout;
    let server = start_with(config).await;
    let addr = server.local_addr();

    // A client that keeps reading answers the server's pings (tungstenite does so on read); it
    // reads until told to stop, and nothing but pings may arrive meanwhile.
    let started = tokio::time::Instant::now();
    let mut live = Client::connect(addr).await;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let live_task = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                received = live.recv() => match received {
                    Err(err) if err.is::<tokio::time::error::Elapsed>() => continue,
                    other => panic!("the live client got {other:?}"),
                },
            }
        }
        live.barrier().await;
        live
    });
    // A client that reads but never answers a ping is closed with 4000, not before its time.
    let mut silent = RawClient::connect(addr).await;
    let (code, reason) = silent.close_frame().await.expect("a close frame");
    assert_eq!(code, 4000, "{reason}");
    assert!(reason.starts_with("IDLE_TIMEOUT"), "{reason}");
    assert!(started.elapsed() >= idle_timeout, "closed early");
    // The live client, older than the silent one, stays for another idle timeout.
    tokio::time::sleep(idle_timeout).await;
    stop.send(()).expect("the live client is still reading");
    live_task.await.expect("live client kept working");
}

/// A slow client and a fast one subscribe to a firehose of 400 messages of 64 KiB; the slow one
/// reads nothing until the end. Returns the slow client's close code and reason, and how many
/// messages it received first (a gapless prefix). The fast one must get everything in order.
async fn slow_consumer(config: feedgate::config::Config) -> (u16, String, u32) {
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut slow = Client::connect(addr).await;
    slow.subscribe_topic(1, "firehose").await;
    let mut fast = Client::connect(addr).await;
    fast.subscribe_topic(2, "firehose").await;

    // The fast client reads concurrently; the slow one reads nothing until the end.
    let total = 400u32;
    let fast_task = tokio::spawn(async move {
        let mut offsets = Vec::new();
        for n in 0..total {
            let message = fast.recv_message(2).await;
            assert_eq!(&message.payload[..4], &n.to_be_bytes());
            offsets.push(message.offset);
        }
        (fast, offsets)
    });
    let mut publisher = Client::connect(addr).await;
    let payload = vec![0x5a; 64 * 1024];
    for n in 0..total {
        let mut body = n.to_be_bytes().to_vec();
        body.extend_from_slice(&payload);
        publisher.publish("firehose", &body).await;
    }
    let (fast, offsets) = fast_task
        .await
        .expect("fast client got every message in order");
    assert_eq!(offsets.len(), total as usize);

    // The slow client now reads: a gapless prefix of the stream, then its close.
    let mut expected = 0u32;
    let (code, reason) = loop {
        match slow.recv().await.expect("message or close") {
            Received::Event(event) => {
                let Some(feedgate::protocol::pb::event::Body::Message(message)) = event.body else {
                    panic!("unexpected event {event:?}");
                };
                assert_eq!(&message.payload[..4], &expected.to_be_bytes(), "no gaps");
                expected += 1;
            }
            Received::Close(Some(close)) => break close,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert!(
        expected < total,
        "the slow client could not have received everything"
    );
    // The slow client's subscription is gone; the fast one's is not.
    wait_for_stat(addr, "subscriptions", 1).await;
    drop(fast);
    (code, reason, expected)
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer_and_others_get_everything() {
    let mut config = test_config();
    config.limits.outbound_queue = 32;
    let (code, reason, _) = slow_consumer(config).await;
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.starts_with("SLOW_CONSUMER"), "{reason}");
}

#[tokio::test]
async fn the_outbound_queue_is_bounded_in_bytes_not_only_in_messages() {
    // 1,024 messages would hold all 400 (26 MB): only the byte bound can close the slow client.
    let mut config = test_config();
    config.limits.outbound_queue = 1024;
    config.limits.outbound_queue_bytes = 256 * 1024;
    let (code, reason, received) = slow_consumer(config).await;
    assert_eq!(code, 4008, "{reason}");
    assert!(reason.contains("262144 bytes"), "{reason}");
    eprintln!("the slow client received {received} of 400 messages before its close");
}

#[tokio::test]
async fn shutdown_closes_every_session_with_1001_and_stops_accepting() {
    let server = start().await;
    let addr = server.local_addr();
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.subscribe_topic(1, "t").await;
    b.barrier().await;
    let stopping = tokio::spawn(server.shutdown());
    for client in [&mut a, &mut b] {
        let (code, reason) = client.expect_close().await;
        assert_eq!(code, 1001);
        assert!(reason.starts_with("SHUTTING_DOWN"), "{reason}");
    }
    stopping.await.expect("join").expect("clean shutdown");
    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "listener closed");
}

#[test]
fn invalid_settings_stop_start_up_naming_the_setting() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("feedgate.toml");
    std::fs::write(
        &file,
        "[websocket]\nping_interval = \"30s\"\nidle_timeout = \"10s\"\n",
    )
    .expect("write");
    let output = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve", "--config"])
        .arg(&file)
        .output()
        .expect("run feedgate");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("websocket.idle_timeout"), "{stderr}");

    // An environment variable with a bad value is named too, and flags beat the environment.
    let output = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve"])
        .env("FEEDGATE_LISTEN", "not-an-address")
        .output()
        .expect("run feedgate");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("FEEDGATE_LISTEN") || stderr.contains("--listen"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_binary_serves_and_exits_cleanly_on_sigterm() {
    let mut child = Process::new(env!("CARGO_BIN_EXE_feedgate"))
        .args(["serve", "--listen", "127.0.0.1:0", "--allow-anonymous"])
        .env("FEEDGATE_LISTEN", "127.0.0.1:1") // the flag wins
        .env("FEEDGATE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn feedgate");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("feedgate logs its address");
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest
                .split_whitespace()
                .next()
                .expect("addr")
                .parse()
                .expect("socket addr");
        }
    };
    let mut a = Client::connect(addr).await;
    let mut b = Client::connect(addr).await;
    a.subscribe_topic(1, "hello").await;
    a.subscribe_topic(2, "world").await;
    b.publish("world", b"w").await;
    b.publish("hello", b"h").await;
    assert_eq!(&a.recv_message(2).await.payload[..], b"w");
    assert_eq!(&a.recv_message(1).await.payload[..], b"h");

    let status = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let (code, _) = a.expect_close().await;
    assert_eq!(code, 1001);
    let exit = tokio::task::spawn_blocking(move || child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "exit status {exit:?}");
}
