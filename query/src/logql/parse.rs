//! The LogQL parser: a recursive-descent parser over [`super::lex`]'s tokens, with PromQL's
//! operator precedence.
//! Errors say where and what was expected; unsupported constructs are named as such.

use super::lex::{Tok, lex};
use super::templates::{pattern, template};
use super::*;

/// Queries longer than this are refused before parsing.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Nesting deeper than this (parentheses, aggregations) is refused.
const MAX_DEPTH: usize = 64;

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

/// Parses a LogQL query.
pub fn parse(src: &str) -> Result<Expr, String> {
    let mut p = Parser { toks: lex(src)?, pos: 0, depth: 0 };
    if p.toks.is_empty() {
        return Err("the query is empty".into());
    }
    let e = if p.starts_log() { Expr::Log(p.log_expr()?) } else { Expr::Metric(p.metric()?) };
    if p.pos < p.toks.len() {
        return Err(format!("unexpected {} at {}", p.describe(), p.at()));
    }
    Ok(e)
}

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
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or_else(|| self.toks.last().map_or(0, |(p, _)| *p) + 1, |(p, _)| *p + 1)
    }
    fn describe(&self) -> String {
        match self.peek() {
            None => "end of query".into(),
            Some(Tok::Ident(s)) => format!("`{s}`"),
            Some(Tok::Str(s)) => format!("string \"{s}\""),
            Some(Tok::Num(n)) => format!("number {n}"),
            Some(Tok::Dur(_)) => "a duration".into(),
            Some(Tok::Bytes(_)) => "a byte size".into(),
            Some(Tok::Sym(s)) => format!("`{s}`"),
        }
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|(_, t)| t.clone());
        self.pos += 1;
        t
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(x)) if *x == s)
    }
    fn is_ident(&self, s: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(x)) if x == s)
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        let hit = self.is_sym(s);
        if hit {
            self.pos += 1;
        }
        hit
    }
    fn expect_sym(&mut self, s: &str) -> Result<(), String> {
        if self.eat_sym(s) { Ok(()) } else { Err(format!("expected `{s}` at {}, found {}", self.at(), self.describe())) }
    }
    fn ident(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Ident(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(format!("expected {what} at {}, found {}", self.at(), self.describe())),
        }
    }
    fn string(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(format!("expected {what} (a quoted string) at {}, found {}", self.at(), self.describe())),
        }
    }
    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH { Err(format!("the query nests deeper than {MAX_DEPTH} levels")) } else { Ok(()) }
    }
    fn starts_log(&self) -> bool {
        self.is_sym("{")
    }

    fn selector(&mut self) -> Result<Vec<Matcher>, String> {
        self.expect_sym("{")?;
        let mut out = Vec::new();
        if self.eat_sym("}") {
            return Ok(out);
        }
        loop {
            out.push(self.matcher(true)?);
            if self.eat_sym("}") {
                return Ok(out);
            }
            self.expect_sym(",")?;
        }
    }

    /// `name op "value"`.
    fn matcher(&mut self, require_op: bool) -> Result<Matcher, String> {
        let name = self.ident("a label name")?;
        let op = match self.peek() {
            Some(Tok::Sym("=")) => MatchOp::Eq,
            Some(Tok::Sym("!=")) => MatchOp::Ne,
            Some(Tok::Sym("=~")) => MatchOp::Re,
            Some(Tok::Sym("!~")) => MatchOp::Nre,
            _ if !require_op => return Ok(Matcher { name, op: MatchOp::Re, value: ".*".into() }),
            _ => return Err(format!("expected one of `= != =~ !~` after `{name}` at {}, found {}", self.at(), self.describe())),
        };
        self.pos += 1;
        let value = self.string("a label value")?;
        Ok(Matcher { name, op, value })
    }

    fn log_expr(&mut self) -> Result<LogExpr, String> {
        let selector = self.selector()?;
        let mut stages = Vec::new();
        loop {
            let op = match self.peek() {
                Some(Tok::Sym("|=")) => LineOp::Contains,
                Some(Tok::Sym("!=")) => LineOp::NotContains,
                Some(Tok::Sym("|~")) => LineOp::Regex,
                Some(Tok::Sym("!~")) => LineOp::NotRegex,
                Some(Tok::Sym("|>")) => LineOp::Pattern,
                Some(Tok::Sym("!>")) => LineOp::NotPattern,
                // `| unwrap` ends the log query of a range function (its caller reads it).
                Some(Tok::Sym("|")) if matches!(self.toks.get(self.pos + 1), Some((_, Tok::Ident(u))) if u == "unwrap") => break,
                Some(Tok::Sym("|")) => {
                    self.pos += 1;
                    stages.push(self.stage()?);
                    continue;
                }
                _ => break,
            };
            self.pos += 1;
            if self.is_ident("ip") && matches!(op, LineOp::Contains | LineOp::NotContains) {
                stages.push(Stage::IpLine { keep: op == LineOp::Contains, range: self.ip()? });
                continue;
            }
            if let Some(Tok::Ident(f)) = self.peek() {
                return Err(format!("line filter function `{f}` is not supported; use a quoted string or regex"));
            }
            let mut values = vec![self.string("a line filter")?];
            while self.is_ident("or") {
                self.pos += 1;
                values.push(self.string("a line filter")?);
            }
            if matches!(op, LineOp::Pattern | LineOp::NotPattern) {
                for v in &values {
                    super::parsers::line_pattern(v)?;
                }
            }
            stages.push(Stage::Line { op, values });
        }
        Ok(LogExpr { selector, stages })
    }

    fn stage(&mut self) -> Result<Stage, String> {
        let Some(Tok::Ident(name)) = self.peek().cloned() else {
            return Err(format!("expected a pipeline stage after `|` at {}, found {}", self.at(), self.describe()));
        };
        // A label filter starts with a label name followed by an operator; a stage's keyword
        // never names a label (so `| logfmt != "x"` is the parser, then a line filter).
        let keyword =
            ["json", "logfmt", "unpack", "decolorize", "pattern", "regexp", "line_format", "label_format", "drop", "keep", "distinct"].contains(&name.as_str());
        let followed_by_op = matches!(self.toks.get(self.pos + 1), Some((_, Tok::Sym(s))) if ["=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="].contains(s));
        if followed_by_op && !keyword {
            return Ok(Stage::Labels(self.label_or()?));
        }
        self.pos += 1;
        match name.as_str() {
            "json" => Ok(Stage::Json(self.extractions("a JSON path")?)),
            "logfmt" => {
                let mut o = super::parsers::LogfmtOptions::default();
                while self.is_sym("-") {
                    let flag = (self.eat_sym("-") && self.eat_sym("-")).then(|| self.peek().cloned()).flatten();
                    match flag {
                        Some(Tok::Ident(f)) if f == "strict" => {
                            self.pos += 1;
                            o.strict = true;
                        }
                        Some(Tok::Ident(f))
                            if f == "keep"
                                && self.toks.get(self.pos + 1).is_some_and(|(_, t)| *t == Tok::Sym("-"))
                                && matches!(self.toks.get(self.pos + 2), Some((_, Tok::Ident(e))) if e == "empty") =>
                        {
                            self.pos += 3;
                            o.keep_empty = true;
                        }
                        _ => return Err(format!("logfmt takes the flags --strict and --keep-empty; found {}", self.describe())),
                    }
                }
                o.params = self.extractions("a logfmt key")?;
                Ok(Stage::Logfmt(o))
            }
            "line_format" => Ok(Stage::LineFormat(template(&self.string("a line_format template")?)?)),
            "regexp" => Ok(Stage::Regexp(self.string("a regexp with named groups")?)),
            "pattern" => Ok(Stage::Pattern(pattern(&self.string("a pattern like \"<_> <method> <path>\"")?)?)),
            "label_format" => {
                let mut list = Vec::new();
                loop {
                    let dst = self.ident("a label name")?;
                    self.expect_sym("=")?;
                    let value = match self.peek().cloned() {
                        Some(Tok::Str(t)) => {
                            self.pos += 1;
                            LabelValue::Template(template(&t)?)
                        }
                        _ => LabelValue::Rename(self.ident("a label to rename, or a quoted template")?),
                    };
                    for l in std::iter::once(dst.as_str()).chain(match &value {
                        LabelValue::Rename(src) => Some(src.as_str()),
                        LabelValue::Template(_) => None,
                    }) {
                        if TENANCY_LABELS.contains(&l) {
                            return Err(format!("label_format cannot rename or set `{l}`: it is the tenancy the row was stored under"));
                        }
                    }
                    if list.iter().any(|(d, _)| *d == dst) {
                        return Err(format!("label_format sets `{dst}` twice; use two label_format stages"));
                    }
                    list.push((dst, value));
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                Ok(Stage::LabelFormat(list))
            }
            "drop" | "keep" => {
                let mut list = Vec::new();
                loop {
                    let m = self.matcher(false)?;
                    list.push(m);
                    if !self.eat_sym(",") {
                        break;
                    }
                }
                Ok(if name == "drop" { Stage::Drop(list) } else { Stage::Keep(list) })
            }
            "decolorize" => Ok(Stage::Decolorize),
            "unpack" => Ok(Stage::Unpack),
            "distinct" => {
                let mut labels = vec![self.ident("a label name after distinct")?];
                while self.eat_sym(",") {
                    labels.push(self.ident("a label name")?);
                }
                Ok(Stage::Distinct(labels))
            }
            other => Err(format!(
                "pipeline stage `{other}` is not supported (supported: json, logfmt, regexp, pattern, line_format, label_format, drop, keep, decolorize, unpack, distinct, label filters, line filters)"
            )),
        }
    }

    /// A parser's extractions, `label` or `label="source"`, comma-separated (maybe none):
    /// `| json a, b="x.y"`, `| logfmt host, ip="client"`.
    fn extractions(&mut self, source: &str) -> Result<Vec<(String, String)>, String> {
        let mut out = Vec::new();
        while let Some(Tok::Ident(label)) = self.peek().cloned().filter(|_| !self.is_ident("or")) {
            self.pos += 1;
            let from = if self.eat_sym("=") { self.string(source)? } else { label.clone() };
            out.push((label, from));
            if !self.eat_sym(",") {
                break;
            }
        }
        Ok(out)
    }

    /// `ip("…")`, at the `ip`.
    fn ip(&mut self) -> Result<ip::IpRange, String> {
        self.pos += 1;
        self.expect_sym("(")?;
        let range = ip::IpRange::parse(&self.string("an address, range or CIDR block")?)?;
        self.expect_sym(")")?;
        Ok(range)
    }

    /// After `| unwrap`: the label, maybe in a conversion, then label filters.
    fn unwrap_stage(&mut self) -> Result<Unwrap, String> {
        let first = self.ident("the label to unwrap")?;
        let conversion = match first.as_str() {
            "duration" | "duration_seconds" => Some(Conversion::Duration),
            "bytes" => Some(Conversion::Bytes),
            _ => None,
        };
        let (label, conversion) = match conversion {
            Some(c) if self.eat_sym("(") => {
                let l = self.ident("the label to unwrap")?;
                self.expect_sym(")")?;
                (l, c)
            }
            _ => (first, Conversion::Number),
        };
        let mut post = Vec::new();
        while self.eat_sym("|") {
            let followed_by_op =
                matches!(self.toks.get(self.pos + 1), Some((_, Tok::Sym(s))) if ["=", "!=", "=~", "!~", "==", ">", ">=", "<", "<="].contains(s));
            if !matches!(self.peek(), Some(Tok::Ident(_))) || !followed_by_op {
                return Err(format!("only label filters (like | __error__=\"\") may follow unwrap, found {}", self.describe()));
            }
            post.push(self.label_or()?);
        }
        Ok(Unwrap { label, conversion, post })
    }

    fn label_or(&mut self) -> Result<LabelPred, String> {
        let mut l = self.label_and()?;
        while self.is_ident("or") {
            self.pos += 1;
            l = LabelPred::Or(Box::new(l), Box::new(self.label_and()?));
        }
        Ok(l)
    }
    fn label_and(&mut self) -> Result<LabelPred, String> {
        let mut l = self.label_atom()?;
        loop {
            if self.is_ident("and") || (self.is_sym(",") && matches!(self.toks.get(self.pos + 1), Some((_, Tok::Ident(_))))) {
                self.pos += 1;
                l = LabelPred::And(Box::new(l), Box::new(self.label_atom()?));
            } else if matches!(self.peek(), Some(Tok::Ident(_))) && !self.is_ident("or") {
                // `| a="x" b="y"` (juxtaposition) means `and` too.
                l = LabelPred::And(Box::new(l), Box::new(self.label_atom()?));
            } else {
                return Ok(l);
            }
        }
    }
    fn label_atom(&mut self) -> Result<LabelPred, String> {
        if self.eat_sym("(") {
            self.enter()?;
            let e = self.label_or()?;
            self.expect_sym(")")?;
            self.depth -= 1;
            return Ok(e);
        }
        let name = self.ident("a label name")?;
        let op = match self.next() {
            Some(Tok::Sym(s)) => s,
            _ => return Err(format!("expected a comparison after `{name}`")),
        };
        match (op, self.peek().cloned()) {
            (op @ ("=" | "!="), Some(Tok::Ident(f))) if f == "ip" => Ok(LabelPred::Ip { name, keep: op == "=", range: self.ip()? }),
            (op @ ("=" | "!=" | "=~" | "!~"), Some(Tok::Str(value))) => {
                self.pos += 1;
                let op = match op {
                    "=" => MatchOp::Eq,
                    "!=" => MatchOp::Ne,
                    "=~" => MatchOp::Re,
                    _ => MatchOp::Nre,
                };
                Ok(LabelPred::Str(Matcher { name, op, value }))
            }
            // A number, a duration (the label's value read as a Go duration) or a byte size (read
            // as one, like `5 MiB`).
            (op, Some(tok @ (Tok::Num(_) | Tok::Dur(_) | Tok::Bytes(_)))) => {
                self.pos += 1;
                let op = match op {
                    "==" | "=" => CmpOp::Eq,
                    "!=" => CmpOp::Ne,
                    ">" => CmpOp::Gt,
                    ">=" => CmpOp::Ge,
                    "<" => CmpOp::Lt,
                    "<=" => CmpOp::Le,
                    other => return Err(format!("`{other}` cannot compare with a number")),
                };
                let (value, conversion) = match tok {
                    Tok::Dur(ns) => (ns as f64 / 1e9, Conversion::Duration),
                    Tok::Bytes(b) => (b, Conversion::Bytes),
                    Tok::Num(n) => (n, Conversion::Number),
                    _ => unreachable!("matched above"),
                };
                Ok(LabelPred::Num { name, op, value, conversion })
            }
            (op, _) => Err(format!("expected a value after `{name} {op}` at {}, found {}", self.at(), self.describe())),
        }
    }

    /// Binary expressions by precedence climbing (`+ -` < `* / %` < `^`, `^` right-assoc).
    fn binary(&mut self, min_prec: u8) -> Result<MetricExpr, String> {
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
    fn comparison(&mut self) -> Result<MetricExpr, String> {
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
    fn metric(&mut self) -> Result<MetricExpr, String> {
        let mut lhs = self.and_unless()?;
        while self.is_ident("or") {
            self.pos += 1;
            let matching = self.matching(true)?;
            let rhs = self.and_unless()?;
            lhs = MetricExpr::Set { op: SetOp::Or, matching, lhs: Box::new(lhs), rhs: Box::new(rhs) };
        }
        Ok(lhs)
    }

    fn and_unless(&mut self) -> Result<MetricExpr, String> {
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
    fn matching(&mut self, set: bool) -> Result<Matching, String> {
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
    fn label_list(&mut self) -> Result<Vec<String>, String> {
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

    fn unary(&mut self) -> Result<MetricExpr, String> {
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

    fn grouping(&mut self) -> Result<Option<Grouping>, String> {
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

    fn call(&mut self, name: &str) -> Result<MetricExpr, String> {
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

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
