//! Why a partition command failed. Each variant prints as one line.

use crate::bound::BoundError;
use crate::ddl::TemplateError;
use crate::interval::IntervalError;
use crate::plan::PlanError;

#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    #[error(transparent)]
    Connect(#[from] pgw_common::ConnectError),
    #[error("table {0} does not exist")]
    NoTable(String),
    #[error("'{0}' is not a table name (schema.table, with double quotes where needed)")]
    TableName(String),
    #[error("column {column} does not exist in {table}")]
    NoColumn { table: String, column: String },
    #[error("column {column} is {type_name}: range partitioning needs a date, timestamp, timestamptz, smallint, integer or bigint key")]
    WrongType { column: String, type_name: String },
    #[error("{table} is already partitioned by {by}; give that strategy and column, or use `pgwarden partition adopt`")]
    PartitionedOtherwise { table: String, by: String },
    #[error("{0} is already managed by pgwarden (see `pgwarden partition list`)")]
    AlreadyManaged(String),
    #[error("{0} is not managed by pgwarden (see `pgwarden partition adopt`)")]
    NotManaged(String),
    #[error("{0} is not a partitioned table")]
    NotPartitioned(String),
    #[error("{table} holds rows: converting it moves them into a new partitioned table; pass --yes to go ahead")]
    NeedsConfirmation { table: String },
    #[error("time zone '{0}' is not known to the server")]
    TimeZone(String),
    #[error("{0}")]
    Interval(#[from] IntervalError),
    #[error("{0}")]
    Plan(#[from] PlanError),
    #[error("{0}")]
    Template(#[from] TemplateError),
    #[error("{0}")]
    Bound(#[from] BoundError),
    #[error("{0}")]
    Usage(String),
    #[error("pgwarden.partition_set row for {table} is invalid: {what}")]
    BadConfig { table: String, what: String },
    #[error("lock on {table} not available within {ms} ms (lock_timeout); nothing was changed, try again when it is less busy")]
    LockTimeout { table: String, ms: u64 },
    #[error("{what}")]
    Sql {
        what: String,
        #[source]
        source: tokio_postgres::Error,
    },
}

impl PartitionError {
    pub(crate) fn sql(what: impl Into<String>, source: tokio_postgres::Error) -> PartitionError {
        PartitionError::Sql {
            what: what.into(),
            source,
        }
    }

    /// Whether the user's input is at fault (exit 2), not the server or the data (exit 1).
    pub fn is_input(&self) -> bool {
        match self {
            PartitionError::Connect(c) => c.is_input(),
            PartitionError::NoTable(_)
            | PartitionError::TableName(_)
            | PartitionError::NoColumn { .. }
            | PartitionError::WrongType { .. }
            | PartitionError::PartitionedOtherwise { .. }
            | PartitionError::AlreadyManaged(_)
            | PartitionError::NotManaged(_)
            | PartitionError::NotPartitioned(_)
            | PartitionError::NeedsConfirmation { .. }
            | PartitionError::TimeZone(_)
            | PartitionError::Interval(_)
            | PartitionError::Plan(_)
            | PartitionError::Template(_)
            | PartitionError::Usage(_) => true,
            PartitionError::Bound(_)
            | PartitionError::BadConfig { .. }
            | PartitionError::LockTimeout { .. }
            | PartitionError::Sql { .. } => false,
        }
    }
}
