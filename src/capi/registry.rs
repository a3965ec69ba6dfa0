//! Live handles of the C ABI.
//!
//! A handle given to C is a number, not an address: `(serial << 3) | kind`, with serials never
//! reused (on 64-bit targets the counter cannot wrap; on 32-bit ones it would after 2^29
//! handles, after which an old handle value could name a new object). Every call looks its
//! handles up here, so a freed handle, one freed twice, a handle of another kind, or any made-up
//! value is an error (`GRAFTLM_ERR_INVALID_HANDLE`), never undefined behaviour. A lookup hands
//! out a reference count on the object: freeing a handle while another thread is still inside a
//! call on it only drops the registry's count, and the object lives until that call returns.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::error::Error;

/// The serials of every kind come from one counter, so no two live handles are equal.
static SERIAL: AtomicUsize = AtomicUsize::new(1);

/// The handles of one kind (`kind` in 1..8, the handle's low three bits).
pub(crate) struct Registry<T> {
    kind: usize,
    what: &'static str,
    live: Mutex<Option<HashMap<usize, Arc<T>>>>,
}

impl<T> Registry<T> {
    pub const fn new(kind: usize, what: &'static str) -> Self {
        Self {
            kind,
            what,
            live: Mutex::new(None),
        }
    }

    fn map(&self) -> MutexGuard<'_, Option<HashMap<usize, Arc<T>>>> {
        // Nothing panics while the lock is held; a poisoned lock still holds a whole map.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers `value` and returns its new handle.
    pub fn insert(&self, value: T) -> usize {
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        let handle = (serial << 3) | self.kind;
        self.map()
            .get_or_insert_with(HashMap::new)
            .insert(handle, Arc::new(value));
        handle
    }

    /// The object behind `handle` (`name` is the argument, for messages).
    pub fn get(&self, handle: usize, name: &str) -> Result<Arc<T>, Error> {
        if handle == 0 {
            return Err(Error::invalid(name, "is NULL"));
        }
        self.map()
            .as_ref()
            .and_then(|m| m.get(&handle))
            .cloned()
            .ok_or_else(|| self.invalid(handle, name))
    }

    /// Forgets `handle`; `false` when it was not a live handle of this kind.
    pub fn remove(&self, handle: usize) -> bool {
        // The object is dropped after the lock is released (dropping a model takes a while).
        let gone = self.map().as_mut().and_then(|m| m.remove(&handle));
        gone.is_some()
    }

    fn invalid(&self, handle: usize, name: &str) -> Error {
        let kind = handle & 7;
        let why = if kind != self.kind && (1..=4).contains(&kind) {
            "is a handle of another kind".to_string()
        } else {
            "was freed, or never came from graftlm".to_string()
        };
        Error::InvalidHandle(format!(
            "`{name}` ({handle:#x}) is not a live {}: it {why}",
            self.what
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static A: Registry<String> = Registry::new(1, "thing");
    static B: Registry<u32> = Registry::new(2, "other thing");

    #[test]
    fn freed_foreign_and_made_up_handles_are_refused() {
        let h = A.insert("x".into());
        assert_eq!(*A.get(h, "a").unwrap(), "x");
        let held = A.get(h, "a").unwrap();
        assert!(A.remove(h));
        assert_eq!(*held, "x", "a call in flight keeps the object");
        assert!(!A.remove(h), "twice");
        assert!(matches!(A.get(h, "a"), Err(Error::InvalidHandle(_))));
        let g = B.insert(7);
        let e = A.get(g, "a").unwrap_err().to_string();
        assert!(e.contains("another kind"), "{e}");
        assert!(matches!(A.get(0, "a"), Err(Error::InvalidArgument { .. })));
        assert!(A.get(0xdead_beef, "a").is_err());
        let h2 = A.insert("y".into());
        assert_ne!(h, h2, "serials are never reused");
    }
}
