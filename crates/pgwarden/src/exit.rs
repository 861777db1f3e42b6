//! Exit codes, decided here and nowhere else.
//!
//! A command ends in an [`Outcome`] (it ran; what it found decides the code) or a
//! [`Failure`] (it could not do its work). A failure carries the [`ErrorClass`] its error
//! had when it was made (every capability error implements `pgw_common::Classify`), so no
//! code downcasts error types by name. [`Convention`] says how a command speaks: most
//! follow pgwarden's codes, `doctor` follows the Nagios plugin codes that check_postgres
//! users script against.

use std::fmt;
use std::process::ExitCode;

use pgw_common::{Classify, ErrorClass};

/// How a command's result becomes a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Convention {
    /// 0 ok, 1 failed, 2 bad input, 3 unfinished, 130 interrupted.
    Pgwarden,
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN (anything that kept the checks from running).
    Nagios,
    /// `wal fetch`, PostgreSQL's restore_command: 1 only for a file that is not in the
    /// repository (which ends recovery there, as it should at the end of the archive);
    /// every failure is 126, above 125, which makes PostgreSQL stop recovery with an error
    /// instead of taking a damaged segment, an unreachable repository or a wrong key for the
    /// end of the WAL and promoting early.
    RestoreCommand,
}

/// What a command that ran to its end reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Done, or nothing to do.
    Done,
    /// Done, but some steps were left for a later run (a busy lock, drops not confirmed).
    Unfinished,
    /// Something the user was asked to confirm was not confirmed; nothing changed.
    NotConfirmed,
    /// Some parts failed, each reported on its own line (`partition maintain`: a set that
    /// could not be maintained); the others were done.
    PartlyFailed,
    /// The worst finding of a health check run (Nagios states).
    Health(Health),
    /// Read, and at least one standby misses the replication-lag target (`replica status`).
    TargetMissed,
    /// Stopped by Ctrl-C after cleaning up (the demo's cluster).
    Interrupted,
    /// Read everything, and found damaged or missing objects (`backup verify`).
    DamageFound,
    /// What was asked for does not exist (`wal fetch` of a file not in the repository).
    NotFound,
}

/// The Nagios state of a doctor run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Ok,
    Warning,
    Critical,
}

/// Why a command could not do its work: the error (its chain becomes the one line users
/// see) and its class (which decides the code).
pub struct Failure {
    class: ErrorClass,
    error: anyhow::Error,
}

impl Failure {
    /// A failure of `class` from any error.
    pub fn new<E>(class: ErrorClass, error: E) -> Failure
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        Failure {
            class,
            error: anyhow::Error::new(error),
        }
    }

    /// A failure from a classified error, keeping its class.
    pub fn from_classified<E>(error: E) -> Failure
    where
        E: Classify + std::error::Error + Send + Sync + 'static,
    {
        Failure::new(error.class(), error)
    }

    /// The same failure with `what` in front ("partition create: ...").
    pub fn context(self, what: &'static str) -> Failure {
        Failure {
            class: self.class,
            error: self.error.context(what),
        }
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// The one line users see (after `pgwarden: error: `).
    pub fn line(&self) -> String {
        pgw_common::report(self.error.as_ref())
    }
}

impl fmt::Debug for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.class, self.line())
    }
}

/// `.or_fail("tune apply")` on any result whose error is classified.
pub trait OrFail<T> {
    /// The error as a [`Failure`] of its own class, with `what` in front.
    fn or_fail(self, what: &'static str) -> Result<T, Failure>;
}

impl<T, E> OrFail<T> for Result<T, E>
where
    E: Classify + std::error::Error + Send + Sync + 'static,
{
    fn or_fail(self, what: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure::from_classified(e).context(what))
    }
}

/// Usage errors the binary itself finds (flag combinations clap does not express).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub &'static str);

impl Classify for Usage {
    fn class(&self) -> ErrorClass {
        ErrorClass::Input
    }
}

/// A terminal that could not be read or written (a prompt's answer).
#[derive(Debug, thiserror::Error)]
#[error("read the confirmation from the terminal")]
pub struct Prompt(#[source] pub std::io::Error);

impl Classify for Prompt {
    fn class(&self) -> ErrorClass {
        ErrorClass::Failed
    }
}

/// The exit code of a failure of `class` under `convention`.
pub fn failure_code(class: ErrorClass, convention: Convention) -> u8 {
    match (convention, class) {
        (Convention::Nagios, _) => 3,
        (Convention::RestoreCommand, ErrorClass::Interrupted) => 130,
        (Convention::RestoreCommand, _) => 126,
        (Convention::Pgwarden, ErrorClass::Input) => 2,
        (Convention::Pgwarden, ErrorClass::Failed) => 1,
        (Convention::Pgwarden, ErrorClass::Interrupted) => 130,
    }
}

/// The exit code of an outcome.
pub fn outcome_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Done | Outcome::Health(Health::Ok) => 0,
        Outcome::NotConfirmed
        | Outcome::PartlyFailed
        | Outcome::TargetMissed
        | Outcome::DamageFound
        | Outcome::NotFound
        | Outcome::Health(Health::Warning) => 1,
        Outcome::Health(Health::Critical) => 2,
        Outcome::Unfinished => 3,
        Outcome::Interrupted => 130,
    }
}

/// How a run ends: prints the failure's line (if any) and returns the code.
pub fn finish(result: Result<Outcome, Failure>, convention: Convention) -> ExitCode {
    match result {
        Ok(outcome) => ExitCode::from(outcome_code(outcome)),
        Err(f) => {
            eprintln!("pgwarden: error: {}", f.line());
            ExitCode::from(failure_code(f.class(), convention))
        }
    }
}

/// The exit codes of every command but doctor, as `--help` shows them.
pub const EXIT_CODES: &str = "\
Exit codes:
  0    success (or nothing to do)
  1    the work failed: server unreachable, authentication or permission refused,
       the server rejected a value (nothing was changed), or a change was not confirmed
  2    invalid usage or input: unknown flags, bad values, malformed DSN, a table or
       column that does not exist; found before anything is changed
  3    partition maintain only: done, but some steps were skipped (a lock was busy
       within --lock-timeout, or dropping partitions was not confirmed); run it again
  130  interrupted (Ctrl-C); throwaway clusters are stopped first, tune apply puts back
       any entry it had written, a partition conversion resumes when run again

Connections follow libpq: -d/--dsn takes a conninfo string (\"host=db port=5432 user=me\")
or a URI (postgresql://me@db/app); PGHOST, PGPORT, PGUSER, PGDATABASE, PGPASSWORD,
PGSSLMODE, PGSSLROOTCERT and ~/.pgpass are honoured.";

/// replica's exit codes.
pub const REPLICA_EXIT_CODES: &str = "\
Exit codes:
  0  clone: copied (and with --start, streaming); status: every standby (or this
     standby) meets the lag target; promote: promoted
  1  clone: pg_basebackup or the start failed (the copy and its slot were removed);
     rejoin: pg_rewind, the start or streaming failed; switchover: the target did not
     get the shutdown checkpoint in time (the old primary was started again) or a later
     step failed;
     status: a standby misses the target (not streaming, paused, or lagging beyond it);
     promote: not confirmed, or pg_promote did not finish in --wait seconds;
     either: the server could not be reached or refused us (the message says which)
  2  invalid usage: bad flags or DSN; clone: a non-empty directory or a missing
     prerequisite on the primary (each named with its fix, nothing made); promote on a
     server that is not a standby; rejoin: neither wal_log_hints nor checksums, or
     --from is not a primary (nothing stopped); switchover: --pgdata is not a running
     primary or --to not a streaming standby of it";

/// ha's exit codes.
pub const HA_EXIT_CODES: &str = "\
Exit codes:
  0  agent: stopped by SIGINT/SIGTERM after a clean stop; list, pause, resume: done;
     switchover/failover: the target leads
  1  etcd could not be reached; switchover/failover: not confirmed, no replica could take
     over, or the target did not lead within --wait (the request was withdrawn); agent: a
     step failed that it cannot go on without
  2  invalid usage: bad flags, a config with an unknown key or a bad value (ttl too short
     for loop_wait, say), a member that is not in the cluster or may not take over; agent:
     its data directory belongs to another cluster, or its API address is taken";

/// pool's exit codes.
pub const POOL_EXIT_CODES: &str = "\
Signals: SIGHUP reloads the configuration (RELOAD); SIGINT stops once no server
connection is in use (SHUTDOWN WAIT_FOR_SERVERS); SIGTERM lets each client go at its
next transaction boundary, then stops (SHUTDOWN WAIT_FOR_CLIENTS); a second signal stops
at once.

Exit codes:
  0  stopped by a signal or SHUTDOWN; --check: the configuration is usable
  1  a listening address is taken or cannot be bound
  2  invalid usage: bad flags, a configuration or auth file that cannot be read, an
     unknown setting, a bad value";

/// backup's exit codes.
pub const BACKUP_EXIT_CODES: &str = "\
Exit codes:
  0  done; verify: no damage; drill: restored, writable within the one-hour RTO target
     and pg_amcheck clean
  1  the work failed: repository or server unreachable, credentials refused, a WAL
     segment the backup needs not archived in time (the backup is not recorded);
     verify: damaged or missing objects (each named); drill: amcheck found corruption,
     the RTO target was missed or the restored server did not start; expire: not confirmed
  2  invalid usage or refused before anything was written: bad flags, a repository of
     another cluster, a wrong or missing encryption key, restore into a non-empty
     directory, a recovery target the repository cannot reach

The repository is --repo or $PGWARDEN_REPO: a directory or s3://bucket/prefix (with
--s3-endpoint, --s3-region and the AWS_* variables). An encrypted repository's key is
--encryption-key-file or $PGWARDEN_ENCRYPTION_KEY.";

/// wal's exit codes (archive_command and restore_command read them).
pub const WAL_EXIT_CODES: &str = "\
Exit codes:
  0  push: stored, or the same file was already there; fetch: written
  1  push: failed (nothing written), or a different file of that name is already in
     the repository; fetch: not in the repository (PostgreSQL ends recovery there)
  2  push: invalid usage (bad flags, not a WAL file name), a segment of another cluster
  126  fetch: any failure (damaged, unreachable, wrong key, bad flags): above 125, so
     PostgreSQL stops recovery with an error instead of promoting early";

/// doctor's exit codes.
pub const DOCTOR_EXIT_CODES: &str = "\
Exit codes (the Nagios convention check_postgres users script against):
  0  nothing above info
  1  at least one warning
  2  at least one critical finding
  3  could not run: server unreachable, authentication refused, bad flags or thresholds

Checks that need more privilege than the role has are listed under \"skipped\" with
the reason, and so is each object a check could not judge (a sequence the role may not
read, a table whose column statistics it cannot see): pg_monitor runs every check, and
the reason names the grant or extension that closes the gap.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_by_class_and_convention() {
        use ErrorClass::*;
        for (class, pgw, nagios) in [(Input, 2, 3), (Failed, 1, 3), (Interrupted, 130, 3)] {
            assert_eq!(failure_code(class, Convention::Pgwarden), pgw, "{class:?}");
            assert_eq!(failure_code(class, Convention::Nagios), nagios, "{class:?}");
        }
    }

    #[test]
    fn codes_by_outcome() {
        for (o, code) in [
            (Outcome::Done, 0),
            (Outcome::Unfinished, 3),
            (Outcome::NotConfirmed, 1),
            (Outcome::PartlyFailed, 1),
            (Outcome::Health(Health::Ok), 0),
            (Outcome::Health(Health::Warning), 1),
            (Outcome::Health(Health::Critical), 2),
            (Outcome::Interrupted, 130),
        ] {
            assert_eq!(outcome_code(o), code, "{o:?}");
        }
    }

    #[test]
    fn failures_keep_their_class_through_context() {
        let f = Err::<(), _>(Usage("--diff prints a table or json"))
            .or_fail("tune --diff")
            .unwrap_err();
        assert_eq!(f.class(), ErrorClass::Input);
        assert_eq!(f.line(), "tune --diff: --diff prints a table or json");
    }
}
