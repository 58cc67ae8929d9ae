//! [`Failure`]: a coded error as the client will see it. Every boundary error (config, broker,
//! changefeed) that reaches a client is turned into one of these; this module does not decide
//! which code an internal error deserves, the boundary that knows the cause does.

use std::collections::BTreeMap;

use super::Code;

/// A coded error for a client: the `Error` message of the protocol in domain form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {message}", code.as_str_name())]
pub struct Failure {
    /// What programs branch on.
    pub code: Code,
    /// What people read.
    pub message: String,
    /// Whether the same request may succeed later.
    pub retryable: bool,
    /// Advice on when to retry, in milliseconds (0: none).
    pub retry_after_ms: u32,
    /// Machine-readable context (limit values, offending ids); ordered for stable encoding.
    pub details: BTreeMap<String, String>,
}

impl Failure {
    /// A non-retryable failure with `code` and a human message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: false,
            retry_after_ms: 0,
            details: BTreeMap::new(),
        }
    }

    /// Marks the failure retryable, advising to wait `after_ms` milliseconds first.
    #[must_use]
    pub fn retryable(mut self, after_ms: u32) -> Self {
        self.retryable = true;
        self.retry_after_ms = after_ms;
        self
    }

    /// Adds one machine-readable detail.
    #[must_use]
    pub fn detail(mut self, key: &str, value: impl ToString) -> Self {
        self.details.insert(key.to_owned(), value.to_string());
        self
    }

    pub(crate) fn validation(message: impl Into<String>) -> Self {
        Self::new(Code::Validation, message)
    }
}
