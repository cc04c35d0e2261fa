//! [`SimConfig`]: everything a [`SimulatedEnclave`](crate::SimulatedEnclave) is built from, and its
//! validation.

use std::time::Duration;

use openenclave_sys::{OE_OK, oe_result_t};

use crate::error::SimError;
use crate::profile::Profile;
use crate::{MAX_HEAP_PAGES, MIN_HEAP_PAGES, PAGE_SIZE};

/// Heap size used when none is given: 4096 pages (16 MiB).
pub const DEFAULT_HEAP_PAGES: usize = 4096;
/// Workload cycle length used when none is given.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(60);
/// Shortest push interval allowed: pushes faster than this would only burn CPU.
pub const MIN_PUSH_INTERVAL: Duration = Duration::from_millis(10);
/// Workload RNG seed used when none is given, so two default runs allocate the same sizes.
pub const DEFAULT_SEED: u64 = 1;

/// How to build a [`SimulatedEnclave`](crate::SimulatedEnclave).
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Heap size in 4 KiB pages, like the signing config's `NumHeapPages`: the arena is exactly
    /// `heap_pages * 4096` bytes. Between [`MIN_HEAP_PAGES`] and [`MAX_HEAP_PAGES`]; default
    /// [`DEFAULT_HEAP_PAGES`].
    pub heap_pages: usize,
    /// The workload to run; default [`Profile::Steady`].
    pub profile: Profile,
    /// Length of one workload cycle (sawtooth, leak, spike); must be above zero; default
    /// [`DEFAULT_PERIOD`].
    pub period: Duration,
    /// Seed of the workload's RNG (block sizes, which blocks are freed); default [`DEFAULT_SEED`].
    pub seed: u64,
    /// Fault injection: every ECALL returns this result and writes nothing. Must not be `OE_OK`.
    pub fail: Option<oe_result_t>,
    /// Fault injection: every ECALL takes this long before doing anything else.
    pub delay: Option<Duration>,
    /// Push a snapshot to the host by "OCALL" this often, as an enclave calling `publish()` from
    /// its own thread would. Needs a push target (see
    /// [`SimulatedEnclave::with_push_target`](crate::SimulatedEnclave::with_push_target)). Pushes
    /// keep flowing when `fail` makes every ECALL fail: they travel the other way.
    pub push: Option<Duration>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            heap_pages: DEFAULT_HEAP_PAGES,
            profile: Profile::Steady,
            period: DEFAULT_PERIOD,
            seed: DEFAULT_SEED,
            fail: None,
            delay: None,
            push: None,
        }
    }
}

impl SimConfig {
    /// Checks every field without allocating anything, so a caller can reject a bad
    /// configuration before it starts anything. [`SimulatedEnclave::new`](crate::SimulatedEnclave::new)
    /// runs the same checks.
    pub fn validate(&self) -> Result<(), SimError> {
        validate_heap_pages(self.heap_pages)?;
        if self.period.is_zero() {
            return Err(SimError::ZeroPeriod);
        }
        if self.fail == Some(OE_OK) {
            return Err(SimError::FailIsOk);
        }
        if self
            .push
            .is_some_and(|interval| interval < MIN_PUSH_INTERVAL)
        {
            return Err(SimError::PushTooOften {
                min: MIN_PUSH_INTERVAL,
            });
        }
        Ok(())
    }

    /// The `max_total_heap_size` this configuration gives: `heap_pages * 4096`.
    pub fn max_total_heap_size(&self) -> usize {
        self.heap_pages.saturating_mul(PAGE_SIZE)
    }
}

/// Checks a heap size in pages against [`MIN_HEAP_PAGES`] and [`MAX_HEAP_PAGES`].
pub(crate) fn validate_heap_pages(heap_pages: usize) -> Result<(), SimError> {
    if heap_pages < MIN_HEAP_PAGES {
        return Err(SimError::HeapTooSmall {
            heap_pages,
            min: MIN_HEAP_PAGES,
        });
    }
    if heap_pages > MAX_HEAP_PAGES {
        return Err(SimError::HeapTooLarge {
            heap_pages,
            max: MAX_HEAP_PAGES,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openenclave_sys::OE_OUT_OF_THREADS;

    use super::*;

    #[test]
    fn default_is_valid_and_sixteen_mib() {
        let config = SimConfig::default();
        config.validate().unwrap();
        assert_eq!(config.max_total_heap_size(), 16 << 20);
        assert_eq!(config.profile, Profile::Steady);
    }

    #[test]
    fn heap_pages_bounds_are_inclusive() {
        for heap_pages in [MIN_HEAP_PAGES, MAX_HEAP_PAGES] {
            let config = SimConfig {
                heap_pages,
                ..SimConfig::default()
            };
            config.validate().unwrap();
        }
    }

    #[test]
    fn rejections_name_the_bad_value_and_the_limit() {
        let check = |config: SimConfig, expected: &str| {
            let message = config.validate().unwrap_err().to_string();
            assert_eq!(message, expected);
        };
        check(
            SimConfig {
                heap_pages: 15,
                ..SimConfig::default()
            },
            "heap_pages=15 is too small: the simulated heap needs at least 16 pages of 4 KiB",
        );
        check(
            SimConfig {
                heap_pages: MAX_HEAP_PAGES + 1,
                ..SimConfig::default()
            },
            "heap_pages=1048577 is too large: at most 1048576 pages of 4 KiB (4 GiB) are allowed",
        );
        check(
            SimConfig {
                period: Duration::ZERO,
                ..SimConfig::default()
            },
            "period=0s is not allowed: one workload cycle must last longer than zero",
        );
        check(
            SimConfig {
                fail: Some(OE_OK),
                ..SimConfig::default()
            },
            "fail=OE_OK is not a failure: name a failing OE result such as OE_OUT_OF_THREADS, or leave fail out",
        );
        SimConfig {
            fail: Some(OE_OUT_OF_THREADS),
            delay: Some(Duration::ZERO),
            ..SimConfig::default()
        }
        .validate()
        .unwrap();
    }
}
