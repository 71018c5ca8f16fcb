//! The statistics of an experiment report: a rate with its 95% Wilson
//! score interval, and the two-sided two-proportion z-test of a variant
//! against the control (the first variant). Each served request is one
//! trial; a request counts as clicked (or bought from) at most once, so
//! every rate is a binomial proportion.

/// z for a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// The p-value below which a difference is called significant.
pub const ALPHA: f64 = 0.05;

/// A proportion `successes / trials` and its 95% Wilson interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub value: f64,
    pub low: f64,
    pub high: f64,
}

/// The rate and its 95% Wilson score interval (0, 0, 1 with no trials).
pub fn wilson(successes: u64, trials: u64) -> Rate {
    if trials == 0 {
        return Rate {
            value: 0.0,
            low: 0.0,
            high: 1.0,
        };
    }
    let n = trials as f64;
    let p = (successes.min(trials)) as f64 / n;
    let z2 = Z95 * Z95;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = Z95 * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    Rate {
        value: p,
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    }
}

/// A variant against the control.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Rate of the variant minus rate of the control.
    pub difference: f64,
    /// Relative lift (difference / control rate; 0 when the control's is 0).
    pub lift: f64,
    pub z: f64,
    /// Two-sided p-value (1 when either side has no trials).
    pub p_value: f64,
    pub significant: bool,
}

/// The two-sided pooled two-proportion z-test of `(s1, n1)` (a variant)
/// against `(s0, n0)` (the control).
pub fn compare(s1: u64, n1: u64, s0: u64, n0: u64) -> Comparison {
    let rate = |s: u64, n: u64| {
        if n == 0 {
            0.0
        } else {
            s.min(n) as f64 / n as f64
        }
    };
    let (p1, p0) = (rate(s1, n1), rate(s0, n0));
    let difference = p1 - p0;
    let lift = if p0 > 0.0 { difference / p0 } else { 0.0 };
    let (z, p_value) = if n0 == 0 || n1 == 0 {
        (0.0, 1.0)
    } else {
        let pooled = (s0.min(n0) + s1.min(n1)) as f64 / (n0 + n1) as f64;
        let se = (pooled * (1.0 - pooled) * (1.0 / n0 as f64 + 1.0 / n1 as f64)).sqrt();
        if se == 0.0 {
            (0.0, 1.0)
        } else {
            let z = difference / se;
            (z, libm::erfc(z.abs() / std::f64::consts::SQRT_2))
        }
    };
    Comparison {
        difference,
        lift,
        z,
        p_value,
        significant: p_value < ALPHA,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_textbook() {
        // 10 of 100: Wilson 95% interval [0.0552, 0.1744].
        let r = wilson(10, 100);
        assert!((r.value - 0.1).abs() < 1e-12);
        assert!((r.low - 0.0552).abs() < 1e-4, "{r:?}");
        assert!((r.high - 0.1744).abs() < 1e-4, "{r:?}");
        assert_eq!(wilson(0, 0).high, 1.0);
        assert!(wilson(0, 50).low.abs() < 1e-12 && (wilson(50, 50).high - 1.0).abs() < 1e-12);
    }

    #[test]
    fn z_test_matches_the_textbook() {
        // 200/1000 vs 150/1000: pooled 0.175, z = 2.9424, p = 0.003257.
        let c = compare(200, 1000, 150, 1000);
        assert!((c.z - 2.9424).abs() < 1e-3, "{c:?}");
        assert!((c.p_value - 0.003257).abs() < 1e-5, "{c:?}");
        assert!(c.significant);
        assert!((c.lift - 1.0 / 3.0).abs() < 1e-9);
        let same = compare(100, 1000, 100, 1000);
        assert_eq!(same.p_value, 1.0);
        assert!(!same.significant);
        assert!(!compare(1, 0, 5, 10).significant);
    }
}
