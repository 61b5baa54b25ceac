//! The text of generated GPU kernels: fresh SSA names, indentation, and the index and i64
//! arithmetic helpers the kernel generators ([`crate::gpu_matmul`], [`crate::gpu_wgmma`],
//! [`crate::gpu_sgemm`], [`crate::gpu_rows`]) share.

use max_dialects::DType;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::Write;

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
