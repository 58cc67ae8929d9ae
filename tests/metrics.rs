//! `GET /metrics` after a known workload, read with a Prometheus text-format parser
//! (`prometheus-parse`): each figure moved by what the workload did. One server per test, so
//! its registry counts only this test's traffic.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use feedgate::protocol::pb;
use support::db::{config_for, table_feed, wait_connected, TestDb};
use support::*;

/// The scrape's samples: `name{label="value",...}` (labels sorted) -> value.
async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|line| Ok(line.to_owned()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    parsed
        .samples
        .into_iter()
        .map(|sample| {
            let mut labels: Vec<String> = sample
                .labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            labels.sort();
            let value = match sample.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                prometheus_parse::Value::Histogram(buckets) => {
                    buckets.last().map_or(0.0, |b| b.count) // the +Inf bucket: observations
                }
                prometheus_parse::Value::Summary(_) => f64::NAN,
            };
            let name = match labels.is_empty() {
                true => sample.metric,
                false => format!("{}{{{}}}", sample.metric, labels.join(",")),
            };
            (name, value)
        })
        .collect()
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
