//! What `/v1/stats` reports per source kind (in-process topics, Kafka, RabbitMQ, tables):
//! subscriptions now, events delivered since start, and the delivery rate over the last
//! [`RATE_WINDOW`].
//!
//! Counting is not done here: each source's registry counts the events fan-out queues (one
//! relaxed atomic add per delivery call, under the lock that delivery holds anyway; see
//! `registry::Registry::delivered`). This module reads those totals: a task samples them once a
//! second into a short ring ([`Rates`]), and a rate is the difference between the totals now
//! and the oldest sample still in the window, divided by the time between them. Reading stats
//! takes one brief lock on the ring; fan-out never touches it. No I/O, no HTTP.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::broker::Topics;
use crate::changefeed::Changefeed;
use crate::config::BackendKind;
use crate::registry::Tally;

/// How far back a delivery rate looks: events per second over the last 10 seconds (over the
/// time since start, in the first 10 seconds).
pub(crate) const RATE_WINDOW: Duration = Duration::from_secs(10);

/// How often the totals are sampled; a rate's window is [`RATE_WINDOW`] to within this.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// One value per source kind, in `/v1/stats`'s `sources` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub(crate) struct PerKind<T> {
    /// In-process topics.
    pub(crate) memory: T,
    /// Topics routed to Kafka.
    pub(crate) kafka: T,
    /// Topics routed to RabbitMQ (queues and streams).
    pub(crate) rabbitmq: T,
    /// Table changefeeds.
    pub(crate) table: T,
}

impl<T> PerKind<T> {
    fn map<U>(self, mut f: impl FnMut(T) -> U) -> PerKind<U> {
        PerKind {
            memory: f(self.memory),
            kafka: f(self.kafka),
            rabbitmq: f(self.rabbitmq),
            table: f(self.table),
        }
    }

    fn zip<U>(self, other: PerKind<U>) -> PerKind<(T, U)> {
        PerKind {
            memory: (self.memory, other.memory),
            kafka: (self.kafka, other.kafka),
            rabbitmq: (self.rabbitmq, other.rabbitmq),
            table: (self.table, other.table),
        }
    }
}

/// Every source kind's tally now (zeros for a kind that is not configured).
pub(crate) fn tallies(topics: &Topics, tables: Option<&Changefeed>) -> PerKind<Tally> {
    PerKind {
        memory: topics.tally(BackendKind::Memory),
        kafka: topics.tally(BackendKind::Kafka),
        rabbitmq: topics.tally(BackendKind::Rabbitmq),
        table: tables.map_or_else(Tally::default, Changefeed::tally),
    }
}

/// One kind's line in `/v1/stats`'s `sources`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub(crate) struct KindStats {
    /// Active subscriptions now.
    pub(crate) subscriptions: usize,
    /// Events queued to subscribers since start, counted per subscriber.
    pub(crate) delivered: u64,
    /// Of those, per second over the last [`RATE_WINDOW`] (two decimals).
    pub(crate) delivered_per_second: f64,
}

/// Totals as sampled at one instant.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    delivered: PerKind<u64>,
}

/// The delivery totals of the last [`RATE_WINDOW`], one sample a second (at most a dozen).
#[derive(Debug, Default)]
pub(crate) struct Rates {
    samples: Mutex<VecDeque<Sample>>,
}

impl Rates {
    /// Remembers the totals `delivered` at `at`, forgetting samples older than the window.
    fn record(&self, at: Instant, delivered: PerKind<u64>) {
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.push_back(Sample { at, delivered });
        while samples
            .front()
            .is_some_and(|oldest| at.duration_since(oldest.at) > RATE_WINDOW)
        {
            samples.pop_front();
        }
    }

    /// Each kind's line: its tally now, and its rate since the oldest sample in the window
    /// (0 before the first sample, or at the very instant of it).
    pub(crate) fn stats(&self, now: Instant, tallies: PerKind<Tally>) -> PerKind<KindStats> {
        let oldest = self
            .samples
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .front()
            .copied();
        let delivered = tallies.map(|t| t.delivered);
        let rates = match oldest {
            Some(oldest) => per_second(oldest, now, delivered),
            None => PerKind::default(),
        };
        tallies.zip(rates).map(|(tally, rate)| KindStats {
            subscriptions: tally.subscriptions,
            delivered: tally.delivered,
            delivered_per_second: rate,
        })
    }
}

/// Events per second between `since` and the totals `delivered` at `now`, rounded to two
/// decimals.
fn per_second(since: Sample, now: Instant, delivered: PerKind<u64>) -> PerKind<f64> {
    let seconds = now.duration_since(since.at).as_secs_f64();
    delivered.zip(since.delivered).map(|(now, then)| {
        if seconds < 0.001 {
            return 0.0;
        }
        // Counts are far below 2^52 for any real uptime, so the conversion is exact.
        let rate = now.saturating_sub(then) as f64 / seconds;
        (rate * 100.0).round() / 100.0
    })
}

/// Samples `totals` into `rates` every [`SAMPLE_EVERY`] (first at once) until `stop`. Runs as
/// one tracked task for the server's life.
pub(crate) async fn sample(
    rates: Arc<Rates>,
    totals: impl Fn() -> PerKind<u64>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            at = tick.tick() => rates.record(at, totals()),
        }
    }
}

/// The per-kind delivery totals of `topics` and `tables`, as the sampler reads them.
pub(crate) fn delivered(topics: &Topics, tables: Option<&Changefeed>) -> PerKind<u64> {
    tallies(topics, tables).map(|t| t.delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(memory: u64, table: u64) -> PerKind<u64> {
        PerKind {
            memory,
            table,
            ..PerKind::default()
        }
    }

    fn tallies(memory: u64, table: u64) -> PerKind<Tally> {
        totals(memory, table).map(|delivered| Tally {
            subscriptions: 1,
            delivered,
        })
    }

    #[test]
    fn a_rate_is_the_growth_since_the_oldest_sample_in_the_window() {
        let rates = Rates::default();
        let start = Instant::now();
        let none = rates.stats(start, tallies(5, 0));
        assert_eq!(none.memory.delivered_per_second, 0.0, "no sample yet");
        assert_eq!(none.memory.delivered, 5);
        rates.record(start, totals(0, 0));
        let early = rates.stats(start + Duration::from_secs(2), tallies(10, 3));
        assert_eq!(early.memory.delivered_per_second, 5.0, "since start");
        assert_eq!(early.table.delivered_per_second, 1.5);
        assert_eq!(early.kafka.delivered_per_second, 0.0);
        for second in 1..=15 {
            rates.record(start + Duration::from_secs(second), totals(second * 100, 0));
        }
        // The oldest kept sample is 10 s before the newest (at 5 s: 500).
        let later = rates.stats(start + Duration::from_secs(15), tallies(1500, 0));
        assert_eq!(later.memory.delivered_per_second, 100.0);
        assert_eq!(rates.samples.lock().expect("not poisoned").len(), 11);
    }

    #[test]
    fn rates_are_rounded_and_never_negative() {
        let since = Sample {
            at: Instant::now(),
            delivered: totals(10, 0),
        };
        let rate = per_second(since, since.at + Duration::from_secs(3), totals(11, 0));
        assert_eq!(rate.memory, 0.33);
        let same_instant = per_second(since, since.at, totals(20, 0));
        assert_eq!(same_instant.memory, 0.0);
        let behind = per_second(since, since.at + Duration::from_secs(1), totals(0, 0));
        assert_eq!(behind.memory, 0.0);
    }
}
