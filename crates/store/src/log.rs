//! Watching a store through its change log.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{Batch, Revision, Store, StoreError};

/// A stream of change batches, one per revision, in order, without gaps.
pub struct Watch {
    rx: mpsc::Receiver<Result<Batch, StoreError>>,
}

impl Watch {
    /// The next revision's changes; `None` when the store is gone. After an error the watch ends.
    pub async fn next(&mut self) -> Option<Result<Batch, StoreError>> {
        self.rx.recv().await
    }

    /// The next batch if one is ready now.
    pub fn try_next(&mut self) -> Option<Result<Batch, StoreError>> {
        self.rx.try_recv().ok()
    }
}

/// A watch built from [`Store::changes_since`] and [`Store::revision_watch`].
pub fn follow_log<S: Store + ?Sized>(store: Arc<S>, mut after: Revision) -> Watch {
    let (tx, rx) = mpsc::channel(64);
    let mut revisions = store.revision_watch();
    tokio::spawn(async move {
        loop {
            // Mark the current revision seen before reading, so a commit racing with the read
            // still wakes `changed` below.
            revisions.borrow_and_update();
            match store.changes_since(after, 1024).await {
                Ok(events) if !events.is_empty() => {
                    let mut batch: Option<Batch> = None;
                    for event in events {
                        match &mut batch {
                            Some(b) if b.revision == event.revision => b.events.push(event),
                            _ => {
                                if let Some(done) = batch.take() {
                                    after = done.revision;
                                    if tx.send(Ok(done)).await.is_err() {
                                        return;
                                    }
                                }
                                batch = Some(Batch {
                                    revision: event.revision,
                                    events: vec![event],
                                });
                            }
                        }
                    }
                    if let Some(done) = batch {
                        after = done.revision;
                        if tx.send(Ok(done)).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(_) => {
                    tokio::select! {
                        changed = revisions.changed() => if changed.is_err() { return },
                        () = tx.closed() => return,
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e)).await;
                    return;
                }
            }
        }
    });
    Watch { rx }
}
