//! One way to retry an operation: exponential backoff between attempts, cut short by a
//! cancellation token.
//!
//! A [`Backoff`] says how long to wait after each failure (and, optionally, how many attempts
//! to make); [`retry`] and [`retry_whole_attempts`] run the attempts. The caller's `on_error`
//! sees every failure — to log it, to report it, and to say whether it is worth another try
//! ([`Next`]) — so the loops in the services keep only what is particular to them.
//!
//! ```
//! # async fn example() {
//! use std::time::Duration;
//! use retry::{Backoff, CancellationToken, Next, retry};
//!
//! let stop = CancellationToken::new();
//! let policy = Backoff::new(Duration::from_millis(100), Duration::from_secs(5)).max_attempts(3);
//! let answer: Result<u32, _> = retry(&policy, &stop, || async { Ok::<_, String>(42) }, |error, failures| {
//!     eprintln!("attempt {failures} failed: {error}");
//!     Next::Retry
//! })
//! .await;
//! assert_eq!(answer, Ok(42));
//! # }
//! ```

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

pub use tokio_util::sync::CancellationToken;

/// How long to wait between attempts: `first`, doubling after each failure, at most `max`;
/// optionally a bound on the attempts and a random share taken off each wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    attempts: Option<u32>,
    jitter: bool,
}

impl Backoff {
    /// Waits `first` after the first failure, doubling up to `max`; retries without end.
    pub const fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            attempts: None,
            jitter: false,
        }
    }

    /// The same wait after every failure.
    pub const fn fixed(delay: Duration) -> Self {
        Self::new(delay, delay)
    }

    /// Makes at most `attempts` attempts in all (the first included; 0 counts as 1). No wait
    /// follows the last one.
    #[must_use]
    pub const fn max_attempts(mut self, attempts: u32) -> Self {
        self.attempts = Some(attempts);
        self
    }

    /// Takes a random share of up to half off each wait, so that many callers failing at
    /// once do not retry in step.
    #[must_use]
    pub const fn with_jitter(mut self) -> Self {
        self.jitter = true;
        self
    }

    /// The wait after the `failures`-th failure in a row (1 for the first), before jitter:
    /// `first · 2^(failures − 1)`, at most `max`.
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// Whether `failures` failed attempts are all the policy allows.
    fn exhausted(&self, failures: u32) -> bool {
        self.attempts.is_some_and(|n| failures >= n.max(1))
    }

    /// The wait after the `failures`-th failure: [`delay`](Self::delay), with jitter when asked
    /// for (uniform in `[delay / 2, delay]`). What [`retry`] waits; public for loops that
    /// schedule the next attempt of many items themselves rather than wait for one.
    pub fn wait(&self, failures: u32) -> Duration {
        let delay = self.delay(failures);
        if !self.jitter {
            return delay;
        }
        // A fresh `RandomState` is randomly keyed: enough randomness for spreading retries,
        // without a dependency on a random number generator.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let share = (random >> 11) as f64 / (1u64 << 53) as f64; // in [0, 1)
        delay.mul_f64(1.0 - share / 2.0)
    }
}

/// What to do after an attempt failed; the answer of the caller's `on_error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again after the policy's next wait.
    Retry,
    /// Try again after this wait instead of the policy's (whose count of failures goes on).
    RetryAfter(Duration),
    /// Stop here: the error is permanent; it is returned as [`RetryError::Failed`].
    GiveUp,
}

/// Why [`retry`] returned without a result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RetryError<E> {
    /// The token fired before an attempt succeeded.
    #[error("cancelled before the work was done")]
    Cancelled,
    /// The last attempt's error: `on_error` gave up on it, or the attempts ran out.
    #[error("{0}")]
    Failed(E),
}

/// Runs `op` until it succeeds, `on_error` gives up ([`Next::GiveUp`]), the policy's attempts
/// run out, or `cancel` fires. `on_error` gets every error with the count of failures so far.
///
/// `op` makes one attempt's future. (Not an async closure: the futures of `AsyncFnMut` are
/// generic over the closure's borrow, and the compiler cannot yet prove such futures `Send`
/// for every lifetime, which spawned tasks need.) `cancel` ends the wait between attempts *and* the attempt in flight, which is dropped: for
/// operations that are safe to cut short. See [`retry_whole_attempts`] for the others.
pub async fn retry<T, E, Fut>(
    policy: &Backoff,
    cancel: &CancellationToken,
    op: impl FnMut() -> Fut,
    on_error: impl FnMut(&E, u32) -> Next,
) -> Result<T, RetryError<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    run(policy, cancel, true, op, on_error).await
}

/// Like [`retry`], but an attempt once started runs to its end: `cancel` ends only the waits
/// between attempts. For operations whose effect could land after they were cut short (a
/// request already on the wire), where stopping midway would leave the outcome unknown.
pub async fn retry_whole_attempts<T, E, Fut>(
    policy: &Backoff,
    cancel: &CancellationToken,
    op: impl FnMut() -> Fut,
    on_error: impl FnMut(&E, u32) -> Next,
) -> Result<T, RetryError<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    run(policy, cancel, false, op, on_error).await
}

async fn run<T, E, Fut>(
    policy: &Backoff,
    cancel: &CancellationToken,
    cut_attempts: bool,
    mut op: impl FnMut() -> Fut,
    mut on_error: impl FnMut(&E, u32) -> Next,
) -> Result<T, RetryError<E>>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut failures: u32 = 0;
    loop {
        let attempt = if cut_attempts {
            // Checked before `op()` makes the attempt's future: making it may already do work.
            if cancel.is_cancelled() {
                return Err(RetryError::Cancelled);
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Err(RetryError::Cancelled),
                attempt = op() => attempt,
            }
        } else {
            op().await
        };
        let error = match attempt {
            Ok(value) => return Ok(value),
            Err(error) => error,
        };
        failures = failures.saturating_add(1);
        let next = on_error(&error, failures);
        let wait = match next {
            Next::GiveUp => return Err(RetryError::Failed(error)),
            _ if policy.exhausted(failures) => return Err(RetryError::Failed(error)),
            Next::Retry => policy.wait(failures),
            Next::RetryAfter(wait) => wait,
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => return Err(RetryError::Cancelled),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::time::Instant;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// An operation that fails `failures` times, then answers `done`; it records when each
    /// attempt started (paused time: exact).
    fn flaky(
        failures: u32,
        started: &Arc<Mutex<Vec<Duration>>>,
    ) -> impl FnMut() -> std::future::Ready<Result<&'static str, String>> + use<> {
        let (origin, started) = (Instant::now(), Arc::clone(started));
        let mut calls = 0;
        move || {
            calls += 1;
            started
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(origin.elapsed());
            std::future::ready(if calls > failures {
                Ok("done")
            } else {
                Err(format!("failure {calls}"))
            })
        }
    }

    fn times(started: &Arc<Mutex<Vec<Duration>>>) -> Vec<Duration> {
        started.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let policy = Backoff::new(100 * MS, 1000 * MS);
        let delays: Vec<_> = (1..=6).map(|n| policy.delay(n)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000].map(|d| d * MS));
        assert_eq!(policy.delay(u32::MAX), 1000 * MS, "no overflow");
        assert_eq!(Backoff::fixed(30 * MS).delay(7), 30 * MS);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_the_policys_waits_until_it_succeeds() {
        let started = Arc::default();
        let mut seen = Vec::new();
        let policy = Backoff::new(100 * MS, 300 * MS);
        let result = retry(
            &policy,
            &CancellationToken::new(),
            flaky(4, &started),
            |error: &String, failures| {
                seen.push((error.clone(), failures));
                Next::Retry
            },
        )
        .await;
        assert_eq!(result, Ok("done"));
        // Waits of 100, 200, 300, 300 ms between the five attempts.
        assert_eq!(times(&started), [0, 100, 300, 600, 900].map(|t| t * MS));
        assert_eq!(seen.len(), 4);
        assert_eq!(seen[3], ("failure 4".to_owned(), 4));
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_the_last_attempt_without_waiting_again() {
        let started = Arc::default();
        let begin = Instant::now();
        let policy = Backoff::new(1000 * MS, 16000 * MS).max_attempts(3);
        let result = retry(
            &policy,
            &CancellationToken::new(),
            flaky(10, &started),
            |_, _| Next::Retry,
        )
        .await;
        assert_eq!(result, Err(RetryError::Failed("failure 3".to_owned())));
        assert_eq!(times(&started), [0, 1000, 3000].map(|t| t * MS));
        assert_eq!(begin.elapsed(), 3000 * MS, "no wait after the last attempt");
    }

    #[tokio::test(start_paused = true)]
    async fn a_permanent_error_ends_at_once_and_a_chosen_wait_replaces_the_policys() {
        let started = Arc::default();
        let policy = Backoff::new(100 * MS, 100 * MS);
        let result = retry(
            &policy,
            &CancellationToken::new(),
            flaky(10, &started),
            |error: &String, _| match error.as_str() {
                "failure 1" => Next::RetryAfter(5000 * MS),
                "failure 2" => Next::Retry,
                _ => Next::GiveUp,
            },
        )
        .await;
        assert_eq!(result, Err(RetryError::Failed("failure 3".to_owned())));
        assert_eq!(times(&started), [0, 5000, 5100].map(|t| t * MS));
    }

    #[tokio::test(start_paused = true)]
    async fn cancelling_ends_the_wait_at_once() {
        let started = Arc::default();
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(1500 * MS).await;
            canceller.cancel();
        });
        let begin = Instant::now();
        let policy = Backoff::new(1000 * MS, 60_000 * MS);
        let result =
            retry_whole_attempts(&policy, &cancel, flaky(10, &started), |_, _| Next::Retry).await;
        assert_eq!(result, Err(RetryError::Cancelled));
        assert_eq!(times(&started), [0, 1000].map(|t| t * MS));
        assert_eq!(begin.elapsed(), 1500 * MS, "the 2 s wait was cut at 1.5 s");
    }

    /// An attempt that takes 10 s; cancelled after 1 s.
    async fn slow_attempt_cancelled(whole: bool) -> (Result<(), RetryError<()>>, Duration, bool) {
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(1000 * MS).await;
            canceller.cancel();
        });
        let finished = Arc::new(Mutex::new(false));
        let op = || {
            let finished = Arc::clone(&finished);
            async move {
                tokio::time::sleep(10_000 * MS).await;
                *finished.lock().unwrap_or_else(|e| e.into_inner()) = true;
                Err::<(), ()>(())
            }
        };
        let begin = Instant::now();
        let policy = Backoff::fixed(100 * MS);
        let result = if whole {
            retry_whole_attempts(&policy, &cancel, op, |_, _| Next::Retry).await
        } else {
            retry(&policy, &cancel, op, |_, _| Next::Retry).await
        };
        let finished = *finished.lock().unwrap_or_else(|e| e.into_inner());
        (result, begin.elapsed(), finished)
    }

    #[tokio::test(start_paused = true)]
    async fn retry_cuts_the_attempt_in_flight_and_whole_attempts_run_to_their_end() {
        let (result, took, finished) = slow_attempt_cancelled(false).await;
        assert_eq!(result, Err(RetryError::Cancelled));
        assert_eq!((took, finished), (1000 * MS, false));

        let (result, took, finished) = slow_attempt_cancelled(true).await;
        assert_eq!(result, Err(RetryError::Cancelled));
        assert_eq!((took, finished), (10_000 * MS, true));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_token_stops_before_the_first_cut_attempt() {
        let started = Arc::default();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let policy = Backoff::fixed(MS);
        let result = retry(&policy, &cancel, flaky(0, &started), |_, _| Next::Retry).await;
        assert_eq!(result, Err(RetryError::Cancelled));
        assert!(times(&started).is_empty());
    }

    #[test]
    fn jitter_takes_at_most_half_off_and_varies() {
        let policy = Backoff::fixed(1000 * MS).with_jitter();
        let waits: Vec<Duration> = (0..200).map(|_| policy.wait(1)).collect();
        assert!(
            waits.iter().all(|w| (500 * MS..=1000 * MS).contains(w)),
            "{waits:?}"
        );
        let distinct: std::collections::BTreeSet<_> = waits.iter().collect();
        assert!(
            distinct.len() > 100,
            "only {} distinct waits",
            distinct.len()
        );
        assert_eq!(
            Backoff::fixed(1000 * MS).wait(1),
            1000 * MS,
            "no jitter unless asked"
        );
    }
}
