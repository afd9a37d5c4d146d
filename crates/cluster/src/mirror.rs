//! A watch-fed copy of one etcd key prefix.

use crate::Etcd;
use etcd_client::{EventType, WatchOptions};
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

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
}

impl<T> Clone for MirrorState<T> {
    fn clone(&self) -> Self {
        MirrorState {
            entries: Arc::clone(&self.entries),
            loaded: self.loaded,
            connected: self.connected,
            generation: self.generation,
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
    task: tokio::task::JoinHandle<()>,
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
        });
        let task = tokio::spawn(run(etcd, prefix, tx, Arc::new(handler)));
        Mirror { state: rx, task }
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
    tx: watch::Sender<MirrorState<T>>,
    handler: Handler<T>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let error = follow(&etcd, &prefix, &tx, &handler, &mut backoff).await;
        let was_connected = tx.borrow().connected;
        tx.send_modify(|s| {
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
    tx: &watch::Sender<MirrorState<T>>,
    handler: &Handler<T>,
    backoff: &mut Duration,
) -> String {
    let (revision, raw) = match etcd.get_prefix(prefix).await {
        Ok(r) => r,
        Err(e) => return e.to_string(),
    };
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let (mut stream, endpoint) = match etcd.watch(prefix, options).await {
        Ok(s) => s,
        Err(e) => return e.to_string(),
    };
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
    *backoff = Duration::from_millis(50);
    tracing::debug!(%prefix, revision, "etcd mirror loaded; watching");
    loop {
        let response = match stream.message().await {
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
            continue;
        }
        let mut applied: Vec<(String, Option<T>)> = Vec::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let Some(name) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else {
                continue;
            };
            // A value that no longer parses stops counting, like a deleted key: a
            // corrupted entry must not keep its old meaning.
            let value = match event.event_type() {
                EventType::Put => parse::<T>(prefix, name, kv.value()),
                EventType::Delete => None,
            };
            applied.push((name.to_owned(), value));
        }
        // In place: the map is copied only while a reader still holds the previous
        // snapshot, not once per event (the revocation prefix can be large).
        tx.send_modify(|s| {
            let entries = Arc::make_mut(&mut s.entries);
            for (name, value) in &applied {
                match value {
                    Some(v) => entries.insert(name.clone(), v.clone()),
                    None => entries.remove(name),
                };
            }
            s.generation += 1;
        });
        for (name, value) in &applied {
            match value {
                Some(v) => handler(MirrorEvent::Put(name, v)),
                None => handler(MirrorEvent::Deleted(name)),
            }
        }
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
