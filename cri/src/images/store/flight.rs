//! Single flight per key: concurrent pulls that need the same blob or layer wait for the one
//! doing the work, then find it done (containerd's CRI does the same with its
//! `unpackDuplicationSuppressor`, a keyed mutex).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

type Slot = Arc<AsyncMutex<()>>;

#[derive(Default)]
pub struct Flights {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
}

/// Held while one task works on a key; the key's slot goes away with its last holder. It
/// owns what it needs, so it can travel into a blocking task: a caller that gives up
/// (an aborted future) must not let a second worker start while the first still runs.
pub struct Flight {
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    key: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Flights {
    /// Waits until no other task holds `key`, then holds it.
    pub async fn enter(&self, key: &str) -> Flight {
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            slots.entry(key.to_string()).or_default().clone()
        };
        let guard = slot.lock_owned().await;
        Flight {
            slots: self.slots.clone(),
            key: key.to_string(),
            guard: Some(guard),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.lock().map(|s| s.len()).unwrap_or_default()
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        self.guard.take();
        // The map holds one reference; a waiter would hold another.
        if slots
            .get(&self.key)
            .is_some_and(|s| Arc::strong_count(s) == 1)
        {
            slots.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_worker_per_key_at_a_time_and_no_slot_left() {
        let flights = Arc::new(Flights::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (flights, inside, most) = (flights.clone(), inside.clone(), most.clone());
            tasks.push(tokio::spawn(async move {
                let _f = flights.enter("k").await;
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert_eq!(flights.len(), 0);
        // Other keys do not wait.
        let _a = flights.enter("a").await;
        let _b = flights.enter("b").await;
        assert_eq!(flights.len(), 2);
    }
}
