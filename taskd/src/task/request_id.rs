//! `RequestId`: the key a client sends with a submit (`request_id`, or the `Idempotency-Key`
//! header) so that a retried submit returns the task the first one created instead of a second.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A client's idempotency key: 1 to 128 characters of `[A-Za-z0-9._:-]`, never `.` or `..`.
///
/// It is also the name of its znode (`/zbs/taskd/requests/<request_id>`), which is why the two
/// names ZooKeeper reserves are refused although their characters are allowed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RequestId(String);

/// A string that cannot be a request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("a request id cannot be empty")]
    Empty,
    #[error("a request id has at most {max} characters, got {len}", max = RequestId::MAX_LEN)]
    TooLong { len: usize },
    #[error("a request id holds only letters, digits, `.`, `_`, `:` and `-` (and is not `.` or `..`): {0:?}")]
    BadCharacter(String),
}

impl RequestId {
    /// The longest id, in characters (all ASCII).
    pub const MAX_LEN: usize = 128;

    /// A new random id: a lowercase hyphenated UUID v4 (what the CLI sends).
    pub fn generate() -> RequestId {
        RequestId(uuid::Uuid::new_v4().hyphenated().to_string())
    }

    /// Validates `text` as a request id.
    pub fn parse(text: &str) -> Result<RequestId, RequestIdError> {
        if text.is_empty() {
            return Err(RequestIdError::Empty);
        }
        if text.len() > RequestId::MAX_LEN {
            return Err(RequestIdError::TooLong { len: text.len() });
        }
        let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-');
        if !text.bytes().all(allowed) || text == "." || text == ".." {
            return Err(RequestIdError::BadCharacter(text.to_string()));
        }
        Ok(RequestId(text.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for RequestId {
    type Error = RequestIdError;

    fn try_from(text: String) -> Result<RequestId, RequestIdError> {
        RequestId::parse(&text)
    }
}

impl From<RequestId> for String {
    fn from(id: RequestId) -> String {
        id.0
    }
}
