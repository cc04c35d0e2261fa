//! When to re-create an enclave that aborted: the schedule behind `OeEnclaveSource`'s recovery
//! from `OE_ENCLAVE_ABORTING` and `OE_ENCLAVE_ABORTED`, kept apart from the SDK calls so that it
//! is tested without the SDK.
//!
//! An aborted enclave never answers again: every later ECALL fails the same way until the
//! enclave is terminated. An `oe://` enclave belongs to the exporter (it created the enclave to
//! read it), so nothing else would ever replace it; staying down would need a restart of the
//! exporter, which its health checks do not ask for. The source therefore terminates the aborted
//! enclave and re-creates it from the same image, `FIRST_DELAY` after the abort, then backing off
//! (doubling up to `MAX_DELAY`) while creation fails *or the new enclave aborts again before one
//! read succeeds*, so an image that aborts on every call costs one creation per `MAX_DELAY`, not
//! one per scrape. Meanwhile reads fail with the abort's result (`enclave_heap_up 0`, the error
//! counted under that name), and the logs say what happened and when the next attempt is. A
//! re-created enclave's heap starts empty: its figures are those of the new enclave.

use std::time::{Duration, Instant};

use openenclave_sys::{OE_ENCLAVE_ABORTED, OE_ENCLAVE_ABORTING};

use crate::error::OeResult;

/// Delay before the first re-creation after an abort.
pub(crate) const FIRST_DELAY: Duration = Duration::from_secs(1);
/// Longest delay between two attempts.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(300);

/// Whether `result` means the enclave is gone for good and must be re-created.
pub(crate) fn is_abort(result: OeResult) -> bool {
    matches!(result.0, OE_ENCLAVE_ABORTING | OE_ENCLAVE_ABORTED)
}

/// The re-creation schedule of one enclave.
#[derive(Debug, Default)]
pub(crate) struct RecreateBackoff {
    /// Aborts and failed creations since the last successful read.
    setbacks: u32,
    /// When the next creation may be attempted; `None` while the enclave is up.
    next_attempt: Option<Instant>,
}

impl RecreateBackoff {
    /// The enclave aborted at `now` (and was terminated): returns the delay before the next
    /// creation.
    pub(crate) fn aborted(&mut self, now: Instant) -> Duration {
        self.setback(now)
    }

    /// A creation attempted at `now` failed: returns the delay before the next one.
    pub(crate) fn creation_failed(&mut self, now: Instant) -> Duration {
        self.setback(now)
    }

    /// The enclave was created: no attempt is pending. The setbacks are kept until a read
    /// succeeds, so an enclave that aborts again at once backs off further.
    pub(crate) fn created(&mut self) {
        self.next_attempt = None;
    }

    /// A read succeeded: the enclave works, the backoff starts over.
    pub(crate) fn read_succeeded(&mut self) {
        self.setbacks = 0;
        self.next_attempt = None;
    }

    /// Whether a creation may be attempted at `now`.
    pub(crate) fn due(&self, now: Instant) -> bool {
        self.next_attempt.is_none_or(|at| now >= at)
    }

    fn setback(&mut self, now: Instant) -> Duration {
        let delay = FIRST_DELAY
            .checked_mul(1_u32.checked_shl(self.setbacks).unwrap_or(u32::MAX))
            .unwrap_or(MAX_DELAY)
            .min(MAX_DELAY);
        self.setbacks = self.setbacks.saturating_add(1);
        self.next_attempt = Some(now + delay);
        delay
    }
}

#[cfg(test)]
mod tests {
    use openenclave_sys::{OE_FAILURE, OE_OUT_OF_THREADS};

    use super::*;

    #[test]
    fn only_aborts_call_for_a_new_enclave() {
        assert!(is_abort(OeResult(OE_ENCLAVE_ABORTING)));
        assert!(is_abort(OeResult(OE_ENCLAVE_ABORTED)));
        assert!(!is_abort(OeResult(OE_OUT_OF_THREADS)));
        assert!(!is_abort(OeResult(OE_FAILURE)));
        assert!(!is_abort(OeResult(4242)));
    }

    #[test]
    fn backs_off_from_one_second_to_five_minutes_until_a_read_succeeds() {
        let start = Instant::now();
        let mut backoff = RecreateBackoff::default();
        assert!(backoff.due(start));
        assert_eq!(backoff.aborted(start), Duration::from_secs(1));
        assert!(!backoff.due(start));
        assert!(backoff.due(start + Duration::from_secs(1)));
        let mut delays = Vec::new();
        for _ in 0..12 {
            delays.push(backoff.creation_failed(start).as_secs());
        }
        assert_eq!(delays, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300, 300]);
        // Created, then aborted again before any read worked: still backing off.
        backoff.created();
        assert!(backoff.due(start));
        assert_eq!(backoff.aborted(start), MAX_DELAY);
        // A working enclave resets the schedule.
        backoff.created();
        backoff.read_succeeded();
        assert_eq!(backoff.aborted(start), FIRST_DELAY);
        for _ in 0..100 {
            backoff.creation_failed(start);
        }
        assert_eq!(backoff.creation_failed(start), MAX_DELAY);
    }
}
