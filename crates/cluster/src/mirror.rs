//! A watch-fed copy of one etcd key prefix.

use crate::Etcd;
use etcd_client::{EventType, WatchOptions};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};

/// What a mirror holds right now.
#[derive(Debug)]
pub struct MirrorState<T> {
    /// Key (after the mirrored prefix) → value. Values that do not parse are left out
    /// (and logged).
    pub entries: Arc<BTreeMap<String, T>>,
    /// The whole prefix has been read at least once.
    pub loaded: bool,
    /// The watch is established and current.
    pub connected: bool,
    /// Bumped on every change, reload or connection change.
    pub generation: u64,
    /// The etcd revision this copy is known current at: everything under the prefix up
    /// to it has been applied (and handed to the event handler). Set by a load (its
    /// snapshot's revision), an event (its revision) and a progress notification (its
    /// header revision: no event for the prefix is pending up to there). 0 before the
    /// first load and while the watch is down (a disconnected copy confirms nothing).
    pub revision: i64,
    /// Like `revision`, but advanced by loads and events only, never by a progress
    /// notification: every write under the prefix up to it has been applied. etcd 3.4
    /// (before 3.4.25) may send a progress notification ahead of events it covers, so a
    /// freshness check also requires this to reach the prefix's newest modification
    /// ([`crate::freshness`]).
    pub events_revision: i64,
}

impl<T> Clone for MirrorState<T> {
    fn clone(&self) -> Self {
        MirrorState {
            entries: Arc::clone(&self.entries),
            loaded: self.loaded,
            connected: self.connected,
            generation: self.generation,
            revision: self.revision,
            events_revision: self.events_revision,
        }
    }
}

/// One change, as the mirror applies it (given to the optional event handler).
#[derive(Debug)]
pub enum MirrorEvent<'a, T> {
    /// The prefix was read whole (at start and after every reconnect); `entries` is now
    /// everything there is.
    Loaded(&'a BTreeMap<String, T>),
    /// A key was written (the key below the prefix, and its new value).
    Put(&'a str, &'a T),
    /// A key was deleted.
    Deleted(&'a str),
    /// The watch broke; the mirror keeps its entries and reconnects.
    Disconnected(&'a str),
}

type Handler<T> = Arc<dyn Fn(MirrorEvent<'_, T>) + Send + Sync>;

/// A live copy of everything under one prefix. Reads are local; a background task keeps
/// the copy current and reloads it whole after every reconnect.
pub struct Mirror<T> {
    state: watch::Receiver<MirrorState<T>>,
    progress: Arc<Notify>,
    restart: Arc<Notify>,
    prefix: String,
    task: tokio::task::JoinHandle<()>,
    revisions: watch::Receiver<(i64, i64)>,
}

/// The mirror task's side: the state it publishes, its applied revisions (published
/// only after the handler saw what they cover) and the progress requests it is asked for.
struct Link<T> {
    tx: watch::Sender<MirrorState<T>>,
    revisions: watch::Sender<(i64, i64)>,
    progress: Arc<Notify>,
    restart: Arc<Notify>,
}

impl<T> Link<T> {
    /// Records that everything up to `revision` (and every write up to `events`) has been
    /// applied and handed to the handler.
    fn applied(&self, revision: i64, events: i64) {
        self.tx.send_if_modified(|s| {
            let changed = s.revision != revision || s.events_revision != events;
            s.revision = revision;
            s.events_revision = events;
            changed
        });
        self.revisions.send_if_modified(|r| {
            let changed = *r != (revision, events);
            *r = (revision, events);
            changed
        });
    }
}

/// What a freshness check needs of one mirror, whatever its value type: its prefix, its
/// applied revisions, and a way to ask its watch for a progress notification.
#[derive(Clone)]
pub struct MirrorProgress {
    /// The mirrored prefix (a full key).
    pub prefix: String,
    revisions: watch::Receiver<(i64, i64)>,
    progress: Arc<Notify>,
    restart: Arc<Notify>,
}

impl MirrorProgress {
    /// Tells the mirror's task to drop its watch and open a new one (on the next etcd
    /// member), reloading the prefix: its stream stayed behind etcd.
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    /// Asks the mirror's watch for a progress notification (the mirror's task sends the
    /// request on its stream; a no-op while the watch is down).
    pub fn request_progress(&self) {
        self.progress.notify_one();
    }

    /// `(revision, events_revision)` as in [`MirrorState`].
    pub fn revisions(&self) -> (i64, i64) {
        *self.revisions.borrow()
    }

    /// Waits until `revision >= at_least.0` and `events_revision >= at_least.1`.
    pub async fn wait_for(&self, at_least: (i64, i64)) {
        let mut rx = self.revisions.clone();
        let _ = rx
            .wait_for(|(r, e)| *r >= at_least.0 && *e >= at_least.1)
            .await;
    }
}

impl<T> Drop for Mirror<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<T: DeserializeOwned + Clone + Send + Sync + 'static> Mirror<T> {
    /// Starts mirroring `prefix` (a full key, ending in `/`).
    pub fn start(etcd: Etcd, prefix: String) -> Mirror<T> {
        Mirror::start_with(etcd, prefix, |_| {})
    }

    /// Starts mirroring `prefix`, calling `handler` for every change it applies (from the
    /// mirror's task, before readers see the change).
    pub fn start_with(
        etcd: Etcd,
        prefix: String,
        handler: impl Fn(MirrorEvent<'_, T>) + Send + Sync + 'static,
    ) -> Mirror<T> {
        let (tx, rx) = watch::channel(MirrorState {
            entries: Arc::new(BTreeMap::new()),
            loaded: false,
            connected: false,
            generation: 0,
            revision: 0,
            events_revision: 0,
        });
        let progress = Arc::new(Notify::new());
        let restart = Arc::new(Notify::new());
        let (revisions_tx, revisions_rx) = watch::channel((0, 0));
        let link = Link {
            tx,
            revisions: revisions_tx,
            progress: Arc::clone(&progress),
            restart: Arc::clone(&restart),
        };
        let task = tokio::spawn(run(etcd, prefix.clone(), link, Arc::new(handler)));
        Mirror {
            state: rx,
            progress,
            restart,
            prefix,
            task,
            revisions: revisions_rx,
        }
    }

    /// A handle for freshness checks ([`crate::freshness`]).
    pub fn progress(&self) -> MirrorProgress {
        MirrorProgress {
            prefix: self.prefix.clone(),
            revisions: self.revisions.clone(),
            progress: Arc::clone(&self.progress),
            restart: Arc::clone(&self.restart),
        }
    }

    /// The current state.
    pub fn state(&self) -> MirrorState<T> {
        self.state.borrow().clone()
    }

    /// The current entries.
    pub fn entries(&self) -> Arc<BTreeMap<String, T>> {
        Arc::clone(&self.state.borrow().entries)
    }

    /// A receiver that wakes on every change.
    pub fn subscribe(&self) -> watch::Receiver<MirrorState<T>> {
        self.state.clone()
    }

    /// Waits until the prefix has been read once.
    pub async fn wait_loaded(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| s.loaded).await;
    }
}

async fn run<T: DeserializeOwned + Clone + Send + Sync + 'static>(
    etcd: Etcd,
    prefix: String,
    link: Link<T>,
    handler: Handler<T>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = follow(&etcd, &prefix, &link, &handler, &mut backoff).await;
        // Nothing is known current while the watch is down.
        link.applied(0, 0);
        let was_connected = link.tx.borrow().connected;
        link.tx.send_modify(|s| {
            s.connected = false;
            s.generation += 1;
        });
        handler(MirrorEvent::Disconnected(&error));
        if was_connected {
            tracing::warn!(%prefix, %error, "lost the etcd watch; keeping the last copy and reconnecting");
        } else {
            tracing::debug!(%prefix, %error, "etcd watch not established; retrying");
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(1));
    }
}

/// Loads the prefix whole, then applies the watch from the next revision until it breaks.
/// Returns why it stopped.
async fn follow<T: DeserializeOwned + Clone>(
    etcd: &Etcd,
    prefix: &str,
    link: &Link<T>,
    handler: &Handler<T>,
    backoff: &mut Duration,
) -> String {
    let tx = &link.tx;
    let (revision, raw) = match etcd.get_prefix(prefix).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let (stream, endpoint) = match etcd.watch(prefix, options).await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
    let (mut requests, mut stream) = stream.split();
    let entries: Arc<BTreeMap<String, T>> = Arc::new(
        raw.into_iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(prefix)?.to_owned();
                parse(prefix, &name, &value).map(|v| (name, v))
            })
            .collect(),
    );
    // Readers see the new state before the handler runs, so a handler (or a task it
    // wakes) that reads the mirror sees at least what it was told about.
    tx.send_modify(|s| {
        s.entries = Arc::clone(&entries);
        s.loaded = true;
        s.connected = true;
        s.generation += 1;
    });
    handler(MirrorEvent::Loaded(&entries));
    // The applied revisions only once the handler has seen what they cover.
    let (mut applied, mut events_applied) = (revision, revision);
    link.applied(applied, events_applied);
    *backoff = Duration::from_millis(50);
    tracing::debug!(%prefix, revision, "etcd mirror loaded; watching");
    loop {
        let message = tokio::select! {
            message = stream.message() => message,
            () = link.progress.notified() => {
                if let Err(e) = requests.request_progress().await {
                    etcd.broken(endpoint);
                    return format!("cannot ask the watch for progress: {e}");
                }
                continue;
            }
            () = link.restart.notified() => {
                etcd.broken(endpoint);
                return "the watch stayed behind etcd; reopening it".to_owned();
            }
        };
        let response = match message {
            Ok(Some(r)) => r,
            // The connection to that member broke (or went silent until the keep-alive
            // gave up on it): the next watch is opened on the next member first.
            Ok(None) => {
                etcd.broken(endpoint);
                return "the watch stream ended".to_owned();
            }
            Err(e) => {
                etcd.broken(endpoint);
                return e.to_string();
            }
        };
        if response.canceled() {
            return format!("the watch was cancelled: {}", response.cancel_reason());
        }
        if response.events().is_empty() {
            // A progress notification: no event for this watch is pending up to its
            // header revision. Not the creation answer: the watch may still be catching
            // up from its start revision then.
            if !response.created() {
                if let Some(header) = response.header() {
                    applied = applied.max(header.revision());
                    link.applied(applied, events_applied);
                }
            }
            continue;
        }
        let mut applied_events: Vec<(String, Option<T>)> = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            events_applied = events_applied.max(kv.mod_revision());
            let Some(name) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else {
                continue;
            };
            // A value that no longer parses stops counting, like a deleted key: a
            // corrupted entry must not keep its old meaning.
            let value = match event.event_type() {
                EventType::Put => parse::<T>(prefix, name, kv.value()),
                EventType::Delete => None,
            };
            applied_events.push((name.to_owned(), value));
        }
        // In place: the map is copied only while a reader still holds the previous
        // snapshot, not once per event (the revocation prefix can be large).
        tx.send_modify(|s| {
            let entries = Arc::make_mut(&mut s.entries);
            for (name, value) in &applied_events {
                match value {
                    Some(v) => entries.insert(name.clone(), v.clone()),
                    None => entries.remove(name),
                };
            }
            s.generation += 1;
        });
        for (name, value) in &applied_events {
            match value {
                Some(v) => handler(MirrorEvent::Put(name, v)),
                None => handler(MirrorEvent::Deleted(name)),
            }
        }
        applied = applied.max(events_applied);
        link.applied(applied, events_applied);
    }
}

fn parse<T: DeserializeOwned>(prefix: &str, name: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(key = %format!("{prefix}{name}"), error = %e, "ignoring an etcd value that does not parse");
            None
        }
    }
}
