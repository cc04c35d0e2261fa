//! Reads that are safe to trigger from outside: single flight, rate-limited, deadline-bounded.
//!
//! Both the exporter (on each Prometheus scrape) and the agent (on each sidecar request) read
//! enclaves when asked, not on a timer. An ECALL is not free (OE's dlmalloc walks the whole heap
//! under its global lock to answer mallinfo) and cannot be cancelled, so a [`Coalescer`] guards
//! each source:
//!
//! - at most one read is in flight, whatever the request load: concurrent requests wait for the
//!   same read, and a read that outlives its timeout blocks new reads until it returns, so
//!   blocking threads never pile up;
//! - a read that started less than `min_interval` ago is reused instead of starting another;
//! - each request waits at most until the read's deadline (`started + timeout`); past it the
//!   request gets [`ReadFailure::Timeout`], and the timeout is reported once per read.
//!
//! The read itself runs on its own task (a blocking source on a blocking thread, see
//! [`read_blocking`]), so it finishes and is recorded even when every waiter has given up.

use std::future::Future;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::ReadFailure;
use crate::snapshot::HeapSnapshot;
use crate::source::HeapSource;

/// How often and how long a source may be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPolicy {
    /// How long a request waits for one read, counted from the read's start.
    pub timeout: Duration,
    /// Minimum time between the starts of two reads.
    pub min_interval: Duration,
}

/// What a finished read reports to its observer, once.
#[derive(Debug)]
pub struct ReadReport<'a, T> {
    /// How long the read took.
    pub elapsed: Duration,
    /// What it produced.
    pub outcome: &'a Result<T, ReadFailure>,
    /// False when a waiter already reported this read as timed out: its late failure should not
    /// be counted a second time.
    pub first_report: bool,
}

/// Guards one source; see the module documentation.
#[derive(Debug)]
pub struct Coalescer<T> {
    policy: ReadPolicy,
    state: Mutex<State<T>>,
}

#[derive(Debug)]
struct State<T> {
    last: Option<Arc<Completed<T>>>,
    in_flight: Option<Flight<T>>,
}

#[derive(Debug)]
struct Completed<T> {
    started: Instant,
    outcome: Result<T, ReadFailure>,
}

#[derive(Debug)]
struct Flight<T> {
    started: Instant,
    done: watch::Receiver<Option<Arc<Completed<T>>>>,
    /// Who settled the read's fate first: the read itself, or a waiter that gave up on it.
    fate: Arc<AtomicU8>,
}

impl<T> Clone for Flight<T> {
    fn clone(&self) -> Self {
        Self {
            started: self.started,
            done: self.done.clone(),
            fate: Arc::clone(&self.fate),
        }
    }
}

const RUNNING: u8 = 0;
const COMPLETED: u8 = 1;
const TIMED_OUT: u8 = 2;

/// A read to wait for: a fresh one just started, one already in flight, or a recent result.
#[derive(Debug)]
pub struct PendingRead<T> {
    inner: Pending<T>,
    timeout: Duration,
}

#[derive(Debug)]
enum Pending<T> {
    Done(Arc<Completed<T>>),
    Wait(Flight<T>),
}

impl<T: Clone + Send + Sync + 'static> Coalescer<T> {
    /// A guard with `policy` and no read yet.
    pub fn new(policy: ReadPolicy) -> Self {
        Self {
            policy,
            state: Mutex::new(State {
                last: None,
                in_flight: None,
            }),
        }
    }

    /// The policy this guard enforces.
    pub fn policy(&self) -> ReadPolicy {
        self.policy
    }

    /// Until when [`begin`](Self::begin) would reuse the last completed read instead of starting
    /// one: `None` when a read is in flight or due now. Lets a caller cache what it derived from
    /// that read for exactly as long as the read itself stays current.
    pub fn fresh_until(&self) -> Option<Instant> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.in_flight.is_some() {
            return None;
        }
        let until = state.last.as_ref()?.started + self.policy.min_interval;
        (until > Instant::now()).then_some(until)
    }

    /// Joins the read in flight, reuses a recent one, or starts `read` on its own task (which
    /// needs a tokio runtime). `finished` is called once when a started read completes.
    pub fn begin<F, Fut>(
        self: &Arc<Self>,
        read: F,
        finished: impl FnOnce(ReadReport<'_, T>) + Send + 'static,
    ) -> PendingRead<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ReadFailure>> + Send + 'static,
    {
        let timeout = self.policy.timeout;
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(flight) = &state.in_flight {
            return PendingRead {
                inner: Pending::Wait(flight.clone()),
                timeout,
            };
        }
        if let Some(last) = &state.last {
            if now.duration_since(last.started) < self.policy.min_interval {
                return PendingRead {
                    inner: Pending::Done(Arc::clone(last)),
                    timeout,
                };
            }
        }
        let (sender, done) = watch::channel(None);
        let flight = Flight {
            started: now,
            done,
            fate: Arc::new(AtomicU8::new(RUNNING)),
        };
        state.in_flight = Some(flight.clone());
        drop(state);

        let fate = Arc::clone(&flight.fate);
        let future = read();
        let guard = Arc::clone(self);
        tokio::spawn(async move {
            // A panic inside the read is caught by its own task, so this one always completes
            // and the source never stays "in flight" forever.
            let outcome = match tokio::spawn(future).await {
                Ok(outcome) => outcome,
                Err(error) if error.is_panic() => Err(ReadFailure::Panicked(panic_message(
                    error.into_panic().as_ref(),
                ))),
                Err(_) => Err(ReadFailure::Panicked(
                    "the read task was cancelled".to_owned(),
                )),
            };
            let first_report = fate
                .compare_exchange(RUNNING, COMPLETED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
            finished(ReadReport {
                elapsed: now.elapsed(),
                outcome: &outcome,
                first_report,
            });
            let completed = Arc::new(Completed {
                started: now,
                outcome,
            });
            let mut state = guard.state.lock().unwrap_or_else(PoisonError::into_inner);
            state.last = Some(Arc::clone(&completed));
            state.in_flight = None;
            drop(state);
            // Nobody may be waiting any more; that is fine.
            let _ = sender.send(Some(completed));
        });
        PendingRead {
            inner: Pending::Wait(flight),
            timeout,
        }
    }
}

impl<T: Clone> PendingRead<T> {
    /// Waits for the read, at most until its deadline. `timed_out` is called if this waiter is
    /// the first to give up on the read (once per read), e.g. to count the timeout.
    pub async fn wait(self, timed_out: impl FnOnce(&ReadFailure)) -> Result<T, ReadFailure> {
        let mut flight = match self.inner {
            Pending::Done(completed) => return completed.outcome.clone(),
            Pending::Wait(flight) => flight,
        };
        let deadline = tokio::time::Instant::from_std(flight.started + self.timeout);
        if let Ok(answer) =
            tokio::time::timeout_at(deadline, flight.done.wait_for(Option::is_some)).await
        {
            return outcome_of(answer.ok().as_deref());
        }
        match flight
            .fate
            .compare_exchange(RUNNING, TIMED_OUT, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                let failure = ReadFailure::Timeout(self.timeout);
                timed_out(&failure);
                Err(failure)
            }
            Err(TIMED_OUT) => Err(ReadFailure::Timeout(self.timeout)),
            // The read completed between the deadline and now; its answer is being published.
            Err(_) => outcome_of(flight.done.wait_for(Option::is_some).await.ok().as_deref()),
        }
    }
}

fn outcome_of<T: Clone>(answer: Option<&Option<Arc<Completed<T>>>>) -> Result<T, ReadFailure> {
    match answer {
        Some(Some(completed)) => completed.outcome.clone(),
        _ => Err(ReadFailure::Panicked(
            "the read task ended without an answer".to_owned(),
        )),
    }
}

/// Runs a blocking source's `read` on tokio's blocking pool: the future to hand to
/// [`Coalescer::begin`] for an ECALL-backed source.
pub async fn read_blocking(source: Arc<dyn HeapSource>) -> Result<HeapSnapshot, ReadFailure> {
    match tokio::task::spawn_blocking(move || source.read()).await {
        Ok(result) => result.map_err(ReadFailure::Source),
        Err(error) if error.is_panic() => Err(ReadFailure::Panicked(panic_message(
            error.into_panic().as_ref(),
        ))),
        Err(_) => Err(ReadFailure::Panicked(
            "the blocking read was cancelled".to_owned(),
        )),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(message) = panic.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}
