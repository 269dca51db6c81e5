//! PromQL evaluated over the stored `metrics` table, for servers without a Prometheus upstream.
//!
//! Semantics follow Prometheus 2.x (the version the tests compare against): an instant selector
//! takes each series' latest sample in `[t - 5m, t]` (a staleness marker ends it), a range
//! selector the samples in `[t - range, t]`; `rate`/`increase`/`delta` extrapolate as
//! Prometheus does; aggregations, one-to-one vector matching with `on`/`ignoring`, `bool`,
//! set operators and `histogram_quantile` as documented. The query is evaluated step by step
//! over every series at once; subqueries under range functions are evaluated at their own aligned
//! steps. Anything else (`@`, other functions) is a 400 that names it, never an answer that
//! means something else.

use std::collections::{BTreeMap, HashMap};

use promql_parser::label::Matcher;
use promql_parser::parser::{AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, Offset, VectorMatchCardinality, VectorSelector};
use schemas::{ApiError, ErrorCode};
use storage::MetricSeries;

use super::math::{bucket_quantile, extrapolated, instant_rate, mean, parse_le, quantile, variance};
pub use super::math::{format_value, write_value};

/// Prometheus's default lookback for instant selectors.
pub const LOOKBACK_MS: i64 = 5 * 60_000;
/// Prometheus's stale marker.
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;

use crate::vector_match::{self, Card, LabelMatch, Matching, SetOp, drop_name};
pub use crate::vector_match::{Labels, Series};

/// The evaluation times, Unix milliseconds.
pub use crate::params::Steps;

#[derive(Debug, Clone)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    String(String),
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, format!("{what} is not supported without a Prometheus upstream (prometheus.upstream)"))
}

fn invalid(m: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, m)
}

/// Durations past this are treated as this (no stored sample is older than a century).
const FAR_MS: i64 = 100 * 366 * 86_400_000;

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(FAR_MS).min(FAR_MS)
}

fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        Some(Offset::Pos(d)) => ms(*d),
        Some(Offset::Neg(d)) => -ms(*d),
        None => 0,
    }
}

/// The time span the query reads before and after its evaluation times: (before, after) in ms.
pub fn reach(expr: &Expr) -> Result<(i64, i64), ApiError> {
    let mut r = (0i64, 0i64);
    let mut visit = |vs: &VectorSelector, range: i64, around: (i64, i64)| -> Result<(), ApiError> {
        if vs.at.is_some() {
            return Err(unsupported("the `@` modifier"));
        }
        let o = offset_ms(&vs.offset);
        r.0 = r.0.max(range + o + around.0);
        r.1 = r.1.max(-o + around.1);
        Ok(())
    };
    walk_selectors(expr, &mut visit, (0, 0))?;
    Ok(r)
}

/// The default step of a subquery without one (Prometheus's default evaluation interval).
const SUBQUERY_STEP_MS: i64 = 60_000;

/// Calls `f` with each selector, its range, and how far the subqueries around it reach
/// (before, after).
fn walk_selectors(expr: &Expr, f: &mut impl FnMut(&VectorSelector, i64, (i64, i64)) -> Result<(), ApiError>, around: (i64, i64)) -> Result<(), ApiError> {
    match expr {
        Expr::VectorSelector(vs) => f(vs, LOOKBACK_MS, around),
        Expr::MatrixSelector(m) => f(&m.vs, ms(m.range), around),
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                walk_selectors(p, f, around)?;
            }
            walk_selectors(&a.expr, f, around)
        }
        Expr::Unary(u) => walk_selectors(&u.expr, f, around),
        Expr::Binary(b) => {
            walk_selectors(&b.lhs, f, around)?;
            walk_selectors(&b.rhs, f, around)
        }
        Expr::Paren(p) => walk_selectors(&p.expr, f, around),
        Expr::Call(c) => c.args.args.iter().try_for_each(|a| walk_selectors(a, f, around)),
        Expr::Subquery(q) => {
            if q.at.is_some() {
                return Err(unsupported("the `@` modifier"));
            }
            let o = offset_ms(&q.offset).abs();
            let step = q.step.map(ms).unwrap_or(SUBQUERY_STEP_MS);
            walk_selectors(&q.expr, f, (around.0 + ms(q.range) + o + step, around.1 + o))
        }
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Extension(_) => Err(unsupported("this expression")),
    }
}

/// The metric names the query's selectors name by equality (`None`: some selector names none).
pub fn metric_names(expr: &Expr) -> Option<std::collections::BTreeSet<String>> {
    let mut names = std::collections::BTreeSet::new();
    let mut all = false;
    let _ = walk_selectors(
        expr,
        &mut |vs, _, _| {
            let eq = vs.name.clone().or_else(|| {
                vs.matchers.matchers.iter().find(|m| m.name == "__name__" && matches!(m.op, promql_parser::label::MatchOp::Equal)).map(|m| m.value.clone())
            });
            match eq {
                Some(n) if vs.matchers.or_matchers.is_empty() => {
                    names.insert(n);
                }
                _ => all = true,
            }
            Ok(())
        },
        (0, 0),
    );
    (!all).then_some(names)
}

/// A stored series as PromQL sees it: `__name__`, its labels and `workspace`.
pub struct Stored {
    pub labels: Labels,
    pub samples: Vec<(i64, f64)>,
}

impl Stored {
    pub fn from_series(s: MetricSeries) -> Stored {
        let mut labels = s.labels;
        labels.retain(|(k, _)| k != "__name__" && k != "workspace");
        labels.push(("__name__".into(), s.metric));
        labels.push(("workspace".into(), s.workspace));
        labels.sort();
        Stored { labels, samples: s.samples }
    }

    fn get(&self, name: &str) -> &str {
        self.labels.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.as_str())
    }

    pub fn matches(&self, vs: &VectorSelector) -> bool {
        let name_ok = vs.name.as_ref().is_none_or(|n| self.get("__name__") == n);
        let all = |ms: &[Matcher]| ms.iter().all(|m| m.is_match(self.get(&m.name)));
        name_ok && (if vs.matchers.or_matchers.is_empty() { all(&vs.matchers.matchers) } else { vs.matchers.or_matchers.iter().any(|g| all(g)) })
    }

    /// Samples with timestamps in `[from, to]`.
    fn window(&self, from: i64, to: i64) -> &[(i64, f64)] {
        let a = self.samples.partition_point(|s| s.0 < from);
        let b = self.samples.partition_point(|s| s.0 <= to);
        &self.samples[a..b.max(a)]
    }
}

pub struct Eval<'a> {
    pub steps: Steps,
    pub data: &'a [Stored],
}

fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN
}

impl Eval<'_> {
    pub fn eval(&self, e: &Expr) -> Result<Value, ApiError> {
        let n = self.steps.len();
        match e {
            Expr::NumberLiteral(x) => Ok(Value::Scalar(vec![x.val; n])),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => Ok(match self.eval(&u.expr)? {
                Value::Scalar(v) => Value::Scalar(v.into_iter().map(|x| -x).collect()),
                Value::Vector(v) => Value::Vector(
                    v.into_iter().map(|s| Series { labels: drop_name(s.labels), points: s.points.into_iter().map(|p| p.map(|x| -x)).collect() }).collect(),
                ),
                Value::String(_) => return Err(invalid("unary minus of a string")),
            }),
            Expr::VectorSelector(vs) => Ok(Value::Vector(self.instant(vs))),
            Expr::MatrixSelector(_) => Err(invalid("a range vector must be the argument of a function such as rate(); use query_range for raw samples")),
            Expr::Subquery(_) => Err(unsupported("a subquery")),
            Expr::Call(c) => self.call(c),
            Expr::Aggregate(a) => self.aggregate(a),
            Expr::Binary(b) => self.binary(b),
            Expr::Extension(_) => Err(unsupported("this expression")),
        }
    }

    fn instant(&self, vs: &VectorSelector) -> Vec<Series> {
        let o = offset_ms(&vs.offset);
        self.data
            .iter()
            .filter(|s| s.matches(vs))
            .filter_map(|s| {
                let points: Vec<Option<f64>> = (0..self.steps.len())
                    .map(|i| {
                        let t = self.steps.at(i) - o;
                        s.window(t - LOOKBACK_MS, t).last().map(|p| p.1).filter(|v| !is_stale(*v))
                    })
                    .collect();
                points.iter().any(Option::is_some).then(|| Series { labels: s.labels.clone(), points })
            })
            .collect()
    }

    /// `f` over each series' samples in every step's window.
    fn over_range(&self, arg: &Expr, keep_name: bool, f: impl Fn(&[(i64, f64)], i64, i64) -> Option<f64>) -> Result<Value, ApiError> {
        let arg = match arg {
            Expr::Paren(p) => p.expr.as_ref(),
            other => other,
        };
        if let Expr::Subquery(q) = arg {
            return self.over_subquery(q, keep_name, f);
        }
        let Expr::MatrixSelector(m) = arg else { return Err(invalid("expected a range vector such as x[5m]")) };
        let (range, o) = (ms(m.range), offset_ms(&m.vs.offset));
        let mut out = Vec::new();
        let mut buf = Vec::new();
        for s in self.data.iter().filter(|s| s.matches(&m.vs)) {
            let points: Vec<Option<f64>> = (0..self.steps.len())
                .map(|i| {
                    let end = self.steps.at(i) - o;
                    buf.clear();
                    buf.extend(s.window(end - range, end).iter().filter(|p| !is_stale(p.1)));
                    f(&buf, end - range, end)
                })
                .collect();
            if points.iter().any(Option::is_some) {
                out.push(Series { labels: if keep_name { s.labels.clone() } else { drop_name(s.labels.clone()) }, points });
            }
        }
        Ok(Value::Vector(out))
    }

    /// A range function over a subquery: the inner query evaluated at the subquery's steps
    /// (aligned to multiples of its step, as Prometheus does), each outer step's window taken
    /// from those points.
    fn over_subquery(
        &self,
        q: &promql_parser::parser::SubqueryExpr,
        keep_name: bool,
        f: impl Fn(&[(i64, f64)], i64, i64) -> Option<f64>,
    ) -> Result<Value, ApiError> {
        let (range, o) = (ms(q.range), offset_ms(&q.offset));
        let step = q.step.map(ms).unwrap_or(SUBQUERY_STEP_MS).max(1);
        let first = self.steps.start - o - range;
        let start = first.div_euclid(step) * step + if first.rem_euclid(step) == 0 { 0 } else { step };
        let inner = Steps { start, end: self.steps.end - o, step };
        if inner.len() > 1_000_000 {
            return Err(ApiError::new(ErrorCode::LimitExceeded, "the subquery would take more than 1,000,000 steps; raise its resolution"));
        }
        let series = match (Eval { steps: inner, data: self.data }).eval(&q.expr)? {
            Value::Vector(v) => v,
            _ => return Err(invalid("a subquery must be an instant vector expression")),
        };
        let mut out = Vec::new();
        for s in series {
            let samples: Vec<(i64, f64)> = s.points.iter().enumerate().filter_map(|(i, p)| p.map(|v| (inner.at(i), v))).collect();
            let points: Vec<Option<f64>> = (0..self.steps.len())
                .map(|i| {
                    let end = self.steps.at(i) - o;
                    let a = samples.partition_point(|p| p.0 < end - range);
                    let b = samples.partition_point(|p| p.0 <= end);
                    f(&samples[a..b.max(a)], end - range, end)
                })
                .collect();
            if points.iter().any(Option::is_some) {
                out.push(Series { labels: if keep_name { s.labels } else { drop_name(s.labels) }, points });
            }
        }
        Ok(Value::Vector(out))
    }

    fn vector_arg(&self, e: &Expr) -> Result<Vec<Series>, ApiError> {
        match self.eval(e)? {
            Value::Vector(v) => Ok(v),
            _ => Err(invalid("expected an instant vector")),
        }
    }

    fn scalar_arg(&self, e: &Expr) -> Result<Vec<f64>, ApiError> {
        match self.eval(e)? {
            Value::Scalar(v) => Ok(v),
            _ => Err(invalid("expected a scalar")),
        }
    }

    fn call(&self, c: &Call) -> Result<Value, ApiError> {
        let args = &c.args.args;
        let arg = |i: usize| args.get(i).map(|a| a.as_ref()).ok_or_else(|| invalid(format!("{}() needs more arguments", c.func.name)));
        let name = c.func.name;
        let map = |v: Vec<Series>, f: &dyn Fn(f64) -> f64| {
            Value::Vector(v.into_iter().map(|s| Series { labels: drop_name(s.labels), points: s.points.into_iter().map(|p| p.map(f)).collect() }).collect())
        };
        Ok(match name {
            "rate" => self.over_range(arg(0)?, false, |w, a, b| extrapolated(w, a, b, true, true))?,
            "increase" => self.over_range(arg(0)?, false, |w, a, b| extrapolated(w, a, b, true, false))?,
            "delta" => self.over_range(arg(0)?, false, |w, a, b| extrapolated(w, a, b, false, false))?,
            "irate" => self.over_range(arg(0)?, false, |w, _, _| instant_rate(w, true))?,
            "idelta" => self.over_range(arg(0)?, false, |w, _, _| instant_rate(w, false))?,
            "changes" => self.over_range(arg(0)?, false, |w, _, _| {
                (!w.is_empty()).then(|| w.windows(2).filter(|p| p[0].1 != p[1].1 && !(p[0].1.is_nan() && p[1].1.is_nan())).count() as f64)
            })?,
            "resets" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then(|| w.windows(2).filter(|p| p[1].1 < p[0].1).count() as f64))?,
            "avg_over_time" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then(|| mean(w.iter().map(|p| p.1))))?,
            "sum_over_time" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then(|| w.iter().map(|p| p.1).sum()))?,
            "count_over_time" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then_some(w.len() as f64))?,
            "min_over_time" => self.over_range(arg(0)?, false, |w, _, _| w.iter().map(|p| p.1).reduce(|m, v| if v < m || m.is_nan() { v } else { m }))?,
            "max_over_time" => self.over_range(arg(0)?, false, |w, _, _| w.iter().map(|p| p.1).reduce(|m, v| if v > m || m.is_nan() { v } else { m }))?,
            "last_over_time" => self.over_range(arg(0)?, true, |w, _, _| w.last().map(|p| p.1))?,
            "stddev_over_time" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then(|| variance(w.iter().map(|p| p.1)).sqrt()))?,
            "stdvar_over_time" => self.over_range(arg(0)?, false, |w, _, _| (!w.is_empty()).then(|| variance(w.iter().map(|p| p.1))))?,
            "quantile_over_time" => {
                let q = self.scalar_arg(arg(0)?)?;
                let q = q.first().copied().unwrap_or(f64::NAN);
                self.over_range(arg(1)?, false, |w, _, _| (!w.is_empty()).then(|| quantile(q, w.iter().map(|p| p.1).collect())))?
            }
            "abs" => map(self.vector_arg(arg(0)?)?, &f64::abs),
            "ceil" => map(self.vector_arg(arg(0)?)?, &f64::ceil),
            "floor" => map(self.vector_arg(arg(0)?)?, &f64::floor),
            "exp" => map(self.vector_arg(arg(0)?)?, &f64::exp),
            "sqrt" => map(self.vector_arg(arg(0)?)?, &f64::sqrt),
            "ln" => map(self.vector_arg(arg(0)?)?, &f64::ln),
            "log2" => map(self.vector_arg(arg(0)?)?, &f64::log2),
            "log10" => map(self.vector_arg(arg(0)?)?, &f64::log10),
            "round" if args.len() == 1 => map(self.vector_arg(arg(0)?)?, &|x: f64| (x + 0.5).floor()),
            "clamp_min" | "clamp_max" => {
                let (v, s) = (self.vector_arg(arg(0)?)?, self.scalar_arg(arg(1)?)?);
                let min = name == "clamp_min";
                Value::Vector(
                    v.into_iter()
                        .map(|se| Series {
                            labels: drop_name(se.labels),
                            points: se.points.into_iter().zip(&s).map(|(p, b)| p.map(|x| if min { x.max(*b) } else { x.min(*b) })).collect(),
                        })
                        .collect(),
                )
            }
            "scalar" => {
                let v = self.vector_arg(arg(0)?)?;
                Value::Scalar(
                    (0..self.steps.len())
                        .map(|i| {
                            let present: Vec<f64> = v.iter().filter_map(|s| s.points[i]).collect();
                            if present.len() == 1 { present[0] } else { f64::NAN }
                        })
                        .collect(),
                )
            }
            "vector" => Value::Vector(vec![Series { labels: Vec::new(), points: self.scalar_arg(arg(0)?)?.into_iter().map(Some).collect() }]),
            "time" => Value::Scalar((0..self.steps.len()).map(|i| self.steps.at(i) as f64 / 1e3).collect()),
            "sort" | "sort_desc" => Value::Vector(self.vector_arg(arg(0)?)?),
            "histogram_quantile" => self.histogram_quantile(arg(0)?, arg(1)?)?,
            "label_replace" | "label_join" => {
                let v = self.vector_arg(arg(0)?)?;
                let text = |i: usize| -> Result<String, ApiError> {
                    match self.eval(arg(i)?)? {
                        Value::String(s) => Ok(s),
                        _ => Err(invalid(format!("argument {} of {name}() must be a string", i + 1))),
                    }
                };
                let dst = text(1)?;
                let valid =
                    dst.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') && dst.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
                if !valid {
                    return Err(invalid(format!("invalid destination label name in {name}(): `{dst}`")));
                }
                if dst == "workspace" {
                    return Err(ApiError::new(
                        ErrorCode::Forbidden,
                        format!("`{name}` may not write the tenancy label `workspace`; name another output label"),
                    ));
                }
                let v = if name == "label_replace" {
                    let (replacement, src, re) = (text(2)?, text(3)?, text(4)?);
                    let re =
                        regex::Regex::new(&format!("^(?:{re})$")).map_err(|_| invalid(format!("invalid regular expression in label_replace(): `{re}`")))?;
                    vector_match::relabel(v, &dst, vector_match::replaced(&replacement, &src, &re))
                } else {
                    let sep = text(2)?;
                    let srcs = (3..args.len()).map(text).collect::<Result<Vec<_>, _>>()?;
                    vector_match::relabel(v, &dst, |l: &Labels| {
                        Some(srcs.iter().map(|s| l.iter().find(|(k, _)| k == s).map_or("", |(_, v)| v.as_str())).collect::<Vec<_>>().join(&sep))
                    })
                };
                Value::Vector(v.map_err(invalid)?)
            }
            "absent" => {
                let v = self.vector_arg(arg(0)?)?;
                let mut labels = Vec::new();
                if let Expr::VectorSelector(vs) = arg(0)? {
                    let eq: Vec<&Matcher> =
                        vs.matchers.matchers.iter().filter(|m| m.name != "__name__" && matches!(m.op, promql_parser::label::MatchOp::Equal)).collect();
                    for m in &eq {
                        if eq.iter().filter(|o| o.name == m.name).count() == 1 {
                            labels.push((m.name.clone(), m.value.clone()));
                        }
                    }
                    labels.sort();
                }
                let points = (0..self.steps.len()).map(|i| (!v.iter().any(|s| s.points[i].is_some())).then_some(1.0)).collect();
                Value::Vector(vec![Series { labels, points }])
            }
            other => return Err(unsupported(&format!("the function `{other}()`"))),
        })
    }

    fn histogram_quantile(&self, q: &Expr, v: &Expr) -> Result<Value, ApiError> {
        let q = self.scalar_arg(q)?;
        let mut groups: BTreeMap<Labels, Vec<(f64, &Series)>> = BTreeMap::new();
        let v = self.vector_arg(v)?;
        for s in &v {
            let Some(le) = s.labels.iter().find(|(k, _)| k == "le").and_then(|(_, v)| parse_le(v)) else { continue };
            let key: Labels = s.labels.iter().filter(|(k, _)| k != "le" && k != "__name__").cloned().collect();
            groups.entry(key).or_default().push((le, s));
        }
        let mut out = Vec::new();
        for (labels, buckets) in groups {
            let points: Vec<Option<f64>> = (0..self.steps.len())
                .map(|i| {
                    let b: Vec<(f64, f64)> = buckets.iter().filter_map(|(le, s)| s.points[i].map(|c| (*le, c))).collect();
                    (!b.is_empty()).then(|| bucket_quantile(q[i], b))
                })
                .collect();
            if points.iter().any(Option::is_some) {
                out.push(Series { labels, points });
            }
        }
        Ok(Value::Vector(out))
    }

    fn aggregate(&self, a: &AggregateExpr) -> Result<Value, ApiError> {
        let op = a.op.to_string();
        let v = self.vector_arg(&a.expr)?;
        let param = match &a.param {
            Some(p) if op != "count_values" => Some(self.scalar_arg(p)?),
            Some(_) => return Err(unsupported("`count_values`")),
            None => None,
        };
        let key = |l: &Labels| -> Labels {
            match &a.modifier {
                Some(LabelModifier::Include(by)) => l.iter().filter(|(k, _)| by.labels.iter().any(|b| b == k)).cloned().collect(),
                Some(LabelModifier::Exclude(without)) => l.iter().filter(|(k, _)| k != "__name__" && !without.labels.iter().any(|b| b == k)).cloned().collect(),
                None => Vec::new(),
            }
        };
        let mut groups: BTreeMap<Labels, Vec<&Series>> = BTreeMap::new();
        for s in &v {
            groups.entry(key(&s.labels)).or_default().push(s);
        }
        let n = self.steps.len();
        let mut out = Vec::new();
        for (labels, members) in groups {
            if op == "topk" || op == "bottomk" {
                let k = param.as_ref().ok_or_else(|| invalid("topk/bottomk need k"))?;
                let mut chosen: HashMap<usize, Vec<Option<f64>>> = HashMap::new();
                for i in 0..n {
                    let mut present: Vec<(usize, f64)> = members.iter().enumerate().filter_map(|(j, s)| s.points[i].map(|x| (j, x))).collect();
                    present.sort_by(|x, y| if op == "topk" { y.1.total_cmp(&x.1) } else { x.1.total_cmp(&y.1) });
                    let k = if k[i].is_nan() { 0 } else { k[i].max(0.0) as usize };
                    for (j, x) in present.into_iter().take(k) {
                        chosen.entry(j).or_insert_with(|| vec![None; n])[i] = Some(x);
                    }
                }
                let mut picked: Vec<_> = chosen.into_iter().collect();
                picked.sort_by_key(|(j, _)| *j);
                out.extend(picked.into_iter().map(|(j, points)| Series { labels: members[j].labels.clone(), points }));
                continue;
            }
            let points: Vec<Option<f64>> = (0..n)
                .map(|i| {
                    let xs: Vec<f64> = members.iter().filter_map(|s| s.points[i]).collect();
                    if xs.is_empty() {
                        return Ok(None);
                    }
                    Ok(Some(match op.as_str() {
                        "sum" => xs.iter().sum(),
                        "avg" => mean(xs.iter().copied()),
                        "min" => xs.iter().copied().reduce(|m, v| if v < m || m.is_nan() { v } else { m }).unwrap_or(f64::NAN),
                        "max" => xs.iter().copied().reduce(|m, v| if v > m || m.is_nan() { v } else { m }).unwrap_or(f64::NAN),
                        "count" => xs.len() as f64,
                        "group" => 1.0,
                        "stddev" => variance(xs.iter().copied()).sqrt(),
                        "stdvar" => variance(xs.iter().copied()),
                        "quantile" => quantile(param.as_ref().map_or(f64::NAN, |p| p[i]), xs),
                        other => return Err(unsupported(&format!("the aggregation `{other}`"))),
                    }))
                })
                .collect::<Result<_, ApiError>>()?;
            out.push(Series { labels, points });
        }
        Ok(Value::Vector(out))
    }

    fn binary(&self, b: &BinaryExpr) -> Result<Value, ApiError> {
        let op = b.op.to_string();
        let comparison = matches!(op.as_str(), "==" | "!=" | ">" | "<" | ">=" | "<=");
        let set = matches!(op.as_str(), "and" | "or" | "unless");
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        let (lhs, rhs) = (self.eval(&b.lhs)?, self.eval(&b.rhs)?);
        let apply = |x: f64, y: f64| -> Option<f64> {
            match op.as_str() {
                "+" => Some(x + y),
                "-" => Some(x - y),
                "*" => Some(x * y),
                "/" => Some(x / y),
                "%" => Some(x % y),
                "^" => Some(x.powf(y)),
                "atan2" => Some(x.atan2(y)),
                _ => {
                    let t = match op.as_str() {
                        "==" => x == y,
                        "!=" => x != y,
                        ">" => x > y,
                        "<" => x < y,
                        ">=" => x >= y,
                        _ => x <= y,
                    };
                    if return_bool { Some(if t { 1.0 } else { 0.0 }) } else { t.then_some(x) }
                }
            }
        };
        let drop = !comparison || return_bool;
        Ok(match (lhs, rhs) {
            (Value::Scalar(x), Value::Scalar(y)) => {
                if comparison && !return_bool {
                    return Err(invalid("comparisons between scalars must use the bool modifier"));
                }
                Value::Scalar(x.iter().zip(&y).map(|(a, c)| apply(*a, *c).unwrap_or(f64::NAN)).collect())
            }
            (Value::Vector(v), Value::Scalar(y)) if !set => Value::Vector(self.with_scalar(v, &y, drop, apply)),
            (Value::Scalar(x), Value::Vector(v)) if !set => Value::Vector(self.with_scalar(v, &x, drop, |a, c| {
                // The vector's value is what a comparison keeps.
                apply(c, a).map(|r| if comparison && !return_bool { a } else { r })
            })),
            (Value::Vector(l), Value::Vector(r)) => self.vector_binary(b, &op, set, drop, l, r, apply)?,
            _ => return Err(invalid(format!("`{op}` is not defined between these operand types"))),
        })
    }

    fn with_scalar(&self, v: Vec<Series>, s: &[f64], drop: bool, f: impl Fn(f64, f64) -> Option<f64>) -> Vec<Series> {
        v.into_iter()
            .filter_map(|se| {
                let points: Vec<Option<f64>> = se.points.iter().zip(s).map(|(p, y)| p.and_then(|x| f(x, *y))).collect();
                points.iter().any(Option::is_some).then(|| Series { labels: if drop { drop_name(se.labels) } else { se.labels }, points })
            })
            .collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn vector_binary(
        &self,
        b: &BinaryExpr,
        op: &str,
        set: bool,
        drop: bool,
        l: Vec<Series>,
        r: Vec<Series>,
        apply: impl Fn(f64, f64) -> Option<f64>,
    ) -> Result<Value, ApiError> {
        let modifier = b.modifier.as_ref();
        let labels = match modifier.and_then(|m| m.matching.as_ref()) {
            Some(LabelModifier::Include(on)) => LabelMatch::On(on.labels.clone()),
            Some(LabelModifier::Exclude(ign)) => LabelMatch::Ignoring(ign.labels.clone()),
            None => LabelMatch::All,
        };
        let n = self.steps.len();
        if set {
            let op = match op {
                "and" => SetOp::And,
                "unless" => SetOp::Unless,
                _ => SetOp::Or,
            };
            return Ok(Value::Vector(vector_match::set(op, &labels, l, r, n)));
        }
        let card = match modifier.map(|m| &m.card) {
            Some(VectorMatchCardinality::ManyToOne(ls)) => Card::ManyToOne(ls.labels.clone()),
            Some(VectorMatchCardinality::OneToMany(ls)) => Card::OneToMany(ls.labels.clone()),
            _ => Card::OneToOne,
        };
        vector_match::binary(&Matching { labels, card }, drop, l, r, n, apply).map(Value::Vector).map_err(invalid)
    }
}
