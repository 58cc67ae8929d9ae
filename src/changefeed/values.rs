//! PLACEHOLDER being written: conversion of `to_jsonb(row)` output into typed values.
use std::collections::HashMap;

use crate::protocol::{Row, Value};

/// A column's type, as far as value conversion cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ColumnType {
    /// Anything else.
    Other,
}

impl ColumnType {
    pub(crate) fn from_regtype(_regtype: &str) -> Self {
        Self::Other
    }
}

pub(crate) fn convert(_ty: &ColumnType, _json: serde_json::Value) -> Value {
    Value::Null
}

pub(crate) fn convert_row(_types: &HashMap<String, ColumnType>, _json: serde_json::Value) -> Row {
    Vec::new()
}
