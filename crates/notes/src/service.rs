//! notes' route table: three methods, each protected by its own right, built with the kit.

use crate::api::{Get, GetResult, List, ListResult, Put, PutResult};
use crate::store::{Store, Written};
use crate::through_fs::ThroughFs;
use crate::NotesError;
use serde_json::json;
use std::sync::Arc;
use strata_service::{Gate, Service};

/// What notes' handlers share: where notes are written and how they are read back.
pub struct Notes {
    store: Arc<Store>,
    fs: ThroughFs,
}

impl Notes {
    /// Notes written by `store` and read back through `fs`.
    pub fn new(store: Store, fs: ThroughFs) -> Notes {
        Notes {
            store: Arc::new(store),
            fs,
        }
    }
}

/// notes' methods: `notes.put` (right `notes.put`) writes into the data directory,
/// `notes.get` and `notes.list` (rights `notes.get`, `notes.list`) read through fs. The
/// kit checks each token and audits every denial before a handler here runs.
pub fn service(gate: Arc<Gate>, notes: Arc<Notes>) -> Service<Notes> {
    Service::new(gate, env!("CARGO_PKG_VERSION"), notes)
        .method::<Put, NotesError, _, _>(|notes, req, p| async move {
            let store = Arc::clone(&notes.store);
            let (name, text) = (p.name.clone(), p.text);
            let bytes = text.as_str().len() as u64;
            let caller = req.claims.sub.clone();
            let written = tokio::task::spawn_blocking(move || store.put(&caller, &name, &text))
                .await
                .map_err(|_| NotesError::Write)??;
            tracing::info!(note = %p.name, cap_id = %req.claims.jti, ?written, "note written");
            let status = match written {
                Written::Created => "created",
                Written::Replaced => "replaced",
            };
            Ok(PutResult {
                name: p.name,
                status: status.to_owned(),
                bytes,
            })
        })
        .method::<Get, NotesError, _, _>(|notes, _req, p| async move {
            let text = notes.fs.get(&p.name).await?;
            Ok(GetResult { name: p.name, text })
        })
        .method::<List, NotesError, _, _>(|notes, _req, _p| async move {
            let names = notes.fs.list(notes.store.max_notes()).await?;
            Ok(ListResult { names })
        })
        .health_facts(|notes| {
            let mut m = serde_json::Map::new();
            m.insert("max_notes".into(), json!(notes.store.max_notes()));
            m.insert(
                "max_notes_per_caller".into(),
                json!(notes.store.max_per_caller()),
            );
            m
        })
}
