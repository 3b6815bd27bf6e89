//! The Socket.IO server: namespaces (static and dynamic), and the bridge from Engine.IO sessions to clients.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::RwLock;

use super::client::Client;
use super::config::SocketIoConfig;
use super::connect_timeout::ConnectTimeouts;
use super::handlers::Handlers;
use super::monitor::Monitor;
use super::namespace::Namespace;
use super::recovery::Recovery;
use super::socket::Socket;
use crate::adapter::{AdapterFactory, LocalAdapterFactory, Room};
use crate::engineio::{CloseReason, Engine, EngineConfig, EngineHandler, Session, SessionHandler};

pub(crate) struct Shared {
    pub(crate) config: SocketIoConfig,
    namespaces: RwLock<HashMap<String, Arc<Namespace>>>,
    dynamic: Option<Arc<Handlers>>,
    /// Dynamic namespaces currently registered.
    dynamic_count: AtomicUsize,
    connect_timeouts: Arc<ConnectTimeouts>,
    adapter: Arc<dyn AdapterFactory>,
    /// Connection state recovery, when on and the adapter is single-node.
    recovery: Option<Arc<Recovery>>,
    /// Watches every namespace's sockets (the admin UI feed).
    monitor: Option<Arc<dyn Monitor>>,
}

/// What a client hears when its namespace does not exist (Node's exact message).
const INVALID_NAMESPACE: &str = "Invalid namespace";

impl Shared {
    /// The namespace a CONNECT asks for: registered, or created from the dynamic handlers.
    /// Err carries the CONNECT_ERROR message for the client.
    pub(crate) fn namespace_for(&self, name: &str) -> Result<Arc<Namespace>, &'static str> {
        if let Some(ns) = self.namespaces.read().get(name) {
            return Ok(Arc::clone(ns));
        }
        let handlers = self.dynamic.as_ref().ok_or(INVALID_NAMESPACE)?;
        if !valid_namespace_name(name) {
            return Err(INVALID_NAMESPACE);
        }
        let mut namespaces = self.namespaces.write();
        if let Some(ns) = namespaces.get(name) {
            return Ok(Arc::clone(ns));
        }
        if self.dynamic_count.load(Ordering::Acquire) >= self.config.max_dynamic_namespaces {
            tracing::warn!(
                limit = self.config.max_dynamic_namespaces,
                "dynamic namespace limit reached; refusing a new one"
            );
            return Err("Too many namespaces");
        }
        let ns = Namespace::new(
            name,
            Arc::clone(handlers),
            &*self.adapter,
            true,
            self.recovery.clone(),
            self.monitor.clone(),
        );
        self.dynamic_count.fetch_add(1, Ordering::AcqRel);
        namespaces.insert(name.to_owned(), Arc::clone(&ns));
        Ok(ns)
    }

    /// Adds a socket to its namespace; holds the registry lock so a dynamic namespace cannot be removed meanwhile.
    pub(crate) fn attach(&self, ns: &Arc<Namespace>, socket: Arc<Socket>, rooms: &[Room]) {
        let namespaces = self.namespaces.read();
        if ns.dynamic && !namespaces.contains_key(ns.name()) {
            drop(namespaces);
            // Released between our lookup and now: register it again.
            let mut namespaces = self.namespaces.write();
            if !namespaces.contains_key(ns.name()) {
                namespaces.insert(ns.name().to_owned(), Arc::clone(ns));
                self.dynamic_count.fetch_add(1, Ordering::AcqRel);
            }
            drop(namespaces);
            ns.insert_socket(socket, rooms);
            return;
        }
        ns.insert_socket(socket, rooms);
    }

    /// Forgets a dynamic namespace that has no socket left, so client-chosen names cannot grow the registry.
    pub(crate) fn release_if_unused(&self, ns: &Arc<Namespace>) {
        if !ns.dynamic || ns.socket_count() > 0 {
            return;
        }
        let mut namespaces = self.namespaces.write();
        if ns.socket_count() == 0
            && namespaces
                .get(ns.name())
                .is_some_and(|n| Arc::ptr_eq(n, ns))
        {
            namespaces.remove(ns.name());
            self.dynamic_count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Namespace names clients may create dynamically: `/` then at most 128 printable characters. `#` and
/// the glob characters `*?[]\` are refused: namespace names end up in Redis channel names (`<key>#<nsp>#<room>#`) and subscription
/// patterns, where they would let one namespace's subscription match another's channels.
fn valid_namespace_name(name: &str) -> bool {
    name.starts_with('/')
        && name.len() <= 129
        && !name
            .chars()
            .any(|c| c.is_control() || matches!(c, '#' | '*' | '?' | '[' | ']' | '\\'))
}

/// The Socket.IO server. Cheap to clone.
#[derive(Clone)]
pub struct SocketIo {
    shared: Arc<Shared>,
}

/// A namespace held for an operation; see [`SocketIo::namespace_handle`].
pub struct NamespaceHandle {
    ns: Arc<Namespace>,
    shared: Arc<Shared>,
}

impl std::ops::Deref for NamespaceHandle {
    type Target = Arc<Namespace>;

    fn deref(&self) -> &Arc<Namespace> {
        &self.ns
    }
}

impl Drop for NamespaceHandle {
    fn drop(&mut self) {
        self.shared.release_if_unused(&self.ns);
    }
}

/// Builds a [`SocketIo`].
pub struct SocketIoBuilder {
    config: SocketIoConfig,
    namespaces: Vec<(String, Handlers)>,
    dynamic: Option<Handlers>,
    adapter: Arc<dyn AdapterFactory>,
    monitor: Option<Arc<dyn Monitor>>,
}

/// A [`SocketIo`] that does not keep the server alive; see [`SocketIo::downgrade`].
#[derive(Clone)]
pub struct WeakSocketIo {
    shared: std::sync::Weak<Shared>,
}

impl WeakSocketIo {
    /// The server, if it still exists.
    pub fn upgrade(&self) -> Option<SocketIo> {
        self.shared.upgrade().map(|shared| SocketIo { shared })
    }
}

impl SocketIo {
    /// Starts building a server.
    pub fn builder() -> SocketIoBuilder {
        SocketIoBuilder {
            config: SocketIoConfig::default(),
            namespaces: Vec::new(),
            dynamic: None,
            adapter: Arc::new(LocalAdapterFactory),
            monitor: None,
        }
    }

    /// A handle for tasks that serve this server but must not keep it alive (a replaced tenant's
    /// server goes away with its last connection).
    pub fn downgrade(&self) -> WeakSocketIo {
        WeakSocketIo {
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// Every namespace that exists now.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.shared.namespaces.read().values().cloned().collect()
    }

    /// A namespace by name, if it exists.
    pub fn of(&self, name: &str) -> Option<Arc<Namespace>> {
        self.shared.namespaces.read().get(name).cloned()
    }

    /// A namespace for a server-initiated operation (an HTTP API emit, say): the existing one, or a
    /// dynamic one made for the operation and forgotten again when the handle drops, if it is still
    /// empty. `Err` when the name is not one clients could open.
    pub fn namespace_handle(&self, name: &str) -> Result<NamespaceHandle, &'static str> {
        Ok(NamespaceHandle {
            ns: self.shared.namespace_for(name)?,
            shared: Arc::clone(&self.shared),
        })
    }

    /// Registers (or replaces the handlers of) a namespace at run time.
    pub fn add_namespace(&self, name: &str, handlers: Handlers) -> Arc<Namespace> {
        let ns = Namespace::new(
            name,
            Arc::new(handlers),
            &*self.shared.adapter,
            false,
            self.shared.recovery.clone(),
            self.shared.monitor.clone(),
        );
        self.shared
            .namespaces
            .write()
            .insert(name.to_owned(), Arc::clone(&ns));
        ns
    }

    /// The Engine.IO handler to mount this server on an [`Engine`].
    pub fn engine_handler(&self) -> Arc<dyn EngineHandler> {
        Arc::new(SessionBridge {
            shared: Arc::clone(&self.shared),
        })
    }

    /// An Engine.IO endpoint serving this server.
    pub fn engine(&self, config: EngineConfig) -> Engine {
        Engine::new(config, self.engine_handler())
    }

    /// Disconnects every socket on this node.
    pub fn disconnect_all(&self) {
        let namespaces: Vec<_> = self.shared.namespaces.read().values().cloned().collect();
        for ns in namespaces {
            ns.disconnect_all(CloseReason::ServerClose);
        }
    }
}

impl SocketIoBuilder {
    /// Sets the Socket.IO settings.
    pub fn config(mut self, config: SocketIoConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers a namespace.
    pub fn namespace(mut self, name: &str, handlers: Handlers) -> Self {
        self.namespaces.push((name.to_owned(), handlers));
        self
    }

    /// Accepts any namespace a client asks for, with these handlers (registered namespaces take precedence).
    pub fn dynamic_namespaces(mut self, handlers: Handlers) -> Self {
        self.dynamic = Some(handlers);
        self
    }

    /// Sets how each namespace's adapter is made (local by default).
    pub fn adapter(mut self, factory: Arc<dyn AdapterFactory>) -> Self {
        self.adapter = factory;
        self
    }

    /// Lets `monitor` watch every namespace's sockets.
    pub fn monitor(mut self, monitor: Arc<dyn Monitor>) -> Self {
        self.monitor = Some(monitor);
        self
    }

    /// The server.
    pub fn build(self) -> SocketIo {
        let recovery = self
            .config
            .recovery
            .clone()
            .filter(|_| self.adapter.single_node())
            .map(|config| Arc::new(Recovery::new(config)));
        let shared = Arc::new(Shared {
            recovery,
            connect_timeouts: Arc::new(ConnectTimeouts::new(self.config.connect_timeout)),
            config: self.config,
            namespaces: RwLock::new(HashMap::new()),
            dynamic: self.dynamic.map(Arc::new),
            dynamic_count: AtomicUsize::new(0),
            adapter: self.adapter,
            monitor: self.monitor,
        });
        {
            let mut namespaces = shared.namespaces.write();
            for (name, handlers) in self.namespaces {
                let ns = Namespace::new(
                    &name,
                    Arc::new(handlers),
                    &*shared.adapter,
                    false,
                    shared.recovery.clone(),
                    shared.monitor.clone(),
                );
                namespaces.insert(name, ns);
            }
        }
        SocketIo { shared }
    }
}

struct SessionBridge {
    shared: Arc<Shared>,
}

impl EngineHandler for SessionBridge {
    fn on_open(&self, session: &Arc<Session>) -> Arc<dyn SessionHandler> {
        let client = Client::new(Arc::clone(&self.shared));
        if session.protocol() == crate::engineio::Protocol::V3 {
            client.connect_legacy_main(session);
        }
        self.shared.connect_timeouts.watch(session, &client);
        client
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use crate::socketio::test_support::{connected, engine};
    use crate::socketio::{ConnectRefusal, Handlers};

    #[tokio::test]
    async fn a_client_gets_a_socket_of_the_main_namespace() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let (_client, sid) = connected(&engine, "/").await;
        assert_eq!(sid.len(), 20, "socket ids are 20 characters, like Node's");
        let ns = io.of("/").expect("main namespace");
        assert_eq!(ns.socket_count(), 1);
    }

    #[tokio::test]
    async fn an_unknown_namespace_is_refused_with_connect_error() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        let mut client = crate::engineio::MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        client.send("40/nope,").await.expect("send");
        assert_eq!(
            client.recv_text().await.expect("answer"),
            r#"44/nope,{"message":"Invalid namespace"}"#
        );
    }

    #[tokio::test]
    async fn a_namespace_added_at_run_time_is_served() {
        let io = SocketIo::builder().namespace("/", Handlers::new()).build();
        let engine = engine(&io);
        assert!(io.of("/late").is_none());
        io.add_namespace("/late", Handlers::new());
        let (_client, _) = connected(&engine, "/late").await;
        assert_eq!(io.of("/late").expect("registered").socket_count(), 1);
    }

    #[tokio::test]
    async fn the_connect_authorizer_refusal_reaches_the_client() {
        let handlers = Handlers::new().authorize(|req| {
            if req.auth["token"] == "ok" {
                Ok(Default::default())
            } else {
                Err(ConnectRefusal::new("bad token"))
            }
        });
        let io = SocketIo::builder().namespace("/", handlers).build();
        let engine = engine(&io);
        let mut client = crate::engineio::MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        client.send(r#"40{"token":"nope"}"#).await.expect("send");
        assert_eq!(
            client.recv_text().await.expect("answer"),
            r#"44{"message":"bad token"}"#
        );
        client.send(r#"40{"token":"ok"}"#).await.expect("send");
        assert!(
            client
                .recv_text()
                .await
                .expect("answer")
                .starts_with("40{\"sid\":")
        );
    }

    #[tokio::test]
    async fn an_engine_io_v3_client_gets_socket_io_v2_answers() {
        let seen = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let record = Arc::clone(&seen);
        let handlers = Handlers::new().authorize(move |req| {
            record.lock().push((req.nsp.to_owned(), req.auth.clone()));
            if req.auth["token"] == "nope" {
                Err(ConnectRefusal::new("bad token"))
            } else {
                Ok(Default::default())
            }
        });
        let io = SocketIo::builder().dynamic_namespaces(handlers).build();
        let engine = engine(&io);
        let mut client = crate::engineio::MemoryClient::connect(&engine, "EIO=3")
            .await
            .expect("session");
        // Connected to `/` without asking, with a bare `40` (no sid, no pid).
        assert_eq!(client.recv_text().await.expect("main"), "40");
        // A namespace's query stands in for `auth`; the reply carries no payload.
        client.send("40/chat?token=abc,").await.expect("send");
        assert_eq!(client.recv_text().await.expect("chat"), "40/chat,");
        // A refusal is v2's ERROR packet: the message as a JSON string.
        client.send("40/vip?token=nope,").await.expect("send");
        assert_eq!(
            client.recv_text().await.expect("vip"),
            r#"44/vip,"bad token""#
        );
        assert_eq!(
            *seen.lock(),
            vec![
                ("/".to_owned(), serde_json::json!({})),
                ("/chat".to_owned(), serde_json::json!({"token": "abc"})),
                ("/vip".to_owned(), serde_json::json!({"token": "nope"})),
            ]
        );
    }

    #[tokio::test]
    async fn dynamic_namespaces_stop_at_their_cap() {
        let io = SocketIo::builder()
            .config(SocketIoConfig {
                max_dynamic_namespaces: 1,
                ..SocketIoConfig::default()
            })
            .dynamic_namespaces(Handlers::new())
            .build();
        let engine = engine(&io);
        let (_a, _) = connected(&engine, "/one").await;
        let mut client = crate::engineio::MemoryClient::connect(&engine, "EIO=4")
            .await
            .expect("session");
        client.send("40/two,").await.expect("send");
        let answer = client.recv_text().await.expect("answer");
        assert!(
            answer.starts_with("44/two,"),
            "the second dynamic namespace is refused: {answer}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_broadcast_reaches_a_client_of_another_node_through_redis() {
        use crate::adapter::redis::{RedisAdapterFactory, RedisConfig};
        let key = format!("ioplex-test-{}", crate::sid::Sid::random());
        let node = || async {
            let url = std::env::var("IOPLEX_TEST_REDIS")
                .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let mut config = RedisConfig::new(url);
            config.key = key.clone();
            let factory = RedisAdapterFactory::start(config).await.expect("bus");
            SocketIo::builder()
                .namespace("/", Handlers::new())
                .adapter(Arc::new(factory))
                .build()
        };
        let (io_a, io_b) = (node().await, node().await);
        let engine_b = engine(&io_b);
        let (mut client, sid) = connected(&engine_b, "/").await;
        let sid: crate::sid::Sid = sid.parse().expect("sid");
        io_b.of("/")
            .and_then(|ns| ns.socket(sid))
            .expect("socket")
            .join(&["room".into()]);
        let ns_a = io_a.of("/").expect("ns on a");
        let mut got = None;
        for attempt in 0..50 {
            ns_a.to("room")
                .emit(
                    "hello",
                    crate::codec::Payload::json(vec![serde_json::json!(attempt)]),
                )
                .expect("emit");
            if let Ok(Ok(text)) =
                tokio::time::timeout(std::time::Duration::from_millis(100), client.recv_text())
                    .await
            {
                got = Some(text);
                break;
            }
        }
        let text = got.expect("a broadcast from node a reaches node b's client");
        assert!(text.starts_with(r#"42["hello","#), "{text}");
    }
}
