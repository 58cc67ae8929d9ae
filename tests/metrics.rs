//! `GET /metrics` after a known workload, read with a Prometheus text-format parser
//! (`prometheus-parse`): each figure moved by what the workload did. One server per test, so
//! its registry counts only this test's traffic. Needs PostgreSQL, and for the Kafka lag the
//! Kafka-protocol broker scripts/test starts (FEEDGATE_TEST_KAFKA, see `support::kafka`).

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::db::{config_for, table_feed, wait_connected, TestDb};
use support::*;

/// The scrape's samples: `name{label="value",...}` (labels sorted) -> value. A histogram is
/// there under its name (its observations, the +Inf bucket) and bucket by bucket, as
/// `name_bucket{le="bound"}` (the bound as the parser read it: `1`, `0.0025`).
async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut samples = HashMap::new();
    for sample in parsed.samples {
        let mut labels: Vec<String> = sample
            .labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\""))
            .collect();
        labels.sort();
        let named = |metric: &str, labels: &[String]| match labels.is_empty() {
            true => metric.to_owned(),
            false => format!("{metric}{{{}}}", labels.join(",")),
        };
        let value = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(buckets) => {
                for bucket in &buckets {
                    let mut labels = labels.clone();
                    labels.push(format!("le=\"{}\"", bucket.less_than));
                    let name = named(&format!("{}_bucket", sample.metric), &labels);
                    samples.insert(name, bucket.count);
                }
                buckets.last().map_or(0.0, |b| b.count) // the +Inf bucket: observations
            }
            prometheus_parse::Value::Summary(_) => f64::NAN,
        };
        samples.insert(named(&sample.metric, &labels), value);
    }
    samples
}

fn get(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", samples.keys().collect::<Vec<_>>()))
}

#[tokio::test]
async fn metrics_move_by_what_a_known_workload_did() {
    let db = TestDb::new().await;
    let mut config = config_for(&db);
    config.changefeed.prune_interval = std::time::Duration::from_millis(100);
    let server = start_with(config).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'x' FROM generate_series(1, 25) g;
         SELECT feedgate.watch('items');",
    )
    .await;
    let before = scrape(addr).await;
    assert_eq!(get(&before, "feedgate_connections_opened_total"), 0.0);
    assert_eq!(
        get(&before, "feedgate_dependency_up{dependency=\"postgres\"}"),
        1.0
    );

    let mut client = Client::connect(addr).await;
    client.subscribe_topic(1, "metrics.t").await;
    client.request(table_feed(2, "items", true)).await;
    for _ in 0..25 {
        let event = client.recv_event().await;
        assert!(matches!(event.body, Some(pb::event::Body::Change(_))));
    }
    let ready = client.recv_event().await;
    assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    for n in 0..10 {
        client
            .send(publish("metrics.t", format!("{n}").as_bytes()))
            .await;
        for _ in 0..2 {
            // The Published answer and the message, in either order.
            match client.recv().await.expect("a message") {
                Received::Response(response) => assert!(
                    matches!(response.result, Some(pb::response::Result::Published(_))),
                    "{response:?}"
                ),
                Received::Event(event) => assert_eq!(event.subscription_id, 1),
                Received::Close(close) => panic!("closed: {close:?}"),
            }
        }
    }
    db.execute("INSERT INTO items SELECT g, 'y' FROM generate_series(26, 30) g")
        .await;
    for _ in 0..5 {
        let event = client.recv_event().await;
        assert!(matches!(event.body, Some(pb::event::Body::Change(_))));
    }
    let bad = Command::Subscribe(pb::Subscribe {
        subscription_id: 0,
        source: None,
        resume_from: Bytes::new(),
    });
    client.expect_error(bad, ErrorCode::Validation).await;
    client.barrier().await;

    let during = scrape(addr).await;
    for (name, want) in [
        ("feedgate_connections_opened_total", 1.0),
        ("feedgate_connections_open", 1.0),
        ("feedgate_requests_total{command=\"subscribe\"}", 2.0),
        ("feedgate_requests_total{command=\"publish\"}", 10.0),
        ("feedgate_requests_total{command=\"ping\"}", 1.0),
        ("feedgate_requests_total{command=\"unreadable\"}", 1.0),
        ("feedgate_request_errors_total{code=\"VALIDATION\"}", 1.0),
        ("feedgate_subscriptions{source=\"memory\"}", 1.0),
        ("feedgate_subscriptions{source=\"table\"}", 1.0),
        ("feedgate_snapshot_rows_total", 25.0),
        // What fan-out delivered: the 10 messages and the 5 live changes (not the snapshot's
        // rows, Ready or responses, which the session queues itself).
        ("feedgate_events_delivered_total{source=\"memory\"}", 10.0),
        ("feedgate_events_delivered_total{source=\"table\"}", 5.0),
        ("feedgate_snapshot_seconds_count", 1.0),
    ] {
        assert_eq!(get(&during, name), want, "{name}");
    }
    // 5 live changes, logged by one statement: read in one or more polls.
    assert_eq!(
        get(&during, "feedgate_changefeed_read_lag_seconds_count"),
        5.0
    );
    assert!(get(&during, "feedgate_changefeed_batch_changes_count") >= 1.0);
    // 2 Subscribed, Ready (topic), 25 rows, Ready (table), 10 Published and 10 messages, 5
    // changes, 1 error, 1 Pong: 56 frames (no Hello, so no Welcome), all written before the
    // Pong came back.
    assert_eq!(get(&during, "feedgate_frames_written_total"), 56.0);
    assert!(get(&during, "feedgate_written_bytes_total") > 56.0 * 10.0);
    let batches = get(&during, "feedgate_outbound_queue_depth_count");
    assert!(
        (1.0..=56.0).contains(&batches),
        "one depth per written batch: {batches}"
    );

    assert!(get(&during, "feedgate_process_resident_memory_bytes") > 1e6);
    assert!(get(&during, "feedgate_process_open_fds") >= 3.0);
    assert!(get(&during, "feedgate_process_cpu_seconds_total") > 0.0);
    // Pruning (every 100 ms here) measures the log: the 5 inserts were logged (the 25 rows
    // existed before the watch), and none is old enough to be pruned.
    let mut span = 0.0;
    for _ in 0..100 {
        span = get(&scrape(addr).await, "feedgate_change_log_span");
        if span >= 5.0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(span >= 5.0, "the log's span is measured: {span}");

    client.close().await;
    wait_for_stat(addr, "connections", 0).await;
    let after = scrape(addr).await;
    for (name, want) in [
        ("feedgate_connections_open", 0.0),
        ("feedgate_connections_closed_total{code=\"1000\"}", 1.0),
        ("feedgate_subscriptions{source=\"memory\"}", 0.0),
    ] {
        assert_eq!(get(&after, name), want, "{name}");
    }
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// Polls `/metrics` until `name` satisfies `done` (or [`WAIT`] twice over); returns its last
/// value.
async fn wait_for_sample(
    addr: std::net::SocketAddr,
    name: &str,
    done: impl Fn(f64) -> bool,
) -> f64 {
    let deadline = tokio::time::Instant::now() + 2 * WAIT;
    loop {
        let value = get(&scrape(addr).await, name);
        if done(value) || tokio::time::Instant::now() >= deadline {
            return value;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn commit_to_send_counts_each_live_change_per_subscriber_once_written() {
    const HISTOGRAM: &str = "feedgate_changefeed_commit_to_send_seconds";
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    let addr = server.local_addr();
    wait_connected(addr).await;
    db.execute(
        "CREATE TABLE items (id int PRIMARY KEY, v text);
         INSERT INTO items SELECT g, 'x' FROM generate_series(1, 3) g;
         SELECT feedgate.watch('items');",
    )
    .await;
    let before = scrape(addr).await;
    assert_eq!(get(&before, &format!("{HISTOGRAM}_count")), 0.0);

    // Two subscribers: one with the 3 initial rows (not counted), one without.
    let mut with_rows = Client::connect(addr).await;
    with_rows.request(table_feed(1, "items", true)).await;
    for _ in 0..3 {
        let event = with_rows.recv_event().await;
        assert!(matches!(event.body, Some(pb::event::Body::Change(_))));
    }
    let ready = with_rows.recv_event().await;
    assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    let mut without = Client::connect(addr).await;
    without.request(table_feed(1, "items", false)).await;
    let ready = without.recv_event().await;
    assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    // 5 live changes in two transactions, to each of the two subscribers: 10 observations.
    // The second transaction commits 1.5 s after it started, which only commit timestamps
    // leave out of its changes' latency.
    db.execute("INSERT INTO items SELECT g, 'y' FROM generate_series(4, 7) g")
        .await;
    db.execute("BEGIN; UPDATE items SET v = 'z' WHERE id = 1; SELECT pg_sleep(1.5); COMMIT;")
        .await;
    for client in [&mut with_rows, &mut without] {
        for _ in 0..5 {
            let event = client.recv_event().await;
            assert!(matches!(event.body, Some(pb::event::Body::Change(_))));
        }
        // Its writer observes a batch once flushed, before it writes the Pong's batch.
        client.barrier().await;
    }
    let after = scrape(addr).await;
    assert_eq!(get(&after, &format!("{HISTOGRAM}_count")), 10.0);
    let sum = get(&after, &format!("{HISTOGRAM}_sum"));
    // Each from a commit (or its transaction's start) a moment ago: more than nothing, far less
    // than the test's own timeouts.
    assert!(sum > 0.0 && sum < 10.0 * WAIT.as_secs_f64(), "sum {sum}");
    // The same figures through the parser's own histogram reading.
    assert_eq!(get(&after, HISTOGRAM), 10.0);
    let within_a_second = get(&after, &format!("{HISTOGRAM}_bucket{{le=\"1\"}}"));
    let tracked: String = sqlx::query_scalar("SHOW track_commit_timestamp")
        .fetch_one(&db.pool)
        .await
        .expect("setting");
    match tracked.as_str() {
        // Measured from the commit: every change went out within a second of it.
        "on" => assert_eq!(within_a_second, 10.0),
        // From the transaction's start: the slow transaction's change, to both subscribers,
        // took its 1.5 s more.
        _ => assert!(within_a_second <= 8.0, "{within_a_second}"),
    }

    with_rows.close().await;
    without.close().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// A topic of `records` records of `size` bytes each, spread over `partitions` partitions,
/// produced before anyone on the server reads it.
async fn kafka_topic_holding(partitions: i32, records: usize, size: usize) -> String {
    use support::kafka::{bootstrap, create_topic, producer, topic};
    let topic = topic();
    create_topic(&bootstrap(), &topic, partitions).await;
    let producer = producer(&bootstrap());
    let payload = vec![7u8; size];
    let sends = (0..records).map(|n| {
        let key = n.to_string();
        let (producer, topic, payload) = (&producer, &topic, &payload);
        async move {
            let record = rdkafka::producer::FutureRecord::to(topic)
                .key(&key)
                .payload(&payload[..]);
            producer
                .send(record, std::time::Duration::from_secs(10))
                .await
                .map_err(|(err, _)| err)
                .expect("delivered");
        }
    });
    futures_util::future::join_all(sends).await;
    topic
}

#[tokio::test]
async fn kafka_consumer_lag_is_behind_while_a_reader_pauses_and_zero_once_it_caught_up() {
    const LAG: &str = "feedgate_kafka_consumer_lag_messages";
    // 6.4 MB of history: far more than a paused reader's socket buffers and the connection's
    // waiting share hold, so the reader's own (EARLIEST) consumer has to stop and wait.
    const RECORDS: usize = 100;
    let topic = kafka_topic_holding(2, RECORDS, 64 * 1024).await;
    let server = start_with(support::kafka::config()).await;
    let addr = server.local_addr();
    assert_eq!(get(&scrape(addr).await, LAG), 0.0, "no consumer yet");

    let mut client = Client::connect_with_receive_buffer(addr, 64 * 1024).await;
    let subscribe = topic_feed_from(1, &topic, pb::StartPosition::Earliest, 0, &Bytes::new());
    let response = client.request(subscribe).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    // The client reads nothing more for now.
    let behind = wait_for_sample(addr, LAG, |lag| lag > 0.0).await;
    assert!(
        behind > 0.0 && behind <= RECORDS as f64,
        "lag while the reader pauses: {behind}"
    );

    let mut messages = 0;
    while messages < RECORDS {
        let event = client.recv_event().await;
        match event.body {
            Some(pb::event::Body::Message(_)) => messages += 1,
            Some(pb::event::Body::Ready(_)) => {}
            other => panic!("unexpected event {other:?}"),
        }
    }
    let caught_up = wait_for_sample(addr, LAG, |lag| lag == 0.0).await;
    assert_eq!(caught_up, 0.0, "lag once the reader caught up");

    client.close().await;
    server.shutdown().await.expect("shutdown");
}
