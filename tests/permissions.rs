//! Permissions against a real server (and a real PostgreSQL for tables): the seeds' model — users
//! own their `user.{sub}.#` topics, everyone reads `public.#`, admins do anything — with
//! forbidden topics and tables, name tricks, and denials that change nothing.

mod support;

use feedgate::config::Config;
use feedgate::config::PermissionRule;
use feedgate::protocol::pb;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::db::{columns, config_for, table_feed, wait_connected, TestDb, View};
use support::tokens::{auth_config, claims, hello, sign};
use support::{start_with, stats, Client, ErrorCode};

fn rule(roles: &[&str], subscribe: &[&str], publish: &[&str], tables: &[&str]) -> PermissionRule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    PermissionRule {
        roles: strings(roles),
        subscribe_topics: strings(subscribe),
        publish_topics: strings(publish),
        subscribe_tables: strings(tables),
        row_filter: None,
    }
}

fn seeds(mut config: Config) -> Config {
    config.permissions = vec![
        rule(&["*"], &["public.#"], &[], &[]),
        rule(
            &["user"],
            &["user.{sub}.#"],
            &["user.{sub}.#"],
            &["public.orders"],
        ),
        rule(&["admin"], &["#"], &["#"], &["*.*"]),
    ];
    config
}

async fn login(client: &mut Client, sub: &str, roles: &[&str]) {
    let mut claims = claims(sub);
    claims["roles"] = json!(roles);
    login_with(client, claims).await;
}

async fn login_with(client: &mut Client, claims: serde_json::Value) {
    let response = client
        .request(hello(&sign(Algorithm::HS256, None, &claims)))
        .await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Welcome(_))),
        "{response:?}"
    );
}

async fn denied(client: &mut Client, command: support::Command, names: &str) {
    let error = client
        .expect_error(command, ErrorCode::PermissionDenied)
        .await;
    assert!(
        error.message.contains(names),
        "{names:?} not in {:?}",
        error.message
    );
}

#[tokio::test]
async fn users_own_their_topics_and_everyone_reads_public_ones() {
    let server = start_with(seeds(auth_config())).await;
    let addr = server.local_addr();
    let mut alice = Client::connect(addr).await;
    login(&mut alice, "alice", &["user"]).await;

    alice.subscribe_topic(1, "user.alice.inbox").await;
    alice.subscribe_topic(2, "public.news").await;
    let mut alice_phone = Client::connect(addr).await;
    login(&mut alice_phone, "alice", &["user"]).await;
    alice_phone
        .publish("user.alice.inbox", b"note to self")
        .await;
    let message = alice.recv_message(1).await;
    assert_eq!(&message.payload[..], b"note to self");

    denied(
        &mut alice,
        support::subscribe_topic(3, "user.bob.inbox"),
        "user.bob.inbox",
    )
    .await;
    denied(
        &mut alice,
        support::publish("user.bob.inbox", b"x"),
        "user.bob.inbox",
    )
    .await;
    denied(
        &mut alice,
        support::publish("public.news", b"x"),
        "public.news",
    )
    .await;
    // Name tricks: another case is another topic; wildcards must be covered by a grant.
    denied(
        &mut alice,
        support::subscribe_topic(3, "USER.alice.inbox"),
        "USER",
    )
    .await;
    denied(
        &mut alice,
        support::subscribe_topic(3, "user.*.inbox"),
        "user.*.inbox",
    )
    .await;
    denied(&mut alice, support::subscribe_topic(3, "#"), "#").await;
    denied(&mut alice, support::subscribe_topic(3, "user.#"), "user.#").await;

    // A denial changes nothing: alice still holds exactly her two subscriptions.
    let stats = stats(addr).await;
    assert_eq!(stats["subscriptions"], 2);

    // Admins may do anything; anonymous-like principals without roles only read public.#.
    let mut admin = Client::connect(addr).await;
    login(&mut admin, "root", &["admin"]).await;
    admin.subscribe_topic(1, "user.bob.inbox").await;
    admin.publish("user.alice.inbox", b"from admin").await;
    assert_eq!(&alice.recv_message(1).await.payload[..], b"from admin");
    let mut guest = Client::connect(addr).await;
    login(&mut guest, "guest", &[]).await;
    guest.subscribe_topic(1, "public.news").await;
    denied(
        &mut guest,
        support::subscribe_topic(2, "user.guest.inbox"),
        "guest",
    )
    .await;
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn crafted_claims_cannot_widen_a_grant() {
    let server = start_with(seeds(auth_config())).await;
    for sub in ["*", "#", "bob.inbox", "x y"] {
        let mut client = Client::connect(server.local_addr()).await;
        login(&mut client, sub, &["user"]).await;
        denied(
            &mut client,
            support::subscribe_topic(1, "user.bob.inbox"),
            "user.bob",
        )
        .await;
        client.close().await;
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn table_grants_apply_to_the_table_the_database_resolves() {
    let db = TestDb::new().await;
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, item text); \
         CREATE TABLE secrets (id int PRIMARY KEY, secret text); \
         CREATE SCHEMA other; CREATE TABLE other.orders (id int PRIMARY KEY); \
         INSERT INTO orders VALUES (1, 'book'); INSERT INTO secrets VALUES (1, 'hunter2');",
    )
    .await;
    let mut config = seeds(config_for(&db));
    let auth = auth_config();
    config.auth = auth.auth;
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute(
        "SELECT feedgate.watch('public.orders'); SELECT feedgate.watch('public.secrets'); \
         SELECT feedgate.watch('other.orders');",
    )
    .await;
    let mut alice = Client::connect(server.local_addr()).await;
    login(&mut alice, "alice", &["user"]).await;

    for (id, spelling) in [
        (1, "public.orders"),
        (2, "orders"),
        (3, "\"public\".\"orders\""),
    ] {
        let response = alice.request(table_feed(id, spelling, false)).await;
        assert!(
            matches!(response.result, Some(pb::response::Result::Subscribed(_))),
            "{spelling}: {response:?}"
        );
        let ready = alice.recv_event().await;
        assert!(matches!(ready.body, Some(pb::event::Body::Ready(_))));
    }
    // Spellings resolve to the table PostgreSQL means; the check is on that, and the denial
    // names it.
    for (spelling, table) in [
        ("secrets", "public.secrets"),
        ("public.secrets", "public.secrets"),
        ("PUBLIC.SECRETS", "public.secrets"),
        ("\"public\".\"secrets\"", "public.secrets"),
        ("other.orders", "other.orders"),
    ] {
        denied(&mut alice, table_feed(9, spelling, true), table).await;
    }
    // Nothing of the secret table reached alice: the next message is the answer to a ping.
    let response = alice.request(support::tokens::ping()).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Pong(_))
    ));
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

/// Reads a table subscription's events until the initial rows' `Ready`, applying them to a
/// strict view; returns every change seen.
async fn initial(client: &mut Client, view: &mut View) -> Vec<pb::RowChange> {
    let mut seen = Vec::new();
    loop {
        match client.recv_event().await.body {
            Some(pb::event::Body::Change(change)) => {
                view.apply(&change).expect("a consistent change");
                seen.push(change);
            }
            Some(pb::event::Body::Ready(_)) => return seen,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

/// Reads changes until one inserts the row with id `marker`.
async fn until_marker(client: &mut Client, view: &mut View, marker: i64) -> Vec<pb::RowChange> {
    let mut seen = Vec::new();
    loop {
        let Some(pb::event::Body::Change(change)) = client.recv_event().await.body else {
            panic!("expected a change");
        };
        view.apply(&change).expect("a consistent change");
        let done = columns(&change.new_row).get("id") == Some(&marker.to_string());
        seen.push(change);
        if done {
            return seen;
        }
    }
}

/// The ids in a view, sorted.
fn ids(view: &View) -> Vec<i64> {
    let mut ids: Vec<i64> = view
        .rows
        .values()
        .map(|row| row["id"].parse().expect("id"))
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn a_tenant_sees_only_its_rows_including_deletes_and_moves() {
    let db = TestDb::new().await;
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, tenant_id int NOT NULL, item text); \
         INSERT INTO orders VALUES (1, 1, 'a1'), (2, 1, 'a2'), (3, 2, 'b3'), (4, 2, 'b4');",
    )
    .await;
    let mut config = config_for(&db);
    config.auth = auth_config().auth;
    let mut tenants = rule(&["user"], &[], &[], &["public.orders"]);
    tenants.row_filter = Some("tenant_id = {claims.tenant_id}".into());
    config.permissions = vec![tenants, rule(&["admin"], &[], &[], &["*.*"])];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute("SELECT feedgate.watch('public.orders');").await;
    let addr = server.local_addr();

    let subscribe = |claims: serde_json::Value| async move {
        let mut client = Client::connect(addr).await;
        login_with(&mut client, claims).await;
        client
    };
    let tenant = |sub: &str, tenant: serde_json::Value| {
        let mut c = claims(sub);
        c["tenant_id"] = tenant;
        c
    };
    // A string claim compares with the integer column; so does a number.
    let mut alice = subscribe(tenant("alice", json!("1"))).await;
    let mut bob = subscribe(tenant("bob", json!(2))).await;
    // A claim crafted like SQL is a value, never syntax.
    let mut mallory = subscribe(tenant("mallory", json!("1 or 1=1"))).await;
    let mut admin = subscribe({
        let mut c = claims("root");
        c["roles"] = json!(["admin"]);
        c
    })
    .await;
    // Without the claim the filter needs, the rule grants nothing.
    let mut carol = subscribe(claims("carol")).await;
    let error = carol
        .expect_error(table_feed(1, "orders", true), ErrorCode::PermissionDenied)
        .await;
    assert!(error.message.contains("tenant_id"), "{}", error.message);

    let mut views: Vec<View> = (0..4).map(|_| View::default()).collect();
    let clients = [&mut alice, &mut bob, &mut mallory, &mut admin];
    let mut seen: Vec<Vec<pb::RowChange>> = Vec::new();
    for (client, view) in clients.into_iter().zip(views.iter_mut()) {
        let response = client.request(table_feed(1, "orders", true)).await;
        assert!(
            matches!(response.result, Some(pb::response::Result::Subscribed(_))),
            "{response:?}"
        );
        seen.push(initial(client, view).await);
    }
    assert_eq!(ids(&views[0]), [1, 2]);
    assert_eq!(ids(&views[1]), [3, 4]);
    assert!(ids(&views[2]).is_empty());
    assert_eq!(ids(&views[3]), [1, 2, 3, 4]);

    db.execute(
        "INSERT INTO orders VALUES (5, 2, 'b5'); \
         UPDATE orders SET item = 'a1!' WHERE id = 1; \
         UPDATE orders SET tenant_id = 2 WHERE id = 2; \
         UPDATE orders SET tenant_id = 1, item = 'moved' WHERE id = 3; \
         DELETE FROM orders WHERE id = 4; \
         DELETE FROM orders WHERE id = 1; \
         UPDATE orders SET item = 'b5!' WHERE id = 5; \
         BEGIN; INSERT INTO orders VALUES (100, 1, 'end'), (200, 2, 'end'), (300, 3, 'end'); \
         COMMIT;",
    )
    .await;
    seen[0].extend(until_marker(&mut alice, &mut views[0], 100).await);
    seen[1].extend(until_marker(&mut bob, &mut views[1], 200).await);
    seen[3].extend(until_marker(&mut admin, &mut views[3], 300).await);

    // Each view is exactly the tenant's rows now, built from events a strict replica accepts
    // (a move out arrives as a delete of the old row, a move in as an insert).
    assert_eq!(ids(&views[0]), [3, 100]);
    let row3 = views[0].rows.values().find(|r| r["id"] == "3");
    assert_eq!(row3.expect("row 3")["item"], "moved");
    assert_eq!(ids(&views[1]), [2, 5, 200]);
    assert_eq!(ids(&views[3]), [2, 3, 5, 100, 200, 300]);
    // No event a tenant received carried another tenant's row, old or new: alice never learns
    // that row 4 was deleted, nor what row 2 became.
    for (who, tenant) in [(0, "1"), (1, "2")] {
        for change in &seen[who] {
            for row in [&change.new_row, &change.old_row] {
                if row.is_some() {
                    assert_eq!(columns(row)["tenant_id"], tenant, "{change:?}");
                }
            }
        }
    }
    let kinds = |who: usize| -> Vec<(pb::ChangeKind, String)> {
        seen[who]
            .iter()
            .filter(|c| c.kind() != pb::ChangeKind::Initial)
            .map(|c| (c.kind(), columns(&c.key)["id"].clone()))
            .collect()
    };
    use pb::ChangeKind as K;
    let k = |kind, id: &str| (kind, id.to_string());
    assert_eq!(
        kinds(0),
        [
            k(K::Update, "1"),
            k(K::Delete, "2"),
            k(K::Insert, "3"),
            k(K::Delete, "1"),
            k(K::Insert, "100"),
        ]
    );
    assert_eq!(
        kinds(1),
        [
            k(K::Insert, "5"),
            k(K::Insert, "2"),
            k(K::Delete, "3"),
            k(K::Delete, "4"),
            k(K::Update, "5"),
            k(K::Insert, "200"),
        ]
    );
    // Mallory saw nothing: the reader queued the markers for every subscriber at once, so
    // anything for mallory would come before this pong.
    let response = mallory.request(support::tokens::ping()).await;
    assert!(matches!(
        response.result,
        Some(pb::response::Result::Pong(_))
    ));
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn row_filters_on_text_and_lists_select_the_snapshot_rows_exactly() {
    let db = TestDb::new().await;
    db.execute(
        "CREATE TABLE tickets (id int PRIMARY KEY, region varchar(8), level int, note text); \
         CREATE INDEX ON tickets (region); \
         INSERT INTO tickets VALUES (1, 'eu', 1, 'a'), (2, 'us', 2, 'b'), (3, 'eu', 3, 'c'), \
           (4, 'apac', 1, 'd'), (5, NULL, 1, 'e'), (6, 'EU', 1, 'f'), (7, 'us', NULL, 'g'), \
           (8, 'eu', 2, NULL);",
    )
    .await;
    let mut config = config_for(&db);
    config.auth = auth_config().auth;
    let mut support_rule = rule(&["user"], &[], &[], &["public.tickets"]);
    support_rule.row_filter =
        Some("region in {claims.regions} and level <= {claims.level} and note is not null".into());
    config.permissions = vec![support_rule];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute("SELECT feedgate.watch('public.tickets');").await;
    let mut client = Client::connect(server.local_addr()).await;
    let mut c = claims("sam");
    c["regions"] = json!(["eu", "us"]);
    c["level"] = json!("2");
    login_with(&mut client, c).await;
    let response = client.request(table_feed(1, "tickets", true)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let mut view = View::default();
    initial(&mut client, &mut view).await;
    // eu/us (exact case), level at most 2 (NULL is not), a note.
    assert_eq!(ids(&view), [1, 2]);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn a_tenant_resuming_sees_rows_move_in_and_out_and_never_another_tenants_row() {
    let db = TestDb::new().await;
    db.execute(
        "CREATE TABLE orders (id int PRIMARY KEY, tenant_id int NOT NULL, item text); \
         INSERT INTO orders VALUES (1, 1, 'a1'), (2, 2, 'b2');",
    )
    .await;
    let mut config = config_for(&db);
    config.auth = auth_config().auth;
    let mut tenants = rule(&["user"], &[], &[], &["public.orders"]);
    tenants.row_filter = Some("tenant_id = {claims.tenant_id}".into());
    config.permissions = vec![tenants];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute("SELECT feedgate.watch('public.orders');").await;
    let mut alice_claims = claims("alice");
    alice_claims["tenant_id"] = json!(1);

    let mut alice = Client::connect(server.local_addr()).await;
    login_with(&mut alice, alice_claims.clone()).await;
    alice.request(table_feed(1, "orders", true)).await;
    let mut initial = Vec::new();
    let cursor = loop {
        let event = alice.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                initial.push(columns(&change.key)["id"].clone())
            }
            Some(pb::event::Body::Ready(_)) => break event.cursor,
            other => panic!("unexpected {other:?}"),
        }
    };
    assert_eq!(initial, ["1"]);
    drop(alice);
    db.execute(
        "UPDATE orders SET tenant_id = 1 WHERE id = 2; \
         INSERT INTO orders VALUES (3, 2, 'b3'); \
         UPDATE orders SET tenant_id = 2 WHERE id = 1; \
         UPDATE orders SET item = 'hidden' WHERE id = 3; \
         INSERT INTO orders VALUES (4, 1, 'a4');",
    )
    .await;

    let mut again = Client::connect(server.local_addr()).await;
    login_with(&mut again, alice_claims).await;
    let support::Command::Subscribe(mut resume) = table_feed(1, "orders", true) else {
        unreachable!("table_feed makes a Subscribe");
    };
    resume.resume_from = cursor;
    let response = again.request(support::Command::Subscribe(resume)).await;
    assert!(
        matches!(response.result, Some(pb::response::Result::Subscribed(_))),
        "{response:?}"
    );
    let mut seen = Vec::new();
    loop {
        let event = again.recv_event().await;
        match event.body {
            Some(pb::event::Body::Change(change)) => {
                for row in [&change.old_row, &change.new_row].into_iter().flatten() {
                    assert_eq!(columns(&Some(row.clone()))["tenant_id"], "1", "{change:?}");
                }
                seen.push(format!(
                    "{:?} {}",
                    change.kind(),
                    columns(&change.key)["id"]
                ));
            }
            Some(pb::event::Body::Ready(_)) => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    // Row 2 moved into view (an insert), row 1 out of it (a delete); row 3 never shows.
    assert_eq!(seen, ["Insert 2", "Delete 1", "Insert 4"]);
    db.drop_db().await;
}
