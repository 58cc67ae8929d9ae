//! `GetCatalog` against a real server and PostgreSQL: watched tables with their columns' types
//! and value kinds, topic routes with what their backends offer, the in-process topics with kept
//! messages (the `--demo` stream among them), and only what the principal's permissions allow.

mod support;

use feedgate::config::{BackendKind, PermissionRule, TopicRule};
use feedgate::protocol::pb;
use jsonwebtoken::Algorithm;
use serde_json::json;
use support::db::{config_for, wait_connected, TestDb};
use support::tokens::{auth_config, claims, hello, sign};
use support::{start_with, Client, Command};

fn get_catalog() -> Command {
    Command::GetCatalog(pb::GetCatalog {})
}

async fn catalog(client: &mut Client) -> pb::Catalog {
    match client.request(get_catalog()).await.result {
        Some(pb::response::Result::Catalog(catalog)) => catalog,
        other => panic!("expected a catalog, got {other:?}"),
    }
}

const SCHEMA: &str = "
    CREATE TABLE items (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10,2),
        ok boolean, added timestamptz, local timestamp, day date, tags jsonb, blob bytea,
        ratio double precision, labels text[], code uuid);
    CREATE SCHEMA shop;
    CREATE TABLE shop.orders (region text, number int, tenant_id int, PRIMARY KEY (region, number));
    CREATE TABLE unwatched (id int PRIMARY KEY);
    SELECT feedgate.watch('items');
    SELECT feedgate.watch('shop.orders');
";

#[tokio::test]
async fn lists_watched_tables_with_types_kinds_and_keys() {
    let db = TestDb::new().await;
    let server = start_with(config_for(&db)).await;
    wait_connected(server.local_addr()).await;
    db.execute(SCHEMA).await;
    let mut client = Client::connect(server.local_addr()).await;
    let catalog = catalog(&mut client).await;
    assert!(catalog.database);
    assert_eq!(catalog.tables_error, None);
    let names: Vec<&str> = catalog.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["public.items", "shop.orders"]);

    use pb::ValueKind as K;
    let items = &catalog.tables[0];
    let columns: Vec<(&str, &str, K)> = items
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.r#type.as_str(), c.kind()))
        .collect();
    assert_eq!(
        columns,
        [
            ("id", "bigint", K::Int),
            ("name", "text", K::Text),
            ("price", "numeric(10,2)", K::Numeric),
            ("ok", "boolean", K::Bool),
            ("added", "timestamp with time zone", K::TimestampMicros),
            (
                "local",
                "timestamp without time zone",
                K::LocalTimestampMicros
            ),
            ("day", "date", K::DateDays),
            ("tags", "jsonb", K::Json),
            ("blob", "bytea", K::Bytes),
            ("ratio", "double precision", K::Double),
            ("labels", "text[]", K::Json),
            ("code", "uuid", K::Text),
        ]
    );
    assert_eq!(items.primary_key, ["id"]);
    assert!(!items.row_filtered);
    assert_eq!(catalog.tables[1].primary_key, ["region", "number"]);

    // Without routing rules: one route, everything in-process, with history.
    let [route] = &catalog.topics[..] else {
        panic!("one route: {:?}", catalog.topics)
    };
    assert_eq!(route.pattern, "#");
    assert_eq!(route.backend(), pb::TopicBackend::Memory);
    assert!(route.history && route.resume && route.subscribe_all && route.publish);
    assert!(!route.wildcards);

    // A topic with kept messages is known.
    client.publish("news.today", b"hello").await;
    let catalog = self::catalog(&mut client).await;
    assert_eq!(catalog.topics[0].known_topics, ["news.today"]);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}

#[tokio::test]
async fn without_a_database_topics_are_listed_and_tables_are_not() {
    let mut config = support::test_config();
    config.demo = true;
    config.topics = vec![
        TopicRule {
            pattern: "orders.#".into(),
            backend: BackendKind::Kafka,
            allow_wildcards: false,
            stream: false,
        },
        TopicRule {
            pattern: "events.*".into(),
            backend: BackendKind::Rabbitmq,
            allow_wildcards: true,
            stream: false,
        },
        TopicRule {
            pattern: "#".into(),
            backend: BackendKind::Memory,
            allow_wildcards: false,
            stream: false,
        },
    ];
    let server = start_with(config).await;
    let mut client = Client::connect(server.local_addr()).await;
    // The demo stream's first tick is kept by the in-process broker.
    let mut catalog = catalog(&mut client).await;
    for _ in 0..50 {
        if !catalog.topics[2].known_topics.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        catalog = self::catalog(&mut client).await;
    }
    assert!(!catalog.database);
    assert!(catalog.tables.is_empty());
    assert_eq!(catalog.tables_error, None);
    let routes: Vec<(&str, pb::TopicBackend, bool, bool, bool)> = catalog
        .topics
        .iter()
        .map(|r| {
            (
                r.pattern.as_str(),
                r.backend(),
                r.history,
                r.resume,
                r.wildcards,
            )
        })
        .collect();
    assert_eq!(
        routes,
        [
            ("orders.#", pb::TopicBackend::Kafka, true, true, false),
            ("events.*", pb::TopicBackend::Rabbitmq, false, false, true),
            ("#", pb::TopicBackend::Memory, true, true, false),
        ]
    );
    assert_eq!(catalog.topics[2].known_topics, [feedgate::demo::TOPIC]);
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn shows_only_what_the_principal_may_use() {
    let db = TestDb::new().await;
    let mut config = auth_config();
    config.database_url = config_for(&db).database_url;
    config.permissions = vec![
        PermissionRule {
            roles: vec!["*".into()],
            subscribe_topics: vec!["public.#".into()],
            publish_topics: vec![],
            subscribe_tables: vec!["public.items".into()],
            row_filter: None,
        },
        PermissionRule {
            roles: vec!["shop".into()],
            subscribe_topics: vec!["#".into()],
            publish_topics: vec!["shop.{sub}.#".into()],
            subscribe_tables: vec!["shop.*".into()],
            row_filter: Some("tenant_id = {claims.tenant_id}".into()),
        },
    ];
    let server = start_with(config).await;
    wait_connected(server.local_addr()).await;
    db.execute(SCHEMA).await;
    let addr = server.local_addr();

    let login = |roles: serde_json::Value| {
        let mut claims = claims("ann");
        claims["roles"] = roles;
        claims["tenant_id"] = json!(7);
        hello(&sign(Algorithm::HS256, None, &claims))
    };
    let mut guest = Client::connect(addr).await;
    // Before authenticating there is no catalog.
    guest
        .expect_error(get_catalog(), support::ErrorCode::Unauthenticated)
        .await;
    guest.request(login(json!([]))).await;
    let seen = catalog(&mut guest).await;
    let names: Vec<&str> = seen.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, ["public.items"]);
    let [route] = &seen.topics[..] else {
        panic!("{:?}", seen.topics)
    };
    assert!(!route.subscribe_all && !route.publish);

    let mut shopper = Client::connect(addr).await;
    shopper.request(login(json!(["shop"]))).await;
    let seen = catalog(&mut shopper).await;
    let tables: Vec<(&str, bool)> = seen
        .tables
        .iter()
        .map(|t| (t.table.as_str(), t.row_filtered))
        .collect();
    assert_eq!(tables, [("public.items", false), ("shop.orders", true)]);
    assert!(seen.topics[0].subscribe_all && seen.topics[0].publish);
    server.shutdown().await.expect("shutdown");
    db.drop_db().await;
}
