//! Server-Sent Events: the per-instance hub that knows which queue lines
//! have open streams and wakes them when a line changes, the watcher task
//! that learns of changes made through other instances, and the one stream
//! shape every event route uses. What a stream sends (an entry, a line) is
//! the queue pipeline's business ([`crate::queues`]); this module only
//! moves it.
//!
//! **How a change reaches a stream.** Every transition of a line increments
//! the line's version in its own transaction. The instance that made it
//! wakes its own streams at once and, where the database pushes, has it
//! announced after the commit (PostgreSQL `NOTIFY`, sent by one task per
//! instance that coalesces a busy line's changes). Every instance runs one watcher: on PostgreSQL it
//! `LISTEN`s (and polls every [`PUSHED_POLL`] as a safety net for a lost
//! notification); on SQLite and MySQL it reads the versions of the lines of
//! the queues that have open streams every [`POLL`] — one query per queue
//! per instance, not per client. A woken stream reads what it shows again
//! and sends it only if it changed.
//!
//! **Bounds.** At most `max_streams` streams are open per instance; past it
//! a new one is refused with 503 `busy` and `Retry-After`, before any
//! database work. Each stream sends a heartbeat comment every
//! `stream_heartbeat` (below the idle timeout, so the connection is never
//! taken for a stalled one) and ends after [`MAX_AGE`]; browsers' EventSource
//! reconnects by itself with `Last-Event-ID`, and the stream then sends only
//! what changed since that id.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::AppState;
use crate::error::ApiError;
use crate::storage::queue::LineSignal;

/// How often an instance reads the line versions of watched queues when the
/// database cannot push changes.
pub const POLL: Duration = Duration::from_millis(250);
/// How often it reads them anyway when the database pushes (PostgreSQL).
pub const PUSHED_POLL: Duration = Duration::from_secs(2);
/// How long one stream stays open; the client then reconnects.
pub const MAX_AGE: Duration = Duration::from_secs(30 * 60);
/// The reconnection delay streams ask of clients.
const RETRY: Duration = Duration::from_secs(1);
/// Default most open streams per instance.
pub const DEFAULT_MAX_STREAMS: usize = 1000;
/// Default interval of heartbeat comments.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// One message of a stream: its event name, its id (what `Last-Event-ID`
/// sends back) and its JSON text; `last` ends the stream after it.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    pub event: &'static str,
    pub id: String,
    pub data: String,
    pub last: bool,
}

/// Reads what a stream shows now: `None` once it is gone (or no longer
/// visible to the caller).
pub(crate) type Read = Box<
    dyn FnMut() -> Pin<Box<dyn Future<Output = Result<Option<Snapshot>, ApiError>> + Send>> + Send,
>;

/// A line that changed (`None`: any line of the queue).
type Change = (String, Option<String>);

/// How long the announcer gathers changes before it sends them: the most
/// a change through one instance waits before the others hear of it.
pub const ANNOUNCE_WINDOW: Duration = Duration::from_millis(10);
/// Changes waiting to be announced to the other instances; past this many
/// the newest are dropped (the instances' polls catch them).
const ANNOUNCE_BACKLOG: usize = 4096;

/// The streams open on this instance, by line.
#[derive(Debug)]
pub struct Streams {
    /// Queue → partition key → the line's wake-up counter.
    lines: Mutex<HashMap<String, HashMap<String, watch::Sender<u64>>>>,
    permits: Arc<Semaphore>,
    /// Most streams at once; 0 turns streams off.
    capacity: usize,
    heartbeat: Duration,
    /// Set when the server shuts down: every stream ends.
    closing: watch::Sender<bool>,
    /// Changes for the announcer (see [`start_watcher`]), once it runs.
    announce: mpsc::Sender<Change>,
    announcing: std::sync::atomic::AtomicBool,
    announced: Mutex<Option<mpsc::Receiver<Change>>>,
}

impl Streams {
    /// A hub allowing `max` open streams, each with a heartbeat every `heartbeat`.
    pub fn new(max: usize, heartbeat: Duration) -> Streams {
        let (announce, announced) = mpsc::channel(ANNOUNCE_BACKLOG);
        Streams {
            lines: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(max)),
            capacity: max,
            heartbeat,
            closing: watch::channel(false).0,
            announce,
            announcing: std::sync::atomic::AtomicBool::new(false),
            announced: Mutex::new(Some(announced)),
        }
    }

    /// A transition committed on a line (`None`: on lines of the queue):
    /// wakes this instance's streams of it now, and has it announced to the
    /// other instances off the request's path, where the database pushes.
    pub(crate) fn changed(&self, queue: &str, key: Option<&str>) {
        self.wake(queue, key);
        if self.announcing.load(std::sync::atomic::Ordering::Relaxed) {
            let _ = self
                .announce
                .try_send((queue.to_owned(), key.map(str::to_owned)));
        }
    }

    /// Ends every open stream and refuses new ones: the server is shutting
    /// down, and a stream would otherwise hold it until its deadline.
    pub fn close(&self) {
        self.closing.send_replace(true);
        self.permits.close();
    }

    /// A place for one more stream, or 503 `busy`; 501 where streams are
    /// off (no places at all: AWS Lambda).
    pub(crate) fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        if self.capacity == 0 {
            return Err(ApiError::StreamsUnavailable);
        }
        self.permits.clone().try_acquire_owned().map_err(|_| {
            tracing::warn!(
                "an event stream was refused: every stream place is taken (--max-streams)"
            );
            ApiError::Busy
        })
    }

    /// Wakes on every change of a line from now on.
    pub(crate) fn watch(&self, queue: &str, key: &str) -> watch::Receiver<u64> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .entry(queue.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes the streams of a line (`None`: of every line of the queue).
    pub(crate) fn wake(&self, queue: &str, key: Option<&str>) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        let Some(lines) = lines.get(queue) else {
            return;
        };
        match key {
            Some(key) => {
                if let Some(line) = lines.get(key) {
                    line.send_modify(|n| *n += 1);
                }
            }
            None => lines.values().for_each(|l| l.send_modify(|n| *n += 1)),
        }
    }

    fn wake_all(&self) {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for line in lines.values().flat_map(HashMap::values) {
            line.send_modify(|n| *n += 1);
        }
    }

    /// The queues with open streams (forgetting lines nobody watches).
    fn watched(&self) -> Vec<String> {
        let mut lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        for queue in lines.values_mut() {
            queue.retain(|_, line| line.receiver_count() > 0);
        }
        lines.retain(|_, queue| !queue.is_empty());
        lines.keys().cloned().collect()
    }

    /// The event stream of one line's watcher: `first` now (unless the
    /// client already has it: its `Last-Event-ID`), then whatever `read`
    /// returns after each change that differs from what was last sent,
    /// until a snapshot marked `last`. (A client reconnecting with the id
    /// of a `last` snapshot is answered 204 by the caller instead: per the
    /// SSE specification, that stops EventSource from reconnecting.)
    pub(crate) fn respond(
        &self,
        permit: OwnedSemaphorePermit,
        woken: watch::Receiver<u64>,
        first: Snapshot,
        last_event_id: Option<String>,
        read: Read,
    ) -> Response {
        struct State {
            woken: watch::Receiver<u64>,
            closing: watch::Receiver<bool>,
            read: Read,
            pending: Option<Snapshot>,
            sent: Option<String>,
            ended: bool,
            first: bool,
            until: tokio::time::Instant,
            _permit: OwnedSemaphorePermit,
        }
        let already_seen = last_event_id.as_deref() == Some(first.id.as_str());
        let state = State {
            woken,
            closing: self.closing.subscribe(),
            read,
            sent: Some(first.id.clone()),
            ended: false,
            first: true,
            pending: (!already_seen).then_some(first),
            until: tokio::time::Instant::now() + MAX_AGE,
            _permit: permit,
        };
        let events = futures_util::stream::unfold(state, |mut s| async move {
            if s.ended {
                return None;
            }
            loop {
                let snapshot = match s.pending.take() {
                    Some(snapshot) => snapshot,
                    None => {
                        tokio::select! {
                            changed = s.woken.changed() => changed.ok()?,
                            () = tokio::time::sleep_until(s.until) => return None,
                            _ = s.closing.wait_for(|closing| *closing) => return None,
                        }
                        match (s.read)().await {
                            Ok(Some(snapshot)) if s.sent.as_ref() == Some(&snapshot.id) => continue,
                            Ok(Some(snapshot)) => snapshot,
                            Ok(None) => Snapshot {
                                event: "gone",
                                id: String::new(),
                                data: "{}".to_owned(),
                                last: true,
                            },
                            Err(e) => {
                                // The next change (or poll) tries again; an
                                // outage is reported once by the requests and
                                // the watcher, not by every stream.
                                tracing::debug!(error = %e, "an event stream could not read its state");
                                continue;
                            }
                        }
                    }
                };
                s.ended = snapshot.last;
                s.sent = Some(snapshot.id.clone());
                let mut event = Event::default()
                    .event(snapshot.event)
                    .id(snapshot.id)
                    .data(snapshot.data);
                if std::mem::take(&mut s.first) {
                    event = event.retry(RETRY);
                }
                return Some((Ok::<_, Infallible>(event), s));
            }
        });
        let mut response = Sse::new(events)
            .keep_alive(KeepAlive::new().interval(self.heartbeat).text("heartbeat"))
            .into_response();
        no_buffering(&mut response);
        response
    }
}

/// `HEAD` of an event route: the stream's headers, no stream.
pub(crate) fn head() -> Response {
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    no_buffering(&mut response);
    response
}

/// The media type of every event route.
pub(crate) const EVENT_STREAM: &str = "text/event-stream";

/// Proxies (nginx) must pass events on as they come.
fn no_buffering(response: &mut Response) {
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
}

/// Starts this instance's watcher of changes made through other instances
/// (see the module header). Nothing to do when the schema has no queue.
pub fn start_watcher(state: &AppState) {
    if state.model.queues.is_empty() {
        return;
    }
    let state = state.clone();
    tokio::spawn(async move {
        let store = state.storage.queues();
        let mut pushed = store.subscribe().await;
        let announced = state
            .streams
            .announced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (Some(announced), true) = (announced, pushed.is_some()) {
            state
                .streams
                .announcing
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(announce(state.clone(), announced));
        }
        let every = if pushed.is_some() { PUSHED_POLL } else { POLL };
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut seen: HashMap<(String, String), i64> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for name in state.streams.watched() {
                        let Some(queue) = state.model.queues.get(&name) else {
                            continue;
                        };
                        match store.line_versions(queue).await {
                            Ok(lines) => {
                                for (key, version) in lines {
                                    if seen.insert((name.clone(), key.clone()), version) != Some(version) {
                                        state.streams.wake(&name, Some(&key));
                                    }
                                }
                            }
                            Err(e) => tracing::warn!(queue = %name, error = %e, "reading the lines' versions failed; retrying"),
                        }
                    }
                }
                signal = next_signal(&mut pushed) => match signal {
                    Some(LineSignal::Changed { queue, key }) => state.streams.wake(&queue, key.as_deref()),
                    Some(LineSignal::Lost) => state.streams.wake_all(),
                    None => pushed = None,
                },
            }
        }
    });
}

/// Announces this instance's changes: what changed in [`ANNOUNCE_WINDOW`]
/// after a first change, each line once, in one statement — so a busy line
/// costs a few notifications a second, not one per transition, and the
/// announcements never wait on (or for) a request.
async fn announce(state: AppState, mut changes: mpsc::Receiver<Change>) {
    let store = state.storage.queues();
    let mut batch = std::collections::BTreeSet::new();
    while let Some(first) = changes.recv().await {
        batch.insert(first);
        tokio::time::sleep(ANNOUNCE_WINDOW).await;
        while let Ok(more) = changes.try_recv() {
            batch.insert(more);
        }
        let payloads = std::mem::take(&mut batch)
            .into_iter()
            .map(|(queue, key)| LineSignal::payload(&queue, key.as_deref()))
            .collect();
        store.announce(payloads).await;
    }
}

async fn next_signal(pushed: &mut Option<mpsc::Receiver<LineSignal>>) -> Option<LineSignal> {
    match pushed {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wake_reaches_the_watchers_of_that_line_only_and_unwatched_lines_are_forgotten() {
        let streams = Streams::new(2, DEFAULT_HEARTBEAT);
        let mut a = streams.watch("q", "[1]");
        let b = streams.watch("q", "[2]");
        streams.wake("q", Some("[1]"));
        assert!(a.has_changed().unwrap());
        assert!(!b.has_changed().unwrap());
        a.mark_unchanged();
        streams.wake("q", None);
        assert!(a.has_changed().unwrap() && b.has_changed().unwrap());
        drop(b);
        assert_eq!(streams.watched(), vec!["q".to_owned()]);
        drop(a);
        assert!(streams.watched().is_empty());
    }

    #[test]
    fn past_the_bound_a_new_stream_is_refused_as_busy() {
        let streams = Streams::new(1, DEFAULT_HEARTBEAT);
        let held = streams.admit().expect("one place");
        assert!(matches!(streams.admit(), Err(ApiError::Busy)));
        drop(held);
        assert!(streams.admit().is_ok());
    }

    #[test]
    fn a_line_signal_names_its_queue_and_line_or_the_whole_queue() {
        let line = LineSignal::payload("advising", Some("[3,true]"));
        assert_eq!(
            LineSignal::parse(&line),
            LineSignal::Changed {
                queue: "advising".into(),
                key: Some("[3,true]".into())
            }
        );
        assert_eq!(
            LineSignal::parse(&LineSignal::payload("advising", None)),
            LineSignal::Changed {
                queue: "advising".into(),
                key: None
            }
        );
    }
}
