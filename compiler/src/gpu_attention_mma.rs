//! Prefill attention over an f16 KV cache on the tensor cores (`mma.sync` m16n8k16, f32
//! accumulation): the flash-attention form of [`crate::gpu_kv_cache`]'s attention, for
//! batch rows of at least [`MIN_TOKENS`] query tokens.
//!
//! A block of 4 warps takes [`BQ`] consecutive query tokens of one batch row and one query
//! head, a warp 16 of them, their query fragments (rounded to f16, as the CPU rounds the
//! query for an f16 cache) held in registers. The block steps over the keys the tile's last
//! query sees in tiles of [`BK`]: the tile's key and value rows go to shared memory (rows
//! padded by 16 bytes, so `ldmatrix`'s row addresses fall on distinct banks); each warp
//! multiplies its queries into the keys (`ldmatrix` of key rows as the column-major B
//! operand), masks keys past each query's position, and updates each query row's running
//! max and sum (the 4 lanes holding a row meet through shuffles), rescaling its output
//! accumulators by `exp(old max - new max)` (scores in base 2: one `ex2` each). The
//! probabilities, rounded to f16, are the A operand of the product with the values as they
//! are: the accumulator of the scores and the A fragment share their layout, so no data
//! moves between the two products (values through `ldmatrix.trans`). The output is divided
//! by the row's sum at the end.
//!
//! Numerics are those of the SIMT kernel's online softmax: with an f16 cache the
//! probabilities are rounded to f16 before they are normalized.

use crate::gpu_text::KernelText as Gen;
use crate::lower::BindingType;
use max_dialects::DType;
use std::fmt::Write;

/// Query tokens a block takes: 4 warps of 16.
pub const BQ: usize = 64;
/// Keys a block stages per step.
const BK: usize = 64;
/// Threads per block.
pub const THREADS: usize = 128;
/// Shuffle offsets that combine an accumulator row's 4 lanes.
const QUAD: [i64; 2] = [1, 2];
/// Fewest query tokens a batch row has for this kernel: a tile of [`BQ`] holding fewer
/// leaves most of the tensor cores' rows empty (a serving batch's decode steps take the
/// SIMT kernel).
pub const MIN_TOKENS: usize = 16;

/// Whether attention over caches of `cache` (dtype and head dim `hd`) can take this kernel.
pub fn applies(cache: &BindingType, hd: i64) -> bool {
    cache.dtype == DType::F16 && matches!(hd, 32 | 64 | 128)
}

/// Host code: the launch of `@attention_mma` over `%nb` batch rows of `%ns` tokens
/// (`args`: the kernel's arguments before `%ns`).
pub fn launch(name: &str, args: &str) -> String {
    format!(
        "%cbq = arith.constant {BQ} : index\n        %qtiles = arith.ceildivui %ns, %cbq : index\n        \
         %qblocks = arith.muli %nb, %qtiles : index\n        %cmthreads = arith.constant {THREADS} : index\n        \
         gpu.launch_func @{name}_llm::@attention_mma blocks in (%qblocks, %ch, %c1) threads in (%cmthreads, %c1, %c1) \
         args({args}, %ns : index, %qtiles : index)\n"
    )
}

/// `@attention_mma` (bindings: q, k_cache, v_cache, pos, slot, out; `qt`/`ot`: the query
/// and output rows' memref types; `out_value` converts an f32 result as the output stores
/// it).
pub(crate) fn kernel(s: &mut String, b: &[&BindingType], layer: i64, scale: f64, (qt, ot): (&str, &str), out_value: &dyn Fn(&mut Gen, usize, &str) -> String) {
    let (q, kc, vc, pos, slot) = (b[0], b[1], b[2], b[3], b[4]);
    let (km, vm, pm, sm) = (kc.memref(), vc.memref(), pos.memref(), slot.memref());
    let (hq, hkv, hd) = crate::kv_cache::attention_heads(q, kc);
    let hd_u = hd as usize;
    let group = hq / hkv;
    let row_len = hd_u + 8;
    let tile_t = format!("memref<{BK}x{row_len}xf16, #gpu.address_space<workgroup>>");
    let mut g = Gen::new("fa");
    let i = 6;
    g.line(
        4,
        format!(
            "gpu.func @attention_mma(%Q: {qt}, %K: {km}, %V: {vm}, %P: {pm}, %S: {sm}, %O: {ot}, %ns: index, %qtiles: index) \
             workgroup(%Ks : {tile_t}, %Vs : {tile_t}) \
             kernel attributes {{known_block_size = array<i32: {THREADS}, 1, 1>}} {{"
        ),
    );
    g.line(i, "%CONSTANTS%");
    g.line(i, "%w32 = arith.constant 32 : i32");
    g.line(i, format!("%grp = arith.constant {group} : index"));
    g.line(i, format!("%layer = arith.constant {layer} : index"));
    // Scores in base 2: exp(x) = 2^(x log2 e), one `ex2` each.
    g.line(i, format!("%scale = arith.constant {} : f32", crate::lower::float_lit(scale * std::f64::consts::LOG2_E)));
    g.line(i, "%ninf = arith.constant 0xFF800000 : f32");
    g.line(i, "%zero = arith.constant 0.0 : f32");
    g.line(i, "%one = arith.constant 1.0 : f32");
    g.line(i, "%zh = arith.constant 0.0 : f16");
    g.line(i, "%bx = gpu.block_id x");
    g.line(i, "%hi = gpu.block_id y");
    g.line(i, "%tid = gpu.thread_id x");
    g.line(i, format!("%warp = arith.divui %tid, {} : index", g.c(32)));
    g.line(i, format!("%lane = arith.remui %tid, {} : index", g.c(32)));
    // Fragment coordinates: lane/4 is an accumulator's row, (lane%4)*2 its column pair.
    g.line(i, format!("%g4 = arith.divui %lane, {} : index", g.c(4)));
    g.line(i, format!("%t4 = arith.remui %lane, {} : index", g.c(4)));
    g.line(i, format!("%t42 = arith.muli %t4, {} : index", g.c(2)));
    g.line(i, "%kvh = arith.divui %hi, %grp : index");
    g.line(i, "%bi = arith.divui %bx, %qtiles : index");
    g.line(i, "%qtile = arith.remui %bx, %qtiles : index");
    g.line(i, format!("%s0 = arith.muli %qtile, {} : index", g.c(BQ)));
    // The batch row's slot and start, and whether its tokens fit the cache (else skipped,
    // as on the CPU; the host reports the error).
    // (slot_bounds names %c0 to %c2: declared with the others.)
    let _ = (g.c(0), g.c(1), g.c(2));
    crate::gpu_kv_cache::slot_bounds(&mut g, "%K", kc, pos, slot, "%ns");
    g.line(i, "scf.if %ok {");
    let j = i + 2;
    // The warp's two fragment rows: tokens s0 + 16 warp + lane/4 (+ 8). A row past the
    // batch row's tokens computes as a query at the row's start (key 0 only) and is not
    // stored.
    g.line(j, format!("%wq0 = arith.muli %warp, {} : index", g.c(16)));
    g.line(j, "%wq = arith.addi %s0, %wq0 : index");
    let mut rows = Vec::new();
    for h in 0..2 {
        let s_ = g.add(j, "%wq", "%g4");
        let s_ = if h == 0 { s_ } else { g.add(j, &s_, &g.c(8)) };
        let valid = g.let_(j, format!("arith.cmpi ult, {s_}, %ns : index"));
        let tok0 = g.let_(j, "arith.muli %bi, %ns : index");
        let tok1 = g.add(j, &tok0, &s_);
        let tok = g.let_(j, format!("arith.select {valid}, {tok1}, {tok0} : index"));
        let qp0 = g.add(j, "%pos", &s_);
        // Keys <= qpos (a row past the tokens: key 0).
        let qpos = g.let_(j, format!("arith.select {valid}, {qp0}, {} : index", g.c(0)));
        rows.push((valid, tok, qpos));
    }
    // Query A fragments for each 16-wide slice of the head dim: a0 = (row 0, cols t42..+1),
    // a1 = (row 1, same), a2 = (row 0, cols + 8), a3 = (row 1, cols + 8).
    let ksteps = hd_u / 16;
    let mut qfrag = Vec::new();
    for kk in 0..ksteps {
        let mut regs = Vec::new();
        for (h, c8) in [(0, 0), (1, 0), (0, 8), (1, 8)] {
            let (valid, tok, _) = &rows[h];
            let c0 = g.add(j, "%t42", &g.c(kk * 16 + c8));
            let c1 = g.add(j, &c0, &g.c(1));
            let mut pair = Vec::new();
            for c in [&c0, &c1] {
                let x = g.let_(j, format!("memref.load %Q[{tok}, %hi, {c}] : {qt}"));
                let xf = g.convert(j, &x, q.dtype, DType::F32);
                let xh = g.let_(j, format!("arith.truncf {xf} : f32 to f16"));
                pair.push(g.let_(j, format!("arith.select {valid}, {xh}, %zh : f16")));
            }
            regs.push(g.let_(j, format!("vector.from_elements {}, {} : vector<2xf16>", pair[0], pair[1])));
        }
        qfrag.push(regs);
    }
    // ldmatrix row addresses: lane % 8 (+ 8 for lanes 8-15) of key rows, lane % 16 of value
    // rows.
    g.line(j, format!("%l8 = arith.remui %lane, {} : index", g.c(8)));
    g.line(j, format!("%lh0 = arith.divui %lane, {} : index", g.c(8)));
    g.line(j, format!("%lh1 = arith.remui %lh0, {} : index", g.c(2)));
    g.line(j, format!("%lh = arith.muli %lh1, {} : index", g.c(8)));
    g.line(j, format!("%l16 = arith.remui %lane, {} : index", g.c(16)));
    // The block's keys: up to its last token's position.
    g.line(j, format!("%slast0 = arith.addi %s0, {} : index", g.c(BQ)));
    g.line(j, "%slast = arith.minui %slast0, %ns : index");
    g.line(j, "%kend = arith.addi %pos, %slast : index");
    // Loop state: each row's max and sum, and the output accumulators (hd / 8 tiles of 4).
    let ntiles_o = hd_u / 8;
    let mut names = vec!["%m0".to_string(), "%m1".to_string(), "%l0".to_string(), "%l1".to_string()];
    let mut inits = vec!["%ninf".to_string(), "%ninf".to_string(), "%zero".to_string(), "%zero".to_string()];
    for o in 0..ntiles_o * 4 {
        names.push(format!("%o{o}"));
        inits.push("%zero".to_string());
    }
    let iters: Vec<String> = names.iter().zip(&inits).map(|(n, v)| format!("{n} = {v}")).collect();
    let tys = vec!["f32"; names.len()].join(", ");
    g.line(j, format!("%res:{} = scf.for %t0 = {} to %kend step {} iter_args({}) -> ({tys}) {{", names.len(), g.c(0), g.c(BK), iters.join(", ")));
    let k = j + 2;
    // Stage the tile's key and value rows (a key past the end: the tile's first, a valid
    // row whose probability is 0).
    let chunks = BK * hd_u / 8;
    for c in 0..chunks / THREADS {
        let e = g.add(k, "%tid", &g.c(c * THREADS));
        let r = g.let_(k, format!("arith.divui {e}, {} : index", g.c(hd_u / 8)));
        let col0 = g.let_(k, format!("arith.remui {e}, {} : index", g.c(hd_u / 8)));
        let col = g.let_(k, format!("arith.muli {col0}, {} : index", g.c(8)));
        let key0 = g.add(k, "%t0", &r);
        let inr = g.let_(k, format!("arith.cmpi ult, {key0}, %kend : index"));
        let key = g.let_(k, format!("arith.select {inr}, {key0}, %t0 : index"));
        let kv = g.let_(k, format!("vector.load %K[%layer, %slot, {key}, %kvh, {col}] {{alignment = 16}} : {km}, vector<8xf16>"));
        let vv = g.let_(k, format!("vector.load %V[%layer, %slot, {key}, %kvh, {col}] {{alignment = 16}} : {vm}, vector<8xf16>"));
        g.line(k, format!("vector.store {kv}, %Ks[{r}, {col}] {{alignment = 16}} : {tile_t}, vector<8xf16>"));
        g.line(k, format!("vector.store {vv}, %Vs[{r}, {col}] {{alignment = 16}} : {tile_t}, vector<8xf16>"));
    }
    g.line(k, "gpu.barrier");
    // Scores: S[16 x BK] = Q K^T, a tile of 8 keys at a time; the key rows are B in column-
    // major form, so ldmatrix reads them untransposed (lanes 0-7: rows of the first 8
    // dims, 8-15: of the next 8).
    let mma = |g: &mut Gen, a: &[String], b: &[String], c: &[String]| -> Vec<String> {
        let d = g.let_(
            k,
            format!(
                "nvvm.mma.sync A[{}] B[{}] C[{}] {{layoutA = #nvvm.mma_layout<row>, layoutB = #nvvm.mma_layout<col>, multiplicandAPtxType = #nvvm.mma_type<f16>, multiplicandBPtxType = #nvvm.mma_type<f16>, shape = #nvvm.shape<m = 16, n = 8, k = 16>}} : (vector<2xf16>, vector<2xf16>, f32) -> !llvm.struct<(f32, f32, f32, f32)>",
                a.join(", "),
                b.join(", "),
                c.join(", ")
            ),
        );
        (0..4).map(|q| g.let_(k, format!("llvm.extractvalue {d}[{q}] : !llvm.struct<(f32, f32, f32, f32)>"))).collect()
    };
    let frag2 = |g: &mut Gen, l: &str| -> Vec<String> { (0..2).map(|r| g.let_(k, format!("vector.extract {l}[{r}] : vector<2xf16> from vector<2x2xf16>"))).collect() };
    let ntiles_s = BK / 8;
    let mut sacc: Vec<Vec<String>> = Vec::new();
    for jn in 0..ntiles_s {
        let row = g.add(k, "%l8", &g.c(jn * 8));
        let mut acc = vec!["%zero".to_string(); 4];
        for (kk, a) in qfrag.iter().enumerate() {
            let col = g.add(k, "%lh", &g.c(kk * 16));
            let l = g.let_(k, format!("nvgpu.ldmatrix %Ks[{row}, {col}] {{numTiles = 2 : i32, transpose = false}} : {tile_t} -> vector<2x2xf16>"));
            let bf = frag2(&mut g, &l);
            acc = mma(&mut g, a, &bf, &acc);
        }
        sacc.push(acc);
    }
    // Scale and mask: accumulator q of tile jn is row q / 2, key t0 + t42 + 8 jn + q % 2,
    // seen by the row when 8 jn + q % 2 <= qpos - t0 - t42 (signed: negative when the
    // tile starts past the row's position).
    let key0 = g.add(k, "%t0", "%t42");
    let lims: Vec<String> = rows.iter().map(|(_, _, qpos)| g.let_(k, format!("arith.subi {qpos}, {key0} : index"))).collect();
    let mut sc: Vec<Vec<String>> = Vec::new();
    for (jn, acc) in sacc.iter().enumerate() {
        let mut v = Vec::new();
        for (qi, a) in acc.iter().enumerate() {
            let seen = g.let_(k, format!("arith.cmpi sge, {}, {} : index", lims[qi / 2], g.c(jn * 8 + qi % 2)));
            let x = g.let_(k, format!("arith.mulf {a}, %scale : f32"));
            v.push(g.let_(k, format!("arith.select {seen}, {x}, %ninf : f32")));
        }
        sc.push(v);
    }
    // Each row's max over the tile (its 4 lanes meet through shuffles), the new running
    // max, the rescale of what came before, the probabilities and their sum.
    let mut alpha = Vec::new();
    let mut mnew = Vec::new();
    let mut lnew = Vec::new();
    let mut p: Vec<Vec<String>> = vec![Vec::new(); ntiles_s];
    for h in 0..2 {
        let mut mx = "%ninf".to_string();
        for v in &sc {
            for x in &v[2 * h..2 * h + 2] {
                mx = g.let_(k, format!("arith.maximumf {mx}, {x} : f32"));
            }
        }
        let tmax = g.shuffle_xor(k, &mx, "maximumf", QUAD);
        let mn = g.let_(k, format!("arith.maximumf %m{h}, {tmax} : f32"));
        let dm = g.let_(k, format!("arith.subf %m{h}, {mn} : f32"));
        alpha.push(g.let_(k, format!("math.exp2 {dm} : f32")));
        let mut sum = "%zero".to_string();
        for (jn, v) in sc.iter().enumerate() {
            for x in &v[2 * h..2 * h + 2] {
                // A masked score is -inf: 2^-inf = 0.
                let d = g.let_(k, format!("arith.subf {x}, {mn} : f32"));
                let pe = g.let_(k, format!("math.exp2 {d} : f32"));
                sum = g.let_(k, format!("arith.addf {sum}, {pe} : f32"));
                p[jn].push(pe);
            }
        }
        let rs = g.shuffle_xor(k, &sum, "addf", QUAD);
        lnew.push(g.let_(k, format!("math.fma %l{h}, {}, {rs} : f32", alpha[h])));
        mnew.push(mn);
    }
    // p[jn] holds (row 0: q0, q1; row 1: q2, q3) in that order: the accumulator's layout.
    let mut o: Vec<String> = (0..ntiles_o * 4).map(|x| g.let_(k, format!("arith.mulf %o{x}, {} : f32", alpha[(x % 4) / 2]))).collect();
    // Values: O += P V, 16 keys a step; P's A fragment is two score tiles' accumulators as
    // f16 pairs, V's B fragment an ldmatrix.trans of the value rows (row-major [keys, hd]).
    for kk in 0..BK / 16 {
        let pair = |g: &mut Gen, jn: usize, h: usize| {
            let a = g.let_(k, format!("arith.truncf {} : f32 to f16", p[jn][2 * h]));
            let b2 = g.let_(k, format!("arith.truncf {} : f32 to f16", p[jn][2 * h + 1]));
            g.let_(k, format!("vector.from_elements {a}, {b2} : vector<2xf16>"))
        };
        let a = vec![pair(&mut g, 2 * kk, 0), pair(&mut g, 2 * kk, 1), pair(&mut g, 2 * kk + 1, 0), pair(&mut g, 2 * kk + 1, 1)];
        let row = g.add(k, "%l16", &g.c(kk * 16));
        for d in 0..ntiles_o {
            let l = g.let_(k, format!("nvgpu.ldmatrix %Vs[{row}, {}] {{numTiles = 2 : i32, transpose = true}} : {tile_t} -> vector<2x2xf16>", g.c(d * 8)));
            let bf = frag2(&mut g, &l);
            let r = mma(&mut g, &a, &bf, &o[d * 4..d * 4 + 4]);
            for (q, v) in r.into_iter().enumerate() {
                o[d * 4 + q] = v;
            }
        }
    }
    // The tile's rows are read before the next tile overwrites them.
    g.line(k, "gpu.barrier");
    g.line(k, format!("scf.yield {}, {}, {}, {}, {} : {tys}", mnew[0], mnew[1], lnew[0], lnew[1], o.join(", ")));
    g.line(j, "}");
    // Store each valid row's outputs divided by its sum: accumulator q of output tile d is
    // row q / 2, head-dim value 8 d + t42 + q % 2.
    for (h, (valid, tok, _)) in rows.iter().enumerate() {
        g.line(j, format!("scf.if {valid} {{"));
        let inv = g.let_(k, format!("arith.divf %one, %res#{} : f32", 2 + h));
        for d in 0..ntiles_o {
            for e in 0..2 {
                let x = g.let_(k, format!("arith.mulf %res#{}, {inv} : f32", 4 + d * 4 + 2 * h + e));
                let y = out_value(&mut g, k, &x);
                let col = g.add(k, "%t42", &g.c(d * 8 + e));
                g.line(k, format!("memref.store {y}, %O[{tok}, %hi, {col}] : {ot}"));
            }
        }
        g.line(j, "}");
    }
    g.line(i, "}");
    g.line(i, "gpu.return");
    g.line(4, "}");
    let _ = write!(s, "{}", g.declare_constants("%CONSTANTS%", i));
}
