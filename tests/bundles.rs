//! Bundled frames (`Hello.bundles`) against a real server over real WebSockets: a client that
//! asks for them and falls behind receives what queued up in few frames, every message once and
//! in order; a lone event still comes at once in a frame of its own; a client that does not ask
//! gets one message per frame, as before.

mod support;

use feedgate::protocol::pb;
use support::*;

/// Messages of `SIZE` bytes: more than the loopback socket's buffers hold (several MiB), so the
/// server's queue for a client that is not reading fills up.
const BURST: usize = 1000;
const SIZE: usize = 8 * 1024;

/// A server whose outbound queues hold the whole burst.
async fn server() -> feedgate::app::Server {
    let mut config = test_config();
    config.limits.outbound_queue = 2 * BURST;
    config.limits.outbound_queue_bytes = 4 * BURST * SIZE;
    start_with(config).await
}

fn hello(bundles: bool) -> Command {
    Command::Hello(pb::Hello {
        bundles,
        client_name: "tests/bundles".into(),
        ..Default::default()
    })
}

/// Publishes `BURST` numbered messages to `topic` while `subscriber` reads nothing, then reads
/// them: checks each arrives once, in order. Returns the subscriber's frames and bundles counted
/// during the reading.
async fn burst(addr: std::net::SocketAddr, subscriber: &mut Client, topic: &str) -> (u64, u64) {
    subscriber.subscribe_topic(1, topic).await;
    let mut publisher = Client::connect(addr).await;
    let payload = |i: usize| format!("{i:04}{}", "x".repeat(SIZE - 4));
    for i in 0..BURST {
        publisher.publish(topic, payload(i).as_bytes()).await;
    }
    let (frames, bundles) = (subscriber.frames, subscriber.bundles);
    let mut offsets = Vec::new();
    for i in 0..BURST {
        let message = subscriber.recv_message(1).await;
        assert_eq!(message.payload, payload(i).as_bytes(), "message {i}");
        offsets.push(message.offset);
    }
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "{offsets:?}");
    assert_eq!(subscriber.unbundled(), 0, "nothing more than the burst");
    (subscriber.frames - frames, subscriber.bundles - bundles)
}

#[tokio::test]
async fn a_client_that_falls_behind_receives_the_queue_in_bundles_in_order() {
    let server = server().await;
    let addr = server.local_addr();
    let mut subscriber = Client::connect_with_receive_buffer(addr, 16 * 1024).await;
    let welcome = subscriber.request(hello(true)).await;
    assert!(matches!(
        welcome.result,
        Some(pb::response::Result::Welcome(_))
    ));

    let (frames, bundles) = burst(addr, &mut subscriber, "bundled").await;
    assert!(bundles > 0, "{frames} frames, none a bundle");
    assert!(
        frames < BURST as u64 * 3 / 4,
        "{BURST} messages in {frames} frames ({bundles} bundles)"
    );

    // Nothing queued: a lone message goes at once, unwrapped.
    let mut publisher = Client::connect(addr).await;
    publisher.publish("bundled", b"alone").await;
    let (frames, bundles) = (subscriber.frames, subscriber.bundles);
    assert_eq!(subscriber.recv_message(1).await.payload, &b"alone"[..]);
    assert_eq!(
        (subscriber.frames - frames, subscriber.bundles - bundles),
        (1, 0)
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_client_that_does_not_ask_gets_one_message_per_frame() {
    let server = server().await;
    let addr = server.local_addr();
    let mut subscriber = Client::connect_with_receive_buffer(addr, 16 * 1024).await;
    subscriber.request(hello(false)).await;
    let (frames, bundles) = burst(addr, &mut subscriber, "plain").await;
    assert_eq!((frames, bundles), (BURST as u64, 0));
    server.shutdown().await.expect("shutdown");
}
