//! What the in-process broker keeps of each topic: its newest messages, bounded per topic by
//! count, bytes and age, and in all by the number of topics that have one. No I/O.
//!
//! Each topic's history has its own lock. A publish holds it from numbering the message until
//! the message is queued to every subscriber, and a subscriber that replays history is
//! registered under it, so each message is either in the history it replays or delivered to it
//! live, never both and never neither.
//!
//! Whether a replay from offset `n` is gap-free is decided by the newest offset that is no longer
//! kept: per topic (`evicted_through`), and for topics that have no history (never had one, or
//! it expired, or there was no room) node-wide (`forgotten_through`). Offsets come from one
//! counter for all topics, so a watermark over all topics is conservative: it may refuse a resume
//! that had nothing to miss, never accept one that had.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::MemoryConfig;
use crate::protocol::SharedEvent;

/// One kept message.
struct Kept {
    offset: i64,
    at: Instant,
    event: SharedEvent,
}

/// One topic's kept messages, oldest first.
pub(super) struct TopicHistory {
    messages: VecDeque<Kept>,
    bytes: usize,
    /// The newest offset of this topic no longer kept (`i64::MIN`: none yet).
    evicted_through: i64,
    /// Swept from the map (every message expired): a publish that found it just before must
    /// look the topic up again.
    retired: bool,
}

/// Every topic's history. Shared by the broker's clones.
pub(super) struct Histories {
    topics: Mutex<HashMap<Arc<str>, Arc<Mutex<TopicHistory>>>>,
    settings: MemoryConfig,
    /// The newest offset forgotten with a whole topic's history, or never kept for want of room.
    forgotten_through: AtomicI64,
}

impl Histories {
    pub(super) fn new(settings: MemoryConfig) -> Self {
        Self {
            topics: Mutex::default(),
            settings,
            forgotten_through: AtomicI64::new(i64::MIN),
        }
    }

    /// The topics that have kept messages now, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        let topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        let mut names: Vec<String> = topics
            .iter()
            .filter(|(_, history)| {
                let history = history.lock().unwrap_or_else(PoisonError::into_inner);
                !history.messages.is_empty()
            })
            .map(|(name, _)| name.to_string())
            .collect();
        names.sort();
        names
    }

    /// Whether history is kept at all.
    pub(super) fn enabled(&self) -> bool {
        self.settings.history_size > 0 && !self.settings.history_ttl.is_zero()
    }

    /// `topic`'s history, created if there is room (`None`: no history for it now).
    pub(super) fn topic(&self, topic: &str) -> Option<Arc<Mutex<TopicHistory>>> {
        if !self.enabled() {
            return None;
        }
        let mut topics = self.topics.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(history) = topics.get(topic) {
            return Some(history.clone());
        }
        if topics.len() >= self.settings.history_topics {
            self.sweep(&mut topics);
            if topics.len() >= self.settings.history_topics {
                return None;
            }
        }
        let history = Arc::new(Mutex::new(TopicHistory {
            messages: VecDeque::new(),
            bytes: 0,
            // Whatever this topic had before is forgotten node-wide.
            evicted_through: self.forgotten_through.load(Ordering::Acquire),
            retired: false,
        }));
        topics.insert(Arc::from(topic), history.clone());
        Some(history)
    }

    /// Records that the message numbered `offset` is not kept (its topic has no history).
    pub(super) fn forget(&self, offset: i64) {
        self.forgotten_through.fetch_max(offset, Ordering::AcqRel);
    }

    /// Drops the histories whose every message has expired, remembering what they held.
    fn sweep(&self, topics: &mut HashMap<Arc<str>, Arc<Mutex<TopicHistory>>>) {
        let now = Instant::now();
        topics.retain(|_, history| {
            let mut history = history.lock().unwrap_or_else(PoisonError::into_inner);
            history.expire(now, self.settings.history_ttl);
            if !history.messages.is_empty() {
                return true;
            }
            self.forget(history.evicted_through);
            history.retired = true;
            false
        });
    }

    pub(super) fn settings(&self) -> &MemoryConfig {
        &self.settings
    }
}

impl TopicHistory {
    /// Keeps a message, then drops the oldest ones past the count, byte and age limits.
    pub(super) fn keep(&mut self, offset: i64, event: SharedEvent, settings: &MemoryConfig) {
        let now = Instant::now();
        self.bytes += event.len();
        self.messages.push_back(Kept {
            offset,
            at: now,
            event,
        });
        while self.messages.len() > settings.history_size || self.bytes > settings.history_bytes {
            self.evict_oldest();
        }
        self.expire(now, settings.history_ttl);
    }

    /// Drops the messages older than `ttl`.
    pub(super) fn expire(&mut self, now: Instant, ttl: Duration) {
        while self
            .messages
            .front()
            .is_some_and(|kept| now.duration_since(kept.at) >= ttl)
        {
            self.evict_oldest();
        }
    }

    fn evict_oldest(&mut self) {
        if let Some(kept) = self.messages.pop_front() {
            self.bytes -= kept.event.len();
            self.evicted_through = self.evicted_through.max(kept.offset);
        }
    }

    /// Whether this history was swept from the map (look the topic up again).
    pub(super) fn is_retired(&self) -> bool {
        self.retired
    }

    /// The newest offset of this topic no longer kept.
    pub(super) fn evicted_through(&self) -> i64 {
        self.evicted_through
    }

    /// The kept messages from offset `from` on, oldest first.
    pub(super) fn since(&self, from: i64) -> Vec<SharedEvent> {
        self.messages
            .iter()
            .filter(|kept| kept.offset >= from)
            .map(|kept| kept.event.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{share_event, EventBody};

    fn event(size: usize) -> SharedEvent {
        let message = crate::protocol::TopicMessage {
            payload: bytes::Bytes::from(vec![0u8; size]),
            ..Default::default()
        };
        share_event(b"", EventBody::Message(&message))
    }

    fn settings(history_size: usize, history_bytes: usize, history_topics: usize) -> MemoryConfig {
        MemoryConfig {
            history_size,
            history_bytes,
            history_ttl: Duration::from_secs(60),
            history_topics,
        }
    }

    #[test]
    fn the_oldest_go_first_past_the_count_or_the_bytes_and_are_remembered() {
        let settings = settings(3, 10_000, 10);
        let histories = Histories::new(settings.clone());
        let topic = histories.topic("t").expect("room");
        let mut kept = topic.lock().expect("unpoisoned");
        for offset in 1..=5 {
            kept.keep(offset, event(100), &settings);
        }
        assert_eq!(kept.since(i64::MIN).len(), 3);
        assert_eq!(kept.evicted_through(), 2);
        kept.keep(6, event(9_950), &settings);
        assert_eq!(
            kept.since(i64::MIN).len(),
            1,
            "the big one pushed the rest out"
        );
        assert_eq!(kept.evicted_through(), 5);
        kept.expire(
            Instant::now() + Duration::from_secs(61),
            settings.history_ttl,
        );
        assert!(kept.since(i64::MIN).is_empty());
        assert_eq!(kept.evicted_through(), 6);
    }

    #[test]
    fn expired_histories_make_room_and_are_remembered() {
        let mut settings = settings(3, 10_000, 1);
        settings.history_ttl = Duration::from_millis(1);
        let histories = Histories::new(settings.clone());
        let first = histories.topic("a").expect("room");
        first
            .lock()
            .expect("unpoisoned")
            .keep(7, event(1), &settings);
        std::thread::sleep(Duration::from_millis(5));
        // "a" expired: swept, retired, and what it held is forgotten node-wide.
        let second = histories.topic("b").expect("room after the sweep");
        assert!(first.lock().expect("unpoisoned").is_retired());
        assert_eq!(second.lock().expect("unpoisoned").evicted_through(), 7);
        second
            .lock()
            .expect("unpoisoned")
            .keep(8, event(1), &settings);
        assert!(histories.topic("c").is_none() || histories.topic("b").is_some());
    }
}
