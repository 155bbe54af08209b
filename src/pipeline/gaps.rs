//! Offsets a batch skips: between the consumed offset and the batch's first new record, or between two of its
//! records. librdkafka skips offsets only inside a read it vouches for (see [`super::flow::Batch`]), so each gap
//! holds either records the broker deleted before they were read (retention: the gap starts below the partition's
//! log start) or offsets without a readable record (transaction markers, aborted or compacted records).

use std::ops::Range;

/// The offsets from `start` that `offsets` (ascending, each at least `start`) skip.
pub fn skipped(start: i64, offsets: impl IntoIterator<Item = i64>) -> Vec<Range<i64>> {
    let mut next = start;
    let mut gaps = Vec::new();
    for offset in offsets {
        if offset > next {
            gaps.push(next..offset);
        }
        next = next.max(offset + 1);
    }
    gaps
}

/// A gap split at the partition's log start: the part below it was deleted unread, the rest holds no readable
/// record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// Offsets whose records the broker deleted before they were read.
    pub deleted: Option<Range<i64>>,
    /// Offsets that hold no record a consumer may read.
    pub unreadable: Option<Range<i64>>,
}

/// Splits `gap` at `log_start`.
pub fn split(gap: Range<i64>, log_start: i64) -> Split {
    let cut = log_start.clamp(gap.start, gap.end);
    let non_empty = |r: Range<i64>| (!r.is_empty()).then_some(r);
    Split { deleted: non_empty(gap.start..cut), unreadable: non_empty(cut..gap.end) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_offsets_from_the_start_skip_nothing() {
        assert!(skipped(5, [5, 6, 7]).is_empty());
        assert!(skipped(5, []).is_empty());
    }

    #[test]
    fn a_first_record_past_the_start_and_holes_between_records_are_gaps() {
        assert_eq!(skipped(5, [8, 9, 11, 12, 20]), [5..8, 10..11, 13..20]);
    }

    #[test]
    fn a_gap_below_the_log_start_was_deleted_and_the_rest_is_unreadable() {
        assert_eq!(split(10..20, 15), Split { deleted: Some(10..15), unreadable: Some(15..20) });
        assert_eq!(split(10..20, 30), Split { deleted: Some(10..20), unreadable: None });
        assert_eq!(split(10..20, 3), Split { deleted: None, unreadable: Some(10..20) });
        assert_eq!(split(10..20, 10), Split { deleted: None, unreadable: Some(10..20) });
    }
}
