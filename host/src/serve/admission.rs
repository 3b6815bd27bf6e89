//! Which TCP connections the listeners keep: a cap on connections held, a cap per client address on
//! connections that are not doing anything, and shedding of the oldest such connection when a cap or
//! the process's file descriptors run out.
//!
//! A connection is *idle* while no request is in flight on it: just accepted, sending its headers
//! slowly, or kept alive between requests. Idle connections cost a file descriptor and nothing else, so
//! they are what a slowloris attacker holds and what is shed first. A connection with a request in
//! flight (a long-polling `GET`, say) is never shed; an upgraded websocket has left this table.
//! Nothing here waits: admission is one short lock per accept and per request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;

pub use crate::http_util::ListenerStats;

/// Limits on the connections the listeners hold. The defaults hold against a slowloris attack from one
/// address and stay inside the process's file-descriptor limit.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerLimits {
    /// HTTP connections held at once (upgraded websockets not included: they count against their
    /// tenant's `max-connections`). Beyond it the oldest idle connection is closed to make room, or,
    /// with none idle, the new one is.
    pub max_connections: usize,
    /// Idle connections one client address may hold; a new one beyond it closes that address's oldest.
    /// 0 turns the cap off (a load balancer that pools idle connections, say).
    pub max_idle_per_ip: usize,
    /// Time a client has to send a request's headers, on a new or a kept-alive connection.
    pub header_read_timeout: Duration,
    /// Largest request head (request line and headers) accepted; larger ones get 431.
    pub max_header_bytes: usize,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_connections: fd_budget(),
            max_idle_per_ip: 128,
            header_read_timeout: Duration::from_secs(10),
            max_header_bytes: 16 << 10,
        }
    }
}

/// File descriptors left for HTTP connections: the soft `RLIMIT_NOFILE` minus a reserve for Redis,
/// plugin files, the compile cache and websockets being handed over.
pub fn fd_budget() -> usize {
    let Some(soft) = crate::http_util::open_file_limit() else {
        return 65_536;
    };
    let soft = soft as usize;
    soft.saturating_sub((soft / 8).max(64)).max(16)
}

/// State one connection shares with the admission table.
#[derive(Debug, Default)]
struct Shared {
    /// Fired when the table sheds this connection; the connection task then drops the socket.
    shed: Notify,
    /// Set when the connection no longer counts (shed, or closed).
    released: AtomicBool,
}

#[derive(Debug, Default)]
struct Table {
    /// Order in which connections became idle; the smallest key is the oldest.
    next_key: u64,
    held: usize,
    idle: BTreeMap<u64, (IpAddr, Arc<Shared>)>,
    idle_by_ip: HashMap<IpAddr, BTreeSet<u64>>,
}

impl Table {
    fn add_idle(&mut self, ip: IpAddr, shared: &Arc<Shared>) -> u64 {
        let key = self.next_key;
        self.next_key += 1;
        self.idle.insert(key, (ip, Arc::clone(shared)));
        self.idle_by_ip.entry(ip).or_default().insert(key);
        key
    }

    fn remove_idle(&mut self, key: u64) -> Option<(IpAddr, Arc<Shared>)> {
        let (ip, shared) = self.idle.remove(&key)?;
        if let Some(keys) = self.idle_by_ip.get_mut(&ip) {
            keys.remove(&key);
            if keys.is_empty() {
                self.idle_by_ip.remove(&ip);
            }
        }
        Some((ip, shared))
    }

    fn idle_of(&self, ip: IpAddr) -> usize {
        self.idle_by_ip.get(&ip).map_or(0, BTreeSet::len)
    }

    /// Closes the idle connection `key`; it stops counting at once.
    fn shed(&mut self, key: u64) -> bool {
        let Some((_, shared)) = self.remove_idle(key) else {
            return false;
        };
        if !shared.released.swap(true, Ordering::AcqRel) {
            self.held -= 1;
        }
        shared.shed.notify_one();
        true
    }

    fn oldest_idle(&self) -> Option<u64> {
        self.idle.keys().next().copied()
    }

    fn oldest_idle_of(&self, ip: IpAddr) -> Option<u64> {
        self.idle_by_ip.get(&ip)?.iter().next().copied()
    }
}

/// The admission table of a set of listeners.
#[derive(Debug)]
pub struct Admission {
    limits: ListenerLimits,
    table: Mutex<Table>,
    stats: Arc<ListenerStats>,
}

impl Admission {
    /// A table enforcing `limits`.
    pub fn new(limits: ListenerLimits) -> Arc<Self> {
        Arc::new(Admission {
            limits,
            table: Mutex::new(Table::default()),
            stats: Arc::new(ListenerStats::default()),
        })
    }

    /// The limits enforced.
    pub fn limits(&self) -> &ListenerLimits {
        &self.limits
    }

    /// The counters.
    pub fn stats(&self) -> &Arc<ListenerStats> {
        &self.stats
    }

    /// Admits a new connection from `ip`, shedding what the caps require; `None` refuses it (the caller
    /// closes the socket).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Ticket> {
        let mut table = self.table.lock();
        let mut shed = 0;
        if self.limits.max_idle_per_ip > 0
            && table.idle_of(ip) >= self.limits.max_idle_per_ip
            && let Some(oldest) = table.oldest_idle_of(ip)
            && table.shed(oldest)
        {
            shed += 1;
        }
        if table.held >= self.limits.max_connections.max(1) {
            match table.oldest_idle() {
                Some(oldest) if table.shed(oldest) => shed += 1,
                _ => {
                    drop(table);
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
            }
        }
        let shared = Arc::new(Shared::default());
        table.held += 1;
        let key = table.add_idle(ip, &shared);
        drop(table);
        self.stats.shed.fetch_add(shed, Ordering::Relaxed);
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.open.fetch_add(1, Ordering::Relaxed);
        Some(Ticket {
            admission: Arc::clone(self),
            ip,
            shared,
            state: Mutex::new(TicketState {
                idle_key: Some(key),
                in_flight: 0,
                upgraded: false,
            }),
        })
    }

    /// Closes the oldest idle connections (the process ran out of file descriptors); returns how many.
    pub fn shed_oldest(&self, count: usize) -> usize {
        let mut table = self.table.lock();
        let mut shed = 0;
        while shed < count {
            match table.oldest_idle() {
                Some(key) if table.shed(key) => shed += 1,
                _ => break,
            }
        }
        drop(table);
        self.stats.shed.fetch_add(shed as u64, Ordering::Relaxed);
        shed
    }
}

#[derive(Debug)]
struct TicketState {
    idle_key: Option<u64>,
    in_flight: usize,
    upgraded: bool,
}

/// One admitted connection's place in the table; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    ip: IpAddr,
    shared: Arc<Shared>,
    state: Mutex<TicketState>,
}

impl Ticket {
    /// Resolves when the table sheds this connection.
    pub async fn shed(&self) {
        self.shared.shed.notified().await
    }

    /// A request is in flight: the connection is not idle until the returned guard is dropped.
    pub fn busy(self: &Arc<Self>) -> Busy {
        let mut state = self.state.lock();
        state.in_flight += 1;
        if let Some(key) = state.idle_key.take() {
            self.admission.table.lock().remove_idle(key);
        }
        drop(state);
        Busy {
            ticket: Arc::clone(self),
        }
    }

    /// The connection was upgraded: it is never idle again (its socket now belongs to a websocket).
    pub fn upgraded(&self) {
        self.state.lock().upgraded = true;
    }

    fn request_done(&self) {
        let mut state = self.state.lock();
        state.in_flight -= 1;
        if state.in_flight == 0
            && !state.upgraded
            && state.idle_key.is_none()
            && !self.shared.released.load(Ordering::Acquire)
        {
            state.idle_key = Some(self.admission.table.lock().add_idle(self.ip, &self.shared));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let key = self.state.get_mut().idle_key.take();
        let mut table = self.admission.table.lock();
        if let Some(key) = key {
            table.remove_idle(key);
        }
        if !self.shared.released.swap(true, Ordering::AcqRel) {
            table.held -= 1;
        }
        drop(table);
        self.admission.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub struct Busy {
    ticket: Arc<Ticket>,
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.ticket.request_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize, max_idle_per_ip: usize) -> ListenerLimits {
        ListenerLimits {
            max_connections,
            max_idle_per_ip,
            ..ListenerLimits::default()
        }
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));

    #[tokio::test]
    async fn an_address_over_its_idle_cap_loses_its_oldest_idle_connection() {
        let admission = Admission::new(limits(100, 2));
        let first = Arc::new(admission.admit(A).expect("admitted"));
        let second = admission.admit(A).expect("admitted");
        let other = admission.admit(B).expect("admitted");
        let third = admission.admit(A).expect("admitted");
        // The first one of A was shed, not B's and not the new one.
        tokio::time::timeout(Duration::from_millis(100), first.shed())
            .await
            .expect("the oldest idle connection of A is shed");
        assert_eq!(admission.stats().shed.load(Ordering::Relaxed), 1);
        drop((second, other, third));
    }

    #[tokio::test]
    async fn busy_connections_are_never_shed_and_the_cap_refuses_when_nothing_is_idle() {
        let admission = Admission::new(limits(2, 0));
        let a = Arc::new(admission.admit(A).expect("admitted"));
        let b = Arc::new(admission.admit(B).expect("admitted"));
        let busy_a = a.busy();
        let busy_b = b.busy();
        assert!(admission.admit(A).is_none(), "full and nothing idle");
        assert_eq!(admission.stats().refused.load(Ordering::Relaxed), 1);
        drop(busy_b);
        // b is idle again: a newcomer takes its place.
        let c = admission.admit(A).expect("admitted by shedding b");
        tokio::time::timeout(Duration::from_millis(100), b.shed())
            .await
            .expect("b shed");
        drop((busy_a, c));
        assert_eq!(admission.stats().open.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn closed_connections_free_their_place() {
        let admission = Admission::new(limits(1, 0));
        let upgraded = Arc::new(admission.admit(A).expect("admitted"));
        let busy = upgraded.busy();
        upgraded.upgraded();
        drop(busy);
        assert!(
            admission.admit(B).is_none(),
            "an upgrading connection is not idle"
        );
        drop(upgraded);
        assert!(admission.admit(B).is_some());
        assert_eq!(admission.shed_oldest(5), 0);
    }

    #[test]
    fn the_budget_leaves_a_reserve_below_the_descriptor_limit() {
        let budget = fd_budget();
        assert!(budget >= 16);
    }
}
