//! `replica promote`: a standby becomes a primary. `pg_promote(wait => true)` waits until
//! it has left recovery (or the wait runs out); the result is then read back, never assumed.

use serde::Serialize;
use tokio_postgres::Client;

use crate::{query, ReplicaError};

/// A promotion done.
#[derive(Debug, Clone, Serialize)]
pub struct Promoted {
    /// The server, as `host:port`.
    pub server: String,
    /// The timeline it writes on now (a promotion starts a new one).
    pub timeline: i64,
    /// Its WAL position right after promotion.
    pub lsn: String,
}

/// Promotes the standby `client` is connected to, waiting up to `wait_seconds` for it to
/// leave recovery. Refuses a server that is not a standby.
pub async fn promote(
    client: &Client,
    server: &str,
    wait_seconds: i32,
) -> Result<Promoted, ReplicaError> {
    let standby: bool = client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .await
        .map_err(query("ask whether the server is in recovery"))?
        .get(0);
    if !standby {
        return Err(ReplicaError::NotStandby(server.to_string()));
    }
    tracing::info!(server, wait_seconds, "pg_promote");
    let done: bool = client
        .query_one("SELECT pg_promote(true, $1)", &[&wait_seconds])
        .await
        .map_err(query("promote with pg_promote"))?
        .get(0);
    let r = client
        .query_one(
            "SELECT pg_is_in_recovery(),
                    CASE WHEN pg_is_in_recovery() THEN NULL
                         ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int8
                    END,
                    CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END",
            &[],
        )
        .await
        .map_err(query("check the promotion"))?;
    let still_standby: bool = r.get(0);
    if !done || still_standby {
        return Err(ReplicaError::PromoteTimeout {
            target: server.to_string(),
            seconds: wait_seconds,
        });
    }
    Ok(Promoted {
        server: server.to_string(),
        timeline: r.get::<_, Option<i64>>(1).unwrap_or(0),
        lsn: r.get::<_, Option<String>>(2).unwrap_or_default(),
    })
}
