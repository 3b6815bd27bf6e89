//! One validated plugin version: its compiled component, the hooks it exports, a pool of warm
//! instances, and the call path that enforces deadline, memory cap and breaker.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use wasmtime::component::{Component, InstancePre};
use wasmtime::{Store, Trap};

use super::bindings::{
    authorize_connect, authorize_join, transform_broadcast, transform_event, types,
};
use super::breaker::Breaker;
use super::error::{CallFailure, PluginError};
use super::limits::PluginLimits;
use super::runtime::{QuotaSeat, TenantQuota};
use super::state::{HostState, PluginContext};
use super::wasm_engine::PluginEngine;

/// The contract version whose hooks this host calls.
pub const CONTRACT: &str = "ioplex:plugin@0.1.0";

/// Deadline for instantiating (guest start-up code), separate from the per-call deadline.
const INSTANTIATE_DEADLINE: Duration = Duration::from_secs(1);
/// Instantiation time a plugin version may spend per [`START_WINDOW`] (guest start-up code, memory set
/// up); each instantiation slower than [`SLOW_INSTANTIATE`] once the window's total is past this counts
/// as a failure toward the breaker: a plugin that needs this long to start, again and again, is taking a
/// core from other tenants. An ordinary burst (a few instances of a JavaScript plugin) stays inside it.
const START_BUDGET: Duration = Duration::from_millis(500);
const START_WINDOW: Duration = Duration::from_secs(10);
const SLOW_INSTANTIATE: Duration = Duration::from_millis(50);
/// After a failure, the plugin's calls run off the Tokio workers for this long (see [`LoadedPlugin::call`]).
const SUSPECT_FOR: Duration = Duration::from_secs(60);
/// Calls of one plugin version that may run off the workers at once; more fail closed at once, so a
/// burst against a failing plugin cannot pile up threads.
const SLOW_LANE: usize = 4;

/// Where a plugin version came from; the fleet may replace but never remove a directory plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PluginSource {
    /// The node's plugin directory (the operator's files).
    #[default]
    Directory,
    /// An upload through this node's HTTP API.
    Api,
    /// Another node's upload, through Redis.
    Fleet,
}

/// Runs `f` where blocking does not stall other tasks: in a multi-threaded Tokio runtime the worker hands
/// its queue to another thread first; elsewhere (tests, the CLI) it simply runs.
fn off_worker<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Runs `f` on a thread of its own at a lower scheduling priority (nice 10: under contention it gets
/// about a tenth of the CPU an ordinary thread gets) and waits for it: guest start-up code, which no
/// deadline shorter than a second bounds, then competes with other tenants' work only for spare CPU.
fn low_priority<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let job = parking_lot::Mutex::new(Some(f));
    std::thread::scope(|scope| {
        let spawned = std::thread::Builder::new()
            .name("ioplex-plugin-start".into())
            .spawn_scoped(scope, || {
                lower_priority();
                job.lock().take().map(|f| f())
            });
        match spawned.map(|thread| thread.join()) {
            Ok(Ok(Some(result))) => result,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            // No thread to be had: run here.
            _ => match job.lock().take() {
                Some(f) => f(),
                None => unreachable!("the job ran on the thread and returned"),
            },
        }
    })
}

/// Lowers the calling thread's scheduling priority (Linux threads have their own nice value).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    // SAFETY: setpriority on this thread's own id changes nothing but its scheduling weight.
    unsafe {
        libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10);
    }
}

/// Drives a plugin call to its end with one poll. Nothing a plugin can reach waits on real I/O (the WASI
/// context has no files, sockets or stdio) and deadlines trap rather than yield, so a call that is still
/// pending after one poll waited on something the sandbox does not provide; dropping the future
/// abandons it (the caller then drops the store).
fn complete<T>(call: impl Future<Output = wasmtime::Result<T>>) -> wasmtime::Result<T> {
    let mut call = pin!(call);
    match call.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => Err(wasmtime::format_err!(
            "the plugin waited on I/O that the sandbox does not provide"
        )),
    }
}

/// The hooks of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// `authorize-connect`
    AuthorizeConnect,
    /// `authorize-join`
    AuthorizeJoin,
    /// `transform-event`
    TransformEvent,
    /// `transform-broadcast`
    TransformBroadcast,
}

impl Hook {
    /// Every hook, in contract order.
    pub const ALL: [Hook; 4] = [
        Hook::AuthorizeConnect,
        Hook::AuthorizeJoin,
        Hook::TransformEvent,
        Hook::TransformBroadcast,
    ];

    /// The hook's WIT name.
    pub fn name(self) -> &'static str {
        match self {
            Hook::AuthorizeConnect => "authorize-connect",
            Hook::AuthorizeJoin => "authorize-join",
            Hook::TransformEvent => "transform-event",
            Hook::TransformBroadcast => "transform-broadcast",
        }
    }

    /// The component export that carries the hook.
    pub fn export_name(self) -> String {
        format!("ioplex:plugin/{}@0.1.0", self.name())
    }
}

/// Export lookups resolved once per version.
struct HookIndices {
    connect: Option<authorize_connect::GuestIndices>,
    join: Option<authorize_join::GuestIndices>,
    event: Option<transform_event::GuestIndices>,
    broadcast: Option<transform_broadcast::GuestIndices>,
}

/// The typed hook functions of one instance.
struct Guests {
    connect: Option<authorize_connect::Guest>,
    join: Option<authorize_join::Guest>,
    event: Option<transform_event::Guest>,
    broadcast: Option<transform_broadcast::Guest>,
}

/// An instantiated plugin ready for a call.
struct Warm {
    /// Its place in the tenant's instance share (none for the validation instance).
    _seat: Option<QuotaSeat>,
    store: Store<HostState>,
    guests: Guests,
    calls: u64,
    /// Memory above which the instance is replaced: halfway from its size after instantiation to the
    /// cap, so a guest that keeps growing is reset before it reaches the cap mid-call.
    high_water: usize,
    /// Took longer than [`SLOW_INSTANTIATE`] to make.
    started_slowly: bool,
}

/// A call's place in its plugin's slow lane; released on drop.
struct SlowLaneSeat<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for SlowLaneSeat<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counters of one plugin version.
#[derive(Debug, Default)]
pub struct PluginStats {
    /// Hook calls that returned an answer.
    pub calls: AtomicU64,
    /// Calls interrupted at their deadline.
    pub timeouts: AtomicU64,
    /// Calls that hit the memory cap.
    pub out_of_memory: AtomicU64,
    /// Calls that trapped otherwise.
    pub traps: AtomicU64,
    /// Calls refused by the open breaker.
    pub breaker_refusals: AtomicU64,
    /// Calls refused because the plugin's slow lane (calls running off the workers) was full.
    pub busy_refusals: AtomicU64,
    /// Instances created (the first, recycled and concurrent ones).
    pub instantiations: AtomicU64,
    /// Instantiations that failed (trap, deadline, memory, or the tenant's instance share used up).
    pub instantiation_failures: AtomicU64,
    /// Instantiations slower than 50 ms (each counts toward the breaker).
    pub slow_instantiations: AtomicU64,
    /// How long answered calls took.
    pub latency: LatencyHistogram,
}

/// Upper bounds of the latency buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 10] = [
    1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 500e-6, 1e-3, 10e-3,
];

/// A fixed-bucket histogram of call durations, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    fn record(&self, took: Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|le| secs <= *le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
    }

    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        (
            cumulative,
            self.count.load(Ordering::Relaxed),
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
        )
    }
}

/// A plugin version that passed validation and serves calls.
pub struct LoadedPlugin {
    ctx: Arc<PluginContext>,
    sha256: String,
    size: usize,
    pre: InstancePre<HostState>,
    indices: HookIndices,
    limits: PluginLimits,
    deadline_ticks: u64,
    instantiate_ticks: u64,
    pool: Mutex<Vec<Warm>>,
    /// Held while an instance is being made: one instantiation per version at a time.
    starting: Mutex<()>,
    breaker: Breaker,
    stats: PluginStats,
    loaded_at: Instant,
    pub(crate) source: PluginSource,
    quota: OnceLock<Arc<TenantQuota>>,
    /// Milliseconds since `loaded_at` until which calls run off the Tokio workers (0: never failed).
    suspect_until: AtomicU64,
    /// Calls running off the workers now.
    slow_lane: std::sync::atomic::AtomicUsize,
    /// Start of the current [`START_WINDOW`] and the instantiation time spent in it.
    start_spend: Mutex<(Instant, Duration)>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("tenant", &self.ctx.tenant)
            .field("name", &self.ctx.name)
            .field("version", &self.ctx.version)
            .field("hooks", &self.hooks())
            .finish()
    }
}

impl LoadedPlugin {
    /// Validates a compiled component (blocking: imports, exports, instantiation and one smoke call per
    /// hook, under the plugin's own limits).
    pub(crate) fn validate(
        engine: &PluginEngine,
        component: &Component,
        ctx: Arc<PluginContext>,
        sha256: String,
        size: usize,
        limits: PluginLimits,
    ) -> Result<Self, PluginError> {
        check_imports(engine, component)?;
        let pre = engine
            .linker
            .instantiate_pre(component)
            .map_err(|e| PluginError::Instantiate(format!("{e:#}")))?;
        let indices = HookIndices {
            connect: authorize_connect::GuestIndices::new(&pre).ok(),
            join: authorize_join::GuestIndices::new(&pre).ok(),
            event: transform_event::GuestIndices::new(&pre).ok(),
            broadcast: transform_broadcast::GuestIndices::new(&pre).ok(),
        };
        let plugin = LoadedPlugin {
            ctx,
            sha256,
            size,
            pre,
            indices,
            deadline_ticks: engine.ticks(limits.deadline),
            instantiate_ticks: engine.ticks(INSTANTIATE_DEADLINE),
            limits,
            pool: Mutex::new(Vec::new()),
            starting: Mutex::new(()),
            breaker: Breaker::new(),
            stats: PluginStats::default(),
            loaded_at: Instant::now(),
            source: PluginSource::Directory,
            quota: OnceLock::new(),
            suspect_until: AtomicU64::new(0),
            slow_lane: std::sync::atomic::AtomicUsize::new(0),
            start_spend: Mutex::new((Instant::now(), Duration::ZERO)),
        };
        if plugin.hooks().is_empty() {
            let found: Vec<String> = component
                .component_type()
                .exports(&engine.engine)
                .map(|(name, _)| name.to_owned())
                .collect();
            return Err(PluginError::NoHooks {
                expected: Hook::ALL
                    .iter()
                    .map(|h| h.export_name())
                    .collect::<Vec<_>>()
                    .join(", "),
                found: if found.is_empty() {
                    "nothing".into()
                } else {
                    found.join(", ")
                },
            });
        }
        plugin.smoke_test()?;
        Ok(plugin)
    }

    /// Calls each exported hook once with neutral input, failing validation on a trap or timeout. The
    /// hook may refuse; only a failure to answer counts.
    fn smoke_test(&self) -> Result<(), PluginError> {
        let socket = types::SocketInfo {
            tenant: self.ctx.tenant.to_string(),
            namespace: "/".into(),
            id: "ioplex-smoke-test000".into(),
            user_id: None,
            data_json: "null".into(),
            rooms: Vec::new(),
        };
        let body = types::EventBody {
            name: "ioplex:smoke".into(),
            args_json: "[]".into(),
            attachments: Vec::new(),
        };
        let fail = |hook: Hook| {
            move |failure| PluginError::SmokeCall {
                hook: hook.name(),
                failure,
            }
        };
        // Instantiating the first warm instance also proves the component links.
        let warm = self.instantiate(None).map_err(|f| match f {
            CallFailure::Unavailable(m) => PluginError::Instantiate(m),
            other => PluginError::SmokeCall {
                hook: "instantiate",
                failure: other,
            },
        })?;
        self.pool.lock().push(warm);
        if self.indices.connect.is_some() {
            // A refusal is a fine answer here; only a failure to answer fails validation.
            let _answer = self
                .authorize_connect(&types::ConnectRequest {
                    tenant: self.ctx.tenant.to_string(),
                    namespace: "/".into(),
                    auth_json: "{}".into(),
                    query: Vec::new(),
                    headers: Vec::new(),
                    remote_address: None,
                })
                .map_err(fail(Hook::AuthorizeConnect))?;
        }
        if self.indices.join.is_some() {
            // A refusal is a fine answer here; only a failure to answer fails validation.
            let _answer = self
                .authorize_join(&types::JoinRequest {
                    socket: socket.clone(),
                    room: "ioplex:smoke".into(),
                })
                .map_err(fail(Hook::AuthorizeJoin))?;
        }
        if self.indices.event.is_some() {
            // A refusal is a fine answer here; only a failure to answer fails validation.
            let _answer = self
                .transform_event(&types::ClientEvent {
                    socket,
                    body: body.clone(),
                    rooms: Vec::new(),
                    wants_ack: false,
                })
                .map_err(fail(Hook::TransformEvent))?;
        }
        if self.indices.broadcast.is_some() {
            // A refusal is a fine answer here; only a failure to answer fails validation.
            let _answer = self
                .transform_broadcast(&types::Broadcast {
                    tenant: self.ctx.tenant.to_string(),
                    namespace: "/".into(),
                    rooms: Vec::new(),
                    except: Vec::new(),
                    body,
                })
                .map_err(fail(Hook::TransformBroadcast))?;
        }
        Ok(())
    }

    /// Who the plugin runs for.
    pub fn context(&self) -> &PluginContext {
        &self.ctx
    }

    /// Hex SHA-256 of the component.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Size of the component in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The limits it runs under.
    pub fn limits(&self) -> &PluginLimits {
        &self.limits
    }

    /// Its counters.
    pub fn stats(&self) -> &PluginStats {
        &self.stats
    }

    /// When this version started serving.
    pub fn loaded_at(&self) -> Instant {
        self.loaded_at
    }

    /// Where it came from.
    pub fn source(&self) -> PluginSource {
        self.source
    }

    /// Counts this version's instances against `quota` (its tenant's share) from now on.
    pub(crate) fn bind_quota(&self, quota: Arc<TenantQuota>) {
        let _ = self.quota.set(quota);
    }

    fn elapsed_ms(&self) -> u64 {
        self.loaded_at.elapsed().as_millis() as u64
    }

    /// Whether the plugin failed lately, so its calls should not run on a Tokio worker.
    fn is_suspect(&self) -> bool {
        let until = self.suspect_until.load(Ordering::Relaxed);
        until != 0 && self.elapsed_ms() < until
    }

    fn mark_suspect(&self) {
        let until = self.elapsed_ms() + SUSPECT_FOR.as_millis() as u64;
        self.suspect_until.store(until.max(1), Ordering::Relaxed);
    }

    /// The hooks the component exports.
    pub fn hooks(&self) -> Vec<Hook> {
        let i = &self.indices;
        [
            (i.connect.is_some(), Hook::AuthorizeConnect),
            (i.join.is_some(), Hook::AuthorizeJoin),
            (i.event.is_some(), Hook::TransformEvent),
            (i.broadcast.is_some(), Hook::TransformBroadcast),
        ]
        .into_iter()
        .filter_map(|(has, hook)| has.then_some(hook))
        .collect()
    }

    /// Whether the component exports `hook`.
    pub fn has(&self, hook: Hook) -> bool {
        match hook {
            Hook::AuthorizeConnect => self.indices.connect.is_some(),
            Hook::AuthorizeJoin => self.indices.join.is_some(),
            Hook::TransformEvent => self.indices.event.is_some(),
            Hook::TransformBroadcast => self.indices.broadcast.is_some(),
        }
    }

    /// `authorize-connect`; `Ok(Err(message))` is the plugin's refusal.
    pub fn authorize_connect(
        &self,
        request: &types::ConnectRequest,
    ) -> Result<Result<types::ConnectAccept, String>, CallFailure> {
        self.call(Hook::AuthorizeConnect, |guests, store| {
            match &guests.connect {
                Some(g) => complete(g.call_authorize_connect(store, request)),
                None => Ok(Ok(types::ConnectAccept {
                    user_id: None,
                    data_json: None,
                    rooms: Vec::new(),
                })),
            }
        })
    }

    /// `authorize-join`; `Ok(Err(reason))` is the plugin's refusal.
    pub fn authorize_join(
        &self,
        request: &types::JoinRequest,
    ) -> Result<Result<(), String>, CallFailure> {
        self.call(Hook::AuthorizeJoin, |guests, store| match &guests.join {
            Some(g) => complete(g.call_authorize_join(store, request)),
            None => Ok(Ok(())),
        })
    }

    /// `transform-event`; `Ok(Err(message))` rejects the event.
    pub fn transform_event(
        &self,
        event: &types::ClientEvent,
    ) -> Result<Result<types::EventAction, String>, CallFailure> {
        self.call(Hook::TransformEvent, |guests, store| match &guests.event {
            Some(g) => complete(g.call_transform_event(store, event)),
            None => Ok(Ok(types::EventAction::Pass)),
        })
    }

    /// `transform-broadcast`; `Ok(Err(message))` drops the broadcast.
    pub fn transform_broadcast(
        &self,
        broadcast: &types::Broadcast,
    ) -> Result<Result<types::BroadcastAction, String>, CallFailure> {
        self.call(Hook::TransformBroadcast, |guests, store| {
            match &guests.broadcast {
                Some(g) => complete(g.call_transform_broadcast(store, broadcast)),
                None => Ok(Ok(types::BroadcastAction::Pass)),
            }
        })
    }

    /// Runs one hook call on a warm instance under the deadline. A failed instance is dropped with its
    /// store (a trapped store cannot be entered again); a healthy one goes back to the pool.
    ///
    /// A healthy plugin's call runs right here, on the caller's thread (microseconds). What can take
    /// long runs off the Tokio worker (see [`off_worker`]), so other tenants' sockets keep their
    /// threads: every call of a plugin that failed in the last minute (it may spend its whole deadline
    /// again), and making a new instance (guest start-up code, up to a second), which also runs at a
    /// lower priority (see [`low_priority`]).
    fn call<R>(
        &self,
        hook: Hook,
        f: impl FnOnce(&Guests, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        if let Err(remaining) = self.breaker.check() {
            self.stats.breaker_refusals.fetch_add(1, Ordering::Relaxed);
            return Err(CallFailure::BreakerOpen(remaining));
        }
        let taken = self.pool.lock().pop();
        match taken {
            Some(warm) if !self.is_suspect() => self.call_on(hook, warm, f),
            taken => {
                // A failing plugin gets a few threads at most; a healthy one whose pool ran dry (a
                // burst) waits for its instance.
                let lane = self.enter_slow_lane();
                if lane.is_none() && self.is_suspect() {
                    if let Some(warm) = taken {
                        self.pool.lock().push(warm);
                    }
                    self.stats.busy_refusals.fetch_add(1, Ordering::Relaxed);
                    return Err(CallFailure::Unavailable(
                        "the plugin is busy with slow calls; try again later".into(),
                    ));
                }
                off_worker(|| {
                    let warm = match taken {
                        Some(warm) => warm,
                        None => self.fresh_instance(hook)?,
                    };
                    self.call_on(hook, warm, f)
                })
            }
        }
    }

    /// A place in the slow lane, or `None` when [`SLOW_LANE`] calls are there already.
    fn enter_slow_lane(&self) -> Option<SlowLaneSeat<'_>> {
        self.slow_lane
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < SLOW_LANE).then_some(n + 1)
            })
            .ok()?;
        Some(SlowLaneSeat(&self.slow_lane))
    }

    /// Makes an instance for a call that found the pool empty: one at a time per version (a burst of
    /// calls waits for it rather than starting its own), counted against the tenant's share, and a
    /// failure or a slow start counts toward the breaker.
    fn fresh_instance(&self, hook: Hook) -> Result<Warm, CallFailure> {
        let Some(_turn) = self.starting.try_lock_for(INSTANTIATE_DEADLINE) else {
            return Err(self.instantiation_failed(
                hook,
                CallFailure::Unavailable("the plugin is still starting an instance".into()),
            ));
        };
        if let Some(warm) = self.pool.lock().pop() {
            return Ok(warm);
        }
        let seat = match self.quota.get() {
            Some(quota) => Some(quota.take_seat().ok_or_else(|| {
                self.instantiation_failed(
                    hook,
                    CallFailure::Unavailable(format!(
                        "the tenant's plugins hold {} instances, their share",
                        quota.max_instances()
                    )),
                )
            })?),
            None => None,
        };
        let started = Instant::now();
        let mut warm = low_priority(|| self.instantiate(seat))
            .map_err(|failure| self.instantiation_failed(hook, failure))?;
        let took = started.elapsed();
        if took > SLOW_INSTANTIATE && self.over_start_budget(took) {
            warm.started_slowly = true;
            let opened = self.count_start_failure(&self.stats.slow_instantiations);
            tracing::warn!(
                tenant = %self.ctx.tenant,
                plugin = %self.ctx.name,
                version = %self.ctx.version,
                took_ms = took.as_millis() as u64,
                breaker_opened = opened.is_some(),
                "plugin instance slow to start; counted toward its breaker"
            );
        }
        Ok(warm)
    }

    /// Adds `took` to the current window's instantiation time; whether the window is now past
    /// [`START_BUDGET`].
    fn over_start_budget(&self, took: Duration) -> bool {
        let mut spend = self.start_spend.lock();
        if spend.0.elapsed() > START_WINDOW {
            *spend = (Instant::now(), Duration::ZERO);
        }
        spend.1 += took;
        spend.1 > START_BUDGET
    }

    /// Counts a failed or slow start on `counter` and toward the breaker; the breaker's backoff if it
    /// opened.
    fn count_start_failure(&self, counter: &AtomicU64) -> Option<Duration> {
        counter.fetch_add(1, Ordering::Relaxed);
        self.mark_suspect();
        self.breaker.record_failure()
    }

    fn instantiation_failed(&self, hook: Hook, failure: CallFailure) -> CallFailure {
        let opened = self.count_start_failure(&self.stats.instantiation_failures);
        tracing::warn!(
            tenant = %self.ctx.tenant,
            plugin = %self.ctx.name,
            version = %self.ctx.version,
            hook = hook.name(),
            error = %failure,
            breaker_opened = opened.is_some(),
            "no plugin instance for a call; the request fails closed"
        );
        failure
    }

    fn call_on<R>(
        &self,
        hook: Hook,
        mut warm: Warm,
        f: impl FnOnce(&Guests, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, CallFailure> {
        warm.store.data_mut().start_call(self.limits.deadline);
        warm.store.set_epoch_deadline(self.deadline_ticks);
        let started = Instant::now();
        let result = f(&warm.guests, &mut warm.store);
        match result {
            Ok(value) => {
                self.stats.latency.record(started.elapsed());
                self.stats.calls.fetch_add(1, Ordering::Relaxed);
                // A call on an instance that was slow to start is no proof of health: the breaker stays
                // as the slow start left it (else a half-open breaker would close on every slow start).
                if !warm.started_slowly {
                    self.breaker.record_success();
                }
                warm.calls += 1;
                let tired = warm.calls >= self.limits.calls_per_instance
                    || warm.store.data().cap.used() > warm.high_water;
                if !tired {
                    let mut pool = self.pool.lock();
                    if pool.len() < self.limits.warm_instances {
                        pool.push(warm);
                    }
                }
                Ok(value)
            }
            Err(err) => {
                let failure = self.classify(&warm.store, &err);
                drop(warm);
                self.record_failure(hook, &failure, &err);
                Err(failure)
            }
        }
    }

    fn classify(&self, store: &Store<HostState>, err: &wasmtime::Error) -> CallFailure {
        if store.data().cap.denied() {
            return CallFailure::OutOfMemory(store.data().cap.cap());
        }
        match err.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => CallFailure::Timeout(self.limits.deadline),
            Some(trap) => CallFailure::Trap(trap.to_string()),
            None => CallFailure::Trap(format!("{err:#}")),
        }
    }

    fn record_failure(&self, hook: Hook, failure: &CallFailure, err: &wasmtime::Error) {
        let counter = match failure {
            CallFailure::Timeout(_) => &self.stats.timeouts,
            CallFailure::OutOfMemory(_) => &self.stats.out_of_memory,
            _ => &self.stats.traps,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.mark_suspect();
        let opened = self.breaker.record_failure();
        tracing::warn!(
            tenant = %self.ctx.tenant,
            plugin = %self.ctx.name,
            version = %self.ctx.version,
            hook = hook.name(),
            kind = failure.kind(),
            error = %failure,
            detail = %format!("{err:?}").lines().take(12).collect::<Vec<_>>().join(" | "),
            "plugin call failed; the request fails closed"
        );
        if let Some(backoff) = opened {
            tracing::error!(
                tenant = %self.ctx.tenant,
                plugin = %self.ctx.name,
                version = %self.ctx.version,
                backoff_ms = backoff.as_millis() as u64,
                "plugin breaker open after repeated failures: its hooks refuse until the backoff ends"
            );
        }
    }

    fn instantiate(&self, seat: Option<QuotaSeat>) -> Result<Warm, CallFailure> {
        let engine = self.pre.engine();
        let mut store = Store::new(
            engine,
            HostState::new(Arc::clone(&self.ctx), self.limits.memory_bytes),
        );
        store.limiter(|s| &mut s.cap);
        store.epoch_deadline_callback(|mut cx| Ok(cx.data_mut().clock.on_deadline()));
        store.data_mut().start_call(INSTANTIATE_DEADLINE);
        store.set_epoch_deadline(self.instantiate_ticks);
        let unavailable = |e: wasmtime::Error| CallFailure::Unavailable(format!("{e:#}"));
        let instance = complete(self.pre.instantiate_async(&mut store)).map_err(unavailable)?;
        let i = &self.indices;
        let guests = Guests {
            connect: i
                .connect
                .as_ref()
                .map(|x| x.load(&mut store, &instance))
                .transpose()
                .map_err(unavailable)?,
            join: i
                .join
                .as_ref()
                .map(|x| x.load(&mut store, &instance))
                .transpose()
                .map_err(unavailable)?,
            event: i
                .event
                .as_ref()
                .map(|x| x.load(&mut store, &instance))
                .transpose()
                .map_err(unavailable)?,
            broadcast: i
                .broadcast
                .as_ref()
                .map(|x| x.load(&mut store, &instance))
                .transpose()
                .map_err(unavailable)?,
        };
        self.stats.instantiations.fetch_add(1, Ordering::Relaxed);
        let baseline = store.data().cap.used();
        Ok(Warm {
            _seat: seat,
            store,
            guests,
            calls: 0,
            high_water: baseline + self.limits.memory_bytes.saturating_sub(baseline) / 2,
            started_slowly: false,
        })
    }
}

/// Refuses imports outside the host interface and the WASI 0.2 interfaces that an empty context serves.
fn check_imports(engine: &PluginEngine, component: &Component) -> Result<(), PluginError> {
    for (name, _) in component.component_type().imports(&engine.engine) {
        // WASI sockets link, but the sandbox refuses every socket (`state::sandbox_wasi`).
        let allowed = name.starts_with("ioplex:plugin/host@0.1.")
            || name.starts_with("ioplex:plugin/types@0.1.")
            || (name.starts_with("wasi:")
                && name.contains("@0.2.")
                && !name.starts_with("wasi:http/"));
        if !allowed {
            return Err(PluginError::ForbiddenImport(name.to_owned()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use crate::plugin::test_support::{component, join, runtime};
    use crate::plugin::{CallFailure, PluginManifest, PluginSource};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_loop_is_cut_at_the_deadline_and_memory_at_the_cap() {
        let runtime = runtime();
        let manifest =
            PluginManifest::parse("[limits]\ndeadline-ms = 50\nmemory-mib = 4\n", "chaos.toml")
                .expect("manifest");
        let plugin = runtime
            .install(
                "t",
                "chaos",
                component("chaos"),
                manifest,
                PluginSource::Api,
            )
            .await
            .expect("chaos");
        let started = std::time::Instant::now();
        let err = plugin
            .authorize_join(&join("chaos:loop"))
            .expect_err("a loop never answers");
        assert!(matches!(err, CallFailure::Timeout(_)), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1),
            "cut near its 50 ms deadline"
        );
        let err = plugin
            .authorize_join(&join("chaos:oom"))
            .expect_err("memory runs out");
        assert!(matches!(err, CallFailure::OutOfMemory(_)), "{err}");
        assert!(
            plugin
                .authorize_join(&join("lobby"))
                .expect("a healthy call")
                .is_ok()
        );
        assert_eq!(plugin.stats().calls.load(Ordering::Relaxed), 3);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn repeated_failures_open_the_breaker() {
        let runtime = runtime();
        let plugin = runtime
            .install(
                "t",
                "chaos",
                component("chaos"),
                PluginManifest::default(),
                PluginSource::Api,
            )
            .await
            .expect("chaos");
        for _ in 0..5 {
            let err = plugin
                .authorize_join(&join("chaos:trap"))
                .expect_err("trap");
            assert!(matches!(err, CallFailure::Trap(_)), "{err}");
        }
        let err = plugin
            .authorize_join(&join("lobby"))
            .expect_err("the breaker is open");
        assert!(matches!(err, CallFailure::BreakerOpen(_)), "{err}");
        assert!(plugin.stats().breaker_refusals.load(Ordering::Relaxed) >= 1);
    }
}
