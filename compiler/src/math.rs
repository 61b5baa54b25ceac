//! Elementary functions expanded into `arith` ops, and sums in a fixed order.
//!
//! `math.exp` lowers to a call of libm's scalar `expf`, which LLVM cannot vectorize and
//! which costs a call per element. Softmax, SiLU, sigmoid and attention are full of
//! exponentials, so kernels use this inline version instead: Cody-Waite range reduction
//! `x = n ln2 + r`, a degree-7 polynomial for `e^r` on `|r| <= ln2/2` (Cephes' `expf`
//! coefficients, about 1 ulp), and `2^n` built in the exponent bits. It works on `f32`
//! scalars and on vectors of `f32` alike.
//!
//! `tanh` and `erf` (GELU) would likewise be libm calls; they are odd rational functions
//! `x P(x^2) / Q(x^2)` on a clamped range instead (the minimax fits Eigen and XLA use; about
//! 4e-7 relative error, checked against libm in `tests/python/test_ops.py`).

use std::fmt::Write;

/// The attribute text of the constant `v` of type `t` (`f32`, or a splat of a vector type).
fn splat(v: &str, t: &str) -> String {
    if t.starts_with("vector") {
        format!("dense<{v}> : {t}")
    } else {
        format!("{v} : {t}")
    }
}

/// Emits `exp(x)` for values of type `ty` (`f32` or `vector<NxF32>`). `op` appends one
/// operation (`rhs` of `%v = rhs`) and returns its SSA name.
pub fn exp_f32(op: &mut dyn FnMut(String) -> String, x: &str, ty: &str) -> String {
    let ity = if ty == "f32" { "i32".to_string() } else { ty.replace("f32", "i32") };
    let mut c = |v: &str| op(format!("arith.constant {}", splat(v, ty)));
    let (lo, hi, log2e, half) = (c("-8.83762626647949e1"), c("8.83762626647950e1"), c("1.44269504088896341e0"), c("5.0e-1"));
    let (ln2_hi, ln2_lo, one) = (c("6.93359375e-1"), c("-2.12194440e-4"), c("1.0e0"));
    let p = ["1.9875691500e-4", "1.3981999507e-3", "8.3334519073e-3", "4.1665795894e-2", "1.6666665459e-1", "5.0000001201e-1"].map(c);
    let x = op(format!("arith.maximumf {x}, {lo} : {ty}"));
    let x = op(format!("arith.minimumf {x}, {hi} : {ty}"));
    let fx = op(format!("math.fma {x}, {log2e}, {half} : {ty}"));
    let n = op(format!("math.floor {fx} : {ty}"));
    // r = x - n*ln2_hi - n*ln2_lo (ln2_hi has few bits, so n*ln2_hi is exact).
    let nn = op(format!("arith.negf {n} : {ty}"));
    let r = op(format!("math.fma {nn}, {ln2_hi}, {x} : {ty}"));
    let r = op(format!("math.fma {nn}, {ln2_lo}, {r} : {ty}"));
    let mut y = p[0].clone();
    for c in &p[1..] {
        y = op(format!("math.fma {y}, {r}, {c} : {ty}"));
    }
    let r2 = op(format!("arith.mulf {r}, {r} : {ty}"));
    let y = op(format!("math.fma {y}, {r2}, {r} : {ty}"));
    let y = op(format!("arith.addf {y}, {one} : {ty}"));
    let ni = op(format!("arith.fptosi {n} : {ty} to {ity}"));
    let mut ci = |v: &str| op(format!("arith.constant {}", splat(v, &ity)));
    let (bias, shift) = (ci("127"), ci("23"));
    let e = op(format!("arith.addi {ni}, {bias} : {ity}"));
    let e = op(format!("arith.shli {e}, {shift} : {ity}"));
    let pow2 = op(format!("arith.bitcast {e} : {ity} to {ty}"));
    op(format!("arith.mulf {y}, {pow2} : {ty}"))
}

/// `x P(x^2) / Q(x^2)` for `x` clamped to `[-limit, limit]`; coefficients from the highest
/// power down.
fn odd_rational(op: &mut dyn FnMut(String) -> String, x: &str, ty: &str, limit: &str, num: &[&str], den: &[&str]) -> String {
    let hi = op(format!("arith.constant {}", splat(limit, ty)));
    let lo = op(format!("arith.constant {}", splat(&format!("-{limit}"), ty)));
    let x = op(format!("arith.minimumf {x}, {hi} : {ty}"));
    let x = op(format!("arith.maximumf {x}, {lo} : {ty}"));
    let x2 = op(format!("arith.mulf {x}, {x} : {ty}"));
    let mut poly = |coeffs: &[&str]| {
        let mut acc = op(format!("arith.constant {}", splat(coeffs[0], ty)));
        for c in &coeffs[1..] {
            let c = op(format!("arith.constant {}", splat(c, ty)));
            acc = op(format!("math.fma {x2}, {acc}, {c} : {ty}"));
        }
        acc
    };
    let p = poly(num);
    let q = poly(den);
    let p = op(format!("arith.mulf {x}, {p} : {ty}"));
    op(format!("arith.divf {p}, {q} : {ty}"))
}

/// Emits `tanh(x)` (see the module notes); beyond |x| = 7.905 it is +-1 in f32.
pub fn tanh_f32(op: &mut dyn FnMut(String) -> String, x: &str, ty: &str) -> String {
    let num = ["-2.76076847742355e-16", "2.00018790482477e-13", "-8.60467152213735e-11", "5.12229709037114e-8", "1.48572235717979e-5", "6.37261928875436e-4", "4.89352455891786e-3"];
    let den = ["1.19825839466702e-6", "1.18534705686654e-4", "2.26843463243900e-3", "4.89352518554385e-3"];
    odd_rational(op, x, ty, "7.90531110763549805e0", &num, &den)
}

/// Emits `erf(x)` (see the module notes); beyond |x| = 4 it is +-1 in f32.
pub fn erf_f32(op: &mut dyn FnMut(String) -> String, x: &str, ty: &str) -> String {
    let num = ["-2.72614225801306e-10", "2.77068142495902e-8", "-2.10102402082508e-6", "-5.69250639462346e-5", "-7.34990630326855e-4", "-2.95459980854025e-3", "-1.60960333262415e-2"];
    let den = ["-1.45660718464996e-5", "-2.13374055278905e-4", "-1.68282697438203e-3", "-7.37332916720468e-3", "-1.42647390514189e-2"];
    odd_rational(op, x, ty, "4.0e0", &num, &den)
}

/// The sum of the 8 lanes of `v` in the order of an AVX horizontal add:
/// `((l0 + l4) + (l2 + l6)) + ((l1 + l5) + (l3 + l7))` (llama.cpp's order, which its
/// attention and quantized dot products depend on). Values are named `%{prefix}...`.
pub fn hsum8(s: &mut String, v: &str, prefix: &str) -> String {
    for l in 0..8 {
        let _ = writeln!(s, "      %{prefix}{l} = vector.extract {v}[{l}] : f32 from vector<8xf32>");
    }
    let _ = write!(
        s,
        "      %{prefix}a = arith.addf %{prefix}4, %{prefix}0 : f32\n      %{prefix}b = arith.addf %{prefix}6, %{prefix}2 : f32\n      \
         %{prefix}c = arith.addf %{prefix}5, %{prefix}1 : f32\n      %{prefix}d = arith.addf %{prefix}7, %{prefix}3 : f32\n      \
         %{prefix}ab = arith.addf %{prefix}a, %{prefix}b : f32\n      %{prefix}cd = arith.addf %{prefix}c, %{prefix}d : f32\n      \
         %{prefix}s = arith.addf %{prefix}ab, %{prefix}cd : f32\n"
    );
    format!("%{prefix}s")
}
