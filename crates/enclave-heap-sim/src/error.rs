//! [`SimError`]: why a simulated enclave or heap could not be created.
//!
//! Every message names the value that was refused and what would have been accepted, because these
//! values usually come straight from a `sim:` source URL that an operator typed.

use std::io;

use crate::profile::Profile;

/// A simulated enclave or heap could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// `heap_pages` is below [`MIN_HEAP_PAGES`](crate::MIN_HEAP_PAGES): the allocator's own
    /// metadata and a useful workload would not fit.
    #[error(
        "heap_pages={heap_pages} is too small: the simulated heap needs at least {min} pages of 4 KiB"
    )]
    HeapTooSmall {
        /// The number of pages asked for.
        heap_pages: usize,
        /// The smallest number allowed.
        min: usize,
    },
    /// `heap_pages` is above [`MAX_HEAP_PAGES`](crate::MAX_HEAP_PAGES) (4 GiB).
    #[error(
        "heap_pages={heap_pages} is too large: at most {max} pages of 4 KiB (4 GiB) are allowed"
    )]
    HeapTooLarge {
        /// The number of pages asked for.
        heap_pages: usize,
        /// The largest number allowed.
        max: usize,
    },
    /// The workload period is zero.
    #[error("period=0s is not allowed: one workload cycle must last longer than zero")]
    ZeroPeriod,
    /// Fault injection was asked to "fail" with `OE_OK`, which would report success without
    /// writing the result.
    #[error(
        "fail=OE_OK is not a failure: name a failing OE result such as OE_OUT_OF_THREADS, or leave fail out"
    )]
    FailIsOk,
    /// The push interval is shorter than [`MIN_PUSH_INTERVAL`](crate::MIN_PUSH_INTERVAL).
    #[error("push interval too short: at least {min:?} between pushes")]
    PushTooOften {
        /// The shortest interval allowed.
        min: std::time::Duration,
    },
    /// `push` is set but nothing receives the pushes.
    #[error("push= needs a host to push to; start the enclave with a push target")]
    NoPushTarget,
    /// The operating system refused to start the push thread.
    #[error("cannot start the push thread: {0}")]
    SpawnPush(io::Error),
    /// A profile name that is not one of [`Profile::ALL`].
    #[error("unknown profile {name:?}: expected one of {}", Profile::valid_names())]
    UnknownProfile {
        /// The name as given.
        name: String,
    },
    /// The host's allocator could not provide the arena (the process is short of memory or
    /// address space).
    #[error("cannot reserve the {bytes}-byte arena for the simulated heap; try fewer heap_pages")]
    ArenaUnavailable {
        /// The arena size asked for (`heap_pages` × 4096).
        bytes: usize,
    },
    /// The allocator refused to manage the arena. Cannot happen for sizes that pass validation;
    /// reported rather than panicking in case a future allocator needs more room for metadata.
    #[error("the allocator cannot manage a {bytes}-byte arena; try more heap_pages")]
    ArenaRejected {
        /// The arena size (`heap_pages` × 4096).
        bytes: usize,
    },
    /// The operating system refused to start the workload thread.
    #[error("cannot start the {profile} workload thread: {cause}")]
    SpawnWorkload {
        /// The profile whose thread failed to start.
        profile: Profile,
        /// What the operating system said.
        cause: io::Error,
    },
}
