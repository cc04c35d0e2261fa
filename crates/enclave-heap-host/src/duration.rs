//! Durations written the way Prometheus writes them (`200ms`, `1s`, `5m`, `1h30m`).
//!
//! Flags and source URLs share this one parser so that an operator writes every duration the same
//! way, in the syntax they already use in `prometheus.yml`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A duration in Prometheus' syntax: one or more `<number><unit>` parts, units in descending
/// order, each at most once: `y` (365 days), `w`, `d`, `h`, `m`, `s`, `ms`. `0` alone is zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct PromDuration(pub Duration);

/// Why a string is not a Prometheus duration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (write it as Prometheus does, e.g. 200ms, 1s, 5m, 1h30m)"
)]
pub struct DurationParseError {
    input: String,
    reason: &'static str,
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

impl FromStr for PromDuration {
    type Err = DurationParseError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let fail = |reason| DurationParseError {
            input: input.to_owned(),
            reason,
        };
        if input == "0" {
            return Ok(Self(Duration::ZERO));
        }
        if input.is_empty() {
            return Err(fail("it is empty"));
        }
        let mut rest = input;
        let mut next_unit = 0;
        let mut millis: u64 = 0;
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("expected a number"));
            }
            let number: u64 = rest[..digits]
                .parse()
                .map_err(|_| fail("number too large"))?;
            rest = &rest[digits..];
            let letters = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
            let unit = &rest[..letters];
            rest = &rest[letters..];
            let position = UNITS[next_unit..]
                .iter()
                .position(|(name, _)| *name == unit)
                .ok_or_else(|| {
                    if UNITS.iter().any(|(name, _)| *name == unit) {
                        fail("units must appear once each, largest first")
                    } else {
                        fail("unknown or missing unit (use y, w, d, h, m, s or ms)")
                    }
                })?;
            let (_, unit_millis) = UNITS[next_unit + position];
            next_unit += position + 1;
            millis = number
                .checked_mul(unit_millis)
                .and_then(|part| millis.checked_add(part))
                .ok_or_else(|| fail("duration too large"))?;
        }
        Ok(Self(Duration::from_millis(millis)))
    }
}

impl fmt::Display for PromDuration {
    /// Prometheus' own rendering: the largest units first, zero parts left out, `0s` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut millis = self.0.as_millis();
        if millis == 0 {
            return f.write_str("0s");
        }
        for (name, unit_millis) in UNITS {
            let unit_millis = u128::from(unit_millis);
            let count = millis / unit_millis;
            if count > 0 {
                write!(f, "{count}{name}")?;
                millis %= unit_millis;
            }
        }
        Ok(())
    }
}

impl From<PromDuration> for Duration {
    fn from(value: PromDuration) -> Self {
        value.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(input: &str) -> Result<Duration, DurationParseError> {
        input.parse::<PromDuration>().map(Duration::from)
    }

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse("200ms").unwrap(), Duration::from_millis(200));
        assert_eq!(parse("1s").unwrap(), Duration::from_secs(1));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(parse("2w").unwrap(), Duration::from_secs(14 * 86_400));
        assert_eq!(parse("1y").unwrap(), Duration::from_secs(365 * 86_400));
        assert_eq!(parse("1m1s1ms").unwrap(), Duration::from_millis(61_001));
        assert_eq!(parse("0").unwrap(), Duration::ZERO);
        assert_eq!(parse("0s").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_malformed_durations_with_a_reason() {
        for bad in [
            "",
            "1",
            "s",
            "1.5s",
            "1x",
            "1s1m",
            "1s1s",
            "-1s",
            "1 s",
            "99999999999999999999y",
        ] {
            let err = parse(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
        assert!(
            parse("1s1m")
                .unwrap_err()
                .to_string()
                .contains("largest first")
        );
        assert!(
            parse("1x")
                .unwrap_err()
                .to_string()
                .contains("unknown or missing unit")
        );
    }

    #[test]
    fn displays_like_prometheus_and_round_trips() {
        for (input, shown) in [
            ("200ms", "200ms"),
            ("90s", "1m30s"),
            ("0", "0s"),
            ("1h0m", "1h"),
            ("25h", "1d1h"),
        ] {
            let duration: PromDuration = input.parse().unwrap();
            assert_eq!(duration.to_string(), shown);
            assert_eq!(shown.parse::<PromDuration>().unwrap(), duration);
        }
    }
}
