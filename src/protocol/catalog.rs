//! The catalog a connection may ask for (`GetCatalog`): the watched tables and topic routes its
//! principal may use, as domain values, and their encoding. Pure: what goes in it is decided by
//! the session from the changefeed, the broker front and the permissions.

use super::{pb, Failure};

/// The kind a column's values arrive as: the generated enum, a plain list of names.
pub use pb::ValueKind;

/// Which backend serves a route's topics: the generated enum, a plain list of names.
pub use pb::TopicBackend;

/// The answer to `GetCatalog`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    /// Watched tables the principal may subscribe to, by name.
    pub tables: Vec<CatalogTable>,
    /// Routes serving a topic the principal may subscribe or publish to, in rule order.
    pub topics: Vec<TopicRoute>,
    /// Whether the server has a database configured.
    pub database: bool,
    /// Why the tables could not be listed, when they could not.
    pub tables_error: Option<Failure>,
}

/// A watched table, as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogTable {
    /// `schema.table`.
    pub table: String,
    /// Every column, in the table's order.
    pub columns: Vec<CatalogColumn>,
    /// The primary key's columns in key order.
    pub primary_key: Vec<String>,
    /// A permission row filter narrows what the principal sees.
    pub row_filtered: bool,
}

/// One column of a watched table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogColumn {
    /// Its name.
    pub name: String,
    /// Its PostgreSQL type (`format_type`), so clients can show it.
    pub pg_type: String,
    /// The `Value` kind its values arrive as, so clients can type and compare them.
    pub kind: ValueKind,
}

/// A topic routing rule as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicRoute {
    /// The rule's pattern.
    pub pattern: String,
    /// The backend serving it.
    pub backend: TopicBackend,
    /// Subscriptions may start from EARLIEST or an OFFSET.
    pub history: bool,
    /// Subscriptions may resume from a cursor.
    pub resume: bool,
    /// Subscriptions may name wildcard topics.
    pub wildcards: bool,
    /// The principal may subscribe to every topic the pattern matches.
    pub subscribe_all: bool,
    /// The principal may publish to at least one topic the pattern matches.
    pub publish: bool,
    /// Topics of this route the server knows of now (in-process topics with kept messages)
    /// that the principal may subscribe to.
    pub known_topics: Vec<String>,
}

/// The `Catalog` message.
pub(super) fn catalog(catalog: Catalog) -> pb::Catalog {
    pb::Catalog {
        tables: catalog
            .tables
            .into_iter()
            .map(|table| pb::CatalogTable {
                table: table.table,
                columns: table
                    .columns
                    .into_iter()
                    .map(|column| pb::CatalogColumn {
                        name: column.name,
                        r#type: column.pg_type,
                        kind: column.kind.into(),
                    })
                    .collect(),
                primary_key: table.primary_key,
                row_filtered: table.row_filtered,
            })
            .collect(),
        topics: catalog
            .topics
            .into_iter()
            .map(|route| pb::TopicRoute {
                pattern: route.pattern,
                backend: route.backend.into(),
                history: route.history,
                resume: route.resume,
                wildcards: route.wildcards,
                subscribe_all: route.subscribe_all,
                publish: route.publish,
                known_topics: route.known_topics,
            })
            .collect(),
        database: catalog.database,
        tables_error: catalog.tables_error.as_ref().map(super::encode::error),
    }
}
