//! This node's Kafka consumer lag: how many records its consumers (shared and private feeds
//! alike) are behind their partitions' high watermarks, summed, for `/metrics`.
//!
//! Each consumer task records its next offset per partition as it delivers ([`Progress`]); a
//! sampler task, off the delivery path, asks the brokers for the high watermarks of the
//! partitions being read every [`LAG_INTERVAL`] and sums `high - next`. It asks the brokers
//! rather than the consumers' cached watermarks: a consumer learns them only from its own
//! fetches, which stop once its prefetch queue is full behind a reader that waits, and the
//! task that would read them is the one waiting. Nothing is sampled while Kafka is unavailable
//! (the last sum stays). No topic name leaves this module: the sum is one figure.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rdkafka::client::{Client, ClientContext};
use rdkafka::producer::{FutureProducer, Producer as _};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::{Context, METADATA_TIMEOUT};

/// How often the lag is sampled: a Prometheus scrape every 15 s or more sees a recent figure,
/// and the brokers answer two offset requests per partition read this often.
pub(super) const LAG_INTERVAL: Duration = Duration::from_secs(5);

/// One consumer's next offset per partition, as its task delivered them. Its task writes it
/// once per record (an uncontended lock), the sampler reads it once per interval.
#[derive(Debug)]
pub(super) struct Progress {
    topic: String,
    next: Mutex<HashMap<i32, i64>>,
}

impl Progress {
    /// The record before `next` of `partition` was delivered.
    pub(super) fn advance(&self, partition: i32, next: i64) {
        self.lock().insert(partition, next);
    }

    /// The consumer was (re)opened at `positions`.
    pub(super) fn reset(&self, positions: &HashMap<i32, i64>) {
        self.lock().clone_from(positions);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, i64>> {
        self.next.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Every running consumer's [`Progress`] and the last sampled sum. Shared by the backend.
#[derive(Debug, Default)]
pub(super) struct Lag {
    /// By registry key (a topic, or a private feed's own key).
    feeds: Mutex<HashMap<String, Arc<Progress>>>,
    /// The last sample's sum; `None` before the first.
    sampled: Mutex<Option<u64>>,
}

impl Lag {
    /// A consumer for `key` reading `topic` starts at `positions`; it records its progress in
    /// what this returns until it [`Lag::forget`]s it.
    pub(super) fn track(
        &self,
        key: &str,
        topic: &str,
        positions: &HashMap<i32, i64>,
    ) -> Arc<Progress> {
        let progress = Arc::new(Progress {
            topic: topic.to_owned(),
            next: Mutex::new(positions.clone()),
        });
        self.feeds().insert(key.to_owned(), progress.clone());
        progress
    }

    /// The consumer that recorded into `progress` stopped. A newer consumer of the same key,
    /// started meanwhile, stays tracked.
    pub(super) fn forget(&self, key: &str, progress: &Arc<Progress>) {
        let mut feeds = self.feeds();
        if feeds.get(key).is_some_and(|p| Arc::ptr_eq(p, progress)) {
            feeds.remove(key);
        }
    }

    /// The last sampled sum; `None` before the first sample.
    pub(super) fn sampled(&self) -> Option<u64> {
        *self.sampled.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn feeds(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Progress>>> {
        self.feeds.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// What every feed has read: by topic, by partition, each feed's next offset.
    fn positions(&self) -> BTreeMap<String, Vec<(i32, i64)>> {
        let mut read: BTreeMap<String, Vec<(i32, i64)>> = BTreeMap::new();
        for progress in self.feeds().values() {
            let next = progress.lock();
            read.entry(progress.topic.clone())
                .or_default()
                .extend(next.iter().map(|(p, n)| (*p, *n)));
        }
        read
    }

    /// Samples every [`LAG_INTERVAL`] until `shutdown`, while `available` says Kafka is, with
    /// the producer's client (no client of its own).
    pub(super) async fn run(
        self: Arc<Self>,
        producer: FutureProducer<Context>,
        available: impl Fn() -> bool + Send,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(LAG_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if !available() {
                continue;
            }
            let read = self.positions();
            let sum = if read.is_empty() {
                0 // no consumer: nothing to ask
            } else {
                let producer = producer.clone();
                let asking = tokio::task::spawn_blocking(move || behind(producer.client(), &read));
                // Shutdown does not wait for a slow broker's answers (the thread ends by itself).
                let answered = tokio::select! {
                    () = shutdown.cancelled() => return,
                    answered = asking => answered,
                };
                match answered {
                    Ok(sum) => sum,
                    Err(err) => {
                        debug!(error = %err, "kafka lag sample failed");
                        continue;
                    }
                }
            };
            *self.sampled.lock().unwrap_or_else(PoisonError::into_inner) = Some(sum);
        }
    }
}

/// Blocking: the records `read` is behind, asking the brokers for each partition's high
/// watermark once (however many feeds read it). A partition whose watermark cannot be had
/// (its topic deleted, a broker slow) counts nothing this time.
fn behind<C: ClientContext>(client: &Client<C>, read: &BTreeMap<String, Vec<(i32, i64)>>) -> u64 {
    let mut sum = 0u64;
    for (topic, positions) in read {
        let mut highs: HashMap<i32, Option<i64>> = HashMap::new();
        for &(partition, next) in positions {
            let high = *highs.entry(partition).or_insert_with(|| {
                match client.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
                    Ok((_, high)) => Some(high),
                    Err(err) => {
                        debug!(error = %err, partition, "kafka lag: no high watermark");
                        None
                    }
                }
            });
            sum += high.map_or(0, |high| records_behind(high, next));
        }
    }
    sum
}

/// Records from `next` up to the high watermark `high`; none when `next` is past it (a broker
/// that lost its log: the consumer reads the new one from its start).
fn records_behind(high: i64, next: i64) -> u64 {
    u64::try_from(high.saturating_sub(next)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_is_what_lies_between_the_next_offset_and_the_watermark() {
        assert_eq!(records_behind(10, 4), 6);
        assert_eq!(records_behind(10, 10), 0);
        assert_eq!(records_behind(3, 10), 0);
    }

    #[test]
    fn positions_are_grouped_by_topic_and_a_stopped_feed_is_forgotten() {
        let lag = Lag::default();
        let a = lag.track("t", "t", &HashMap::from([(0, 5)]));
        let b = lag.track("t\u{1f}1:1", "t", &HashMap::from([(0, 2), (1, 7)]));
        a.advance(0, 6);
        let mut read = lag.positions();
        read.values_mut().for_each(|p| p.sort_unstable());
        assert_eq!(read["t"], vec![(0, 2), (0, 6), (1, 7)]);
        // A newer feed of the same key is not forgotten with the old one.
        let newer = lag.track("t", "t", &HashMap::new());
        lag.forget("t", &a);
        assert_eq!(lag.feeds().len(), 2);
        lag.forget("t", &newer);
        lag.forget("t\u{1f}1:1", &b);
        assert!(lag.positions().is_empty());
        b.reset(&HashMap::from([(3, 1)]));
        assert!(lag.positions().is_empty());
    }
}
