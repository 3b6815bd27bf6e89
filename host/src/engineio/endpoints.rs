//! Which Engine.IO endpoint serves a request: the seam between the listener, which owns the
//! connections, and whatever decides where a request belongs (a path, or a tenant by host name).

use http::{HeaderMap, Uri};

use super::{Engine, RequestError};

/// Picks the Engine.IO endpoint for a request: by path for a plain server, by tenant (host name or
/// `tenant` parameter) for a gateway.
pub trait Endpoints: Send + Sync + 'static {
    /// The endpoint for this request; `Ok(None)` when none serves the path (404); `Err` is answered
    /// as an Engine.IO error (an unknown tenant, say) with nothing created.
    fn resolve(&self, uri: &Uri, headers: &HeaderMap) -> Result<Option<Engine>, RequestError>;

    /// Every endpoint, for draining at shutdown.
    fn all(&self) -> Vec<Engine>;
}

/// Endpoints matched by path, in order: a server with no tenants.
pub struct EnginesByPath(Vec<Engine>);

impl EnginesByPath {
    /// Endpoints tried in this order.
    pub fn new(engines: Vec<Engine>) -> Self {
        EnginesByPath(engines)
    }
}

impl Endpoints for EnginesByPath {
    fn resolve(&self, uri: &Uri, _headers: &HeaderMap) -> Result<Option<Engine>, RequestError> {
        Ok(self.0.iter().find(|e| e.matches(uri.path())).cloned())
    }

    fn all(&self) -> Vec<Engine> {
        self.0.clone()
    }
}
