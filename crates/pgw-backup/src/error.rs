//! [`BackupError`]: every failure of a backup command, with the class that decides its exit
//! code. The text is the one line users see; nothing in it is a secret.

use pgw_common::{Classify, ConnectError, ErrorClass};

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The request cannot be done as given; nothing was read or written.
    #[error("{0}")]
    Input(String),
    /// The repository or the cluster refuses the request (another cluster's repository, a
    /// target that cannot be reached, a directory that is not empty); nothing was written.
    #[error("{0}")]
    Refused(String),
    /// Objects of the repository are damaged or missing (verify's finding, or found while
    /// reading).
    #[error("{0}")]
    Damaged(String),
    /// The object store failed (unreachable, credentials refused, I/O); `detail` is the
    /// store's error made one line (see [`store_detail`]).
    #[error("repository {url}: {what}: {detail}")]
    Store {
        url: String,
        what: String,
        detail: String,
    },
    /// A local file or directory could not be read or written.
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The server could not be reached.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The server refused a statement.
    #[error("{what}")]
    Sql {
        what: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    /// A PostgreSQL program or the restored server failed.
    #[error(transparent)]
    Node(#[from] pgw_node::NodeError),
    /// Anything else that failed, said in one line.
    #[error("{0}")]
    Failed(String),
    /// Stopped by the user (Ctrl-C); what was started was undone.
    #[error("interrupted")]
    Interrupted,
}

impl Classify for BackupError {
    fn class(&self) -> ErrorClass {
        match self {
            BackupError::Input(_) | BackupError::Refused(_) => ErrorClass::Input,
            BackupError::Interrupted => ErrorClass::Interrupted,
            BackupError::Connect(e) => e.class(),
            BackupError::Node(
                pgw_node::NodeError::InvalidOption { .. }
                | pgw_node::NodeError::NotEmpty { .. }
                | pgw_node::NodeError::MissingBinary { .. },
            ) => ErrorClass::Input,
            BackupError::Node(_) => ErrorClass::Failed,
            BackupError::Damaged(_)
            | BackupError::Store { .. }
            | BackupError::Io { .. }
            | BackupError::Sql { .. }
            | BackupError::Failed(_) => ErrorClass::Failed,
        }
    }
}

impl BackupError {
    /// An I/O error on `path`.
    pub fn io(
        what: &'static str,
        path: impl AsRef<std::path::Path>,
        source: std::io::Error,
    ) -> Self {
        BackupError::Io {
            what,
            path: path.as_ref().display().to_string(),
            source,
        }
    }

    /// A statement the server refused.
    pub fn sql(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> BackupError {
        move |source| BackupError::Sql { what, source }
    }
}

/// An object store error as one line: an S3 error reply's XML reduced to its code and
/// message, every line break and run of spaces folded.
pub fn store_detail(e: &object_store::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        let text = err.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = err.source();
    }
    let text = parts.join(": ");
    let tag = |name: &str| {
        let open = format!("<{name}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{name}>"))? + start;
        Some(text[start..end].trim().to_string())
    };
    let folded = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    match (tag("Code"), tag("Message")) {
        (Some(code), Some(msg)) => {
            let head = text
                .split("<?xml")
                .next()
                .unwrap_or("")
                .trim_end_matches([':', ' ']);
            let status = head
                .split(": ")
                .find(|p| p.chars().next().is_some_and(|c| c.is_ascii_digit()))
                .map(|s| format!("{} ", folded(s)))
                .unwrap_or_default();
            format!("{status}{code}: {}", folded(&msg))
        }
        (Some(code), None) => code,
        _ => folded(&text),
    }
}

/// Set to stop a restore or drill at its next step (Ctrl-C); it then undoes what it did.
pub type Cancel = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// `Err(Interrupted)` once `cancel` is set.
pub fn check(cancel: &Cancel) -> Result<()> {
    if cancel.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(BackupError::Interrupted);
    }
    Ok(())
}

/// Results of this crate.
pub type Result<T, E = BackupError> = std::result::Result<T, E>;
