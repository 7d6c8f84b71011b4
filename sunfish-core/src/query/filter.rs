//! `$filter`: a tokenizer, a recursive-descent parser and an evaluator for the OData subset
//! DSP0266 requires.
//!
//! Grammar, loosest binding first (OData's precedence table; `not` binds tightest, so
//! `not Enabled eq true` is `(not Enabled) eq true`: negate a comparison with parentheses):
//! ```text
//! or_expr  = and_expr *( "or" and_expr )
//! and_expr = eq_expr *( "and" eq_expr )
//! eq_expr  = rel_expr *( ("eq" | "ne") rel_expr )
//! rel_expr = unary *( ("gt" | "ge" | "lt" | "le") unary )
//! unary    = "not" unary | primary
//! primary  = "(" or_expr ")" | string | number | "true" | "false" | "null" | path
//! path     = segment *( "/" segment )       e.g. Status/Health, Members@odata.count
//! ```
//! Strings are single-quoted with `''` for a quote; numbers are JSON-like (`-3`, `2.5`, `1e3`).
//! Keywords are case-sensitive, as in OData. Nesting (parentheses, `not`, chained comparisons) is
//! limited to [`MAX_DEPTH`] so a hostile filter cannot exhaust the stack.
//!
//! Evaluation: a missing property is `null`. Comparisons always yield a boolean: values of
//! incompatible types compare false (also for `ne`), except that `eq`/`ne` with `null` test for
//! null-ness (`Foo eq null` matches members without `Foo`, `Foo ne null` those with it). Numbers
//! compare numerically (integers exactly, otherwise as `f64`), strings by code point; booleans,
//! objects and arrays only with `eq`/`ne` (objects and arrays never equal anything). `and`, `or`
//! and `not` use OData's three-valued logic, where anything not boolean counts as `null`; a member
//! matches when the whole expression is `true`.

use std::cmp::Ordering;
use std::fmt;

use serde_json::{Number, Value};

use crate::{Error, Result};

/// The parameter name used in errors.
const PARAM: &str = "$filter";

/// Deepest nesting of parentheses, `not` and chained comparisons a filter may use.
pub const MAX_DEPTH: usize = 64;

fn value_error(reason: impl Into<String>) -> Error {
    Error::QueryParameterValue { parameter: PARAM.into(), reason: reason.into() }
}

/// A number as the evaluator compares it: integers exactly (`i128` holds every `i64` and `u64`),
/// everything else as a finite `f64`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

impl Num {
    fn from_json(n: &Number) -> Option<Num> {
        if let Some(i) = n.as_i64() {
            Some(Num::Int(i128::from(i)))
        } else if let Some(u) = n.as_u64() {
            Some(Num::Int(i128::from(u)))
        } else {
            n.as_f64().filter(|f| f.is_finite()).map(Num::Float)
        }
    }

    #[allow(clippy::cast_precision_loss)]
    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn compare(self, other: Num) -> Option<Ordering> {
        match (self, other) {
            (Num::Int(a), Num::Int(b)) => Some(a.cmp(&b)),
            (a, b) => a.as_f64().partial_cmp(&b.as_f64()),
        }
    }
}

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x:?}"),
        }
    }
}

/// Comparison operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

impl CmpOp {
    fn name(self) -> &'static str {
        match self {
            CmpOp::Eq => "eq",
            CmpOp::Ne => "ne",
            CmpOp::Gt => "gt",
            CmpOp::Ge => "ge",
            CmpOp::Lt => "lt",
            CmpOp::Le => "le",
        }
    }

    fn is_equality(self) -> bool {
        matches!(self, CmpOp::Eq | CmpOp::Ne)
    }
}

/// One lexical token.
#[derive(Debug, Clone, PartialEq)]
enum Token {
    LParen,
    RParen,
    Str(String),
    Num(Num),
    True,
    False,
    Null,
    Path(Vec<String>),
    Cmp(CmpOp),
    And,
    Or,
    Not,
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Token::LParen => f.write_str("("),
            Token::RParen => f.write_str(")"),
            Token::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Token::Num(n) => write!(f, "{n}"),
            Token::True => f.write_str("true"),
            Token::False => f.write_str("false"),
            Token::Null => f.write_str("null"),
            Token::Path(p) => f.write_str(&p.join("/")),
            Token::Cmp(op) => f.write_str(op.name()),
            Token::And => f.write_str("and"),
            Token::Or => f.write_str("or"),
            Token::Not => f.write_str("not"),
        }
    }
}

/// Characters that may start a property name segment.
fn starts_segment(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == '@' || c == '#'
}

/// Characters that may continue a property name segment (annotations carry `@` and `.`).
fn continues_segment(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '@' || c == '.' || c == '#'
}

/// Splits a filter into tokens, each with the byte offset where it starts.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>> {
    let mut out = Vec::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(at, c)) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push((at, Token::LParen));
            }
            ')' => {
                chars.next();
                out.push((at, Token::RParen));
            }
            '\'' => {
                chars.next();
                let mut s = String::new();
                loop {
                    match chars.next() {
                        None => return Err(value_error(format!("unterminated string starting at offset {at}"))),
                        Some((_, '\'')) => {
                            if chars.peek().is_some_and(|&(_, n)| n == '\'') {
                                chars.next();
                                s.push('\'');
                            } else {
                                break;
                            }
                        }
                        Some((_, ch)) => s.push(ch),
                    }
                }
                out.push((at, Token::Str(s)));
            }
            '-' | '0'..='9' => {
                let mut end = at;
                let mut has_digit = false;
                let mut is_float = false;
                let mut last = '\0';
                // A permissive scan (digits, '.', exponent, signs after the exponent); the
                // number parse below decides whether the text is well formed.
                while let Some(&(i, ch)) = chars.peek() {
                    let accept = ch.is_ascii_digit()
                        || (i == at && ch == '-')
                        || ch == '.'
                        || ch == 'e'
                        || ch == 'E'
                        || ((ch == '+' || ch == '-') && (last == 'e' || last == 'E'));
                    if !accept {
                        break;
                    }
                    has_digit |= ch.is_ascii_digit();
                    is_float |= matches!(ch, '.' | 'e' | 'E');
                    last = ch;
                    end = i + ch.len_utf8();
                    chars.next();
                }
                let literal = &text[at..end];
                if chars.peek().is_some_and(|&(_, n)| continues_segment(n)) || !has_digit {
                    return Err(value_error(format!("malformed number at offset {at}")));
                }
                out.push((at, Token::Num(parse_number(literal, is_float, at)?)));
            }
            c if starts_segment(c) => {
                let mut segments = Vec::new();
                loop {
                    let mut seg = String::new();
                    while let Some(&(_, ch)) = chars.peek() {
                        if !continues_segment(ch) || (seg.is_empty() && !starts_segment(ch)) {
                            break;
                        }
                        seg.push(ch);
                        chars.next();
                    }
                    if seg.is_empty() {
                        return Err(value_error(format!("empty property name in the path at offset {at}")));
                    }
                    segments.push(seg);
                    if chars.peek().is_some_and(|&(_, n)| n == '/') {
                        chars.next();
                    } else {
                        break;
                    }
                }
                let token = if segments.len() == 1 {
                    match segments[0].as_str() {
                        "eq" => Token::Cmp(CmpOp::Eq),
                        "ne" => Token::Cmp(CmpOp::Ne),
                        "gt" => Token::Cmp(CmpOp::Gt),
                        "ge" => Token::Cmp(CmpOp::Ge),
                        "lt" => Token::Cmp(CmpOp::Lt),
                        "le" => Token::Cmp(CmpOp::Le),
                        "and" => Token::And,
                        "or" => Token::Or,
                        "not" => Token::Not,
                        "true" => Token::True,
                        "false" => Token::False,
                        "null" => Token::Null,
                        _ => Token::Path(segments),
                    }
                } else {
                    Token::Path(segments)
                };
                out.push((at, token));
            }
            other => return Err(value_error(format!("unexpected character '{other}' at offset {at}"))),
        }
    }
    Ok(out)
}

/// Parses a number literal the tokenizer delimited.
fn parse_number(literal: &str, is_float: bool, at: usize) -> Result<Num> {
    let bad = || value_error(format!("malformed number '{literal}' at offset {at}"));
    let digits = literal.strip_prefix('-').unwrap_or(literal);
    // JSON's shape: digits first, a '.' needs digits on both sides.
    if !digits.starts_with(|c: char| c.is_ascii_digit()) || digits.contains(".e") || digits.contains(".E") {
        return Err(bad());
    }
    if digits.ends_with('.') {
        return Err(bad());
    }
    if is_float {
        let f: f64 = literal.parse().map_err(|_| bad())?;
        if !f.is_finite() {
            return Err(value_error(format!("number '{literal}' at offset {at} is out of range")));
        }
        Ok(Num::Float(f))
    } else {
        literal
            .parse::<i128>()
            .ok()
            .filter(|i| i64::try_from(*i).is_ok() || u64::try_from(*i).is_ok())
            .map(Num::Int)
            .ok_or_else(|| value_error(format!("number '{literal}' at offset {at} is out of range")))
    }
}

/// A literal in an expression.
#[derive(Debug, Clone, PartialEq)]
enum Literal {
    Null,
    Bool(bool),
    Num(Num),
    Str(String),
}

/// The parsed expression tree. `and`/`or` chains are n-ary, so long chains stay shallow.
#[derive(Debug, Clone, PartialEq)]
enum Expr {
    Lit(Literal),
    Path(Vec<String>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Not(Box<Expr>),
}

impl fmt::Display for Expr {
    /// Fully parenthesized, so tests can pin precedence.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |f: &mut fmt::Formatter<'_>, items: &[Expr], op: &str| -> fmt::Result {
            f.write_str("(")?;
            for (i, e) in items.iter().enumerate() {
                if i > 0 {
                    write!(f, " {op} ")?;
                }
                write!(f, "{e}")?;
            }
            f.write_str(")")
        };
        match self {
            Expr::Lit(Literal::Null) => f.write_str("null"),
            Expr::Lit(Literal::Bool(b)) => write!(f, "{b}"),
            Expr::Lit(Literal::Num(n)) => write!(f, "{n}"),
            Expr::Lit(Literal::Str(s)) => write!(f, "'{}'", s.replace('\'', "''")),
            Expr::Path(p) => f.write_str(&p.join("/")),
            Expr::Cmp(op, l, r) => write!(f, "({l} {} {r})", op.name()),
            Expr::And(items) => list(f, items, "and"),
            Expr::Or(items) => list(f, items, "or"),
            Expr::Not(e) => write!(f, "(not {e})"),
        }
    }
}

/// Recursive-descent parser over the token list.
struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    /// Current nesting (parentheses, `not`, comparison chains), bounded by [`MAX_DEPTH`].
    depth: usize,
    /// Length of the filter text, for "at the end" messages.
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.len, |(at, _)| *at)
    }

    fn eat(&mut self, t: &Token) -> bool {
        if self.peek() == Some(t) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(value_error(format!("the filter nests deeper than {MAX_DEPTH} levels")));
        }
        Ok(())
    }

    fn unexpected(&self, wanted: &str) -> Error {
        match self.peek() {
            Some(t) => value_error(format!("expected {wanted} at offset {}, found '{t}'", self.offset())),
            None => value_error(format!("expected {wanted} at the end of the filter")),
        }
    }

    fn parse_or(&mut self) -> Result<Expr> {
        let mut items = vec![self.parse_and()?];
        while self.eat(&Token::Or) {
            items.push(self.parse_and()?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::Or(items) })
    }

    fn parse_and(&mut self) -> Result<Expr> {
        let mut items = vec![self.parse_cmp(true)?];
        while self.eat(&Token::And) {
            items.push(self.parse_cmp(true)?);
        }
        Ok(if items.len() == 1 { items.remove(0) } else { Expr::And(items) })
    }

    /// `equality`: parses `eq`/`ne` chains over relational operands; otherwise the relational
    /// level (`gt ge lt le`) over unary operands. Chains are left-associative.
    fn parse_cmp(&mut self, equality: bool) -> Result<Expr> {
        let operand = |p: &mut Parser| if equality { p.parse_cmp(false) } else { p.parse_unary() };
        let mut left = operand(self)?;
        let entered = self.depth;
        while let Some(Token::Cmp(op)) = self.peek() {
            let op = *op;
            if op.is_equality() != equality {
                break;
            }
            self.pos += 1;
            self.enter()?;
            let right = operand(self)?;
            left = Expr::Cmp(op, Box::new(left), Box::new(right));
        }
        self.depth = entered;
        Ok(left)
    }

    fn parse_unary(&mut self) -> Result<Expr> {
        if self.eat(&Token::Not) {
            self.enter()?;
            let inner = self.parse_unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr> {
        let Some(token) = self.peek().cloned() else {
            return Err(self.unexpected("a value, a property or '('"));
        };
        let expr = match token {
            Token::LParen => {
                self.pos += 1;
                self.enter()?;
                let inner = self.parse_or()?;
                if !self.eat(&Token::RParen) {
                    return Err(self.unexpected("')'"));
                }
                self.depth -= 1;
                return Ok(inner);
            }
            Token::Str(s) => Expr::Lit(Literal::Str(s)),
            Token::Num(n) => Expr::Lit(Literal::Num(n)),
            Token::True => Expr::Lit(Literal::Bool(true)),
            Token::False => Expr::Lit(Literal::Bool(false)),
            Token::Null => Expr::Lit(Literal::Null),
            Token::Path(p) => Expr::Path(p),
            Token::RParen | Token::Cmp(_) | Token::And | Token::Or | Token::Not => {
                return Err(self.unexpected("a value, a property or '('"));
            }
        };
        self.pos += 1;
        Ok(expr)
    }
}

/// A value during evaluation, borrowed from the filter or the member.
#[derive(Debug, Clone, Copy)]
enum Val<'a> {
    Null,
    Bool(bool),
    Num(Num),
    Str(&'a str),
    /// Objects and arrays: they compare false with everything.
    Other,
}

impl<'a> Val<'a> {
    fn of_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Num::from_json(n).map_or(Val::Other, Val::Num),
            Value::String(s) => Val::Str(s),
            Value::Array(_) | Value::Object(_) => Val::Other,
        }
    }
}

fn compare(op: CmpOp, l: Val<'_>, r: Val<'_>) -> bool {
    use Val::{Bool, Null, Str};
    // Null-ness tests; ordering against null is never true.
    match (l, r) {
        (Null, Null) => return op == CmpOp::Eq,
        (Null, Val::Other) | (Val::Other, Null) => return false,
        (Null, _) | (_, Null) => return op == CmpOp::Ne,
        _ => {}
    }
    let ordering = match (l, r) {
        (Val::Num(a), Val::Num(b)) => a.compare(b),
        (Str(a), Str(b)) => Some(a.cmp(b)),
        (Bool(a), Bool(b)) if op.is_equality() => Some(a.cmp(&b)),
        _ => None,
    };
    let Some(ord) = ordering else { return false };
    match op {
        CmpOp::Eq => ord == Ordering::Equal,
        CmpOp::Ne => ord != Ordering::Equal,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
    }
}

fn eval<'a>(e: &'a Expr, v: &'a Value) -> Val<'a> {
    match e {
        Expr::Lit(Literal::Null) => Val::Null,
        Expr::Lit(Literal::Bool(b)) => Val::Bool(*b),
        Expr::Lit(Literal::Num(n)) => Val::Num(*n),
        Expr::Lit(Literal::Str(s)) => Val::Str(s),
        Expr::Path(segments) => {
            let mut cur = v;
            for seg in segments {
                match cur.get(seg.as_str()) {
                    Some(next) => cur = next,
                    None => return Val::Null,
                }
            }
            Val::of_json(cur)
        }
        Expr::Cmp(op, l, r) => Val::Bool(compare(*op, eval(l, v), eval(r, v))),
        Expr::And(items) => {
            let mut unknown = false;
            for i in items {
                match eval(i, v) {
                    Val::Bool(false) => return Val::Bool(false),
                    Val::Bool(true) => {}
                    _ => unknown = true,
                }
            }
            if unknown {
                Val::Null
            } else {
                Val::Bool(true)
            }
        }
        Expr::Or(items) => {
            let mut unknown = false;
            for i in items {
                match eval(i, v) {
                    Val::Bool(true) => return Val::Bool(true),
                    Val::Bool(false) => {}
                    _ => unknown = true,
                }
            }
            if unknown {
                Val::Null
            } else {
                Val::Bool(false)
            }
        }
        Expr::Not(inner) => match eval(inner, v) {
            Val::Bool(b) => Val::Bool(!b),
            _ => Val::Null,
        },
    }
}

/// A parsed `$filter` expression. Built once per request by [`crate::query::QueryOptions::parse`]
/// (or directly, e.g. for the SSE stream's `$filter`), then matched against each member.
#[derive(Debug, Clone, PartialEq)]
pub struct Filter {
    expr: Expr,
}

impl Filter {
    /// Parses a `$filter` value (already percent-decoded).
    ///
    /// # Errors
    /// [`Error::QueryParameterValue`] for `$filter` with the offset and what was expected:
    /// bad characters, unterminated strings, malformed numbers, unbalanced parentheses,
    /// missing operands, trailing tokens, an empty filter, nesting deeper than [`MAX_DEPTH`].
    pub fn parse(text: &str) -> Result<Filter> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(value_error("the filter is empty"));
        }
        let mut parser = Parser { tokens, pos: 0, depth: 0, len: text.len() };
        let expr = parser.parse_or()?;
        if parser.pos < parser.tokens.len() {
            return Err(parser.unexpected("an operator ('and', 'or', 'eq', ...) or the end"));
        }
        Ok(Filter { expr })
    }

    /// Whether `value` (a member resource) satisfies the filter: the expression is `true`.
    pub fn matches(&self, value: &Value) -> bool {
        matches!(eval(&self.expr, value), Val::Bool(true))
    }
}

impl fmt::Display for Filter {
    /// The expression fully parenthesized (`((A eq 1) or (B eq 2))`), for logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.expr.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        tokenize(s).unwrap().into_iter().map(|(_, t)| t).collect()
    }

    fn show(s: &str) -> String {
        Filter::parse(s).unwrap().to_string()
    }

    fn err(s: &str) -> String {
        match Filter::parse(s) {
            Err(Error::QueryParameterValue { parameter, reason }) => {
                assert_eq!(parameter, "$filter");
                reason
            }
            other => panic!("{s}: expected a value error, got {other:?}"),
        }
    }

    fn path(p: &[&str]) -> Token {
        Token::Path(p.iter().map(|s| s.to_string()).collect())
    }

    /// Strings keep spaces and unescape doubled quotes; paths split on '/'; keywords are
    /// recognized only as whole single segments.
    #[test]
    fn tokenizer_basics() {
        assert_eq!(
            toks("Status/Health eq 'it''s OK'"),
            vec![path(&["Status", "Health"]), Token::Cmp(CmpOp::Eq), Token::Str("it's OK".into())]
        );
        assert_eq!(toks("''"), vec![Token::Str(String::new())]);
        assert_eq!(toks("'a''''b'"), vec![Token::Str("a''b".into())]);
        assert_eq!(toks("'é ✓'"), vec![Token::Str("é ✓".into())]);
        assert_eq!(
            toks("not(a)and b/or"),
            vec![Token::Not, Token::LParen, path(&["a"]), Token::RParen, Token::And, path(&["b", "or"])]
        );
        assert_eq!(toks("Members@odata.count"), vec![path(&["Members@odata.count"])]);
        assert_eq!(toks("true false null"), vec![Token::True, Token::False, Token::Null]);
        assert_eq!(toks("Eq"), vec![path(&["Eq"])], "keywords are case-sensitive");
    }

    /// Integers, negatives, floats and exponents are numbers; malformed ones are errors.
    #[test]
    fn tokenizer_numbers() {
        assert_eq!(
            toks("1 -2 2.5 -0.5 1e3 1E-2 18446744073709551615"),
            vec![
                Token::Num(Num::Int(1)),
                Token::Num(Num::Int(-2)),
                Token::Num(Num::Float(2.5)),
                Token::Num(Num::Float(-0.5)),
                Token::Num(Num::Float(1000.0)),
                Token::Num(Num::Float(0.01)),
                Token::Num(Num::Int(i128::from(u64::MAX))),
            ]
        );
        for bad in ["1abc", "-", "-x", "1.", "1..2", "1e", ".5", "1.e3", "99999999999999999999999", "1e999", "--1"] {
            assert!(Filter::parse(&format!("A eq {bad}")).is_err(), "{bad} accepted");
        }
    }

    /// Lexical errors name what is wrong and where.
    #[test]
    fn tokenizer_errors() {
        assert!(err("Name eq 'abc").contains("unterminated string starting at offset 8"));
        assert!(err("Name eq \"x\"").contains("unexpected character '\"' at offset 8"));
        assert!(err("A/ eq 1").contains("empty property name"));
        assert!(err("A eq 1 & B eq 2").contains("'&'"));
    }

    /// Precedence: not > relational > equality > and > or; chains are left-associative.
    #[test]
    fn precedence() {
        assert_eq!(show("A eq 1 or B eq 2 and C eq 3"), "((A eq 1) or ((B eq 2) and (C eq 3)))");
        assert_eq!(show("A eq 1 and B eq 2 or C eq 3"), "(((A eq 1) and (B eq 2)) or (C eq 3))");
        assert_eq!(show("not A eq true"), "((not A) eq true)");
        assert_eq!(show("true eq A gt 1"), "(true eq (A gt 1))");
        assert_eq!(show("A lt 1 eq B ge 2"), "((A lt 1) eq (B ge 2))");
        assert_eq!(show("A eq 1 eq B"), "((A eq 1) eq B)");
        assert_eq!(show("a or b or c and d and e"), "(a or b or (c and d and e))");
        assert_eq!(show("not not A"), "(not (not A))");
    }

    /// Parentheses override precedence and may nest.
    #[test]
    fn parentheses() {
        assert_eq!(show("(A eq 1 or B eq 2) and C eq 3"), "(((A eq 1) or (B eq 2)) and (C eq 3))");
        assert_eq!(show("not (Status/Health eq 'OK')"), "(not (Status/Health eq 'OK'))");
        assert_eq!(show("((((A))))"), "A");
        assert_eq!(show("A eq -1.5"), "(A eq -1.5)");
        assert_eq!(show("Name eq 'O''Brien'"), "(Name eq 'O''Brien')");
    }

    /// Syntax errors are value errors that say what was expected.
    #[test]
    fn syntax_errors() {
        assert!(err("").contains("empty"));
        assert!(err("   ").contains("empty"));
        assert!(err("(A eq 1").contains("expected ')' at the end"));
        assert!(err("A eq 1)").contains("found ')'"));
        assert!(err("A eq").contains("at the end"));
        assert!(err("eq 1").contains("offset 0"));
        assert!(err("A eq 1 B eq 2").contains("offset 7"));
        assert!(err("A and or B").contains("found 'or'"));
        assert!(err("()").contains("found ')'"));
        assert!(err("not").contains("at the end"));
    }

    /// Hostile nesting is refused instead of overflowing the stack.
    #[test]
    fn depth_limit() {
        let deep = format!("{}A{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep).contains("nests deeper"));
        assert!(err(&format!("{}A", "not ".repeat(1000))).contains("nests deeper"));
        assert!(err(&vec!["A"; 1000].join(" eq ")).contains("nests deeper"));
        let ok = format!("{}A{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(Filter::parse(&ok).is_ok());
        // Long and/or chains are flat, not deep.
        let wide = vec!["A eq 1"; 5_000].join(" or ");
        assert!(Filter::parse(&wide).unwrap().matches(&json!({"A": 1})));
    }

    fn m(filter: &str, v: &Value) -> bool {
        Filter::parse(filter).unwrap().matches(v)
    }

    /// Strings, enums and nested properties compare as in the DSP0266 examples.
    #[test]
    fn evaluates_properties() {
        let v = json!({"Name": "n1", "Status": {"Health": "OK", "State": "Enabled"}, "Count": 4, "Speed": 2.5,
                       "Enabled": true, "Gone": null, "Arr": [1], "Obj": {}});
        assert!(m("Status/Health eq 'OK'", &v));
        assert!(!m("Status/Health eq 'Warning'", &v));
        assert!(m("Status/Health ne 'Warning'", &v));
        assert!(m("Count gt 2 and Count le 4", &v));
        assert!(m("Count eq 4.0", &v), "integers and floats compare numerically");
        assert!(m("Speed lt 3 and Speed gt -1", &v));
        assert!(m("Name ge 'n0' and Name lt 'n2'", &v), "strings order by code point");
        assert!(m("Enabled", &v));
        assert!(m("Enabled eq true", &v));
        assert!(m("not (Enabled eq false)", &v));
        assert!(!m("not Enabled", &v));
        assert!(m("Name eq 'x' or Count eq 4", &v));
    }

    /// Incompatible types compare false, even with `ne`; null tests null-ness.
    #[test]
    fn evaluates_types_and_nulls() {
        let v = json!({"Name": "4", "Count": 4, "Gone": null, "Enabled": true, "Arr": [1], "Obj": {"a": 1}});
        assert!(!m("Name eq 4", &v));
        assert!(!m("Name ne 4", &v));
        assert!(!m("Count gt '3'", &v));
        assert!(!m("Enabled gt false", &v), "booleans have no order");
        assert!(!m("Arr eq Arr", &v) && !m("Obj ne 1", &v), "objects and arrays never compare");
        assert!(m("Gone eq null", &v) && m("Missing eq null", &v));
        assert!(m("Name ne null", &v) && !m("Name eq null", &v));
        assert!(!m("Missing gt 1", &v) && !m("Missing lt 1", &v));
        assert!(!m("Missing ne null", &v));
        assert!(m("Missing ne 'x'", &v), "a missing property is null, and null ne 'x'");
        assert!(!m("Arr eq null", &v) && !m("Arr ne null", &v));
        assert!(m("Status/Health eq null", &v), "a path through a missing object is null");
        assert!(m("Name/x eq null", &v), "a path through a scalar is null");
    }

    /// and/or/not follow three-valued logic: non-booleans are unknown, and unknown is not a match.
    #[test]
    fn three_valued_logic() {
        let v = json!({"T": true, "F": false, "S": "x"});
        assert!(!m("S", &v), "a string is not true");
        assert!(!m("not S", &v));
        assert!(!m("S and T", &v));
        assert!(m("not (S and F)", &v), "unknown and false is false");
        assert!(m("S or T", &v), "unknown or true is true");
        assert!(!m("not (S or F)", &v), "unknown or false is unknown");
        assert!(m("T and T and not F", &v));
    }
}
