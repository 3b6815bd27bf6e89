//! `/status`: the node's live state as JSON, for `ioplex tenants --url` and for scripts that would
//! otherwise scrape `/metrics`. Guarded by the metrics token, since it lists tenant ids too.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use serde::{Deserialize, Serialize};

use crate::adapter::redis::shard_subscriptions::ShardState;
use crate::http_util::{Body, Handler, bearer_matches};
use crate::tenant::Tenants;

/// Where the handler answers.
pub const PATH: &str = "/status";

/// What `/status` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Every tenant the node serves, by id.
    pub tenants: BTreeMap<String, TenantStatus>,
    /// Every Redis Cluster connection (sharded adapter), by channel prefix.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub clusters: BTreeMap<String, ClusterStatus>,
}

/// One Redis Cluster connection as the last subscription check saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterStatus {
    /// Both cluster clients are connected.
    pub connected: bool,
    /// Masters lost from the slot map since start (failovers).
    pub masters_lost: u64,
    /// Each master as the last check saw it.
    pub shards: Vec<ShardState>,
}

/// One tenant's live connections on this node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStatus {
    /// Engine.IO sessions on websocket.
    pub websocket: usize,
    /// Engine.IO sessions on long-polling.
    pub polling: usize,
}

/// The node's status now.
pub fn snapshot(registry: &Tenants) -> NodeStatus {
    let tenants = registry
        .all()
        .iter()
        .map(|t| {
            let (websocket, polling) = t.engine().open_sessions_by_transport();
            (t.id().to_owned(), TenantStatus { websocket, polling })
        })
        .collect();
    let clusters = registry
        .cluster_buses()
        .into_iter()
        .map(|(key, bus)| {
            let status = ClusterStatus {
                connected: bus.is_connected(),
                masters_lost: bus
                    .subscriptions
                    .stats
                    .masters_lost
                    .load(std::sync::atomic::Ordering::Relaxed),
                shards: bus.subscriptions.shards(),
            };
            (key, status)
        })
        .collect();
    NodeStatus { tenants, clusters }
}

/// The `/status` handler; with `token`, requests need `Authorization: Bearer <token>`.
pub fn handler(tenants: Arc<Tenants>, token: Option<String>) -> Handler {
    let expected = token.map(|t| format!("Bearer {t}"));
    Arc::new(move |req| {
        let authorized = bearer_matches(req.headers(), expected.as_deref());
        let status = authorized.then(|| snapshot(&tenants));
        Box::pin(async move {
            let Some(status) = status else {
                let mut resp = Response::new(Body::new(Bytes::from_static(
                    b"status needs the bearer token given by --metrics-token\n",
                )));
                *resp.status_mut() = StatusCode::UNAUTHORIZED;
                return resp;
            };
            let body = serde_json::to_vec(&status).unwrap_or_default();
            let mut resp = Response::new(Body::new(Bytes::from(body)));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_as_json() {
        let mut status = NodeStatus::default();
        status.tenants.insert(
            "acme".into(),
            TenantStatus {
                websocket: 3,
                polling: 1,
            },
        );
        let json = serde_json::to_string(&status).expect("serialize");
        assert_eq!(json, r#"{"tenants":{"acme":{"websocket":3,"polling":1}}}"#);
        let back: NodeStatus = serde_json::from_str(&json).expect("parse");
        assert_eq!(back, status);
    }
}
