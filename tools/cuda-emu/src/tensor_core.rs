//! Warp-wide tensor-core instructions: `ldmatrix`, `mma.sync` (m16n8k16 and m16n8k8) and
//! `wgmma.mma_async` (m64nNk16 / k8 with both operands in shared memory through 128-byte
//! swizzled matrix descriptors). Fragment layouts are the PTX ISA's; products are summed in
//! f32 in k order (the hardware's order within a k step is unspecified, so results can
//! differ from a GPU's in the last bits).

use crate::exec::{Ctx, Warp};
use crate::ptx::{Inst, Opnd, Space, Ty};
use half::{bf16, f16};

type R<T> = Result<T, String>;

fn regs_of(o: &Opnd) -> R<&[Opnd]> {
    match o {
        Opnd::Vec(v) => Ok(v),
        other => Err(format!("expected a register vector, got {other:?}")),
    }
}

fn full_warp(exec: u32, what: &str) -> R<()> {
    if exec != u32::MAX {
        return Err(format!("{what} run by lanes {exec:#010x}, not the whole warp"));
    }
    Ok(())
}

/// An element of a 16-bit or tf32 operand as f32.
fn elem(bits: u64, ty: Ty) -> f32 {
    match ty {
        Ty::F16 => f16::from_bits(bits as u16).to_f32(),
        Ty::Bf16 => bf16::from_bits(bits as u16).to_f32(),
        // TF32 operands are f32 registers whose low 13 mantissa bits the hardware ignores.
        Ty::Tf32 => f32::from_bits(bits as u32 & 0xffff_e000),
        _ => f32::from_bits(bits as u32),
    }
}

/// `ldmatrix.sync.aligned.m8n8.x{count}{.trans}.shared.b16 {r..}, [addr]`: lanes
/// `8j..8j+7` give the row addresses of matrix `j`; lane `l` receives, of matrix `j`, row
/// `l/4`, columns `2(l%4)` and `+1` (or with `.trans` those of the transpose).
pub fn ldmatrix(c: &mut Ctx, w: &mut Warp, inst: &Inst, exec: u32, count: u8, trans: bool) -> R<()> {
    full_warp(exec, "ldmatrix")?;
    let dsts = regs_of(&inst.args[0])?.to_vec();
    if dsts.len() != count as usize {
        return Err("ldmatrix with the wrong number of registers".into());
    }
    // m[j][row][col]
    let mut m = vec![[[0u16; 8]; 8]; count as usize];
    for (j, mat) in m.iter_mut().enumerate() {
        for (r, row) in mat.iter_mut().enumerate() {
            let lane = j * 8 + r;
            let (sp, addr) = c.address(w, lane, &inst.args[1], Space::Shared)?;
            let bytes = c.load(w, lane, sp, addr, 16)?;
            for (k, v) in row.iter_mut().enumerate() {
                *v = u16::from_le_bytes([bytes[2 * k], bytes[2 * k + 1]]);
            }
        }
    }
    for lane in 0..32 {
        let (r, col) = (lane / 4, 2 * (lane % 4));
        for (j, d) in dsts.iter().enumerate() {
            let (lo, hi) = if trans { (m[j][col][r], m[j][col + 1][r]) } else { (m[j][r][col], m[j][r][col + 1]) };
            c.set(w, lane, d, (hi as u64) << 16 | lo as u64);
        }
    }
    Ok(())
}

/// `mma.sync.aligned.m16n8k{k}.row.col.f32.{ab}.{ab}.f32 {d0..d3}, {a..}, {b..}, {c0..c3}`.
pub fn mma(c: &mut Ctx, w: &mut Warp, inst: &Inst, exec: u32, k: u8, ab: Ty) -> R<()> {
    full_warp(exec, "mma.sync")?;
    let (d, a, b, cc) = (regs_of(&inst.args[0])?.to_vec(), regs_of(&inst.args[1])?.to_vec(), regs_of(&inst.args[2])?.to_vec(), regs_of(&inst.args[3])?.to_vec());
    let k = k as usize;
    let mut am = vec![[0f32; 16]; 16];
    let mut bm = vec![[0f32; 8]; 16];
    let mut cm = [[0f32; 8]; 16];
    let sixteen = matches!(ab, Ty::F16 | Ty::Bf16);
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        let get = |o: &Opnd| c.get(w, lane, o);
        if sixteen {
            // Each register holds two elements, the lower-indexed one in the low half.
            let pairs: &[(usize, usize)] = if k == 16 { &[(g, 2 * t), (g + 8, 2 * t), (g, 2 * t + 8), (g + 8, 2 * t + 8)] } else { &[(g, 2 * t), (g + 8, 2 * t)] };
            for (ri, &(row, col)) in pairs.iter().enumerate() {
                let v = get(&a[ri]);
                am[row][col] = elem(v & 0xffff, ab);
                am[row][col + 1] = elem(v >> 16, ab);
            }
            let bpairs: &[usize] = if k == 16 { &[2 * t, 2 * t + 8] } else { &[2 * t] };
            for (ri, &kk) in bpairs.iter().enumerate() {
                let v = get(&b[ri]);
                bm[kk][g] = elem(v & 0xffff, ab);
                bm[kk + 1][g] = elem(v >> 16, ab);
            }
        } else if k == 8 {
            // tf32 m16n8k8: one element per register.
            for (ri, &(row, col)) in [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)].iter().enumerate() {
                am[row][col] = elem(get(&a[ri]), ab);
            }
            for (ri, &kk) in [t, t + 4].iter().enumerate() {
                bm[kk][g] = elem(get(&b[ri]), ab);
            }
        } else {
            return Err(format!("mma.sync m16n8k{k} with {ab:?} operands"));
        }
        for (ri, &(row, col)) in [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)].iter().enumerate() {
            cm[row][col] = f32::from_bits(get(&cc[ri]) as u32);
        }
    }
    for lane in 0..32 {
        let (g, t) = (lane / 4, lane % 4);
        for (ri, &(row, col)) in [(g, 2 * t), (g, 2 * t + 1), (g + 8, 2 * t), (g + 8, 2 * t + 1)].iter().enumerate() {
            let mut s = cm[row][col];
            for kk in 0..k {
                s += am[row][kk] * bm[kk][col];
            }
            c.set(w, lane, &d[ri], s.to_bits() as u64);
        }
    }
    Ok(())
}

/// A shared-memory matrix descriptor (sm_90).
struct Desc {
    start: u64,
    lbo: u64,
    sbo: u64,
}

fn desc(v: u64) -> R<Desc> {
    let swizzle = v >> 62;
    if swizzle != 1 {
        return Err(format!("wgmma descriptor {v:#x}: only the 128-byte swizzle is emulated (mode {swizzle})"));
    }
    Ok(Desc { start: (v & 0x3fff) << 4, lbo: ((v >> 16) & 0x3fff) << 4, sbo: ((v >> 32) & 0x3fff) << 4 })
}

/// The shared address of element (`mn`, `k`) of a 128-byte-swizzled operand: K-major (each
/// mn a 128-byte line of k, 8 lines an atom `sbo` apart) or MN-major (each k a line of mn,
/// 8 k an atom `sbo` apart, 128-byte column groups `lbo` apart). The swizzle XORs address
/// bits 4-6 with bits 7-9.
fn swizzled(d: &Desc, mn: usize, k: usize, esz: usize, mn_major: bool) -> u64 {
    let logical = if mn_major {
        let per_line = 128 / esz;
        d.start + (k / 8) as u64 * d.sbo + (k % 8) as u64 * 128 + (mn / per_line) as u64 * d.lbo + ((mn % per_line) * esz) as u64
    } else {
        d.start + (mn / 8) as u64 * d.sbo + (mn % 8) as u64 * 128 + (k * esz) as u64
    };
    logical ^ (((logical >> 7) & 7) << 4)
}

fn read_elem(c: &Ctx, addr: u64, ab: Ty) -> R<f32> {
    let a = addr as usize;
    let esz = if ab == Ty::Tf32 { 4 } else { 2 };
    let s = c.shared.get(a..a + esz).ok_or_else(|| format!("wgmma operand at shared {addr:#x}, past the block's {} bytes", c.shared.len()))?;
    Ok(if esz == 4 { elem(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as u64, ab) } else { elem(u16::from_le_bytes([s[0], s[1]]) as u64, ab) })
}

/// `wgmma.mma_async.sync.aligned.m64n{n}k{k}.f32.{ab}.{ab} {d..}, descA, descB, p, sa, sb
/// {, ta, tb}`: each warp of the warpgroup computes its 16 rows of the 64 (the result is
/// ready at once; `wgmma.wait_group` has nothing to wait for).
pub fn wgmma(c: &mut Ctx, w: &mut Warp, inst: &Inst, exec: u32, n: u32, k: u8, ab: Ty) -> R<()> {
    full_warp(exec, "wgmma.mma_async")?;
    let d = regs_of(&inst.args[0])?.to_vec();
    let n = n as usize;
    if d.len() != n / 2 {
        return Err(format!("wgmma m64n{n}: {} accumulator registers, expected {}", d.len(), n / 2));
    }
    let imm = |i: usize| inst.args.get(i).map(|o| c.get(w, 0, o)).unwrap_or(0);
    let (da, db) = (desc(c.get(w, 0, &inst.args[1]))?, desc(c.get(w, 0, &inst.args[2]))?);
    let accumulate = c.get(w, 0, &inst.args[3]) & 1 != 0;
    let (scale_a, scale_b) = (if imm(4) as i64 == -1 { -1.0 } else { 1.0 }, if imm(5) as i64 == -1 { -1.0 } else { 1.0 });
    let (ta, tb) = (imm(6) == 1, imm(7) == 1);
    let esz = if ab == Ty::Tf32 { 4 } else { 2 };
    let k = k as usize;
    let row0 = 16 * (w.id as usize % 4);
    let mut a = vec![vec![0f32; k]; 16];
    for (r, row) in a.iter_mut().enumerate() {
        for (kk, v) in row.iter_mut().enumerate() {
            *v = scale_a * read_elem(c, swizzled(&da, row0 + r, kk, esz, ta), ab)?;
        }
    }
    let mut b = vec![vec![0f32; n]; k];
    for (kk, row) in b.iter_mut().enumerate() {
        for (col, v) in row.iter_mut().enumerate() {
            *v = scale_b * read_elem(c, swizzled(&db, col, kk, esz, tb), ab)?;
        }
    }
    for lane in 0..32 {
        for (q, reg) in d.iter().enumerate() {
            let row = lane / 4 + 8 * ((q % 4) / 2);
            let col = 8 * (q / 4) + 2 * (lane % 4) + q % 2;
            let mut s = if accumulate { f32::from_bits(c.get(w, lane, reg) as u32) } else { 0.0 };
            for kk in 0..k {
                s += a[row][kk] * b[kk][col];
            }
            c.set(w, lane, reg, s.to_bits() as u64);
        }
    }
    Ok(())
}
