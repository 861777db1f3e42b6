//! Every limit a check uses, with its default. A config file or `--threshold name=value`
//! overrides them; unknown names are errors (`deny_unknown_fields`).

use serde::{Deserialize, Serialize};

/// Limits for the checks. Durations are seconds, shares are fractions (0.2 = 20 %).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// idle_in_transaction: a session idle inside a transaction this long is a warning (60 s).
    pub idle_in_transaction_warning_secs: f64,
    /// idle_in_transaction: ... and this long critical (300 s).
    pub idle_in_transaction_critical_secs: f64,
    /// long_transaction: a transaction open this long is a warning (300 s = 5 min).
    pub long_transaction_warning_secs: f64,
    /// long_transaction: ... and this long critical (1800 s).
    pub long_transaction_critical_secs: f64,
    /// blocked_queries: a query waiting on a lock this long is a warning (10 s).
    pub blocked_query_warning_secs: f64,
    /// blocked_queries: ... and this long critical (60 s).
    pub blocked_query_critical_secs: f64,
    /// connection_saturation: share of max_connections in use for a warning (0.8).
    pub connections_warning_share: f64,
    /// connection_saturation: ... and for critical (0.9).
    pub connections_critical_share: f64,
    /// prepared_transactions: a transaction prepared this long ago is a warning (300 s).
    pub prepared_xact_warning_secs: f64,
    /// prepared_transactions: ... and this long critical (3600 s).
    pub prepared_xact_critical_secs: f64,
    /// sequence_exhaustion: share of a sequence's range used for a warning (0.75).
    pub sequence_warning_share: f64,
    /// sequence_exhaustion: ... and for critical (0.9).
    pub sequence_critical_share: f64,
    /// dead_tuples: dead rows as a share of live rows for a warning (0.2).
    pub dead_tuples_warning_share: f64,
    /// dead_tuples: ... and for critical (0.5).
    pub dead_tuples_critical_share: f64,
    /// dead_tuples: tables with fewer live + dead rows are ignored (10000).
    pub dead_tuples_min_rows: i64,
    /// replication_lag: replay lag for a warning, in ms (500, the service level).
    pub replication_lag_warning_ms: f64,
    /// replication_lag: ... and for critical (5000).
    pub replication_lag_critical_ms: f64,
    /// replication_slot: WAL retained by an inactive slot for critical, in MB (1024);
    /// any inactive slot is a warning.
    pub slot_retained_critical_mb: f64,
    /// vacuum_stale / analyze_stale: tables with fewer rows are ignored (10000).
    pub stale_min_rows: i64,
    /// vacuum_stale: hours since the last (auto)vacuum, for a table with dead rows (24).
    pub vacuum_stale_hours: f64,
    /// analyze_stale: rows changed since the last analyze as a share of the table (0.2).
    pub analyze_stale_share: f64,
    /// analyze_stale: hours since the last (auto)analyze (24).
    pub analyze_stale_hours: f64,
    /// autovacuum_large_table: tables at least this many rows want their own settings (1000000).
    pub large_table_rows: i64,
    /// autovacuum_large_table: ... that gain at least this many dead rows a day (10000);
    /// a large table that changes less is left on the server-wide settings.
    pub large_table_dead_rows_per_day: f64,
    /// cache_hit_ratio: hit ratio below this is a warning (0.95).
    pub cache_hit_warning: f64,
    /// cache_hit_ratio: ... below this critical (0.90).
    pub cache_hit_critical: f64,
    /// cache_hit_ratio: tables with fewer block reads + hits are ignored (10000).
    pub cache_hit_min_blocks: i64,
    /// table_bloat: estimated wasted share of a table for a warning (0.3).
    pub bloat_warning_share: f64,
    /// table_bloat: ... for critical (0.6).
    pub bloat_critical_share: f64,
    /// table_bloat: tables whose estimated waste is below this many MB are ignored (10).
    pub bloat_min_mb: f64,
    /// index_bloat: an index whose column statistics the role cannot read is measured with
    /// pgstatindex (which reads the whole index) only up to this many MB (1024); a larger
    /// one is listed as skipped.
    pub index_scan_max_mb: f64,
    /// xid_wraparound: transaction age as a share of the 2^31 wraparound limit for a
    /// warning (0.5, about 1.07 billion).
    pub xid_warning_share: f64,
    /// xid_wraparound: ... for critical (0.75).
    pub xid_critical_share: f64,
    /// slow_queries: statements whose mean time exceeds this many ms (50).
    pub slow_query_ms: f64,
    /// slow_queries: ... with at least this many calls (10).
    pub slow_query_min_calls: i64,
    /// slow_queries: how many statements by total time to list as info (5).
    pub top_statements: i64,
    /// unused_index: indexes never scanned and at least this many MB (10).
    pub unused_index_min_mb: f64,
    /// seq_scan_heavy: tables with at least this many rows (100000) ...
    pub seq_scan_min_rows: i64,
    /// seq_scan_heavy: ... read by sequential scans for more than this share of scans (0.95).
    pub seq_scan_share: f64,
    /// commit_ratio: rolled-back share of a database's transactions for a warning (0.05).
    pub rollback_warning_share: f64,
    /// commit_ratio: ... for critical (0.2).
    pub rollback_critical_share: f64,
    /// commit_ratio: databases with fewer commits + rollbacks are ignored (1000).
    pub rollback_min_xacts: i64,
    /// checkpoint_pressure: requested share of checkpoints for a warning (0.2).
    pub checkpoint_req_warning_share: f64,
    /// checkpoint_pressure: ... for critical (0.5).
    pub checkpoint_req_critical_share: f64,
    /// checkpoint_pressure: judged once this many checkpoints are counted (10).
    pub checkpoint_min_count: i64,
    /// wal_files: WAL in pg_wal as a multiple of max_wal_size for a warning (2).
    pub wal_files_warning_ratio: f64,
    /// wal_files: ... for critical (4).
    pub wal_files_critical_ratio: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            idle_in_transaction_warning_secs: 60.0,
            idle_in_transaction_critical_secs: 300.0,
            long_transaction_warning_secs: 300.0,
            long_transaction_critical_secs: 1800.0,
            blocked_query_warning_secs: 10.0,
            blocked_query_critical_secs: 60.0,
            connections_warning_share: 0.8,
            connections_critical_share: 0.9,
            prepared_xact_warning_secs: 300.0,
            prepared_xact_critical_secs: 3600.0,
            sequence_warning_share: 0.75,
            sequence_critical_share: 0.9,
            dead_tuples_warning_share: 0.2,
            dead_tuples_critical_share: 0.5,
            dead_tuples_min_rows: 10_000,
            replication_lag_warning_ms: 500.0,
            replication_lag_critical_ms: 5000.0,
            slot_retained_critical_mb: 1024.0,
            stale_min_rows: 10_000,
            vacuum_stale_hours: 24.0,
            analyze_stale_share: 0.2,
            analyze_stale_hours: 24.0,
            large_table_rows: 1_000_000,
            large_table_dead_rows_per_day: 10_000.0,
            cache_hit_warning: 0.95,
            cache_hit_critical: 0.90,
            cache_hit_min_blocks: 10_000,
            bloat_warning_share: 0.3,
            bloat_critical_share: 0.6,
            bloat_min_mb: 10.0,
            index_scan_max_mb: 1024.0,
            xid_warning_share: 0.5,
            xid_critical_share: 0.75,
            slow_query_ms: 50.0,
            slow_query_min_calls: 10,
            top_statements: 5,
            unused_index_min_mb: 10.0,
            seq_scan_min_rows: 100_000,
            seq_scan_share: 0.95,
            rollback_warning_share: 0.05,
            rollback_critical_share: 0.2,
            rollback_min_xacts: 1000,
            checkpoint_req_warning_share: 0.2,
            checkpoint_req_critical_share: 0.5,
            checkpoint_min_count: 10,
            wal_files_warning_ratio: 2.0,
            wal_files_critical_ratio: 4.0,
        }
    }
}

/// Why a threshold could not be set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ThresholdError {
    #[error("'{0}' is not NAME=VALUE")]
    Syntax(String),
    #[error("unknown threshold '{0}' (see pgwarden doctor --list)")]
    Unknown(String),
    #[error("threshold {name}: '{value}' is not a number")]
    NotANumber { name: String, value: String },
    #[error("threshold {name} must not be negative (got {value})")]
    Negative { name: String, value: String },
}

/// The doctor config file: `[thresholds]` with any of [`Thresholds`]' fields, e.g.
///
/// ```toml
/// [thresholds]
/// idle_in_transaction_warning_secs = 30
/// dead_tuples_min_rows = 50000
/// ```
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigFile {
    pub thresholds: Thresholds,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
}

impl pgw_common::Classify for ThresholdError {
    fn class(&self) -> pgw_common::ErrorClass {
        pgw_common::ErrorClass::Input
    }
}

impl pgw_common::Classify for ConfigError {
    /// A config file that cannot be read or parsed is bad input, as a bad flag is.
    fn class(&self) -> pgw_common::ErrorClass {
        pgw_common::ErrorClass::Input
    }
}

impl Thresholds {
    /// Reads thresholds from a TOML file (unknown names are errors, missing ones keep
    /// their defaults).
    pub fn from_file(path: &std::path::Path) -> Result<Thresholds, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Thresholds::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses the config file's text; the error is one line.
    pub fn from_toml(text: &str) -> Result<Thresholds, String> {
        toml::from_str::<ConfigFile>(text)
            .map(|c| c.thresholds)
            .map_err(|e| e.message().replace('\n', " "))
    }

    /// Sets one threshold from `name=value` (as `--threshold` takes it).
    pub fn set(&mut self, assignment: &str) -> Result<(), ThresholdError> {
        let (name, value) = assignment
            .split_once('=')
            .ok_or_else(|| ThresholdError::Syntax(assignment.to_string()))?;
        let (name, value) = (name.trim(), value.trim());
        let number: f64 = value.parse().map_err(|_| ThresholdError::NotANumber {
            name: name.to_string(),
            value: value.to_string(),
        })?;
        if !number.is_finite() || number < 0.0 {
            return Err(ThresholdError::Negative {
                name: name.to_string(),
                value: value.to_string(),
            });
        }
        let mut map = match serde_json::to_value(&*self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(ThresholdError::Unknown(name.to_string())),
        };
        let slot = map
            .get_mut(name)
            .ok_or_else(|| ThresholdError::Unknown(name.to_string()))?;
        *slot = if slot.is_i64() || slot.is_u64() {
            serde_json::Value::from(number.round() as i64)
        } else {
            serde_json::Value::from(number)
        };
        *self = serde_json::from_value(serde_json::Value::Object(map))
            .map_err(|_| ThresholdError::Unknown(name.to_string()))?;
        Ok(())
    }

    /// Every threshold as `(name, value)`, for `--list`.
    pub fn entries(&self) -> Vec<(String, String)> {
        match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => {
                m.into_iter().map(|(k, v)| (k, v.to_string())).collect()
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_by_name() {
        let mut t = Thresholds::default();
        t.set("idle_in_transaction_warning_secs=1.5").unwrap();
        assert_eq!(t.idle_in_transaction_warning_secs, 1.5);
        t.set("dead_tuples_min_rows = 10").unwrap();
        assert_eq!(t.dead_tuples_min_rows, 10);
        assert_eq!(t.set("nope=1"), Err(ThresholdError::Unknown("nope".into())));
        assert!(matches!(
            t.set("dead_tuples_min_rows=x"),
            Err(ThresholdError::NotANumber { .. })
        ));
        assert!(matches!(
            t.set("dead_tuples_min_rows=-1"),
            Err(ThresholdError::Negative { .. })
        ));
        assert!(matches!(t.set("novalue"), Err(ThresholdError::Syntax(_))));
        assert_eq!(t.entries().len(), 47);
    }

    #[test]
    fn config_file() {
        let t =
            Thresholds::from_toml("[thresholds]\nidle_in_transaction_warning_secs = 30\n").unwrap();
        assert_eq!(t.idle_in_transaction_warning_secs, 30.0);
        assert_eq!(t.long_transaction_warning_secs, 300.0);
        assert!(Thresholds::from_toml("[thresholds]\nnope = 1\n")
            .unwrap_err()
            .contains("nope"));
        assert!(Thresholds::from_toml("[thresholdz]\n").is_err());
        assert!(Thresholds::from_toml("[thresholds]\nslow_query_ms = \"fast\"\n").is_err());
        assert_eq!(Thresholds::from_toml("").unwrap(), Thresholds::default());
    }
}

#[cfg(test)]
mod docs_tests {
    use super::Thresholds;

    /// docs/doctor.md lists every threshold with its default and every check: the page cannot
    /// drift from the code.
    #[test]
    fn docs_page_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/doctor.md");
        let page = std::fs::read_to_string(path).expect("docs/doctor.md");
        for (name, value) in Thresholds::default().entries() {
            let row = page
                .lines()
                .find(|l| l.starts_with(&format!("| `{name}` |")))
                .unwrap_or_else(|| panic!("docs/doctor.md has no row for threshold {name}"));
            let documented: f64 = row.split('|').nth(2).unwrap_or("").trim().parse().unwrap();
            let actual: f64 = value.parse().unwrap();
            assert_eq!(documented, actual, "default of {name} in docs/doctor.md");
        }
        for check in crate::checks::all() {
            assert!(
                page.lines()
                    .any(|l| l.starts_with(&format!("| `{}` |", check.id))),
                "docs/doctor.md has no row for check {}",
                check.id
            );
        }
    }
}
