//! Kernel expressions: a small language that composes named kernels into one, parsed
//! into a [`KernelExpr`] tree (whose documentation gives the grammar) and built into a
//! `Box<dyn Proposal>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::kernel::{Cycle, Mixture, MoveLabel, Proposal, Repeat};

/// Makes the kernel of one occurrence of a name in an expression, given the name and the
/// occurrence's move label.
pub type KernelMaker<'a> = dyn FnMut(&str, MoveLabel) -> Result<Box<dyn Proposal>> + 'a;

/// Deepest nesting of parentheses and `mix(...)` a parser accepts.
const MAX_DEPTH: usize = 64;

/// Longest kernel expression a parser reads, in characters.
const MAX_EXPRESSION_CHARS: usize = 10_000;

/// Characters of a kernel expression that errors quote.
const QUOTED_CHARS: usize = 200;

/// `text` as an error quotes it: whole up to [`QUOTED_CHARS`] characters, else its start,
/// `…` and its length.
pub(crate) fn shortened(text: &str) -> String {
    let length = text.chars().count();
    if length <= QUOTED_CHARS {
        return text.to_string();
    }
    let start: String = text.chars().take(QUOTED_CHARS).collect();
    format!("{start}… ({length} characters)")
}

/// A parsed kernel expression. The grammar:
///
/// ```text
/// expression := term ('+' term)*                      a cycle: each term in turn
/// term       := atom ('*' count)*                     the atom `count` times in a row
/// atom       := name
///             | '(' expression ')'
///             | 'mix' '(' weight ':' expression (',' weight ':' expression)+ ')'
/// name       := letter (letter | digit | '_')*        a kernel, e.g. local, hmc, flow
/// count      := an integer ≥ 1
/// weight     := a number > 0, e.g. 0.3, 2 or 1e-2
/// ```
///
/// `flow+local*2+hmc` is one step of `flow`, two of `local`, then one of `hmc`;
/// `mix(0.3: flow, 0.7: hmc)` makes one step of `flow` with probability 0.3 and of `hmc`
/// otherwise (weights are normalised by their sum); `(flow+local)*4+hmc` and
/// `mix(1: flow, 1: local*2)+hmc` nest. `*` binds tighter than `+`; spaces are allowed
/// between tokens. Which names exist is up to whoever builds the expression
/// ([`KernelExpr::build`]).
///
/// Its `Display` form is canonical (no spaces, nested cycles flattened) and parses back to
/// the same tree; serde reads and writes it as that string.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum KernelExpr {
    /// A named kernel.
    Kernel(String),
    /// Two or more expressions, one step of each in turn.
    Cycle(Vec<KernelExpr>),
    /// `times` (≥ 1) steps of one expression.
    Repeat(Box<KernelExpr>, usize),
    /// One step of one of two or more expressions, chosen with probability weight / Σ weights.
    Mixture(Vec<(f64, KernelExpr)>),
}

impl KernelExpr {
    /// Parses `text`; a malformed expression gives an [`Error::Format`] naming the column
    /// and what was expected there (quoting at most the first 200 characters), and so does
    /// one longer than 10 000 characters.
    pub fn parse(text: &str) -> Result<Self> {
        let length = text.chars().count();
        if length > MAX_EXPRESSION_CHARS {
            return Err(Error::format(
                format!("kernel expression `{}`", shortened(text)),
                format!("{length} characters, at most {MAX_EXPRESSION_CHARS} are read"),
            ));
        }
        let mut parser = Parser {
            text,
            chars: text.char_indices().collect(),
            at: 0,
            depth: 0,
        };
        let expr = parser.expression()?;
        parser.skip_spaces();
        if parser.at < parser.chars.len() {
            return Err(parser.error("`+`, `*` or the end of the expression"));
        }
        Ok(expr)
    }

    /// The expression as errors quote it: whole up to 200 characters, else its start, `…`
    /// and its length.
    pub fn abbreviated(&self) -> String {
        shortened(&self.to_string())
    }

    /// Whether the kernel called `name` appears anywhere in the expression.
    pub fn contains(&self, name: &str) -> bool {
        let mut found = false;
        self.visit_names(&mut |n| found |= n == name);
        found
    }

    /// The distinct kernel names in the expression, in order of first appearance.
    pub fn names(&self) -> Vec<&str> {
        let mut names = Vec::new();
        self.visit_names(&mut |n| {
            if !names.contains(&n) {
                names.push(n);
            }
        });
        names
    }

    fn visit_names<'a>(&'a self, f: &mut dyn FnMut(&'a str)) {
        match self {
            KernelExpr::Kernel(name) => f(name),
            KernelExpr::Cycle(parts) => parts.iter().for_each(|p| p.visit_names(f)),
            KernelExpr::Repeat(inner, _) => inner.visit_names(f),
            KernelExpr::Mixture(parts) => parts.iter().for_each(|(_, p)| p.visit_names(f)),
        }
    }

    /// The move label of every kernel occurrence, in order of appearance: the name itself
    /// when it occurs once, `name#1`, `name#2`, … when it occurs several times (a repeat
    /// `a*k` is one occurrence).
    pub fn labels(&self) -> Vec<MoveLabel> {
        let mut all = Vec::new();
        self.visit_names(&mut |n| all.push(n));
        let mut seen: Vec<(&str, usize)> = Vec::new();
        all.iter()
            .map(|&name| {
                let total = all.iter().filter(|&&n| n == name).count();
                let k = match seen.iter_mut().find(|(n, _)| *n == name) {
                    Some((_, k)) => {
                        *k += 1;
                        *k
                    }
                    None => {
                        seen.push((name, 1));
                        1
                    }
                };
                if total == 1 {
                    MoveLabel::new(name)
                } else {
                    MoveLabel::from(format!("{name}#{k}"))
                }
            })
            .collect()
    }

    /// Builds the kernel: `kernel(name, label)` makes each named kernel, one fresh kernel
    /// per occurrence with that occurrence's move label (see [`KernelExpr::labels`]); an
    /// error from it, e.g. for an unknown name, is returned. Cycles, repeats and mixtures
    /// become [`Cycle`], [`Repeat`] and [`Mixture`].
    pub fn build(&self, kernel: &mut KernelMaker<'_>) -> Result<Box<dyn Proposal>> {
        let combine = Combinators {
            cycle: |parts: Vec<Box<dyn Proposal>>| {
                let mut parts = parts.into_iter();
                let first = parts
                    .next()
                    .ok_or_else(|| Error::param("kernel", "a cycle needs at least one part"))?;
                Ok(parts.fold(first, |built, part| {
                    Box::new(Cycle::new(built, part)) as Box<dyn Proposal>
                }))
            },
            repeat: |inner, times| Ok(Box::new(Repeat::new(inner, times)?)),
            mixture: |first, rest, p| Ok(Box::new(Mixture::new(first, rest, p)?)),
        };
        self.build_labelled(kernel, &combine)
    }

    /// Builds a kernel of any type `K` from the expression: `leaf(name, label)` makes each
    /// occurrence of a name with its move label (see [`KernelExpr::labels`]), left to
    /// right, and `combine` joins the parts of cycles, repeats and mixtures.
    pub(crate) fn build_labelled<K>(
        &self,
        leaf: &mut dyn FnMut(&str, MoveLabel) -> Result<K>,
        combine: &Combinators<K>,
    ) -> Result<K> {
        let mut labels = self.labels().into_iter();
        let mut next = |name: &str| -> Result<K> {
            let label = labels.next().unwrap_or_else(|| MoveLabel::new(name));
            leaf(name, label)
        };
        self.fold(&mut next, combine)
    }

    fn fold<K>(
        &self,
        leaf: &mut dyn FnMut(&str) -> Result<K>,
        combine: &Combinators<K>,
    ) -> Result<K> {
        match self {
            KernelExpr::Kernel(name) => leaf(name),
            KernelExpr::Cycle(parts) => {
                let built = parts
                    .iter()
                    .map(|part| part.fold(leaf, combine))
                    .collect::<Result<Vec<_>>>()?;
                (combine.cycle)(built)
            }
            KernelExpr::Repeat(inner, times) => {
                if *times == 0 {
                    return Err(Error::param("times", "must be at least 1"));
                }
                (combine.repeat)(inner.fold(leaf, combine)?, *times)
            }
            KernelExpr::Mixture(parts) => {
                if let Some(&(w, _)) = parts.iter().find(|(w, _)| !(w.is_finite() && *w > 0.0)) {
                    return Err(Error::param(
                        "kernel",
                        format!("mixture weights must be positive and finite, got {w}"),
                    ));
                }
                fold_mixture(parts, leaf, combine)
            }
        }
    }
}

/// How the parts of cycles, repeats and mixtures join into one kernel of type `K`.
pub(crate) struct Combinators<K> {
    /// The parts of a cycle, in order.
    pub(crate) cycle: fn(Vec<K>) -> Result<K>,
    /// A kernel made `times` (≥ 1) times per step.
    pub(crate) repeat: fn(K, usize) -> Result<K>,
    /// The first kernel with the given probability, else the second.
    pub(crate) mixture: fn(K, K, f64) -> Result<K>,
}

/// The first part with probability w₁/Σw, otherwise (recursively) a mixture of the rest;
/// the weights are checked by the caller.
fn fold_mixture<K>(
    parts: &[(f64, KernelExpr)],
    leaf: &mut dyn FnMut(&str) -> Result<K>,
    combine: &Combinators<K>,
) -> Result<K> {
    match parts {
        [] => Err(Error::param("kernel", "a mixture needs at least one part")),
        [(_, only)] => only.fold(leaf, combine),
        [(w, first), rest @ ..] => {
            let total: f64 = parts.iter().map(|(w, _)| w).sum();
            let first = first.fold(leaf, combine)?;
            let rest = fold_mixture(rest, leaf, combine)?;
            (combine.mixture)(first, rest, (w / total).min(1.0))
        }
    }
}

impl FromStr for KernelExpr {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        KernelExpr::parse(text)
    }
}

impl TryFrom<String> for KernelExpr {
    type Error = Error;

    fn try_from(text: String) -> Result<Self> {
        KernelExpr::parse(&text)
    }
}

impl From<KernelExpr> for String {
    fn from(expr: KernelExpr) -> String {
        expr.to_string()
    }
}

impl fmt::Display for KernelExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KernelExpr::Kernel(name) => f.write_str(name),
            KernelExpr::Cycle(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str("+")?;
                    }
                    // A cycle inside a cycle only arises from a built tree; keep its grouping.
                    if matches!(part, KernelExpr::Cycle(_)) {
                        write!(f, "({part})")?;
                    } else {
                        write!(f, "{part}")?;
                    }
                }
                Ok(())
            }
            KernelExpr::Repeat(inner, times) => {
                if matches!(**inner, KernelExpr::Cycle(_)) {
                    write!(f, "({inner})*{times}")
                } else {
                    write!(f, "{inner}*{times}")
                }
            }
            KernelExpr::Mixture(parts) => {
                f.write_str("mix(")?;
                for (i, (w, part)) in parts.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{w}:{part}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A recursive-descent parser over the characters of one expression.
struct Parser<'a> {
    text: &'a str,
    chars: Vec<(usize, char)>,
    /// Index into `chars` of the next character.
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).map(|&(_, c)| c)
    }

    fn skip_spaces(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// Skips spaces and consumes `c` if it comes next.
    fn eat(&mut self, c: char) -> bool {
        self.skip_spaces();
        if self.peek() == Some(c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// An error at the current position: "at column n: expected `what`, found ...".
    fn error(&self, expected: &str) -> Error {
        self.error_at(self.at, &format!("expected {expected}"))
    }

    fn error_at(&self, at: usize, message: &str) -> Error {
        let found = match self.chars.get(at) {
            Some(&(_, c)) => format!("found `{c}`"),
            None => "found the end of the expression".to_string(),
        };
        Error::format(
            format!("kernel expression `{}`", shortened(self.text)),
            format!("at column {}: {message}, {found}", at + 1),
        )
    }

    fn expression(&mut self) -> Result<KernelExpr> {
        let mut parts = Vec::new();
        loop {
            match self.term()? {
                KernelExpr::Cycle(inner) => parts.extend(inner),
                term => parts.push(term),
            }
            if !self.eat('+') {
                break;
            }
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            KernelExpr::Cycle(parts)
        })
    }

    fn term(&mut self) -> Result<KernelExpr> {
        let mut expr = self.atom()?;
        while self.eat('*') {
            self.skip_spaces();
            let start = self.at;
            let digits = self.take_while(|c| c.is_ascii_digit());
            if digits.is_empty() {
                return Err(self.error("a repeat count (an integer ≥ 1)"));
            }
            let times = match digits.parse::<usize>() {
                Ok(0) => return Err(self.error_at(start, "a repeat count must be at least 1")),
                Ok(n) => n,
                Err(_) => return Err(self.error_at(start, "the repeat count is too large")),
            };
            expr = KernelExpr::Repeat(Box::new(expr), times);
        }
        Ok(expr)
    }

    fn atom(&mut self) -> Result<KernelExpr> {
        self.skip_spaces();
        if self.depth >= MAX_DEPTH {
            return Err(self.error_at(self.at, &format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        if self.eat('(') {
            self.depth += 1;
            let inner = self.expression()?;
            self.depth -= 1;
            if !self.eat(')') {
                return Err(self.error("`)`, `+` or `*`"));
            }
            return Ok(inner);
        }
        if !self.peek().is_some_and(|c| c.is_ascii_alphabetic()) {
            return Err(self.error("a kernel name, `(` or `mix(`"));
        }
        let name = self.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
        if name == "mix" {
            self.depth += 1;
            let mixture = self.mixture();
            self.depth -= 1;
            return mixture;
        }
        Ok(KernelExpr::Kernel(name))
    }

    /// The part of `mix(...)` after the name.
    fn mixture(&mut self) -> Result<KernelExpr> {
        if !self.eat('(') {
            return Err(self.error("`(` after `mix`"));
        }
        let mut parts = Vec::new();
        loop {
            self.skip_spaces();
            let start = self.at;
            let number = self.take_while(|c| c.is_ascii_digit() || c == '.');
            let number = if !number.is_empty() && self.peek().is_some_and(|c| c == 'e' || c == 'E')
            {
                let mut exponent = String::from("e");
                self.at += 1;
                if let Some(sign @ ('+' | '-')) = self.peek() {
                    exponent.push(sign);
                    self.at += 1;
                }
                exponent.push_str(&self.take_while(|c| c.is_ascii_digit()));
                number + &exponent
            } else {
                number
            };
            if number.is_empty() {
                return Err(self.error("a mixture weight (a number > 0)"));
            }
            let weight = match number.parse::<f64>() {
                Ok(w) if w.is_finite() && w > 0.0 => w,
                Ok(_) => return Err(self.error_at(start, "a mixture weight must be positive")),
                Err(_) => {
                    return Err(self.error_at(start, &format!("`{number}` is not a number")));
                }
            };
            if !self.eat(':') {
                return Err(self.error("`:` after the weight"));
            }
            parts.push((weight, self.expression()?));
            if self.eat(')') {
                break;
            }
            if !self.eat(',') {
                return Err(self.error("`,` or `)`"));
            }
        }
        if parts.len() < 2 {
            return Err(self.error_at(self.at - 1, "a mixture needs at least two weighted parts"));
        }
        Ok(KernelExpr::Mixture(parts))
    }

    fn take_while(&mut self, accept: impl Fn(char) -> bool) -> String {
        let mut taken = String::new();
        while let Some(c) = self.peek().filter(|&c| accept(c)) {
            taken.push(c);
            self.at += 1;
        }
        taken
    }
}
