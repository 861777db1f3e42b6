//! [`Replicated`]: a primary and N streaming standbys in one call, each a [`Cluster`].

use std::time::Duration;

use crate::cluster::READY_TIMEOUT;
use crate::{Cluster, ClusterBuilder, ClusterError};

/// A primary and its streaming hot standbys, named `standby1` … `standbyN` (their
/// `application_name` in `pg_stat_replication`, and their slot names when slots are on).
///
/// Dropping it drops every cluster (standbys first). Take the clusters out with
/// [`Replicated::into_parts`] to fail them over one by one.
#[derive(Debug)]
pub struct Replicated {
    // Field order: standbys drop (stop) before their primary.
    standbys: Vec<Cluster>,
    primary: Cluster,
}

/// Options for [`Replicated`]; [`ReplicatedBuilder::start`] starts them all.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .start() is called"]
pub struct ReplicatedBuilder {
    standbys: usize,
    slots: bool,
    data_checksums: bool,
    settings: Vec<(String, String)>,
    primary_settings: Vec<(String, String)>,
    standby_settings: Vec<(String, String)>,
    bin_dir: Option<std::path::PathBuf>,
}

impl Default for ReplicatedBuilder {
    fn default() -> ReplicatedBuilder {
        ReplicatedBuilder {
            standbys: 1,
            slots: true,
            data_checksums: true,
            settings: Vec::new(),
            primary_settings: Vec::new(),
            standby_settings: Vec::new(),
            bin_dir: None,
        }
    }
}

impl ReplicatedBuilder {
    /// How many standbys (default 1; 0 gives a lone primary).
    pub fn standbys(mut self, n: usize) -> Self {
        self.standbys = n;
        self
    }

    /// Whether each standby streams through its own physical replication slot, named like
    /// the standby (default on).
    pub fn slots(mut self, on: bool) -> Self {
        self.slots = on;
        self
    }

    /// Data checksums on the primary, and so on its copies (default on, so that a failed-over
    /// primary can [`rejoin`](Cluster::rejoin) with pg_rewind).
    pub fn data_checksums(mut self, on: bool) -> Self {
        self.data_checksums = on;
        self
    }

    /// A setting for every cluster (see [`ClusterBuilder::setting`]).
    pub fn setting(mut self, name: &str, value: &str) -> Self {
        self.settings.push((name.to_owned(), value.to_owned()));
        self
    }

    /// A setting for the primary only (the standbys' copies of postgresql.conf have it too,
    /// unless a standby setting overrides it).
    pub fn primary_setting(mut self, name: &str, value: &str) -> Self {
        self.primary_settings
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// A setting for each standby.
    pub fn standby_setting(mut self, name: &str, value: &str) -> Self {
        self.standby_settings
            .push((name.to_owned(), value.to_owned()));
        self
    }

    /// The bin dir (see [`ClusterBuilder::bin_dir`]).
    pub fn bin_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// Starts the primary, then each standby from a `pg_basebackup` of it, and waits until
    /// every standby streams.
    pub fn start(self) -> Result<Replicated, ClusterError> {
        let mut primary = Cluster::builder()
            .data_checksums(self.data_checksums)
            .application_name("primary");
        if let Some(dir) = &self.bin_dir {
            primary = primary.bin_dir(dir.clone());
        }
        for (name, value) in self.settings.iter().chain(&self.primary_settings) {
            primary = primary.setting(name, value);
        }
        let primary = primary.start()?;
        let mut standbys = Vec::with_capacity(self.standbys);
        for i in 1..=self.standbys {
            let name = format!("standby{i}");
            let mut builder: ClusterBuilder = Cluster::builder()
                .standby_of(&primary)
                .application_name(&name);
            if self.slots {
                builder = builder.replication_slot(&name);
            }
            for (k, v) in self.settings.iter().chain(&self.standby_settings) {
                builder = builder.setting(k, v);
            }
            standbys.push(builder.start()?);
        }
        let replicated = Replicated { standbys, primary };
        replicated.wait_streaming(READY_TIMEOUT)?;
        Ok(replicated)
    }
}

impl Replicated {
    /// A primary and `n` standbys with slots and checksums, all streaming.
    pub fn start(n: usize) -> Result<Replicated, ClusterError> {
        Replicated::builder().standbys(n).start()
    }

    /// A builder for other options.
    pub fn builder() -> ReplicatedBuilder {
        ReplicatedBuilder::default()
    }

    /// The primary.
    pub fn primary(&self) -> &Cluster {
        &self.primary
    }

    /// The standbys, `standby1` first.
    pub fn standbys(&self) -> &[Cluster] {
        &self.standbys
    }

    /// Standby `i`, counting from 1 as their names do; `None` past the last.
    pub fn standby(&self, i: usize) -> Option<&Cluster> {
        i.checked_sub(1).and_then(|i| self.standbys.get(i))
    }

    /// Waits until every standby streams, or `timeout` passes (for each).
    pub fn wait_streaming(&self, timeout: Duration) -> Result<(), ClusterError> {
        self.standbys
            .iter()
            .try_for_each(|s| s.wait_streaming(timeout))
    }

    /// Waits until every standby has replayed all the WAL the primary had written when this
    /// was called (`pg_last_wal_replay_lsn()` on each standby against the primary's
    /// `pg_current_wal_lsn()`), or `timeout` passes (for each). After it, a failover loses
    /// nothing and no standby is ahead of another.
    pub fn wait_caught_up(&self, timeout: Duration) -> Result<(), ClusterError> {
        let lsn = self
            .primary
            .psql("postgres", "select pg_current_wal_lsn()")?;
        self.standbys
            .iter()
            .try_for_each(|s| s.wait_replayed(&lsn, timeout))
    }

    /// The primary and the standbys, to move or drop one by one.
    pub fn into_parts(self) -> (Cluster, Vec<Cluster>) {
        (self.primary, self.standbys)
    }
}
