//! The LogQL parser: a recursive-descent parser over [`super::lex`]'s tokens. Log queries
//! (selectors and pipelines) are read here, metric queries in `parse_metric.rs`, with PromQL's
//! operator precedence.
//! Errors say where and what was expected; unsupported constructs are named as such.

use super::lex::{Tok, lex};
use super::templates::{pattern, template};
use super::*;

/// Queries longer than this are refused before parsing.
pub const MAX_QUERY_BYTES: usize = 64 * 1024;
/// Nesting deeper than this (parentheses, aggregations) is refused.
const MAX_DEPTH: usize = 64;

/// The pipeline stages named by a keyword (the others are line and label filters).
const STAGES: [&str; 11] = ["json", "logfmt", "regexp", "pattern", "line_format", "label_format", "drop", "keep", "decolorize", "unpack", "distinct"];

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
        let keyword = STAGES.contains(&name.as_str());
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
            other => Err(format!("pipeline stage `{other}` is not supported (supported: {}, label filters, line filters)", STAGES.join(", "))),
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
}

// Metric expressions: aggregations, range functions, binary and set operators.
#[path = "parse_metric.rs"]
mod metric;

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
