//! [`OnceMap`]: values worked out once per key, on first use. The first caller for a key
//! works it out; callers that come meanwhile wait for that value rather than repeat it.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

/// Values by key, each worked out once.
pub struct OnceMap<K, V>(Mutex<HashMap<K, Arc<OnceCell<V>>>>);

impl<K, V> Default for OnceMap<K, V> {
    fn default() -> Self {
        Self(Mutex::default())
    }
}

impl<K: Eq + Hash, V: Clone> OnceMap<K, V> {
    /// The value of `key`, worked out by `init` if no caller has yet. A failure is not
    /// kept: the next caller tries again.
    pub async fn get_or_try_init<E, F, Fut>(&self, key: K, init: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let cell = self
            .0
            .lock()
            .expect("not poisoned")
            .entry(key)
            .or_default()
            .clone();
        Ok(cell.get_or_try_init(init).await?.clone())
    }
}
