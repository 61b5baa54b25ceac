//! PTX text to kernels the interpreter runs: entries with their parameters, registers,
//! shared and local memory, and instructions decoded once ([`Inst`]).
//!
//! It reads the PTX that LLVM's NVPTX back end writes (and inline `asm` blocks in it): one
//! statement per `;`, labels `name:`, `{ }` scopes, `.reg` declarations with `<N>` ranges.

use std::collections::HashMap;

/// What is wrong with a PTX text, and where.
#[derive(Debug, Clone, PartialEq)]
pub struct PtxError {
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for PtxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PTX line {}: {}", self.line, self.msg)
    }
}

/// A scalar type of an instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    B8,
    B16,
    B32,
    B64,
    U8,
    U16,
    U32,
    U64,
    S8,
    S16,
    S32,
    S64,
    F16,
    F16x2,
    Bf16,
    Bf16x2,
    Tf32,
    F32,
    F64,
    Pred,
}

impl Ty {
    fn parse(s: &str) -> Option<Ty> {
        Some(match s {
            "b8" => Ty::B8,
            "b16" => Ty::B16,
            "b32" => Ty::B32,
            "b64" => Ty::B64,
            "u8" => Ty::U8,
            "u16" => Ty::U16,
            "u32" => Ty::U32,
            "u64" => Ty::U64,
            "s8" => Ty::S8,
            "s16" => Ty::S16,
            "s32" => Ty::S32,
            "s64" => Ty::S64,
            "f16" => Ty::F16,
            "f16x2" => Ty::F16x2,
            "bf16" => Ty::Bf16,
            "bf16x2" => Ty::Bf16x2,
            "tf32" => Ty::Tf32,
            "f32" => Ty::F32,
            "f64" => Ty::F64,
            "pred" => Ty::Pred,
            _ => return None,
        })
    }

    /// Width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Ty::B8 | Ty::U8 | Ty::S8 => 8,
            Ty::B16 | Ty::U16 | Ty::S16 | Ty::F16 | Ty::Bf16 => 16,
            Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32 => 32,
            Ty::B64 | Ty::U64 | Ty::S64 | Ty::F64 => 64,
            Ty::Pred => 1,
        }
    }

    pub fn signed(self) -> bool {
        matches!(self, Ty::S8 | Ty::S16 | Ty::S32 | Ty::S64)
    }

    pub fn float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32 | Ty::F64 | Ty::F16x2 | Ty::Bf16x2 | Ty::Tf32)
    }
}

/// A state space of a load, store or address conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Generic,
    Global,
    Shared,
    Local,
    Param,
}

/// Special registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Tid(u8),
    Ntid(u8),
    Ctaid(u8),
    Nctaid(u8),
    LaneId,
    WarpId,
}

/// An operand, resolved against the kernel's registers and symbols.
#[derive(Debug, Clone, PartialEq)]
pub enum Opnd {
    Reg(u32),
    /// Raw bits (integers as two's complement, floats as their IEEE bits).
    Imm(u64),
    Special(Special),
    /// `[base + off]`; a symbol's address is folded into `off` with no base register.
    Addr { base: Option<u32>, off: i64, space_hint: Option<Space> },
    Vec(Vec<Opnd>),
    Label(usize),
    /// `_`: a result nobody reads.
    Sink,
}

/// Comparison of `setp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Lo,
    Ls,
    Hi,
    Hs,
    Equ,
    Neu,
    Ltu,
    Leu,
    Gtu,
    Geu,
    Num,
    Nan,
}

/// Two-operand arithmetic and logic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bin {
    Add,
    Sub,
    MulLo,
    MulHi,
    MulWide,
    Div,
    Rem,
    Min,
    Max,
    /// `min.NaN`/`max.NaN`: a NaN operand gives NaN.
    MinNan,
    MaxNan,
    And,
    Or,
    Xor,
    Shl,
    Shr,
    Copysign,
}

/// One-operand operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Un {
    Neg,
    Abs,
    Not,
    Sqrt,
    Rsqrt,
    Rcp,
    Ex2,
    Lg2,
    Sin,
    Cos,
    Tanh,
    Popc,
    Clz,
    Brev,
}

/// Rounding of `cvt`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rnd {
    /// To nearest even (float results), or the default.
    Rn,
    Rz,
    Rm,
    Rp,
    /// Integer rounding of a float (`rni`, `rzi`, `rmi`, `rpi`).
    Rni,
    Rzi,
    Rmi,
    Rpi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shfl {
    Up,
    Down,
    Bfly,
    Idx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtomOp {
    Add,
    Min,
    Max,
    Inc,
    Dec,
    And,
    Or,
    Xor,
    Exch,
    Cas,
}

/// A decoded instruction.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Mov(Ty),
    Ld { space: Space, ty: Ty, vec: u8 },
    St { space: Space, ty: Ty, vec: u8 },
    Cvta { to: bool, space: Space },
    Bin { op: Bin, ty: Ty, sat: bool },
    Un { op: Un, ty: Ty },
    /// `fma`/`mad.lo`/`mad.hi`/`mad.wide`: `a * b + c`.
    Mad { wide: bool, hi: bool, ty: Ty, sat: bool },
    Setp { cmp: Cmp, ty: Ty },
    Selp(Ty),
    Cvt { dst: Ty, src: Ty, rnd: Option<Rnd>, sat: bool },
    Prmt,
    /// `dp4a.atype.btype d, a, b, c`: `c` plus the four products of `a`'s and `b`'s bytes,
    /// each byte sign- or zero-extended as its type says.
    Dp4a { a_signed: bool, b_signed: bool },
    Bfe(Ty),
    Bfi(Ty),
    Shfl(Shfl),
    Bra,
    Exit,
    Bar,
    /// Fences and waits that need nothing in a one-thread-at-a-time machine, prefetches,
    /// and `griddepcontrol.launch_dependents` (kernels run one after another here).
    Nop,
    /// `griddepcontrol.wait`: the kernel before has finished (always so here); from here on
    /// the lane may touch memory that kernel wrote ([`crate::exec::Launch::programmatic`]).
    GridDepWait,
    /// `cp.async` of `bytes` bytes (done at once).
    CpAsync { bytes: u32 },
    Atom { space: Space, op: AtomOp, ty: Ty, red: bool },
    Ldmatrix { count: u8, trans: bool },
    /// `mma.sync.aligned.m16n8k{k}`: A/B element type, f32 accumulators.
    Mma { k: u8, ab: Ty, c: Ty, d: Ty },
    /// `wgmma.mma_async.sync.aligned.m64n{n}k{k}` with A and B from shared memory.
    Wgmma { n: u32, k: u8, ab: Ty },
    /// Extended-precision `add{c}{.cc}` / `sub{c}{.cc}` / `mad{c}.{lo,hi}{.cc}` (32/64-bit
    /// integers): `cin` adds the carry flag in, `cout` writes it.
    Carry { kind: CarryOp, cin: bool, cout: bool, ty: Ty },
    /// Funnel shift `shf.{l,r}.{wrap,clamp}.b32`.
    Shf { left: bool, clamp: bool },
}

/// The arithmetic of [`Op::Carry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CarryOp {
    Add,
    Sub,
    MadLo,
    MadHi,
}

/// An instruction with its guard predicate and operands.
#[derive(Debug, Clone, PartialEq)]
pub struct Inst {
    /// `@%p` / `@!%p`: the predicate register and whether it is negated.
    pub guard: Option<(u32, bool)>,
    pub op: Op,
    pub args: Vec<Opnd>,
    pub line: usize,
}

/// A kernel parameter's place in the parameter buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// One `.entry`.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<Param>,
    /// Registers; each one's width in bits (writes are truncated to it).
    pub reg_bits: Vec<u32>,
    pub insts: Vec<Inst>,
    /// Static shared memory (bytes); dynamic shared memory starts at `dyn_shared_offset`.
    pub static_shared: usize,
    pub dyn_shared_offset: usize,
    /// Local memory per thread.
    pub local_bytes: usize,
    /// For each branch, the instruction where lanes that went apart there meet again (the
    /// start of the branch block's immediate post-dominator; `u32::MAX`: only at exit).
    pub reconverge: Vec<u32>,
    /// A hidden register holding each thread's carry flag (`.cc`).
    pub carry_reg: u32,
}

/// A loaded PTX module.
#[derive(Debug, Clone, Default)]
pub struct Module {
    pub kernels: HashMap<String, std::sync::Arc<Kernel>>,
}

struct Stmt {
    text: String,
    line: usize,
}

/// Splits PTX into statements (`;`-terminated, or `{`, `}`, and `label:`), dropping comments.
fn statements(src: &str) -> Vec<Stmt> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_line = 1;
    let mut line = 1;
    let bytes: Vec<char> = src.chars().collect();
    let mut i = 0;
    let flush = |cur: &mut String, out: &mut Vec<Stmt>, l: usize| {
        let t = cur.trim();
        if !t.is_empty() {
            out.push(Stmt { text: t.to_string(), line: l });
        }
        cur.clear();
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c == '/' && i + 1 < bytes.len() && bytes[i + 1] == '/' {
            while i < bytes.len() && bytes[i] != '\n' {
                i += 1;
            }
            continue;
        }
        if c == '/' && i + 1 < bytes.len() && bytes[i + 1] == '*' {
            i += 2;
            while i + 1 < bytes.len() && !(bytes[i] == '*' && bytes[i + 1] == '/') {
                if bytes[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            i += 2;
            continue;
        }
        if c == '\n' {
            // `.version`, `.target` and `.address_size` end at the line's end, with no `;`.
            let t = cur.trim_start();
            if [".version", ".target", ".address_size", ".file", ".loc"].iter().any(|d| t.starts_with(d)) {
                flush(&mut cur, &mut out, cur_line);
            }
            line += 1;
        }
        if cur.trim().is_empty() {
            cur_line = line;
        }
        match c {
            ';' => flush(&mut cur, &mut out, cur_line),
            // A `{` opens a scope unless it starts a vector operand inside an instruction
            // (instructions start with a letter or `@`, directives with `.`).
            '{' if cur.trim().is_empty() || (cur.trim_start().starts_with('.') && !cur.contains('=')) => {
                flush(&mut cur, &mut out, cur_line);
                out.push(Stmt { text: "{".into(), line });
            }
            '}' if cur.matches('{').count() <= cur.matches('}').count() => {
                flush(&mut cur, &mut out, cur_line);
                out.push(Stmt { text: "}".into(), line });
            }
            // `name:` ends a label; `::` belongs to an opcode (`shared::cta`).
            ':' if bytes.get(i + 1) != Some(&':')
                && !cur.ends_with(':')
                && !cur.trim().is_empty()
                && !cur.trim().contains(char::is_whitespace)
                && !cur.contains('[') =>
            {
                cur.push(':');
                flush(&mut cur, &mut out, cur_line);
            }
            _ => cur.push(c),
        }
        i += 1;
    }
    flush(&mut cur, &mut out, cur_line);
    out
}

/// Splits operands at top-level commas (not inside `{}` or `[]`).
fn split_operands(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '{' | '[' => {
                depth += 1;
                cur.push(c)
            }
            '}' | ']' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => {
                out.push(cur.trim().to_string());
                cur.clear();
            }
            _ => cur.push(c),
        }
    }
    if !cur.trim().is_empty() {
        out.push(cur.trim().to_string());
    }
    out
}

fn parse_int(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s),
    };
    let t = t.trim_end_matches('U');
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()? as i64
    } else {
        t.parse::<i64>().ok()?
    };
    Some(if neg { v.wrapping_neg() } else { v })
}

fn parse_imm(s: &str) -> Option<u64> {
    if let Some(h) = s.strip_prefix("0f").or_else(|| s.strip_prefix("0F")) {
        return u32::from_str_radix(h, 16).ok().map(|v| v as u64);
    }
    if let Some(h) = s.strip_prefix("0d").or_else(|| s.strip_prefix("0D")) {
        return u64::from_str_radix(h, 16).ok();
    }
    parse_int(s).map(|v| v as u64)
}

/// Where each symbol lives: shared offsets, local offsets, parameters, global addresses.
#[derive(Default)]
struct Symbols {
    shared: HashMap<String, usize>,
    local: HashMap<String, usize>,
    params: HashMap<String, usize>,
}

struct KernelBuilder<'a> {
    regs: HashMap<String, u32>,
    reg_bits: Vec<u32>,
    labels: HashMap<String, usize>,
    /// Branches to patch once every label is known: (instruction, operand, label).
    fixups: Vec<(usize, usize, String, usize)>,
    syms: Symbols,
    module_shared: &'a [(String, usize, usize)],
    module_globals: &'a HashMap<String, u64>,
    static_shared: usize,
    local_bytes: usize,
    extern_shared: Option<(String, usize)>,
    insts: Vec<Inst>,
}

impl KernelBuilder<'_> {
    fn declare_regs(&mut self, decl: &str, line: usize) -> Result<(), PtxError> {
        // `.reg .b32 %r<12>` or `.reg .pred p` or `.reg .b64 %SP`
        let mut parts = decl.split_whitespace().skip(1);
        let ty = parts.next().and_then(|t| Ty::parse(t.trim_start_matches('.'))).ok_or_else(|| PtxError { line, msg: format!("bad register declaration: {decl}") })?;
        let bits = if ty == Ty::Pred { 1 } else { ty.bits() };
        let rest: String = parts.collect::<Vec<_>>().join(" ");
        for name in rest.split(',') {
            let name = name.trim();
            if let Some((base, n)) = name.split_once('<') {
                let n: usize = n.trim_end_matches('>').parse().map_err(|_| PtxError { line, msg: format!("bad register range: {name}") })?;
                for i in 0..n {
                    self.add_reg(format!("{base}{i}"), bits);
                }
            } else if !name.is_empty() {
                self.add_reg(name.to_string(), bits);
            }
        }
        Ok(())
    }

    fn add_reg(&mut self, name: String, bits: u32) {
        let id = self.reg_bits.len() as u32;
        self.regs.entry(name).or_insert_with(|| {
            self.reg_bits.push(bits);
            id
        });
    }

    fn declare_space(&mut self, decl: &str, line: usize, local: bool) -> Result<(), PtxError> {
        // `.shared .align 16 .b8 name[1024]` / `.local .align 8 .b8 __local_depot0[32]`
        let (align, name, bytes) = parse_array_decl(decl).ok_or_else(|| PtxError { line, msg: format!("unsupported declaration: {decl}") })?;
        if local {
            let off = self.local_bytes.next_multiple_of(align.max(1));
            self.local_bytes = off + bytes;
            self.syms.local.insert(name, off);
        } else {
            self.place_shared(name, align, bytes);
        }
        Ok(())
    }

    /// Gives a static shared variable its offset after the ones placed before it. A
    /// variable declared with less than 16-byte alignment is placed where only its own
    /// alignment holds (off a 16-byte boundary), as ptxas may place it: a kernel that reads
    /// it as wider vectors than it declares then faults here as it can on the hardware.
    fn place_shared(&mut self, name: String, align: usize, bytes: usize) {
        let align = align.max(1);
        let mut off = self.static_shared.next_multiple_of(align);
        if align < 16 && off.is_multiple_of(16) {
            off += align;
        }
        self.static_shared = off + bytes;
        self.syms.shared.insert(name, off);
    }

    fn operand(&mut self, s: &str, line: usize, idx: usize) -> Result<Opnd, PtxError> {
        let s = s.trim();
        let err = |m: String| PtxError { line, msg: m };
        if s == "_" {
            return Ok(Opnd::Sink);
        }
        if let Some(inner) = s.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let mut v = Vec::new();
            for p in inner.split(',') {
                v.push(self.operand(p, line, idx)?);
            }
            return Ok(Opnd::Vec(v));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            let inner: String = inner.chars().filter(|c| !c.is_whitespace()).collect();
            let (base, off) = match inner.find(['+', '-']).filter(|&i| i > 0) {
                Some(i) => (&inner[..i], parse_int(inner[i..].trim_start_matches('+')).ok_or_else(|| err(format!("bad address: {s}")))?),
                None => (inner.as_str(), 0),
            };
            if let Some(&r) = self.regs.get(base) {
                return Ok(Opnd::Addr { base: Some(r), off, space_hint: None });
            }
            if let Some(&p) = self.syms.params.get(base) {
                return Ok(Opnd::Addr { base: None, off: p as i64 + off, space_hint: Some(Space::Param) });
            }
            if let Some(&o) = self.syms.shared.get(base) {
                return Ok(Opnd::Addr { base: None, off: o as i64 + off, space_hint: Some(Space::Shared) });
            }
            if let Some(&o) = self.syms.local.get(base) {
                return Ok(Opnd::Addr { base: None, off: o as i64 + off, space_hint: Some(Space::Local) });
            }
            if let Some(&g) = self.module_globals.get(base) {
                return Ok(Opnd::Addr { base: None, off: g as i64 + off, space_hint: Some(Space::Global) });
            }
            if let Some(v) = parse_int(base) {
                return Ok(Opnd::Addr { base: None, off: v + off, space_hint: None });
            }
            return Err(err(format!("unknown address base `{base}` in {s}")));
        }
        if let Some(sp) = special(s) {
            return Ok(Opnd::Special(sp));
        }
        if let Some(&r) = self.regs.get(s) {
            return Ok(Opnd::Reg(r));
        }
        if let Some(v) = parse_imm(s) {
            return Ok(Opnd::Imm(v));
        }
        if let Some(&o) = self.syms.shared.get(s) {
            return Ok(Opnd::Imm(o as u64));
        }
        if let Some(&o) = self.syms.local.get(s) {
            return Ok(Opnd::Imm(o as u64));
        }
        if let Some(&g) = self.module_globals.get(s) {
            return Ok(Opnd::Imm(g));
        }
        if s.starts_with('$') || s.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_') {
            // A label (resolved once the body is read).
            self.fixups.push((self.insts.len(), idx, s.to_string(), line));
            return Ok(Opnd::Label(usize::MAX));
        }
        Err(err(format!("unknown operand `{s}`")))
    }

    fn instruction(&mut self, text: &str, line: usize) -> Result<(), PtxError> {
        let mut t = text.trim();
        let mut guard = None;
        if let Some(rest) = t.strip_prefix('@') {
            let (p, r) = rest.split_once(char::is_whitespace).ok_or_else(|| PtxError { line, msg: format!("bad guard: {text}") })?;
            let (neg, name) = match p.strip_prefix('!') {
                Some(n) => (true, n),
                None => (false, p),
            };
            let reg = *self.regs.get(name).ok_or_else(|| PtxError { line, msg: format!("unknown predicate {name}") })?;
            guard = Some((reg, neg));
            t = r.trim();
        }
        let (opcode, rest) = match t.split_once(char::is_whitespace) {
            Some((o, r)) => (o, r.trim()),
            None => (t, ""),
        };
        let op = decode(opcode).ok_or_else(|| PtxError { line, msg: format!("unsupported instruction `{opcode}`") })?;
        let mut args = Vec::new();
        for (i, a) in split_operands(rest).iter().enumerate() {
            args.push(self.operand(a, line, i)?);
        }
        if !arity_ok(&op, &args) {
            return Err(PtxError { line, msg: format!("`{opcode}` with {} operands, or operands of the wrong kind", args.len()) });
        }
        let writes = !matches!(op, Op::St { .. } | Op::Bra | Op::Exit | Op::Bar | Op::Nop | Op::GridDepWait | Op::CpAsync { .. } | Op::Atom { red: true, .. });
        let writable = |o: &Opnd| matches!(o, Opnd::Reg(_) | Opnd::Sink);
        if writes {
            let ok = match args.first() {
                Some(Opnd::Vec(v)) => v.iter().all(writable),
                Some(o) => writable(o),
                None => false,
            };
            if !ok {
                return Err(PtxError { line, msg: format!("`{opcode}` needs a register to write") });
            }
        }
        self.insts.push(Inst { guard, op, args, line });
        Ok(())
    }
}

/// Whether `args` fit `op`: their count, and a vector of registers where the instruction
/// takes one (so that execution never indexes past the operands).
fn arity_ok(op: &Op, args: &[Opnd]) -> bool {
    let n = args.len();
    let vec_len = |i: usize| match args.get(i) {
        Some(Opnd::Vec(v)) => v.len(),
        _ => 0,
    };
    let addr = |i: usize| matches!(args.get(i), Some(Opnd::Addr { .. }));
    match op {
        Op::Mov(_) | Op::Cvta { .. } | Op::Un { .. } => n == 2,
        Op::Ld { .. } => n == 2 && addr(1),
        Op::St { .. } => n == 2 && addr(0),
        Op::Bin { .. } | Op::Setp { .. } => n == 3,
        Op::Mad { .. } | Op::Selp(_) | Op::Prmt | Op::Dp4a { .. } | Op::Bfe(_) | Op::Shf { .. } => n == 4,
        Op::Bfi(_) => n == 5,
        Op::Cvt { dst, .. } => n == if matches!(dst, Ty::F16x2 | Ty::Bf16x2) { 3 } else { 2 },
        Op::Carry { kind, .. } => n == if matches!(kind, CarryOp::MadLo | CarryOp::MadHi) { 4 } else { 3 },
        Op::Shfl(_) => n == 5,
        Op::Bra => n == 1 && matches!(args[0], Opnd::Label(_)),
        // `bar.sync 0`; a thread count (`bar.sync 1, 64`) names a partial barrier.
        Op::Bar => n <= 1,
        Op::Exit | Op::Nop => true,
        Op::GridDepWait => n == 0,
        Op::CpAsync { .. } => (3..=4).contains(&n) && addr(0) && addr(1),
        Op::Atom { op, red, .. } => {
            let want = if *red { 2 } else if *op == AtomOp::Cas { 4 } else { 3 };
            n == want && addr(if *red { 0 } else { 1 })
        }
        Op::Ldmatrix { count, .. } => n == 2 && vec_len(0) == *count as usize && addr(1),
        Op::Mma { k, ab, .. } => {
            let sixteen = matches!(ab, Ty::F16 | Ty::Bf16);
            let (na, nb) = match (k, sixteen) {
                (16, true) => (4, 2),
                (8, true) => (2, 1),
                (8, false) => (4, 2),
                _ => return false,
            };
            n == 4 && vec_len(0) == 4 && vec_len(1) == na && vec_len(2) == nb && vec_len(3) == 4
        }
        Op::Wgmma { n: cols, .. } => n >= 4 && vec_len(0) == *cols as usize / 2,
    }
}

fn special(s: &str) -> Option<Special> {
    let (name, dim) = match s.rsplit_once('.') {
        Some((n, d)) => (n, d),
        None => (s, ""),
    };
    let d = match dim {
        "x" => 0,
        "y" => 1,
        "z" => 2,
        _ => 3,
    };
    Some(match (name, d) {
        ("%tid", 0..=2) => Special::Tid(d),
        ("%ntid", 0..=2) => Special::Ntid(d),
        ("%ctaid", 0..=2) => Special::Ctaid(d),
        ("%nctaid", 0..=2) => Special::Nctaid(d),
        _ if s == "%laneid" => Special::LaneId,
        _ if s == "%warpid" => Special::WarpId,
        _ => return None,
    })
}

/// `.align A .b8 name[N]` or a scalar `.align A .u32 name` (after the space keyword):
/// alignment, name, bytes.
fn parse_array_decl(decl: &str) -> Option<(usize, String, usize)> {
    let words: Vec<&str> = decl.split_whitespace().collect();
    let mut align = 1;
    let mut elem = 1;
    let mut arr = None;
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            ".align" => {
                align = words.get(i + 1)?.parse().ok()?;
                i += 1;
            }
            w if w.starts_with('.') => {
                if let Some(t) = Ty::parse(&w[1..]) {
                    elem = (t.bits() as usize / 8).max(1);
                }
            }
            w => arr = Some(w),
        }
        i += 1;
    }
    let arr = arr?;
    // A scalar (`.shared .align 4 .u32 flag`) is one element.
    let Some((name, n)) = arr.split_once('[') else {
        return Some((align.max(elem), arr.to_string(), elem));
    };
    let n = n.trim_end_matches(']');
    let count: usize = if n.is_empty() { 0 } else { n.parse().ok()? };
    Some((align, name.to_string(), count * elem))
}

/// Decodes an opcode (`ld.global.nc.v4.b32`, `setp.lt.u64`, ...).
pub fn decode(opcode: &str) -> Option<Op> {
    let parts: Vec<&str> = opcode.split('.').collect();
    let base = parts[0];
    let mods = &parts[1..];
    let has = |m: &str| mods.contains(&m);
    let types: Vec<Ty> = mods.iter().filter_map(|m| Ty::parse(m)).collect();
    let last_ty = types.last().copied();
    let space = || {
        if has("global") {
            Space::Global
        } else if has("shared") || mods.iter().any(|m| m.starts_with("shared::")) {
            Space::Shared
        } else if has("local") {
            Space::Local
        } else if has("param") {
            Space::Param
        } else {
            Space::Generic
        }
    };
    let vec = || {
        if has("v2") {
            2
        } else if has("v4") {
            4
        } else if has("v8") {
            8
        } else {
            1
        }
    };
    let bin = |op: Bin| Some(Op::Bin { op, ty: last_ty?, sat: has("sat") });
    let un = |op: Un| Some(Op::Un { op, ty: last_ty? });
    let carry = |kind: CarryOp| Some(Op::Carry { kind, cin: base.ends_with('c'), cout: has("cc"), ty: last_ty? });
    if has("cc") || matches!(base, "addc" | "subc" | "madc") {
        return match base {
            "add" | "addc" => carry(CarryOp::Add),
            "sub" | "subc" => carry(CarryOp::Sub),
            "mad" | "madc" if has("hi") => carry(CarryOp::MadHi),
            "mad" | "madc" => carry(CarryOp::MadLo),
            _ => None,
        };
    }
    Some(match base {
        "mov" => Op::Mov(last_ty?),
        "shf" if has("b32") => Op::Shf { left: has("l"), clamp: has("clamp") },
        // At most 16 bytes an access, as on the GPU.
        "ld" if vec() as u32 * last_ty?.bits() <= 128 => Op::Ld { space: space(), ty: last_ty?, vec: vec() },
        "st" if vec() as u32 * last_ty?.bits() <= 128 => Op::St { space: space(), ty: last_ty?, vec: vec() },
        "cvta" => Op::Cvta { to: has("to"), space: space() },
        "add" => return bin(Bin::Add),
        "sub" => return bin(Bin::Sub),
        "mul" if has("wide") => return bin(Bin::MulWide),
        "mul" if has("hi") => return bin(Bin::MulHi),
        "mul" => return bin(Bin::MulLo),
        "div" => return bin(Bin::Div),
        "rem" => return bin(Bin::Rem),
        "min" if has("NaN") => return bin(Bin::MinNan),
        "max" if has("NaN") => return bin(Bin::MaxNan),
        "min" => return bin(Bin::Min),
        "max" => return bin(Bin::Max),
        "and" => return bin(Bin::And),
        "or" => return bin(Bin::Or),
        "xor" => return bin(Bin::Xor),
        "shl" => return bin(Bin::Shl),
        "shr" => return bin(Bin::Shr),
        "copysign" => return bin(Bin::Copysign),
        "neg" => return un(Un::Neg),
        "abs" => return un(Un::Abs),
        "not" => return un(Un::Not),
        "sqrt" => return un(Un::Sqrt),
        "rsqrt" => return un(Un::Rsqrt),
        "rcp" => return un(Un::Rcp),
        "ex2" => return un(Un::Ex2),
        "lg2" => return un(Un::Lg2),
        "sin" => return un(Un::Sin),
        "cos" => return un(Un::Cos),
        "tanh" => return un(Un::Tanh),
        "popc" => return un(Un::Popc),
        "clz" => return un(Un::Clz),
        "brev" => return un(Un::Brev),
        "fma" => Op::Mad { wide: false, hi: false, ty: last_ty?, sat: has("sat") },
        "mad" => Op::Mad { wide: has("wide"), hi: has("hi"), ty: last_ty?, sat: has("sat") },
        "setp" => {
            let cmp = match *mods.first()? {
                "eq" => Cmp::Eq,
                "ne" => Cmp::Ne,
                "lt" => Cmp::Lt,
                "le" => Cmp::Le,
                "gt" => Cmp::Gt,
                "ge" => Cmp::Ge,
                "lo" => Cmp::Lo,
                "ls" => Cmp::Ls,
                "hi" => Cmp::Hi,
                "hs" => Cmp::Hs,
                "equ" => Cmp::Equ,
                "neu" => Cmp::Neu,
                "ltu" => Cmp::Ltu,
                "leu" => Cmp::Leu,
                "gtu" => Cmp::Gtu,
                "geu" => Cmp::Geu,
                "num" => Cmp::Num,
                "nan" => Cmp::Nan,
                _ => return None,
            };
            // `setp.cmp.and.type` (a third, predicate operand) is not emitted by our kernels.
            if has("and") || has("or") || has("xor") {
                return None;
            }
            Op::Setp { cmp, ty: last_ty? }
        }
        "selp" => Op::Selp(last_ty?),
        "cvt" => {
            if types.len() < 2 {
                return None;
            }
            let rnd = mods.iter().find_map(|m| match *m {
                "rn" => Some(Rnd::Rn),
                "rz" => Some(Rnd::Rz),
                "rm" => Some(Rnd::Rm),
                "rp" => Some(Rnd::Rp),
                "rni" => Some(Rnd::Rni),
                "rzi" => Some(Rnd::Rzi),
                "rmi" => Some(Rnd::Rmi),
                "rpi" => Some(Rnd::Rpi),
                _ => None,
            });
            // `.relu`, `.satfinite` and directed rounding into 16-bit floats or from integers
            // are not emulated: refuse them rather than round to nearest.
            let directed = matches!(rnd, Some(Rnd::Rz | Rnd::Rm | Rnd::Rp));
            if has("relu") || has("satfinite") || (directed && (matches!(types[0], Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2) || !types[1].float())) {
                return None;
            }
            Op::Cvt { dst: types[0], src: types[1], rnd, sat: has("sat") }
        }
        // The default byte permute only (no `.f4e`, `.b4e`, `.rc8`, `.ecl`, `.ecr`, `.rc16`).
        "prmt" if mods == ["b32"] => Op::Prmt,
        "dp4a" if types.len() == 2 && types.iter().all(|t| matches!(t, Ty::U32 | Ty::S32)) => Op::Dp4a { a_signed: types[0].signed(), b_signed: types[1].signed() },
        "bfe" => Op::Bfe(last_ty?),
        "bfi" => Op::Bfi(last_ty?),
        "shfl" => Op::Shfl(if has("up") {
            Shfl::Up
        } else if has("down") {
            Shfl::Down
        } else if has("bfly") {
            Shfl::Bfly
        } else if has("idx") {
            Shfl::Idx
        } else {
            return None;
        }),
        "bra" => Op::Bra,
        "ret" | "exit" => Op::Exit,
        // A whole-block barrier (`bar.sync 0`, `barrier.sync`); not `bar.warp.sync` or `arrive`.
        "bar" | "barrier" if !has("warp") && !has("arrive") && !has("red") && (has("sync") || mods.is_empty()) => Op::Bar,
        "membar" | "fence" => Op::Nop,
        "prefetch" if !has("tensormap") => Op::Nop,
        "griddepcontrol" if has("wait") => Op::GridDepWait,
        "griddepcontrol" if has("launch_dependents") => Op::Nop,
        "cp" if has("async") && (has("commit_group") || has("wait_group") || has("wait_all")) => Op::Nop,
        "cp" if has("async") && (has("ca") || has("cg")) && has("shared") && has("global") => Op::CpAsync { bytes: 0 },
        "atom" | "red" => {
            let op = mods.iter().find_map(|m| match *m {
                "add" => Some(AtomOp::Add),
                "min" => Some(AtomOp::Min),
                "max" => Some(AtomOp::Max),
                "inc" => Some(AtomOp::Inc),
                "dec" => Some(AtomOp::Dec),
                "and" => Some(AtomOp::And),
                "or" => Some(AtomOp::Or),
                "xor" => Some(AtomOp::Xor),
                "exch" => Some(AtomOp::Exch),
                "cas" => Some(AtomOp::Cas),
                _ => None,
            })?;
            Op::Atom { space: space(), op, ty: last_ty?, red: base == "red" }
        }
        "ldmatrix" if has("m8n8") && has("b16") => Op::Ldmatrix {
            count: if has("x4") {
                4
            } else if has("x2") {
                2
            } else {
                1
            },
            trans: has("trans"),
        },
        "mma" if has("sync") && has("row") && has("col") => {
            let k = if has("m16n8k16") {
                16
            } else if has("m16n8k8") {
                8
            } else {
                return None;
            };
            // f32 accumulators only (what our kernels use).
            if types.len() != 4 || types[0] != Ty::F32 || types[3] != Ty::F32 || types[1] != types[2] {
                return None;
            }
            Op::Mma { k, d: types[0], ab: types[1], c: types[3] }
        }
        "wgmma" if has("fence") || has("commit_group") || has("wait_group") => Op::Nop,
        "wgmma" if has("mma_async") => {
            let shape = mods.iter().find(|m| m.starts_with("m64n"))?;
            let (n, k) = shape.trim_start_matches("m64n").split_once('k')?;
            if types.len() < 3 || types[0] != Ty::F32 {
                return None;
            }
            Op::Wgmma { n: n.parse().ok()?, k: k.parse().ok()?, ab: types[1] }
        }
        _ => return None,
    })
}

/// Parses a PTX module. Module-level `.global`/`.const` variables are placed by `alloc`
/// (their initial bytes and alignment in, a device address out).
pub fn parse(src: &str, alloc: &mut dyn FnMut(&[u8], usize) -> u64) -> Result<Module, PtxError> {
    let stmts = statements(src);
    let mut module = Module::default();
    let mut globals: HashMap<String, u64> = HashMap::new();
    // Module-level shared declarations: (name, align, bytes); `bytes == 0` is `extern`.
    let mut module_shared: Vec<(String, usize, usize)> = Vec::new();
    let mut i = 0;
    while i < stmts.len() {
        let s = &stmts[i];
        let t = s.text.as_str();
        if t.starts_with(".version") || t.starts_with(".target") || t.starts_with(".address_size") || t.starts_with(".file") {
            i += 1;
            continue;
        }
        if (t.starts_with(".shared") || t.starts_with(".extern .shared")) && !t.contains('(') {
            let (align, name, bytes) = parse_array_decl(t.trim_start_matches(".extern").trim().trim_start_matches(".shared")).ok_or_else(|| PtxError { line: s.line, msg: format!("unsupported declaration: {t}") })?;
            module_shared.push((name, align, bytes));
            i += 1;
            continue;
        }
        if t.contains(".entry") {
            let (kernel, next) = parse_entry(&stmts, i, &module_shared, &globals)?;
            module.kernels.insert(kernel.name.clone(), std::sync::Arc::new(kernel));
            i = next;
            continue;
        }
        if t.contains(".func") {
            return Err(PtxError { line: s.line, msg: "device functions (.func) are not supported".into() });
        }
        if t.starts_with(".global") || t.starts_with(".const") || t.starts_with(".visible .global") || t.starts_with(".visible .const") {
            let (name, align, bytes) = global_decl(t).ok_or_else(|| PtxError { line: s.line, msg: format!("unsupported variable declaration: {t}") })?;
            let addr = alloc(&bytes, align);
            globals.insert(name, addr);
            i += 1;
            continue;
        }
        return Err(PtxError { line: s.line, msg: format!("unexpected statement: {t}") });
    }
    Ok(module)
}

/// `.global .align 4 .b8 name[24] = {1, 2, ...}` (or without an initializer: zeros).
fn global_decl(t: &str) -> Option<(String, usize, Vec<u8>)> {
    let (decl, init) = match t.split_once('=') {
        Some((d, i)) => (d, Some(i)),
        None => (t, None),
    };
    let decl = decl.trim().trim_start_matches(".visible").trim();
    let decl = decl.trim_start_matches(".global").trim_start_matches(".const").trim();
    let elem = decl.split_whitespace().filter_map(|w| w.strip_prefix('.').and_then(Ty::parse)).next_back().map(|t| (t.bits() as usize / 8).max(1))?;
    let (align, name, bytes) = parse_array_decl(decl)?;
    let mut data = vec![0u8; bytes];
    if let Some(init) = init {
        let body = init.trim().trim_start_matches('{').trim_end_matches('}');
        for (k, v) in body.split(',').map(str::trim).filter(|v| !v.is_empty()).enumerate() {
            let raw = parse_imm(v)?;
            let at = k * elem;
            data.get_mut(at..at + elem)?.copy_from_slice(&raw.to_le_bytes()[..elem]);
        }
    }
    Some((name, align.max(1), data))
}

fn parse_entry(stmts: &[Stmt], start: usize, module_shared: &[(String, usize, usize)], module_globals: &HashMap<String, u64>) -> Result<(Kernel, usize), PtxError> {
    let head = &stmts[start];
    let t = head.text.as_str();
    let name_start = t.find(".entry").unwrap() + ".entry".len();
    let after = t[name_start..].trim();
    let (name, params_text) = after.split_once('(').ok_or_else(|| PtxError { line: head.line, msg: "entry without parameters".into() })?;
    let params_text = params_text.rsplit_once(')').map(|(p, _)| p).unwrap_or(params_text);
    let mut params = Vec::new();
    let mut offset = 0;
    for p in params_text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let words: Vec<&str> = p.split_whitespace().collect();
        let mut size = 0;
        let mut align = 0;
        let mut pname = "";
        let mut j = 0;
        while j < words.len() {
            match words[j] {
                ".param" | ".ptr" | ".global" | ".shared" => {}
                ".align" => {
                    align = words.get(j + 1).and_then(|a| a.parse().ok()).unwrap_or(0);
                    j += 1;
                }
                w if w.starts_with('.') => {
                    if let Some(ty) = Ty::parse(&w[1..]) {
                        size = (ty.bits() as usize / 8).max(1);
                    }
                }
                w => pname = w,
            }
            j += 1;
        }
        let (pname, size) = match pname.split_once('[') {
            Some((n, c)) => (n, size * c.trim_end_matches(']').parse::<usize>().unwrap_or(1)),
            None => (pname, size),
        };
        // A pointer's `.align` is the pointee's; the parameter itself aligns to its size.
        let a = if p.contains(".ptr") { size } else { align.max(size) }.max(1);
        offset = usize::next_multiple_of(offset, a);
        params.push(Param { name: pname.to_string(), offset, size });
        offset += size;
    }
    let mut b = KernelBuilder {
        regs: HashMap::new(),
        reg_bits: Vec::new(),
        labels: HashMap::new(),
        fixups: Vec::new(),
        syms: Symbols::default(),
        module_shared,
        module_globals,
        static_shared: 0,
        local_bytes: 0,
        extern_shared: None,
        insts: Vec::new(),
    };
    for p in &params {
        b.syms.params.insert(p.name.clone(), p.offset);
    }
    for (n, align, bytes) in b.module_shared {
        if *bytes == 0 {
            b.extern_shared = Some((n.clone(), *align));
        } else {
            b.place_shared(n.clone(), *align, *bytes);
        }
    }
    // Skip directives until the body opens.
    let mut i = start + 1;
    while i < stmts.len() && stmts[i].text != "{" {
        i += 1;
    }
    if i >= stmts.len() {
        return Err(PtxError { line: head.line, msg: format!("entry {} has no body", name.trim()) });
    }
    let mut depth = 0;
    let mut body_end = None;
    // First pass: declarations (so operands resolve whatever their order).
    for (k, s) in stmts.iter().enumerate().skip(i) {
        match s.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth -= 1;
                if depth == 0 {
                    body_end = Some(k);
                    break;
                }
            }
            t if t.starts_with(".reg") => b.declare_regs(t, s.line)?,
            t if t.starts_with(".shared") => b.declare_space(&t[".shared".len()..], s.line, false)?,
            t if t.starts_with(".local") => b.declare_space(&t[".local".len()..], s.line, true)?,
            _ => {}
        }
    }
    let body_end = body_end.ok_or_else(|| PtxError { line: head.line, msg: format!("the body of entry {} is not closed", name.trim()) })?;
    // Dynamic shared memory (the module's `extern` array) starts after the static.
    let align = b.extern_shared.as_ref().map_or(16, |(_, a)| (*a).max(16));
    let dyn_off = b.static_shared.next_multiple_of(align);
    if let Some((n, _)) = &b.extern_shared {
        b.syms.shared.insert(n.clone(), dyn_off);
    }
    for s in &stmts[i + 1..body_end] {
        let t = s.text.as_str();
        if t == "{" || t == "}" || t.starts_with(".reg") || t.starts_with(".shared") || t.starts_with(".local") || t.starts_with(".pragma") {
            continue;
        }
        if let Some(l) = t.strip_suffix(':') {
            b.labels.insert(l.to_string(), b.insts.len());
            continue;
        }
        b.instruction(t, s.line)?;
    }
    for (inst, arg, label, line) in std::mem::take(&mut b.fixups) {
        let target = *b.labels.get(&label).ok_or_else(|| PtxError { line, msg: format!("unknown label or symbol `{label}`") })?;
        b.insts[inst].args[arg] = Opnd::Label(target);
    }
    let carry_reg = b.reg_bits.len() as u32;
    b.reg_bits.push(1);
    let kernel = Kernel {
        carry_reg,
        name: name.trim().to_string(),
        params,
        reg_bits: b.reg_bits,
        insts: b.insts,
        static_shared: b.static_shared,
        dyn_shared_offset: dyn_off,
        local_bytes: b.local_bytes,
        reconverge: Vec::new(),
    };
    let reconverge = reconvergence_points(&kernel.insts);
    Ok((Kernel { reconverge, ..kernel }, body_end + 1))
}

/// Where lanes that diverge at each branch meet again: the first instruction of the
/// branch block's immediate post-dominator in the control-flow graph.
fn reconvergence_points(insts: &[Inst]) -> Vec<u32> {
    let n = insts.len();
    let target = |i: &Inst| match i.args.first() {
        Some(Opnd::Label(t)) => Some(*t),
        _ => None,
    };
    // Basic blocks.
    let mut leader = vec![false; n + 1];
    leader[0] = true;
    for (pc, i) in insts.iter().enumerate() {
        if matches!(i.op, Op::Bra | Op::Exit) {
            leader[pc + 1] = true;
            if let (Op::Bra, Some(t)) = (&i.op, target(i)) {
                leader[t] = true;
            }
        }
    }
    let starts: Vec<usize> = (0..n).filter(|&p| leader[p]).collect();
    let nb = starts.len();
    let mut block_of = vec![0usize; n];
    for (b, &s) in starts.iter().enumerate() {
        let e = starts.get(b + 1).copied().unwrap_or(n);
        block_of[s..e].iter_mut().for_each(|x| *x = b);
    }
    // Successors; `nb` is the exit.
    let exit = nb;
    let succ: Vec<Vec<usize>> = (0..nb)
        .map(|b| {
            let last = starts.get(b + 1).copied().unwrap_or(n) - 1;
            let i = &insts[last];
            let next = if last + 1 < n { block_of[last + 1] } else { exit };
            match (&i.op, i.guard.is_some()) {
                (Op::Bra, g) => {
                    let t = target(i).map(|t| if t < n { block_of[t] } else { exit }).unwrap_or(exit);
                    if g {
                        vec![t, next]
                    } else {
                        vec![t]
                    }
                }
                (Op::Exit, false) => vec![exit],
                _ => vec![next],
            }
        })
        .collect();
    // Post-dominator sets as bitsets, by iteration to a fixed point. A block that ends the
    // kernel early (an unguarded `ret` other than the last one; a guarded `@p ret` already
    // has no exit edge above) keeps the full set, so it does not pull a branch's meeting
    // point down to the kernel's end: in `if (c) { if (d) return; X } Y` the lanes meet at
    // Y, as warp-wide instructions there need.
    let ends = |b: usize| {
        let last = starts.get(b + 1).copied().unwrap_or(n) - 1;
        insts[last].op == Op::Exit && insts[last].guard.is_none()
    };
    let final_exit = (0..nb).rev().find(|&b| ends(b));
    let early = |b: usize| ends(b) && Some(b) != final_exit;
    let words = (nb + 1).div_ceil(64);
    let full = vec![u64::MAX; words];
    let mut pdom = vec![full; nb + 1];
    pdom[exit] = vec![0; words];
    pdom[exit][exit / 64] |= 1 << (exit % 64);
    let mut changed = true;
    while changed {
        changed = false;
        for b in (0..nb).rev() {
            if early(b) {
                continue;
            }
            let mut s = vec![u64::MAX; words];
            for &x in &succ[b] {
                for (w, v) in s.iter_mut().zip(&pdom[x]) {
                    *w &= v;
                }
            }
            s[b / 64] |= 1 << (b % 64);
            if s != pdom[b] {
                pdom[b] = s;
                changed = true;
            }
        }
    }
    let count = |s: &Vec<u64>| s.iter().map(|w| w.count_ones()).sum::<u32>();
    let mut out = vec![u32::MAX; n];
    for (pc, i) in insts.iter().enumerate() {
        if i.op != Op::Bra {
            continue;
        }
        let b = block_of[pc];
        if pdom[b].iter().all(|w| *w == u64::MAX) {
            continue; // every path ends early: the sides run to their ends
        }
        let want = count(&pdom[b]) - 1;
        // The strict post-dominator that all the others post-dominate.
        let ipdom = (0..=nb).find(|&p| p != b && pdom[b][p / 64] & (1 << (p % 64)) != 0 && count(&pdom[p]) == want);
        out[pc] = match ipdom {
            Some(p) if p < nb => starts[p] as u32,
            _ => u32::MAX,
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = r#"
//
// Generated by LLVM NVPTX Back-End
//
.version 8.0
.target sm_80
.address_size 64
.extern .shared .align 16 .b8 max_smem[];
.visible .entry k(
	.param .u64 .ptr .align 1 k_param_0,
	.param .u32 k_param_1
)
.maxntid 256, 1, 1
{
	.reg .pred 	%p<2>;
	.reg .b32 	%r<4>;
	.reg .b64 	%rd<3>;
	.shared .align 4 .b8 __wg_x[64];
	ld.param.b64 	%rd1, [k_param_0];
	ld.param.b32 	%r1, [k_param_1];
	mov.u32 	%r2, %tid.x;
	setp.ge.u32 	%p1, %r2, %r1;
	@%p1 bra 	$L__BB0_2;
	cvta.to.global.u64 	%rd2, %rd1;
	st.global.v2.b32 	[%rd2+8], {%r1, %r2};
	mov.u64 	%rd1, __wg_x;
$L__BB0_2:
	ret;
}
"#;

    #[test]
    fn parses_an_entry() {
        let m = parse(SRC, &mut |_, _| 0).unwrap();
        let k = &m.kernels["k"];
        assert_eq!(k.params, vec![Param { name: "k_param_0".into(), offset: 0, size: 8 }, Param { name: "k_param_1".into(), offset: 8, size: 4 }]);
        assert_eq!(k.insts.len(), 9);
        assert_eq!(k.insts[4].guard, Some((1, false)));
        assert_eq!(k.insts[4].args, vec![Opnd::Label(8)]);
        assert_eq!(k.insts[1].args[1], Opnd::Addr { base: None, off: 8, space_hint: Some(Space::Param) });
        assert_eq!(k.insts[6].op, Op::St { space: Space::Global, ty: Ty::B32, vec: 2 });
        // `__wg_x` (`.align 4`) is placed off a 16-byte boundary, at 4.
        assert_eq!(k.static_shared, 68);
        assert_eq!(k.dyn_shared_offset, 80);
        assert_eq!(k.insts[7].args[1], Opnd::Imm(4));
    }

    #[test]
    fn refuses_unknown_instructions_with_their_line() {
        let bad = SRC.replace("ret;", "frobnicate.b32 %r1;");
        let e = parse(&bad, &mut |_, _| 0).unwrap_err();
        assert!(e.msg.contains("frobnicate.b32"), "{e}");
        assert_eq!(e.line, 28);
    }

    #[test]
    fn malformed_or_unemulated_ptx_is_an_error() {
        for (bad, why) in [
            ("add.s32 %r1, %r2;", "operands"),
            ("ld.global.v4.b64 {%rd1, %rd2, %rd1, %rd2}, [%rd1];", "unsupported instruction"),
            ("prmt.b32.f4e %r1, %r1, %r1, %r1;", "unsupported instruction"),
            ("bar.sync 1, 64;", "operands"),
            ("cvt.rz.f16.f32 %r1, %r1;", "unsupported instruction"),
        ] {
            let e = parse(&SRC.replace("ret;", bad), &mut |_, _| 0).unwrap_err();
            assert!(e.msg.contains(why), "{bad}: {e}");
        }
        // Truncated text: an entry without its closing brace.
        let cut = &SRC[..SRC.rfind('}').unwrap()];
        assert!(parse(cut, &mut |_, _| 0).unwrap_err().msg.contains("not closed"));
        assert!(decode("mma.sync.aligned.m16n8k16.row.col.f16.f16.f16.f16").is_none());
    }

    #[test]
    fn declarations_of_scalars_and_arrays() {
        assert_eq!(parse_array_decl(".align 4 .u32 __wg_flag"), Some((4, "__wg_flag".into(), 4)));
        assert_eq!(parse_array_decl(".u64 x"), Some((8, "x".into(), 8)));
        assert_eq!(parse_array_decl(".align 16 .b8 buf[48]"), Some((16, "buf".into(), 48)));
        assert_eq!(parse_array_decl(".align 16 .b8 dyn[]"), Some((16, "dyn".into(), 0)));
        assert_eq!(global_decl(".global .align 4 .b8 n[8] = {1, 0, 0, 0, 2}"), Some(("n".into(), 4, vec![1, 0, 0, 0, 2, 0, 0, 0])));
        assert_eq!(global_decl(".global .align 4 .u32 one"), Some(("one".into(), 4, vec![0; 4])));
    }

    #[test]
    fn decodes_opcodes() {
        assert_eq!(decode("ld.global.nc.v4.b32"), Some(Op::Ld { space: Space::Global, ty: Ty::B32, vec: 4 }));
        assert_eq!(decode("cvt.rn.f16x2.f32"), Some(Op::Cvt { dst: Ty::F16x2, src: Ty::F32, rnd: Some(Rnd::Rn), sat: false }));
        assert_eq!(decode("max.NaN.f32"), Some(Op::Bin { op: Bin::MaxNan, ty: Ty::F32, sat: false }));
        assert_eq!(decode("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32"), Some(Op::Mma { k: 16, ab: Ty::Bf16, c: Ty::F32, d: Ty::F32 }));
        assert_eq!(decode("wgmma.mma_async.sync.aligned.m64n256k16.f32.f16.f16"), Some(Op::Wgmma { n: 256, k: 16, ab: Ty::F16 }));
        assert_eq!(decode("cp.async.cg.shared.global"), Some(Op::CpAsync { bytes: 0 }));
        assert_eq!(decode("dp4a.u32.s32"), Some(Op::Dp4a { a_signed: false, b_signed: true }));
        assert_eq!(decode("dp4a.s32.s32"), Some(Op::Dp4a { a_signed: true, b_signed: true }));
        assert_eq!(decode("dp4a.s32.f32"), None);
        assert_eq!(decode("frob.b32"), None);
    }
}
