//! The HTTP API a tenant's backend uses: emit to rooms or sockets, list rooms and their sockets
//! fleet-wide, make sockets join, leave or disconnect, and install plugins. JSON in and out, one API
//! key per backend (`Authorization: Bearer <key>`), every path under `/api/v1/tenants/<id>/`.
//!
//! | method and path | body / query | does |
//! |---|---|---|
//! | `POST …/emit` | `{namespace?, rooms?, socket?, except?, event, args?, volatile?}` | broadcast (rooms empty and no socket: the whole namespace) |
//! | `GET …/rooms` | `?namespace=/` | every room, fleet-wide |
//! | `GET …/rooms/<room>/sockets` | `?namespace=/` | the sockets in a room, fleet-wide |
//! | `POST …/join`, `…/leave` | `{namespace?, rooms?, socket?, except?, join \| leave}` | the selected sockets join or leave rooms |
//! | `POST …/disconnect` | `{namespace?, rooms?, socket?, except?, close?}` | the selected sockets are disconnected |
//! | `PUT …/plugins/<name>` | the component's bytes | validated, serving here, then shared with the fleet |
//! | `DELETE …/plugins/<name>` | | removed here and across the fleet |

mod error;

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

pub use error::ApiError;
use error::json_response;

use crate::adapter::Room;
use crate::codec::relayable_event;
use crate::engineio::Body;
use crate::http_util::{Handler, query_param};
use crate::plugin::{PluginFleet, PluginManifest, PluginRuntime};
use crate::sid::Sid;
use crate::socketio::{BroadcastOperator, Payload};
use crate::tenant::{Tenant, Tenants};

/// Where the API is served.
pub const PREFIX: &str = "/api/v1/tenants/";
/// Largest JSON body accepted.
const MAX_JSON: usize = 1 << 20;

/// The API over `tenants` (and `plugins`, when plugins are enabled, shared with the fleet through
/// `fleet` when there is one), as a router handler.
pub fn handler(
    tenants: Arc<Tenants>,
    plugins: Option<Arc<PluginRuntime>>,
    fleet: Option<Arc<PluginFleet>>,
) -> Handler {
    let api = Arc::new(Api {
        tenants,
        plugins,
        fleet,
    });
    Arc::new(move |req| {
        let api = Arc::clone(&api);
        Box::pin(async move {
            match api.handle(req).await {
                Ok(resp) => resp,
                Err(err) => err.response(),
            }
        })
    })
}

struct Api {
    tenants: Arc<Tenants>,
    plugins: Option<Arc<PluginRuntime>>,
    fleet: Option<Arc<PluginFleet>>,
}

/// Which sockets an operation applies to.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct Selector {
    namespace: Option<String>,
    rooms: Vec<String>,
    socket: Option<String>,
    except: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EmitBody {
    #[serde(flatten)]
    to: Selector,
    event: String,
    #[serde(default)]
    args: Vec<Value>,
    #[serde(default)]
    volatile: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsBody {
    #[serde(flatten)]
    to: Selector,
    #[serde(default)]
    join: Vec<String>,
    #[serde(default)]
    leave: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisconnectBody {
    #[serde(flatten)]
    to: Selector,
    #[serde(default)]
    close: bool,
}

/// Compares without leaking through timing where two keys first differ.
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn bearer(req: &Request<Incoming>) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

fn ok(body: Value) -> Result<Response<Body>, ApiError> {
    Ok(json_response(StatusCode::OK, &body))
}

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<bytes::Bytes, ApiError> {
    let limited = http_body_util::Limited::new(req.into_body(), limit);
    limited.collect().await.map(|b| b.to_bytes()).map_err(|_| {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is larger than {limit} bytes or was cut off"),
        )
    })
}

async fn read_json<T: for<'de> Deserialize<'de>>(req: Request<Incoming>) -> Result<T, ApiError> {
    let bytes = read_body(req, MAX_JSON).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("body: {e}")))
}

impl Api {
    /// The tenant a request may act for: the path's tenant, if the key is one of its keys. A valid key
    /// of another tenant gets 404 like an unknown tenant, so keys reveal nothing of other tenants.
    fn authorize(&self, req: &Request<Incoming>, id: &str) -> Result<Arc<Tenant>, ApiError> {
        let key = bearer(req).ok_or_else(ApiError::unauthorized)?;
        let owns = |t: &Tenant| t.config().api_keys.iter().any(|k| same_key(k, key));
        if let Some(tenant) = self.tenants.get(id)
            && owns(&tenant)
        {
            return Ok(tenant);
        }
        if self.tenants.all().iter().any(|t| owns(t)) {
            return Err(ApiError::not_found(format!("no tenant {id}")));
        }
        Err(ApiError::unauthorized())
    }

    async fn handle(&self, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
        let path = req.uri().path().to_owned();
        let rest = path.strip_prefix(PREFIX).unwrap_or_default();
        let parts: Vec<&str> = rest.split('/').collect();
        let Some((&id, route)) = parts.split_first() else {
            return Err(ApiError::not_found("no such endpoint"));
        };
        let tenant = self.authorize(&req, id)?;
        let method = req.method().clone();
        match (method, route) {
            (Method::POST, ["emit"]) => self.emit(&tenant, read_json(req).await?).await,
            (Method::GET, ["rooms"]) => {
                let nsp = query_param(req.uri(), "namespace");
                self.rooms(&tenant, nsp).await
            }
            (Method::GET, ["rooms", room, "sockets"]) => {
                let room = percent_decode(room)?;
                let nsp = query_param(req.uri(), "namespace");
                self.sockets(&tenant, nsp, room).await
            }
            (Method::POST, ["join"]) => self.join_leave(&tenant, read_json(req).await?, true).await,
            (Method::POST, ["leave"]) => {
                self.join_leave(&tenant, read_json(req).await?, false).await
            }
            (Method::POST, ["disconnect"]) => self.disconnect(&tenant, read_json(req).await?).await,
            (Method::PUT, ["plugins", name]) => {
                let name = name.to_string();
                let bytes = read_body(req, 64 << 20).await?;
                self.install_plugin(&tenant, &name, bytes.to_vec()).await
            }
            (Method::DELETE, ["plugins", name]) => self.remove_plugin(&tenant, name).await,
            _ => Err(ApiError::not_found("no such endpoint")),
        }
    }

    /// The broadcast operator a selector describes, within its namespace.
    fn operator(
        tenant: &Tenant,
        to: &Selector,
    ) -> Result<(crate::socketio::NamespaceHandle, BroadcastOperator), ApiError> {
        let nsp = to.namespace.as_deref().unwrap_or("/");
        let ns = tenant
            .io()
            .namespace_handle(nsp)
            .map_err(|e| ApiError::not_found(format!("namespace {nsp}: {e}")))?;
        let mut op = ns.broadcast();
        for room in &to.rooms {
            op = op.to(Room::from(room.as_str()));
        }
        if let Some(socket) = &to.socket {
            let sid = Sid::parse(socket)
                .ok_or_else(|| ApiError::bad_request("socket must be a socket id"))?;
            op = op.to(Room::of_socket(sid));
        }
        for room in &to.except {
            op = op.except(Room::from(room.as_str()));
        }
        Ok((ns, op))
    }

    async fn emit(&self, tenant: &Tenant, body: EmitBody) -> Result<Response<Body>, ApiError> {
        if !relayable_event(&body.event) {
            return Err(ApiError::bad_request(
                "event must be a non-empty string and not a reserved name",
            ));
        }
        let (_ns, mut op) = Self::operator(tenant, &body.to)?;
        if body.volatile {
            op = op.volatile();
        }
        op.emit(&body.event, Payload::json(body.args))
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        ok(json!({ "ok": true }))
    }

    async fn rooms(
        &self,
        tenant: &Tenant,
        nsp: Option<String>,
    ) -> Result<Response<Body>, ApiError> {
        let to = Selector {
            namespace: nsp,
            ..Selector::default()
        };
        let (_ns, op) = Self::operator(tenant, &to)?;
        let rooms = op.all_rooms().await.map_err(unavailable)?;
        let mut rooms: Vec<String> = rooms
            .into_iter()
            .map(|r| r.to_string())
            .filter(|r| Sid::parse(r).is_none())
            .collect();
        rooms.sort();
        ok(json!({ "rooms": rooms }))
    }

    async fn sockets(
        &self,
        tenant: &Tenant,
        nsp: Option<String>,
        room: String,
    ) -> Result<Response<Body>, ApiError> {
        let to = Selector {
            namespace: nsp,
            rooms: vec![room],
            ..Selector::default()
        };
        let (_ns, op) = Self::operator(tenant, &to)?;
        let sockets = op.fetch_sockets().await.map_err(unavailable)?;
        let list: Vec<Value> = sockets
            .into_iter()
            .map(|s| {
                let own = Room::of_socket(s.id);
                json!({
                    "id": s.id.to_string(),
                    "rooms": s.rooms.iter().filter(|r| **r != own).map(|r| r.to_string()).collect::<Vec<_>>(),
                    "data": s.data,
                })
            })
            .collect();
        ok(json!({ "sockets": list }))
    }

    async fn join_leave(
        &self,
        tenant: &Tenant,
        body: RoomsBody,
        join: bool,
    ) -> Result<Response<Body>, ApiError> {
        let rooms: Vec<Room> = if join { &body.join } else { &body.leave }
            .iter()
            .map(|r| Room::from(r.as_str()))
            .collect();
        if rooms.is_empty() {
            return Err(ApiError::bad_request(if join {
                "join must list rooms"
            } else {
                "leave must list rooms"
            }));
        }
        let (_ns, op) = Self::operator(tenant, &body.to)?;
        let result = if join {
            op.sockets_join(&rooms).await
        } else {
            op.sockets_leave(&rooms).await
        };
        result.map_err(unavailable)?;
        ok(json!({ "ok": true }))
    }

    async fn disconnect(
        &self,
        tenant: &Tenant,
        body: DisconnectBody,
    ) -> Result<Response<Body>, ApiError> {
        let (_ns, op) = Self::operator(tenant, &body.to)?;
        op.disconnect_sockets(body.close)
            .await
            .map_err(unavailable)?;
        ok(json!({ "ok": true }))
    }

    async fn install_plugin(
        &self,
        tenant: &Tenant,
        name: &str,
        bytes: Vec<u8>,
    ) -> Result<Response<Body>, ApiError> {
        let runtime = self.plugin_runtime()?;
        if !crate::tenant::config::valid_tenant_id(name) {
            return Err(ApiError::bad_request(
                "plugin names are 1 to 64 lower-case letters, digits, - or _",
            ));
        }
        // A replacement keeps the settings and limits of the version it replaces.
        let manifest = runtime
            .slot(tenant.id())
            .chain()
            .get(name)
            .map(|p| PluginManifest {
                settings: p.context().settings.clone(),
                limits: p.limits().clone(),
            })
            .unwrap_or_default();
        let plugin = runtime
            .install(
                tenant.id(),
                name,
                bytes.clone(),
                manifest,
                crate::plugin::PluginSource::Api,
            )
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "plugin_refused",
                    e.to_string(),
                )
            })?;
        let hooks: Vec<&str> = plugin.hooks().iter().map(|h| h.name()).collect();
        let fleet = match &self.fleet {
            None => json!("this node only (no Redis)"),
            Some(fleet) => match fleet.publish_install(tenant.id(), name, &bytes).await {
                Ok(()) => json!("shared"),
                Err(err) => json!(err.to_string()),
            },
        };
        ok(json!({
            "ok": true,
            "name": name,
            "version": plugin.context().version,
            "sha256": plugin.sha256(),
            "hooks": hooks,
            "fleet": fleet,
        }))
    }

    async fn remove_plugin(&self, tenant: &Tenant, name: &str) -> Result<Response<Body>, ApiError> {
        let runtime = self.plugin_runtime()?;
        if !runtime.remove(tenant.id(), name) {
            return Err(ApiError::not_found(format!("no plugin {name}")));
        }
        if let Some(fleet) = &self.fleet
            && let Err(err) = fleet.publish_remove(tenant.id(), name).await
        {
            return ok(json!({ "ok": true, "fleet": err.to_string() }));
        }
        ok(json!({ "ok": true }))
    }

    fn plugin_runtime(&self) -> Result<&Arc<PluginRuntime>, ApiError> {
        self.plugins.as_ref().ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                "plugins_disabled",
                "this gateway runs without plugins (start it with --plugins-dir)",
            )
        })
    }
}

fn unavailable(err: crate::adapter::AdapterError) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        err.to_string(),
    )
}

/// Decodes `%XX` escapes of a path segment (`+` stays a plus, unlike in a query).
fn percent_decode(segment: &str) -> Result<String, ApiError> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ApiError::bad_request("bad %-escape in the path"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("room is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(
            percent_decode("conversation%3A42").unwrap(),
            "conversation:42"
        );
        assert_eq!(percent_decode("a+b%20c").unwrap(), "a+b c");
        assert!(percent_decode("%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }

    #[test]
    fn keys_compare_whole() {
        assert!(same_key("k_live_1", "k_live_1"));
        assert!(!same_key("k_live_1", "k_live_2"));
        assert!(!same_key("k_live_1", "k_live_10"));
    }
}
