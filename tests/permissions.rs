//! Permissions against a real server (and a real PostgreSQL for tables): the seeds' model — users
//! own their `user.{sub}.#` topics, everyone reads `public.#`, admins do anything — with
//! forbidden topics and tables, name tricks, and denials that change nothing.

mod support;

use feedgate::auth::permissions::Rule;
use feedgate::config::Config;
use feedgate::protocol::pb;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::db::{config_for, table_feed, wait_connected, TestDb};
use support::tokens::{auth_config, claims, hello, sign};
use support::{start_with, stats, Client, ErrorCode};

fn rule(roles: &[&str], subscribe: &[&str], publish: &[&str], tables: &[&str]) -> Rule {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    Rule {
        roles: strings(roles),
        subscribe_topics: strings(subscribe),
        publish_topics: strings(publish),
        subscribe_tables: strings(tables),
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
