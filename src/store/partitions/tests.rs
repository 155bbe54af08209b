use chrono::{DateTime, Utc};

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn bounds(from: &str, to: &str) -> Bounds {
    Bounds { from: at(from), to: at(to) }
}

fn partition(from: &str, to: &str) -> Partition {
    let b = bounds(from, to);
    Partition { name: b.partition_name(), bounds: Some((Some(b.from), Some(b.to))) }
}

#[test]
fn slots_start_on_the_hour_the_utc_day_and_the_iso_monday() {
    let now = at("2026-12-03T13:45:10Z"); // a Thursday
    assert_eq!(Granularity::Hourly.floor(now), at("2026-12-03T13:00:00Z"));
    assert_eq!(Granularity::Daily.floor(now), at("2026-12-03T00:00:00Z"));
    assert_eq!(Granularity::Weekly.floor(now), at("2026-11-30T00:00:00Z"));
    assert_eq!(Granularity::Weekly.floor(at("2026-11-30T00:00:00Z")), at("2026-11-30T00:00:00Z"));
}

#[test]
fn slots_cover_from_the_slot_of_now_to_the_slot_of_the_horizon() {
    let slots = Granularity::Daily.slots(at("2026-12-03T13:45:00Z"), at("2026-12-06T13:45:00Z"));
    assert_eq!(slots.len(), 4);
    assert_eq!(slots[0], bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z"));
    assert_eq!(slots[3], bounds("2026-12-06T00:00:00Z", "2026-12-07T00:00:00Z"));
}

#[test]
fn partitions_are_named_by_their_bounds_in_utc_hours() {
    assert_eq!(
        bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z").partition_name(),
        "costsim_provenance_2026120300_2026120400"
    );
}

#[test]
fn a_pass_creates_only_what_no_partition_covers() {
    let existing = [partition("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z")];
    let wanted = Granularity::Daily.slots(at("2026-12-03T10:00:00Z"), at("2026-12-04T10:00:00Z"));
    assert_eq!(plan_creations(&existing, &wanted), [bounds("2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z")]);
    let all = [existing[0].clone(), partition("2026-12-04T00:00:00Z", "2026-12-05T00:00:00Z")];
    assert!(plan_creations(&all, &wanted).is_empty());
}

#[test]
fn a_changed_granularity_fills_the_gaps_without_overlapping() {
    // Hourly partitions cover the first six hours of the day; daily is asked for.
    let existing = [
        partition("2026-12-03T00:00:00Z", "2026-12-03T03:00:00Z"),
        partition("2026-12-03T04:00:00Z", "2026-12-03T06:00:00Z"),
    ];
    let wanted = [bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z")];
    assert_eq!(
        plan_creations(&existing, &wanted),
        [
            bounds("2026-12-03T03:00:00Z", "2026-12-03T04:00:00Z"),
            bounds("2026-12-03T06:00:00Z", "2026-12-04T00:00:00Z")
        ]
    );
}

#[test]
fn the_default_partition_and_unbounded_sides_are_respected() {
    let existing = [
        Partition { name: "costsim_provenance_default".into(), bounds: None },
        Partition { name: "old".into(), bounds: Some((None, Some(at("2026-12-03T12:00:00Z")))) },
    ];
    let wanted = [bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z")];
    assert_eq!(plan_creations(&existing, &wanted), [bounds("2026-12-03T12:00:00Z", "2026-12-04T00:00:00Z")]);
    assert!(expired(&existing, at("2026-12-03T11:00:00Z")).is_empty());
    assert_eq!(expired(&existing, at("2026-12-03T12:00:00Z"))[0].name, "old");
}

#[test]
fn retention_drops_partitions_whose_whole_range_is_past_the_cutoff() {
    let existing = [
        partition("2026-11-01T00:00:00Z", "2026-11-02T00:00:00Z"),
        partition("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z"),
    ];
    let dropped = expired(&existing, at("2026-11-02T12:00:00Z"));
    assert_eq!(dropped, [existing[0].clone()]);
}

#[test]
fn overlapping_wanted_slots_are_planned_once() {
    let wanted = [
        bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z"),
        bounds("2026-12-03T05:00:00Z", "2026-12-03T06:00:00Z"),
    ];
    assert_eq!(plan_creations(&[], &wanted), [bounds("2026-12-03T00:00:00Z", "2026-12-04T00:00:00Z")]);
}

#[test]
fn catalog_bounds_read_back_exactly() {
    assert_eq!(parse_bound("DEFAULT").unwrap(), None);
    assert_eq!(
        parse_bound("FOR VALUES FROM ('2026-12-03 00:00:00+00') TO ('2026-12-04 00:00:00+00')").unwrap(),
        Some((Some(at("2026-12-03T00:00:00Z")), Some(at("2026-12-04T00:00:00Z"))))
    );
    assert_eq!(
        parse_bound("FOR VALUES FROM (MINVALUE) TO ('2026-12-04 00:00:00.5+00')").unwrap(),
        Some((None, Some(at("2026-12-04T00:00:00.5Z"))))
    );
    assert!(parse_bound("FOR VALUES IN ('a')").is_err());
}
