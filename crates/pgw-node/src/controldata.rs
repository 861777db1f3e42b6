//! [`ControlData`]: the facts of `global/pg_control` that failover and rewind decisions need,
//! parsed from `pg_controldata` output (run with English messages, `Name:   value` lines).

use std::collections::HashMap;

use crate::Lsn;

/// `Database cluster state` in pg_control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// `starting up`.
    StartingUp,
    /// `shut down`: a primary that was stopped cleanly.
    ShutDown,
    /// `shut down in recovery`: a standby that was stopped cleanly.
    ShutDownInRecovery,
    /// `shutting down`.
    ShuttingDown,
    /// `in crash recovery`.
    InCrashRecovery,
    /// `in archive recovery`: a running standby (or one that crashed).
    InArchiveRecovery,
    /// `in production`: a running primary (or one that crashed).
    InProduction,
}

impl ClusterState {
    fn parse(s: &str) -> Option<ClusterState> {
        Some(match s {
            "starting up" => ClusterState::StartingUp,
            "shut down" => ClusterState::ShutDown,
            "shut down in recovery" => ClusterState::ShutDownInRecovery,
            "shutting down" => ClusterState::ShuttingDown,
            "in crash recovery" => ClusterState::InCrashRecovery,
            "in archive recovery" => ClusterState::InArchiveRecovery,
            "in production" => ClusterState::InProduction,
            _ => return None,
        })
    }

    /// Whether the server was stopped cleanly (no crash recovery needed on the next start).
    pub fn is_clean_shutdown(self) -> bool {
        matches!(
            self,
            ClusterState::ShutDown | ClusterState::ShutDownInRecovery
        )
    }
}

/// `wal_level` as recorded in pg_control.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum WalLevel {
    /// `minimal`: no replication or archiving possible.
    Minimal,
    /// `replica`: enough for standbys and archiving.
    Replica,
    /// `logical`: also logical decoding.
    Logical,
}

impl WalLevel {
    fn parse(s: &str) -> Option<WalLevel> {
        Some(match s {
            "minimal" => WalLevel::Minimal,
            "replica" => WalLevel::Replica,
            "logical" => WalLevel::Logical,
            _ => return None,
        })
    }
}

/// What is wrong with `pg_controldata` output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseProblem {
    /// A field we need is not there.
    #[error("no {0:?} line")]
    Missing(&'static str),
    /// A field has a value we cannot read.
    #[error("{field:?} has unexpected value {value:?}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// Its text.
        value: String,
    },
}

/// The parts of `pg_controldata` output that pgw-node reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlData {
    /// `Database system identifier`: the same on a primary and all its physical copies.
    pub system_identifier: u64,
    /// `Database cluster state`.
    pub state: ClusterState,
    /// `Latest checkpoint's TimeLineID`.
    pub timeline: u32,
    /// `Latest checkpoint location`.
    pub checkpoint_lsn: Lsn,
    /// `Latest checkpoint's REDO location`.
    pub redo_lsn: Lsn,
    /// `Latest checkpoint's REDO WAL file`, e.g. `000000010000000000000001`.
    pub redo_wal_file: String,
    /// `Minimum recovery ending location` (0/0 on a primary).
    pub min_recovery_end_lsn: Lsn,
    /// `Data page checksum version`: 0 when checksums are off.
    pub data_checksum_version: u32,
    /// `wal_log_hints setting`.
    pub wal_log_hints: bool,
    /// `wal_level setting`.
    pub wal_level: WalLevel,
    /// `Latest checkpoint's full_page_writes`.
    pub full_page_writes: bool,
}

impl ControlData {
    /// Parses `pg_controldata` output.
    pub fn parse(text: &str) -> Result<ControlData, ParseProblem> {
        let fields: HashMap<&str, &str> = text
            .lines()
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |field: &'static str| {
            fields
                .get(field)
                .copied()
                .ok_or(ParseProblem::Missing(field))
        };
        let bad = |field: &'static str, value: &str| ParseProblem::BadValue {
            field,
            value: value.to_owned(),
        };
        fn parsed<T: std::str::FromStr>(
            field: &'static str,
            value: &str,
        ) -> Result<T, ParseProblem> {
            value.parse().map_err(|_| ParseProblem::BadValue {
                field,
                value: value.to_owned(),
            })
        }
        let on_off = |field: &'static str| -> Result<bool, ParseProblem> {
            match get(field)? {
                "on" => Ok(true),
                "off" => Ok(false),
                other => Err(bad(field, other)),
            }
        };

        const STATE: &str = "Database cluster state";
        const WAL_LEVEL: &str = "wal_level setting";
        const REDO_FILE: &str = "Latest checkpoint's REDO WAL file";
        let state = get(STATE)?;
        let wal_level = get(WAL_LEVEL)?;
        let redo_wal_file = get(REDO_FILE)?;
        if redo_wal_file.len() != 24 || !redo_wal_file.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(REDO_FILE, redo_wal_file));
        }
        let lsn = |field: &'static str| -> Result<Lsn, ParseProblem> {
            let value = get(field)?;
            value.parse().map_err(|_| bad(field, value))
        };
        Ok(ControlData {
            system_identifier: parsed(
                "Database system identifier",
                get("Database system identifier")?,
            )?,
            state: ClusterState::parse(state).ok_or_else(|| bad(STATE, state))?,
            timeline: parsed(
                "Latest checkpoint's TimeLineID",
                get("Latest checkpoint's TimeLineID")?,
            )?,
            checkpoint_lsn: lsn("Latest checkpoint location")?,
            redo_lsn: lsn("Latest checkpoint's REDO location")?,
            redo_wal_file: redo_wal_file.to_owned(),
            min_recovery_end_lsn: lsn("Minimum recovery ending location")?,
            data_checksum_version: parsed(
                "Data page checksum version",
                get("Data page checksum version")?,
            )?,
            wal_log_hints: on_off("wal_log_hints setting")?,
            wal_level: WalLevel::parse(wal_level).ok_or_else(|| bad(WAL_LEVEL, wal_level))?,
            full_page_writes: on_off("Latest checkpoint's full_page_writes")?,
        })
    }

    /// Whether data checksums are on.
    pub fn data_checksums(&self) -> bool {
        self.data_checksum_version != 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pg_controldata of PostgreSQL 15 on a running primary (the mock nonce shortened).
    const PRIMARY: &str = "pg_control version number:            1300
Catalog version number:               202209061
Database system identifier:           7714737901954152280
Database cluster state:               in production
pg_control last modified:             Wed Dec  2 16:03:12 2026
Latest checkpoint location:           0/1500718
Latest checkpoint's REDO location:    0/15006E0
Latest checkpoint's REDO WAL file:    000000010000000000000001
Latest checkpoint's TimeLineID:       1
Latest checkpoint's PrevTimeLineID:   1
Latest checkpoint's full_page_writes: on
Latest checkpoint's NextXID:          0:724
Latest checkpoint's oldestCommitTsXid:0
Time of latest checkpoint:            Wed Dec  2 16:03:12 2026
Minimum recovery ending location:     0/0
Min recovery ending loc's timeline:   0
wal_level setting:                    replica
wal_log_hints setting:                off
max_connections setting:              100
Data page checksum version:           0
Mock authentication nonce:            98351f4f
";

    #[test]
    fn a_primary() {
        let c = ControlData::parse(PRIMARY).unwrap();
        assert_eq!(
            c,
            ControlData {
                system_identifier: 7714737901954152280,
                state: ClusterState::InProduction,
                timeline: 1,
                checkpoint_lsn: Lsn(0x1500718),
                redo_lsn: Lsn(0x15006E0),
                redo_wal_file: "000000010000000000000001".into(),
                min_recovery_end_lsn: Lsn(0),
                data_checksum_version: 0,
                wal_log_hints: false,
                wal_level: WalLevel::Replica,
                full_page_writes: true,
            }
        );
        assert!(!c.data_checksums());
        assert!(!c.state.is_clean_shutdown());
    }

    #[test]
    fn a_stopped_standby_with_checksums_and_hints() {
        let text = PRIMARY
            .replace("in production", "shut down in recovery")
            .replace("TimeLineID:       1", "TimeLineID:       2")
            .replace(
                "checksum version:           0",
                "checksum version:           1",
            )
            .replace(
                "wal_log_hints setting:                off",
                "wal_log_hints setting:                on",
            )
            .replace(
                "wal_level setting:                    replica",
                "wal_level setting:                    logical",
            );
        let c = ControlData::parse(&text).unwrap();
        assert_eq!(c.state, ClusterState::ShutDownInRecovery);
        assert!(c.state.is_clean_shutdown());
        assert_eq!(c.timeline, 2);
        assert!(c.data_checksums());
        assert!(c.wal_log_hints);
        assert_eq!(c.wal_level, WalLevel::Logical);
    }

    #[test]
    fn broken_output() {
        assert_eq!(
            ControlData::parse("pg_controldata: error: could not open file"),
            Err(ParseProblem::Missing("Database cluster state"))
        );
        let bad_state = PRIMARY.replace("in production", "dancing");
        assert_eq!(
            ControlData::parse(&bad_state),
            Err(ParseProblem::BadValue {
                field: "Database cluster state",
                value: "dancing".into()
            })
        );
        let bad_lsn = PRIMARY.replace("0/1500718\n", "zz\n");
        assert!(matches!(
            ControlData::parse(&bad_lsn),
            Err(ParseProblem::BadValue {
                field: "Latest checkpoint location",
                ..
            })
        ));
        let bad_file = PRIMARY.replace("000000010000000000000001", "0001");
        assert!(ControlData::parse(&bad_file).is_err());
    }
}
