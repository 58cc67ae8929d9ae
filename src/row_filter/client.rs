//! A client's `Filter` message as a [`RowFilter`]: the same evaluator as permissions' row
//! filters, so one engine decides what a subscriber sees (snapshot rows, and every change as an
//! insert, update or delete through the filter).
//!
//! A filter is checked twice, both before anything is subscribed. [`RowFilter::from_client`]
//! checks its shape (limits on nodes, depth and list length; every node complete; values of a
//! kind that compares) and [`RowFilter::check_client_columns`] checks it against the table
//! (every column exists, and each value is of the column's kind). Each refusal names the node or
//! the column at fault.

use super::{Expr, Lit, Op, RowFilter, Scalar};
use crate::protocol::{pb, Code, Failure};

/// The most nodes a client's filter may have.
pub const MAX_NODES: usize = 256;
/// The deepest a client's filter may nest.
pub const MAX_DEPTH: usize = 16;
/// The most values a `one_of` may list.
pub const MAX_VALUES: usize = 1_000;

/// Why a client's filter is refused: where (a path of node names from the root, such as
/// `all_of[1].compare`, or a column) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("filter {at}: {reason}")]
pub struct FilterError {
    /// The node or column at fault.
    pub at: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FilterError {
    /// The answer to the subscription to `name` (a `table` or `topic`, as `source` says):
    /// `VALIDATION`, naming the part at fault.
    pub fn failure(&self, source: &'static str, name: &str) -> Failure {
        Failure::new(Code::Validation, self.to_string())
            .detail(source, name)
            .detail("filter", &self.at)
    }
}

/// What a column holds, as far as a filter's values must agree with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// smallint, integer, bigint, real, double precision, numeric: compared with numbers.
    Number,
    /// text, varchar: compared with text.
    Text,
    /// boolean, uuid, enums and other types without a kind of their own: compared with
    /// booleans or text (in PostgreSQL's text form).
    Other,
    /// timestamptz or timestamp: compared with microseconds.
    Timestamp,
    /// date: compared with days.
    Date,
    /// bytea, json, arrays: nothing compares with them (only `is_null`).
    Opaque,
}

/// Reads an operand as the name its evaluator looks up, or says why it does not apply.
pub(super) type Operands = dyn Fn(&pb::operand::Of) -> Result<String, String>;

/// A table filter's operands: columns.
fn columns(operand: &pb::operand::Of) -> Result<String, String> {
    match operand {
        pb::operand::Of::Column(name) if !name.is_empty() => Ok(name.clone()),
        _ => Err("a table filter's operand must name a column".into()),
    }
}

/// Builds a client's filter tree, its operands read by `operands`.
pub(super) fn build_tree(
    filter: &pb::Filter,
    operands: &Operands,
) -> Result<Expr<Scalar>, FilterError> {
    let mut nodes = 0;
    build(filter, "filter", 1, &mut nodes, operands)
}

impl RowFilter {
    /// Builds a client's filter, or says which node is at fault.
    pub fn from_client(filter: &pb::Filter) -> Result<Self, FilterError> {
        Ok(Self {
            expr: build_tree(filter, &columns)?,
        })
    }

    /// Checks a client's filter against the table: `kind_of` gives a column's kind, `None` for
    /// a column the table lacks.
    pub fn check_client_columns(
        &self,
        kind_of: &dyn Fn(&str) -> Option<FilterKind>,
    ) -> Result<(), FilterError> {
        check(&self.expr, kind_of)
    }
}

fn build(
    filter: &pb::Filter,
    at: &str,
    depth: usize,
    nodes: &mut usize,
    operands: &Operands,
) -> Result<Expr<Scalar>, FilterError> {
    let column = |operand: Option<&pb::Operand>, at: &str| column(operand, at, operands);
    use pb::filter::Node;
    *nodes += 1;
    let refuse = |reason: String| FilterError {
        at: at.to_owned(),
        reason,
    };
    if *nodes > MAX_NODES {
        return Err(refuse(format!("more than {MAX_NODES} nodes")));
    }
    if depth > MAX_DEPTH {
        return Err(refuse(format!("nested deeper than {MAX_DEPTH}")));
    }
    let Some(node) = &filter.node else {
        return Err(refuse("an empty node (set one of its cases)".into()));
    };
    Ok(match node {
        Node::Compare(compare) => {
            let at = format!("{at}.compare");
            let column = column(compare.operand.as_ref(), &at)?;
            let op = match pb::CompareOp::try_from(compare.op) {
                Ok(pb::CompareOp::Eq) => Op::Eq,
                Ok(pb::CompareOp::Ne) => Op::Ne,
                Ok(pb::CompareOp::Lt) => Op::Lt,
                Ok(pb::CompareOp::Le) => Op::Le,
                Ok(pb::CompareOp::Gt) => Op::Gt,
                Ok(pb::CompareOp::Ge) => Op::Ge,
                _ => {
                    return Err(FilterError {
                        at,
                        reason: format!("op {} is not a comparison", compare.op),
                    })
                }
            };
            let value = scalar(compare.value.as_ref(), &at)?;
            Expr::Compare { column, op, value }
        }
        Node::OneOf(one_of) => {
            let at = format!("{at}.one_of");
            let column = column(one_of.operand.as_ref(), &at)?;
            if one_of.values.len() > MAX_VALUES {
                return Err(FilterError {
                    at,
                    reason: format!(
                        "{} values; at most {MAX_VALUES} are allowed",
                        one_of.values.len()
                    ),
                });
            }
            let values = one_of
                .values
                .iter()
                .enumerate()
                .map(|(i, value)| scalar(Some(value), &format!("{at}.values[{i}]")))
                .collect::<Result<_, _>>()?;
            Expr::In {
                column,
                values,
                negated: false,
            }
        }
        Node::IsNull(is_null) => Expr::IsNull {
            column: column(is_null.operand.as_ref(), &format!("{at}.is_null"))?,
            negated: is_null.negated,
        },
        Node::Prefix(prefix) => Expr::Prefix {
            column: column(prefix.operand.as_ref(), &format!("{at}.prefix"))?,
            prefix: prefix.prefix.clone(),
        },
        Node::AllOf(all) => Expr::And(items(
            &all.items,
            &format!("{at}.all_of"),
            depth,
            nodes,
            operands,
        )?),
        Node::AnyOf(any) => Expr::Or(items(
            &any.items,
            &format!("{at}.any_of"),
            depth,
            nodes,
            operands,
        )?),
        Node::Negate(item) => Expr::Not(Box::new(build(
            item,
            &format!("{at}.negate"),
            depth + 1,
            nodes,
            operands,
        )?)),
    })
}

fn items(
    items: &[pb::Filter],
    at: &str,
    depth: usize,
    nodes: &mut usize,
    operands: &Operands,
) -> Result<Vec<Expr<Scalar>>, FilterError> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| build(item, &format!("{at}[{i}]"), depth + 1, nodes, operands))
        .collect()
}

fn column(
    operand: Option<&pb::Operand>,
    at: &str,
    operands: &Operands,
) -> Result<String, FilterError> {
    let refuse = |reason: String| FilterError {
        at: format!("{at}.operand"),
        reason,
    };
    match operand.and_then(|operand| operand.of.as_ref()) {
        Some(of) => operands(of).map_err(refuse),
        None => Err(refuse("no operand".into())),
    }
}

fn scalar(value: Option<&pb::Value>, at: &str) -> Result<Scalar, FilterError> {
    use pb::value::Kind;
    let refuse = |reason: &str| FilterError {
        at: format!("{at}.value"),
        reason: reason.to_owned(),
    };
    let Some(kind) = value.and_then(|value| value.kind.as_ref()) else {
        return Err(refuse("no value (use is_null to test for NULL)"));
    };
    Ok(match kind {
        Kind::Bool(b) => Scalar::Bool(*b),
        Kind::Int(i) => Scalar::Number(Lit::new(i.to_string())),
        Kind::Double(d) if d.is_nan() => Scalar::Number(Lit::new("NaN")),
        Kind::Double(d) if d.is_infinite() => {
            Scalar::Number(Lit::new(if *d > 0.0 { "Infinity" } else { "-Infinity" }))
        }
        Kind::Double(d) => Scalar::Number(Lit::new(format!("{d:e}"))),
        Kind::Numeric(n) => {
            if super::eval::Decimal::parse(n.trim()).is_none() {
                return Err(refuse(&format!("{n:?} is not a number")));
            }
            Scalar::Number(Lit::new(n.trim()))
        }
        Kind::Text(t) => Scalar::Text(Lit::new(t.as_str())),
        Kind::TimestampMicros(t) | Kind::LocalTimestampMicros(t) => Scalar::Micros(*t),
        Kind::DateDays(d) => Scalar::Days(*d),
        Kind::Null(_) => return Err(refuse("null compares with nothing (use is_null)")),
        Kind::Bytes(_) | Kind::Json(_) => {
            return Err(refuse("bytes and json values compare with nothing"))
        }
    })
}

fn check(
    expr: &Expr<Scalar>,
    kind_of: &dyn Fn(&str) -> Option<FilterKind>,
) -> Result<(), FilterError> {
    let kind = |column: &str| {
        kind_of(column).ok_or_else(|| FilterError {
            at: format!("column {column}"),
            reason: "the table has no such column".into(),
        })
    };
    let agrees = |column: &str, value: &Scalar| -> Result<(), FilterError> {
        let kind = kind(column)?;
        let fits = matches!(
            (kind, value),
            (FilterKind::Other, Scalar::Bool(_) | Scalar::Text(_))
                | (FilterKind::Number, Scalar::Number(_))
                | (FilterKind::Text, Scalar::Text(_))
                | (FilterKind::Timestamp, Scalar::Micros(_))
                | (FilterKind::Date, Scalar::Days(_))
        );
        if fits {
            return Ok(());
        }
        Err(FilterError {
            at: format!("column {column}"),
            reason: format!(
                "a {} column does not compare with {}",
                name(kind),
                shown(value)
            ),
        })
    };
    match expr {
        Expr::And(items) | Expr::Or(items) => items.iter().try_for_each(|e| check(e, kind_of)),
        Expr::Not(item) => check(item, kind_of),
        Expr::Compare { column, value, .. } => agrees(column, value),
        Expr::In { column, values, .. } => values.iter().try_for_each(|v| agrees(column, v)),
        Expr::IsNull { column, .. } => kind(column).map(|_| ()),
        Expr::Prefix { column, .. } => match kind(column)? {
            FilterKind::Text | FilterKind::Other => Ok(()),
            other => Err(FilterError {
                at: format!("column {column}"),
                reason: format!("a prefix test needs a text column, not a {}", name(other)),
            }),
        },
    }
}

fn name(kind: FilterKind) -> &'static str {
    match kind {
        FilterKind::Number => "numeric",
        FilterKind::Text => "text",
        FilterKind::Other => "boolean or other",
        FilterKind::Timestamp => "timestamp",
        FilterKind::Date => "date",
        FilterKind::Opaque => "bytea or json",
    }
}

fn shown(value: &Scalar) -> String {
    match value {
        Scalar::Bool(b) => format!("the boolean {b}"),
        Scalar::Number(n) => format!("the number {n}"),
        Scalar::Text(t) => format!("the text {t:?}"),
        Scalar::Micros(_) => "a timestamp".into(),
        Scalar::Days(_) => "a date".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Value;

    fn col(name: &str) -> Option<pb::Operand> {
        Some(pb::Operand {
            of: Some(pb::operand::Of::Column(name.into())),
        })
    }

    fn node(node: pb::filter::Node) -> pb::Filter {
        pb::Filter { node: Some(node) }
    }

    fn compare(column: &str, op: pb::CompareOp, value: pb::value::Kind) -> pb::Filter {
        node(pb::filter::Node::Compare(pb::Comparison {
            operand: col(column),
            op: op as i32,
            value: Some(pb::Value { kind: Some(value) }),
        }))
    }

    fn all(items: Vec<pb::Filter>) -> pb::Filter {
        node(pb::filter::Node::AllOf(pb::Filters { items }))
    }

    fn row(status: &str, n: i64) -> crate::protocol::Row {
        vec![
            ("n".into(), Value::Int(n)),
            ("status".into(), Value::Text(status.into())),
        ]
    }

    #[test]
    fn a_client_filter_matches_as_written() {
        use pb::value::Kind;
        let filter = all(vec![
            compare("status", pb::CompareOp::Eq, Kind::Text("open".into())),
            node(pb::filter::Node::Negate(Box::new(compare(
                "n",
                pb::CompareOp::Gt,
                Kind::Numeric("10.5".into()),
            )))),
            node(pb::filter::Node::Prefix(pb::Prefix {
                operand: col("status"),
                prefix: "op".into(),
            })),
        ]);
        let filter = RowFilter::from_client(&filter).expect("valid");
        assert!(filter.matches(&row("open", 10)));
        assert!(!filter.matches(&row("open", 11)));
        assert!(!filter.matches(&row("closed", 1)));
        let kinds = |column: &str| match column {
            "n" => Some(FilterKind::Number),
            "status" => Some(FilterKind::Text),
            _ => None,
        };
        assert_eq!(filter.check_client_columns(&kinds), Ok(()));
    }

    #[test]
    fn each_refusal_names_the_node_or_column_at_fault() {
        use pb::value::Kind;
        let refused = |filter: pb::Filter| RowFilter::from_client(&filter).expect_err("refused");
        let empty = refused(all(vec![
            compare("n", pb::CompareOp::Eq, Kind::Int(1)),
            pb::Filter { node: None },
        ]));
        assert_eq!(empty.at, "filter.all_of[1]");
        let bad_op = refused(compare("n", pb::CompareOp::Unspecified, Kind::Int(1)));
        assert_eq!(bad_op.at, "filter.compare");
        let null = refused(compare("n", pb::CompareOp::Eq, Kind::Null(0)));
        assert!(null.reason.contains("is_null"), "{null}");
        let mut deep = compare("n", pb::CompareOp::Eq, Kind::Int(1));
        for _ in 0..MAX_DEPTH {
            deep = node(pb::filter::Node::Negate(Box::new(deep)));
        }
        assert!(refused(deep).reason.contains("deeper than 16"));
        let wide = all((0..MAX_NODES)
            .map(|i| compare("n", pb::CompareOp::Eq, Kind::Int(i as i64)))
            .collect());
        assert!(refused(wide).reason.contains("more than 256 nodes"));
        let long = node(pb::filter::Node::OneOf(pb::OneOf {
            operand: col("n"),
            values: vec![
                pb::Value {
                    kind: Some(Kind::Int(1))
                };
                MAX_VALUES + 1
            ],
        }));
        assert!(refused(long).reason.contains("at most 1000"));

        let kinds = |column: &str| (column == "n").then_some(FilterKind::Number);
        let check = |filter: pb::Filter| {
            RowFilter::from_client(&filter)
                .expect("well formed")
                .check_client_columns(&kinds)
                .expect_err("refused by the table")
        };
        let missing = check(compare("nope", pb::CompareOp::Eq, Kind::Int(1)));
        assert_eq!(missing.at, "column nope");
        let mismatch = check(compare("n", pb::CompareOp::Eq, Kind::Text("x".into())));
        assert!(
            mismatch
                .reason
                .contains("numeric column does not compare with the text"),
            "{mismatch}"
        );
    }
}
