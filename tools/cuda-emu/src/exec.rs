//! The interpreter: runs one kernel launch, block after block, each block's warps in turn.
//!
//! A warp runs its lanes in lockstep. Where a branch sends them apart, each side runs in
//! turn until it reaches the branch's reconvergence point (the immediate post-dominator,
//! [`Kernel::reconverge`]), where they go on together (a per-warp stack of such entries), as
//! warp-wide instructions (`shfl`, `ldmatrix`, `mma`, `wgmma`) need. A warp runs until it
//! exits or waits at `bar.sync`; when every warp of the block waits, all go on. Blocks run
//! one at a time, so `cp.async` copies at once and fences have nothing to order. A launch
//! stops after [`STEP_LIMIT`] warp instructions (a kernel waiting for another block to set
//! a flag would otherwise spin forever).
//!
//! Every global access is checked against the live device allocations: a kernel reading
//! or writing outside them stops with the instruction's PTX line, as `compute-sanitizer`
//! would report it on a GPU.

use crate::ptx::{AtomOp, Bin, CarryOp, Cmp, Inst, Kernel, Op, Opnd, Rnd, Shfl, Space, Special, Ty, Un};
use crate::tensor_core;
use half::{bf16, f16};

/// Generic addresses of shared memory start here (the host's addresses are far below).
pub const SHARED_WINDOW: u64 = 0xF000_0000_0000_0000;
/// Generic addresses of the current thread's local memory.
pub const LOCAL_WINDOW: u64 = 0xE000_0000_0000_0000;
const WINDOW_SIZE: u64 = 1 << 40;

/// Warp instructions one launch may run (`MAX_CUDA_EMU_STEP_LIMIT` overrides): about half
/// an hour of emulation.
pub const STEP_LIMIT: u64 = 200_000_000_000;

fn step_limit() -> u64 {
    std::env::var("MAX_CUDA_EMU_STEP_LIMIT").ok().and_then(|v| v.parse().ok()).unwrap_or(STEP_LIMIT)
}

/// Device memory: the live allocations as `[start, end)` ranges, sorted (the driver's
/// allocation table, which kernels' accesses are checked against).
#[derive(Default)]
pub struct Memory {
    pub ranges: Vec<(u64, u64)>,
    /// Allocations (by start) that kernels wrote since the stream last ran anything but a
    /// programmatic dependent launch: what such a launch may not read before its
    /// `griddepcontrol.wait`, since on a GPU the kernels before it may still be writing
    /// them.
    pub in_flight_writes: std::cell::RefCell<std::collections::HashSet<u64>>,
}

impl Memory {
    /// Records an allocation.
    pub fn insert(&mut self, start: u64, end: u64) {
        let i = self.ranges.partition_point(|&(s, _)| s < start);
        self.ranges.insert(i, (start, end));
    }

    /// Forgets the allocation starting at `start`, returning its end.
    pub fn remove(&mut self, start: u64) -> Option<u64> {
        let i = self.ranges.binary_search_by_key(&start, |&(s, _)| s).ok()?;
        Some(self.ranges.remove(i).1)
    }

    /// The start of the allocation `[addr, addr + len)` lies inside, if one holds it all.
    pub fn allocation(&self, addr: u64, len: u64) -> Option<u64> {
        let i = self.ranges.partition_point(|&(s, _)| s <= addr);
        let (s, e) = *self.ranges.get(i.checked_sub(1)?)?;
        addr.checked_add(len).is_some_and(|end| end <= e).then_some(s)
    }

    /// Whether `[addr, addr + len)` lies inside one allocation.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        self.allocation(addr, len).is_some()
    }
}

/// Why a launch stopped.
#[derive(Debug, Clone)]
pub struct Fault {
    pub kernel: String,
    pub line: usize,
    pub msg: String,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "kernel {} (PTX line {}): {}", self.kernel, self.line, self.msg)
    }
}

/// One kernel launch.
pub struct Launch<'a> {
    pub kernel: &'a Kernel,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    /// Dynamic shared memory (the caller has checked it against the chip's limit).
    pub dyn_shared: usize,
    /// The parameter buffer, laid out as the kernel's `.param`s.
    pub params: &'a [u8],
    pub mem: &'a Memory,
    /// Launched as a programmatic dependent (`cuLaunchKernelEx` with programmatic stream
    /// serialization): on a GPU it may start while the kernels before it still run, so
    /// before a lane executes `griddepcontrol.wait` it may not store to global memory nor
    /// read what those kernels wrote ([`Memory::in_flight_writes`]), and some lane of the
    /// grid must wait (else the kernels after it could overtake the ones before it).
    pub programmatic: bool,
}

/// An entry of a warp's reconvergence stack: lanes `mask` run from `pc` until they reach
/// `rpc`, where the entry below (the lanes that split there) takes over.
#[derive(Clone, Copy)]
struct Entry {
    pc: u32,
    rpc: u32,
    mask: u32,
}

/// A warp's state: registers `[reg][lane]`, reconvergence stack, local memory.
pub(crate) struct Warp {
    pub(crate) regs: Vec<u64>,
    stack: Vec<Entry>,
    /// Lanes that have not exited.
    alive: u32,
    /// Waiting at `bar.sync`.
    at_bar: bool,
    /// Lanes past `griddepcontrol.wait`.
    waited: u32,
    /// Index of the warp in its block.
    pub(crate) id: u32,
    /// Linear thread id of lane 0.
    first_thread: u32,
    local: Vec<u8>,
}

pub(crate) struct Ctx<'a> {
    pub(crate) k: &'a Kernel,
    pub(crate) launch: &'a Launch<'a>,
    pub(crate) shared: Vec<u8>,
    ctaid: [u32; 3],
    pub(crate) line: usize,
    /// Warp instructions run by this launch so far, and the most allowed.
    steps: u64,
    max_steps: u64,
    /// Bytes of global memory the lanes have read and written in this launch.
    read: std::cell::Cell<u64>,
    written: u64,
    /// Whether a lane of the launch executed `griddepcontrol.wait`.
    waited: bool,
    /// Allocations (by start) this launch stored to.
    stored_to: std::collections::HashSet<u64>,
}

/// What a launch did, counted by the interpreter: a measure of work that does not depend
/// on the machine (`MAX_CUDA_EMU_PROFILE=1` prints it per launch). Tensor-core
/// instructions count as one warp instruction each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Warp instructions issued (a divergent branch's sides count apart).
    pub warp_insts: u64,
    /// The most warp instructions one block issued: the launch's longest block.
    pub max_block_insts: u64,
    /// Bytes of global memory read by the lanes (`cp.async` included).
    pub global_read: u64,
    /// Bytes of global memory written by the lanes.
    pub global_written: u64,
}

type R<T> = Result<T, String>;

/// Runs a launch to the end; what it did, counted.
pub fn run(l: &Launch) -> Result<Counts, Fault> {
    let k = l.kernel;
    let threads = l.block[0] as usize * l.block[1] as usize * l.block[2] as usize;
    if threads == 0 || threads > 1024 {
        return Err(Fault { kernel: k.name.clone(), line: 0, msg: format!("block of {threads} threads (1 to 1024 allowed)") });
    }
    // The driver has checked the size against the chip's limit.
    let smem = k.dyn_shared_offset + l.dyn_shared;
    let nwarps = threads.div_ceil(32);
    let max_steps = step_limit();
    let mut steps = 0u64;
    let mut counts = Counts::default();
    let (mut waited, mut stored_to) = (false, std::collections::HashSet::new());
    for z in 0..l.grid[2] {
        for y in 0..l.grid[1] {
            for x in 0..l.grid[0] {
                let mut ctx = Ctx { k, launch: l, shared: vec![0; smem], ctaid: [x, y, z], line: 0, steps, max_steps, read: Default::default(), written: 0, waited: false, stored_to: Default::default() };
                let mut warps: Vec<Warp> = (0..nwarps)
                    .map(|w| {
                        let lanes = (threads - w * 32).min(32);
                        let mask = if lanes == 32 { u32::MAX } else { (1u32 << lanes) - 1 };
                        Warp {
                            regs: vec![0; k.reg_bits.len() * 32],
                            stack: vec![Entry { pc: 0, rpc: u32::MAX, mask }],
                            alive: mask,
                            at_bar: false,
                            waited: 0,
                            id: w as u32,
                            first_thread: (w * 32) as u32,
                            local: vec![0; k.local_bytes * 32],
                        }
                    })
                    .collect();
                loop {
                    for w in warps.iter_mut() {
                        ctx.run_warp(w).map_err(|msg| Fault { kernel: k.name.clone(), line: ctx.line, msg: format!("{msg} (block {x},{y},{z}, warp {})", w.id) })?;
                    }
                    // Every warp has exited or waits at the barrier: release it.
                    let mut waiting = false;
                    for w in warps.iter_mut() {
                        waiting |= w.at_bar;
                        w.at_bar = false;
                    }
                    if !waiting {
                        break;
                    }
                }
                counts.max_block_insts = counts.max_block_insts.max(ctx.steps - steps);
                counts.global_read += ctx.read.get();
                counts.global_written += ctx.written;
                steps = ctx.steps;
                waited |= ctx.waited;
                stored_to.extend(ctx.stored_to);
            }
        }
    }
    if l.programmatic && !waited {
        return Err(Fault { kernel: k.name.clone(), line: 0, msg: "launched as a programmatic dependent, but no thread executed griddepcontrol.wait: the kernels after it could start before the ones before it finish".into() });
    }
    l.mem.in_flight_writes.borrow_mut().extend(stored_to);
    counts.warp_insts = steps;
    Ok(counts)
}

/// The registers of a load's or store's value operand: `{a, b, ..}` or one register; `vec`
/// is the instruction's vector width.
fn registers(o: &Opnd, vec: u8) -> R<&[Opnd]> {
    let regs = match o {
        Opnd::Vec(v) => v.as_slice(),
        o => std::slice::from_ref(o),
    };
    if regs.len() != vec as usize {
        return Err(format!("a .v{vec} access with {} registers", regs.len()));
    }
    Ok(regs)
}

fn mask_bits(v: u64, bits: u32) -> u64 {
    if bits >= 64 {
        v
    } else {
        v & ((1u64 << bits) - 1)
    }
}

fn sext(v: u64, bits: u32) -> i64 {
    if bits >= 64 {
        v as i64
    } else {
        let s = 64 - bits;
        ((v << s) as i64) >> s
    }
}

/// A float operand's value (any float type) as f64.
fn fval(v: u64, ty: Ty) -> f64 {
    match ty {
        Ty::F32 | Ty::Tf32 => f32::from_bits(v as u32) as f64,
        Ty::F64 => f64::from_bits(v),
        Ty::F16 => f16::from_bits(v as u16).to_f64(),
        Ty::Bf16 => bf16::from_bits(v as u16).to_f64(),
        _ => f32::from_bits(v as u32) as f64,
    }
}

/// `x` rounded to nearest into `ty`, as bits.
fn fbits(x: f64, ty: Ty) -> u64 {
    match ty {
        Ty::F32 | Ty::Tf32 => (x as f32).to_bits() as u64,
        Ty::F64 => x.to_bits(),
        Ty::F16 => f16::from_f64(x).to_bits() as u64,
        Ty::Bf16 => bf16::from_f64(x).to_bits() as u64,
        _ => (x as f32).to_bits() as u64,
    }
}

fn half_ty(ty: Ty) -> Ty {
    match ty {
        Ty::F16x2 => Ty::F16,
        Ty::Bf16x2 => Ty::Bf16,
        t => t,
    }
}

/// Applies a float function per element (each half of an `x2` type).
fn per_half(ty: Ty, a: u64, b: u64, c: u64, f: impl Fn(f64, f64, f64) -> f64) -> u64 {
    if matches!(ty, Ty::F16x2 | Ty::Bf16x2) {
        let h = half_ty(ty);
        let lo = fbits(f(fval(a & 0xffff, h), fval(b & 0xffff, h), fval(c & 0xffff, h)), h);
        let hi = fbits(f(fval((a >> 16) & 0xffff, h), fval((b >> 16) & 0xffff, h), fval((c >> 16) & 0xffff, h)), h);
        (hi << 16) | lo
    } else if ty == Ty::F32 {
        // f32 arithmetic in f32 itself (f64 then rounding could round twice for fma).
        let r = f(f32::from_bits(a as u32) as f64, f32::from_bits(b as u32) as f64, f32::from_bits(c as u32) as f64);
        (r as f32).to_bits() as u64
    } else {
        fbits(f(fval(a, ty), fval(b, ty), fval(c, ty)), ty)
    }
}

/// `.sat`: clamped to [0, 1], NaN to 0.
fn sat01(x: f64) -> f64 {
    if x.is_nan() {
        0.0
    } else {
        x.clamp(0.0, 1.0)
    }
}

/// The sign bit(s) of a float type (both halves of an `x2` type).
fn sign_mask(ty: Ty) -> u64 {
    if matches!(ty, Ty::F16x2 | Ty::Bf16x2) {
        0x8000_8000
    } else {
        1u64 << (ty.bits() - 1)
    }
}

/// Little-endian bytes as an integer.
fn le_value(bytes: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    raw[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(raw)
}

fn f32_op(op: Bin, a: f64, b: f64) -> f64 {
    match op {
        Bin::Add => a + b,
        Bin::Sub => a - b,
        Bin::MulLo | Bin::MulHi | Bin::MulWide => a * b,
        Bin::Div => a / b,
        Bin::Min => a.min(b),
        Bin::Max => a.max(b),
        Bin::MinNan => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.min(b)
            }
        }
        Bin::MaxNan => {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        }
        Bin::Copysign => b.copysign(a),
        _ => f64::NAN,
    }
}

fn int_bin(op: Bin, ty: Ty, a: u64, b: u64, sat: bool) -> R<u64> {
    let n = ty.bits();
    let s = ty.signed();
    let (sa, sb) = (sext(a, n), sext(b, n));
    let (ua, ub) = (mask_bits(a, n), mask_bits(b, n));
    Ok(match op {
        Bin::Add if sat && s => (sa as i128 + sb as i128).clamp(i32::MIN as i128, i32::MAX as i128) as u64,
        Bin::Sub if sat && s => (sa as i128 - sb as i128).clamp(i32::MIN as i128, i32::MAX as i128) as u64,
        Bin::Add => ua.wrapping_add(ub),
        Bin::Sub => ua.wrapping_sub(ub),
        Bin::MulLo => ua.wrapping_mul(ub),
        Bin::MulHi => {
            if s {
                ((sa as i128 * sb as i128) >> n) as u64
            } else {
                ((ua as u128 * ub as u128) >> n) as u64
            }
        }
        Bin::MulWide => {
            if s {
                (sa as i128 * sb as i128) as u64
            } else {
                (ua as u128 * ub as u128) as u64
            }
        }
        Bin::Div => {
            if s {
                if sb == 0 {
                    u64::MAX
                } else {
                    sa.wrapping_div(sb) as u64
                }
            } else {
                // Division by zero is undefined in PTX; all ones, as the GPU gives.
                ua.checked_div(ub).unwrap_or(u64::MAX)
            }
        }
        Bin::Rem => {
            if s {
                if sb == 0 {
                    ua
                } else {
                    sa.wrapping_rem(sb) as u64
                }
            } else if ub == 0 {
                ua
            } else {
                ua % ub
            }
        }
        Bin::Min | Bin::MinNan => {
            if s {
                sa.min(sb) as u64
            } else {
                ua.min(ub)
            }
        }
        Bin::Max | Bin::MaxNan => {
            if s {
                sa.max(sb) as u64
            } else {
                ua.max(ub)
            }
        }
        Bin::And => a & b,
        Bin::Or => a | b,
        Bin::Xor => a ^ b,
        Bin::Shl => {
            let sh = mask_bits(b, 32);
            if sh >= n as u64 {
                0
            } else {
                ua << sh
            }
        }
        Bin::Shr => {
            let sh = mask_bits(b, 32).min(n as u64 - 1 + if s { 0 } else { 1 });
            if s {
                (sa >> sh.min(63)) as u64
            } else if sh >= n as u64 {
                0
            } else {
                ua >> sh
            }
        }
        Bin::Copysign => return Err("copysign of an integer type".into()),
    })
}

fn compare(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty.float() {
        let (x, y) = (fval(a, ty), fval(b, ty));
        let unordered = x.is_nan() || y.is_nan();
        return match cmp {
            Cmp::Eq => !unordered && x == y,
            Cmp::Ne => !unordered && x != y,
            Cmp::Lt | Cmp::Lo => !unordered && x < y,
            Cmp::Le | Cmp::Ls => !unordered && x <= y,
            Cmp::Gt | Cmp::Hi => !unordered && x > y,
            Cmp::Ge | Cmp::Hs => !unordered && x >= y,
            Cmp::Equ => unordered || x == y,
            Cmp::Neu => unordered || x != y,
            Cmp::Ltu => unordered || x < y,
            Cmp::Leu => unordered || x <= y,
            Cmp::Gtu => unordered || x > y,
            Cmp::Geu => unordered || x >= y,
            Cmp::Num => !unordered,
            Cmp::Nan => unordered,
        };
    }
    use std::cmp::Ordering::{Equal, Greater, Less};
    let n = ty.bits();
    let (ua, ub) = (mask_bits(a, n), mask_bits(b, n));
    let unsigned = ua.cmp(&ub);
    let ord = if ty.signed() { sext(a, n).cmp(&sext(b, n)) } else { unsigned };
    match cmp {
        Cmp::Eq | Cmp::Equ => ord == Equal,
        Cmp::Ne | Cmp::Neu => ord != Equal,
        Cmp::Lt | Cmp::Ltu => ord == Less,
        Cmp::Le | Cmp::Leu => ord != Greater,
        Cmp::Gt | Cmp::Gtu => ord == Greater,
        Cmp::Ge | Cmp::Geu => ord != Less,
        Cmp::Lo => unsigned == Less,
        Cmp::Ls => unsigned != Greater,
        Cmp::Hi => unsigned == Greater,
        Cmp::Hs => unsigned != Less,
        Cmp::Num | Cmp::Nan => false,
    }
}

/// Rounds `x` to an integral value as `rnd` says (nearest-even by default).
fn round_int(x: f64, rnd: Option<Rnd>) -> f64 {
    match rnd {
        Some(Rnd::Rzi) | Some(Rnd::Rz) => x.trunc(),
        Some(Rnd::Rmi) | Some(Rnd::Rm) => x.floor(),
        Some(Rnd::Rpi) | Some(Rnd::Rp) => x.ceil(),
        _ => x.round_ties_even(),
    }
}

/// f64 to f32 with a directed rounding.
fn to_f32_dir(x: f64, rnd: Option<Rnd>) -> f32 {
    let r = x as f32;
    if x.is_nan() || r as f64 == x {
        return r;
    }
    let up = |v: f32| if v.is_infinite() && v > 0.0 { v } else { f32::from_bits(if v >= 0.0 { v.to_bits() + 1 } else { v.to_bits() - 1 }).max(f32::MIN) };
    let down = |v: f32| if v.is_infinite() && v < 0.0 { v } else if v == 0.0 { -f32::from_bits(1) } else { f32::from_bits(if v > 0.0 { v.to_bits() - 1 } else { v.to_bits() + 1 }) };
    match rnd {
        Some(Rnd::Rz) => {
            if (r as f64).abs() > x.abs() {
                if r > 0.0 {
                    down(r)
                } else {
                    up(r)
                }
            } else {
                r
            }
        }
        Some(Rnd::Rm) if (r as f64) > x => down(r),
        Some(Rnd::Rp) if (r as f64) < x => up(r),
        _ => r,
    }
}

fn cvt(dst: Ty, src: Ty, rnd: Option<Rnd>, sat: bool, v: u64) -> u64 {
    if dst == Ty::Tf32 {
        // Round an f32 to 10 mantissa bits (ties away from zero), kept in f32 layout.
        let b = v as u32;
        if f32::from_bits(b).is_finite() {
            return ((b.wrapping_add(0x1000)) & 0xffff_e000) as u64;
        }
        return b as u64;
    }
    if src.float() {
        let x = fval(v, src);
        if dst.float() {
            let x = if matches!(rnd, Some(Rnd::Rni | Rnd::Rzi | Rnd::Rmi | Rnd::Rpi)) { round_int(x, rnd) } else { x };
            let x = if sat { sat01(x) } else { x };
            return match (dst, rnd) {
                (Ty::F32, Some(Rnd::Rz | Rnd::Rm | Rnd::Rp)) => to_f32_dir(x, rnd).to_bits() as u64,
                _ => fbits(x, dst),
            };
        }
        // Float to integer: rounded, then clamped to the type (NaN is 0).
        if x.is_nan() {
            return 0;
        }
        let r = round_int(x, rnd);
        let n = dst.bits();
        return if dst.signed() {
            let (lo, hi) = (-(2f64.powi(n as i32 - 1)), 2f64.powi(n as i32 - 1) - 1.0);
            mask_bits(r.clamp(lo, hi) as i64 as u64, n)
        } else {
            let hi = 2f64.powi(n as i32) - 1.0;
            mask_bits(r.clamp(0.0, hi) as u64, n)
        };
    }
    // From an integer.
    let n = src.bits();
    let iv: i128 = if src.signed() { sext(v, n) as i128 } else { mask_bits(v, n) as i128 };
    if dst.float() {
        // One rounding, straight from the integer (through f64 a 64-bit one would round twice).
        return if dst == Ty::F32 { (iv as f32).to_bits() as u64 } else { fbits(iv as f64, dst) };
    }
    let m = dst.bits();
    if sat {
        let (lo, hi): (i128, i128) = if dst.signed() { (-(1i128 << (m - 1)), (1i128 << (m - 1)) - 1) } else { (0, (1i128 << m) - 1) };
        return mask_bits(iv.clamp(lo, hi) as u64, m);
    }
    mask_bits(iv as u64, m)
}

impl Ctx<'_> {
    fn fault<T>(&self, msg: impl Into<String>) -> R<T> {
        Err(msg.into())
    }

    fn special(&self, w: &Warp, lane: usize, s: Special) -> u64 {
        let b = self.launch.block;
        let t = w.first_thread + lane as u32;
        let tid = [t % b[0], (t / b[0]) % b[1], t / (b[0] * b[1])];
        (match s {
            Special::Tid(d) => tid[d as usize],
            Special::Ntid(d) => b[d as usize],
            Special::Ctaid(d) => self.ctaid[d as usize],
            Special::Nctaid(d) => self.launch.grid[d as usize],
            Special::LaneId => lane as u32,
            Special::WarpId => w.id,
        }) as u64
    }

    #[inline(always)]
    pub(crate) fn get(&self, w: &Warp, lane: usize, o: &Opnd) -> u64 {
        match o {
            Opnd::Reg(r) => w.regs[*r as usize * 32 + lane],
            Opnd::Imm(v) => *v,
            Opnd::Special(s) => self.special(w, lane, *s),
            _ => 0,
        }
    }

    /// Writes a destination operand (truncated to the register's width). The parser only
    /// accepts registers, `_` and register vectors there, so anything else is ignored.
    #[inline(always)]
    pub(crate) fn set(&self, w: &mut Warp, lane: usize, o: &Opnd, v: u64) {
        if let Opnd::Reg(r) = o {
            w.regs[*r as usize * 32 + lane] = mask_bits(v, self.k.reg_bits[*r as usize]);
        }
    }

    /// The address an `[..]` operand names, and the space it is in.
    pub(crate) fn address(&self, w: &Warp, lane: usize, o: &Opnd, space: Space) -> R<(Space, u64)> {
        let Opnd::Addr { base, off, space_hint } = o else { return self.fault(format!("expected an address, got {o:?}")) };
        let a = base.map(|r| w.regs[r as usize * 32 + lane]).unwrap_or(0).wrapping_add(*off as u64);
        let space = if space == Space::Generic { space_hint.unwrap_or(Space::Generic) } else { space };
        Ok(match space {
            Space::Generic if (SHARED_WINDOW..SHARED_WINDOW + WINDOW_SIZE).contains(&a) => (Space::Shared, a - SHARED_WINDOW),
            Space::Generic if (LOCAL_WINDOW..LOCAL_WINDOW + WINDOW_SIZE).contains(&a) => (Space::Local, a - LOCAL_WINDOW),
            Space::Generic => (Space::Global, a),
            s => (s, a),
        })
    }

    /// An access of `len` bytes (a power of two: a scalar, or a vector's whole width) must be
    /// aligned to `len`, as on the hardware, where a misaligned one stops the kernel with
    /// "misaligned address" and leaves the context unusable.
    fn aligned(&self, what: &str, space: Space, a: u64, len: usize) -> R<()> {
        if len.is_power_of_two() && !a.is_multiple_of(len as u64) {
            return self.fault(format!("misaligned {space:?} {what} of {len} bytes at {a:#x}"));
        }
        Ok(())
    }

    /// Reads `len` (<= 16) bytes.
    pub(crate) fn load(&self, w: &Warp, lane: usize, space: Space, a: u64, len: usize) -> R<[u8; 16]> {
        self.aligned("load", space, a, len)?;
        let mut out = [0u8; 16];
        match space {
            Space::Global => {
                let Some(start) = self.launch.mem.allocation(a, len as u64) else {
                    return self.fault(format!("global load of {len} bytes at {a:#x}, outside every device allocation"));
                };
                if self.launch.programmatic && w.waited & (1 << lane) == 0 && self.launch.mem.in_flight_writes.borrow().contains(&start) {
                    return self.fault(format!("global load at {a:#x} before griddepcontrol.wait, of memory a kernel still running before this programmatic dependent may write"));
                }
                // SAFETY: [a, a+len) lies inside a live allocation of the emulated device
                // (checked just above), which is host memory this process owns.
                unsafe { std::ptr::copy_nonoverlapping(a as *const u8, out.as_mut_ptr(), len) };
                self.read.set(self.read.get() + len as u64);
            }
            Space::Shared => {
                let s = self.shared.get(a as usize..a as usize + len).ok_or_else(|| format!("shared load of {len} bytes at {a:#x}, past the block's {} bytes", self.shared.len()))?;
                out[..len].copy_from_slice(s);
            }
            Space::Local => {
                let base = lane * self.k.local_bytes;
                let end = a as usize + len;
                if end > self.k.local_bytes {
                    return self.fault(format!("local load at {a:#x}, past {} bytes", self.k.local_bytes));
                }
                out[..len].copy_from_slice(&w.local[base + a as usize..base + end]);
            }
            Space::Param => {
                let s = self.launch.params.get(a as usize..a as usize + len).ok_or_else(|| format!("parameter load at offset {a}, past {} bytes", self.launch.params.len()))?;
                out[..len].copy_from_slice(s);
            }
            Space::Generic => unreachable!("resolved by address()"),
        }
        Ok(out)
    }

    pub(crate) fn store(&mut self, w: &mut Warp, lane: usize, space: Space, a: u64, bytes: &[u8]) -> R<()> {
        let len = bytes.len();
        self.aligned("store", space, a, len)?;
        match space {
            Space::Global => {
                let Some(start) = self.launch.mem.allocation(a, len as u64) else {
                    return self.fault(format!("global store of {len} bytes at {a:#x}, outside every device allocation"));
                };
                if self.launch.programmatic && w.waited & (1 << lane) == 0 {
                    return self.fault(format!("global store at {a:#x} before griddepcontrol.wait in a programmatic dependent: the kernels before it may still be using that memory"));
                }
                self.stored_to.insert(start);
                // SAFETY: as in `load`: the range is inside a live device allocation.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), a as *mut u8, len) };
                self.written += len as u64;
            }
            Space::Shared => {
                let n = self.shared.len();
                let s = self.shared.get_mut(a as usize..a as usize + len).ok_or_else(|| format!("shared store of {len} bytes at {a:#x}, past the block's {n} bytes"))?;
                s.copy_from_slice(bytes);
            }
            Space::Local => {
                let base = lane * self.k.local_bytes;
                if a as usize + len > self.k.local_bytes {
                    return self.fault(format!("local store at {a:#x}, past {} bytes", self.k.local_bytes));
                }
                w.local[base + a as usize..base + a as usize + len].copy_from_slice(bytes);
            }
            Space::Param | Space::Generic => return self.fault("store to parameter space"),
        }
        Ok(())
    }

    /// Runs a warp until it exits or reaches a barrier.
    fn run_warp(&mut self, w: &mut Warp) -> R<()> {
        let insts = &self.k.insts;
        while !w.at_bar {
            // Entries whose lanes all exited, or that reached their meeting point, are done.
            let Some(top) = w.stack.last().copied() else { return Ok(()) };
            let mask = top.mask & w.alive;
            if mask == 0 || top.pc == top.rpc {
                w.stack.pop();
                continue;
            }
            let pc = top.pc;
            self.steps += 1;
            if self.steps > self.max_steps {
                return self.fault(format!("still running after {} warp instructions (MAX_CUDA_EMU_STEP_LIMIT): a spinning kernel?", self.max_steps));
            }
            let Some(inst) = insts.get(pc as usize) else {
                return self.fault("ran past the end of the kernel");
            };
            self.line = inst.line;
            let mut exec = mask;
            if let Some((p, neg)) = inst.guard {
                for lane in 0..32 {
                    if exec & (1 << lane) != 0 && ((w.regs[p as usize * 32 + lane] & 1 != 0) == neg) {
                        exec &= !(1 << lane);
                    }
                }
            }
            let top = w.stack.last_mut().expect("checked above");
            top.pc = pc + 1;
            if exec == 0 {
                continue;
            }
            match &inst.op {
                Op::Bra => {
                    let Some(Opnd::Label(t)) = inst.args.first() else { return self.fault("branch without a label") };
                    let t = *t as u32;
                    if exec == mask {
                        top.pc = t;
                    } else {
                        // Lanes go apart: both sides run to the meeting point, then the
                        // whole mask goes on from there.
                        let r = self.k.reconverge[pc as usize];
                        let rpc = top.rpc;
                        top.pc = r;
                        if r == rpc {
                            // Meeting where this entry ends anyway: replace it by the two sides.
                            w.stack.pop();
                        }
                        w.stack.push(Entry { pc: pc + 1, rpc: r, mask: mask & !exec });
                        w.stack.push(Entry { pc: t, rpc: r, mask: exec });
                    }
                }
                Op::Exit => w.alive &= !exec,
                Op::Bar => w.at_bar = true,
                _ => self.step(w, inst, exec)?,
            }
        }
        Ok(())
    }

    fn step(&mut self, w: &mut Warp, inst: &Inst, exec: u32) -> R<()> {
        let a = &inst.args;
        let lanes = (0..32usize).filter(|l| exec & (1 << l) != 0);
        match &inst.op {
            Op::Nop => {}
            Op::GridDepWait => {
                w.waited |= exec;
                self.waited = true;
            }
            Op::Mov(ty) => {
                let (d, s) = (&a[0], &a[1]);
                for lane in lanes {
                    match (d, s) {
                        // Pack: `mov.b32 %r, {%h0, %h1}` (element 0 in the low bits).
                        (_, Opnd::Vec(parts)) => {
                            let each = ty.bits() / parts.len() as u32;
                            let mut v = 0u64;
                            for (i, p) in parts.iter().enumerate() {
                                v |= mask_bits(self.get(w, lane, p), each) << (each * i as u32);
                            }
                            self.set(w, lane, d, v);
                        }
                        // Unpack.
                        (Opnd::Vec(parts), _) => {
                            let each = ty.bits() / parts.len() as u32;
                            let v = self.get(w, lane, s);
                            for (i, p) in parts.iter().enumerate() {
                                self.set(w, lane, p, mask_bits(v >> (each * i as u32), each));
                            }
                        }
                        _ => {
                            let v = self.get(w, lane, s);
                            self.set(w, lane, d, v);
                        }
                    }
                }
            }
            Op::Ld { space, ty, vec } => {
                let size = (ty.bits() / 8).max(1) as usize;
                let dsts = registers(&a[0], *vec)?;
                for lane in lanes {
                    let (sp, addr) = self.address(w, lane, &a[1], *space)?;
                    let bytes = self.load(w, lane, sp, addr, size * dsts.len())?;
                    for (i, d) in dsts.iter().enumerate() {
                        let v = le_value(&bytes[i * size..(i + 1) * size]);
                        let v = if ty.signed() { sext(v, ty.bits()) as u64 } else { v };
                        self.set(w, lane, d, v);
                    }
                }
            }
            Op::St { space, ty, vec } => {
                let size = (ty.bits() / 8).max(1) as usize;
                let srcs = registers(&a[1], *vec)?;
                for lane in lanes {
                    let (sp, addr) = self.address(w, lane, &a[0], *space)?;
                    let mut bytes = [0u8; 16];
                    for (i, s) in srcs.iter().enumerate() {
                        bytes[i * size..(i + 1) * size].copy_from_slice(&self.get(w, lane, s).to_le_bytes()[..size]);
                    }
                    self.store(w, lane, sp, addr, &bytes[..size * srcs.len()])?;
                }
            }
            Op::Cvta { to, space } => {
                let window = match space {
                    Space::Shared => SHARED_WINDOW,
                    Space::Local => LOCAL_WINDOW,
                    _ => 0,
                };
                for lane in lanes {
                    let v = self.get(w, lane, &a[1]);
                    let r = if *to { v.wrapping_sub(window) } else { v.wrapping_add(window) };
                    self.set(w, lane, &a[0], r);
                }
            }
            // f32 in f32 itself: the common case, and `fma` must round once.
            Op::Bin { op: op @ (Bin::Add | Bin::Sub | Bin::MulLo), ty: Ty::F32, sat } => {
                for lane in lanes {
                    let (x, y) = (f32::from_bits(self.get(w, lane, &a[1]) as u32), f32::from_bits(self.get(w, lane, &a[2]) as u32));
                    let r = match op {
                        Bin::Add => x + y,
                        Bin::Sub => x - y,
                        _ => x * y,
                    };
                    let r = if *sat { sat01(r as f64) as f32 } else { r };
                    self.set(w, lane, &a[0], r.to_bits() as u64);
                }
            }
            Op::Mad { ty: Ty::F32, sat, .. } => {
                for lane in lanes {
                    let (x, y, z) = (self.get(w, lane, &a[1]) as u32, self.get(w, lane, &a[2]) as u32, self.get(w, lane, &a[3]) as u32);
                    let r = f32::from_bits(x).mul_add(f32::from_bits(y), f32::from_bits(z));
                    let r = if *sat { sat01(r as f64) as f32 } else { r };
                    self.set(w, lane, &a[0], r.to_bits() as u64);
                }
            }
            Op::Bin { op, ty, sat } => {
                for lane in lanes {
                    let (x, y) = (self.get(w, lane, &a[1]), self.get(w, lane, &a[2]));
                    let r = if ty.float() {
                        per_half(*ty, x, y, 0, |p, q, _| if *sat { sat01(f32_op(*op, p, q)) } else { f32_op(*op, p, q) })
                    } else if *ty == Ty::Pred {
                        int_bin(*op, Ty::B32, x, y, false)? & 1
                    } else {
                        int_bin(*op, *ty, x, y, *sat)?
                    };
                    self.set(w, lane, &a[0], r);
                }
            }
            Op::Un { op, ty } => {
                for lane in lanes {
                    let x = self.get(w, lane, &a[1]);
                    let r = if ty.float() {
                        match op {
                            Un::Neg => x ^ sign_mask(*ty),
                            Un::Abs => x & !sign_mask(*ty),
                            _ => per_half(*ty, x, 0, 0, |v, _, _| match op {
                                Un::Sqrt => v.sqrt(),
                                Un::Rsqrt => 1.0 / v.sqrt(),
                                Un::Rcp => 1.0 / v,
                                Un::Ex2 => v.exp2(),
                                Un::Lg2 => v.log2(),
                                Un::Sin => v.sin(),
                                Un::Cos => v.cos(),
                                Un::Tanh => v.tanh(),
                                _ => f64::NAN,
                            }),
                        }
                    } else {
                        let n = ty.bits();
                        match op {
                            Un::Neg => mask_bits((sext(x, n)).wrapping_neg() as u64, n),
                            Un::Abs => mask_bits(sext(x, n).wrapping_abs() as u64, n),
                            Un::Not if *ty == Ty::Pred => !x & 1,
                            Un::Not => mask_bits(!x, n),
                            Un::Popc => mask_bits(x, n).count_ones() as u64,
                            Un::Clz => (mask_bits(x, n).leading_zeros() - (64 - n)) as u64,
                            Un::Brev => mask_bits(x, n).reverse_bits() >> (64 - n),
                            _ => return self.fault(format!("{op:?} of an integer type")),
                        }
                    };
                    self.set(w, lane, &a[0], r);
                }
            }
            Op::Mad { wide, hi, ty, sat } => {
                for lane in lanes {
                    let (x, y, z) = (self.get(w, lane, &a[1]), self.get(w, lane, &a[2]), self.get(w, lane, &a[3]));
                    let r = if ty.float() {
                        per_half(*ty, x, y, z, |p, q, r| if *sat { sat01(p.mul_add(q, r)) } else { p.mul_add(q, r) })
                    } else {
                        let n = ty.bits();
                        let p = int_bin(if *wide { Bin::MulWide } else if *hi { Bin::MulHi } else { Bin::MulLo }, *ty, x, y, false)?;
                        let width = if *wide { 2 * n } else { n };
                        mask_bits(p.wrapping_add(z), width)
                    };
                    self.set(w, lane, &a[0], r);
                }
            }
            Op::Setp { cmp, ty } => {
                for lane in lanes {
                    let r = compare(*cmp, *ty, self.get(w, lane, &a[1]), self.get(w, lane, &a[2]));
                    self.set(w, lane, &a[0], r as u64);
                }
            }
            Op::Selp(_) => {
                for lane in lanes {
                    let c = self.get(w, lane, &a[3]) & 1 != 0;
                    let v = if c { self.get(w, lane, &a[1]) } else { self.get(w, lane, &a[2]) };
                    self.set(w, lane, &a[0], v);
                }
            }
            Op::Cvt { dst, src, rnd, sat } => {
                for lane in lanes {
                    let r = if matches!(dst, Ty::F16x2 | Ty::Bf16x2) {
                        // `cvt.rn.f16x2.f32 d, hi, lo`
                        let h = half_ty(*dst);
                        let hi = cvt(h, *src, *rnd, *sat, self.get(w, lane, &a[1]));
                        let lo = cvt(h, *src, *rnd, *sat, self.get(w, lane, &a[2]));
                        (hi << 16) | lo
                    } else {
                        cvt(*dst, *src, *rnd, *sat, self.get(w, lane, &a[1]))
                    };
                    self.set(w, lane, &a[0], r);
                }
            }
            Op::Prmt => {
                for lane in lanes {
                    let (x, y, c) = (self.get(w, lane, &a[1]) as u32, self.get(w, lane, &a[2]) as u32, self.get(w, lane, &a[3]) as u32);
                    let bytes = ((y as u64) << 32 | x as u64).to_le_bytes();
                    let mut r = 0u32;
                    for i in 0..4 {
                        let sel = (c >> (4 * i)) & 0xf;
                        let mut byte = bytes[(sel & 7) as usize];
                        if sel & 8 != 0 {
                            byte = if byte & 0x80 != 0 { 0xff } else { 0 };
                        }
                        r |= (byte as u32) << (8 * i);
                    }
                    self.set(w, lane, &a[0], r as u64);
                }
            }
            Op::Dp4a { a_signed, b_signed } => {
                let byte = |v: u64, i: u32, signed: bool| {
                    let b = (v >> (8 * i)) & 0xff;
                    if signed {
                        b as u8 as i8 as i64
                    } else {
                        b as i64
                    }
                };
                for lane in lanes {
                    let (x, y, c) = (self.get(w, lane, &a[1]), self.get(w, lane, &a[2]), self.get(w, lane, &a[3]));
                    let dot: i64 = (0..4).map(|i| byte(x, i, *a_signed) * byte(y, i, *b_signed)).sum();
                    self.set(w, lane, &a[0], (c as u32).wrapping_add(dot as i32 as u32) as u64);
                }
            }
            Op::Bfe(ty) => {
                let n = ty.bits();
                for lane in lanes {
                    let x = mask_bits(self.get(w, lane, &a[1]), n);
                    let pos = (self.get(w, lane, &a[2]) & 0xff) as u32;
                    let len = (self.get(w, lane, &a[3]) & 0xff) as u32;
                    let r = if len == 0 {
                        0
                    } else {
                        let shifted = if pos >= n { if ty.signed() { (sext(x, n) >> 63) as u64 } else { 0 } } else if ty.signed() { (sext(x, n) >> pos) as u64 } else { x >> pos };
                        let len = len.min(n);
                        if ty.signed() {
                            mask_bits(sext(shifted, len.min(n - pos.min(n)).max(1)) as u64, n)
                        } else {
                            mask_bits(shifted, len)
                        }
                    };
                    self.set(w, lane, &a[0], r);
                }
            }
            Op::Bfi(ty) => {
                let n = ty.bits();
                for lane in lanes {
                    let (x, y) = (self.get(w, lane, &a[1]), self.get(w, lane, &a[2]));
                    let pos = (self.get(w, lane, &a[3]) & 0xff) as u32;
                    let len = (self.get(w, lane, &a[4]) & 0xff) as u32;
                    let r = if pos >= n || len == 0 {
                        y
                    } else {
                        let m = mask_bits(u64::MAX, len.min(n - pos)) << pos;
                        (y & !m) | ((x << pos) & m)
                    };
                    self.set(w, lane, &a[0], mask_bits(r, n));
                }
            }
            Op::Shfl(mode) => {
                // shfl.sync.MODE.b32 d, a, b, c, membermask: every live lane the mask names
                // must run it together.
                let members = self.get(w, exec.trailing_zeros() as usize, &a[4]) as u32;
                if members & w.alive & !exec != 0 {
                    return self.fault(format!("shfl.sync with member mask {members:#010x} run by lanes {exec:#010x} only"));
                }
                let vals: [u64; 32] = std::array::from_fn(|l| self.get(w, l, &a[1]));
                for lane in lanes {
                    let b = (self.get(w, lane, &a[2]) & 31) as i64;
                    let c = self.get(w, lane, &a[3]) as i64;
                    let seg = (c >> 8) & 31;
                    let clamp = c & 31;
                    let l = lane as i64;
                    let max_lane = (l & seg) | (clamp & !seg);
                    let min_lane = l & seg;
                    let (j, ok) = match mode {
                        Shfl::Up => (l - b, l - b >= max_lane),
                        Shfl::Down => (l + b, l + b <= max_lane),
                        Shfl::Bfly => (l ^ b, (l ^ b) <= max_lane),
                        Shfl::Idx => (min_lane | (b & !seg), (min_lane | (b & !seg)) <= max_lane),
                    };
                    let j = if ok { j } else { l };
                    self.set(w, lane, &a[0], vals[j as usize & 31]);
                }
            }
            Op::CpAsync { .. } => {
                // cp.async.{ca,cg}.shared.global [dst], [src], cp-size{, src-size}
                for lane in lanes {
                    let (_, dst) = self.address(w, lane, &a[0], Space::Shared)?;
                    let (_, src) = self.address(w, lane, &a[1], Space::Global)?;
                    let size = self.get(w, lane, &a[2]) as usize;
                    let src_size = a.get(3).map(|o| self.get(w, lane, o) as usize).unwrap_or(size).min(size);
                    if size > 16 {
                        return self.fault("cp.async of more than 16 bytes");
                    }
                    // Both addresses are aligned to the copy's size, even where fewer source
                    // bytes are read.
                    self.aligned("cp.async source", Space::Global, src, size)?;
                    let mut bytes = [0u8; 16];
                    if src_size > 0 {
                        bytes = self.load(w, lane, Space::Global, src, src_size)?;
                        bytes[src_size..].fill(0);
                    }
                    self.store(w, lane, Space::Shared, dst, &bytes[..size])?;
                }
            }
            Op::Atom { space, op, ty, red } => {
                let size = (ty.bits() / 8) as usize;
                let (addr_i, val_i) = if *red { (0, 1) } else { (1, 2) };
                for lane in lanes {
                    let (sp, addr) = self.address(w, lane, &a[addr_i], *space)?;
                    let old = le_value(&self.load(w, lane, sp, addr, size)?[..size]);
                    let v = self.get(w, lane, &a[val_i]);
                    let n = ty.bits();
                    let new = match op {
                        AtomOp::Add if ty.float() => per_half(*ty, old, v, 0, |p, q, _| p + q),
                        AtomOp::Add => int_bin(Bin::Add, *ty, old, v, false)?,
                        AtomOp::Min => int_bin(Bin::Min, *ty, old, v, false)?,
                        AtomOp::Max => int_bin(Bin::Max, *ty, old, v, false)?,
                        AtomOp::Inc => {
                            if mask_bits(old, n) >= mask_bits(v, n) {
                                0
                            } else {
                                old + 1
                            }
                        }
                        AtomOp::Dec => {
                            if mask_bits(old, n) == 0 || mask_bits(old, n) > mask_bits(v, n) {
                                v
                            } else {
                                old - 1
                            }
                        }
                        AtomOp::And => old & v,
                        AtomOp::Or => old | v,
                        AtomOp::Xor => old ^ v,
                        AtomOp::Exch => v,
                        AtomOp::Cas => {
                            if mask_bits(old, n) == mask_bits(v, n) {
                                self.get(w, lane, &a[3])
                            } else {
                                old
                            }
                        }
                    };
                    self.store(w, lane, sp, addr, &mask_bits(new, n).to_le_bytes()[..size])?;
                    if !*red {
                        self.set(w, lane, &a[0], old);
                    }
                }
            }
            Op::Carry { kind, cin, cout, ty } => {
                let n = ty.bits();
                let cr = self.k.carry_reg as usize;
                for lane in lanes {
                    let (x, y) = (mask_bits(self.get(w, lane, &a[1]), n) as u128, mask_bits(self.get(w, lane, &a[2]), n) as u128);
                    let cf = if *cin { w.regs[cr * 32 + lane] as u128 & 1 } else { 0 };
                    let wide = match kind {
                        CarryOp::Add => x + y + cf,
                        // a - (b + CF): the flag is a borrow, and a borrow out shows as bit n
                        // of the wrapped difference.
                        CarryOp::Sub => x.wrapping_sub(y + cf) & ((1u128 << (n + 1)) - 1),
                        CarryOp::MadLo | CarryOp::MadHi => {
                            let p = x * y;
                            let part = if *kind == CarryOp::MadHi { p >> n } else { p & ((1u128 << n) - 1) };
                            part + mask_bits(self.get(w, lane, &a[3]), n) as u128 + cf
                        }
                    };
                    if *cout {
                        w.regs[cr * 32 + lane] = ((wide >> n) & 1) as u64;
                    }
                    self.set(w, lane, &a[0], mask_bits(wide as u64, n));
                }
            }
            Op::Shf { left, clamp } => {
                for lane in lanes {
                    let (lo, hi) = (self.get(w, lane, &a[1]) & 0xffff_ffff, self.get(w, lane, &a[2]) & 0xffff_ffff);
                    let c = self.get(w, lane, &a[3]) as u32;
                    let sh = if *clamp { c.min(32) } else { c & 31 } as u64;
                    let both = (hi << 32) | lo;
                    let r = if *left { (both << sh) >> 32 } else { both >> sh };
                    self.set(w, lane, &a[0], r & 0xffff_ffff);
                }
            }
            Op::Ldmatrix { count, trans } => tensor_core::ldmatrix(self, w, inst, exec, *count, *trans)?,
            Op::Mma { k, ab, .. } => tensor_core::mma(self, w, inst, exec, *k, *ab)?,
            Op::Wgmma { n, k, ab } => tensor_core::wgmma(self, w, inst, exec, *n, *k, *ab)?,
            Op::Bra | Op::Exit | Op::Bar => unreachable!("control flow is handled by run_warp"),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lanes branch apart and meet again, a shuffle adds pairs, and each thread reads a
    /// neighbour's sum through shared memory after a barrier (across the two warps).
    const KERNEL: &str = r#"
.version 8.0
.target sm_80
.address_size 64
.visible .entry k(.param .u64 k_param_0, .param .u32 k_param_1)
{
  .reg .pred %p<3>;
  .reg .b32 %r<10>;
  .reg .b64 %rd<6>;
  .shared .align 4 .b8 buf[256];
  ld.param.u64 %rd1, [k_param_0];
  ld.param.u32 %r1, [k_param_1];
  mov.u32 %r2, %tid.x;
  and.b32 %r3, %r2, 1;
  setp.eq.u32 %p1, %r3, 0;
  @%p1 bra $EVEN;
  shl.b32 %r4, %r2, 1;
  bra.uni $JOIN;
$EVEN:
  add.s32 %r4, %r2, 100;
$JOIN:
  shfl.sync.bfly.b32 %r5, %r4, 1, 31, -1;
  add.s32 %r6, %r4, %r5;
  mul.wide.u32 %rd2, %r2, 4;
  mov.u64 %rd3, buf;
  add.s64 %rd4, %rd3, %rd2;
  st.shared.u32 [%rd4], %r6;
  bar.sync 0;
  add.s32 %r7, %r2, 1;
  rem.u32 %r7, %r7, %r1;
  mul.wide.u32 %rd2, %r7, 4;
  add.s64 %rd4, %rd3, %rd2;
  ld.shared.u32 %r8, [%rd4];
  mul.wide.u32 %rd2, %r2, 4;
  add.s64 %rd5, %rd1, %rd2;
  st.global.u32 [%rd5], %r8;
  ret;
}
"#;

    fn launch(out: &mut [u32], threads: u32) -> Result<Counts, Fault> {
        let m = crate::ptx::parse(KERNEL, &mut |_, _| 0).unwrap();
        let k = &m.kernels["k"];
        let mut params = (out.as_mut_ptr() as u64).to_le_bytes().to_vec();
        params.extend_from_slice(&threads.to_le_bytes());
        let start = out.as_ptr() as u64;
        let mem = Memory { ranges: vec![(start, start + 4 * out.len() as u64)], ..Default::default() };
        run(&Launch { kernel: k, grid: [1, 1, 1], block: [threads, 1, 1], dyn_shared: 0, params: &params, mem: &mem, programmatic: false })
    }

    /// Runs kernel `k` of `src` over one block of `threads` with `out` as its only parameter.
    fn run_one(src: &str, out: &mut [u32], threads: u32) -> Result<Counts, Fault> {
        let m = crate::ptx::parse(src, &mut |_, _| 0).unwrap();
        let params = (out.as_mut_ptr() as u64).to_le_bytes();
        let start = out.as_ptr() as u64;
        let mem = Memory { ranges: vec![(start, start + 4 * out.len() as u64)], ..Default::default() };
        run(&Launch { kernel: &m.kernels["k"], grid: [1, 1, 1], block: [threads, 1, 1], dyn_shared: 0, params: &params, mem: &mem, programmatic: false })
    }

    #[test]
    fn a_launch_counts_its_work() {
        // 64 threads (two warps) each store one u32 to global memory and read none there
        // (parameters and shared memory do not count); every warp runs the same path
        // except where lanes diverge, so both warps issue the same count.
        let mut out = vec![0u32; 64];
        let c = launch(&mut out, 64).unwrap();
        assert_eq!((c.global_read, c.global_written), (0, 64 * 4));
        assert_eq!(c.max_block_insts, c.warp_insts);
        assert_eq!(c.warp_insts % 2, 0);
        let one = launch(&mut out[..32], 32).unwrap();
        assert_eq!(one.warp_insts * 2, c.warp_insts);
    }

    #[test]
    fn borrow_chains_subtract_wide_integers() {
        // (5 << 32 | 0) - 1 with 32-bit halves: sub.cc borrows, subc takes it.
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{\n\
            .reg .b32 %r<6>;\n.reg .b64 %rd<2>;\nld.param.u64 %rd1, [k_param_0];\n\
            mov.u32 %r1, 0;\nmov.u32 %r2, 5;\nsub.cc.u32 %r3, %r1, 1;\nsubc.u32 %r4, %r2, 0;\n\
            add.cc.u32 %r5, %r3, 1;\naddc.u32 %r1, %r4, 0;\n\
            st.global.v4.u32 [%rd1], {%r3, %r4, %r5, %r1};\nret;\n}\n";
        let mut out = vec![0u32; 4];
        run_one(src, &mut out, 1).unwrap();
        assert_eq!(out, vec![u32::MAX, 4, 0, 5]);
    }

    #[test]
    fn byte_dot_products_extend_each_operand_as_typed() {
        // a = bytes [0xff, 2, 0x80, 1], b = bytes [3, 0xfe, 5, 0x7f], c = 10.
        // u32.s32: 255*3 + 2*(-2) + 128*5 + 1*127 + 10 = 1538; s32.s32: -3 - 4 - 640 + 127 + 10
        // = -510; u32.u32 with c = -1 wraps: 765 + 508 + 640 + 127 - 1 = 2039.
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{\n\
            .reg .b32 %r<8>;\n.reg .b64 %rd<2>;\nld.param.u64 %rd1, [k_param_0];\n\
            mov.u32 %r1, 0x018002ff;\nmov.u32 %r2, 0x7f05fe03;\nmov.u32 %r3, 10;\nmov.u32 %r7, -1;\n\
            dp4a.u32.s32 %r4, %r1, %r2, %r3;\ndp4a.s32.s32 %r5, %r1, %r2, %r3;\ndp4a.u32.u32 %r6, %r1, %r2, %r7;\n\
            st.global.v4.u32 [%rd1], {%r4, %r5, %r6, %r3};\nret;\n}\n";
        let mut out = vec![0u32; 4];
        run_one(src, &mut out, 1).unwrap();
        assert_eq!(out, vec![1538, (-510i32) as u32, 2039, 10]);
    }

    #[test]
    fn a_vector_access_must_be_aligned_to_its_width() {
        // A 4-byte flag, then a buffer declared `.align 4` that ptxas may place right after
        // it (the emulator places both off 16-byte boundaries): a 16-byte store there
        // faults, as on the hardware; at `.align 16` it runs.
        let kernel = |align: u32| {
            format!(
                ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{{\n\
                 .reg .b32 %r<6>;\n.reg .b64 %rd<4>;\n.shared .align 4 .u32 flag;\n.shared .align {align} .b8 buf[64];\n\
                 ld.param.u64 %rd1, [k_param_0];\nmov.u32 %r1, %tid.x;\nmov.u64 %rd2, buf;\n\
                 st.shared.v4.b32 [%rd2], {{%r1, %r1, %r1, %r1}};\nld.shared.v2.b32 {{%r2, %r3}}, [%rd2+8];\n\
                 st.global.u32 [%rd1], %r3;\nret;\n}}\n"
            )
        };
        let mut out = vec![7u32; 1];
        let f = run_one(&kernel(4), &mut out, 1).unwrap_err();
        assert!(f.msg.contains("misaligned Shared store of 16 bytes at 0x8"), "{f}");
        run_one(&kernel(16), &mut out, 1).unwrap();
        assert_eq!(out[0], 0);
    }

    #[test]
    fn a_programmatic_dependent_touches_what_runs_before_it_only_after_its_wait() {
        // Reads out[0] and stores out[1]; `pre` runs before `griddepcontrol.wait`.
        let kernel = |pre: &str, post: &str| {
            format!(
                ".version 8.0\n.target sm_90\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{{\n\
                 .reg .b32 %r<4>;\n.reg .b64 %rd<4>;\nld.param.u64 %rd1, [k_param_0];\nprefetch.L2 [%rd1];\n\
                 {pre}\ngriddepcontrol.launch_dependents;\n{post}\nret;\n}}\n"
            )
        };
        let (load, wait, store) = ("ld.global.u32 %r1, [%rd1];", "griddepcontrol.wait;", "st.global.u32 [%rd1+4], %r1;");
        let run_it = |src: &str, out: &mut [u32], programmatic: bool, in_flight: bool| {
            let m = crate::ptx::parse(src, &mut |_, _| 0).unwrap();
            let params = (out.as_mut_ptr() as u64).to_le_bytes();
            let start = out.as_ptr() as u64;
            let mem = Memory { ranges: vec![(start, start + 4 * out.len() as u64)], ..Default::default() };
            if in_flight {
                mem.in_flight_writes.borrow_mut().insert(start);
            }
            let r = run(&Launch { kernel: &m.kernels["k"], grid: [2, 1, 1], block: [32, 1, 1], dyn_shared: 0, params: &params, mem: &mem, programmatic });
            r.map(|_| mem.in_flight_writes.borrow().contains(&start))
        };
        let mut out = vec![5u32, 0];
        // Reading memory no earlier kernel writes before the wait (weights): allowed, and
        // the stores count as in flight for the next kernel.
        assert!(run_it(&kernel(load, &format!("{wait}\n{store}")), &mut out, true, false).unwrap());
        assert_eq!(out, [5, 5]);
        // The same read of memory an earlier kernel may be writing: a fault; after the
        // wait, or in an ordinary launch, it is fine.
        let f = run_it(&kernel(load, &format!("{wait}\n{store}")), &mut out, true, true).unwrap_err();
        assert!(f.msg.contains("global load at") && f.msg.contains("before griddepcontrol.wait"), "{f}");
        run_it(&kernel(wait, &format!("{load}\n{store}")), &mut out, true, true).unwrap();
        run_it(&kernel(load, &format!("{wait}\n{store}")), &mut out, false, true).unwrap();
        // A store before the wait: a fault.
        let f = run_it(&kernel(&format!("{load}\n{store}"), wait), &mut out, true, false).unwrap_err();
        assert!(f.msg.contains("global store at") && f.msg.contains("before griddepcontrol.wait"), "{f}");
        // A grid that never waits would let the kernels after it overtake the ones before.
        let f = run_it(&kernel(load, ""), &mut out, true, false).unwrap_err();
        assert!(f.msg.contains("no thread executed griddepcontrol.wait"), "{f}");
        run_it(&kernel(load, store), &mut out, false, false).unwrap();
    }

    #[test]
    fn a_shuffle_missing_live_lanes_is_an_error_not_a_wrong_value() {
        // Lanes 16-31 skip to the shuffle; 0-15 reach it later (lane 3 returns): the lanes
        // meet only at the kernel's end, so the shuffle runs split and must not pass.
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{\n\
            .reg .pred %p<3>;\n.reg .b32 %r<5>;\n.reg .b64 %rd<4>;\nld.param.u64 %rd1, [k_param_0];\n\
            mov.u32 %r1, %tid.x;\nmov.u32 %r2, 1;\nsetp.lt.u32 %p1, %r1, 16;\n@!%p1 bra $Y;\n\
            setp.eq.u32 %p2, %r1, 3;\n@%p2 bra $RET;\nmov.u32 %r2, 2;\n$Y:\n\
            shfl.sync.bfly.b32 %r3, %r2, 16, 31, -1;\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd3, %rd1, %rd2;\n\
            st.global.u32 [%rd3], %r3;\n$RET:\nret;\n}\n";
        let mut out = vec![0u32; 32];
        let f = run_one(src, &mut out, 32).unwrap_err();
        assert!(f.msg.contains("shfl.sync with member mask"), "{f}");
    }

    #[test]
    fn lanes_meet_after_an_early_return() {
        // if (tid < 16) { if (tid == 3) return; r = 2 } then a shuffle: the early `ret`
        // block does not move the meeting point to the kernel's end.
        let src = ".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k(.param .u64 k_param_0)\n{\n\
            .reg .pred %p<3>;\n.reg .b32 %r<5>;\n.reg .b64 %rd<4>;\nld.param.u64 %rd1, [k_param_0];\n\
            mov.u32 %r1, %tid.x;\nmov.u32 %r2, 1;\nsetp.lt.u32 %p1, %r1, 16;\n@!%p1 bra $Y;\n\
            setp.eq.u32 %p2, %r1, 3;\n@%p2 bra $EARLY;\nmov.u32 %r2, 2;\nbra.uni $Y;\n$EARLY:\nret;\n$Y:\n\
            shfl.sync.bfly.b32 %r3, %r2, 16, 31, -1;\nmul.wide.u32 %rd2, %r1, 4;\nadd.s64 %rd3, %rd1, %rd2;\n\
            st.global.u32 [%rd3], %r3;\nret;\n}\n";
        let mut out = vec![0u32; 32];
        run_one(src, &mut out, 32).unwrap();
        for (l, v) in out.iter().enumerate().filter(|(l, _)| *l != 3 && *l != 19) {
            assert_eq!(*v, if l < 16 { 1 } else { 2 }, "lane {l}");
        }
        assert_eq!(out[3], 0, "lane 3 returned before its store");
    }

    #[test]
    fn divergence_shuffles_and_barriers() {
        let mut out = vec![0u32; 64];
        launch(&mut out, 64).unwrap();
        let v = |t: u32| if t.is_multiple_of(2) { t + 100 } else { 2 * t };
        let want: Vec<u32> = (0..64).map(|t| (t + 1) % 64).map(|t| v(t) + v(t ^ 1)).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn a_store_outside_device_memory_stops_the_kernel_at_its_line() {
        let mut out = vec![0u32; 63];
        let f = launch(&mut out, 64).unwrap_err();
        assert!(f.msg.contains("global store of 4 bytes") && f.msg.contains("outside every device allocation"), "{f}");
        assert!(f.msg.contains("warp 1"), "{f}");
        assert_eq!(f.line, 36, "{f}");
    }

    #[test]
    fn conversions() {
        // f32 -> f16 rounds to nearest even; f16x2 packs the first operand high.
        assert_eq!(cvt(Ty::F16, Ty::F32, Some(Rnd::Rn), false, 1.0f32.to_bits() as u64), 0x3c00);
        assert_eq!(cvt(Ty::S32, Ty::F32, Some(Rnd::Rzi), false, (-2.7f32).to_bits() as u64), (-2i32) as u32 as u64);
        assert_eq!(cvt(Ty::U8, Ty::F32, Some(Rnd::Rni), false, 300f32.to_bits() as u64), 255);
        assert_eq!(cvt(Ty::S64, Ty::S32, None, false, 0xffff_ffff), u64::MAX);
        assert_eq!(cvt(Ty::U16, Ty::U32, None, false, 0x1234_5678), 0x5678);
        assert_eq!(f32::from_bits(cvt(Ty::F32, Ty::F64, Some(Rnd::Rz), false, (1.0f64 + 1e-12).to_bits()) as u32), 1.0);
    }

    #[test]
    fn integer_ops() {
        assert_eq!(int_bin(Bin::Shr, Ty::S32, 0xffff_fff0, 2, false).unwrap() & 0xffff_ffff, 0xffff_fffc);
        assert_eq!(int_bin(Bin::Shr, Ty::U32, 0xffff_fff0, 2, false).unwrap(), 0x3fff_fffc);
        assert_eq!(int_bin(Bin::MulWide, Ty::U32, 0xffff_ffff, 2, false).unwrap(), 0x1_ffff_fffe);
        assert_eq!(int_bin(Bin::MulHi, Ty::U64, u64::MAX, 2, false).unwrap(), 1);
        assert!(compare(Cmp::Lt, Ty::S64, u64::MAX, 0));
        assert!(!compare(Cmp::Lt, Ty::U64, u64::MAX, 0));
        assert!(compare(Cmp::Neu, Ty::F32, f32::NAN.to_bits() as u64, 0));
    }
}
