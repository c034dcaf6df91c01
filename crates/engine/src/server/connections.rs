//! The accept loop and the life of each client connection: what keeps one
//! client (or a thousand) from holding the server.
//!
//! - **Idle timeout**: a connection with no request in progress and no byte of
//!   a new one since accept or since its last response was sent is closed
//!   silently; so is one whose response has not taken a byte for as long (a
//!   client that stopped reading).
//! - **Header timeout**: once the first byte of a request head has arrived,
//!   the whole head must follow in time, else the client gets a 408 problem
//!   and the connection is closed. (The body has its own timeout, enforced
//!   where it is read: `pipeline::read_body`.)
//! - **Connection cap**: at most `max_clients` connections, lowered at start
//!   to fit the file-descriptor limit (which is first raised to its hard
//!   limit). At the cap a newcomer is still accepted and the connection idle
//!   the longest is closed to make room, so idle and slow clients can never
//!   lock a real one out; when every connection has a request in progress (a
//!   response still being sent counts) the newcomer gets a 503 problem instead.
//! - **Accept errors** (out of file descriptors…) back off briefly and are
//!   logged at most once a second.
//! - **Shutdown**: on the signal the listener is closed, idle connections are
//!   closed at once, in-flight requests finish, and whatever is still open at
//!   the shutdown deadline is dropped.
//!
//! Each connection is served by hyper's HTTP/1 state machine over a thin IO
//! wrapper ([`Tracked`]) that notes when bytes arrive, when bytes leave and
//! when hyper's buffer has been written out; the service notes when a request
//! is inside it and wraps the response body ([`TrackedBody`]) to note when it has
//! been handed over whole. A watchdog in the connection's own task reads that
//! shared [`ConnState`] and re-arms its one timer at the next deadline.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::error::ApiError;
use crate::settings::{ServerSettings, format_duration};

/// Largest request head (request line and headers) and read buffer; a larger
/// head is answered 431. Bounds the memory one slow or hostile client can pin.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a closing connection keeps reading (and discarding) what the
/// client still sends, so that the client sees our last response instead of
/// a reset: closing a socket with unread input makes the kernel send RST.
const LINGER: Duration = Duration::from_secs(1);

/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 256 * 1024;

/// Refused newcomers (503) being answered at once; past that they are closed
/// without an answer, so a flood cannot turn answers into an fd leak.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Evicted connections that may still be closing before accept pauses: an
/// eviction frees its descriptor a moment later, in the evicted connection's
/// own task, and a burst of newcomers must not outrun those closes into the
/// file-descriptor limit.
const CLOSING_SLACK: usize = 32;

/// Pause after an accept error before trying again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub(crate) async fn serve(
    listener: TcpListener,
    router: Router,
    settings: &ServerSettings,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max_clients = fit_to_fd_limit(settings.max_clients, settings.fd_reserve);
    let limits = Arc::new(Limits {
        idle: settings.idle_timeout,
        header: settings.header_timeout,
        epoch: Instant::now(),
    });
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        // hyper's own header timeout also runs while a keep-alive connection
        // is idle and closes silently; ours starts at the first byte and
        // answers 408.
        .header_read_timeout(None)
        .max_header_size(MAX_HEAD_BYTES)
        .max_buf_size(MAX_HEAD_BYTES);
    let http = Arc::new(http);
    let registry: Arc<Registry> = Arc::default();
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut accept_errors = Throttle::new(Duration::from_secs(1));
    let mut evictions = Throttle::new(Duration::from_secs(10));
    let mut busy_refusals = Throttle::new(Duration::from_secs(10));

    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        // Newcomers wait in the kernel's backlog while evicted connections
        // are still closing: open sockets never exceed the cap by more than
        // the slack, so accept never runs into the fd limit.
        let full = registry.sockets() >= max_clients.saturating_add(CLOSING_SLACK);
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            () = registry.closed.notified(), if full => {}
            accepted = listener.accept(), if !full => {
                let stream = match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) if is_connection_error(&e) => continue,
                    Err(e) => {
                        if let Some(suppressed) = accept_errors.ready() {
                            tracing::error!(suppressed, "accept error: {e} (retrying)");
                        }
                        if is_fd_exhaustion(&e) {
                            // Free a descriptor for whoever is waiting.
                            registry.evict_longest_idle();
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                if registry.len() >= max_clients {
                    if registry.evict_longest_idle() {
                        if let Some(suppressed) = evictions.ready() {
                            tracing::warn!(
                                max_clients,
                                suppressed,
                                "client connection cap reached: closing the longest-idle connections to make room"
                            );
                        }
                    } else {
                        if let Some(suppressed) = busy_refusals.ready() {
                            tracing::warn!(
                                max_clients,
                                suppressed,
                                "every client connection is busy: answering newcomers 503"
                            );
                        }
                        refuse(stream, &refusals);
                        continue;
                    }
                }
                next_id += 1;
                let state = Arc::new(ConnState::new(next_id, &limits));
                let registration = registry.register(state.clone());
                tasks.spawn(run_connection(
                    stream,
                    state,
                    registration,
                    router.clone(),
                    http.clone(),
                    limits.clone(),
                    stop_rx.clone(),
                ));
            }
        }
    }

    // Stop accepting: new connections are refused by the kernel from here on.
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(settings.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            connections = tasks.len(),
            "shutdown deadline of {} reached: closing the remaining connections",
            format_duration(settings.shutdown_timeout)
        );
        tasks.shutdown().await;
    }
    Ok(())
}

/// Errors of one connection that is gone before it was accepted: not the
/// listener's problem, nothing to log.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// EMFILE or ENFILE: the process or the system is out of file descriptors.
fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(23 | 24))
}

/// Raises the soft file-descriptor limit to the hard limit and returns the
/// connection cap that fits under it, keeping `reserve` descriptors for the
/// rest of the process. Says in the log what it found and did.
fn fit_to_fd_limit(requested: usize, reserve: u64) -> usize {
    #[cfg(unix)]
    {
        let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
        let soft = match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(soft) => soft,
            Err(e) => {
                tracing::warn!("cannot raise the file descriptor limit: {e}");
                before.map_or(u64::MAX, |(soft, _)| soft)
            }
        };
        if let Some((old, hard)) = before
            && soft > old
        {
            tracing::info!("file descriptor limit raised from {old} to {soft} (hard limit {hard})");
        }
        // Under a very low limit, half of it still goes to clients: a server
        // that accepts almost nobody is no better than one that runs out.
        let fits = soft.saturating_sub(reserve).max(soft / 2).max(1);
        let cap = usize::try_from(fits).unwrap_or(usize::MAX).min(requested);
        let kept = soft.saturating_sub(u64::try_from(cap).unwrap_or(u64::MAX));
        let short = if kept < reserve {
            format!(" (fewer than the {reserve} wanted: raise `ulimit -n`)")
        } else {
            String::new()
        };
        if cap < requested {
            tracing::warn!(
                "client connections capped at {cap} instead of {requested}: the file descriptor limit is {soft} and {kept} are kept for the database, files, logs and closing connections{short}"
            );
        } else {
            tracing::info!("client connections capped at {cap} (file descriptor limit {soft})");
        }
        cap
    }
    #[cfg(not(unix))]
    {
        let _ = reserve;
        requested
    }
}

/// The timeouts every connection's watchdog applies, and the clock origin
/// of the millisecond timestamps in [`ConnState`].
struct Limits {
    idle: Duration,
    header: Duration,
    epoch: Instant,
}

impl Limits {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }
}

/// Where a connection is between requests, as [`ConnState::phase`] holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// No request in progress: evictable, under the idle and header timeouts.
    Idle,
    /// A request is inside the service, from its complete head until the
    /// handler answers (its body and handler have their own limits).
    Handling,
    /// The response is going out: hyper is taking its body.
    Sending,
    /// hyper has taken the whole body and is still writing what it buffered.
    Flushing,
}

impl Phase {
    const ALL: [Phase; 4] = [
        Phase::Idle,
        Phase::Handling,
        Phase::Sending,
        Phase::Flushing,
    ];

    fn from_u8(n: u8) -> Phase {
        Phase::ALL
            .get(usize::from(n))
            .copied()
            .unwrap_or(Phase::Idle)
    }
}

/// What the watchdog and the eviction scan know about one connection. Plain
/// atomics: written on every request by the connection's own task, read by
/// the accept loop when it looks for the longest-idle connection.
struct ConnState {
    id: u64,
    epoch: Instant,
    /// The [`Phase`], as its index: anything but idle is busy.
    phase: AtomicU8,
    /// When the current idle phase began (accept or the end of the last
    /// response), in ms since the epoch.
    idle_since: AtomicU64,
    /// When a response last got a byte out (or began), in ms since the epoch.
    sent_at: AtomicU64,
    /// When the first byte of the next request arrived, in ms since the epoch
    /// plus one; 0 while none has.
    head_since: AtomicU64,
    /// The last write to the client could not complete: it is not reading.
    write_blocked: AtomicBool,
    /// Wakes the watchdog when a deadline moves (a request starts or ends).
    changed: Notify,
    /// Set by the accept loop to close this connection for a newcomer.
    evict: Notify,
}

impl ConnState {
    fn new(id: u64, limits: &Limits) -> ConnState {
        ConnState {
            id,
            epoch: limits.epoch,
            phase: AtomicU8::new(Phase::Idle as u8),
            idle_since: AtomicU64::new(limits.now_ms()),
            sent_at: AtomicU64::new(0),
            head_since: AtomicU64::new(0),
            write_blocked: AtomicBool::new(false),
            changed: Notify::new(),
            evict: Notify::new(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    /// Whether a request or its response is in progress (not evictable).
    fn busy(&self) -> bool {
        self.phase() != Phase::Idle
    }

    /// A new idle phase begins now.
    fn become_idle(&self) {
        self.idle_since.store(self.now_ms(), Ordering::Release);
        self.head_since.store(0, Ordering::Release);
        self.set_phase(Phase::Idle);
        self.changed.notify_one();
    }

    /// Bytes of a response reached the socket.
    fn bytes_sent(&self) {
        self.sent_at.store(self.now_ms(), Ordering::Release);
    }

    /// hyper's write buffer is empty and the socket flushed: a response whose
    /// body was handed over whole has now been sent whole.
    fn flushed(&self) {
        if self.phase() == Phase::Flushing {
            self.become_idle();
        }
    }

    /// Bytes arrived from the client: outside a request they start a head.
    fn bytes_arrived(&self) {
        if !self.busy()
            && self
                .head_since
                .compare_exchange(0, self.now_ms() + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.changed.notify_one();
        }
    }

    /// The next deadline and what happens there; `None` while a request is in
    /// its handler (its body and handler have their own limits). A response
    /// that takes no byte for the idle timeout has a client that stopped
    /// reading.
    fn deadline(&self, limits: &Limits) -> Option<(u64, Expiry)> {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        match self.phase() {
            Phase::Idle => {}
            Phase::Handling => return None,
            Phase::Sending | Phase::Flushing => {
                return Some((
                    self.sent_at
                        .load(Ordering::Acquire)
                        .saturating_add(ms(limits.idle)),
                    Expiry::Stalled,
                ));
            }
        }
        match self.head_since.load(Ordering::Acquire) {
            0 => Some((
                self.idle_since
                    .load(Ordering::Acquire)
                    .saturating_add(ms(limits.idle)),
                Expiry::Idle,
            )),
            since => Some((
                (since - 1).saturating_add(ms(limits.header)),
                Expiry::Header,
            )),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Idle,
    Header,
    Stalled,
}

/// Marks a request as in progress for as long as it lives: in the handler,
/// then (moved into its response's [`TrackedBody`] body) while the response goes
/// out. Dropped with the request abandoned, it starts a new idle phase at
/// once; dropped with the body handed over, once hyper has written it out.
struct InService(Arc<ConnState>);

impl InService {
    fn enter(state: &Arc<ConnState>) -> InService {
        state.set_phase(Phase::Handling);
        state.head_since.store(0, Ordering::Release);
        state.changed.notify_one();
        InService(state.clone())
    }

    /// The handler has answered: the response starts going out.
    fn responding(&self) {
        let state = &self.0;
        state.bytes_sent();
        state.set_phase(Phase::Sending);
        state.changed.notify_one();
    }
}

impl Drop for InService {
    fn drop(&mut self) {
        let state = &self.0;
        if state.phase() == Phase::Sending {
            // hyper took the whole body (or dropped it): idle once written out.
            state.set_phase(Phase::Flushing);
        } else {
            state.become_idle();
        }
    }
}

/// A response body that keeps its connection busy until hyper has taken all
/// of it, so that a client still reading a long response is never taken for
/// an idle one (and evicted for a newcomer).
struct TrackedBody {
    body: axum::body::Body,
    guard: Option<InService>,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, axum::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// Open connections, for the cap and for eviction.
#[derive(Default)]
struct Registry {
    /// Connections that count against the cap (not yet told to close).
    map: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Client sockets still open, including evicted ones not yet closed.
    sockets: AtomicUsize,
    /// Signalled whenever a socket closes.
    closed: Notify,
}

impl Registry {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnState>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn len(&self) -> usize {
        self.map().len()
    }

    fn sockets(&self) -> usize {
        self.sockets.load(Ordering::Acquire)
    }

    fn register(self: &Arc<Self>, state: Arc<ConnState>) -> Registration {
        let id = state.id;
        self.sockets.fetch_add(1, Ordering::AcqRel);
        self.map().insert(id, state);
        Registration {
            id,
            registry: self.clone(),
        }
    }

    /// Tells the connection idle the longest (no request in progress) to
    /// close, and stops counting it against the cap. False when every
    /// connection is busy.
    fn evict_longest_idle(&self) -> bool {
        let mut map = self.map();
        let victim = map
            .values()
            .filter(|c| !c.busy())
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .map(|c| c.id);
        match victim.and_then(|id| map.remove(&id)) {
            Some(state) => {
                state.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in the registry and its open socket, given back
/// when its task ends (however it ends, including being aborted at the
/// shutdown deadline), after the socket is closed.
struct Registration {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.map().remove(&self.id);
        self.registry.sockets.fetch_sub(1, Ordering::AcqRel);
        self.registry.closed.notify_one();
    }
}

/// The client socket as hyper sees it, noting arrivals and blocked writes
/// in the connection's [`ConnState`].
struct Tracked {
    stream: TcpStream,
    state: Arc<ConnState>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.stream).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.bytes_arrived();
        }
        polled
    }
}

impl Tracked {
    fn note_write(&self, polled: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.state.bytes_sent();
        }
        self.note_blocked(polled)
    }

    fn note_blocked<T>(&self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.state
            .write_blocked
            .store(polled.is_pending(), Ordering::Release);
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.note_write(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.note_write(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.stream).poll_flush(cx);
        // hyper flushes its socket only once its own buffer is written out.
        if matches!(polled, Poll::Ready(Ok(()))) {
            this.state.flushed();
        }
        this.note_blocked(polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// What woke a connection's task.
enum Event {
    Finished,
    Timer,
    Changed,
    Evicted,
    Stopping,
}

/// How a connection's task ends.
enum Close {
    /// hyper is done (client closed, `Connection: close`, protocol error).
    Done,
    /// Idle too long, evicted, or idle at shutdown: close without a word.
    Silently,
    /// The request head did not arrive in time: answer 408.
    HeaderTimeout,
}

/// Serves one connection and enforces its timeouts.
async fn run_connection(
    stream: TcpStream,
    state: Arc<ConnState>,
    registration: Registration,
    router: Router,
    http: Arc<http1::Builder>,
    limits: Arc<Limits>,
    mut stop: watch::Receiver<bool>,
) {
    let io = TokioIo::new(Tracked {
        stream,
        state: state.clone(),
    });
    let in_service = state.clone();
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let guard = InService::enter(&in_service);
        let router = router.clone();
        async move {
            let response = router.oneshot(req).await?;
            guard.responding();
            Ok::<_, std::convert::Infallible>(response.map(|body| TrackedBody {
                body,
                guard: Some(guard),
            }))
        }
    });
    let mut conn = http.serve_connection(io, service);
    // Set once the connection was asked to finish its request and close.
    let mut closing = false;
    let close = loop {
        let deadline = state.deadline(&limits);
        let event = tokio::select! {
            _ = &mut conn => Event::Finished,
            () = sleep_until(deadline.map(|(ms, _)| limits.at(ms))) => Event::Timer,
            () = state.changed.notified() => Event::Changed,
            () = state.evict.notified(), if !closing => Event::Evicted,
            _ = stop.changed(), if !closing => Event::Stopping,
        };
        match event {
            Event::Finished => break Close::Done,
            Event::Changed => {}
            Event::Timer => match state.deadline(&limits) {
                Some((ms, expiry)) if ms <= limits.now_ms() => {
                    break match expiry {
                        Expiry::Idle | Expiry::Stalled => Close::Silently,
                        Expiry::Header => Close::HeaderTimeout,
                    };
                }
                _ => {}
            },
            Event::Evicted | Event::Stopping => {
                if !state.busy() {
                    break Close::Silently;
                }
                // A request is in progress: let it finish, then close.
                Pin::new(&mut conn).graceful_shutdown();
                closing = true;
            }
        }
    };
    let stream = conn.into_parts().io.into_inner().stream;
    // Still registered while the last bytes go out: a connection that is
    // only lingering is one a newcomer may evict, whatever it was doing.
    state.set_phase(Phase::Idle);
    tokio::select! {
        () = finish(stream, close, &state, &limits) => {}
        () = state.evict.notified() => {}
    }
    drop(registration);
}

/// Closes a connection the way `close` says.
async fn finish(mut stream: TcpStream, close: Close, state: &ConnState, limits: &Limits) {
    match close {
        Close::Silently => {}
        Close::Done => linger(stream).await,
        Close::HeaderTimeout => {
            if state.write_blocked.load(Ordering::Acquire) {
                // The client is not even reading its last response.
                return;
            }
            let error = ApiError::RequestTimeout {
                part: "headers",
                timeout: limits.header,
            };
            let (response, id) = canned(&error, "");
            // One INFO line per response, like the access log of routed requests.
            tracing::info!(request_id = %id, status = 408, "request head timed out");
            let _ = tokio::time::timeout(LINGER, stream.write_all(&response)).await;
            linger(stream).await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Closes our side, then reads and discards what the client still sends
/// until it closes too (or [`LINGER`] passes), so that our last response is
/// not destroyed by a reset.
async fn linger(mut stream: TcpStream) {
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, async {
        // On the heap, and only while lingering: a 4 KiB array here would
        // make every connection's task 4 KiB larger for its whole life.
        let mut sink = vec![0u8; 4096];
        let mut total = 0;
        while total < LINGER_BYTES {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
}

/// Answers a newcomer that found every connection busy with a 503 problem
/// and closes it. At most [`MAX_REFUSALS_IN_FLIGHT`] are answered at once.
fn refuse(stream: TcpStream, refusals: &Arc<Semaphore>) {
    let Ok(permit) = refusals.clone().try_acquire_owned() else {
        return;
    };
    tokio::spawn(async move {
        let mut stream = stream;
        let (response, id) = canned(&ApiError::Busy, "retry-after: 1\r\n");
        tracing::info!(request_id = %id, status = 503, "every client connection is busy");
        if let Ok(Ok(())) = tokio::time::timeout(LINGER, stream.write_all(&response)).await {
            linger(stream).await;
        }
        drop(permit);
    });
}

/// A complete HTTP/1.1 problem response written by the connection layer
/// itself (no request reached the router), with a fresh request id.
fn canned(error: &ApiError, extra_headers: &str) -> (Vec<u8>, String) {
    let status = error.status();
    let body = error.problem().to_string();
    let id = uuid::Uuid::now_v7().to_string();
    let response = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/problem+json\r\ncontent-length: {}\r\nconnection: close\r\nx-request-id: {id}\r\n{extra_headers}\r\n{body}",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len(),
    );
    (response.into_bytes(), id)
}

/// Lets an event be logged at most once per interval, counting the rest.
struct Throttle {
    interval: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    fn new(interval: Duration) -> Throttle {
        Throttle {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(events suppressed since the last log)` when it is time to log.
    fn ready(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|last| now < last + self.interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            idle: Duration::from_secs(30),
            header: Duration::from_secs(10),
            epoch: Instant::now(),
        }
    }

    #[test]
    fn an_idle_connection_expires_at_the_idle_timeout_and_a_started_head_at_the_header_timeout() {
        let limits = limits();
        let state = ConnState::new(1, &limits);
        state.idle_since.store(1_000, Ordering::Release);
        assert_eq!(state.deadline(&limits), Some((31_000, Expiry::Idle)));
        state.head_since.store(5_000 + 1, Ordering::Release);
        assert_eq!(state.deadline(&limits), Some((15_000, Expiry::Header)));
        state.set_phase(Phase::Handling);
        assert_eq!(state.deadline(&limits), None);
    }

    #[test]
    fn a_response_keeps_its_connection_busy_until_hyper_has_written_it_out() {
        let limits = limits();
        let state = Arc::new(ConnState::new(1, &limits));
        let guard = InService::enter(&state);
        assert_eq!(state.deadline(&limits), None, "in the handler");
        guard.responding();
        assert_eq!(state.phase(), Phase::Sending);
        // A client that takes no byte for the idle timeout has stopped reading.
        state.sent_at.store(2_000, Ordering::Release);
        assert_eq!(state.deadline(&limits), Some((32_000, Expiry::Stalled)));
        state.flushed();
        assert_eq!(state.phase(), Phase::Sending, "a flush between body frames");
        drop(guard);
        assert_eq!(state.phase(), Phase::Flushing);
        assert!(state.busy(), "hyper may still hold the body's last bytes");
        state.flushed();
        assert!(!state.busy());
        assert_eq!(state.deadline(&limits).map(|(_, e)| e), Some(Expiry::Idle));
    }

    #[test]
    fn a_request_abandoned_in_its_handler_leaves_the_connection_idle_at_once() {
        let limits = limits();
        let state = Arc::new(ConnState::new(1, &limits));
        drop(InService::enter(&state));
        assert!(!state.busy());
    }

    #[test]
    fn bytes_start_a_head_only_outside_a_request() {
        let limits = limits();
        let state = Arc::new(ConnState::new(1, &limits));
        let guard = InService::enter(&state);
        state.bytes_arrived();
        assert_eq!(state.head_since.load(Ordering::Acquire), 0, "body bytes");
        drop(guard);
        assert!(!state.busy());
        state.bytes_arrived();
        assert_ne!(state.head_since.load(Ordering::Acquire), 0, "next head");
    }

    #[test]
    fn eviction_picks_the_longest_idle_connection_and_never_a_busy_one() {
        let limits = limits();
        let registry: Arc<Registry> = Arc::default();
        let mut held = Vec::new();
        for (id, idle_since, busy) in [(1, 50, true), (2, 100, false), (3, 70, false)] {
            let state = Arc::new(ConnState::new(id, &limits));
            state.idle_since.store(idle_since, Ordering::Release);
            if busy {
                state.set_phase(Phase::Sending);
            }
            held.push(registry.register(state));
        }
        assert!(registry.evict_longest_idle());
        assert!(!registry.map().contains_key(&3));
        assert!(registry.evict_longest_idle());
        assert!(!registry.evict_longest_idle(), "only the busy one is left");
        assert_eq!(registry.len(), 1);
        // Evicted connections count as open sockets until their task ends.
        assert_eq!(registry.sockets(), 3);
        held.pop();
        assert_eq!(registry.sockets(), 2);
    }

    #[test]
    fn a_canned_problem_is_a_complete_response_with_its_length_and_id() {
        let (bytes, id) = canned(&ApiError::Busy, "retry-after: 1\r\n");
        let text = String::from_utf8(bytes).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{head}"
        );
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(head.contains(&format!("x-request-id: {id}")));
        assert!(head.ends_with("retry-after: 1"), "{head}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["code"], "busy");
    }

    #[test]
    fn a_throttle_lets_one_event_through_per_interval_and_counts_the_rest() {
        let mut throttle = Throttle::new(Duration::from_secs(60));
        assert_eq!(throttle.ready(), Some(0));
        assert_eq!(throttle.ready(), None);
        assert_eq!(throttle.ready(), None);
        throttle.last = Some(Instant::now() - Duration::from_secs(61));
        assert_eq!(throttle.ready(), Some(2));
    }
}
