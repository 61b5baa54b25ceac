//! The generic GPU kernels' iteration space: every `scf.parallel` loop nest that
//! `convert-linalg-to-parallel-loops` makes of a dispatch is flattened into one index over
//! all its iterations, split into blocks of [`BLOCK`] threads, before
//! `scf-parallel-loop-tiling` and `gpu-map-parallel-loops` map it to the GPU.
//!
//! Without it, the mapping tiles only the loop's first two dimensions (one block per index
//! of the first, threads over the second) and runs the others in a loop in each thread: a
//! rank-4 transpose `[B, T, 12, 32] -> [B, 12, T, 32]` had 12 busy threads per block, each
//! copying whole rows, and BERT's batched attention products `[B, 12, T, T]` did the same
//! with a dot product per element. Flattened, each thread owns one element (its indices
//! recovered by division), and consecutive threads own consecutive elements of the last
//! dimension, so their accesses coalesce. Reductions (an `scf.for` inside the loop) stay in
//! the thread.
//!
//! The rewrite works on the printed module, line by line, like [`crate::gpu::device_memory`]:
//! a loop whose lower bounds are all the constant 0 and steps all 1 and whose body ends in
//! a bare `scf.reduce` (what the conversion makes) becomes
//!
//! ```text
//! %n = ub0 * ub1 * ...            // iterations
//! scf.parallel (%b, %t) = (0, 0) to (ceildiv(%n, 256), 256) step (1, 1) {
//!   %l = %b * 256 + %t
//!   scf.if %l < %n { %iv_k = (%l / prod(ub_k+1..)) % ub_k ...; <body> }
//!   scf.reduce
//! }
//! ```
//! Any other loop is left as it was.

use std::collections::HashMap;
use std::fmt::Write;

/// Threads per block of a flattened loop.
pub const BLOCK: usize = 256;

/// The parts of an `scf.parallel (ivs) = (lbs) to (ubs) step (steps) {` line.
struct Header<'a> {
    indent: &'a str,
    ivs: Vec<&'a str>,
    lbs: Vec<&'a str>,
    ubs: Vec<&'a str>,
    steps: Vec<&'a str>,
}

fn list(s: &str) -> Vec<&str> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).collect()
}

fn header(line: &str) -> Option<Header<'_>> {
    let t = line.trim_start();
    let indent = &line[..line.len() - t.len()];
    let rest = t.strip_prefix("scf.parallel (")?;
    let (ivs, rest) = rest.split_once(") = (")?;
    let (lbs, rest) = rest.split_once(") to (")?;
    let (ubs, rest) = rest.split_once(") step (")?;
    let steps = rest.strip_suffix(") {")?;
    let h = Header { indent, ivs: list(ivs), lbs: list(lbs), ubs: list(ubs), steps: list(steps) };
    let r = h.ivs.len();
    (r > 0 && h.lbs.len() == r && h.ubs.len() == r && h.steps.len() == r).then_some(h)
}

/// `%name = arith.constant V : index` on a line: (name, V).
fn index_constant(line: &str) -> Option<(&str, i64)> {
    let (name, rest) = line.trim().split_once(" = arith.constant ")?;
    let v = rest.strip_suffix(" : index")?;
    Some((name, v.trim().parse().ok()?))
}

/// Flattens the `scf.parallel` loops of a printed module (see the module docs).
pub fn collapse_parallel_loops(module_text: &str) -> String {
    let lines: Vec<&str> = module_text.lines().collect();
    let mut out = String::with_capacity(module_text.len() + 1024);
    // Index constants of the current function (their values by name).
    let mut consts: HashMap<&str, i64> = HashMap::new();
    let mut n = 0usize;
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.trim_start().starts_with("func.func ") {
            consts.clear();
        }
        if let Some((name, v)) = index_constant(line) {
            consts.insert(name, v);
        }
        if let Some(h) = header(line) {
            if let Some(end) = rewrite(&lines, i, &h, &consts, n, &mut out) {
                n += 1;
                i = end + 1;
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    out
}

/// Writes the flattened form of the loop starting at line `start`; returns the line of its
/// closing brace, or `None` (nothing written) when the loop is not of the handled form.
fn rewrite(lines: &[&str], start: usize, h: &Header, consts: &HashMap<&str, i64>, n: usize, out: &mut String) -> Option<usize> {
    let zero = h.lbs[0];
    let one = h.steps[0];
    if consts.get(zero) != Some(&0) || consts.get(one) != Some(&1) || h.lbs.iter().any(|l| *l != zero) || h.steps.iter().any(|s| *s != one) {
        return None;
    }
    // The body: up to the brace that closes the loop; its last line must be `scf.reduce`.
    let mut depth = 1i64;
    let mut end = None;
    for (k, l) in lines.iter().enumerate().skip(start + 1) {
        depth += l.matches('{').count() as i64 - l.matches('}').count() as i64;
        if depth == 0 {
            end = Some(k);
            break;
        }
    }
    let end = end?;
    if end < start + 2 || lines[end].trim() != "}" || lines[end - 1].trim() != "scf.reduce" {
        return None;
    }
    let body = &lines[start + 1..end - 1];
    let ind = h.indent;
    let p = format!("%pc{n}");
    let mut s = String::new();
    // Iteration count.
    let mut total = h.ubs[0].to_string();
    for (k, ub) in h.ubs.iter().enumerate().skip(1) {
        let _ = writeln!(s, "{ind}{p}_n{k} = arith.muli {total}, {ub} : index");
        total = format!("{p}_n{k}");
    }
    let _ = writeln!(s, "{ind}{p}_bs = arith.constant {BLOCK} : index");
    let _ = writeln!(s, "{ind}{p}_nb = arith.ceildivui {total}, {p}_bs : index");
    let _ = writeln!(s, "{ind}scf.parallel ({p}_b, {p}_t) = ({zero}, {zero}) to ({p}_nb, {p}_bs) step ({one}, {one}) {{");
    let _ = writeln!(s, "{ind}  {p}_o = arith.muli {p}_b, {p}_bs : index");
    let _ = writeln!(s, "{ind}  {p}_l = arith.addi {p}_o, {p}_t : index");
    let _ = writeln!(s, "{ind}  {p}_in = arith.cmpi ult, {p}_l, {total} : index");
    let _ = writeln!(s, "{ind}  scf.if {p}_in {{");
    // Indices from the flat one, last dimension fastest.
    let r = h.ivs.len();
    let mut rest = format!("{p}_l");
    for k in (1..r).rev() {
        let _ = writeln!(s, "{ind}    {} = arith.remui {rest}, {} : index", h.ivs[k], h.ubs[k]);
        let _ = writeln!(s, "{ind}    {p}_q{k} = arith.divui {rest}, {} : index", h.ubs[k]);
        rest = format!("{p}_q{k}");
    }
    let _ = writeln!(s, "{ind}    {} = arith.addi {rest}, {zero} : index", h.ivs[0]);
    for l in body {
        let _ = writeln!(s, "    {l}");
    }
    let _ = writeln!(s, "{ind}  }}");
    let _ = writeln!(s, "{ind}  scf.reduce");
    let _ = writeln!(s, "{ind}}}");
    out.push_str(&s);
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOOP: &str = "  func.func @t(%arg0: memref<?x12x32xf32>, %arg1: memref<?x32x12xf32>) {
    %c32 = arith.constant 32 : index
    %c12 = arith.constant 12 : index
    %c1 = arith.constant 1 : index
    %c0 = arith.constant 0 : index
    %dim = memref.dim %arg0, %c0 : memref<?x12x32xf32>
    scf.parallel (%arg2, %arg3, %arg4) = (%c0, %c0, %c0) to (%dim, %c32, %c12) step (%c1, %c1, %c1) {
      %0 = memref.load %arg0[%arg2, %arg4, %arg3] : memref<?x12x32xf32>
      memref.store %0, %arg1[%arg2, %arg3, %arg4] : memref<?x32x12xf32>
      scf.reduce 
    }
    return
  }
";

    #[test]
    fn flattens_a_rank_3_loop_into_blocks_of_threads() {
        let out = collapse_parallel_loops(LOOP);
        for want in [
            "%pc0_n1 = arith.muli %dim, %c32 : index",
            "%pc0_n2 = arith.muli %pc0_n1, %c12 : index",
            "%pc0_nb = arith.ceildivui %pc0_n2, %pc0_bs : index",
            "scf.parallel (%pc0_b, %pc0_t) = (%c0, %c0) to (%pc0_nb, %pc0_bs) step (%c1, %c1) {",
            "%pc0_in = arith.cmpi ult, %pc0_l, %pc0_n2 : index",
            "%arg4 = arith.remui %pc0_l, %c12 : index",
            "%pc0_q2 = arith.divui %pc0_l, %c12 : index",
            "%arg3 = arith.remui %pc0_q2, %c32 : index",
            "%arg2 = arith.addi %pc0_q1, %c0 : index",
            "memref.store %0, %arg1[%arg2, %arg3, %arg4]",
        ] {
            assert!(out.contains(want), "missing `{want}` in:\n{out}");
        }
        assert_eq!(out.matches("scf.reduce").count(), 1, "{out}");
        assert_eq!(out.matches('{').count(), out.matches('}').count(), "{out}");
    }

    #[test]
    fn leaves_other_loops_alone() {
        // A non-zero lower bound, and a body that does not end in a bare scf.reduce.
        let shifted = LOOP.replace("= (%c0, %c0, %c0) to", "= (%c1, %c0, %c0) to");
        assert_eq!(collapse_parallel_loops(&shifted), shifted);
        let reducing = LOOP.replace("      scf.reduce \n", "      scf.reduce(%0 : f32) {\n      }\n");
        assert_eq!(collapse_parallel_loops(&reducing), reducing);
    }
}
