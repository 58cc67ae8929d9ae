//! The Kafka-protocol broker restarted under a running feedgate. This test runs a tansu of its
//! own on a free loopback port (FEEDGATE_TANSU_BIN, set by scripts/test), so it can kill it.

mod support;

use std::process::{Child, Command as Process, Stdio};
use std::time::Duration;

use feedgate::protocol::pb;
use support::kafka::{config_at, create_topic, produce, producer};
use support::*;

fn tansu_bin() -> String {
    std::env::var("FEEDGATE_TANSU_BIN").unwrap_or_else(|_| {
        format!(
            "{}/.cache/feedgate/tansu-0.6.0/bin/tansu",
            std::env::var("HOME").unwrap_or_default()
        )
    })
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

async fn start_tansu(port: u16) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Process::new(tansu_bin())
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu starts (run scripts/test to build it)");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "tansu did not listen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test]
async fn a_broker_restart_is_announced_and_delivery_resumes() {
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let mut broker = start_tansu(port).await;
    let topic = "kafka.restart.test";
    create_topic(&bootstrap, topic, 1).await;
    let mut config = config_at(&bootstrap);
    // A publish during the outage fails after this long (well within the test's own wait).
    if let Some(kafka) = config.kafka.as_mut() {
        kafka.publish_timeout = Duration::from_secs(2);
    }
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    client.subscribe_topic(1, topic).await;
    let producer = producer(&bootstrap);
    produce(&producer, topic, "k", b"before").await;
    assert_eq!(&client.recv_message(1).await.payload[..], b"before");

    broker.kill().expect("kill tansu");
    broker.wait().expect("reaped");
    // Subscribers are told, and publishing fails with a retryable code.
    let event = client.recv_event().await;
    let Some(pb::event::Body::Status(status)) = event.body else {
        panic!("expected a status event, got {event:?}");
    };
    assert!(!status.available);
    assert_eq!(
        status.error.expect("why").code(),
        ErrorCode::SourceUnavailable
    );
    let mut publisher = Client::connect(server.local_addr()).await;
    let err = publisher
        .expect_error(publish(topic, b"lost"), ErrorCode::PublishFailed)
        .await;
    assert!(err.retryable);

    // The broker comes back, the topic is provisioned again, and the running subscription
    // receives new records without resubscribing. tansu's storage is in memory, so the new log
    // starts again at offset 0. If feedgate re-opens its consumer before the new log passes its
    // old position (1), it reads the new log from the start; if after, offset 1 of the new log is
    // indistinguishable from offset 1 of the old one and it continues there. A broker that keeps
    // its log (any real Kafka) has no such ambiguity. Either way the last record must arrive.
    let mut broker = start_tansu(port).await;
    create_topic(&bootstrap, topic, 1).await;
    produce(&producer, topic, "k", b"first after restart").await;
    produce(&producer, topic, "k", b"after").await;
    let mut saw_available = false;
    loop {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Status(status)) => saw_available |= status.available,
            Some(pb::event::Body::Message(message)) if &message.payload[..] == b"after" => break,
            Some(pb::event::Body::Message(message)) => {
                assert_eq!(&message.payload[..], b"first after restart");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(saw_available, "subscribers were told the broker is back");
    server.shutdown().await.expect("shutdown");
    broker.kill().expect("kill tansu");
    let _ = broker.wait();
}

#[tokio::test]
async fn a_broker_down_at_start_is_reported_and_used_once_it_is_up() {
    let port = free_port();
    let bootstrap = format!("127.0.0.1:{port}");
    let server = start_with(config_at(&bootstrap)).await;
    let addr = server.local_addr();
    let mut client = Client::connect(addr).await;
    let err = client
        .expect_error(
            subscribe_topic(1, "kafka.late"),
            ErrorCode::SourceUnavailable,
        )
        .await;
    assert!(err.retryable);
    // Everything else works meanwhile.
    client.subscribe_topic(2, "local.topic").await;

    let mut broker = start_tansu(port).await;
    create_topic(&bootstrap, "kafka.late", 1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let response = client.request(subscribe_topic(1, "kafka.late")).await;
        if matches!(response.result, Some(pb::response::Result::Subscribed(_))) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed: {response:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = client.recv_event().await;
    assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    let producer = producer(&bootstrap);
    produce(&producer, "kafka.late", "k", b"finally").await;
    loop {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Message(m)) => {
                assert_eq!(&m.payload[..], b"finally");
                break;
            }
            Some(pb::event::Body::Status(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    server.shutdown().await.expect("shutdown");
    broker.kill().expect("kill tansu");
    let _ = broker.wait();
}
