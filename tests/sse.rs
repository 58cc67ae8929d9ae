//! Server-Sent Events (`/v1/sse`) read by a real `curl -N`, against a real server and a real
//! PostgreSQL: a table's snapshot and changes as proto3 JSON, a killed stream resumed with
//! `Last-Event-ID` with nothing missed or doubled (one subscription and several), filters and
//! projections from a POST body, coded refusals (401, 403, 404, 400) with the server serving on,
//! keep-alive comments, the slow-consumer rule, and the close event at shutdown. The browser's
//! `EventSource` is tested in clients/typescript/test/sse.browser.test.ts.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{json, Value};
use support::db::{config_for, wait_connected, TestDb};
use support::tokens::{auth_config, claims, sign};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command as Process};

/// One SSE event as curl printed it.
#[derive(Debug, Clone)]
struct SseEvent {
    event: String,
    data: Value,
    id: Option<String>,
}

/// A `curl -N` reading a stream.
struct Curl {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    /// Comment lines (keep-alives) seen so far.
    comments: usize,
}

impl Curl {
    fn get(addr: SocketAddr, query: &str, headers: &[(&str, &str)]) -> Curl {
        Self::run(&format!("http://{addr}/v1/sse?{query}"), headers, None)
    }

    fn post(addr: SocketAddr, body: &Value) -> Curl {
        Self::run(
            &format!("http://{addr}/v1/sse"),
            &[("content-type", "application/json")],
            Some(body.to_string()),
        )
    }

    fn run(url: &str, headers: &[(&str, &str)], body: Option<String>) -> Curl {
        let mut command = Process::new("curl");
        command.args(["-sN", "--max-time", "60", url]);
        for (name, value) in headers {
            command.args(["-H", &format!("{name}: {value}")]);
        }
        if let Some(body) = body {
            command.args(["--data-binary", &body]);
        }
        let mut child = command
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("curl runs");
        let stdout = child.stdout.take().expect("stdout");
        Curl {
            child,
            lines: BufReader::new(stdout).lines(),
            comments: 0,
        }
    }

    /// The next event (keep-alive comments are counted, not returned); `None` at the end.
    async fn next(&mut self) -> Option<SseEvent> {
        let (mut event, mut data, mut id) = (String::new(), String::new(), None);
        loop {
            let line = tokio::time::timeout(WAIT, self.lines.next_line())
                .await
                .expect("an SSE line within the wait")
                .expect("read")?;
            if line.is_empty() {
                if data.is_empty() && id.is_none() {
                    continue;
                }
                let data = if data.is_empty() {
                    Value::Null
                } else {
                    serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {data}"))
                };
                return Some(SseEvent { event, data, id });
            }
            if line.starts_with(':') {
                self.comments += 1;
            } else if let Some(value) = line.strip_prefix("event: ") {
                event = value.to_owned();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            } else if let Some(value) = line.strip_prefix("id: ") {
                id = Some(value.to_owned());
            } else {
                panic!("not an SSE line: {line:?}");
            }
        }
    }

    /// The next event that is not an id-only block.
    async fn event(&mut self) -> SseEvent {
        loop {
            let event = self.next().await.expect("the stream goes on");
            if !event.event.is_empty() {
                return event;
            }
        }
    }

    async fn kill(mut self) {
        self.child.kill().await.expect("kill curl");
    }
}

/// A row change's kind and `id` column.
fn change(event: &SseEvent) -> (String, i64) {
    assert_eq!(event.event, "change", "{event:?}");
    let change = &event.data["change"];
    let row = if change["newRow"].is_null() {
        &change["oldRow"]
    } else {
        &change["newRow"]
    };
    let id = row["columns"]["id"]["int"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("an int id: {event:?}"));
    (change["kind"].as_str().expect("kind").to_owned(), id)
}

async fn orders(rows: &str) -> TestDb {
    let db = TestDb::new().await;
    db.execute("CREATE TABLE public.orders (id bigint PRIMARY KEY, item text, region text)")
        .await;
    if !rows.is_empty() {
        db.execute(&format!("INSERT INTO public.orders VALUES {rows}"))
            .await;
    }
    db
}

async fn table_server(db: &TestDb) -> feedgate::app::Server {
    let mut config = config_for(db);
    config.watch = vec!["public.orders".into()];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    server
}

#[tokio::test]
async fn curl_receives_a_tables_snapshot_then_its_changes_as_proto_json() {
    let db = orders("(1, 'apple', 'eu'), (2, 'pear', 'us')").await;
    let server = table_server(&db).await;
    let addr = server.local_addr();

    let mut curl = Curl::get(addr, "table=public.orders&include_initial=true", &[]);
    let initial: BTreeSet<_> = [curl.event().await, curl.event().await]
        .iter()
        .map(change)
        .collect();
    assert_eq!(
        initial,
        BTreeSet::from([
            ("CHANGE_KIND_INITIAL".into(), 1),
            ("CHANGE_KIND_INITIAL".into(), 2)
        ])
    );
    let ready = curl.event().await;
    assert_eq!(ready.event, "ready");
    assert_eq!(ready.data["subscriptionId"], "1");
    assert!(ready.id.is_some(), "Ready carries the position: {ready:?}");

    db.execute("INSERT INTO public.orders VALUES (3, 'plum', 'eu')")
        .await;
    db.execute("UPDATE public.orders SET item = 'kiwi' WHERE id = 1")
        .await;
    db.execute("DELETE FROM public.orders WHERE id = 2").await;
    let insert = curl.event().await;
    assert_eq!(change(&insert), ("CHANGE_KIND_INSERT".into(), 3));
    assert_eq!(
        insert.data["change"]["newRow"]["columns"]["item"]["text"],
        "plum"
    );
    assert!(insert.data["change"]["commitTimeMicros"].is_string());
    let update = curl.event().await;
    assert_eq!(change(&update), ("CHANGE_KIND_UPDATE".into(), 1));
    assert_eq!(
        update.data["change"]["oldRow"]["columns"]["item"]["text"],
        "apple"
    );
    assert_eq!(
        change(&curl.event().await),
        ("CHANGE_KIND_DELETE".into(), 2)
    );
    for event in [&insert, &update] {
        let id = event.id.as_deref().expect("a change carries its cursor");
        assert!(!id.contains(':'), "one subscription: a bare cursor ({id})");
    }
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_killed_stream_resumes_from_last_event_id_with_nothing_missed_or_doubled() {
    let db = orders("(1, 'apple', 'eu')").await;
    let server = table_server(&db).await;
    let addr = server.local_addr();

    let mut curl = Curl::get(addr, "table=public.orders&include_initial=true", &[]);
    assert_eq!(
        change(&curl.event().await),
        ("CHANGE_KIND_INITIAL".into(), 1)
    );
    assert_eq!(curl.event().await.event, "ready");
    db.execute("INSERT INTO public.orders VALUES (2, 'pear', 'us')")
        .await;
    let seen = curl.event().await;
    assert_eq!(change(&seen), ("CHANGE_KIND_INSERT".into(), 2));
    curl.kill().await;

    // Written while no one is connected.
    for id in 3..=5 {
        db.execute(&format!(
            "INSERT INTO public.orders VALUES ({id}, 'x', 'eu')"
        ))
        .await;
    }
    db.execute("UPDATE public.orders SET item = 'fig' WHERE id = 2")
        .await;
    let last = seen.id.expect("an id");
    let mut curl = Curl::get(
        addr,
        "table=public.orders&include_initial=true",
        &[("Last-Event-ID", &last)],
    );
    let mut resumed = Vec::new();
    for _ in 0..4 {
        resumed.push(change(&curl.event().await));
    }
    assert_eq!(
        resumed,
        [
            ("CHANGE_KIND_INSERT".into(), 3),
            ("CHANGE_KIND_INSERT".into(), 4),
            ("CHANGE_KIND_INSERT".into(), 5),
            ("CHANGE_KIND_UPDATE".into(), 2),
        ]
    );
    // The resumed stream's Ready is not passed on again: the next event is the next change.
    db.execute("DELETE FROM public.orders WHERE id = 1").await;
    assert_eq!(
        change(&curl.event().await),
        ("CHANGE_KIND_DELETE".into(), 1)
    );
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_stream_of_several_subscriptions_resumes_each_from_its_own_cursor() {
    let db = orders("").await;
    let server = table_server(&db).await;
    let addr = server.local_addr();
    let mut publisher = Client::connect(addr).await;

    let query = "topic=ticks&table=public.orders";
    let mut curl = Curl::get(addr, query, &[]);
    for _ in 0..2 {
        assert_eq!(curl.event().await.event, "ready");
    }
    publisher.publish("ticks", b"1").await;
    let tick = curl.event().await;
    assert_eq!(tick.event, "message");
    assert_eq!(tick.data["message"]["payload"], "MQ==", "base64 of \"1\"");
    db.execute("INSERT INTO public.orders VALUES (1, 'a', 'eu')")
        .await;
    let row = curl.event().await;
    assert_eq!(change(&row), ("CHANGE_KIND_INSERT".into(), 1));
    let last = row.id.expect("an id");
    assert!(last.starts_with("1:") && last.contains(",2:"), "{last}");
    curl.kill().await;

    publisher.publish("ticks", b"2").await;
    db.execute("INSERT INTO public.orders VALUES (2, 'b', 'eu')")
        .await;
    publisher.publish("ticks", b"3").await;

    let mut curl = Curl::get(addr, query, &[("Last-Event-ID", &last)]);
    let (mut payloads, mut rows) = (Vec::new(), Vec::new());
    while payloads.len() < 2 || rows.is_empty() {
        let event = curl.event().await;
        match event.event.as_str() {
            "message" => payloads.push(event.data["message"]["payload"].clone()),
            "change" => rows.push(change(&event)),
            other => panic!("unexpected {other}: {event:?}"),
        }
    }
    assert_eq!(payloads, [json!("Mg=="), json!("Mw==")]);
    assert_eq!(rows, [("CHANGE_KIND_INSERT".into(), 2)]);
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_post_body_subscribes_with_a_filter_and_columns() {
    let db = orders("(1, 'apple', 'eu'), (2, 'pear', 'us'), (3, 'plum', 'eu')").await;
    let server = table_server(&db).await;
    let addr = server.local_addr();
    let body = json!({"subscriptions": [{
        "subscriptionId": "7",
        "table": {
            "table": "public.orders",
            "includeInitial": true,
            "columns": ["item"],
            "filter": {"compare": {
                "operand": {"column": "region"},
                "op": "COMPARE_OP_EQ",
                "value": {"text": "eu"}
            }}
        }
    }]});
    let mut curl = Curl::post(addr, &body);
    let mut initial = BTreeSet::new();
    for _ in 0..2 {
        let event = curl.event().await;
        assert_eq!(event.data["subscriptionId"], "7");
        let columns = &event.data["change"]["newRow"]["columns"];
        assert!(columns["region"].is_null(), "projected away: {event:?}");
        initial.insert(change(&event).1);
    }
    assert_eq!(initial, BTreeSet::from([1, 3]));
    assert_eq!(curl.event().await.event, "ready");
    db.execute("INSERT INTO public.orders VALUES (4, 'fig', 'us'), (5, 'lime', 'eu')")
        .await;
    assert_eq!(
        change(&curl.event().await),
        ("CHANGE_KIND_INSERT".into(), 5)
    );
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// The status, headers and body of a request whose answer is not a stream.
async fn refused(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("an answer, not a stream")
        .expect("read");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head");
    let status = head.split_whitespace().nth(1).expect("status");
    let body = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {response}"));
    (status.parse().expect("a number"), head.to_lowercase(), body)
}

#[tokio::test]
async fn unauthorised_and_forbidden_requests_are_refused_with_coded_errors() {
    let mut config = auth_config();
    config.permissions = vec![feedgate::config::PermissionRule {
        roles: vec!["user".into()],
        subscribe_topics: vec!["user.{sub}.#".into()],
        publish_topics: vec![],
        subscribe_tables: vec![],
        row_filter: None,
    }];
    let server = start_with(config).await;
    let addr = server.local_addr();

    let (status, head, body) = refused(addr, "/v1/sse?topic=user.ann.inbox", &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(head.contains("www-authenticate: bearer"), "{head}");
    assert_eq!(body["code"], "ERROR_CODE_UNAUTHENTICATED");

    let (status, _, body) = refused(
        addr,
        "/v1/sse?topic=user.ann.inbox",
        &[("Authorization", "Bearer not.a.token")],
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["code"], "ERROR_CODE_UNAUTHENTICATED");

    let token = sign(Algorithm::HS256, None, &claims("ann"));
    let (status, _, body) = refused(
        addr,
        &format!("/v1/sse?topic=user.bob.inbox&token={token}"),
        &[],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["code"], "ERROR_CODE_PERMISSION_DENIED");
    assert_eq!(body["details"]["subscription_id"], "1");

    // Allowed: the stream starts (its token from the header).
    let bearer = format!("Bearer {token}");
    let mut curl = Curl::get(addr, "topic=user.ann.inbox", &[("Authorization", &bearer)]);
    assert_eq!(curl.event().await.event, "ready");
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_requests_get_coded_errors_and_the_server_keeps_serving() {
    let db = orders("(1, 'apple', 'eu')").await;
    let server = table_server(&db).await;
    let addr = server.local_addr();
    for (path, headers, status, code) in [
        (
            "/v1/sse?table=public.nope",
            vec![],
            404,
            "ERROR_CODE_NOT_FOUND",
        ),
        ("/v1/sse", vec![], 400, "ERROR_CODE_VALIDATION"),
        (
            "/v1/sse?table=public.orders&colums=id",
            vec![],
            400,
            "ERROR_CODE_VALIDATION",
        ),
        (
            "/v1/sse?table=public.orders&filter=%7B",
            vec![],
            400,
            "ERROR_CODE_VALIDATION",
        ),
        (
            "/v1/sse?topic=a&topic=b",
            vec![("Last-Event-ID", "AAAA")],
            400,
            "ERROR_CODE_VALIDATION",
        ),
        (
            "/v1/sse?table=public.orders",
            vec![("Last-Event-ID", "not base64!")],
            400,
            "ERROR_CODE_VALIDATION",
        ),
    ] {
        let (got, _, body) = refused(addr, path, &headers).await;
        assert_eq!(
            (got, body["code"].as_str()),
            (status, Some(code)),
            "{path}: {body}"
        );
        assert!(!body["message"].as_str().unwrap_or("").is_empty(), "{body}");
    }
    // A cursor the source cannot resume from ends that subscription in the stream, coded.
    let mut curl = Curl::get(
        addr,
        "topic=fresh",
        &[("Last-Event-ID", "AAAAAAAAAAAAAAAAAAAAAA")],
    );
    let closed = curl.event().await;
    assert_eq!(closed.event, "closed", "{closed:?}");
    assert!(closed.data["closed"]["error"]["code"]
        .as_str()
        .is_some_and(|c| c.starts_with("ERROR_CODE_")));
    curl.kill().await;

    let mut curl = Curl::get(addr, "table=public.orders&include_initial=true", &[]);
    assert_eq!(
        change(&curl.event().await),
        ("CHANGE_KIND_INITIAL".into(), 1)
    );
    curl.kill().await;
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_quiet_stream_gets_keep_alive_comments_and_shutdown_ends_it_with_a_close_event() {
    let mut config = test_config();
    config.websocket.ping_interval = Duration::from_millis(100);
    let server = start_with(config).await;
    let addr = server.local_addr();
    let mut curl = Curl::get(addr, "topic=quiet", &[]);
    assert_eq!(curl.event().await.event, "ready");
    let shutdown = server.shutdown_token();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        shutdown.cancel();
    });
    let close = curl.event().await;
    assert_eq!(close.event, "close");
    assert_eq!(close.data["code"], 1001);
    assert!(
        close.data["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("SHUTTING_DOWN")),
        "{close:?}"
    );
    assert!(curl.comments >= 2, "keep-alives: {}", curl.comments);
    assert!(curl.next().await.is_none(), "nothing after the close event");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_stream_nobody_reads_is_closed_as_a_slow_consumer() {
    let mut config = test_config();
    config.limits.outbound_queue = 8;
    let server = start_with(config).await;
    let addr = server.local_addr();

    // A client that asks for a stream and never reads it.
    let mut reader = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request =
        format!("GET /v1/sse?topic=flood HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    reader.write_all(request.as_bytes()).await.expect("write");
    wait_for_stat(addr, "subscriptions", 1).await;

    let mut publisher = Client::connect(addr).await;
    let payload = vec![b'x'; 64 * 1024];
    for _ in 0..400 {
        publisher.publish("flood", &payload).await;
        if stats(addr).await["dropped_subscriptions"] == 1 {
            break;
        }
    }
    wait_for_stat(addr, "dropped_subscriptions", 1).await;

    // What was written before the close is intact, and the stream ends with why.
    let mut text = Vec::new();
    tokio::time::timeout(WAIT, reader.read_to_end(&mut text))
        .await
        .expect("the server ends the stream")
        .expect("read");
    let text = String::from_utf8_lossy(&text);
    let tail = text.rsplit("event: close\n").next().expect("a close event");
    assert!(
        tail.contains("\"code\":4008"),
        "{}",
        &text[text.len().saturating_sub(300)..]
    );
    assert!(tail.contains("SLOW_CONSUMER"), "{tail}");
    server.shutdown().await.expect("shutdown");
}
