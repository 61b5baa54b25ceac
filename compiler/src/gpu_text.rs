//! The text of generated GPU kernels: fresh SSA names, indentation, and the index and i64
//! arithmetic helpers the kernel generators ([`crate::gpu_matmul`], [`crate::gpu_wgmma`],
//! [`crate::gpu_sgemm`], [`crate::gpu_rows`]) share, and the renaming of a copy of
//! generated text ([`rename`], to unroll a loop body: [`crate::gpu_qdot`]).

use max_dialects::DType;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write;

/// The workgroup buffer of [`KernelText::arrive`]'s flag.
pub const ARRIVAL_FLAG: &str = "memref<1xi32, #gpu.address_space<workgroup>>";

/// The module-level declaration of `n` arrival counters named `name`, zero at load.
pub fn arrival_counters(name: &str, n: usize) -> String {
    format!("llvm.mlir.global internal @{name}(dense<0> : tensor<{n}xi32>) {{addr_space = 1 : i32, alignment = 4 : i64}} : !llvm.array<{n} x i32>")
}

/// [`KernelText::shuffle_xor`]'s offsets that combine a whole warp.
pub const WARP_OFFSETS: [i64; 5] = [16, 8, 4, 2, 1];

/// MLIR text being written, one op per line.
pub(crate) struct KernelText {
    pub s: String,
    next: usize,
    /// SSA names are `%<prefix><n>`.
    prefix: &'static str,
    /// Index constants named with [`KernelText::c`], to declare once where
    /// [`KernelText::declare_constants`] puts them.
    consts: RefCell<BTreeSet<usize>>,
}

impl KernelText {
    /// Empty text whose values are named `%<prefix><n>`.
    pub fn new(prefix: &'static str) -> Self {
        KernelText { s: String::new(), next: 0, prefix, consts: RefCell::default() }
    }

    /// A new SSA name.
    pub fn fresh(&mut self) -> String {
        self.next += 1;
        format!("%{}{}", self.prefix, self.next)
    }

    /// Appends one line at `indent`.
    pub fn line(&mut self, indent: usize, l: impl AsRef<str>) {
        let _ = writeln!(self.s, "{:indent$}{}", "", l.as_ref(), indent = indent);
    }

    /// Appends `%new = rhs` and returns `%new`.
    pub fn let_(&mut self, indent: usize, rhs: impl AsRef<str>) -> String {
        let v = self.fresh();
        self.line(indent, format!("{v} = {}", rhs.as_ref()));
        v
    }

    /// The index constant `c` as `%c<c>`, declared by [`KernelText::declare_constants`].
    pub fn c(&self, c: usize) -> String {
        self.consts.borrow_mut().insert(c);
        format!("%c{c}")
    }

    /// Replaces the line `marker` with the declarations of every constant named with
    /// [`KernelText::c`], at `indent`.
    pub fn declare_constants(&self, marker: &str, indent: usize) -> String {
        let decls: Vec<String> = self.consts.borrow().iter().map(|c| format!("%c{c} = arith.constant {c} : index")).collect();
        self.s.replace(marker, &decls.join(&format!("\n{:indent$}", "", indent = indent)))
    }

    /// A new index constant.
    pub fn index(&mut self, indent: usize, v: usize) -> String {
        self.let_(indent, format!("arith.constant {v} : index"))
    }
    /// `a + b` (index).
    pub fn add(&mut self, indent: usize, a: &str, b: &str) -> String {
        self.let_(indent, format!("arith.addi {a}, {b} : index"))
    }
    /// `a + v` (index).
    pub fn addc(&mut self, indent: usize, a: &str, v: usize) -> String {
        let c = self.index(indent, v);
        self.add(indent, a, &c)
    }
    /// `a * v` (index).
    pub fn mulc(&mut self, indent: usize, a: &str, v: usize) -> String {
        let c = self.index(indent, v);
        self.let_(indent, format!("arith.muli {a}, {c} : index"))
    }

    /// A new i64 constant.
    pub fn i(&mut self, indent: usize, c: i64) -> String {
        self.let_(indent, format!("arith.constant {c} : i64"))
    }
    /// `arith.<op> a, b` on i64.
    pub fn bin(&mut self, indent: usize, op: &str, a: &str, b: &str) -> String {
        self.let_(indent, format!("arith.{op} {a}, {b} : i64"))
    }
    /// `arith.<op> a, c` on i64 with a constant `c`.
    pub fn binc(&mut self, indent: usize, op: &str, a: &str, c: i64) -> String {
        let k = self.i(indent, c);
        self.bin(indent, op, a, &k)
    }

    /// Kernel code every thread of a block runs once its share of a result is stored, when
    /// `total` blocks (index SSA) share it: the block counts its arrival on counter `index`
    /// (index SSA) of the module global `counters` (declared by [`arrival_counters`]), and
    /// the last to arrive puts the counter back to zero for the next launch. Returns an i1
    /// that is true in every thread of the last block, whose threads may then read the
    /// other blocks' stores. `tid` is the thread index and `flag` a workgroup buffer of
    /// type [`ARRIVAL_FLAG`].
    ///
    /// The ordering is the grid barrier's: the block's barrier orders its threads' stores
    /// before thread 0's release fence and count; in the last block, thread 0's acquire
    /// fence after the count and the barrier after it order the other blocks' stores before
    /// every thread's loads. Kernels on one stream never overlap, so one counter per group
    /// serves every launch.
    pub fn arrive(&mut self, indent: usize, counters: &str, index: &str, total: &str, tid: &str, flag: &str) -> String {
        let i = indent;
        self.line(i, "gpu.barrier");
        let zero = self.index(i, 0);
        let one32 = self.let_(i, "arith.constant 1 : i32");
        let zero32 = self.let_(i, "arith.constant 0 : i32");
        let first = self.let_(i, format!("arith.cmpi eq, {tid}, {zero} : index"));
        self.line(i, format!("scf.if {first} {{"));
        self.line(i + 2, "llvm.fence syncscope(\"device\") release");
        let base = self.let_(i + 2, format!("llvm.mlir.addressof @{counters} : !llvm.ptr<1>"));
        let at = self.let_(i + 2, format!("arith.index_cast {index} : index to i64"));
        let counter = self.let_(i + 2, format!("llvm.getelementptr {base}[{at}] : (!llvm.ptr<1>, i64) -> !llvm.ptr<1>, i32"));
        let before = self.let_(i + 2, format!("llvm.atomicrmw add {counter}, {one32} syncscope(\"device\") acq_rel : !llvm.ptr<1>, i32"));
        let total32 = self.let_(i + 2, format!("arith.index_cast {total} : index to i32"));
        let arrived = self.let_(i + 2, format!("arith.addi {before}, {one32} : i32"));
        let last = self.let_(i + 2, format!("arith.cmpi eq, {arrived}, {total32} : i32"));
        self.line(i + 2, format!("scf.if {last} {{"));
        self.line(i + 4, "llvm.fence syncscope(\"device\") acquire");
        self.line(i + 4, format!("llvm.store {zero32}, {counter} {{alignment = 4 : i64}} : i32, !llvm.ptr<1>"));
        self.line(i + 2, "}");
        let last32 = self.let_(i + 2, format!("arith.extui {last} : i1 to i32"));
        self.line(i + 2, format!("memref.store {last32}, {flag}[{zero}] : {ARRIVAL_FLAG}"));
        self.line(i, "}");
        self.line(i, "gpu.barrier");
        let seen = self.let_(i, format!("memref.load {flag}[{zero}] : {ARRIVAL_FLAG}"));
        self.let_(i, format!("arith.cmpi ne, {seen}, {zero32} : i32"))
    }

    /// The f32 `v` combined by `op` (`addf`, `maximumf`) with its values in lanes `lane ^ off`,
    /// for each of `offsets` in turn (`gpu.shuffle xor`, width `%w32`): [`WARP_OFFSETS`]
    /// gives every lane the warp's result, smaller offsets a group of lanes'.
    pub fn shuffle_xor(&mut self, indent: usize, v: &str, op: &str, offsets: impl IntoIterator<Item = i64>) -> String {
        let mut acc = v.to_string();
        for off in offsets {
            let o = self.let_(indent, format!("arith.constant {off} : i32"));
            let sh = self.fresh();
            self.line(indent, format!("{sh}, {sh}_ok = gpu.shuffle xor {acc}, {o}, %w32 : f32"));
            acc = self.let_(indent, format!("arith.{op} {acc}, {sh} : f32"));
        }
        acc
    }

    /// The float `v` of type `from` as `to`: `v` itself when they are the same, through f32
    /// between two types of one width (f16 and bf16).
    pub fn convert(&mut self, indent: usize, v: &str, from: DType, to: DType) -> String {
        if from == to {
            return v.to_string();
        }
        let (f, t) = (from.mlir_name(), to.mlir_name());
        if from.size_bytes() < to.size_bytes() {
            self.let_(indent, format!("arith.extf {v} : {f} to {t}"))
        } else if from.size_bytes() > to.size_bytes() {
            self.let_(indent, format!("arith.truncf {v} : {f} to {t}"))
        } else {
            let w = self.let_(indent, format!("arith.extf {v} : {f} to f32"));
            self.let_(indent, format!("arith.truncf {w} : f32 to {t}"))
        }
    }
}

/// Whether `c` continues an SSA name (`%f_x0`, `%kp`; a `#` or `:` ends it).
fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '$')
}

/// The SSA values that lines of MLIR text define (`%a = ..`, `%r:2 = ..`, `%h, %ok = ..`).
pub(crate) fn defined_names(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((lhs, _)) = line.split_once(" = ") else { continue };
        for part in lhs.split(',') {
            let name = part.trim().split(':').next().unwrap_or("");
            if name.len() > 1 && name.starts_with('%') && name[1..].chars().all(name_char) {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// `text` with every SSA name that `names` maps replaced, whole names only (`%f_a1` is not
/// `%f_a10`; `%r#0` and `%r:2` keep their suffixes). Unrolls a generated loop body by
/// renaming a copy's definitions.
pub(crate) fn rename(text: &str, names: &std::collections::HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let tail = &rest[at + 1..];
        let len = tail.find(|c: char| !name_char(c)).unwrap_or(tail.len());
        let name = &rest[at..at + 1 + len];
        out.push_str(names.get(name).map_or(name, String::as_str));
        rest = &rest[at + 1 + len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_whole_names_only() {
        let text = "      %a = arith.addi %kp, %c1 : index\n      %r:2 = scf.for %i = %a to %b step %c1 iter_args(%a1 = %a) -> (index, index) {\n      %h, %h_ok = gpu.shuffle xor %r#0, %o, %w : f32\n";
        assert_eq!(defined_names(text), ["%a", "%r", "%h", "%h_ok"]);
        let names = defined_names(text).into_iter().map(|d| (d.clone(), format!("{d}_u1"))).collect();
        assert_eq!(
            rename(text, &names),
            "      %a_u1 = arith.addi %kp, %c1 : index\n      %r_u1:2 = scf.for %i = %a_u1 to %b step %c1 iter_args(%a1 = %a_u1) -> (index, index) {\n      %h_u1, %h_ok_u1 = gpu.shuffle xor %r_u1#0, %o, %w : f32\n"
        );
    }
}
