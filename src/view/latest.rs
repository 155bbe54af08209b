//! The pure parts of following the state topic: keeping the newest version per breaker, and the fail-open answer
//! with its freshness rule. No I/O and no clock: `now` is a parameter.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::event::BreakerState;

/// How a record's version compares with the newest one already seen for its breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first record of the breaker, or a newer version: it is the breaker's state now.
    Newer,
    /// The same version again (the relay publishes at least once): dropped.
    Duplicate {
        /// The newest version seen.
        newest: i64,
    },
    /// A version older than one already seen (a stale copy, or a replay): dropped.
    Older {
        /// The newest version seen.
        newest: i64,
    },
}

/// The newest version seen per breaker.
#[derive(Debug, Clone, Default)]
pub struct Latest {
    versions: HashMap<String, i64>,
}

impl Latest {
    /// Records a breaker's version if it is newer than any seen, and says how it compared.
    pub fn observe(&mut self, breaker: &str, version: i64) -> Seen {
        match self.versions.get_mut(breaker) {
            None => {
                self.versions.insert(breaker.to_owned(), version);
                Seen::Newer
            }
            Some(newest) if version > *newest => {
                *newest = version;
                Seen::Newer
            }
            Some(newest) if version == *newest => Seen::Duplicate { newest: *newest },
            Some(newest) => Seen::Older { newest: *newest },
        }
    }
}

/// Whether a view whose completeness was last confirmed at `confirmed_at` may still be trusted at `now`: it must
/// have been confirmed, no more than `max_age` ago.
pub fn is_fresh(confirmed_at: Option<Instant>, now: Instant, max_age: Duration) -> bool {
    confirmed_at.is_some_and(|at| now.saturating_duration_since(at) <= max_age)
}

/// The fail-open answer to "is V2 disabled?": yes only when the newest known state is open and the view is fresh;
/// an unknown breaker, a stale view, closed and half-open (V2 runs on probation) all answer no.
pub fn is_disabled(state: Option<BreakerState>, fresh: bool) -> bool {
    fresh && state == Some(BreakerState::Open)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_version_of_a_breaker_is_newer_whatever_its_number() {
        let mut latest = Latest::default();
        assert_eq!(latest.observe("a", 7), Seen::Newer);
        assert_eq!(latest.observe("b", 1), Seen::Newer);
    }

    #[test]
    fn a_repeated_version_is_a_duplicate_and_an_older_one_is_dropped_without_moving_back() {
        let mut latest = Latest::default();
        assert_eq!(latest.observe("a", 3), Seen::Newer);
        assert_eq!(latest.observe("a", 3), Seen::Duplicate { newest: 3 });
        assert_eq!(latest.observe("a", 2), Seen::Older { newest: 3 });
        assert_eq!(latest.observe("a", 4), Seen::Newer);
        assert_eq!(latest.observe("a", 3), Seen::Older { newest: 4 });
    }

    #[test]
    fn breakers_keep_their_versions_apart() {
        let mut latest = Latest::default();
        latest.observe("a", 9);
        assert_eq!(latest.observe("b", 2), Seen::Newer);
        assert_eq!(latest.observe("a", 9), Seen::Duplicate { newest: 9 });
    }

    #[test]
    fn a_view_is_fresh_up_to_max_age_after_its_confirmation_and_never_before_one() {
        let confirmed = Instant::now();
        let max_age = Duration::from_secs(30);
        assert!(is_fresh(Some(confirmed), confirmed, max_age));
        assert!(is_fresh(Some(confirmed), confirmed + max_age, max_age));
        assert!(!is_fresh(Some(confirmed), confirmed + max_age + Duration::from_millis(1), max_age));
        assert!(!is_fresh(None, confirmed, max_age));
    }

    #[test]
    fn a_confirmation_later_than_now_counts_as_fresh() {
        let now = Instant::now();
        assert!(is_fresh(Some(now + Duration::from_secs(1)), now, Duration::ZERO));
    }

    #[test]
    fn only_a_fresh_open_state_disables_v2() {
        assert!(is_disabled(Some(BreakerState::Open), true));
        assert!(!is_disabled(Some(BreakerState::Open), false), "stale: fail open");
        assert!(!is_disabled(None, true), "unknown: fail open");
        assert!(!is_disabled(Some(BreakerState::Closed), true));
        assert!(!is_disabled(Some(BreakerState::HalfOpen), true), "half-open runs V2 on probation");
    }
}
