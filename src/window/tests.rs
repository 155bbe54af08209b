use super::*;
use proptest::prelude::*;

fn at(seconds: i64) -> DateTime<Utc> {
    DateTime::UNIX_EPOCH + TimeDelta::seconds(seconds)
}

/// The default shape: 10 s buckets in a 5 min window.
fn spec() -> WindowSpec {
    WindowSpec::new(TimeDelta::seconds(10), TimeDelta::minutes(5)).unwrap()
}

#[test]
fn buckets_are_aligned_on_the_epoch_also_before_it() {
    let spec = spec();
    assert_eq!(spec.bucket_start(at(25)), at(20));
    assert_eq!(spec.bucket_start(at(20)), at(20));
    assert_eq!(spec.bucket_start(at(-1)), at(-10));
    assert_eq!(spec.bucket_start(at(0) + TimeDelta::milliseconds(9_999)), at(0));
}

#[test]
fn a_window_must_be_a_whole_number_of_buckets() {
    assert_eq!(
        WindowSpec::new(TimeDelta::seconds(7), TimeDelta::seconds(60)),
        Err(WindowError::NotAMultiple { window_ms: 60_000, bucket_ms: 7_000 })
    );
    assert_eq!(WindowSpec::new(TimeDelta::zero(), TimeDelta::seconds(60)), Err(WindowError::EmptyBucket(0)));
    assert!(WindowSpec::new(TimeDelta::seconds(10), TimeDelta::zero()).is_err());
    assert_eq!(spec().length(), TimeDelta::minutes(5));
}

#[test]
fn the_first_event_closes_nothing_and_the_first_event_past_a_bucket_end_closes_it() {
    let mut window = Window::new(spec());
    assert_eq!(window.advance(at(3)).count(), 0);
    assert_eq!(window.advance(at(9)).count(), 0);
    assert_eq!(window.advance(at(10)).collect::<Vec<_>>(), vec![at(10)]);
}

#[test]
fn a_jump_in_event_time_closes_every_bucket_in_between_oldest_first() {
    let mut window = Window::new(spec());
    window.advance(at(5));
    assert_eq!(window.advance(at(41)).collect::<Vec<_>>(), vec![at(10), at(20), at(30), at(40)]);
}

#[test]
fn event_time_never_moves_back() {
    let mut window = Window::new(spec());
    window.advance(at(100));
    assert_eq!(window.advance(at(50)).count(), 0);
    assert_eq!(window.advance(at(110)).collect::<Vec<_>>(), vec![at(110)]);
}

#[test]
fn a_late_event_lands_in_its_bucket_while_that_bucket_is_inside_the_window() {
    let mut window = Window::new(spec());
    window.advance(at(600));
    // The window of the newest bucket [600, 610) starts at 310.
    assert_eq!(window.record(at(315), Observation::Drift(0.5)), Placement::Recorded);
    assert_eq!(window.record(at(309), Observation::Drift(0.5)), Placement::TooLate);
    assert_eq!(window.too_late(), 1);
    assert_eq!(window.summary_ending(at(610)).sample_count, 1);
}

#[test]
fn a_summary_covers_exactly_the_buckets_of_its_window() {
    let mut window = Window::new(spec());
    for second in (0..400).step_by(5) {
        window.advance(at(second));
        window.record(at(second), Observation::Drift(f64::from(second as i32) / 1000.0));
    }
    let summary = window.summary_ending(at(390));
    assert_eq!((summary.start, summary.end), (at(90), at(390)));
    assert_eq!(summary.sample_count, 60);
    assert_eq!(summary.max_drift, Some(0.385));
}

#[test]
fn buckets_that_leave_the_window_are_evicted() {
    let mut window = Window::new(spec());
    window.advance(at(0));
    window.record(at(0), Observation::SchemaError);
    window.advance(at(299));
    assert_eq!(window.buckets().count(), 1);
    window.advance(at(300));
    window.advance(at(310));
    assert_eq!(window.buckets().count(), 0);
}

#[test]
fn watermarks_of_several_partitions_follow_the_slowest() {
    let mut marks = Watermarks::new();
    assert_eq!(marks.merged(), None);
    marks.observe(0, at(100));
    marks.observe(1, at(40));
    marks.observe(1, at(30));
    assert_eq!(marks.merged(), Some(at(40)));
    marks.remove(1);
    assert_eq!(marks.merged(), Some(at(100)));
}

#[test]
fn windows_of_different_shapes_do_not_merge() {
    let other = WindowSpec::new(TimeDelta::seconds(5), TimeDelta::minutes(5)).unwrap();
    let err = Window::new(spec()).merge(&Window::new(other)).unwrap_err();
    assert!(matches!(err, WindowError::DifferentShapes { .. }), "{err}");
}

fn observation() -> impl Strategy<Value = Observation> {
    prop_oneof![
        6 => (0.0..1.0f64).prop_map(Observation::Drift),
        2 => Just(Observation::Drift(0.0)),
        1 => Just(Observation::SchemaError),
        1 => Just(Observation::NoScore),
    ]
}

/// Feeds events in the given order, closing buckets as a single stream would.
fn window_of(events: &[(DateTime<Utc>, Observation)]) -> Window {
    let mut window = Window::new(spec());
    for (time, observation) in events {
        window.advance(*time);
        window.record(*time, *observation);
    }
    window
}

fn per_bucket(window: &Window) -> Vec<(DateTime<Utc>, WindowSummary)> {
    let bucket = window.spec().bucket();
    window.buckets().map(|(start, b)| (start, WindowSummary::of_buckets(start, start + bucket, [(start, b)]))).collect()
}

proptest! {
    #[test]
    fn windows_of_partitions_merge_into_the_window_of_the_merged_stream(
        events in prop::collection::vec((0i64..900_000, 0i32..3, 0i64..200_000, observation()), 1..300)
    ) {
        // Each event: time (ms), partition, arrival jitter (< 200 s, less than the window minus a bucket, so the
        // merged stream's disorder never makes an event too late), and what it carries.
        let time = |ms: i64| DateTime::UNIX_EPOCH + TimeDelta::milliseconds(ms);
        let mut merged: Vec<_> = events.iter().map(|(ms, _, jitter, o)| (ms + jitter, time(*ms), *o)).collect();
        merged.sort_by_key(|(arrival, t, _)| (*arrival, *t));
        let merged: Vec<_> = merged.into_iter().map(|(_, t, o)| (t, o)).collect();
        let whole = window_of(&merged);

        let mut combined: Option<Window> = None;
        for partition in 0..3 {
            let mut own: Vec<_> =
                events.iter().filter(|e| e.1 == partition).map(|(ms, _, _, o)| (time(*ms), *o)).collect();
            own.sort_by_key(|(t, _)| *t);
            let window = window_of(&own);
            match &mut combined {
                None => combined = Some(window),
                Some(c) => c.merge(&window).unwrap(),
            }
        }
        let combined = combined.unwrap();

        prop_assert_eq!(whole.too_late(), 0);
        prop_assert_eq!(combined.too_late(), 0);
        prop_assert_eq!(per_bucket(&combined), per_bucket(&whole));
        let last = whole.buckets().last().map(|(s, _)| s + whole.spec().bucket()).unwrap();
        prop_assert_eq!(combined.summary_ending(last), whole.summary_ending(last));
    }

    #[test]
    fn merging_windows_is_commutative(
        a in prop::collection::vec((0i64..400_000, observation()), 0..100),
        b in prop::collection::vec((0i64..400_000, observation()), 0..100),
    ) {
        let sorted = |v: &[(i64, Observation)]| {
            let mut v: Vec<_> =
                v.iter().map(|(ms, o)| (DateTime::UNIX_EPOCH + TimeDelta::milliseconds(*ms), *o)).collect();
            v.sort_by_key(|(t, _)| *t);
            window_of(&v)
        };
        let (wa, wb) = (sorted(&a), sorted(&b));
        let mut ab = wa.clone();
        ab.merge(&wb).unwrap();
        let mut ba = wb.clone();
        ba.merge(&wa).unwrap();
        prop_assert_eq!(per_bucket(&ab), per_bucket(&ba));
    }
}
