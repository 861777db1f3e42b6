//! Automatic failover on etcd (`pgwarden ha`): one agent per node owns its PostgreSQL and
//! keeps one leader, Patroni-style, with the decision as pure functions.
//!
//! - [`config`]: the node's `node.toml` (serde, unknown keys refused, every key documented).
//! - [`decide`]: the pure decision (`decide(view) -> Action`), the synchronous-standby steps
//!   and the fencing rule; table-driven and property tests beside it.
//! - [`state`]: what members share in etcd; [`dcs`]: the etcd v3 store (etcd-client), the
//!   leader key under a lease, transactions that take it only when free.
//! - [`pg`]: the local server's facts and steps (through pgw-node and pgw-replica).
//! - [`agent`]: the keeper (lease, fencing) and the loop; [`api`]: the REST API (axum).
//! - [`ctl`]: what `ha list / switchover / failover / pause / resume` do against etcd.

pub mod agent;
pub mod api;
pub mod config;
pub mod ctl;
pub mod dcs;
pub mod decide;
pub mod pg;
pub mod state;

pub use agent::{run, AgentError, Control};
pub use config::{Config, ConfigError};
