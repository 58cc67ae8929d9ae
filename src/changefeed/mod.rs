//! PostgreSQL changefeeds (being written).
pub(crate) mod values;
