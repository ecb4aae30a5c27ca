//! Watching a store through its change log.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::{Batch, Event, Revision, Store, StoreError};

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
                    for batch in batches(events) {
                        after = batch.revision;
                        if tx.send(Ok(batch)).await.is_err() {
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

/// `events` (in revision order) as one batch per revision. A revision's events are moved as a
/// block: one large revision is not held twice while it is split.
fn batches(mut events: Vec<Event>) -> Vec<Batch> {
    let mut out = Vec::new();
    while let Some(last) = events.last() {
        let revision = last.revision;
        let start = events.partition_point(|e| e.revision < revision);
        let batch = if start == 0 {
            std::mem::take(&mut events)
        } else {
            events.split_off(start)
        };
        out.push(Batch {
            revision,
            events: batch,
        });
    }
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(revision: Revision, key: &str) -> Event {
        Event {
            revision,
            key: key.to_owned(),
            value: Some(key.as_bytes().to_vec()),
        }
    }

    #[test]
    fn events_are_grouped_into_one_batch_per_revision_in_order() {
        let events = vec![
            event(3, "a"),
            event(3, "b"),
            event(4, "c"),
            event(7, "d"),
            event(7, "e"),
            event(7, "f"),
        ];
        let grouped: Vec<(Revision, Vec<String>)> = batches(events)
            .into_iter()
            .map(|b| (b.revision, b.events.into_iter().map(|e| e.key).collect()))
            .collect();
        assert_eq!(
            grouped,
            vec![
                (3, vec!["a".to_owned(), "b".to_owned()]),
                (4, vec!["c".to_owned()]),
                (7, vec!["d".to_owned(), "e".to_owned(), "f".to_owned()]),
            ]
        );
        assert!(batches(Vec::new()).is_empty());
    }
}
