//! What kind of failure an error is: the one contract behind pgwarden's exit codes.
//!
//! Every capability's error type implements [`Classify`]; the binary turns the
//! [`ErrorClass`] into an exit code in one place (`crates/pgwarden/src/exit.rs`), so no
//! crate decides a code and no caller downcasts error types by name. Wrapping variants
//! delegate to what they wrap, so a connection error keeps its class through every layer.

use crate::connect::ConnectError;
use crate::conninfo::DsnError;

/// The kinds of failure, from the user's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// The request cannot be done as given: unknown flags, malformed values or DSN, a
    /// table or column that does not exist, a check that is not known. Nothing was changed.
    Input,
    /// The work failed: server unreachable, authentication or permission refused, the
    /// server rejected a statement, a process failed. What was changed is said in the message.
    Failed,
    /// The user interrupted the work (Ctrl-C, SIGTERM); what had been started was put back
    /// or stopped.
    Interrupted,
}

/// An error that knows its [`ErrorClass`].
pub trait Classify {
    /// The kind of failure this is.
    fn class(&self) -> ErrorClass;
}

impl Classify for DsnError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Input
    }
}

impl Classify for ConnectError {
    /// A malformed DSN or TLS options that cannot work are input (they fail before any
    /// connection is tried); a server that cannot be reached or refuses us is a failure.
    fn class(&self) -> ErrorClass {
        match self {
            ConnectError::Dsn(_) | ConnectError::Tls { .. } => ErrorClass::Input,
            ConnectError::Connect { .. } => ErrorClass::Failed,
        }
    }
}
