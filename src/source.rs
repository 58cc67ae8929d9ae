//! What every source of events (the changefeed reader, the Kafka and RabbitMQ backends) shares:
//! whether it can serve now, and the one way a change of that reaches subscribers, a single
//! `SourceStatus` event encoded once. How a source reaches *its* subscribers (a registry, the
//! watched tables) stays the source's; nothing here knows about either.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::protocol::{share_event, EventBody, Failure, SharedEvent};

/// A source's availability, as `/v1/stats` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Availability {
    /// The source is reachable (as far as this node has seen).
    #[serde(rename = "connected")]
    Connected,
    /// The source is configured but cannot be reached; subscribers were told.
    #[serde(rename = "unavailable")]
    Unavailable,
    /// No such source is configured.
    #[serde(rename = "not configured")]
    NotConfigured,
}

/// One source's availability flag. Sources change it only through [`Health::set`], which
/// announces every change exactly once.
#[derive(Debug)]
pub struct Health {
    available: AtomicBool,
}

impl Health {
    /// A flag starting out `available` (a source that connects lazily starts out available, one
    /// that must connect first does not).
    pub fn new(available: bool) -> Self {
        Self {
            available: AtomicBool::new(available),
        }
    }

    /// Whether the source can serve now.
    pub fn is_available(&self) -> bool {
        self.available.load(Ordering::Acquire)
    }

    /// [`Availability::Connected`] or [`Availability::Unavailable`].
    pub fn availability(&self) -> Availability {
        if self.is_available() {
            Availability::Connected
        } else {
            Availability::Unavailable
        }
    }

    /// Records availability: `None` when the source is back, else why it is not. When that
    /// changes it, hands `tell` the one status event for every subscriber of the source and
    /// returns `true`; otherwise does nothing and returns `false`.
    pub fn set(&self, unavailable: Option<Failure>, tell: impl FnOnce(&SharedEvent)) -> bool {
        let available = unavailable.is_none();
        if self.available.swap(available, Ordering::AcqRel) == available {
            return false;
        }
        tell(&share_event(&[], EventBody::Status(unavailable.as_ref())));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Code;

    #[test]
    fn each_change_is_told_once() {
        let health = Health::new(true);
        let mut told = 0;
        let down = || Some(Failure::new(Code::SourceUnavailable, "down"));
        assert!(health.set(down(), |_| told += 1));
        assert!(!health.set(down(), |_| told += 1));
        assert_eq!(health.availability(), Availability::Unavailable);
        assert!(health.set(None, |_| told += 1));
        assert!(!health.set(None, |_| told += 1));
        assert_eq!(told, 2);
        assert_eq!(health.availability(), Availability::Connected);
    }

    #[test]
    fn stats_keep_their_words() {
        let words = [
            Availability::Connected,
            Availability::Unavailable,
            Availability::NotConfigured,
        ]
        .map(|a| serde_json::to_string(&a).expect("serialises"));
        assert_eq!(
            words,
            ["\"connected\"", "\"unavailable\"", "\"not configured\""]
        );
    }
}
