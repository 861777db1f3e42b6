//! Finding the primary of a multi-host database from `pgwarden ha`'s REST API: `ha_api`
//! lists one API URL per host, in the same order, and the host whose agent answers 200
//! on `/primary` is the primary. Without `ha_api` the pool asks each host
//! `pg_is_in_recovery()` itself when it connects (see [`crate::pool`]).

use std::time::Duration;

use crate::server::Target;

/// The index of the host whose agent says it is the primary, if any answers so.
pub async fn ha_primary(apis: &[String], targets: &[Target]) -> Option<usize> {
    if apis.is_empty() || apis.len() != targets.len() {
        return None;
    }
    let urls: Vec<String> = apis
        .iter()
        .map(|u| format!("{}/primary", u.trim_end_matches('/')))
        .collect();
    // ureq is blocking: every host asked at once, on the blocking pool, 1 s at most.
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(1)))
            .http_status_as_error(false)
            .build()
            .into();
        std::thread::scope(|scope| {
            let asks: Vec<_> = urls
                .iter()
                .map(|u| {
                    let agent = agent.clone();
                    scope.spawn(move || {
                        agent
                            .get(u)
                            .call()
                            .map(|r| r.status() == 200)
                            .unwrap_or(false)
                    })
                })
                .collect();
            asks.into_iter().position(|a| a.join().unwrap_or(false))
        })
    })
    .await
    .ok()
    .flatten()
}
