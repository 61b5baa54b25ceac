//! KV-cache ops end to end: `cache_write` updates the caller's cache in place and
//! `cached_attention` reads it, over a prefill of two rows in different slots and then a
//! decode step of one row, checked against a plain Rust reference.

use max_compiler::{compile, ops, DType, Dim, Graph, Target, TensorType};
use max_runtime::{Device, InferenceSession, Tensor};

mod common;
use common::values;

const LAYERS: usize = 2;
const LAYER: usize = 1;
const HQ: usize = 4;
const HKV: usize = 2;
const D: usize = 16;
const BMAX: usize = 3;
const T: usize = 12;

/// Token tensors `[B, S, H, D]`, or `[B * S, H, D]` when `flat`.
fn tokens(flat: bool, h: usize) -> TensorType {
    let dyn_ = |n: &str| Dim::dynamic(n);
    if flat {
        TensorType::new(DType::F32, [dyn_("N"), Dim::from(h as i64), Dim::from(D as i64)])
    } else {
        TensorType::new(DType::F32, [dyn_("B"), dyn_("S"), Dim::from(h as i64), Dim::from(D as i64)])
    }
}

fn cache_graph(cache_dtype: DType, flat: bool) -> Graph {
    let dyn_ = |n: &str| Dim::dynamic(n);
    let g = Graph::with_named_inputs(
        "step",
        [
            ("q", tokens(flat, HQ)),
            ("k", tokens(flat, HKV)),
            ("v", tokens(flat, HKV)),
            ("pos", TensorType::new(DType::I32, [dyn_("B")])),
            ("slot", TensorType::new(DType::I32, [dyn_("B")])),
            ("k_cache", TensorType::new(cache_dtype, [Dim::from(LAYERS as i64), dyn_("Bmax"), dyn_("T"), Dim::from(HKV as i64), Dim::from(D as i64)])),
            ("v_cache", TensorType::new(cache_dtype, [Dim::from(LAYERS as i64), dyn_("Bmax"), dyn_("T"), Dim::from(HKV as i64), Dim::from(D as i64)])),
        ],
    );
    let i = g.inputs();
    let kc = ops::cache_write(&i[5], &i[1], &i[3], &i[4], LAYER as i64);
    let vc = ops::cache_write(&i[6], &i[2], &i[3], &i[4], LAYER as i64);
    let out = ops::cached_attention(&i[0], &kc, &vc, &i[3], &i[4], LAYER as i64, None);
    g.output([out]);
    g
}

/// Host model of the cache: `[layer][slot][t][h][d]`.
struct RefCache {
    k: Vec<f32>,
    v: Vec<f32>,
}

fn at(slot: usize, t: usize, h: usize) -> usize {
    (((LAYER * BMAX + slot) * T + t) * HKV + h) * D
}

impl RefCache {
    fn write(&mut self, k: &[f32], v: &[f32], b: usize, s: usize, pos: &[i32], slot: &[i32]) {
        for bi in 0..b {
            for si in 0..s {
                for h in 0..HKV {
                    let src = ((bi * s + si) * HKV + h) * D;
                    let dst = at(slot[bi] as usize, pos[bi] as usize + si, h);
                    self.k[dst..dst + D].copy_from_slice(&k[src..src + D]);
                    self.v[dst..dst + D].copy_from_slice(&v[src..src + D]);
                }
            }
        }
    }
    fn attend(&self, q: &[f32], b: usize, s: usize, pos: &[i32], slot: &[i32]) -> Vec<f32> {
        let mut out = vec![0f32; b * s * HQ * D];
        for bi in 0..b {
            for si in 0..s {
                for h in 0..HQ {
                    let qo = ((bi * s + si) * HQ + h) * D;
                    let n = pos[bi] as usize + si + 1;
                    let scores: Vec<f64> = (0..n)
                        .map(|t| {
                            let ko = at(slot[bi] as usize, t, h / (HQ / HKV));
                            (0..D).map(|d| q[qo + d] as f64 * self.k[ko + d] as f64).sum::<f64>() / (D as f64).sqrt()
                        })
                        .collect();
                    let m = scores.iter().cloned().fold(f64::MIN, f64::max);
                    let w: Vec<f64> = scores.iter().map(|x| (x - m).exp()).collect();
                    let z: f64 = w.iter().sum();
                    for d in 0..D {
                        let acc: f64 = (0..n).map(|t| w[t] * self.v[at(slot[bi] as usize, t, h / (HQ / HKV)) + d] as f64).sum();
                        out[qo + d] = (acc / z) as f32;
                    }
                }
            }
        }
        out
    }
}

#[allow(clippy::too_many_arguments)]
fn step(model: &max_runtime::Model, flat: bool, state: &mut [Tensor], reference: &mut RefCache, b: usize, s: usize, pos: &[i32], slot: &[i32], seed: u64, tol: f32) {
    let q = values(b * s * HQ * D, seed, 1.0);
    let k = values(b * s * HKV * D, seed + 1, 1.0);
    let v = values(b * s * HKV * D, seed + 2, 1.0);
    let shape = |h: usize| if flat { vec![b * s, h, D] } else { vec![b, s, h, D] };
    let inputs = vec![
        Tensor::from_slice(&shape(HQ), &q).unwrap(),
        Tensor::from_slice(&shape(HKV), &k).unwrap(),
        Tensor::from_slice(&shape(HKV), &v).unwrap(),
        Tensor::from_slice(&[b], pos).unwrap(),
        Tensor::from_slice(&[b], slot).unwrap(),
    ];
    let out = model.execute_with_state("step", &inputs, state).unwrap().remove(0).to_f32_vec();
    reference.write(&k, &v, b, s, pos, slot);
    let want = reference.attend(&q, b, s, pos, slot);
    for (i, (a, w)) in out.iter().zip(&want).enumerate() {
        assert!((a - w).abs() <= tol * (1.0 + w.abs()), "element {i}: got {a}, want {w}");
    }
    // The caller's cache holds exactly the reference's contents.
    let got_k = state[0].to_f32_vec();
    for (i, (a, w)) in got_k.iter().zip(&reference.k).enumerate() {
        assert!((a - w).abs() <= tol * (1.0 + w.abs()), "k cache element {i}: got {a}, want {w}");
    }
}

fn run(cache_dtype: DType, flat: bool, tol: f32) {
    let artifact = compile(&cache_graph(cache_dtype, flat), Target::host()).unwrap();
    let model = InferenceSession::with_threads(Device::Cpu, 2).load(&artifact).unwrap();
    let n = LAYERS * BMAX * T * HKV * D;
    let shape = [LAYERS, BMAX, T, HKV, D];
    let mut state = vec![Tensor::zeros(cache_dtype, &shape), Tensor::zeros(cache_dtype, &shape)];
    let mut reference = RefCache { k: vec![0.0; n], v: vec![0.0; n] };
    // Prefill two rows of 5 tokens into slots 2 and 0, then decode one token for the row in
    // slot 0, then two tokens for both rows at different positions.
    step(&model, flat, &mut state, &mut reference, 2, 5, &[0, 0], &[2, 0], 10, tol);
    step(&model, flat, &mut state, &mut reference, 1, 1, &[5], &[0], 20, tol);
    step(&model, flat, &mut state, &mut reference, 2, 2, &[6, 5], &[0, 2], 30, tol);
}

#[test]
fn f32_cache_matches_reference() {
    run(DType::F32, false, 1e-5);
}

#[test]
fn flattened_tokens_match_reference() {
    run(DType::F32, true, 1e-5);
}

#[test]
fn f16_cache_matches_reference() {
    run(DType::F16, false, 2e-3);
}

#[test]
fn entry_reports_its_state() {
    let artifact = compile(&cache_graph(DType::F32, true), Target::host()).unwrap();
    let entry = &artifact.manifest().entries[0];
    let mutable: Vec<&str> = entry.inputs.iter().filter(|s| s.mutable).map(|s| s.name.as_str()).collect();
    assert_eq!(mutable, ["k_cache", "v_cache"]);
    let model = InferenceSession::with_threads(Device::Cpu, 1).load(&artifact).unwrap();
    let err = model.execute_entry("step", &[]).unwrap_err().to_string();
    assert!(err.contains("state tensor(s) in place (k_cache, v_cache)"), "{err}");
}
