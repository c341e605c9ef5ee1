//! The agent's view of a watched process: alive, paused, hung, busy-gc or dead, decided from the plugin's heartbeats,
//! the plugin socket and `/proc/<pid>/stat`. Pure (time and samples are inputs) so it is tested without a JVM.
//!
//! - **alive**: a heartbeat arrived within `suspect_after`.
//! - **paused**: no heartbeat, and the kernel reports the process stopped (state `T`, e.g. SIGSTOP).
//! - **busy-gc**: no heartbeat, but the process keeps using CPU (a stop-the-world collection, a JIT storm).
//! - **hung**: no heartbeat and no CPU progress (deadlock, stuck I/O, frozen by the hypervisor).
//! - **dead**: the plugin's socket was closed by the process's end, or the process is gone or a zombie.
//! - **unknown**: no plugin has connected yet and no pid is known.

pub use crate::protocol::Liveness;

/// A sample of the process from /proc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSample {
    /// The state letter (R, S, D, T, t, Z, X, ...).
    pub state: char,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    /// The process's first thread is exiting (PF_EXITING in its flags): it is dying. A killed JVM shows this
    /// within a millisecond, while the kernel still needs tens to hundreds of milliseconds (its memory unmapped by
    /// whichever thread exits last) before the process is a zombie or its sockets close.
    pub exiting: bool,
}

/// Reads `/proc/<pid>/stat`; None when the process does not exist.
pub fn sample(pid: u32) -> Option<ProcSample> {
    crate::host::procfs::stat(pid).map(|s| ProcSample {
        state: s.state,
        cpu_ticks: s.cpu_ticks,
        exiting: s.exiting(),
    })
}

/// CPU ticks (10 ms each) that count as "advancing" while heartbeats are missing.
const CPU_PROGRESS_TICKS: u64 = 2;

/// The state machine. Times are milliseconds on any monotonic clock.
#[derive(Debug, Clone)]
pub struct Tracker {
    suspect_after_ms: u64,
    state: Liveness,
    since_ms: u64,
    last_heartbeat_ms: Option<u64>,
    /// CPU ticks when the last heartbeat arrived.
    cpu_at_heartbeat: Option<u64>,
    connected: bool,
    eof: bool,
}

impl Tracker {
    pub fn new(suspect_after_ms: u64, now_ms: u64) -> Self {
        Tracker {
            suspect_after_ms,
            state: Liveness::Unknown,
            since_ms: now_ms,
            last_heartbeat_ms: None,
            cpu_at_heartbeat: None,
            connected: false,
            eof: false,
        }
    }

    pub fn state(&self) -> Liveness {
        self.state
    }

    pub fn since_ms(&self) -> u64 {
        self.since_ms
    }

    pub fn last_heartbeat_ms(&self) -> Option<u64> {
        self.last_heartbeat_ms
    }

    pub fn connected(&self) -> bool {
        self.connected
    }

    /// A (new) plugin connection completed its handshake: a fresh start.
    pub fn on_connect(&mut self, now_ms: u64, proc: Option<ProcSample>) {
        self.connected = true;
        self.eof = false;
        self.last_heartbeat_ms = Some(now_ms);
        self.cpu_at_heartbeat = proc.map(|p| p.cpu_ticks);
        self.set(Liveness::Alive, now_ms);
    }

    pub fn on_heartbeat(&mut self, now_ms: u64, proc: Option<ProcSample>) {
        self.last_heartbeat_ms = Some(now_ms);
        if let Some(p) = proc {
            self.cpu_at_heartbeat = Some(p.cpu_ticks);
        }
        if self.state != Liveness::Dead {
            self.set(Liveness::Alive, now_ms);
        }
    }

    /// The agent started its process again: unknown until the new process's plugin connects.
    pub fn on_restart(&mut self, now_ms: u64) {
        self.connected = false;
        self.eof = false;
        self.last_heartbeat_ms = None;
        self.cpu_at_heartbeat = None;
        self.set(Liveness::Unknown, now_ms);
    }

    /// The plugin's socket ended (EOF or reset).
    pub fn on_disconnect(&mut self, now_ms: u64) {
        self.connected = false;
        self.eof = true;
        self.set(Liveness::Dead, now_ms);
    }

    /// Re-evaluates with a fresh /proc sample (None: the process is gone). Returns the transition, if any.
    pub fn evaluate(
        &mut self,
        now_ms: u64,
        proc: Option<ProcSample>,
        pid_known: bool,
    ) -> Option<(Liveness, Liveness)> {
        let before = self.state;
        let next = match proc {
            _ if self.eof => Liveness::Dead,
            None if pid_known => Liveness::Dead,
            Some(p) if p.exiting || matches!(p.state, 'Z' | 'X' | 'x') => Liveness::Dead,
            None => self.state,
            Some(p) => match self.last_heartbeat_ms {
                None => Liveness::Unknown,
                Some(hb) if now_ms.saturating_sub(hb) <= self.suspect_after_ms => Liveness::Alive,
                Some(_) if matches!(p.state, 'T' | 't') => Liveness::Paused,
                Some(_) => match self.cpu_at_heartbeat {
                    Some(c) if p.cpu_ticks >= c + CPU_PROGRESS_TICKS => Liveness::BusyGc,
                    _ => Liveness::Hung,
                },
            },
        };
        // A silence is timed from the last heartbeat, not from when it was first noticed (`suspect_after` later):
        // the hang and GC tolerances are about how long the process has been unresponsive.
        let silent = matches!(next, Liveness::Paused | Liveness::Hung | Liveness::BusyGc);
        match self.last_heartbeat_ms {
            Some(hb) if before == Liveness::Alive && silent => {
                self.state = next;
                self.since_ms = hb;
            }
            _ => self.set(next, now_ms),
        }
        (before != next).then_some((before, next))
    }

    fn set(&mut self, s: Liveness, now_ms: u64) {
        if self.state != s {
            self.state = s;
            self.since_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(cpu: u64) -> Option<ProcSample> {
        Some(ProcSample {
            state: 'S',
            cpu_ticks: cpu,
            exiting: false,
        })
    }

    #[test]
    fn heartbeats_keep_it_alive() {
        let mut t = Tracker::new(300, 0);
        assert_eq!(
            t.evaluate(0, running(0), true),
            None,
            "unknown until a plugin connects"
        );
        t.on_connect(10, running(5));
        for now in (100..2000).step_by(100) {
            t.on_heartbeat(now, running(5 + now / 10));
            assert_eq!(t.evaluate(now + 50, running(5 + now / 10), true), None);
        }
        assert_eq!(t.state(), Liveness::Alive);
    }

    #[test]
    fn sigstop_is_paused_then_continues() {
        let mut t = Tracker::new(300, 0);
        t.on_connect(0, running(100));
        t.on_heartbeat(100, running(100));
        let stopped = Some(ProcSample {
            state: 'T',
            cpu_ticks: 100,
            exiting: false,
        });
        assert_eq!(
            t.evaluate(350, stopped, true),
            None,
            "within the suspect time"
        );
        assert_eq!(
            t.evaluate(450, stopped, true),
            Some((Liveness::Alive, Liveness::Paused))
        );
        assert_eq!(
            t.since_ms(),
            100,
            "a silence is timed from the last heartbeat"
        );
        t.on_heartbeat(900, running(101));
        assert_eq!(t.state(), Liveness::Alive);
    }

    #[test]
    fn cpu_without_heartbeats_is_gc_and_no_cpu_is_hung() {
        let mut t = Tracker::new(300, 0);
        t.on_connect(0, running(100));
        t.on_heartbeat(100, running(100));
        assert_eq!(
            t.evaluate(500, running(101), true),
            Some((Liveness::Alive, Liveness::Hung))
        );
        assert_eq!(t.since_ms(), 100);
        assert_eq!(
            t.evaluate(600, running(140), true),
            Some((Liveness::Hung, Liveness::BusyGc))
        );
        // Between silent states each keeps its own clock: a collection that looked hung for a moment is not
        // fenced by a hang tolerance counted from the start of the silence.
        assert_eq!(t.since_ms(), 600);
        t.on_heartbeat(700, running(150));
        assert_eq!(t.state(), Liveness::Alive);
    }

    #[test]
    fn eof_or_exit_is_dead_and_stays_dead_until_a_new_connection() {
        let mut t = Tracker::new(300, 0);
        t.on_connect(0, running(1));
        t.on_disconnect(50);
        assert_eq!(t.state(), Liveness::Dead);
        t.on_heartbeat(60, running(1));
        assert_eq!(
            t.state(),
            Liveness::Dead,
            "a late heartbeat does not revive it"
        );
        assert_eq!(t.evaluate(100, running(1), true), None);
        t.on_connect(200, running(1));
        assert_eq!(t.state(), Liveness::Alive);

        let mut t = Tracker::new(300, 0);
        t.on_connect(0, running(1));
        assert_eq!(
            t.evaluate(50, None, true),
            Some((Liveness::Alive, Liveness::Dead))
        );
        // A zombie, and a killed process still tearing down (not a zombie yet, its sockets still open): dead.
        for (state, exiting) in [('Z', false), ('R', true)] {
            let mut t = Tracker::new(300, 0);
            t.on_connect(0, running(1));
            let sample = Some(ProcSample {
                state,
                cpu_ticks: 1,
                exiting,
            });
            assert_eq!(
                t.evaluate(50, sample, true),
                Some((Liveness::Alive, Liveness::Dead)),
                "{state} {exiting}"
            );
        }
    }

    #[test]
    fn reads_its_own_proc_entry() {
        let s = sample(std::process::id()).unwrap();
        assert!(matches!(s.state, 'R' | 'S'));
        assert!(!s.exiting);
        assert!(sample(u32::MAX).is_none());
    }
}
