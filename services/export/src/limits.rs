//! Fair-share limits the RPC layer keeps on one replica: open watches per admin.
//!
//! (The cap on a company's waiting exports is the fold's, `crate::state`, so that replicas
//! racing to accept cannot exceed it.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::access::Denied;

/// Counts the open WatchExport streams of each admin; a [`WatchPermit`] is one of them.
#[derive(Debug, Clone)]
pub struct WatchLimiter {
    max_per_admin: usize,
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

/// One open watch; dropping it (the stream ended or its client went away) frees its place.
#[derive(Debug)]
pub struct WatchPermit {
    key: (String, String),
    open: Arc<Mutex<HashMap<(String, String), usize>>>,
}

impl WatchLimiter {
    /// Allows `max_per_admin` open watches per admin (at least one).
    pub fn new(max_per_admin: u32) -> Self {
        Self {
            max_per_admin: usize::try_from(max_per_admin.max(1)).unwrap_or(usize::MAX),
            open: Arc::default(),
        }
    }

    /// A permit for one more watch by `admin_id` of `company_id`, or the refusal to give.
    pub fn acquire(&self, company_id: &str, admin_id: &str) -> Result<WatchPermit, Denied> {
        let key = (company_id.to_owned(), admin_id.to_owned());
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(key.clone()).or_insert(0);
        if *count >= self.max_per_admin {
            return Err(Denied::ResourceExhausted(format!(
                "you already watch {count} exports at once, the most allowed ({}): close a \
                 watch you no longer need, or poll with GetExport",
                self.max_per_admin
            )));
        }
        *count += 1;
        Ok(WatchPermit {
            key,
            open: self.open.clone(),
        })
    }

    /// Open watches of `admin_id` of `company_id`.
    pub fn open(&self, company_id: &str, admin_id: &str) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(company_id.to_owned(), admin_id.to_owned()))
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watches_are_capped_per_admin_and_freed_when_dropped() {
        let limiter = WatchLimiter::new(2);
        let one = limiter.acquire("acme", "ann").unwrap();
        let _two = limiter.acquire("acme", "ann").unwrap();
        let refused = limiter.acquire("acme", "ann").unwrap_err();
        assert!(matches!(&refused, Denied::ResourceExhausted(m) if m.contains("2")));
        // Another admin, or the same id in another company, has their own share.
        let _bob = limiter.acquire("acme", "bob").unwrap();
        let _other = limiter.acquire("globex", "ann").unwrap();
        drop(one);
        assert_eq!(limiter.open("acme", "ann"), 1);
        let _again = limiter.acquire("acme", "ann").unwrap();
    }
}
