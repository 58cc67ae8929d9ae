//! What `/health` and `/health/ready` answer: whether the process serves (liveness), whether
//! it can serve everything it is configured for (readiness), and which build it is.
//!
//! One report serves both: `status` is `ok` while every configured dependency (PostgreSQL,
//! Kafka, RabbitMQ) is reachable, `degraded` while one is not (the rest of the server still
//! works; that source's subscribers were told with `SourceStatus`), and `shutting_down` once
//! shutdown began. `/health/ready` is 200 only for `ok`; `/health` is 200 unless shutting down,
//! whatever the dependencies say, so a liveness probe never restarts a process for an outage
//! elsewhere. Building the report reads a few atomics: both stay cheap enough to poll often.
//! Pure: the handlers in `http` gather the inputs.

use std::time::Duration;

use crate::source::Availability;
use crate::version::{COMMIT, VERSION};

/// One dependency's state, as `/health/ready` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Dependency {
    /// Configured and reachable (as far as this node has seen).
    Ok,
    /// Configured but not reachable now.
    Unavailable,
    /// Not configured: the server does not need it.
    NotConfigured,
}

impl From<Availability> for Dependency {
    fn from(availability: Availability) -> Self {
        match availability {
            Availability::Connected => Self::Ok,
            Availability::Unavailable => Self::Unavailable,
            Availability::NotConfigured => Self::NotConfigured,
        }
    }
}

/// The dependencies a server may be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Dependencies {
    /// The changefeed's database (`database_url`).
    pub(crate) postgres: Dependency,
    /// The Kafka backend (`[kafka]`).
    pub(crate) kafka: Dependency,
    /// The RabbitMQ backend (`[rabbitmq]`).
    pub(crate) rabbitmq: Dependency,
}

impl Dependencies {
    fn all_reachable(&self) -> bool {
        [self.postgres, self.kafka, self.rabbitmq]
            .iter()
            .all(|d| *d != Dependency::Unavailable)
    }
}

/// The server's state in one word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Status {
    /// Serving, with every configured dependency reachable.
    Ok,
    /// Serving, but a configured dependency is unavailable.
    Degraded,
    /// Shutdown has begun: no new connections; open ones are being closed.
    ShuttingDown,
}

/// The body of `/health` and `/health/ready`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Report {
    /// The state in one word; it decides both endpoints' status codes.
    pub(crate) status: Status,
    /// Whole seconds since the server started.
    pub(crate) uptime_seconds: u64,
    /// The crate's version.
    pub(crate) version: &'static str,
    /// The git commit of the build (12 hex digits), or "unknown".
    pub(crate) commit: &'static str,
    /// Each dependency's state, so an operator sees which one keeps the server unready.
    pub(crate) dependencies: Dependencies,
}

impl Report {
    /// The report of a server up for `uptime`, with `dependencies`, shutting down or not.
    pub(crate) fn new(shutting_down: bool, uptime: Duration, dependencies: Dependencies) -> Self {
        let status = if shutting_down {
            Status::ShuttingDown
        } else if dependencies.all_reachable() {
            Status::Ok
        } else {
            Status::Degraded
        };
        Self {
            status,
            uptime_seconds: uptime.as_secs(),
            version: VERSION,
            commit: COMMIT,
            dependencies,
        }
    }

    /// Whether the process serves: `/health` answers 200 (else 503).
    pub(crate) fn is_live(&self) -> bool {
        self.status != Status::ShuttingDown
    }

    /// Whether it serves everything it is configured for: `/health/ready` answers 200 (else
    /// 503).
    pub(crate) fn is_ready(&self) -> bool {
        self.status == Status::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Dependency::{NotConfigured, Ok as Up, Unavailable};

    fn deps(postgres: Dependency, kafka: Dependency, rabbitmq: Dependency) -> Dependencies {
        Dependencies {
            postgres,
            kafka,
            rabbitmq,
        }
    }

    #[test]
    fn ready_only_when_serving_with_every_configured_dependency_up() {
        let up = Report::new(false, Duration::ZERO, deps(Up, NotConfigured, Up));
        assert_eq!(up.status, Status::Ok);
        assert!(up.is_live() && up.is_ready());

        let down = Report::new(false, Duration::ZERO, deps(Up, Unavailable, NotConfigured));
        assert_eq!(down.status, Status::Degraded);
        assert!(down.is_live() && !down.is_ready(), "alive, not ready");

        let stopping = Report::new(true, Duration::ZERO, deps(Up, Up, Up));
        assert_eq!(stopping.status, Status::ShuttingDown);
        assert!(!stopping.is_live() && !stopping.is_ready());
    }

    #[test]
    fn the_body_keeps_its_words() {
        let report = Report::new(
            true,
            Duration::from_millis(61_900),
            deps(Unavailable, NotConfigured, Up),
        );
        let json = serde_json::to_value(&report).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({
                "status": "shutting_down",
                "uptime_seconds": 61,
                "version": VERSION,
                "commit": COMMIT,
                "dependencies": {
                    "postgres": "unavailable",
                    "kafka": "not_configured",
                    "rabbitmq": "ok",
                },
            })
        );
        let degraded = Report::new(false, Duration::ZERO, deps(Unavailable, Up, Up));
        assert_eq!(
            serde_json::to_value(degraded.status).expect("serialises"),
            "degraded"
        );
    }
}
