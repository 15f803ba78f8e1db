//! What one caller can make a telemetry port hold: a bounded number of connections, each
//! closed when it has been idle too long, the oldest idle one closed first when a new caller
//! needs its place.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// The bounds of one port.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Connections open at once. Past it, a new connection takes the place of the one that
    /// has been idle longest; when every one is in the middle of a request, it is closed.
    pub(super) connections: usize,
    /// A connection that has not started a request for this long is closed: one that never
    /// sends a byte, or a keep-alive connection between scrapes.
    pub(super) idle: Duration,
    /// A request's headers must arrive within this long of the connection's readiness for
    /// them (hyper's `header_read_timeout`): a caller that trickles bytes is closed.
    pub(super) header_read: Duration,
    /// The TLS handshake must end within this long.
    pub(super) handshake: Duration,
    /// All of a request's headers together; a larger request is answered 431.
    pub(super) header_bytes: usize,
}

impl Limits {
    /// Prometheus scrapes every 15 to 60 s over one keep-alive connection and sends a few
    /// hundred bytes of headers (a ServiceAccount token is 1 to 2 KiB); the kubelet probes
    /// every 10 s on a new connection. These leave both untouched.
    pub(super) const DEFAULT: Self = Self {
        connections: 256,
        idle: Duration::from_secs(90),
        header_read: Duration::from_secs(10),
        handshake: Duration::from_secs(10),
        header_bytes: 16 * 1024,
    };
}

/// The connections open on one port.
#[derive(Debug)]
pub(super) struct Connections {
    limits: Limits,
    open: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    next: u64,
    by_id: HashMap<u64, Arc<Connection>>,
}

/// One open connection, as the port sees it.
#[derive(Debug)]
pub(super) struct Connection {
    /// A request is being answered.
    busy: AtomicBool,
    /// When the last request ended, or the connection was accepted.
    idle_since: Mutex<Instant>,
    /// Closes the connection: its place was given to a newer one.
    evicted: Notify,
}

/// A place among the open connections; dropping it gives the place back.
#[derive(Debug)]
pub(super) struct Admitted {
    connections: Arc<Connections>,
    id: u64,
    connection: Arc<Connection>,
}

impl Connections {
    pub(super) fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self { limits, open: Mutex::default() })
    }

    pub(super) fn limits(&self) -> Limits {
        self.limits
    }

    /// A place for a new connection: a free one, or that of the connection idle longest
    /// (closed now). `None` when every open connection is answering a request.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if open.by_id.len() >= self.limits.connections {
            let (&id, _) = open
                .by_id
                .iter()
                .filter(|(_, connection)| !connection.busy.load(Ordering::Acquire))
                .min_by_key(|(_, connection)| connection.idle_since())?;
            let evicted = open.by_id.remove(&id).expect("found just now");
            evicted.evicted.notify_one();
        }
        let id = open.next;
        open.next += 1;
        let connection = Arc::new(Connection {
            busy: AtomicBool::new(false),
            idle_since: Mutex::new(Instant::now()),
            evicted: Notify::new(),
        });
        open.by_id.insert(id, Arc::clone(&connection));
        Some(Admitted { connections: Arc::clone(self), id, connection })
    }

    /// How many connections are open now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).by_id.len()
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.by_id.remove(&self.id);
    }
}

impl Admitted {
    pub(super) fn connection(&self) -> Arc<Connection> {
        Arc::clone(&self.connection)
    }

    /// Resolves when the connection must close: it was idle for the port's idle limit, or a
    /// newer connection took its place.
    pub(super) async fn closed(&self) {
        let idle = self.connections.limits.idle;
        let mut deadline = self.connection.idle_since() + idle;
        loop {
            tokio::select! {
                () = self.connection.evicted.notified() => return,
                () = tokio::time::sleep_until(deadline) => {
                    let now = Instant::now();
                    if self.connection.busy.load(Ordering::Acquire) {
                        // Looked at again one idle limit after now: the request may end any time.
                        deadline = now + idle;
                    } else {
                        deadline = self.connection.idle_since() + idle;
                        if deadline <= now {
                            return;
                        }
                    }
                }
            }
        }
    }
}

impl Connection {
    fn idle_since(&self) -> Instant {
        *self.idle_since.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Marks the connection busy until the returned guard is dropped (the request answered).
    pub(super) fn request(self: &Arc<Self>) -> Busy {
        self.busy.store(true, Ordering::Release);
        Busy(Arc::clone(self))
    }
}

/// A request being answered on a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<Connection>);

impl Drop for Busy {
    fn drop(&mut self) {
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        self.0.busy.store(false, Ordering::Release);
    }
}

/// Waits after a failed `accept` (out of file descriptors, for one) instead of trying again
/// at once: 10 ms, doubling to a second, back to nothing after a success.
#[derive(Debug, Default)]
pub(super) struct AcceptBackoff {
    failures: u32,
}

impl AcceptBackoff {
    pub(super) fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub(super) fn failed(&mut self) -> Duration {
        let delay =
            Duration::from_millis(10).saturating_mul(1 << self.failures.min(7)).min(Duration::from_secs(1));
        self.failures = self.failures.saturating_add(1);
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(connections: usize) -> Limits {
        Limits { connections, idle: Duration::from_secs(60), ..Limits::DEFAULT }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_port_closes_the_connection_idle_longest_and_never_a_busy_one() {
        let connections = Connections::new(limits(2));
        let first = connections.admit().unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        let second = connections.admit().unwrap();
        let busy = second.connection().request();
        tokio::time::advance(Duration::from_secs(1)).await;

        // Full: the third takes the first's place (idle longest); the second is busy.
        let third = connections.admit().unwrap();
        assert_eq!(connections.len(), 2);
        tokio::time::timeout(Duration::from_millis(1), first.closed()).await.expect("the first is closed");
        // The first's guard going away does not free the third's place.
        drop(first);
        assert_eq!(connections.len(), 2);

        // The third answers a request too: nobody can be closed, so a fourth is refused.
        let also_busy = third.connection().request();
        assert!(connections.admit().is_none());
        drop((busy, also_busy));
        let fourth = connections.admit().expect("the second is idle again");
        assert_eq!(connections.len(), 2);
        drop((second, third, fourth));
        assert_eq!(connections.len(), 0, "every place is given back");
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_closes_after_the_idle_limit_and_a_busy_one_does_not() {
        let connections = Connections::new(limits(8));
        let idle = connections.admit().unwrap();
        let started = Instant::now();
        idle.closed().await;
        assert_eq!(started.elapsed(), Duration::from_secs(60));

        let working = connections.admit().unwrap();
        let busy = working.connection().request();
        let waited = tokio::time::timeout(Duration::from_secs(300), working.closed()).await;
        assert!(waited.is_err(), "a request in flight keeps its connection");
        drop(busy);
        let ended = Instant::now();
        working.closed().await;
        assert_eq!(ended.elapsed(), Duration::from_secs(60), "idle counts from the request's end");
    }

    #[test]
    fn accept_failures_back_off_to_a_second_and_reset_on_success() {
        let mut backoff = AcceptBackoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.failed().as_millis()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        backoff.succeeded();
        assert_eq!(backoff.failed(), Duration::from_millis(10));
    }
}
