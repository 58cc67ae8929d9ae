//! The answer to `GetCatalog`: what the connection's principal may subscribe to, gathered from
//! the changefeed (watched tables) and the topic front (routing rules), each narrowed by the
//! permissions exactly as a subscribe would be. Reads; changes nothing.

use super::SessionContext;
use crate::auth::permissions::Action;
use crate::auth::Principal;
use crate::broker::RouteInfo;
use crate::config::BackendKind;
use crate::protocol::catalog::{Catalog, TopicBackend, TopicRoute};

/// The catalog for `principal`. A database that cannot be asked leaves the tables empty and
/// says why (`Catalog::tables_error`); the topics are listed either way.
pub(super) async fn catalog(ctx: &SessionContext, principal: &Principal) -> Catalog {
    let mut catalog = Catalog {
        topics: ctx
            .topics
            .routes()
            .into_iter()
            .filter_map(|route| topic_route(ctx, principal, route))
            .collect(),
        database: ctx.tables.is_some(),
        ..Catalog::default()
    };
    if let Some(changefeed) = &ctx.tables {
        let permissions = &ctx.permissions;
        let authorize =
            |schema: &str, table: &str| permissions.table_access(principal, schema, table);
        match changefeed.catalog(&authorize).await {
            Ok(tables) => catalog.tables = tables,
            Err(failure) => catalog.tables_error = Some(failure),
        }
    }
    catalog
}

/// A route as `principal` may use it; `None` when it may neither subscribe nor publish to any
/// of its topics.
fn topic_route(
    ctx: &SessionContext,
    principal: &Principal,
    route: RouteInfo,
) -> Option<TopicRoute> {
    let access = ctx.permissions.route_access(principal, &route.pattern);
    if !access.subscribe_some && !access.publish_some {
        return None;
    }
    let known_topics = route
        .known_topics
        .into_iter()
        .filter(|topic| {
            ctx.permissions
                .check(principal, Action::SubscribeTopic(topic))
                .is_ok()
        })
        .collect();
    Some(TopicRoute {
        pattern: route.pattern,
        backend: match route.backend {
            BackendKind::Memory => TopicBackend::Memory,
            BackendKind::Kafka => TopicBackend::Kafka,
            BackendKind::Rabbitmq => TopicBackend::Rabbitmq,
        },
        history: route.history,
        resume: route.resume,
        wildcards: route.wildcards,
        subscribe_all: access.subscribe_all,
        publish: access.publish_some,
        known_topics,
    })
}
