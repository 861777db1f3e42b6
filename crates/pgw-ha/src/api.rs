//! The agent's REST API (axum), for load balancers and people, as Patroni's:
//!
//! | request | 200 when | else |
//! |---|---|---|
//! | `GET /primary` | this member holds the leader key (renewed within the fencing deadline, or held by failsafe) and PostgreSQL is writable | 503 |
//! | `GET /replica` | PostgreSQL runs in recovery and streams | 503 |
//! | `GET /health` | PostgreSQL runs | 503 |
//! | `GET /cluster` | always: every member as etcd has it (JSON) | |
//! | `POST /failsafe` | failsafe: this member cannot reach etcd either and follows the leader named in the body | 409 |
//!
//! Every answer's body is this member's status as JSON. The status is what the agent's loop
//! last saw; `/primary` additionally checks the renewal time at the moment of the request,
//! so a loop that stalls cannot keep answering 200 past the fencing deadline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::state::{ClusterView, Role};

/// What the loop last saw, shared with the API.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub name: String,
    pub scope: String,
    pub role: Role,
    pub state: String,
    pub running: bool,
    pub writable: bool,
    pub streaming: bool,
    pub holds_leader: bool,
    /// The leader this member follows (a replica).
    pub leader: Option<String>,
    pub timeline: Option<u32>,
    pub lag_bytes: Option<u64>,
    pub etcd_reachable: bool,
    pub paused: bool,
    /// The decision of the last loop.
    pub action: String,
    /// Failsafe mode keeps this leader writable through an etcd outage right now.
    pub failsafe: bool,
    #[serde(skip)]
    pub cluster: ClusterView,
}

/// The API's state: the status and the renewal clock.
pub struct Shared {
    pub status: Mutex<Status>,
    /// The last successful renewal of the lease (its request's send time).
    pub renewed: Mutex<Option<Instant>>,
    pub demote_after: Mutex<Duration>,
    /// Failsafe holds: keep writable although renewals fail.
    pub failsafe_held: Mutex<bool>,
    /// When this member last answered 200 to `POST /failsafe` (vouched for a leader).
    pub answered_failsafe: Mutex<Option<Instant>>,
}

impl Shared {
    pub fn new(name: &str, scope: &str, demote_after: Duration) -> Arc<Shared> {
        Arc::new(Shared {
            status: Mutex::new(Status {
                name: name.to_string(),
                scope: scope.to_string(),
                role: Role::Uninitialized,
                state: "starting".into(),
                running: false,
                writable: false,
                streaming: false,
                holds_leader: false,
                leader: None,
                timeline: None,
                lag_bytes: None,
                etcd_reachable: false,
                paused: false,
                action: String::new(),
                failsafe: false,
                cluster: ClusterView::default(),
            }),
            renewed: Mutex::new(None),
            demote_after: Mutex::new(demote_after),
            failsafe_held: Mutex::new(false),
            answered_failsafe: Mutex::new(None),
        })
    }

    pub fn status(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn update(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    pub fn since_renewal(&self) -> Option<Duration> {
        self.renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    pub fn set_renewed(&self, at: Instant) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    pub fn demote_after(&self) -> Duration {
        *self.demote_after.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn answered_failsafe(&self) -> Option<Instant> {
        *self
            .answered_failsafe
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn failsafe_held(&self) -> bool {
        *self.failsafe_held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_failsafe_held(&self, held: bool) {
        *self.failsafe_held.lock().unwrap_or_else(|e| e.into_inner()) = held;
        self.update(|s| s.failsafe = held);
    }

    /// Whether this member may answer 200 on `/primary` now.
    pub fn is_primary_now(&self) -> bool {
        let s = self.status();
        let fresh = self
            .since_renewal()
            .is_some_and(|d| d < self.demote_after())
            || self.failsafe_held();
        s.holds_leader && s.writable && fresh
    }
}

/// The router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/primary", get(primary))
        .route("/leader", get(primary))
        .route("/replica", get(replica))
        .route("/health", get(health))
        .route("/cluster", get(cluster))
        .route("/failsafe", post(failsafe))
        .with_state(shared)
}

fn answer(ok: bool, s: Status) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(s)).into_response()
}

async fn primary(State(sh): State<Arc<Shared>>) -> Response {
    answer(sh.is_primary_now(), sh.status())
}

async fn replica(State(sh): State<Arc<Shared>>) -> Response {
    let s = sh.status();
    answer(s.running && s.role == Role::Replica && s.streaming, s)
}

async fn health(State(sh): State<Arc<Shared>>) -> Response {
    let s = sh.status();
    answer(s.running, s)
}

async fn cluster(State(sh): State<Arc<Shared>>) -> Response {
    let s = sh.status();
    (
        StatusCode::OK,
        Json(serde_json::json!({
            "scope": s.scope,
            "leader": s.cluster.leader,
            "members": s.cluster.members,
            "paused": s.cluster.paused,
            "sync": s.cluster.sync,
            "switchover": s.cluster.switchover,
            "history": s.cluster.history,
            "answered_by": s.name,
            "etcd_reachable": s.etcd_reachable,
        })),
    )
        .into_response()
}

/// The body of `POST /failsafe`.
#[derive(Debug, Deserialize)]
pub struct FailsafeAsk {
    pub leader: String,
}

async fn failsafe(State(sh): State<Arc<Shared>>, Json(ask): Json<FailsafeAsk>) -> Response {
    let s = sh.status();
    let ok = !s.etcd_reachable && s.leader.as_deref() == Some(ask.leader.as_str()) && s.running;
    if ok {
        *sh.answered_failsafe
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (code, Json(s)).into_response()
}

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(shared))
        .with_graceful_shutdown(shutdown)
        .await
}
