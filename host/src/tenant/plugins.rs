//! A tenant's plugin chain put in front of the socket layer: connect authorization, join authorization
//! and publish transforms, each mapped from sockets to the plugin contract's records and back.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::Value;

use crate::adapter::Room;
use crate::contract::{self, ContractConfig, ContractPolicy, Publish, Refusal};
use crate::plugin::{
    BroadcastOutcome, EventOutcome, Hook, HookError, PluginChain, PluginSlot, types,
};
use crate::socketio::{ConnectAccept, ConnectRefusal, ConnectRequest, Handlers, Payload, Socket};

/// Handshake headers a plugin sees (names in lower case); others stay with the gateway.
const HEADERS_FOR_PLUGINS: &[&str] = &[
    "user-agent",
    "origin",
    "host",
    "referer",
    "accept-language",
    "x-forwarded-for",
    "x-real-ip",
];

/// The contract's handlers with the tenant's plugins in front: `authorize-connect` on CONNECT,
/// `authorize-join` on join, `transform-event` then `transform-broadcast` on publish.
pub fn namespace_handlers(contract: ContractConfig, slot: Arc<PluginSlot>) -> Handlers {
    let policy = Arc::new(PluginPolicy::new(slot));
    let authorize = Arc::clone(&policy);
    contract::handlers_with_policy(contract, policy)
        .authorize(move |request| authorize.authorize_connect(request))
}

/// Answers the contract's questions with one tenant's plugin chain. Failures fail closed.
#[derive(Debug)]
pub struct PluginPolicy {
    slot: Arc<PluginSlot>,
}

/// The chain to run for `hook`, or `None` when the tenant has nothing that needs running.
fn chain_with(slot: &PluginSlot, hook: Hook) -> Option<Arc<PluginChain>> {
    if slot.is_empty() {
        return None;
    }
    let chain = slot.chain();
    chain.has(hook).then_some(chain)
}

impl PluginPolicy {
    /// A policy backed by a tenant's plugin slot.
    pub fn new(slot: Arc<PluginSlot>) -> Self {
        PluginPolicy { slot }
    }

    /// Runs `authorize-connect`; the refusal's message reaches the client's `connect_error`.
    pub fn authorize_connect(
        &self,
        request: &ConnectRequest<'_>,
    ) -> Result<ConnectAccept, ConnectRefusal> {
        let hs = request.handshake;
        let slot = &self.slot;
        let Some(chain) = chain_with(slot, Hook::AuthorizeConnect) else {
            return Ok(ConnectAccept::default());
        };
        let wit = types::ConnectRequest {
            tenant: slot.tenant().to_owned(),
            namespace: request.nsp.to_owned(),
            auth_json: request.auth.to_string(),
            query: hs
                .query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
            headers: HEADERS_FOR_PLUGINS
                .iter()
                .filter_map(|name| {
                    let value = hs.headers.get_str(name)?;
                    Some(types::Header {
                        name: (*name).to_owned(),
                        value: value.to_owned(),
                    })
                })
                .collect(),
            remote_address: Some(hs.remote_addr.to_string()),
        };
        match chain.authorize_connect(&wit) {
            Ok(accept) => {
                let data = match accept.data_json {
                    None => None,
                    Some(text) => Some(serde_json::from_str(&text).map_err(|e| {
                        tracing::warn!(tenant = slot.tenant(), error = %e, "authorize-connect returned data that is not JSON");
                        refusal_for_failure("the authorization plugin returned invalid data")
                    })?),
                };
                Ok(ConnectAccept {
                    user_id: accept.user_id,
                    data,
                    rooms: accept.rooms.into_iter().map(Room::from).collect(),
                })
            }
            Err(HookError::Refused(message)) => Err(ConnectRefusal {
                message,
                data: Some(serde_json::json!({ "code": "refused" })),
            }),
            Err(HookError::Failed { plugin, failure }) => Err(refusal_for_failure(&format!(
                "authorization is unavailable ({plugin}: {})",
                failure.kind()
            ))),
        }
    }
}

fn refusal_for_failure(message: &str) -> ConnectRefusal {
    ConnectRefusal {
        message: message.to_owned(),
        data: Some(serde_json::json!({ "code": "plugin_failed" })),
    }
}

fn hook_refusal(err: HookError, refused_code: &'static str) -> Refusal {
    match err {
        HookError::Refused(message) => Refusal::new(refused_code, message),
        HookError::Failed { plugin, failure } => Refusal::new(
            "plugin_failed",
            format!(
                "plugin {plugin} failed ({}); try again later",
                failure.kind()
            ),
        ),
    }
}

fn socket_info(tenant: &str, socket: &Socket) -> types::SocketInfo {
    let own = Room::of_socket(socket.id());
    types::SocketInfo {
        tenant: tenant.to_owned(),
        namespace: socket.namespace().name().to_owned(),
        id: socket.id().to_string(),
        user_id: socket.user_id().map(str::to_owned),
        data_json: socket.data().to_string(),
        rooms: socket
            .rooms()
            .into_iter()
            .filter(|r| *r != own)
            .map(|r| r.to_string())
            .collect(),
    }
}

fn body_of(event: &str, payload: &Payload) -> types::EventBody {
    types::EventBody {
        name: event.to_owned(),
        args_json: Value::Array(payload.args.clone()).to_string(),
        attachments: payload.attachments.iter().map(|b| b.to_vec()).collect(),
    }
}

/// Turns a body a plugin produced back into an event; the plugin's JSON is checked here.
fn payload_of(body: types::EventBody) -> Result<(String, Payload), Refusal> {
    let args = match serde_json::from_str(&body.args_json) {
        Ok(Value::Array(args)) => args,
        _ => {
            return Err(Refusal::new(
                "plugin_failed",
                "the transform plugin returned arguments that are not a JSON array",
            ));
        }
    };
    Ok((
        body.name,
        Payload {
            args,
            attachments: body.attachments.into_iter().map(Bytes::from).collect(),
        },
    ))
}

impl ContractPolicy for PluginPolicy {
    fn authorize_join(&self, socket: &Arc<Socket>, room: &Room) -> Result<(), Refusal> {
        let slot = &self.slot;
        let Some(chain) = chain_with(slot, Hook::AuthorizeJoin) else {
            return Ok(());
        };
        let request = types::JoinRequest {
            socket: socket_info(slot.tenant(), socket),
            room: room.to_string(),
        };
        chain
            .authorize_join(&request)
            .map_err(|e| hook_refusal(e, "forbidden"))
    }

    fn transform_publish(
        &self,
        socket: &Arc<Socket>,
        publish: Publish,
    ) -> Result<Option<Publish>, Refusal> {
        let slot = &self.slot;
        if slot.is_empty() {
            return Ok(Some(publish));
        }
        let chain = slot.chain();
        let mut publish = publish;
        if chain.has(Hook::TransformEvent) {
            let event = types::ClientEvent {
                socket: socket_info(slot.tenant(), socket),
                body: body_of(&publish.event, &publish.payload),
                rooms: publish.rooms.iter().map(|r| r.to_string()).collect(),
                wants_ack: publish.wants_ack,
            };
            match chain
                .transform_event(event)
                .map_err(|e| hook_refusal(e, "rejected"))?
            {
                EventOutcome::Drop => return Ok(None),
                EventOutcome::Deliver { changed: false, .. } => {}
                EventOutcome::Deliver {
                    body,
                    rooms,
                    changed: true,
                } => {
                    let (event, payload) = payload_of(body)?;
                    publish.event = event;
                    publish.payload = payload;
                    publish.rooms = rooms.into_iter().map(Room::from).collect();
                }
            }
        }
        if chain.has(Hook::TransformBroadcast) {
            let broadcast = types::Broadcast {
                tenant: slot.tenant().to_owned(),
                namespace: socket.namespace().name().to_owned(),
                rooms: publish.rooms.iter().map(|r| r.to_string()).collect(),
                except: publish.except.iter().map(|r| r.to_string()).collect(),
                body: body_of(&publish.event, &publish.payload),
            };
            match chain
                .transform_broadcast(broadcast)
                .map_err(|e| hook_refusal(e, "rejected"))?
            {
                BroadcastOutcome::Pass => {}
                BroadcastOutcome::Drop => return Ok(None),
                BroadcastOutcome::Rewrite(body) => {
                    let (event, payload) = payload_of(body)?;
                    publish.event = event;
                    publish.payload = payload;
                }
            }
        }
        Ok(Some(publish))
    }
}

#[cfg(all(test, unix))]
mod tests {
    use crate::engineio::MemoryClient;
    use crate::plugin::test_support::{component, runtime};
    use crate::plugin::{PluginManifest, PluginSource};
    use crate::tenant::registry::test_support::{defaults, scratch};
    use crate::tenant::{Tenants, TenantsConfig};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_tenants_plugin_decides_its_joins_and_a_failure_fails_closed() {
        let dir = scratch("policy");
        let file = dir.join("ioplex.toml");
        std::fs::write(&file, "[tenants.acme]\ndefault = true\n").expect("write");
        let plugins = runtime();
        let manifest = PluginManifest::parse("[settings]\nlabel = \"here\"\n", "chaos.toml")
            .expect("manifest");
        plugins
            .install(
                "acme",
                "chaos",
                component("chaos"),
                manifest,
                PluginSource::Api,
            )
            .await
            .expect("chaos");
        let mut gateway = defaults();
        gateway.plugins = Some(plugins);
        let tenants = Tenants::start(gateway, &TenantsConfig::load(&file).expect("config"))
            .await
            .expect("start");
        let acme = tenants.get("acme").expect("acme");
        let mut client = MemoryClient::connect(acme.engine(), "EIO=4")
            .await
            .expect("session");
        client.send("40").await.expect("connect");
        assert!(
            client
                .recv_text()
                .await
                .expect("connected")
                .starts_with("40{")
        );

        client.send(r#"421["join","lobby"]"#).await.expect("join");
        assert_eq!(
            client.recv_text().await.expect("ack"),
            r#"431[{"ok":true}]"#
        );
        client
            .send(r#"422["join","chaos:refuse"]"#)
            .await
            .expect("join");
        assert_eq!(
            client.recv_text().await.expect("ack"),
            r#"432[{"ok":false,"code":"forbidden","message":"refused by chaos here"}]"#
        );
        client
            .send(r#"423["join","chaos:trap"]"#)
            .await
            .expect("join");
        let failed = client.recv_text().await.expect("ack");
        assert!(
            failed.starts_with(r#"433[{"ok":false,"code":"plugin_failed""#),
            "{failed}"
        );
        client.send(r#"424["join","after"]"#).await.expect("join");
        assert_eq!(
            client.recv_text().await.expect("ack"),
            r#"434[{"ok":true}]"#,
            "the socket stays usable"
        );
        std::fs::remove_dir_all(dir).expect("cleanup");
    }
}
