//! The etcd store (etcd v3 through `etcd-client`). Every key lives under
//! `/pgwarden/<scope>/`:
//!
//! | key | value | lease |
//! |---|---|---|
//! | `leader` | the leader's name; its create revision is the term | the leader's |
//! | `members/<name>` | [`MemberState`] JSON | the member's |
//! | `initialize` | the system identifier (empty while initdb runs) | none |
//! | `optime` | the leader's last WAL position (decimal) | none |
//! | `config` | `{"paused": bool, "synchronous_mode": bool, "maximum_lag_on_failover": n}` | none |
//! | `sync` | [`SyncState`] JSON | none |
//! | `switchover` | [`Switchover`] JSON | none |
//! | `history` | [`HistoryEntry`] list JSON | none |
//!
//! Each agent holds one lease of `ttl` seconds, renewed every `loop_wait`; its member key and,
//! on the leader, the leader key are attached to it, so both vanish when the agent stops
//! renewing. Every request has a deadline (the [`REQUEST_TIMEOUT`]), so an unreachable etcd
//! costs a loop at most that long.

use std::time::Duration;

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};

use serde::{Deserialize, Serialize};

use crate::state::{
    ClusterView, Dynamic, HistoryEntry, Leader, MemberState, Switchover, SyncState,
};

/// The `config` key's document.
#[derive(Debug, Serialize, Deserialize)]
struct ConfigDoc {
    #[serde(default)]
    paused: bool,
    #[serde(default, flatten)]
    dynamic: Option<Dynamic>,
}

/// The deadline of one etcd request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(900);

/// Why an etcd request failed.
#[derive(Debug, thiserror::Error)]
pub enum DcsError {
    #[error("etcd at {endpoints}: {what}: {reason}")]
    Etcd {
        endpoints: String,
        what: &'static str,
        reason: String,
    },
    #[error("etcd key {key} holds something that is not pgwarden's: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("encode {what} for etcd: {reason}")]
    Encode { what: &'static str, reason: String },
}

impl pgw_common::Classify for DcsError {
    fn class(&self) -> pgw_common::ErrorClass {
        match self {
            DcsError::Etcd { .. } => pgw_common::ErrorClass::Failed,
            DcsError::Corrupt { .. } | DcsError::Encode { .. } => pgw_common::ErrorClass::Failed,
        }
    }
}

/// One scope in etcd.
#[derive(Clone)]
pub struct Dcs {
    client: Client,
    prefix: String,
    endpoints: String,
}

/// The agent's lease and its keep-alive stream.
pub struct Lease {
    pub id: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl Dcs {
    /// A client for `scope` on `endpoints`. Connecting is lazy: an unreachable etcd shows in
    /// the first request.
    pub async fn connect(endpoints: &[String], scope: &str) -> Result<Dcs, DcsError> {
        let shown = endpoints.join(",");
        let options = ConnectOptions::new()
            .with_connect_timeout(REQUEST_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(1), REQUEST_TIMEOUT);
        let client = Client::connect(endpoints, Some(options))
            .await
            .map_err(|e| DcsError::Etcd {
                endpoints: shown.clone(),
                what: "connect",
                reason: reason(&e),
            })?;
        Ok(Dcs {
            client,
            prefix: format!("/pgwarden/{scope}/"),
            endpoints: shown,
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn err(&self, what: &'static str) -> impl Fn(etcd_client::Error) -> DcsError + '_ {
        move |e| DcsError::Etcd {
            endpoints: self.endpoints.clone(),
            what,
            reason: reason(&e),
        }
    }

    /// Everything under the scope, in one request.
    pub async fn read(&self) -> Result<ClusterView, DcsError> {
        // With several endpoints, a request the balancer sent to a dead member fails at
        // once with a connect error; the next try goes to another member.
        let tries = self.endpoints.split(',').count().clamp(1, 3);
        let mut attempt = 0;
        let resp = loop {
            let mut c = self.client.clone();
            attempt += 1;
            match timed(c.get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))).await {
                Ok(r) => break r,
                Err(e) if attempt < tries && is_transport(&e) => {
                    tracing::debug!(error = %e, "read the cluster: trying another member");
                }
                Err(e) => return Err(self.err("read the cluster")(e)),
            }
        };
        let mut view = ClusterView::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some(name) = key.strip_prefix(&self.prefix) else {
                continue;
            };
            let value = String::from_utf8_lossy(kv.value()).into_owned();
            let corrupt = |e: &dyn std::fmt::Display| DcsError::Corrupt {
                key: key.clone(),
                reason: e.to_string(),
            };
            match name {
                "leader" => {
                    view.leader = Some(Leader {
                        name: value,
                        term: kv.create_revision(),
                    })
                }
                "initialize" => view.initialize = Some(value),
                "optime" => view.optime = Some(value.parse().map_err(|e| corrupt(&e))?),
                "config" => {
                    let c: ConfigDoc = serde_json::from_str(&value).map_err(|e| corrupt(&e))?;
                    view.paused = c.paused;
                    view.dynamic = c.dynamic;
                    view.config_revision = kv.mod_revision();
                }
                "sync" => view.sync = Some(serde_json::from_str(&value).map_err(|e| corrupt(&e))?),
                "switchover" => {
                    view.switchover = Some(serde_json::from_str(&value).map_err(|e| corrupt(&e))?)
                }
                "history" => {
                    view.history = serde_json::from_str(&value).map_err(|e| corrupt(&e))?
                }
                other => {
                    if let Some(member) = other.strip_prefix("members/") {
                        // One unreadable member (written by hand, or by another version)
                        // must not blind every agent: it is left out, with a warning.
                        match serde_json::from_str::<MemberState>(&value) {
                            Ok(m) => view.members.push(m),
                            Err(e) => {
                                tracing::warn!(member, error = %e, "ignoring an unreadable member key")
                            }
                        }
                    }
                }
            }
        }
        view.members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(view)
    }

    /// A new lease of `ttl` seconds with its keep-alive stream.
    pub async fn grant(&self, ttl: Duration) -> Result<Lease, DcsError> {
        let mut c = self.client.clone();
        let id = timed(c.lease_grant(ttl.as_secs() as i64, None))
            .await
            .map_err(self.err("grant a lease"))?
            .id();
        let (keeper, stream) = timed(c.lease_keep_alive(id))
            .await
            .map_err(self.err("open the lease keep-alive"))?;
        Ok(Lease { id, keeper, stream })
    }

    /// A new keep-alive stream for the lease `id` (after the old one broke).
    pub async fn reopen(&self, id: i64) -> Result<Lease, DcsError> {
        let mut c = self.client.clone();
        let (keeper, stream) = timed(c.lease_keep_alive(id))
            .await
            .map_err(self.err("open the lease keep-alive"))?;
        Ok(Lease { id, keeper, stream })
    }

    /// Renews `lease`: Ok(true) when etcd kept it, Ok(false) when it had expired.
    pub async fn renew(&self, lease: &mut Lease) -> Result<bool, DcsError> {
        let err = self.err("renew the lease");
        let r = tokio::time::timeout(REQUEST_TIMEOUT, async {
            lease.keeper.keep_alive().await?;
            lease.stream.message().await
        })
        .await;
        match r {
            Err(_) => Err(DcsError::Etcd {
                endpoints: self.endpoints.clone(),
                what: "renew the lease",
                reason: format!("no answer within {} ms", REQUEST_TIMEOUT.as_millis()),
            }),
            Ok(Err(e)) => Err(err(e)),
            Ok(Ok(None)) => Err(DcsError::Etcd {
                endpoints: self.endpoints.clone(),
                what: "renew the lease",
                reason: "the keep-alive stream ended".into(),
            }),
            Ok(Ok(Some(resp))) => Ok(resp.ttl() > 0),
        }
    }

    /// Revokes `lease` (a clean stop: the member key and a held leader key go at once).
    pub async fn revoke(&self, lease_id: i64) -> Result<(), DcsError> {
        let mut c = self.client.clone();
        timed(c.lease_revoke(lease_id))
            .await
            .map_err(self.err("revoke the lease"))?;
        Ok(())
    }

    /// Publishes this member's state under `lease_id`.
    pub async fn publish(&self, m: &MemberState, lease_id: i64) -> Result<(), DcsError> {
        let mut c = self.client.clone();
        let value = encode(m, "this member's state")?;
        timed(c.put(
            self.key(&format!("members/{}", m.name)),
            value,
            Some(PutOptions::new().with_lease(lease_id)),
        ))
        .await
        .map_err(self.err("publish this member's state"))?;
        Ok(())
    }

    /// Takes the leader key for `name` if nobody holds it: the term (the key's revision)
    /// when taken, None when someone else was first.
    pub async fn acquire(&self, name: &str, lease_id: i64) -> Result<Option<i64>, DcsError> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                name,
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let mut c = self.client.clone();
        let resp = timed(c.txn(txn))
            .await
            .map_err(self.err("take the leader key"))?;
        Ok(resp
            .succeeded()
            .then(|| resp.header().map(|h| h.revision()).unwrap_or(0)))
    }

    /// Whether `name` still holds the leader key under `lease_id`.
    pub async fn still_leader(&self, name: &str, lease_id: i64) -> Result<bool, DcsError> {
        let key = self.key("leader");
        let txn = Txn::new().when([
            Compare::value(key.clone(), CompareOp::Equal, name),
            Compare::lease(key, CompareOp::Equal, lease_id),
        ]);
        let mut c = self.client.clone();
        let resp = timed(c.txn(txn))
            .await
            .map_err(self.err("check the leader key"))?;
        Ok(resp.succeeded())
    }

    /// Deletes the leader key if `name` holds it.
    pub async fn release(&self, name: &str) -> Result<bool, DcsError> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(key.clone(), CompareOp::Equal, name)])
            .and_then([TxnOp::delete(key, None)]);
        let mut c = self.client.clone();
        let resp = timed(c.txn(txn))
            .await
            .map_err(self.err("give up the leader key"))?;
        Ok(resp.succeeded())
    }

    /// Claims the right to bootstrap: creates `initialize` (empty) if absent, under the
    /// agent's lease, so that the claim of an agent that dies during initdb goes with it.
    pub async fn claim_initialize(&self, lease_id: i64) -> Result<bool, DcsError> {
        let key = self.key("initialize");
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key,
                "",
                Some(PutOptions::new().with_lease(lease_id)),
            )]);
        let mut c = self.client.clone();
        let resp = timed(c.txn(txn))
            .await
            .map_err(self.err("claim the bootstrap"))?;
        Ok(resp.succeeded())
    }

    /// Records the bootstrapped system identifier (or, with `None`, gives the claim back
    /// after a failed initdb).
    pub async fn set_initialize(&self, sysid: Option<&str>) -> Result<(), DcsError> {
        let mut c = self.client.clone();
        let key = self.key("initialize");
        match sysid {
            Some(s) => {
                timed(c.put(key, s, None))
                    .await
                    .map_err(self.err("record the system identifier"))?;
            }
            None => {
                timed(c.delete(key, None))
                    .await
                    .map_err(self.err("give back the bootstrap claim"))?;
            }
        }
        Ok(())
    }

    pub async fn set_optime(&self, lsn: u64) -> Result<(), DcsError> {
        self.put_plain(
            "optime",
            lsn.to_string(),
            "publish the leader's WAL position",
        )
        .await
    }

    pub async fn set_sync(&self, sync: &SyncState) -> Result<(), DcsError> {
        self.put_plain(
            "sync",
            encode(sync, "the synchronous standby")?,
            "record the synchronous standby",
        )
        .await
    }

    /// Writes the `config` key if it is still at `revision` (0: absent): Ok(false) when
    /// someone changed it since it was read.
    pub async fn set_config(
        &self,
        revision: i64,
        paused: bool,
        dynamic: Option<Dynamic>,
    ) -> Result<bool, DcsError> {
        let key = self.key("config");
        let doc = encode(&ConfigDoc { paused, dynamic }, "the cluster config")?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.clone(),
                CompareOp::Equal,
                revision,
            )])
            .and_then([TxnOp::put(key, doc, None)]);
        let mut c = self.client.clone();
        let resp = timed(c.txn(txn))
            .await
            .map_err(self.err("write the cluster config"))?;
        Ok(resp.succeeded())
    }

    pub async fn set_switchover(&self, s: Option<&Switchover>) -> Result<(), DcsError> {
        match s {
            Some(s) => {
                self.put_plain(
                    "switchover",
                    encode(s, "the switchover request")?,
                    "request the switchover",
                )
                .await
            }
            None => {
                let mut c = self.client.clone();
                timed(c.delete(self.key("switchover"), None::<DeleteOptions>))
                    .await
                    .map_err(self.err("clear the switchover request"))?;
                Ok(())
            }
        }
    }

    pub async fn set_history(&self, history: &[HistoryEntry]) -> Result<(), DcsError> {
        self.put_plain(
            "history",
            encode(history, "the leader history")?,
            "record the leader history",
        )
        .await
    }

    async fn put_plain(
        &self,
        name: &str,
        value: String,
        what: &'static str,
    ) -> Result<(), DcsError> {
        let tries = self.endpoints.split(',').count().clamp(1, 3);
        for attempt in 1.. {
            let mut c = self.client.clone();
            match timed(c.put(self.key(name), value.clone(), None)).await {
                Ok(_) => return Ok(()),
                Err(e) if attempt < tries && is_transport(&e) => {}
                Err(e) => return Err(self.err(what)(e)),
            }
        }
        Ok(())
    }

    /// A watch on the leader key: its stream yields when the key changes or goes.
    pub async fn watch_leader(&self) -> Result<WatchStream, DcsError> {
        let mut c = self.client.clone();
        timed(c.watch(self.key("leader"), None::<WatchOptions>))
            .await
            .map_err(self.err("watch the leader key"))
    }
}

/// A request under [`REQUEST_TIMEOUT`] (the client's own deadline covers the call but not
/// a connection that never comes up).
async fn timed<T>(
    f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, etcd_client::Error> {
    match tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_millis(100), f).await {
        Ok(r) => r,
        Err(_) => Err(etcd_client::Error::IoError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {} ms", REQUEST_TIMEOUT.as_millis()),
        ))),
    }
}

/// `value` as JSON for a key.
fn encode<T: Serialize + ?Sized>(value: &T, what: &'static str) -> Result<String, DcsError> {
    serde_json::to_string(value).map_err(|e| DcsError::Encode {
        what,
        reason: e.to_string(),
    })
}

/// A failure to reach the member the request went to (worth another member), not an
/// answer from etcd.
fn is_transport(e: &etcd_client::Error) -> bool {
    match e {
        // The code's name, so as not to depend on tonic for its enum.
        etcd_client::Error::GRpcStatus(s) => format!("{:?}", s.code()) == "Unavailable",
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => true,
        _ => false,
    }
}

/// etcd-client's errors wrap tonic statuses with long debug text; the message is enough.
fn reason(e: &etcd_client::Error) -> String {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            if m.is_empty() {
                format!("{:?}", s.code())
            } else {
                m.lines().next().unwrap_or(m).to_string()
            }
        }
        other => other.to_string().lines().next().unwrap_or("").to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_documents_round_trip() {
        let only_pause: ConfigDoc = serde_json::from_str(r#"{"paused": true}"#).unwrap();
        assert!(only_pause.paused && only_pause.dynamic.is_none());
        let d = Dynamic {
            synchronous_mode: true,
            maximum_lag_on_failover: 42,
        };
        let text = serde_json::to_string(&ConfigDoc {
            paused: false,
            dynamic: Some(d),
        })
        .unwrap();
        let back: ConfigDoc = serde_json::from_str(&text).unwrap();
        assert_eq!(back.dynamic, Some(d));
        assert!(!back.paused);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_never_answers_fails_after_the_deadline() {
        let started = tokio::time::Instant::now();
        let never = std::future::pending::<Result<(), etcd_client::Error>>();
        let e = timed(never).await.unwrap_err();
        assert!(e.to_string().contains("no answer within 900 ms"), "{e}");
        assert_eq!(
            started.elapsed(),
            REQUEST_TIMEOUT + Duration::from_millis(100)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_that_answers_in_time_passes() {
        let soon = async {
            tokio::time::sleep(Duration::from_millis(800)).await;
            Ok::<_, etcd_client::Error>(7)
        };
        assert_eq!(timed(soon).await.unwrap(), 7);
    }
}
