//! Metric queries evaluated over per-series counts in time buckets.
//!
//! Each range function's log query is read once into [`Buckets`] (entries and bytes per series
//! per bucket), laid out by [`layout`] so every window `(t - range - offset, t - offset]` of
//! every step `t` is a whole number of buckets. Storage can count streams per bucket itself
//! (when the pipeline is line filters only), or rows are bucketed as they come through the
//! pipeline; the evaluation after that is the same.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

use super::labels::Labels;
use super::{AggOp, BinOp, CmpOp, Grouping, Matching, MetricExpr, RangeFn, SetOp};
use crate::vector_match::{self, Series};
use schemas::{ApiError, ErrorCode};

pub use crate::params::Steps;

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Where the buckets for one range function start, how wide each is, and how many there are.
/// Bucket `j` covers `[origin + j*width, origin + (j+1)*width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub origin: i64,
    pub width: i64,
    pub count: usize,
}

impl Layout {
    /// The read's time range: `[origin, origin + count*width)`.
    pub fn to_ns(&self) -> i64 {
        self.origin + self.count as i64 * self.width
    }
    pub fn bucket(&self, ts: i64) -> Option<usize> {
        if ts < self.origin {
            return None;
        }
        let j = ((ts - self.origin) / self.width) as usize;
        (j < self.count).then_some(j)
    }
}

/// The bucket layout for a range of `range_ns` with `offset_ns` at `steps`.
pub fn layout(steps: &Steps, range_ns: i64, offset_ns: i64) -> Layout {
    let step = if steps.len() > 1 { steps.step } else { range_ns };
    let width = gcd(range_ns, step).max(1);
    let origin = steps.start - range_ns - offset_ns + 1;
    let span = (steps.end - steps.start) + range_ns;
    Layout { origin, width, count: (span / width) as usize }
}

/// Most buckets (series × buckets per series) one query may hold: 16 bytes each.
pub const MAX_CELLS: usize = 16 << 20;

/// Entries and bytes per series per bucket, for one range function; or, for an unwrapped one,
/// the samples of each series.
#[derive(Debug, Clone)]
pub struct Buckets {
    pub series: BTreeMap<Labels, Vec<(u64, u64)>>,
    pub samples: BTreeMap<Labels, Vec<(i64, f64)>>,
    /// Most series this may hold; one more sets `overflow` instead of being added.
    limit: usize,
    pub overflow: bool,
}

impl Default for Buckets {
    fn default() -> Buckets {
        Buckets { series: BTreeMap::new(), samples: BTreeMap::new(), limit: usize::MAX, overflow: false }
    }
}

impl Buckets {
    /// At most `max_series` series, and never more than [`MAX_CELLS`] buckets in all.
    pub fn new(layout: &Layout, max_series: usize) -> Buckets {
        Buckets { limit: max_series.min(MAX_CELLS / layout.count.max(1)), ..Buckets::default() }
    }

    /// The bucket of `labels` at `at`, with one lookup of the labels.
    fn cell(&mut self, layout: &Layout, labels: Labels, at: i64) -> Option<&mut (u64, u64)> {
        let j = layout.bucket(at)?;
        let held = self.series.len();
        match self.series.entry(labels) {
            Entry::Occupied(e) => Some(&mut e.into_mut()[j]),
            Entry::Vacant(_) if held >= self.limit => {
                self.overflow = true;
                None
            }
            Entry::Vacant(e) => Some(&mut e.insert(vec![(0, 0); layout.count])[j]),
        }
    }

    pub fn add(&mut self, layout: &Layout, labels: Labels, ts: i64, bytes: u64) {
        if let Some(c) = self.cell(layout, labels, ts) {
            c.0 += 1;
            c.1 += bytes;
        }
    }

    /// A sample of an unwrapped range function.
    pub fn add_sample(&mut self, labels: Labels, ts: i64, value: f64) {
        if !self.samples.contains_key(&labels) && self.samples.len() >= self.limit {
            self.overflow = true;
            return;
        }
        self.samples.entry(labels).or_default().push((ts, value));
    }

    /// Every series' labels, counted or sampled.
    pub fn labels(&self) -> impl Iterator<Item = &Labels> {
        self.series.keys().chain(self.samples.keys())
    }

    /// How many more series this may hold.
    pub fn room(&self) -> usize {
        self.limit.saturating_sub(self.series.len())
    }

    /// A whole series of counts (entries, bytes per bucket of the layout), added to what
    /// `labels` already holds.
    pub fn add_series(&mut self, labels: Labels, cells: Vec<(u64, u64)>) {
        let held = self.series.len();
        match self.series.entry(labels) {
            Entry::Occupied(mut e) => {
                for (c, n) in e.get_mut().iter_mut().zip(cells) {
                    c.0 += n.0;
                    c.1 += n.1;
                }
            }
            Entry::Vacant(_) if held >= self.limit => self.overflow = true,
            Entry::Vacant(e) => {
                e.insert(cells);
            }
        }
    }
}

/// Values per step; `None` where a series has no point.
pub type Matrix = Vec<(Labels, Vec<Option<f64>>)>;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(f64),
    Vector(Matrix),
}

/// Evaluates `e` at `steps`; `inputs` holds one [`Buckets`] per range function, in the order
/// of [`MetricExpr::logs`].
/// Errors are coded: too many series is a limit, an expression that cannot be evaluated (an
/// aggregation of a number, an ambiguous vector match) an invalid query.
pub fn eval(e: &MetricExpr, steps: &Steps, inputs: &mut std::vec::IntoIter<Buckets>, max_series: usize) -> Result<Value, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidQuery, m);
    let missing = || ApiError::new(ErrorCode::Internal, "a range function without its input");
    let v = match e {
        MetricExpr::Number(n) => Value::Scalar(*n),
        MetricExpr::Vector(n) => Value::Vector(vec![(Labels::new(), vec![Some(*n); steps.len()])]),
        MetricExpr::Range { func: RangeFn::AbsentOverTime, log, range_ns, offset_ns, .. } => {
            let b = inputs.next().ok_or_else(missing)?;
            Value::Vector(absent(&log.selector, b, steps, *range_ns, *offset_ns))
        }
        MetricExpr::Range { func, range_ns, offset_ns, unwrap, param, .. } => {
            let b = inputs.next().ok_or_else(missing)?;
            if unwrap.is_some() {
                Value::Vector(unwrapped(*func, *param, b.samples, steps, *range_ns, *offset_ns))
            } else {
                Value::Vector(range(*func, b, steps, *range_ns, *offset_ns))
            }
        }
        MetricExpr::Agg { op, grouping, param, inner } => match eval(inner, steps, inputs, max_series)? {
            Value::Scalar(_) => return Err(invalid("aggregations need a vector, not a number".into())),
            Value::Vector(m) => Value::Vector(aggregate(*op, grouping.as_ref(), *param, m, steps.len())),
        },
        MetricExpr::Binary { op, matching, lhs, rhs } => {
            let l = eval(lhs, steps, inputs, max_series)?;
            let r = eval(rhs, steps, inputs, max_series)?;
            binary(*op, matching, l, r, steps.len()).map_err(invalid)?
        }
        MetricExpr::Compare { op, bool_mod, matching, lhs, rhs } => {
            let l = eval(lhs, steps, inputs, max_series)?;
            let r = eval(rhs, steps, inputs, max_series)?;
            compare(*op, *bool_mod, matching, l, r, steps.len()).map_err(invalid)?
        }
        MetricExpr::LabelReplace { inner, dst, replacement, src, regex } => match eval(inner, steps, inputs, max_series)? {
            Value::Vector(m) => {
                let re = super::pipeline::regex_anchored(regex).map_err(invalid)?;
                Value::Vector(from_series(vector_match::relabel(to_series(m), dst, vector_match::replaced(replacement, src, &re)).map_err(invalid)?))
            }
            Value::Scalar(_) => return Err(invalid("label_replace needs a vector, not a number".into())),
        },
        MetricExpr::Sort { desc, inner } => match eval(inner, steps, inputs, max_series)? {
            Value::Vector(mut m) => {
                // Prometheus's order: by value, NaN and absent points last either way.
                let key = |v: &Vec<Option<f64>>| v.last().copied().flatten().filter(|x| !x.is_nan());
                m.sort_by(|a, b| match (key(&a.1), key(&b.1)) {
                    (Some(x), Some(y)) => {
                        let o = x.total_cmp(&y);
                        if *desc { o.reverse() } else { o }
                    }
                    (Some(_), None) => std::cmp::Ordering::Less,
                    (None, Some(_)) => std::cmp::Ordering::Greater,
                    (None, None) => std::cmp::Ordering::Equal,
                });
                Value::Vector(m)
            }
            Value::Scalar(_) => return Err(invalid("sort needs a vector, not a number".into())),
        },
        MetricExpr::Set { op, matching, lhs, rhs } => match (eval(lhs, steps, inputs, max_series)?, eval(rhs, steps, inputs, max_series)?) {
            (Value::Vector(l), Value::Vector(r)) => {
                Value::Vector(from_series(vector_match::set(*op, &matching.labels, to_series(l), to_series(r), steps.len())))
            }
            _ => return Err(invalid(format!("`{}` needs a vector on both sides, not a number", set_name(*op)))),
        },
    };
    if let Value::Vector(m) = &v
        && m.len() > max_series
    {
        return Err(ApiError::new(
            ErrorCode::LimitExceeded,
            format!("the query returns more than {max_series} series; aggregate it (sum by …) or narrow the selector"),
        ));
    }
    Ok(v)
}

fn range(func: RangeFn, b: Buckets, steps: &Steps, range_ns: i64, offset_ns: i64) -> Matrix {
    let l = layout(steps, range_ns, offset_ns);
    let per_window = (range_ns / l.width) as usize;
    let secs = range_ns as f64 / 1e9;
    let mut out = Vec::with_capacity(b.series.len());
    for (labels, buckets) in b.series {
        // Prefix sums, so each window is two lookups.
        let mut prefix = Vec::with_capacity(buckets.len() + 1);
        prefix.push((0u64, 0u64));
        for (e, by) in &buckets {
            let (pe, pb) = prefix[prefix.len() - 1];
            prefix.push((pe + e, pb + by));
        }
        let mut values = Vec::with_capacity(steps.len());
        let mut any = false;
        for k in 0..steps.len() {
            let first = ((steps.at(k) - steps.start) / l.width) as usize;
            let last = (first + per_window).min(buckets.len());
            let (entries, bytes) = (prefix[last].0 - prefix[first.min(last)].0, prefix[last].1 - prefix[first.min(last)].1);
            let v = (entries > 0).then(|| match func {
                RangeFn::CountOverTime => entries as f64,
                RangeFn::Rate => entries as f64 / secs,
                RangeFn::BytesOverTime => bytes as f64,
                RangeFn::BytesRate => bytes as f64 / secs,
                // The parser gives these an unwrap, so they never come here.
                _ => f64::NAN,
            });
            any |= v.is_some();
            values.push(v);
        }
        if any {
            out.push((labels, values));
        }
    }
    out
}

/// `absent_over_time`: one series, 1 at each step whose window holds no line of any series and
/// no point elsewhere; nothing at all when no step is empty. Its labels are the selector's
/// equality matchers, leaving out a name that is also matched another way or twice (as Loki
/// does), so the answer never names more than the query itself did.
fn absent(selector: &[super::Matcher], b: Buckets, steps: &Steps, range_ns: i64, offset_ns: i64) -> Matrix {
    let present = range(RangeFn::CountOverTime, b, steps, range_ns, offset_ns);
    let values: Vec<Option<f64>> = (0..steps.len()).map(|k| (!present.iter().any(|(_, v)| v[k].is_some())).then_some(1.0)).collect();
    if values.iter().all(Option::is_none) {
        return Vec::new();
    }
    let mut labels = Labels::new();
    let mut ambiguous = Vec::new();
    for m in selector {
        if m.op == super::MatchOp::Eq && !labels.contains_key(&m.name) {
            labels.insert(m.name.clone(), m.value.clone());
        } else {
            ambiguous.push(&m.name);
        }
    }
    for name in ambiguous {
        labels.remove(name);
    }
    vec![(labels, values)]
}

/// An unwrapped range function over each series' samples in every window
/// `(t - range - offset, t - offset]`.
fn unwrapped(func: RangeFn, param: Option<f64>, samples: BTreeMap<Labels, Vec<(i64, f64)>>, steps: &Steps, range_ns: i64, offset_ns: i64) -> Matrix {
    let secs = range_ns as f64 / 1e9;
    let mut out = Vec::with_capacity(samples.len());
    for (labels, mut points) in samples {
        points.sort_by_key(|p| p.0);
        let mut values = Vec::with_capacity(steps.len());
        for k in 0..steps.len() {
            let end = steps.at(k) - offset_ns;
            let (lo, hi) = (points.partition_point(|p| p.0 <= end - range_ns), points.partition_point(|p| p.0 <= end));
            if lo == hi {
                values.push(None);
            } else if func == RangeFn::RateCounter {
                values.push(Some(rate_counter(&points[lo..hi], range_ns)));
            } else {
                let w: Vec<f64> = points[lo..hi].iter().map(|p| p.1).collect();
                values.push(Some(over(func, param, &w, secs)));
            }
        }
        if values.iter().any(Option::is_some) {
            out.push((labels, values));
        }
    }
    out
}

/// One window's value; `w` is in time order and not empty.
fn over(func: RangeFn, param: Option<f64>, w: &[f64], secs: f64) -> f64 {
    let n = w.len() as f64;
    let sum: f64 = w.iter().sum();
    let var = || {
        let mean = sum / n;
        w.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n
    };
    match func {
        RangeFn::CountOverTime => n,
        RangeFn::Rate => sum / secs,
        RangeFn::SumOverTime => sum,
        RangeFn::AvgOverTime => sum / n,
        RangeFn::MinOverTime => w.iter().copied().fold(f64::INFINITY, f64::min),
        RangeFn::MaxOverTime => w.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        RangeFn::FirstOverTime => w[0],
        RangeFn::LastOverTime => w[w.len() - 1],
        RangeFn::StdvarOverTime => var(),
        RangeFn::StddevOverTime => var().sqrt(),
        RangeFn::QuantileOverTime => quantile(param.unwrap_or(0.5), w),
        RangeFn::BytesOverTime | RangeFn::BytesRate | RangeFn::AbsentOverTime | RangeFn::RateCounter => f64::NAN,
    }
}

/// `rate_counter`: the values in `w` (time order, nanoseconds; not empty) taken as a counter,
/// whose drops are resets, as a per-second rate over the range. Computed as Loki computes it:
/// Prometheus's extrapolation, fed sample times in nanoseconds and the range in milliseconds,
/// so the extrapolated span is the sampled span (in microseconds) plus the range in seconds:
/// a factor within a millionth of one in practice, kept so the numbers agree with Loki's.
/// Fewer than two values give 0.
fn rate_counter(w: &[(i64, f64)], range_ns: i64) -> f64 {
    let [first, .., last] = w else { return 0.0 };
    let mut increase = last.1 - first.1;
    let mut previous = 0.0;
    for (_, v) in w {
        if *v < previous {
            increase += previous;
        }
        previous = *v;
    }
    let mut to_start = (range_ns / 1_000_000) as f64 / 1000.0;
    let sampled = (last.0 - first.0) as f64 / 1000.0;
    let average = sampled / (w.len() - 1) as f64;
    if increase > 0.0 && first.1 >= 0.0 {
        to_start = to_start.min(sampled * (first.1 / increase));
    }
    let threshold = average * 1.1;
    let mut span = sampled;
    span += if to_start < threshold { to_start } else { average / 2.0 };
    // The last value is the end of Loki's range, so nothing is added after it unless the
    // samples share one time (then `threshold` is 0).
    span += if 0.0 < threshold { 0.0 } else { average / 2.0 };
    increase * (span / sampled) / (range_ns as f64 / 1e9)
}

/// Prometheus's quantile: linear between the two nearest ranks; below 0 is -Inf, above 1 +Inf.
fn quantile(q: f64, w: &[f64]) -> f64 {
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    let mut v = w.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = q * (v.len() - 1) as f64;
    let lower = rank.floor() as usize;
    let upper = (lower + 1).min(v.len() - 1);
    let weight = rank - lower as f64;
    v[lower] * (1.0 - weight) + v[upper] * weight
}

fn group_key(labels: &Labels, g: Option<&Grouping>) -> Labels {
    match g {
        None => Labels::new(),
        Some(Grouping { without: false, labels: keep }) => labels.iter().filter(|(k, _)| keep.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(Grouping { without: true, labels: drop }) => labels.iter().filter(|(k, _)| !drop.contains(k)).map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

fn aggregate(op: AggOp, g: Option<&Grouping>, param: Option<f64>, m: Matrix, n: usize) -> Matrix {
    let mut groups: BTreeMap<Labels, Matrix> = BTreeMap::new();
    for (labels, values) in m {
        groups.entry(group_key(&labels, g)).or_default().push((labels, values));
    }
    let mut out: Matrix = Vec::new();
    if matches!(op, AggOp::Topk | AggOp::Bottomk) {
        let k = param.unwrap_or(1.0) as usize;
        let mut kept: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
        for members in groups.values() {
            for step in 0..n {
                let mut present: Vec<(usize, f64)> = members.iter().enumerate().filter_map(|(i, (_, v))| v[step].map(|x| (i, x))).collect();
                present.sort_by(|a, b| {
                    let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                    if op == AggOp::Topk { o.reverse() } else { o }
                });
                for (i, x) in present.into_iter().take(k) {
                    let (labels, _) = &members[i];
                    kept.entry(labels.clone()).or_insert_with(|| vec![None; n])[step] = Some(x);
                }
            }
        }
        return kept.into_iter().collect();
    }
    for (key, members) in groups {
        let mut values = Vec::with_capacity(n);
        for step in 0..n {
            let xs: Vec<f64> = members.iter().filter_map(|(_, v)| v[step]).collect();
            values.push((!xs.is_empty()).then(|| match op {
                AggOp::Sum => xs.iter().sum(),
                AggOp::Avg => xs.iter().sum::<f64>() / xs.len() as f64,
                AggOp::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                AggOp::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                AggOp::Count => xs.len() as f64,
                AggOp::Stddev => variance(&xs).sqrt(),
                AggOp::Stdvar => variance(&xs),
                AggOp::Topk | AggOp::Bottomk => unreachable!("handled above"),
            }));
        }
        if values.iter().any(Option::is_some) {
            out.push((key, values));
        }
    }
    out
}

/// The population variance of `xs` (not empty).
fn variance(xs: &[f64]) -> f64 {
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / xs.len() as f64
}

fn apply(op: BinOp, a: f64, b: f64) -> f64 {
    match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Pow => a.powf(b),
    }
}

fn binary(op: BinOp, m: &Matching, l: Value, r: Value, n: usize) -> Result<Value, String> {
    combine(m, l, r, n, |a, b| apply(op, a, b), |a, b, _| Some(apply(op, a, b)))
}

fn set_name(op: SetOp) -> &'static str {
    match op {
        SetOp::And => "and",
        SetOp::Or => "or",
        SetOp::Unless => "unless",
    }
}

fn to_series(m: Matrix) -> Vec<Series> {
    m.into_iter().map(|(labels, points)| Series { labels: labels.into_iter().collect(), points }).collect()
}

fn from_series(v: Vec<Series>) -> Matrix {
    v.into_iter().map(|s| (s.labels.into_iter().collect(), s.points)).collect()
}

/// `l` and `r` combined point by point: two numbers by `scalars`; a vector and a number, or
/// two vectors (paired as `m` says), by `points(left, right, the vector's value — the left one
/// between two vectors)`. A series left without points is dropped.
fn combine(
    m: &Matching,
    l: Value,
    r: Value,
    n: usize,
    scalars: impl Fn(f64, f64) -> f64,
    points: impl Fn(f64, f64, f64) -> Option<f64>,
) -> Result<Value, String> {
    let series = |m: Matrix, f: &dyn Fn(f64) -> Option<f64>| -> Matrix {
        m.into_iter()
            .filter_map(|(labels, v)| {
                let v: Vec<Option<f64>> = v.into_iter().map(|x| x.and_then(f)).collect();
                v.iter().any(Option::is_some).then_some((labels, v))
            })
            .collect()
    };
    if !m.is_default() && !matches!((&l, &r), (Value::Vector(_), Value::Vector(_))) {
        return Err("on, ignoring, group_left and group_right match two vectors; a side here is a number".into());
    }
    Ok(match (l, r) {
        (Value::Scalar(a), Value::Scalar(b)) => Value::Scalar(scalars(a, b)),
        (Value::Vector(v), Value::Scalar(b)) => Value::Vector(series(v, &|x| points(x, b, x))),
        (Value::Scalar(a), Value::Vector(v)) => Value::Vector(series(v, &|x| points(a, x, x))),
        (Value::Vector(lm), Value::Vector(rm)) => {
            Value::Vector(from_series(vector_match::binary(m, false, to_series(lm), to_series(rm), n, |a, b| points(a, b, a))?))
        }
    })
}

fn holds(op: CmpOp, a: f64, b: f64) -> bool {
    match op {
        CmpOp::Eq => a == b,
        CmpOp::Ne => a != b,
        CmpOp::Gt => a > b,
        CmpOp::Ge => a >= b,
        CmpOp::Lt => a < b,
        CmpOp::Le => a <= b,
    }
}

/// A comparison, as PromQL's: without `bool` a point is kept (with the vector's value — the
/// left one between two vectors) where it holds and dropped where not; with `bool` every point
/// is 1 or 0. Vectors pair up on identical label sets.
fn compare(op: CmpOp, bool_mod: bool, m: &Matching, l: Value, r: Value, n: usize) -> Result<Value, String> {
    let truth = |a, b| if holds(op, a, b) { 1.0 } else { 0.0 };
    combine(m, l, r, n, truth, |a, b, keep| if bool_mod { Some(truth(a, b)) } else { holds(op, a, b).then_some(keep) })
}

/// A sample value as Loki and Prometheus write it (Go's shortest `'f'` formatting, `+Inf`,
/// `NaN`).
pub fn format_value(v: f64) -> String {
    let mut out = String::new();
    write_value(&mut out, v);
    out
}

/// [`format_value`], appended to `out`.
pub fn write_value(out: &mut String, v: f64) {
    use std::fmt::Write;
    if v.is_nan() {
        out.push_str("NaN");
    } else if v.is_infinite() {
        out.push_str(if v > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        let _ = write!(out, "{v}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn windows_are_left_open_and_right_closed() {
        const S: i64 = 1_000_000_000;
        // Steps at 60 s and 120 s, range 60 s: windows (0, 60] and (60, 120].
        let steps = Steps { start: 60 * S, end: 120 * S, step: 60 * S };
        let l = layout(&steps, 60 * S, 0);
        let mut b = Buckets::default();
        for ts in [0, 1, 60, 61, 120, 121] {
            b.add(&l, labels(&[("pod", "a")]), ts * S, 10);
        }
        let m = range(RangeFn::CountOverTime, b.clone(), &steps, 60 * S, 0);
        assert_eq!(m[0].1, vec![Some(2.0), Some(2.0)], "0 s and 121 s fall outside; 1,60 and 61,120 inside");
        let r = range(RangeFn::BytesRate, b, &steps, 60 * S, 0);
        assert_eq!(r[0].1, vec![Some(20.0 / 60.0), Some(20.0 / 60.0)]);
        // A range longer than the step overlaps windows: gcd-wide buckets.
        let l = layout(&steps, 90 * S, 0);
        assert_eq!(l.width, 30 * S);
    }

    #[test]
    fn buckets_stop_at_their_series_and_cell_budget() {
        let steps = Steps { start: 0, end: 1_000, step: 1 };
        let l = layout(&steps, 1, 0);
        let mut b = Buckets::new(&l, 2);
        for pod in ["a", "b", "c"] {
            b.add(&l, labels(&[("pod", pod)]), 5, 1);
        }
        assert!(b.overflow && b.series.len() == 2);
        // A wide layout allows fewer series than asked for, so memory stays bounded.
        let wide = Layout { origin: 0, width: 1, count: MAX_CELLS / 4 };
        let mut b = Buckets::new(&wide, 1_000);
        for i in 0..5 {
            b.add(&wide, labels(&[("pod", &i.to_string())]), 1, 1);
        }
        assert_eq!((b.series.len(), b.overflow), (4, true));
    }

    #[test]
    fn absent_is_one_where_no_series_has_a_line_labelled_by_unambiguous_equality_matchers() {
        use crate::logql::{MatchOp, Matcher};
        const S: i64 = 1_000_000_000;
        let steps = Steps { start: 60 * S, end: 180 * S, step: 60 * S };
        let l = layout(&steps, 60 * S, 0);
        let mut b = Buckets::default();
        b.add(&l, labels(&[("pod", "a")]), 30 * S, 1);
        b.add(&l, labels(&[("pod", "b")]), 150 * S, 1);
        let m = |name: &str, op, value: &str| Matcher { name: name.into(), op, value: value.into() };
        let sel = [m("app", MatchOp::Eq, "cart"), m("pod", MatchOp::Re, ".+"), m("env", MatchOp::Eq, "prod"), m("env", MatchOp::Eq, "dev")];
        let out = absent(&sel, b.clone(), &steps, 60 * S, 0);
        assert_eq!(out, vec![(labels(&[("app", "cart")]), vec![None, Some(1.0), None])], "only (60 s, 120 s] is empty");
        let full = Steps { start: 60 * S, end: 60 * S, step: 60 * S };
        assert!(absent(&sel, b, &full, 60 * S, 0).is_empty(), "no empty window, no series");
    }

    #[test]
    fn whole_series_merge_into_what_their_labels_hold_and_stop_at_the_budget() {
        let l = Layout { origin: 0, width: 10, count: 3 };
        let mut b = Buckets::new(&l, 2);
        assert_eq!(b.room(), 2);
        b.add(&l, labels(&[("level", "error")]), 15, 7);
        b.add_series(labels(&[("level", "error")]), vec![(1, 10), (2, 20), (0, 0)]);
        b.add_series(labels(&[("level", "info")]), vec![(0, 0), (0, 0), (4, 40)]);
        assert_eq!(b.series[&labels(&[("level", "error")])], vec![(1, 10), (3, 27), (0, 0)]);
        assert_eq!(b.series[&labels(&[("level", "info")])], vec![(0, 0), (0, 0), (4, 40)]);
        assert_eq!((b.room(), b.overflow), (0, false));
        // A known series still merges when the budget is spent; a new one overflows.
        b.add_series(labels(&[("level", "info")]), vec![(0, 0), (0, 0), (1, 1)]);
        assert!(!b.overflow);
        b.add_series(labels(&[("level", "warn")]), vec![(1, 1), (0, 0), (0, 0)]);
        assert!(b.overflow && b.series.len() == 2);
    }

    #[test]
    fn aggregations_and_arithmetic() {
        let m: Matrix = vec![
            (labels(&[("level", "error"), ("pod", "a")]), vec![Some(1.0), None]),
            (labels(&[("level", "error"), ("pod", "b")]), vec![Some(3.0), Some(2.0)]),
            (labels(&[("level", "info"), ("pod", "a")]), vec![Some(5.0), Some(1.0)]),
        ];
        let by_level = Grouping { without: false, labels: vec!["level".into()] };
        let s = aggregate(AggOp::Sum, Some(&by_level), None, m.clone(), 2);
        assert_eq!(s, vec![(labels(&[("level", "error")]), vec![Some(4.0), Some(2.0)]), (labels(&[("level", "info")]), vec![Some(5.0), Some(1.0)])]);
        let without_pod = Grouping { without: true, labels: vec!["pod".into()] };
        assert_eq!(aggregate(AggOp::Max, Some(&without_pod), None, m.clone(), 2)[0].1, vec![Some(3.0), Some(2.0)]);
        assert_eq!(aggregate(AggOp::Avg, None, None, m.clone(), 2)[0].1, vec![Some(3.0), Some(1.5)]);
        assert_eq!(aggregate(AggOp::Count, None, None, m.clone(), 2)[0].1, vec![Some(3.0), Some(2.0)]);
        // Population variance and deviation: {1, 3, 5} at the first step, {2, 1} at the second.
        assert_eq!(aggregate(AggOp::Stdvar, None, None, m.clone(), 2)[0].1, vec![Some(8.0 / 3.0), Some(0.25)]);
        assert_eq!(aggregate(AggOp::Stddev, None, None, m.clone(), 2)[0].1, vec![Some((8.0f64 / 3.0).sqrt()), Some(0.5)]);
        let top = aggregate(AggOp::Topk, None, Some(1.0), m.clone(), 2);
        assert_eq!(
            top,
            vec![(labels(&[("level", "error"), ("pod", "b")]), vec![None, Some(2.0)]), (labels(&[("level", "info"), ("pod", "a")]), vec![Some(5.0), None])]
        );
        let one = Matching::default();
        let Value::Vector(d) = binary(BinOp::Div, &one, Value::Vector(s.clone()), Value::Scalar(2.0), 2).unwrap() else { panic!() };
        assert_eq!(d[0].1, vec![Some(2.0), Some(1.0)]);
        let Value::Vector(r) = binary(BinOp::Div, &one, Value::Vector(s.clone()), Value::Vector(s[..1].to_vec()), 2).unwrap() else { panic!() };
        assert_eq!(r, vec![(labels(&[("level", "error")]), vec![Some(1.0), Some(1.0)])], "only matching label sets pair up");
        let Value::Vector(gt) = compare(CmpOp::Gt, false, &one, Value::Vector(s.clone()), Value::Scalar(4.0), 2).unwrap() else { panic!() };
        assert_eq!(gt, vec![(labels(&[("level", "info")]), vec![Some(5.0), None])], "filtered, values kept");
        let Value::Vector(b) = compare(CmpOp::Gt, true, &one, Value::Vector(s.clone()), Value::Scalar(4.0), 2).unwrap() else { panic!() };
        assert_eq!(b[0].1, vec![Some(0.0), Some(0.0)], "with bool: 1 or 0 at every point");
        let Value::Vector(lt) = compare(CmpOp::Lt, false, &one, Value::Scalar(3.0), Value::Vector(s.clone()), 2).unwrap() else { panic!() };
        assert_eq!(lt, vec![(labels(&[("level", "error")]), vec![Some(4.0), None]), (labels(&[("level", "info")]), vec![Some(5.0), None])]);
        let Value::Vector(vv) = compare(CmpOp::Ge, false, &one, Value::Vector(s.clone()), Value::Vector(s[1..].to_vec()), 2).unwrap() else { panic!() };
        assert_eq!(vv, vec![(labels(&[("level", "info")]), vec![Some(5.0), Some(1.0)])]);
        assert_eq!(compare(CmpOp::Eq, true, &one, Value::Scalar(1.0), Value::Scalar(1.0), 2), Ok(Value::Scalar(1.0)));
        assert_eq!(quantile(0.5, &[1.0, 2.0, 3.0, 4.0]), 2.5);
        assert_eq!(quantile(0.99, &[5.0]), 5.0);
        assert_eq!(over(RangeFn::StddevOverTime, None, &[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 1.0), 2.0);
        assert_eq!(over(RangeFn::Rate, None, &[30.0, 30.0], 60.0), 1.0);
        assert_eq!(over(RangeFn::FirstOverTime, None, &[3.0, 1.0], 1.0), 3.0);
        // rate_counter: a drop is a reset (10 → 2 adds the 10); from 0 nothing is extrapolated;
        // otherwise Loki's span adds the range in seconds to microseconds of samples.
        const S: i64 = 1_000_000_000;
        let reset = [(0, 0.0), (10 * S, 5.0), (20 * S, 10.0), (30 * S, 2.0), (40 * S, 4.0)];
        assert_eq!(rate_counter(&reset, 60 * S), 14.0 / 60.0);
        assert_eq!(rate_counter(&[(0, 10.0), (10 * S, 20.0)], 60 * S), 10.0 * ((10e6 + 60.0) / 10e6) / 60.0);
        assert_eq!(rate_counter(&[(5 * S, 7.0)], 60 * S), 0.0);
        assert_eq!(format_value(1.0 / 0.0), "+Inf");
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(0.25), "0.25");
    }
}
