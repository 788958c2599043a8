//! Backoff between retries, cancellable.

use std::time::Duration;

use telemetry::CancellationToken;

/// The stop token fired before the work was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("stopped before the work was done")]
pub struct Stopped;

/// Exponential backoff: `first`, doubling, at most `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    /// Sleeps for the current delay (or until `stop`), then doubles it.
    pub async fn wait(&mut self, stop: &CancellationToken) -> Result<(), Stopped> {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            _ = tokio::time::sleep(delay) => Ok(()),
            _ = stop.cancelled() => Err(Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn doubles_up_to_the_cap_and_stops_at_once() {
        let stop = CancellationToken::new();
        let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_millis(30));
        let start = std::time::Instant::now();
        for _ in 0..4 {
            assert_eq!(backoff.wait(&stop).await, Ok(()));
        }
        assert!(start.elapsed() >= Duration::from_millis(10 + 20 + 30 + 30));
        assert_eq!(backoff.next, Duration::from_millis(30));
        stop.cancel();
        let stopped = std::time::Instant::now();
        assert_eq!(backoff.wait(&stop).await, Err(Stopped));
        assert!(
            stopped.elapsed() < Duration::from_millis(30),
            "a stop ends the wait at once"
        );
    }
}
