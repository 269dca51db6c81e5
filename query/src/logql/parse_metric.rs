//! Metric expressions of the LogQL parser ([`super::parse`]): range functions over log
//! queries, aggregations, PromQL's binary, comparison and set operators with their vector
//! matching, and the functions on vectors.

use super::super::*;
use super::Parser;
use crate::logql::lex::Tok;

fn binop(sym: &str) -> Option<(BinOp, u8)> {
    Some(match sym {
        "+" => (BinOp::Add, 1),
        "-" => (BinOp::Sub, 1),
        "*" => (BinOp::Mul, 2),
        "/" => (BinOp::Div, 2),
        "%" => (BinOp::Mod, 2),
        "^" => (BinOp::Pow, 3),
        _ => return None,
    })
}

impl Parser {
    /// Binary expressions by precedence climbing (`+ -` < `* / %` < `^`, `^` right-assoc).
    pub(super) fn binary(&mut self, min_prec: u8) -> Result<MetricExpr, String> {
        self.enter()?;
        let mut lhs = self.unary()?;
        while let Some((op, prec)) = match self.peek() {
            Some(Tok::Sym(s)) => binop(s),
            _ => None,
        } {
            if prec < min_prec {
                break;
            }
            self.pos += 1;
            if self.is_ident("bool") {
                return Err("the bool modifier can only follow a comparison operator (== != > >= < <=)".into());
            }
            let matching = self.matching(false)?;
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.binary(next_min)?;
            lhs = MetricExpr::Binary { op, matching, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// Comparisons, below arithmetic in precedence, left-associative; `bool` after the
    /// operator gives 1 or 0 instead of filtering.
    pub(super) fn comparison(&mut self) -> Result<MetricExpr, String> {
        let mut lhs = self.binary(0)?;
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("==")) => CmpOp::Eq,
                Some(Tok::Sym("!=")) => CmpOp::Ne,
                Some(Tok::Sym(">")) => CmpOp::Gt,
                Some(Tok::Sym(">=")) => CmpOp::Ge,
                Some(Tok::Sym("<")) => CmpOp::Lt,
                Some(Tok::Sym("<=")) => CmpOp::Le,
                _ => break,
            };
            self.pos += 1;
            let bool_mod = self.is_ident("bool");
            if bool_mod {
                self.pos += 1;
            }
            let matching = self.matching(false)?;
            let rhs = self.binary(0)?;
            if !bool_mod && matches!((&lhs, &rhs), (MetricExpr::Number(_), MetricExpr::Number(_))) {
                return Err("comparisons between numbers need the bool modifier (like 1 > bool 0)".into());
            }
            lhs = MetricExpr::Compare { op, bool_mod, matching, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    /// A whole metric expression: set operators bind loosest, `or` below `and` and `unless`,
    /// both below comparisons (as in PromQL and Loki).
    pub(super) fn metric(&mut self) -> Result<MetricExpr, String> {
        let mut lhs = self.and_unless()?;
        while self.is_ident("or") {
            self.pos += 1;
            let matching = self.matching(true)?;
            let rhs = self.and_unless()?;
            lhs = MetricExpr::Set { op: SetOp::Or, matching, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    pub(super) fn and_unless(&mut self) -> Result<MetricExpr, String> {
        let mut lhs = self.comparison()?;
        loop {
            let op = if self.is_ident("and") {
                SetOp::And
            } else if self.is_ident("unless") {
                SetOp::Unless
            } else {
                break;
            };
            self.pos += 1;
            let matching = self.matching(true)?;
            let rhs = self.comparison()?;
            lhs = MetricExpr::Set { op, matching, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    /// The vector-matching modifiers after an operator: `on(…)` or `ignoring(…)`, then (not
    /// after a set operator) `group_left` or `group_right`, each with an optional label list.
    pub(super) fn matching(&mut self, set: bool) -> Result<Matching, String> {
        let labels = if self.is_ident("on") {
            self.pos += 1;
            LabelMatch::On(self.label_list()?)
        } else if self.is_ident("ignoring") {
            self.pos += 1;
            LabelMatch::Ignoring(self.label_list()?)
        } else {
            LabelMatch::All
        };
        let left = self.is_ident("group_left");
        if !left && !self.is_ident("group_right") {
            return Ok(Matching { labels, card: Card::OneToOne });
        }
        if set {
            return Err(format!("{} cannot follow a set operator (and, or, unless): they match series one-to-one", self.describe()));
        }
        if labels == LabelMatch::All {
            return Err(format!("{} needs on(…) or ignoring(…) before it", self.describe()));
        }
        self.pos += 1;
        let include = if self.is_sym("(") { self.label_list()? } else { Vec::new() };
        if let LabelMatch::On(on) = &labels
            && let Some(both) = include.iter().find(|l| on.contains(l))
        {
            return Err(format!("label `{both}` must not be listed in both on(…) and the group modifier"));
        }
        Ok(Matching { labels, card: if left { Card::ManyToOne(include) } else { Card::OneToMany(include) } })
    }

    /// `(name, …)`, possibly empty.
    pub(super) fn label_list(&mut self) -> Result<Vec<String>, String> {
        self.expect_sym("(")?;
        let mut labels = Vec::new();
        if !self.eat_sym(")") {
            loop {
                labels.push(self.ident("a label name")?);
                if self.eat_sym(")") {
                    break;
                }
                self.expect_sym(",")?;
            }
        }
        Ok(labels)
    }

    pub(super) fn unary(&mut self) -> Result<MetricExpr, String> {
        if self.eat_sym("-") {
            let e = self.unary()?;
            return Ok(MetricExpr::Binary { op: BinOp::Mul, matching: Matching::default(), lhs: Box::new(MetricExpr::Number(-1.0)), rhs: Box::new(e) });
        }
        if self.eat_sym("+") {
            return self.unary();
        }
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                Ok(MetricExpr::Number(n))
            }
            Some(Tok::Sym("(")) => {
                self.pos += 1;
                let e = self.metric()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Some(Tok::Ident(name)) => {
                self.pos += 1;
                self.call(&name)
            }
            Some(Tok::Sym("{")) => Err("a log query cannot be used as a metric; wrap it in a range function like count_over_time({…}[5m])".into()),
            _ => Err(format!("expected a metric expression at {}, found {}", self.at(), self.describe())),
        }
    }

    pub(super) fn grouping(&mut self) -> Result<Option<Grouping>, String> {
        let without = if self.is_ident("by") {
            false
        } else if self.is_ident("without") {
            true
        } else {
            return Ok(None);
        };
        self.pos += 1;
        Ok(Some(Grouping { without, labels: self.label_list()? }))
    }

    pub(super) fn call(&mut self, name: &str) -> Result<MetricExpr, String> {
        let range_fn = match name {
            "count_over_time" => Some(RangeFn::CountOverTime),
            "rate" => Some(RangeFn::Rate),
            "bytes_over_time" => Some(RangeFn::BytesOverTime),
            "bytes_rate" => Some(RangeFn::BytesRate),
            "absent_over_time" => Some(RangeFn::AbsentOverTime),
            "sum_over_time" => Some(RangeFn::SumOverTime),
            "avg_over_time" => Some(RangeFn::AvgOverTime),
            "min_over_time" => Some(RangeFn::MinOverTime),
            "max_over_time" => Some(RangeFn::MaxOverTime),
            "first_over_time" => Some(RangeFn::FirstOverTime),
            "last_over_time" => Some(RangeFn::LastOverTime),
            "stddev_over_time" => Some(RangeFn::StddevOverTime),
            "stdvar_over_time" => Some(RangeFn::StdvarOverTime),
            "quantile_over_time" => Some(RangeFn::QuantileOverTime),
            "rate_counter" => Some(RangeFn::RateCounter),
            _ => None,
        };
        if let Some(func) = range_fn {
            self.expect_sym("(")?;
            let param = if func == RangeFn::QuantileOverTime {
                let Some(Tok::Num(q)) = self.next() else { return Err("`quantile_over_time` needs φ first, like quantile_over_time(0.99, …)".into()) };
                self.expect_sym(",")?;
                Some(q)
            } else {
                None
            };
            let log = self.log_expr()?;
            if log.stages.iter().any(|s| matches!(s, Stage::Distinct(_))) {
                return Err("`distinct` keeps the first line of each value: it applies to log queries, not inside a metric query".into());
            }
            let unwrap = if self.is_sym("|") {
                self.pos += 2; // `|` `unwrap`
                Some(self.unwrap_stage()?)
            } else {
                None
            };
            let counts = matches!(func, RangeFn::CountOverTime | RangeFn::Rate | RangeFn::BytesOverTime | RangeFn::BytesRate | RangeFn::AbsentOverTime);
            match (&unwrap, counts) {
                (None, false) => return Err(format!("`{name}` works on unwrapped values: end its log query with | unwrap <label>")),
                (Some(_), true) if matches!(func, RangeFn::BytesOverTime | RangeFn::BytesRate) => {
                    return Err(format!("`{name}` counts line bytes and takes no unwrap; use sum_over_time over unwrap bytes(…)"));
                }
                (Some(_), true) if func == RangeFn::AbsentOverTime => {
                    return Err("`absent_over_time` asks whether any line is there and takes no unwrap".into());
                }
                _ => {}
            }
            self.expect_sym("[")?;
            let range_ns = match self.next() {
                Some(Tok::Dur(d)) if d > 0 => d,
                _ => return Err("expected a range like [5m] after the log query".into()),
            };
            self.expect_sym("]")?;
            let offset_ns = if self.is_ident("offset") {
                self.pos += 1;
                match self.next() {
                    Some(Tok::Dur(d)) => d,
                    _ => return Err("expected a duration after `offset`".into()),
                }
            } else {
                0
            };
            self.expect_sym(")")?;
            let grouping = self.grouping()?;
            if grouping.is_some() && (unwrap.is_none() || matches!(func, RangeFn::SumOverTime | RangeFn::Rate | RangeFn::CountOverTime | RangeFn::RateCounter))
            {
                return Err(format!("grouping on `{name}` is not supported; group with an aggregation like sum by (…)"));
            }
            return Ok(MetricExpr::Range { func, log, range_ns, offset_ns, unwrap, param, grouping });
        }
        let agg = match name {
            "sum" => Some(AggOp::Sum),
            "avg" => Some(AggOp::Avg),
            "min" => Some(AggOp::Min),
            "max" => Some(AggOp::Max),
            "count" => Some(AggOp::Count),
            // Loki's approx_topk is a sketch of topk; the exact answer is always within it.
            "topk" | "approx_topk" => Some(AggOp::Topk),
            "bottomk" => Some(AggOp::Bottomk),
            "stddev" => Some(AggOp::Stddev),
            "stdvar" => Some(AggOp::Stdvar),
            _ => None,
        };
        if let Some(op) = agg {
            let mut grouping = self.grouping()?;
            self.expect_sym("(")?;
            let param = if matches!(op, AggOp::Topk | AggOp::Bottomk) {
                let Some(Tok::Num(k)) = self.next() else { return Err(format!("`{name}` needs a number first, like {name}(5, …)")) };
                if k < 1.0 || k.fract() != 0.0 {
                    return Err(format!("`{name}`'s parameter must be a whole number of at least 1"));
                }
                self.expect_sym(",")?;
                Some(k)
            } else {
                None
            };
            let inner = self.metric()?;
            self.expect_sym(")")?;
            if grouping.is_none() {
                grouping = self.grouping()?;
            }
            if name == "approx_topk" && grouping.is_some() {
                return Err("approx_topk takes no by/without; use topk".into());
            }
            return Ok(MetricExpr::Agg { op, grouping, param, inner: Box::new(inner) });
        }
        if name == "sort" || name == "sort_desc" {
            self.expect_sym("(")?;
            let inner = self.metric()?;
            self.expect_sym(")")?;
            return Ok(MetricExpr::Sort { desc: name == "sort_desc", inner: Box::new(inner) });
        }
        if name == "label_replace" {
            self.expect_sym("(")?;
            let inner = self.metric()?;
            let mut text = Vec::new();
            for what in ["the destination label", "the replacement", "the source label", "the regex"] {
                self.expect_sym(",")?;
                text.push(self.string(what)?);
            }
            self.expect_sym(")")?;
            let [dst, replacement, src, regex] = <[String; 4]>::try_from(text).map_err(|_| "label_replace takes five arguments".to_owned())?;
            let valid = dst.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') && dst.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!("invalid destination label name in label_replace(): `{dst}`"));
            }
            if TENANCY_LABELS.contains(&dst.as_str()) {
                return Err(format!("label_replace cannot write `{dst}`: it is the tenancy the rows were stored under"));
            }
            super::pipeline::regex_anchored(&regex)?;
            return Ok(MetricExpr::LabelReplace { inner: Box::new(inner), dst, replacement, src, regex });
        }
        if name == "vector" {
            self.expect_sym("(")?;
            let Some(Tok::Num(n)) = self.next() else { return Err("`vector` takes a number".into()) };
            self.expect_sym(")")?;
            return Ok(MetricExpr::Vector(n));
        }
        Err(format!(
            "`{name}` is not supported (supported: count_over_time, rate, bytes_over_time, bytes_rate, sum/avg/min/max/first/last/stddev/stdvar/quantile_over_time over unwrap, sum, avg, min, max, count, stddev, stdvar, topk, bottomk, approx_topk, sort, sort_desc, label_replace, vector)"
        ))
    }
}
