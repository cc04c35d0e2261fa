//! [`Profile`]: the named workloads a simulated enclave can run, and their names.

use std::fmt;
use std::str::FromStr;

use crate::error::SimError;

/// A workload that drives real allocations on the simulated heap, from its own thread.
///
/// Names are lower case (`steady`, `leak`, ...), both for [`FromStr`] and for [`Display`](fmt::Display).
/// Fractions below are of `max_total_heap_size`; each cycle lasts [`SimConfig::period`](crate::SimConfig::period).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// No workload thread and nothing allocated: the heap reads zero apart from the ECALL's own
    /// marshalling buffer while a read is in progress.
    Idle,
    /// Hovers between 30% and 40% with continuous churn (blocks freed and allocated every tick).
    Steady,
    /// Grows linearly from 0 to 75% over each period, then frees everything.
    Sawtooth,
    /// Grows linearly toward 100% over the period until an allocation fails with out-of-memory,
    /// then frees everything and starts over, like a process that leaks until it is restarted.
    Leak,
    /// A baseline around 20% with churn, plus one short burst to about 85% per period, released
    /// after about 15% of the period.
    Spike,
}

impl Profile {
    /// Every profile, in the order their names are listed in messages.
    pub const ALL: [Profile; 5] = [
        Profile::Idle,
        Profile::Steady,
        Profile::Sawtooth,
        Profile::Leak,
        Profile::Spike,
    ];

    /// The profile's name, as [`FromStr`] accepts it.
    pub const fn name(self) -> &'static str {
        match self {
            Profile::Idle => "idle",
            Profile::Steady => "steady",
            Profile::Sawtooth => "sawtooth",
            Profile::Leak => "leak",
            Profile::Spike => "spike",
        }
    }

    /// All valid names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        Self::ALL.map(Profile::name).join(", ")
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Profile {
    type Err = SimError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|profile| profile.name() == name)
            .ok_or_else(|| SimError::UnknownProfile {
                name: name.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for profile in Profile::ALL {
            assert_eq!(profile.to_string().parse::<Profile>().unwrap(), profile);
        }
    }

    #[test]
    fn unknown_name_lists_the_valid_ones() {
        let message = "Steady".parse::<Profile>().unwrap_err().to_string();
        assert_eq!(
            message,
            "unknown profile \"Steady\": expected one of idle, steady, sawtooth, leak, spike"
        );
        assert!("".parse::<Profile>().is_err());
    }
}
