//! How far V2's costs are from V1's over many comparisons: the KL divergence of their cost histograms and the
//! nearest-rank percentiles of the cost differences, shared by the canary and the divergence report. Pure.
//!
//! # KL divergence (docs/DOMAIN.md, *KL divergence*, with empty bins made stable)
//! P holds the V1 costs and Q the V2 costs of the same comparisons. Each cost is clamped to at least 1, and the
//! range `[min, max]` over P ∪ Q is cut into [`BINS`] equal-width bins (`bin = min(⌊(v − min) / width⌋, 9)`);
//! each histogram is normalized. Then `KL = Σ_{p_i > 1e-10} p_i · ln((p_i + 1e-10) / (q_i + 1e-10))`, floored
//! at 0, and 0 when either side is empty or every cost is the same.
//!
//! The older system's formula blows up when Q has no mass in a bin where P has some: `ln(p_i / 1e-10)` adds about
//! 23 per unit of mass, so the value says more about the epsilon than about the models. Here such a bin counts as
//! holding **half a sample** of Q (`q_i = 1 / (2·n_Q)`), the least mass a sample of that size could have shown
//! there, so the term is bounded by `p_i · ln(2·n_Q·p_i)` (at most ln 200 ≈ 5.3 per unit of mass for a canary of
//! 100 samples). Bins where Q has mass keep the exact formula, so the three reference vectors still give 0,
//! ln 5 and ln 3.

/// Number of equal-width bins of the cost histograms.
pub const BINS: usize = 10;
/// The epsilon of the older system's formula, kept so both agree wherever Q covers P.
const EPSILON: f64 = 1e-10;

/// The common binning of two cost samples: the lower end and the width of the bins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Binning {
    /// The smallest clamped cost over both samples.
    pub min: f64,
    /// `(max − min) / BINS`, positive.
    pub width: f64,
}

impl Binning {
    /// The binning over both samples' clamped range; `None` when a sample is empty or all costs are equal (the
    /// divergence is then 0).
    pub fn over(min: f64, max: f64) -> Option<Binning> {
        let (min, max) = (clamp(min), clamp(max));
        (max > min).then(|| Binning { min, width: (max - min) / BINS as f64 })
    }

    /// The bin of a cost. PostgreSQL computes the same expression in float8 for the divergence report
    /// (`store::divergence`), so both paths bin a cost identically.
    pub fn bin(&self, cost: f64) -> usize {
        (((clamp(cost) - self.min) / self.width) as usize).min(BINS - 1)
    }
}

/// A cost as the histograms see it: at least 1.
pub fn clamp(cost: f64) -> f64 {
    cost.max(1.0)
}

/// Counts per bin of P (V1 costs) and Q (V2 costs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Histograms {
    /// V1 costs per bin.
    pub p: [u64; BINS],
    /// V2 costs per bin.
    pub q: [u64; BINS],
}

impl Histograms {
    /// Bins both samples over their common range; all zero when either is empty or all costs are equal.
    pub fn of(p: &[f64], q: &[f64]) -> Histograms {
        let mut histograms = Histograms::default();
        let all = p.iter().chain(q);
        let min = all.clone().copied().fold(f64::INFINITY, f64::min);
        let max = all.copied().fold(f64::NEG_INFINITY, f64::max);
        if p.is_empty() || q.is_empty() {
            return histograms;
        }
        let Some(binning) = Binning::over(min, max) else { return histograms };
        for &cost in p {
            histograms.p[binning.bin(cost)] += 1;
        }
        for &cost in q {
            histograms.q[binning.bin(cost)] += 1;
        }
        histograms
    }

    /// KL(P ‖ Q) as the module doc defines it, unrounded.
    pub fn kl(&self) -> f64 {
        let (n_p, n_q) = (self.p.iter().sum::<u64>(), self.q.iter().sum::<u64>());
        if n_p == 0 || n_q == 0 {
            return 0.0;
        }
        let empty_q = 1.0 / (2.0 * n_q as f64);
        let mut kl = 0.0;
        for (&p, &q) in self.p.iter().zip(&self.q) {
            let p = p as f64 / n_p as f64;
            if p <= EPSILON {
                continue;
            }
            let q = if q == 0 { empty_q } else { q as f64 / n_q as f64 };
            kl += p * ((p + EPSILON) / (q + EPSILON)).ln();
        }
        kl.max(0.0)
    }
}

/// KL(P ‖ Q) of V1 costs P and V2 costs Q (module doc), rounded to 4 decimal places as reports show it.
pub fn kl_divergence(p: &[f64], q: &[f64]) -> f64 {
    round_to(Histograms::of(p, q).kl(), 4)
}

/// Rounds half away from zero to `places` decimal places.
pub fn round_to(value: f64, places: i32) -> f64 {
    let scale = 10f64.powi(places);
    (value * scale).round() / scale
}

/// The 0-based index of the nearest-rank percentile `q` in `n` sorted values, as the older system picks it
/// (`sorted[int(n·q)]`: the median of 4 values is the third); `None` for no values.
pub fn rank(n: usize, q: f64) -> Option<usize> {
    (n > 0).then(|| ((n as f64 * q) as usize).min(n - 1))
}

/// The nearest-rank percentile `q` of already sorted values ([`rank`]).
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    rank(sorted.len(), q).map(|i| sorted[i])
}

#[cfg(test)]
mod tests {
    use super::*;

    const LN5: f64 = 1.6094;
    const LN3: f64 = 1.0986;

    #[test]
    fn the_three_vectors_of_the_domain_reference_give_zero_ln5_and_ln3() {
        assert_eq!(kl_divergence(&[100.0; 5], &[100.0; 5]), 0.0);
        assert_eq!(kl_divergence(&[100.0; 5], &[50.0, 150.0, 75.0, 125.0, 100.0]), LN5);
        assert_eq!(kl_divergence(&[100.0, 100.0, 100.0], &[100.0, 105.0, 150.0]), LN3);
    }

    #[test]
    fn an_empty_side_or_a_single_cost_is_no_divergence() {
        assert_eq!(kl_divergence(&[], &[5.0]), 0.0);
        assert_eq!(kl_divergence(&[5.0], &[]), 0.0);
        assert_eq!(kl_divergence(&[0.0, 1.0], &[0.5, 1.0]), 0.0, "everything clamps to 1");
    }

    #[test]
    fn an_empty_q_bin_counts_as_half_a_sample_instead_of_blowing_up() {
        // P all at 100, Q all at 200: every unit of P's mass sits in a bin where Q has none.
        let kl = kl_divergence(&[100.0; 10], &[200.0; 10]);
        assert_eq!(kl, round_to((20.0f64).ln(), 4), "ln(2·n_Q·p) = ln 20");
        let old_formula = (1.0f64 / 1e-10).ln();
        assert!(kl < old_formula / 5.0, "{kl} vs {old_formula}");
    }

    #[test]
    fn kl_is_never_negative_and_is_zero_for_equal_histograms() {
        let costs = [1.0, 10.0, 20.0, 30.0, 90.0, 100.0];
        assert_eq!(kl_divergence(&costs, &costs), 0.0);
        let h = Histograms::of(&[1.0, 2.0, 3.0, 100.0], &[100.0, 100.0, 100.0, 1.0]);
        assert!(h.kl() >= 0.0);
    }

    #[test]
    fn the_top_of_the_range_falls_in_the_last_bin() {
        let binning = Binning::over(0.0, 101.0).unwrap();
        assert_eq!((binning.bin(1.0), binning.bin(101.0), binning.bin(50.9)), (0, 9, 4));
    }

    #[test]
    fn percentiles_pick_the_older_systems_nearest_rank() {
        let sorted = [1.0, 2.0, 3.0, 4.0];
        assert_eq!((percentile(&sorted, 0.5), percentile(&sorted, 0.9)), (Some(3.0), Some(4.0)));
        assert_eq!(percentile(&[7.0], 0.9), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        let ten: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!((percentile(&ten, 0.5), percentile(&ten, 0.9)), (Some(6.0), Some(10.0)));
    }
}
