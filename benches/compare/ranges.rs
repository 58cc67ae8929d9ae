//! Filtered table subscriptions laid out over connections, for the `filtered` scenario: which
//! ranges of an integer column each connection subscribes to, the request each range becomes in
//! each system's protocol, and how many rows each connection is then to receive, from the rows
//! written per key. It writes nothing and measures nothing.

use std::collections::HashMap;
use std::ops::Range;

use anyhow::{bail, Result};
use serde::{Deserialize, Serialize};
use tokio_tungstenite::tungstenite::Message;

use feedgate::protocol::pb;

use crate::load::{self, Ws};
use crate::systems::Proto;

/// Subscriptions to one table, each to a range of one integer column's values (keys), laid
/// out over connections group after group; each group's ranges follow one another from key 1.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyRanges {
    /// `schema.table`.
    pub table: String,
    /// The integer column the ranges are of.
    pub column: String,
    /// Connection 0 is the first group's first; past the last group a connection subscribes
    /// to nothing.
    pub groups: Vec<RangeGroup>,
}

/// Connections that each hold the same number of subscriptions of the same width.
#[derive(Clone, Copy, Serialize, Deserialize)]
pub struct RangeGroup {
    pub connections: usize,
    /// Subscriptions per connection.
    pub per_connection: usize,
    /// Keys per subscription: 1 subscribes with `column = key` (what an index of equality
    /// conditions serves), more with `column >= first AND column < first + width`.
    pub width: i64,
}

impl KeyRanges {
    /// Connections of all groups.
    pub fn connections(&self) -> usize {
        self.groups.iter().map(|g| g.connections).sum()
    }

    /// Subscriptions of all groups.
    pub fn subscriptions(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.connections * g.per_connection)
            .sum()
    }

    /// The key ranges connection `connection`'s subscriptions take, one per subscription.
    pub fn of(&self, mut connection: usize) -> Vec<Range<i64>> {
        for group in &self.groups {
            if connection < group.connections {
                let first = (connection * group.per_connection) as i64;
                return (first..first + group.per_connection as i64)
                    .map(|n| 1 + n * group.width..1 + (n + 1) * group.width)
                    .collect();
            }
            connection -= group.connections;
        }
        Vec::new()
    }

    /// What each connection is to receive when `rows_per_key` rows were written per key: the
    /// rows of each of its ranges (a row in two of its ranges counts twice, as it is sent once
    /// per subscription).
    pub fn expected(&self, rows_per_key: &HashMap<i64, u64>) -> Vec<u64> {
        (0..self.connections())
            .map(|connection| {
                self.of(connection)
                    .into_iter()
                    .flatten()
                    .map(|key| rows_per_key.get(&key).copied().unwrap_or(0))
                    .sum()
            })
            .collect()
    }
}

/// feedgate's filter for `column` in `range`.
fn filter(column: &str, range: &Range<i64>) -> pb::Filter {
    let compare = |op: pb::CompareOp, value: i64| pb::Filter {
        node: Some(pb::filter::Node::Compare(pb::Comparison {
            operand: Some(pb::Operand {
                of: Some(pb::operand::Of::Column(column.to_owned())),
            }),
            op: op as i32,
            value: Some(pb::Value {
                kind: Some(pb::value::Kind::Int(value)),
            }),
        })),
    };
    if range.end - range.start == 1 {
        return compare(pb::CompareOp::Eq, range.start);
    }
    pb::Filter {
        node: Some(pb::filter::Node::AllOf(pb::Filters {
            items: vec![
                compare(pb::CompareOp::Ge, range.start),
                compare(pb::CompareOp::Lt, range.end),
            ],
        })),
    }
}

/// Subscribes connection `connection` of `plan` to its ranges, pipelined, and returns once
/// the system confirmed them all.
pub async fn subscribe(
    proto: Proto,
    ws: &mut Ws,
    plan: &KeyRanges,
    connection: usize,
) -> Result<()> {
    let (table, column) = (&plan.table, &plan.column);
    let ranges = plan.of(connection);
    let requests = ranges.iter().zip(1..).map(|(range, id)| match proto {
        Proto::Feedgate => Ok(load::subscribe_request(
            id,
            pb::subscribe::Source::Table(pb::TableFeed {
                table: table.clone(),
                filter: Some(filter(column, range)),
                ..Default::default()
            }),
        )),
        Proto::Python => Ok(Message::text(format!(
            "{{\"op\":\"subscribe\",\"table\":\"{table}\",\
             \"filter\":{{\"column\":\"{column}\",\"gte\":{},\"lt\":{}}}}}",
            range.start, range.end
        ))),
        Proto::Nats => bail!("NATS has no tables"),
    });
    load::subscribe_all(proto, ws, requests.collect::<Result<_>>()?).await
}
