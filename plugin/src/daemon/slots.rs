//! Import slots: at most `concurrency` imports at once, handed out in queue order — archives
//! matching an earlier `priority` pattern first, then by their turn (oldest first at startup) —
//! so `pause` and the CNI are imported before a 30 GB bundle queued beside them.
//!
//! An archive takes its place in the queue when it is known to need a slot (at startup, in scan
//! order; while running, when the watcher hands it over), before its task gets to ask; a slot
//! is never given to a later place while an earlier one is still on its way.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// Where a waiter stands: its priority class (lower first), then its turn.
pub type Place = (usize, u64);

struct State {
    free: usize,
    /// Places in the queue; `None` until their task asks.
    queue: BTreeMap<Place, Option<oneshot::Sender<()>>>,
    closed: bool,
}

impl State {
    /// Hands free slots to the first places, as long as their tasks are asking.
    fn grant(&mut self) {
        while self.free > 0 {
            let Some(first) = self.queue.first_entry() else {
                return;
            };
            if first.get().is_none() {
                return; // its task is on its way: nobody overtakes it
            }
            let tx = first.remove().expect("checked");
            if tx.send(()).is_ok() {
                self.free -= 1;
            }
        }
    }
}

/// The slots.
#[derive(Clone)]
pub struct Slots {
    state: Arc<Mutex<State>>,
}

/// A held slot; dropping it hands the slot on.
pub struct Slot {
    state: Arc<Mutex<State>>,
}

impl Slots {
    /// `n` slots.
    pub fn new(n: usize) -> Slots {
        Slots {
            state: Arc::new(Mutex::new(State {
                free: n,
                queue: BTreeMap::new(),
                closed: false,
            })),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Takes `place` in the queue, ahead of asking for the slot.
    pub fn register(&self, place: Place) {
        self.lock().queue.entry(place).or_insert(None);
    }

    /// Leaves the queue (the archive needs no slot after all); no-op once it asked.
    pub fn unregister(&self, place: Place) {
        let mut s = self.lock();
        if matches!(s.queue.get(&place), Some(None)) {
            s.queue.remove(&place);
            s.grant();
        }
    }

    /// Waits for a slot at `place`; `None` once the slots are closed (shutdown).
    pub async fn acquire(&self, place: Place) -> Option<Slot> {
        let rx = {
            let mut s = self.lock();
            if s.closed {
                return None;
            }
            let (tx, rx) = oneshot::channel();
            s.queue.insert(place, Some(tx));
            s.grant();
            rx
        };
        // A waiter that goes away (its task aborted) never receives; `grant` skips it.
        rx.await.ok().map(|()| Slot {
            state: self.state.clone(),
        })
    }

    /// Refuses every waiter from now on (they get `None`).
    pub fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.queue.clear();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut s = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        s.free += 1;
        s.grant();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_go_by_priority_then_turn() {
        let slots = Slots::new(1);
        let first = slots.acquire((5, 0)).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Queued: two plain archives, then a priority one.
        for place in [(1, 1), (1, 2), (0, 3)] {
            let (slots, order) = (slots.clone(), order.clone());
            tasks.push(tokio::spawn(async move {
                let _slot = slots.acquire(place).await.unwrap();
                order.lock().unwrap().push(place);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(first);
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), [(0, 3), (1, 1), (1, 2)]);
        // All returned: the next acquire is immediate.
        let _again = tokio::time::timeout(Duration::from_secs(1), slots.acquire((9, 9)))
            .await
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_registered_place_is_not_overtaken_until_it_leaves() {
        let slots = Slots::new(1);
        slots.register((0, 1));
        // A later place asks first: it waits for the earlier one's task.
        let later = {
            let s = slots.clone();
            tokio::spawn(async move { s.acquire((1, 2)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !later.is_finished(),
            "the later place overtook a registered one"
        );
        // The earlier one needs no slot after all: the later one gets it.
        slots.unregister((0, 1));
        tokio::time::timeout(Duration::from_secs(1), later)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn a_waiter_that_left_does_not_keep_the_slot_and_close_refuses() {
        let slots = Slots::new(1);
        let held = slots.acquire((0, 0)).await.unwrap();
        let gone = {
            let s = slots.clone();
            tokio::spawn(async move { s.acquire((0, 1)).await.map(|_| ()) })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        gone.abort();
        let _ = gone.await;
        drop(held);
        assert!(slots.acquire((0, 2)).await.is_some());
        slots.close();
        assert!(slots.acquire((0, 3)).await.is_none());
    }
}
