//! Binary operations between two sets of series, step by step, as PromQL defines them and
//! LogQL follows: one-to-one matching on identical labels, `on(…)`/`ignoring(…)` to choose the
//! labels that match, `group_left(…)`/`group_right(…)` for many-to-one and one-to-many (the
//! listed labels copied from the "one" side), and the set operators `and`, `or`, `unless`.
//!
//! Both query languages evaluate their operands into [`Series`] over the same steps and hand
//! them here, so a query means the same in Grafana's Prometheus and Loki datasources.

use std::collections::{BTreeMap, HashMap, HashSet};

/// A series' labels, sorted by name.
pub type Labels = Vec<(String, String)>;

/// One series: its labels and a value (or none) at each step.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<Option<f64>>,
}

/// Which labels two series must agree on to match.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum LabelMatch {
    /// All of them (the metric name aside).
    #[default]
    All,
    /// `on(…)`: only these.
    On(Vec<String>),
    /// `ignoring(…)`: all but these (and the metric name).
    Ignoring(Vec<String>),
}

/// Which side may hold several series for one match.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Card {
    #[default]
    OneToOne,
    /// `group_left(…)`: the left side is the many; the labels are copied from the right.
    ManyToOne(Vec<String>),
    /// `group_right(…)`: the right side is the many; the labels are copied from the left.
    OneToMany(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Matching {
    pub labels: LabelMatch,
    pub card: Card,
}

impl Matching {
    /// Plain one-to-one matching on all labels, as an operator without modifiers.
    pub fn is_default(&self) -> bool {
        *self == Matching::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetOp {
    And,
    Or,
    Unless,
}

/// `label_replace`/`label_join`: sets `dst` to what `value` gives for each series (`None`
/// leaves the series as it is; an empty value removes `dst`). Series that end up with the same
/// labels are one series again, unless both have a point at the same step, which is an error
/// (as Prometheus's "vector cannot contain metrics with the same labelset").
pub fn relabel(series: Vec<Series>, dst: &str, value: impl Fn(&Labels) -> Option<String>) -> Result<Vec<Series>, String> {
    let mut out: Vec<Series> = Vec::with_capacity(series.len());
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for mut s in series {
        if let Some(v) = value(&s.labels) {
            s.labels.retain(|(k, _)| k != dst);
            if !v.is_empty() {
                s.labels.push((dst.to_owned(), v));
                s.labels.sort();
            }
        }
        match index.get(&s.labels) {
            Some(&i) => {
                for (have, p) in out[i].points.iter_mut().zip(s.points) {
                    match (&have, p) {
                        (Some(_), Some(_)) => return Err("vector cannot contain metrics with the same labelset".into()),
                        (None, p) => *have = p,
                        _ => {}
                    }
                }
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// `label_replace`'s value: `replacement` (with `$1`, `${name}`) when the whole of `src`'s
/// value matches `re` (anchored by the caller), else no change.
pub fn replaced<'a>(replacement: &'a str, src: &'a str, re: &'a regex::Regex) -> impl Fn(&Labels) -> Option<String> + 'a {
    move |l: &Labels| {
        let value = l.iter().find(|(k, _)| k == src).map_or("", |(_, v)| v.as_str());
        re.captures(value).map(|c| {
            let mut out = String::new();
            c.expand(replacement, &mut out);
            out
        })
    }
}

/// Drops the metric name, as every operation that changes a value does.
pub fn drop_name(mut l: Labels) -> Labels {
    l.retain(|(k, _)| k != "__name__");
    l
}

fn signature(m: &LabelMatch, labels: &Labels) -> Labels {
    match m {
        LabelMatch::On(on) => labels.iter().filter(|(k, _)| on.iter().any(|o| o == k)).cloned().collect(),
        LabelMatch::Ignoring(ign) => labels.iter().filter(|(k, _)| k != "__name__" && !ign.iter().any(|o| o == k)).cloned().collect(),
        LabelMatch::All => labels.iter().filter(|(k, _)| k != "__name__").cloned().collect(),
    }
}

/// `l and r`, `l or r`, `l unless r` at each of `n` steps: `and` keeps a left point whose
/// signature the right side has at that step, `unless` one it has not, `or` keeps every left
/// point and adds the right points whose signature the left side lacks at that step.
pub fn set(op: SetOp, labels: &LabelMatch, l: Vec<Series>, r: Vec<Series>, n: usize) -> Vec<Series> {
    // Every series has a point slot per step: the callers evaluate both sides at the same steps.
    debug_assert!(l.iter().chain(&r).all(|s| s.points.len() == n));
    let lsig: Vec<Labels> = l.iter().map(|s| signature(labels, &s.labels)).collect();
    let rsig: Vec<Labels> = r.iter().map(|s| signature(labels, &s.labels)).collect();
    let present = |sigs: &[Labels], side: &[Series], i: usize| -> HashSet<Labels> {
        side.iter().zip(sigs).filter(|(s, _)| s.points[i].is_some()).map(|(_, k)| k.clone()).collect()
    };
    let mut lpoints: Vec<Vec<Option<f64>>> = l.iter().map(|s| s.points.clone()).collect();
    let mut rpoints: Vec<Vec<Option<f64>>> = vec![vec![None; n]; r.len()];
    for i in 0..n {
        let rs = present(&rsig, &r, i);
        for (j, k) in lsig.iter().enumerate() {
            let keep = match op {
                SetOp::And => rs.contains(k),
                SetOp::Unless => !rs.contains(k),
                SetOp::Or => true,
            };
            if !keep {
                lpoints[j][i] = None;
            }
        }
        if op == SetOp::Or {
            let ls = present(&lsig, &l, i);
            for (j, k) in rsig.iter().enumerate() {
                if !ls.contains(k) {
                    rpoints[j][i] = r[j].points[i];
                }
            }
        }
    }
    // A series of `or` may come from the left at some steps and the right at others: one
    // series, as a range query over instant evaluations gives it.
    let mut out: Vec<Series> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (s, points) in l.into_iter().zip(lpoints).chain(r.into_iter().zip(rpoints)) {
        if !points.iter().any(Option::is_some) {
            continue;
        }
        match index.get(&s.labels) {
            Some(&i) => {
                for (have, p) in out[i].points.iter_mut().zip(points) {
                    if have.is_none() {
                        *have = p;
                    }
                }
            }
            None => {
                index.insert(s.labels.clone(), out.len());
                out.push(Series { labels: s.labels, points });
            }
        }
    }
    out
}

/// An arithmetic or comparison operator between two sets of series at each of `n` steps.
/// `apply(left, right)` gives the point (`None` drops it, as a comparison that does not hold);
/// `drop_names` drops the metric name from the result. Ambiguous matches are errors, in
/// PromQL's words.
pub fn binary(
    m: &Matching,
    drop_names: bool,
    l: Vec<Series>,
    r: Vec<Series>,
    n: usize,
    apply: impl Fn(f64, f64) -> Option<f64>,
) -> Result<Vec<Series>, String> {
    debug_assert!(l.iter().chain(&r).all(|s| s.points.len() == n));
    let (include, many_right) = match &m.card {
        Card::ManyToOne(ls) => (Some(ls), false),
        Card::OneToMany(ls) => (Some(ls), true),
        Card::OneToOne => (None, false),
    };
    let rsig: Vec<Labels> = r.iter().map(|s| signature(&m.labels, &s.labels)).collect();
    let lsig: Vec<Labels> = l.iter().map(|s| signature(&m.labels, &s.labels)).collect();
    let (many, many_sig, one, one_sig) = if many_right { (&r, &rsig, &l, &lsig) } else { (&l, &lsig, &r, &rsig) };
    let mut out: BTreeMap<Labels, Vec<Option<f64>>> = BTreeMap::new();
    for i in 0..n {
        // Per step, each signature at most once on the "one" side (both sides, one-to-one).
        let mut ones: HashMap<&Labels, (f64, &Labels)> = HashMap::new();
        for (s, k) in one.iter().zip(one_sig) {
            if let Some(y) = s.points[i]
                && ones.insert(k, (y, &s.labels)).is_some()
            {
                return Err(
                    "found duplicate series for the match group on the side that must be unique; use on/ignoring, or group_left/group_right on the other side"
                        .into(),
                );
            }
        }
        let mut seen = HashSet::new();
        for (s, k) in many.iter().zip(many_sig) {
            let (Some(v), Some((o, one_labels))) = (s.points[i], ones.get(k)) else { continue };
            if include.is_none() && !seen.insert(k) {
                return Err("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into());
            }
            let (x, y) = if many_right { (*o, v) } else { (v, *o) };
            let Some(v) = apply(x, y) else { continue };
            let mut labels = if drop_names { drop_name(s.labels.clone()) } else { s.labels.clone() };
            match (include, &m.labels) {
                (Some(take), _) => {
                    for name in take {
                        labels.retain(|(k, _)| k != name);
                        if let Some((_, v)) = one_labels.iter().find(|(k, v)| k == name && !v.is_empty()) {
                            labels.push((name.clone(), v.clone()));
                        }
                    }
                    labels.sort();
                }
                (None, LabelMatch::On(on)) => labels.retain(|(k, _)| on.iter().any(|o| o == k)),
                (None, LabelMatch::Ignoring(ign)) => labels.retain(|(k, _)| !ign.iter().any(|o| o == k)),
                (None, LabelMatch::All) => {}
            }
            let slot = &mut out.entry(labels).or_insert_with(|| vec![None; n])[i];
            if slot.is_some() {
                return Err("multiple matches for labels: grouping labels must ensure unique matches".into());
            }
            *slot = Some(v);
        }
    }
    Ok(out.into_iter().map(|(labels, points)| Series { labels, points }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(labels: &[(&str, &str)], points: &[Option<f64>]) -> Series {
        let mut labels: Labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        labels.sort();
        Series { labels, points: points.to_vec() }
    }

    fn names(v: &[Series]) -> Vec<String> {
        v.iter().map(|s| s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")).collect()
    }

    #[test]
    fn group_left_copies_labels_from_the_one_side_and_ambiguity_is_an_error() {
        // Errors per pod over totals per app: many pods to one app.
        let errors = vec![series(&[("app", "a"), ("pod", "p1")], &[Some(2.0), None]), series(&[("app", "a"), ("pod", "p2")], &[Some(6.0), Some(1.0)])];
        let totals = vec![series(&[("app", "a"), ("team", "t")], &[Some(8.0), Some(4.0)])];
        let on = Matching { labels: LabelMatch::On(vec!["app".into()]), card: Card::ManyToOne(vec!["team".into()]) };
        let out = binary(&on, true, errors.clone(), totals.clone(), 2, |a, b| Some(a / b)).unwrap();
        assert_eq!(names(&out), ["app=a,pod=p1,team=t", "app=a,pod=p2,team=t"]);
        assert_eq!(out[0].points, [Some(0.25), None]);
        assert_eq!(out[1].points, [Some(0.75), Some(0.25)]);
        // The same the other way round, with group_right.
        let right = Matching { labels: LabelMatch::On(vec!["app".into()]), card: Card::OneToMany(vec![]) };
        let out = binary(&right, true, totals.clone(), errors.clone(), 2, |a, b| Some(b / a)).unwrap();
        assert_eq!(out[1].points, [Some(0.75), Some(0.25)]);
        // Without group_left two pods match one app: an error, not a silent pick.
        let one = Matching { labels: LabelMatch::On(vec!["app".into()]), card: Card::OneToOne };
        assert!(binary(&one, true, errors.clone(), totals.clone(), 2, |a, b| Some(a / b)).unwrap_err().contains("many-to-one"));
        // Ignoring `pod` alone still leaves `team` apart: nothing matches.
        let ign = Matching { labels: LabelMatch::Ignoring(vec!["pod".into()]), card: Card::OneToOne };
        assert!(binary(&ign, true, errors, totals, 2, |a, b| Some(a / b)).unwrap().is_empty());
    }

    #[test]
    fn set_operators_work_step_by_step() {
        let l = vec![series(&[("a", "1")], &[Some(1.0), Some(1.0), None]), series(&[("a", "2")], &[Some(2.0), None, None])];
        let r = vec![series(&[("a", "1")], &[None, Some(9.0), Some(9.0)]), series(&[("a", "3")], &[Some(3.0), Some(3.0), None])];
        let and = set(SetOp::And, &LabelMatch::All, l.clone(), r.clone(), 3);
        assert_eq!(names(&and), ["a=1"]);
        assert_eq!(and[0].points, [None, Some(1.0), None]);
        let unless = set(SetOp::Unless, &LabelMatch::All, l.clone(), r.clone(), 3);
        assert_eq!(names(&unless), ["a=1", "a=2"]);
        assert_eq!(unless[0].points, [Some(1.0), None, None]);
        // `or`: the left wherever it has a point, the right where the left lacks its labels,
        // and one series per label set.
        let or = set(SetOp::Or, &LabelMatch::All, l.clone(), r.clone(), 3);
        assert_eq!(names(&or), ["a=1", "a=2", "a=3"]);
        assert_eq!(or[0].points, [Some(1.0), Some(1.0), Some(9.0)]);
        // `on()` matches everything with everything: `and on()` keeps the left where the right
        // has any point at all.
        let any = set(SetOp::And, &LabelMatch::On(vec![]), l, r, 3);
        assert_eq!(any[0].points, [Some(1.0), Some(1.0), None]);
        assert_eq!(any[1].points, [Some(2.0), None, None]);
    }
}
