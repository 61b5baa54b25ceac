//! Symbolic dimension expressions.
//!
//! Every dynamic (`?`) dimension of a graph input is a symbol; every other dimension in the
//! graph is an expression over those symbols. Expressions are kept in a small normal form so
//! that shape inference can compare them (`batch*768/768` is `batch`). The runtime evaluates
//! them from the input shapes it is given, so the artifact needs no compiler at run time.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A dimension size: a constant, a symbol (index into the graph's symbol table), or an
/// arithmetic expression over those.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DimExpr {
    Const(i64),
    Sym(u32),
    Add(Box<DimExpr>, Box<DimExpr>),
    Sub(Box<DimExpr>, Box<DimExpr>),
    Mul(Box<DimExpr>, Box<DimExpr>),
    /// Floor division.
    Div(Box<DimExpr>, Box<DimExpr>),
    /// Ceiling division.
    CeilDiv(Box<DimExpr>, Box<DimExpr>),
    Min(Box<DimExpr>, Box<DimExpr>),
    Max(Box<DimExpr>, Box<DimExpr>),
}

/// Error evaluating a dimension expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimEvalError {
    #[error("dimension symbol #{0} is not bound")]
    Unbound(u32),
    #[error("division by zero while computing a dimension")]
    DivByZero,
    #[error("dimension arithmetic overflowed")]
    Overflow,
}

// add/sub/mul/div are folding constructors taking two owned expressions (like the enum's
// variants), not operator overloads.
#[allow(clippy::should_implement_trait)]
impl DimExpr {
    /// The constant value, if this expression is one.
    pub fn as_const(&self) -> Option<i64> {
        match self {
            DimExpr::Const(c) => Some(*c),
            _ => None,
        }
    }

    /// Whether the expression is a compile-time constant.
    pub fn is_static(&self) -> bool {
        self.as_const().is_some()
    }

    /// Evaluates the expression with `syms[i]` bound to symbol `i`.
    pub fn eval(&self, syms: &[Option<i64>]) -> Result<i64, DimEvalError> {
        let bin = |a: &DimExpr, b: &DimExpr| -> Result<(i64, i64), DimEvalError> {
            Ok((a.eval(syms)?, b.eval(syms)?))
        };
        Ok(match self {
            DimExpr::Const(c) => *c,
            DimExpr::Sym(s) => syms
                .get(*s as usize)
                .copied()
                .flatten()
                .ok_or(DimEvalError::Unbound(*s))?,
            DimExpr::Add(a, b) => {
                let (a, b) = bin(a, b)?;
                a.checked_add(b).ok_or(DimEvalError::Overflow)?
            }
            DimExpr::Sub(a, b) => {
                let (a, b) = bin(a, b)?;
                a.checked_sub(b).ok_or(DimEvalError::Overflow)?
            }
            DimExpr::Mul(a, b) => {
                let (a, b) = bin(a, b)?;
                a.checked_mul(b).ok_or(DimEvalError::Overflow)?
            }
            DimExpr::Div(a, b) => {
                let (a, b) = bin(a, b)?;
                if b == 0 {
                    return Err(DimEvalError::DivByZero);
                }
                a.div_euclid(b)
            }
            DimExpr::CeilDiv(a, b) => {
                let (a, b) = bin(a, b)?;
                if b == 0 {
                    return Err(DimEvalError::DivByZero);
                }
                -((-a).div_euclid(b))
            }
            DimExpr::Min(a, b) => {
                let (a, b) = bin(a, b)?;
                a.min(b)
            }
            DimExpr::Max(a, b) => {
                let (a, b) = bin(a, b)?;
                a.max(b)
            }
        })
    }

    /// `a + b`, folded where possible.
    pub fn add(a: DimExpr, b: DimExpr) -> DimExpr {
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) => DimExpr::Const(x + y),
            (DimExpr::Const(0), _) => b,
            (_, DimExpr::Const(0)) => a,
            _ => DimExpr::Add(Box::new(a), Box::new(b)),
        }
    }

    /// `a - b`, folded where possible.
    pub fn sub(a: DimExpr, b: DimExpr) -> DimExpr {
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) => DimExpr::Const(x - y),
            (_, DimExpr::Const(0)) => a,
            _ if a == b => DimExpr::Const(0),
            // (x + c1) - c2 and similar small folds keep slice shapes readable.
            (DimExpr::Add(x, c1), DimExpr::Const(c2)) if c1.is_static() => {
                DimExpr::add((**x).clone(), DimExpr::Const(c1.as_const().unwrap() - c2))
            }
            _ => DimExpr::Sub(Box::new(a), Box::new(b)),
        }
    }

    /// `a * b`, folded where possible (constants gathered to the left).
    pub fn mul(a: DimExpr, b: DimExpr) -> DimExpr {
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) => DimExpr::Const(x * y),
            (DimExpr::Const(1), _) => b,
            (_, DimExpr::Const(1)) => a,
            (DimExpr::Const(0), _) | (_, DimExpr::Const(0)) => DimExpr::Const(0),
            (_, DimExpr::Const(_)) => DimExpr::mul(b, a),
            (DimExpr::Const(x), DimExpr::Mul(c, rest)) if c.is_static() => {
                DimExpr::mul(DimExpr::Const(x * c.as_const().unwrap()), (**rest).clone())
            }
            _ => DimExpr::Mul(Box::new(a), Box::new(b)),
        }
    }

    /// A product's constant factor and its other factors (`6*B*T` is `(6, [B, T])`).
    fn factors(&self) -> (i64, Vec<DimExpr>) {
        match self {
            DimExpr::Const(c) => (*c, Vec::new()),
            DimExpr::Mul(a, b) => {
                let (ca, mut fa) = a.factors();
                let (cb, fb) = b.factors();
                fa.extend(fb);
                (ca * cb, fa)
            }
            other => (1, vec![other.clone()]),
        }
    }

    /// Exact division `a / b` when it can be proven exact: both are products, `b`'s
    /// symbolic factors are among `a`'s and its constant divides `a`'s (`B*T / B` is `T`,
    /// `8*N / 4` is `2*N`). Returns `None` otherwise.
    pub fn exact_div(a: &DimExpr, b: &DimExpr) -> Option<DimExpr> {
        if a == b {
            return Some(DimExpr::Const(1));
        }
        if let Some(d) = b.as_const() {
            // A constant divisor keeps the symbolic part as it is.
            if d == 0 {
                return None;
            }
            return match a {
                DimExpr::Const(x) if x % d == 0 => Some(DimExpr::Const(x / d)),
                _ if d == 1 => Some(a.clone()),
                DimExpr::Mul(c, rest) => {
                    let c = c.as_const()?;
                    (c % d == 0).then(|| DimExpr::mul(DimExpr::Const(c / d), (**rest).clone()))
                }
                _ => None,
            };
        }
        let (ca, mut fa) = a.factors();
        let (cb, fb) = b.factors();
        if cb == 0 || ca % cb != 0 {
            return None;
        }
        for f in fb {
            let i = fa.iter().position(|x| *x == f)?;
            fa.remove(i);
        }
        Some(fa.into_iter().fold(DimExpr::Const(ca / cb), DimExpr::mul))
    }

    /// Floor division, folded for constants.
    pub fn div(a: DimExpr, b: DimExpr) -> DimExpr {
        if let Some(e) = DimExpr::exact_div(&a, &b) {
            return e;
        }
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) if *y != 0 => DimExpr::Const(x.div_euclid(*y)),
            _ => DimExpr::Div(Box::new(a), Box::new(b)),
        }
    }

    /// Ceiling division, folded for constants.
    pub fn ceil_div(a: DimExpr, b: DimExpr) -> DimExpr {
        if let Some(e) = DimExpr::exact_div(&a, &b) {
            return e;
        }
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) if *y != 0 => DimExpr::Const(-((-x).div_euclid(*y))),
            _ => DimExpr::CeilDiv(Box::new(a), Box::new(b)),
        }
    }

    /// `min(a, b)`, folded for constants.
    pub fn min(a: DimExpr, b: DimExpr) -> DimExpr {
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) => DimExpr::Const(*x.min(y)),
            _ if a == b => a,
            _ => DimExpr::Min(Box::new(a), Box::new(b)),
        }
    }

    /// `max(a, b)`, folded for constants.
    pub fn max(a: DimExpr, b: DimExpr) -> DimExpr {
        match (&a, &b) {
            (DimExpr::Const(x), DimExpr::Const(y)) => DimExpr::Const(*x.max(y)),
            _ if a == b => a,
            _ => DimExpr::Max(Box::new(a), Box::new(b)),
        }
    }

    /// Product of a list of dims.
    pub fn product<'a>(dims: impl IntoIterator<Item = &'a DimExpr>) -> DimExpr {
        dims.into_iter().fold(DimExpr::Const(1), |acc, d| DimExpr::mul(acc, d.clone()))
    }

    /// Replaces every symbol by `f(symbol)`.
    pub fn map_syms(&self, f: &impl Fn(u32) -> u32) -> DimExpr {
        let m = |e: &DimExpr| Box::new(e.map_syms(f));
        match self {
            DimExpr::Const(c) => DimExpr::Const(*c),
            DimExpr::Sym(s) => DimExpr::Sym(f(*s)),
            DimExpr::Add(a, b) => DimExpr::Add(m(a), m(b)),
            DimExpr::Sub(a, b) => DimExpr::Sub(m(a), m(b)),
            DimExpr::Mul(a, b) => DimExpr::Mul(m(a), m(b)),
            DimExpr::Div(a, b) => DimExpr::Div(m(a), m(b)),
            DimExpr::CeilDiv(a, b) => DimExpr::CeilDiv(m(a), m(b)),
            DimExpr::Min(a, b) => DimExpr::Min(m(a), m(b)),
            DimExpr::Max(a, b) => DimExpr::Max(m(a), m(b)),
        }
    }

    /// Formats the expression with symbol names from `names`.
    pub fn display<'a>(&'a self, names: &'a [String]) -> DimDisplay<'a> {
        DimDisplay { expr: self, names }
    }
}

/// Display adapter that names symbols.
pub struct DimDisplay<'a> {
    expr: &'a DimExpr,
    names: &'a [String],
}

impl<'a> fmt::Display for DimDisplay<'a> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = |e: &'a DimExpr| DimDisplay { expr: e, names: self.names };
        match self.expr {
            DimExpr::Const(c) => write!(f, "{c}"),
            DimExpr::Sym(s) => match self.names.get(*s as usize) {
                Some(n) => write!(f, "{n}"),
                None => write!(f, "s{s}"),
            },
            DimExpr::Add(a, b) => write!(f, "({} + {})", d(a), d(b)),
            DimExpr::Sub(a, b) => write!(f, "({} - {})", d(a), d(b)),
            DimExpr::Mul(a, b) => write!(f, "{}*{}", d(a), d(b)),
            DimExpr::Div(a, b) => write!(f, "floordiv({}, {})", d(a), d(b)),
            DimExpr::CeilDiv(a, b) => write!(f, "ceildiv({}, {})", d(a), d(b)),
            DimExpr::Min(a, b) => write!(f, "min({}, {})", d(a), d(b)),
            DimExpr::Max(a, b) => write!(f, "max({}, {})", d(a), d(b)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_and_evaluates() {
        let b = DimExpr::Sym(0);
        let e = DimExpr::mul(b.clone(), DimExpr::Const(768));
        assert_eq!(DimExpr::exact_div(&e, &DimExpr::Const(12)), Some(DimExpr::mul(DimExpr::Const(64), b.clone())));
        assert_eq!(DimExpr::exact_div(&e, &DimExpr::Const(5)), None);
        // Symbolic divisors cancel factor by factor.
        let t = DimExpr::Sym(7);
        let bt = DimExpr::mul(b.clone(), t.clone());
        assert_eq!(DimExpr::exact_div(&bt, &b), Some(t.clone()));
        assert_eq!(DimExpr::exact_div(&DimExpr::mul(DimExpr::Const(6), bt.clone()), &DimExpr::mul(DimExpr::Const(3), t.clone())), Some(DimExpr::mul(DimExpr::Const(2), b.clone())));
        assert_eq!(DimExpr::exact_div(&bt, &DimExpr::Sym(9)), None);
        assert_eq!(DimExpr::div(bt.clone(), b.clone()), t);
        let s = DimExpr::sub(DimExpr::add(b.clone(), DimExpr::Const(3)), DimExpr::Const(1));
        assert_eq!(s.eval(&[Some(7)]).unwrap(), 9);
        assert_eq!(DimExpr::ceil_div(b.clone(), DimExpr::Const(4)).eval(&[Some(9)]).unwrap(), 3);
        assert_eq!(b.eval(&[None]), Err(DimEvalError::Unbound(0)));
        assert_eq!(DimExpr::Div(Box::new(b), Box::new(DimExpr::Const(0))).eval(&[Some(1)]), Err(DimEvalError::DivByZero));
    }
}
