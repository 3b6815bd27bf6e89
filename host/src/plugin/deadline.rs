//! Per-call deadlines that count the guest's own running time.
//!
//! The epoch ticker measures wall-clock time, so on a busy machine a call whose thread the OS
//! descheduled would be killed for time it never ran. When a call reaches its deadline, the clock below
//! looks at the thread's CPU time instead: the call is interrupted once it has burned `GRACE` of CPU
//! past the deadline (a guest that loops keeps burning; a preempted one does not), or at a hard
//! wall-clock cap. The fast path costs nothing: only an expired deadline reads the CPU clock.

use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// CPU time a call may run past its deadline before it is interrupted.
const GRACE: Duration = Duration::from_millis(2);
/// However preempted a call was, it ends by this many deadlines of wall-clock time.
const WALL_CAP_FACTOR: u32 = 10;

/// CPU time consumed by the calling thread, where the platform tells.
fn thread_cpu_time() -> Option<Duration> {
    #[cfg(unix)]
    {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant the platform defines.
        let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        (rc == 0).then(|| Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The timing of the call in progress on a store.
#[derive(Debug)]
pub(crate) struct CallClock {
    started: Instant,
    wall_cap: Duration,
    /// The thread's CPU time when the deadline first expired.
    overtime_from: Option<Duration>,
}

impl CallClock {
    pub(crate) fn new() -> Self {
        CallClock {
            started: Instant::now(),
            wall_cap: Duration::MAX,
            overtime_from: None,
        }
    }

    /// Starts timing a call whose deadline is `deadline`.
    pub(crate) fn start(&mut self, deadline: Duration) {
        self.started = Instant::now();
        self.wall_cap = deadline
            .saturating_mul(WALL_CAP_FACTOR)
            .max(deadline + GRACE);
        self.overtime_from = None;
    }

    /// Called by wasmtime each time the epoch deadline passes: keep going one more tick, or stop.
    pub(crate) fn on_deadline(&mut self) -> UpdateDeadline {
        if self.started.elapsed() >= self.wall_cap {
            return UpdateDeadline::Interrupt;
        }
        let Some(now) = thread_cpu_time() else {
            return UpdateDeadline::Interrupt; // no CPU clock: plain wall-clock deadlines
        };
        match self.overtime_from {
            None => {
                self.overtime_from = Some(now);
                UpdateDeadline::Continue(1)
            }
            Some(from) if now.saturating_sub(from) >= GRACE => UpdateDeadline::Interrupt,
            Some(_) => UpdateDeadline::Continue(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_burning_cpu_past_its_deadline_is_stopped() {
        let mut clock = CallClock::new();
        clock.start(Duration::from_millis(1));
        let spin = Instant::now();
        assert!(matches!(clock.on_deadline(), UpdateDeadline::Continue(1)));
        let mut verdict = UpdateDeadline::Continue(1);
        while spin.elapsed() < Duration::from_millis(50) {
            verdict = clock.on_deadline();
            if matches!(verdict, UpdateDeadline::Interrupt) {
                break;
            }
        }
        assert!(matches!(verdict, UpdateDeadline::Interrupt));
        assert!(
            spin.elapsed() >= GRACE,
            "not before the grace of CPU time: {:?}",
            spin.elapsed()
        );
    }

    #[test]
    fn a_call_that_is_not_running_is_not_charged_until_the_wall_cap() {
        let mut clock = CallClock::new();
        clock.start(Duration::from_millis(2));
        assert!(matches!(clock.on_deadline(), UpdateDeadline::Continue(1)));
        std::thread::sleep(Duration::from_millis(5)); // descheduled, no CPU burned
        assert!(matches!(clock.on_deadline(), UpdateDeadline::Continue(1)));
        std::thread::sleep(Duration::from_millis(20)); // past 10 × 2 ms of wall-clock time
        assert!(matches!(clock.on_deadline(), UpdateDeadline::Interrupt));
    }
}
