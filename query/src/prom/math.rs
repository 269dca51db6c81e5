//! Prometheus's numeric rules, as its engine applies them: `rate`/`increase`/`delta`
//! extrapolation, `irate`, quantiles over values and over histogram buckets, means and
//! variances, and how sample values are printed.

pub(super) fn parse_le(v: &str) -> Option<f64> {
    match v {
        "+Inf" | "Inf" | "+inf" | "inf" => Some(f64::INFINITY),
        _ => v.parse().ok(),
    }
}

pub(super) fn mean(xs: impl Iterator<Item = f64>) -> f64 {
    let (mut m, mut n) = (0.0, 0.0);
    for x in xs {
        n += 1.0;
        m += (x - m) / n;
    }
    m
}

pub(super) fn variance(xs: impl Iterator<Item = f64> + Clone) -> f64 {
    let m = mean(xs.clone());
    mean(xs.map(|x| (x - m) * (x - m)))
}

/// Prometheus's `quantile`: linear between the closest ranks.
pub(super) fn quantile(q: f64, mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    xs.sort_by(f64::total_cmp);
    let rank = q * (xs.len() - 1) as f64;
    let lower = rank.floor().max(0.0) as usize;
    let upper = (lower + 1).min(xs.len() - 1);
    let w = rank - rank.floor();
    xs[lower] * (1.0 - w) + xs[upper] * w
}

/// Prometheus's `bucketQuantile` over (upper bound, cumulative count) buckets.
pub(super) fn bucket_quantile(q: f64, mut b: Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound are one; counts never fall.
    let mut c: Vec<(f64, f64)> = Vec::with_capacity(b.len());
    for (le, n) in b {
        match c.last_mut() {
            Some(last) if last.0 == le => last.1 += n,
            _ => c.push((le, n)),
        }
    }
    for i in 1..c.len() {
        if c[i].1 < c[i - 1].1 {
            c[i].1 = c[i - 1].1;
        }
    }
    if c.len() < 2 {
        return f64::NAN;
    }
    let total = c[c.len() - 1].1;
    if total == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * total;
    let i = c[..c.len() - 1].partition_point(|x| x.1 < rank);
    if i == c.len() - 1 {
        return c[c.len() - 2].0;
    }
    if i == 0 && c[0].0 <= 0.0 {
        return c[0].0;
    }
    let (mut start, end, mut count) = (0.0, c[i].0, c[i].1);
    if i > 0 {
        start = c[i - 1].0;
        count -= c[i - 1].1;
        rank -= c[i - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// `rate`, `increase` and `delta`, extrapolated to the window's edges as Prometheus does.
pub(super) fn extrapolated(w: &[(i64, f64)], range_start: i64, range_end: i64, counter: bool, rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.1 - first.1;
    if counter {
        let mut prev = 0.0;
        for s in w {
            if s.1 < prev {
                result += prev;
            }
            prev = s.1;
        }
    }
    let mut to_start = (first.0 - range_start) as f64 / 1e3;
    let to_end = (range_end - last.0) as f64 / 1e3;
    let sampled = (last.0 - first.0) as f64 / 1e3;
    let average = sampled / (w.len() - 1) as f64;
    if counter && result > 0.0 && first.1 >= 0.0 {
        let to_zero = sampled * (first.1 / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { average / 2.0 };
    interval += if to_end < threshold { to_end } else { average / 2.0 };
    result *= interval / sampled;
    if rate {
        result /= (range_end - range_start) as f64 / 1e3;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two samples.
pub(super) fn instant_rate(w: &[(i64, f64)], rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
    let dt = (last.0 - prev.0) as f64 / 1e3;
    if dt == 0.0 {
        return None;
    }
    let v = if rate && last.1 < prev.1 { last.1 } else { last.1 - prev.1 };
    Some(if rate { v / dt } else { v })
}

/// Sample values print as in Loki (the same Go formatting, `+Inf`, `NaN`).
pub use crate::logql::eval::{format_value, write_value};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantiles_follow_prometheus() {
        let b = vec![(0.1, 10.0), (0.5, 20.0), (1.0, 30.0), (f64::INFINITY, 40.0)];
        assert_eq!(bucket_quantile(0.5, b.clone()), 0.5);
        assert!((bucket_quantile(0.25, b.clone()) - 0.1).abs() < 1e-12);
        assert_eq!(bucket_quantile(0.99, b.clone()), 1.0);
        assert!(bucket_quantile(0.5, vec![(1.0, 3.0)]).is_nan());
        assert!(bucket_quantile(0.5, vec![(1.0, 0.0), (f64::INFINITY, 0.0)]).is_nan());
        assert_eq!(bucket_quantile(2.0, b), f64::INFINITY);
    }

    #[test]
    fn rate_extrapolates_like_prometheus() {
        // Samples every 15 s over a 60 s window starting 5 s in: counter +1 per sample.
        let w: Vec<(i64, f64)> = (0..4).map(|i| (5_000 + i * 15_000, 10.0 + i as f64)).collect();
        // increase: 3 over 45 s sampled; 5 s to the start (< 16.5 s threshold), 10 s to the end.
        let inc = extrapolated(&w, 0, 60_000, true, false).unwrap();
        assert!((inc - 3.0 * (60.0 / 45.0)).abs() < 1e-9, "{inc}");
        // A reset counts what came before it.
        let reset = [(0, 5.0), (15_000, 7.0), (30_000, 1.0)];
        assert!((extrapolated(&reset, 0, 30_000, true, false).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(instant_rate(&reset, true), Some(1.0 / 15.0));
    }
}
