//! `identity.issued` (admin): one page of the capabilities this node issued or delegated
//! and has not seen expire, with their lineage, read from the issuance records
//! ([`Store::issued_page`](crate::store::Store::issued_page)). What the web console's
//! capability tree is drawn from.

use crate::store::{IssuedEntry, MAX_ISSUED_SCAN};
use crate::{Identity, IdentityError};
use std::sync::Arc;
use strata_ipc::PeerCred;
use strata_proto::methods::identity::{IssuedCap, IssuedParams, IssuedResult, DEFAULT_ISSUED_PAGE};

/// The most bytes of caps one answer carries (their JSON), well inside a frame: a cap is
/// at most a few KiB (its token, which holds all of it, is at most 8 KiB), so 1000 of
/// them could exceed the 1 MiB frame. A page cut short by this has a `next`.
pub const MAX_ISSUED_ANSWER_BYTES: usize = 512 << 10;

impl Identity {
    /// `identity.issued`: admins only (anyone else is refused and audited).
    pub async fn issued(
        &self,
        peer: &PeerCred,
        p: IssuedParams,
    ) -> Result<IssuedResult, IdentityError> {
        if !self.is_admin(peer) {
            return Err(self.deny(
                peer,
                "identity.issued",
                "only admins may list the issued capabilities".into(),
                None,
            ));
        }
        let limit = p.limit.unwrap_or(DEFAULT_ISSUED_PAGE) as usize;
        let now = self.now().unix_seconds();
        let store = Arc::clone(&self.store);
        // Up to MAX_ISSUED_SCAN records read from disk: not on the async workers.
        let page = tokio::task::spawn_blocking(move || {
            store.issued_page(p.after.as_deref(), limit, now, MAX_ISSUED_SCAN)
        })
        .await
        .map_err(|e| IdentityError::Internal(format!("the store read failed: {e}")))??;
        Ok(answer(page.entries, page.next, MAX_ISSUED_ANSWER_BYTES))
    }
}

/// The answer for `entries` (then `next`), cut after the entry that brings its caps past
/// `budget` bytes of JSON (at least one is always kept); a cut answer's `next` is the last
/// cap it carries.
fn answer(entries: Vec<IssuedEntry>, next: Option<String>, budget: usize) -> IssuedResult {
    let total = entries.len();
    let mut caps = Vec::with_capacity(total);
    let mut bytes = 0usize;
    for e in entries {
        let cap = wire(e);
        bytes = bytes.saturating_add(json_len(&cap));
        caps.push(cap);
        if bytes >= budget && caps.len() < total {
            let next = caps.last().map(|c| c.cap_id.clone());
            return IssuedResult { caps, next };
        }
    }
    IssuedResult { caps, next }
}

fn wire(e: IssuedEntry) -> IssuedCap {
    let r = e.record;
    IssuedCap {
        cap_id: e.cap_id,
        parents: r.parents,
        expires: r.expires,
        issued_at: r.issued_at,
        service: r.service,
        rights: r.rights,
        path_prefix: r.path_prefix,
        rate_limit: r.rate_limit,
        subject: r.subject,
        revoked: e.revoked,
    }
}

/// The length of `cap`'s JSON, counted without building it.
fn json_len(cap: &IssuedCap) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail; were it to, count the cap as the whole budget.
    match serde_json::to_writer(&mut count, cap) {
        Ok(()) => count.0 + 1,
        Err(_) => MAX_ISSUED_ANSWER_BYTES,
    }
}

#[cfg(test)]
mod tests;
