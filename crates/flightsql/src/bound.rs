//! [`Bound`]: the values last bound to each prepared statement, by its user. Flight SQL
//! lets a server answer a bind with a new handle that carries the values, which is how a
//! Sunlight server answers it, needing no state per statement. Clients written before
//! that (`flightsql-dbapi`) drop the new handle and run the statement by the one it was
//! prepared with, as a server that kept the values would. For them the server keeps each
//! user's last values a while.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use arrow::record_batch::RecordBatch;

/// Most statements whose values are kept; the one bound longest ago goes first.
const MAX_STATEMENTS: usize = 4096;

/// Most bytes of values kept.
const MAX_BYTES: usize = 64 << 20;

/// A user's prepared statement: the user and the statement's [`crate::Prepared::id`].
type Key = (String, u64);

/// The values last bound to prepared statements, kept per user, at most
/// [`MAX_STATEMENTS`] and [`MAX_BYTES`] of them.
#[derive(Debug, Default)]
pub(crate) struct Bound {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    values: HashMap<Key, RecordBatch>,
    /// Keys, bound longest ago first.
    order: VecDeque<Key>,
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, key: &Key) {
        if let Some(values) = self.values.remove(key) {
            self.bytes -= values.get_array_memory_size();
            self.order.retain(|k| k != key);
        }
    }
}

impl Bound {
    /// Keeps `values` as the last bound by `user` to statement `id`.
    pub(crate) fn keep(&self, user: &str, id: u64, values: RecordBatch) {
        let key = (user.to_string(), id);
        let mut kept = self.kept.lock().expect("not poisoned");
        kept.remove(&key);
        kept.bytes += values.get_array_memory_size();
        kept.values.insert(key.clone(), values);
        kept.order.push_back(key);
        while kept.order.len() > MAX_STATEMENTS || kept.bytes > MAX_BYTES {
            let Some(oldest) = kept.order.front().cloned() else {
                break;
            };
            kept.remove(&oldest);
        }
    }

    /// The values `user` last bound to statement `id`, if kept.
    pub(crate) fn get(&self, user: &str, id: u64) -> Option<RecordBatch> {
        let kept = self.kept.lock().expect("not poisoned");
        kept.values.get(&(user.to_string(), id)).cloned()
    }

    /// Forgets the values of `user`'s statement `id`, closed.
    pub(crate) fn forget(&self, user: &str, id: u64) {
        let key = (user.to_string(), id);
        self.kept.lock().expect("not poisoned").remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::StringArray;

    use super::*;

    fn values(text: &str) -> RecordBatch {
        RecordBatch::try_from_iter([("$1", Arc::new(StringArray::from(vec![text])) as _)]).unwrap()
    }

    #[test]
    fn values_are_kept_per_user_and_statement_until_closed_or_pushed_out() {
        let bound = Bound::default();
        bound.keep("ana", 7, values("140215"));
        bound.keep("ana", 7, values("140221"));
        assert_eq!(bound.get("ana", 7), Some(values("140221")));
        // Another user naming the same statement finds nothing of ana's.
        assert_eq!(bound.get("zhao", 7), None);
        bound.forget("ana", 7);
        assert_eq!(bound.get("ana", 7), None);

        for id in 0..=MAX_STATEMENTS as u64 {
            bound.keep("ana", id, values("x"));
        }
        assert_eq!(bound.get("ana", 0), None);
        assert!(bound.get("ana", 1).is_some());
        let kept = bound.kept.lock().unwrap();
        assert_eq!(kept.order.len(), MAX_STATEMENTS);
        let bytes: usize = kept
            .values
            .values()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        assert_eq!(kept.bytes, bytes);
    }
}
