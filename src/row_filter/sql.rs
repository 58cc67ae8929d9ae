//! The SQL prefilter: the part of a row filter the database can apply to a snapshot query with
//! the same result as [`RowFilter::matches`].

use super::{Expr, Op, RowFilter, Scalar};

/// A column kind a prefilter can compare in SQL with the same result as [`RowFilter::matches`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlColumn {
    /// smallint, integer, bigint: compared with bigint parameters.
    Integer,
    /// text, varchar: equality with text parameters (byte equality, as `matches` compares).
    Text,
}

/// A parameter of a prefilter's SQL, bound in order as `$1`, `$2`, ...
#[derive(Debug, Clone, PartialEq)]
pub enum SqlParam {
    /// A bigint.
    Int(i64),
    /// A bigint[] (for `= ANY`).
    Ints(Vec<i64>),
    /// A text.
    Text(String),
    /// A text[] (for `= ANY`).
    Texts(Vec<String>),
}

impl RowFilter {
    /// A SQL condition on the table aliased `r` that holds for every row [`Self::matches`]
    /// accepts, and may hold for others: the snapshot query uses it to let the database skip
    /// rows (and use an index), and still checks each row it returns with `matches`, which
    /// stays the only judge. Only comparisons whose SQL result is known to equal `matches`'
    /// (integer columns with integer values, text equality, null tests on those) are
    /// translated; anything else becomes `TRUE`. Values are bound as parameters, never
    /// written into the SQL; column names are quoted.
    pub fn sql_prefilter(
        &self,
        column: &dyn Fn(&str) -> Option<SqlColumn>,
    ) -> (String, Vec<SqlParam>) {
        let mut params = Vec::new();
        let sql = prefilter(&self.expr, column, &mut params).unwrap_or_else(|| "TRUE".into());
        (sql, params)
    }
}

/// `None` stands for `TRUE` (nothing to prune).
fn prefilter(
    expr: &Expr<Scalar>,
    column: &dyn Fn(&str) -> Option<SqlColumn>,
    params: &mut Vec<SqlParam>,
) -> Option<String> {
    match expr {
        Expr::And(items) => {
            let parts: Vec<String> = items
                .iter()
                .filter_map(|e| prefilter(e, column, params))
                .collect();
            (!parts.is_empty()).then(|| format!("({})", parts.join(" AND ")))
        }
        // An empty OR holds for no row (a client's empty `any_of`): `()` is not SQL.
        Expr::Or(items) if items.is_empty() => Some("FALSE".into()),
        Expr::Or(items) => {
            let mut parts = Vec::with_capacity(items.len());
            let before = params.len();
            for item in items {
                match prefilter(item, column, params) {
                    Some(part) => parts.push(part),
                    None => {
                        params.truncate(before); // one branch prunes nothing: neither does OR
                        return None;
                    }
                }
            }
            Some(format!("({})", parts.join(" OR ")))
        }
        Expr::Compare {
            column: name,
            op,
            value,
        } => {
            let sql_op = match op {
                Op::Eq => "=",
                Op::Ne => "<>",
                Op::Lt => "<",
                Op::Le => "<=",
                Op::Gt => ">",
                Op::Ge => ">=",
            };
            match (column(name)?, value) {
                (SqlColumn::Integer, Scalar::Number(n) | Scalar::Text(n)) => {
                    let n = n.trim().parse::<i64>().ok()?;
                    let p = param(SqlParam::Int(n), params);
                    Some(format!("{} {sql_op} {p}::int8", quote(name)))
                }
                (SqlColumn::Text, Scalar::Text(t) | Scalar::Number(t)) if *op == Op::Eq => {
                    let p = param(SqlParam::Text(t.to_string()), params);
                    Some(format!("{} = {p}::text", quote(name)))
                }
                _ => None,
            }
        }
        Expr::In {
            column: name,
            values,
            negated: false,
        } => match column(name)? {
            SqlColumn::Integer => {
                let ints = values
                    .iter()
                    .map(|v| match v {
                        Scalar::Number(n) | Scalar::Text(n) => n.trim().parse::<i64>().ok(),
                        Scalar::Bool(_) | Scalar::Micros(_) | Scalar::Days(_) => None,
                    })
                    .collect::<Option<Vec<i64>>>()?;
                let p = param(SqlParam::Ints(ints), params);
                Some(format!("{} = ANY({p}::int8[])", quote(name)))
            }
            SqlColumn::Text => {
                let texts = values
                    .iter()
                    .map(|v| match v {
                        Scalar::Number(t) | Scalar::Text(t) => Some(t.to_string()),
                        Scalar::Bool(_) | Scalar::Micros(_) | Scalar::Days(_) => None,
                    })
                    .collect::<Option<Vec<String>>>()?;
                let p = param(SqlParam::Texts(texts), params);
                Some(format!("{} = ANY({p}::text[])", quote(name)))
            }
        },
        // Two-valued NOT differs from SQL's on NULL, and a prefix test is rarely indexed: both
        // prune nothing (every row they keep is still checked by `matches`).
        Expr::In { negated: true, .. } | Expr::Not(_) | Expr::Prefix { .. } => None,
        Expr::IsNull {
            column: name,
            negated,
        } => {
            column(name)?;
            let not = if *negated { " NOT" } else { "" };
            Some(format!("{} IS{not} NULL", quote(name)))
        }
    }
}

/// Adds a parameter; returns its placeholder.
fn param(p: SqlParam, params: &mut Vec<SqlParam>) -> String {
    params.push(p);
    format!("${}", params.len())
}

/// `r."name"`, with embedded quotes doubled.
fn quote(name: &str) -> String {
    format!("r.\"{}\"", name.replace('"', "\"\""))
}
