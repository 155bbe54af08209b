//! What a record must satisfy before it reaches the database or the window: each breach has its own dead-letter
//! class, so one bad record from any producer is set aside instead of failing its whole batch for ever.
//!
//! PostgreSQL refuses a NUL character in text (`invalid byte sequence for encoding "UTF8": 0x00`) and an index
//! entry above about 2.7 kB (`index row size ... exceeds btree version 4 maximum 2704`); an event dated years
//! away would drag the event-time watermark with it. Checking here keeps those failures out of the transaction.

use chrono::{DateTime, TimeDelta, Utc};

use crate::event::SimulationResult;

/// The limits, from `run`'s settings.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest encoded record (its value), in bytes.
    pub max_record_bytes: usize,
    /// Largest string field, in bytes of UTF-8.
    pub max_field_bytes: usize,
    /// Oldest `occurred_at` accepted, as seconds before the wall clock.
    pub max_past_seconds: u64,
    /// Newest `occurred_at` accepted, as seconds after the wall clock.
    pub max_future_skew_seconds: u64,
}

/// Why a record was set aside: its dead-letter class and a reason naming the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// The dead-letter class.
    pub class: &'static str,
    /// What is wrong, for the dead letter's message header.
    pub reason: String,
}

impl Limits {
    /// Checks the encoded size before decoding: a huge record is refused unread.
    pub fn check_size(&self, payload_len: usize) -> Result<(), Breach> {
        if payload_len > self.max_record_bytes {
            return Err(Breach {
                class: "record_too_large",
                reason: format!("the record has {payload_len} bytes, more than the limit of {}", self.max_record_bytes),
            });
        }
        Ok(())
    }

    /// Checks a decoded event's strings and time against the limits, `now` being the wall clock.
    pub fn check_event(&self, event: &SimulationResult, now: DateTime<Utc>) -> Result<(), Breach> {
        for (field, value) in string_fields(event) {
            if value.contains('\0') {
                return Err(Breach {
                    class: "nul_character",
                    reason: format!("{field} holds a NUL character, which PostgreSQL text cannot store"),
                });
            }
            if value.len() > self.max_field_bytes {
                return Err(Breach {
                    class: "field_too_long",
                    reason: format!(
                        "{field} has {} bytes, more than the limit of {} (COSTSIM_MAX_FIELD_BYTES)",
                        value.len(),
                        self.max_field_bytes
                    ),
                });
            }
        }
        // No bound when the limit reaches past the calendar's range.
        if now.checked_sub_signed(seconds(self.max_past_seconds)).is_some_and(|oldest| event.occurred_at < oldest) {
            return Err(Breach {
                class: "past_event",
                reason: format!(
                    "occurred_at {} is more than {} s before the processor's clock (COSTSIM_MAX_PAST_SECONDS)",
                    event.occurred_at, self.max_past_seconds
                ),
            });
        }
        if now
            .checked_add_signed(seconds(self.max_future_skew_seconds))
            .is_some_and(|latest| event.occurred_at > latest)
        {
            return Err(Breach {
                class: "future_event",
                reason: format!(
                    "occurred_at {} is more than {} s ahead of the processor's clock",
                    event.occurred_at, self.max_future_skew_seconds
                ),
            });
        }
        Ok(())
    }
}

/// Seconds as a time span, saturating instead of overflowing for absurd settings.
fn seconds(s: u64) -> TimeDelta {
    TimeDelta::try_seconds(i64::try_from(s).unwrap_or(i64::MAX)).unwrap_or(TimeDelta::MAX)
}

/// Every string the event carries into the database, by its schema field name.
fn string_fields(event: &SimulationResult) -> [(&'static str, &str); 7] {
    [
        ("event_id", &event.event_id),
        ("tenant_id", &event.tenant_id),
        ("run_id", event.run_id.as_deref().unwrap_or_default()),
        ("input_hash", &event.input_hash),
        ("model_version", &event.model_version),
        ("adapter_version", &event.adapter_version),
        ("commit_sha", event.commit_sha.as_deref().unwrap_or_default()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{DriftProfile, Generator, GeneratorConfig};

    const LIMITS: Limits =
        Limits { max_record_bytes: 1000, max_field_bytes: 64, max_past_seconds: 86_400, max_future_skew_seconds: 300 };

    fn event(now: DateTime<Utc>) -> SimulationResult {
        let config = GeneratorConfig {
            count: 1,
            profile: DriftProfile::Steady,
            start: now,
            events_per_second: 1.0,
            seed: 1,
            tenants: 1,
        };
        Generator::new(config).next().unwrap()
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-03T12:00:00Z").unwrap().into()
    }

    #[test]
    fn a_good_event_passes_and_the_size_limit_is_inclusive() {
        assert_eq!(LIMITS.check_event(&event(now()), now()), Ok(()));
        assert_eq!(LIMITS.check_size(1000), Ok(()));
        assert_eq!(LIMITS.check_size(1001).unwrap_err().class, "record_too_large");
    }

    #[test]
    fn each_breach_has_its_class_and_names_the_field() {
        let mut nul = event(now());
        nul.tenant_id = "acme\0".into();
        let breach = LIMITS.check_event(&nul, now()).unwrap_err();
        assert_eq!((breach.class, breach.reason.starts_with("tenant_id")), ("nul_character", true));

        let mut long = event(now());
        long.run_id = Some("r".repeat(65));
        let breach = LIMITS.check_event(&long, now()).unwrap_err();
        assert_eq!(breach.class, "field_too_long");
        assert!(breach.reason.contains("run_id has 65 bytes"), "{}", breach.reason);
        long.run_id = Some("r".repeat(64));
        assert_eq!(LIMITS.check_event(&long, now()), Ok(()));
    }

    #[test]
    fn events_too_old_or_too_far_ahead_are_refused_at_the_edges() {
        let mut e = event(now());
        e.occurred_at = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z").unwrap().into();
        assert_eq!(LIMITS.check_event(&e, now()).unwrap_err().class, "past_event");
        e.occurred_at = now() - TimeDelta::seconds(86_400);
        assert_eq!(LIMITS.check_event(&e, now()), Ok(()));
        e.occurred_at = now() + TimeDelta::seconds(301);
        assert_eq!(LIMITS.check_event(&e, now()).unwrap_err().class, "future_event");
        e.occurred_at = now() + TimeDelta::seconds(300);
        assert_eq!(LIMITS.check_event(&e, now()), Ok(()));
    }

    #[test]
    fn absurd_limits_saturate_instead_of_overflowing() {
        let lax = Limits { max_past_seconds: u64::MAX, max_future_skew_seconds: u64::MAX, ..LIMITS };
        assert_eq!(lax.check_event(&event(now()), now()), Ok(()));
    }
}
