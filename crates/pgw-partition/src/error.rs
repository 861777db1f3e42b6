//! Why a partition command failed. Each variant prints as one line.

use pgw_common::{Classify, ErrorClass};

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
    #[error("{table} holds rows: converting it moves them into a new partitioned table ({}); pass --yes to go ahead", copy.summary())]
    NeedsConfirmation {
        table: String,
        copy: Box<crate::convert::CopyPlan>,
    },
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
    #[error("--name-pattern '{0}' must contain {{suffix}}")]
    NamePattern(String),
    #[error("value '{value}' is in both --list {first} and --list {second}: list partitions cannot overlap")]
    ListOverlap {
        value: String,
        first: String,
        second: String,
    },
    #[error("'{0}' is not a column name")]
    ColumnName(String),
    #[error("--list {0} is given twice: each list partition needs a name of its own")]
    ListDuplicateName(String),
    #[error("--hash needs a modulus of 1 or more")]
    HashModulus,
    #[error("--retention is for range sets only")]
    RetentionNeedsRange,
    #[error("--start '{text}' is not a {expected}")]
    BadStart {
        text: String,
        expected: &'static str,
    },
    #[error("a conversion of {table} is in progress ({done} of {total} blocks copied); run without --dry-run to finish it")]
    ConversionInProgress {
        table: String,
        done: i64,
        total: i64,
    },
    #[error("the conversion record of {table} vanished while converting it (was pgwarden.conversion changed by hand?); nothing was swapped, run the command again")]
    ConversionLost { table: String },
    #[error("another pgwarden run is converting {0} right now; let it finish")]
    ConversionBusy(String),
    #[error("could not take {table} for the swap in {attempts} tries (sessions holding it: {holders}); {kept}")]
    SwapBusy {
        table: String,
        attempts: u32,
        holders: String,
        kept: &'static str,
    },
    #[error("the conversion of {0} was disturbed while it ran (its trigger disabled or dropped, or the table rewritten); nothing was swapped: run the command again, the copy starts over")]
    ConversionDisturbed(String),
    #[error("the copy of {table} does not match: {old} rows in the table, {new} copied; nothing was swapped, run the command again to copy anew")]
    CopyMismatch { table: String, old: i64, new: i64 },
    #[error("{0} is not being converted (nothing to abort)")]
    NotConverting(String),
    #[error("{table} holds rows: converting a populated table is done for range sets; create the list or hash parent yourself and move the rows")]
    ConvertNeedsRange { table: String },
    #[error("{table} cannot be swapped for a partitioned table while these depend on it ({blockers}); drop them first and re-create them afterwards")]
    ConvertBlocked { table: String, blockers: String },
    #[error("{table} is partitioned by several columns ({columns}); only single-column keys are managed")]
    MultiColumnKey { table: String, columns: String },
    #[error("cannot tell the interval of {0} from its partitions; give --range")]
    IntervalUnknown(String),
    #[error(
        "pg_partman's retention '{retention}' for {table} cannot be used ({why}); give --retention"
    )]
    PartmanRetention {
        table: String,
        retention: String,
        why: IntervalError,
    },
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
}

impl Classify for PartitionError {
    /// Flags, names and a database that cannot take the request as given are input (exit
    /// 2, nothing changed); a server, a lock or the stored state failing is a failure.
    fn class(&self) -> ErrorClass {
        match self {
            PartitionError::Connect(c) => c.class(),
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
            | PartitionError::NamePattern(_)
            | PartitionError::ListOverlap { .. }
            | PartitionError::HashModulus
            | PartitionError::ColumnName(_)
            | PartitionError::ListDuplicateName(_)
            | PartitionError::RetentionNeedsRange
            | PartitionError::BadStart { .. }
            | PartitionError::ConversionInProgress { .. }
            | PartitionError::ConvertNeedsRange { .. }
            | PartitionError::ConvertBlocked { .. }
            | PartitionError::MultiColumnKey { .. }
            | PartitionError::IntervalUnknown(_)
            | PartitionError::PartmanRetention { .. }
            | PartitionError::NotConverting(_) => ErrorClass::Input,
            PartitionError::Bound(_)
            | PartitionError::ConversionLost { .. }
            | PartitionError::ConversionBusy(_)
            | PartitionError::SwapBusy { .. }
            | PartitionError::ConversionDisturbed(_)
            | PartitionError::CopyMismatch { .. }
            | PartitionError::BadConfig { .. }
            | PartitionError::LockTimeout { .. }
            | PartitionError::Sql { .. } => ErrorClass::Failed,
        }
    }
}
