//! Sampling tests: greedy and filtered sampling, seeded reproducibility (against an
//! independent ChaCha8 written from the spec), the empirical distribution, penalties,
//! log-probabilities, stop strings and finish reasons.

mod common;

use common::{byte_char, gguf_with, i32s, string, strings};
use max_serve::gguf::MetadataValue;
use max_serve::sampling::{
    finish_reason, top_logprobs, FinishReason, LogSoftmax, Sampled, Sampler, SamplingError, SamplingParams,
    StopChecker, StopOutcome,
};
use max_serve::tokenizer::Tokenizer;

fn params() -> SamplingParams {
    SamplingParams { seed: Some(42), ..SamplingParams::default() }
}

fn sampler(p: SamplingParams) -> Sampler {
    Sampler::new(p).unwrap()
}

fn draws(p: SamplingParams, logits: &[f32], n: usize) -> Vec<u32> {
    let mut s = sampler(p);
    (0..n).map(|_| s.sample(logits, &[]).unwrap().token).collect()
}

fn softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let e: Vec<f64> = logits.iter().map(|&l| ((l as f64 - max) / temperature).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Deterministic pseudo-random logits (an LCG, so the test does not depend on `rand`).
fn lcg_logits(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * scale
        })
        .collect()
}

fn assert_close(a: f32, b: f64, tol: f64) {
    assert!((a as f64 - b).abs() <= tol, "{a} vs {b}");
}

// ---------------------------------------------------------------------------------------
// Greedy, temperature, top-k, top-p, min-p
// ---------------------------------------------------------------------------------------

#[test]
fn greedy_picks_argmax_and_breaks_ties_by_lowest_id() {
    let mut s = sampler(SamplingParams::greedy());
    assert_eq!(s.sample(&[0.1, 2.0, -1.0, 1.5], &[]).unwrap(), Sampled { token: 1, logprob: 0.0 });
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0, 3.0], &[]).unwrap().token, 1);
    assert_eq!(s.sample(&[f32::NEG_INFINITY, -5.0, -5.0], &[]).unwrap().token, 1);
    // NaN counts as -inf, wherever it is.
    assert_eq!(s.sample(&[f32::NAN, 1.0, f32::NAN, 0.5], &[]).unwrap().token, 1);
    assert_eq!(s.sample(&[1.0, f32::NAN], &[]).unwrap().token, 0);
    // +inf beats everything; several +inf: lowest id.
    assert_eq!(s.sample(&[1e30, f32::INFINITY, 0.0, f32::INFINITY], &[]).unwrap().token, 1);
}

#[test]
fn tiny_temperature_behaves_like_greedy() {
    for seed in 0..20u64 {
        // A permutation of 0, 0.01, ..., 9.99: the gap of 0.01 at temperature 1e-4 leaves the
        // runner-up a weight of exp(-100), too small to change the sum or to be drawn.
        let logits: Vec<f32> = (0..1000u64).map(|i| ((i * 7919 + seed * 13) % 1000) as f32 * 0.01).collect();
        let greedy = draws(SamplingParams::greedy(), &logits, 1)[0];
        assert_eq!(logits[greedy as usize], 9.99);
        let mut s = sampler(SamplingParams { temperature: 1e-4, seed: Some(seed), ..SamplingParams::default() });
        for _ in 0..20 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), Sampled { token: greedy, logprob: 0.0 });
        }
    }
    // Even the smallest positive temperature neither overflows nor produces NaN.
    let mut s = sampler(SamplingParams { temperature: f32::from_bits(1), ..params() });
    assert_eq!(s.sample(&[-3e38, 3e38, 2.9e38], &[]).unwrap(), Sampled { token: 1, logprob: 0.0 });
}

#[test]
fn tiny_temperature_splits_exact_ties_evenly() {
    // Temperature 0 is an argmax with a tie rule; a tiny positive temperature is still a
    // distribution, so exactly tied maxima share the probability.
    let logits = [1.0, 5.0, 5.0, 4.0];
    assert_eq!(draws(SamplingParams::greedy(), &logits, 50), vec![1; 50]);
    let got = draws(SamplingParams { temperature: 1e-3, ..params() }, &logits, 2000);
    let ones = got.iter().filter(|&&t| t == 1).count();
    assert!(got.iter().all(|&t| t == 1 || t == 2));
    assert!((900..1100).contains(&ones), "{ones} of 2000");
}

#[test]
fn top_k_one_equals_greedy() {
    for seed in 0..20 {
        let mut logits = lcg_logits(5000, seed, 8.0);
        if seed % 2 == 0 {
            // A tie at the top must go to the lowest id here too.
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits[4000] = max;
            logits[17] = max;
        }
        let greedy = draws(SamplingParams::greedy(), &logits, 1)[0];
        let mut s = sampler(SamplingParams { top_k: 1, seed: Some(seed), ..SamplingParams::default() });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), Sampled { token: greedy, logprob: 0.0 });
        }
    }
}

#[test]
fn tiny_top_p_equals_greedy() {
    for seed in 0..20 {
        let mut logits = lcg_logits(5000, seed, 8.0);
        if seed % 2 == 1 {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            logits[3000] = max;
            logits[99] = max;
        }
        let greedy = draws(SamplingParams::greedy(), &logits, 1)[0];
        let mut s = sampler(SamplingParams { top_p: 1e-6, seed: Some(seed), ..SamplingParams::default() });
        for _ in 0..10 {
            assert_eq!(s.sample(&logits, &[]).unwrap(), Sampled { token: greedy, logprob: 0.0 });
        }
    }
}

/// Probabilities 0.5, 0.3, 0.15, 0.05 (shuffled over ids 0..4) as logits.
fn four_way() -> (Vec<f32>, [f64; 4]) {
    let probs = [0.15, 0.5, 0.05, 0.3];
    (probs.iter().map(|&p: &f64| p.ln() as f32).collect(), probs)
}

#[test]
fn top_k_keeps_the_k_most_likely_and_renormalizes() {
    let (logits, probs) = four_way();
    let mut s = sampler(SamplingParams { top_k: 2, ..params() });
    let mut seen = [0usize; 4];
    for _ in 0..2000 {
        let got = s.sample(&logits, &[]).unwrap();
        seen[got.token as usize] += 1;
        let expected = probs[got.token as usize] / (0.5 + 0.3);
        assert_close(got.logprob, expected.ln(), 1e-6);
    }
    assert_eq!((seen[0], seen[2]), (0, 0));
    assert!(seen[1] > 1100 && seen[3] > 600, "{seen:?}");
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    let (logits, probs) = four_way();
    // 0.5 < 0.75 <= 0.5 + 0.3: the two most likely tokens.
    for top_p in [0.75f32, 0.51] {
        let mut s = sampler(SamplingParams { top_p, ..params() });
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            let got = s.sample(&logits, &[]).unwrap();
            seen[got.token as usize] += 1;
            assert_close(got.logprob, (probs[got.token as usize] / 0.8).ln(), 1e-6);
        }
        assert_eq!((seen[0], seen[2]), (0, 0), "top_p {top_p}");
    }
    // 0.9 needs three tokens; 0.5 is reached by the first alone.
    let got = draws(SamplingParams { top_p: 0.9, ..params() }, &logits, 2000);
    assert!(got.contains(&0) && !got.contains(&2));
    assert_eq!(draws(SamplingParams { top_p: 0.5, ..params() }, &logits, 100), vec![1; 100]);
}

/// The nucleus of a large vocabulary, computed the slow way: full sort, ties by id.
fn reference_nucleus(logits: &[f32], temperature: f64, top_p: f64) -> Vec<(u32, f64)> {
    let probs = softmax(logits, temperature);
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    order.sort_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]).then(a.cmp(&b)));
    let mut cumulative = 0.0;
    let mut out = Vec::new();
    for id in order {
        out.push((id, probs[id as usize]));
        cumulative += probs[id as usize];
        if cumulative >= top_p {
            break;
        }
    }
    out
}

#[test]
fn top_p_on_a_large_vocabulary_matches_a_full_sort() {
    // A nucleus of hundreds of tokens exercises the growing-prefix selection (64, 256, ...).
    let logits = lcg_logits(10_000, 7, 12.0);
    let top_p = 0.9;
    let nucleus = reference_nucleus(&logits, 1.0, top_p);
    assert!(nucleus.len() > 300, "nucleus of {} tokens", nucleus.len());
    let mass: f64 = nucleus.iter().map(|&(_, p)| p).sum();
    let mut in_nucleus = vec![None; logits.len()];
    for &(id, p) in &nucleus {
        in_nucleus[id as usize] = Some(p);
    }
    let mut s = sampler(SamplingParams { top_p: top_p as f32, ..params() });
    for _ in 0..100 {
        let got = s.sample(&logits, &[]).unwrap();
        let p = in_nucleus[got.token as usize].expect("token outside the nucleus");
        assert_close(got.logprob, (p / mass).ln(), 1e-5);
    }
    // The same surviving set gives the same tokens whichever filter chose it: top-p alone,
    // with a top-k beyond the vocabulary, and a top-k of exactly the nucleus's size.
    let base = draws(SamplingParams { top_p: top_p as f32, ..params() }, &logits, 100);
    assert_eq!(draws(SamplingParams { top_p: top_p as f32, top_k: 30_000, ..params() }, &logits, 100), base);
    assert_eq!(draws(SamplingParams { top_k: nucleus.len(), ..params() }, &logits, 100), base);
}

#[test]
fn top_k_on_a_large_vocabulary_keeps_exactly_the_top_k() {
    let mut logits = lcg_logits(20_000, 3, 4.0);
    // Ties straddling the cut: ids 10 and 20 share the 40th place; only id 10 may survive.
    let mut sorted = logits.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let cut = sorted[39];
    let twin = logits.iter().position(|&l| l == cut).unwrap();
    logits[twin] = sorted[45]; // out of the top 40
    logits[10] = cut;
    logits[20] = cut;
    let mut allowed: Vec<u32> = (0..logits.len() as u32).filter(|&i| logits[i as usize] > cut || i == 10).collect();
    allowed.sort();
    assert_eq!(allowed.len(), 40);
    let got = draws(SamplingParams { top_k: 40, temperature: 3.0, ..params() }, &logits, 1000);
    assert!(got.iter().all(|t| allowed.binary_search(t).is_ok()));
    assert!(got.contains(&10) && !got.contains(&20));
}

#[test]
fn min_p_drops_tokens_below_a_fraction_of_the_best() {
    let (logits, probs) = four_way();
    // min_p 0.4: threshold 0.4 * 0.5 = 0.2 keeps 0.5 and 0.3.
    let mut s = sampler(SamplingParams { min_p: 0.4, ..params() });
    let mut seen = [0usize; 4];
    for _ in 0..2000 {
        let got = s.sample(&logits, &[]).unwrap();
        seen[got.token as usize] += 1;
        assert_close(got.logprob, (probs[got.token as usize] / 0.8).ln(), 1e-6);
    }
    assert_eq!((seen[0], seen[2]), (0, 0), "{seen:?}");
    // min_p 1 keeps only the best; min_p 0.25 also keeps 0.15 (>= 0.125) but not 0.05.
    assert_eq!(draws(SamplingParams { min_p: 1.0, ..params() }, &logits, 100), vec![1; 100]);
    let got = draws(SamplingParams { min_p: 0.25, ..params() }, &logits, 2000);
    assert!(got.contains(&0) && !got.contains(&2));
    // After temperature 2 the probabilities are ~ sqrt of the above, renormalized: then
    // 0.05 is sqrt(0.1) = 0.32 of the best and survives min_p 0.3.
    let got = draws(SamplingParams { min_p: 0.3, temperature: 2.0, ..params() }, &logits, 4000);
    assert!(got.contains(&2));
    let got = draws(SamplingParams { min_p: 0.33, temperature: 2.0, ..params() }, &logits, 4000);
    assert!(!got.contains(&2));
}

#[test]
fn filters_compose_in_order() {
    let (logits, probs) = four_way();
    // top_k 3 drops 0.05; top_p 0.6 of the renormalized {0.5, 0.3, 0.15} (0.526, 0.316,
    // 0.158) keeps two; min_p 0.7 then drops 0.3 (< 0.7 * 0.5).
    let mut s = sampler(SamplingParams { top_k: 3, top_p: 0.6, ..params() });
    let mut seen = [0usize; 4];
    for _ in 0..1000 {
        let got = s.sample(&logits, &[]).unwrap();
        seen[got.token as usize] += 1;
        assert_close(got.logprob, (probs[got.token as usize] / 0.8).ln(), 1e-6);
    }
    assert!(seen[1] > 0 && seen[3] > 0 && seen[0] == 0 && seen[2] == 0, "{seen:?}");
    let got = draws(SamplingParams { top_k: 3, top_p: 0.6, min_p: 0.7, ..params() }, &logits, 100);
    assert_eq!(got, vec![1; 100]);
    // top-p sees the distribution top-k left: after top_k 2 the best token has 0.625 >= 0.6
    // alone (of the full distribution, 0.5 would need a second token).
    assert_eq!(draws(SamplingParams { top_k: 2, top_p: 0.6, ..params() }, &logits, 100), vec![1; 100]);
    assert!(draws(SamplingParams { top_p: 0.6, ..params() }, &logits, 100).contains(&3));
}

// ---------------------------------------------------------------------------------------
// Reproducibility and the distribution
// ---------------------------------------------------------------------------------------

#[test]
fn same_seed_same_tokens_different_seed_different_tokens() {
    let logits = lcg_logits(300, 11, 6.0);
    let history = [5u32, 9, 9, 299];
    for p in [
        params(),
        SamplingParams { top_k: 50, temperature: 0.8, ..params() },
        SamplingParams { top_p: 0.9, min_p: 0.01, repetition_penalty: 1.3, presence_penalty: 0.5, ..params() },
    ] {
        let run = |seed: u64| {
            let mut s = sampler(SamplingParams { seed: Some(seed), ..p.clone() });
            (0..1000).map(|_| s.sample(&logits, &history).unwrap()).collect::<Vec<_>>()
        };
        let a = run(1234);
        assert_eq!(a, run(1234));
        let b = run(1235);
        let same = a.iter().zip(&b).filter(|(x, y)| x.token == y.token).count();
        assert!(same < 900, "{same} of 1000 equal for different seeds");
    }
    // Unseeded samplers draw from OS entropy: two of them disagree somewhere.
    let unseeded = || {
        let mut s = sampler(SamplingParams::default());
        (0..200).map(|_| s.sample(&logits, &[]).unwrap().token).collect::<Vec<_>>()
    };
    assert_ne!(unseeded(), unseeded());
}

/// ChaCha with 8 rounds, written from the spec (D. J. Bernstein, "ChaCha, a variant of
/// Salsa20"; word layout as in RFC 8439 but with a 64-bit block counter in words 12-13 and
/// a 64-bit nonce in 14-15, the original layout): the keystream as 64-bit outputs, each the
/// little-endian pair of consecutive 32-bit words.
fn reference_chacha8(key: [u8; 32], n: usize) -> Vec<u64> {
    let mut state = [0u32; 16];
    state[..4].copy_from_slice(&[0x6170_7865, 0x3320_646e, 0x7962_2d32, 0x6b20_6574]);
    for i in 0..8 {
        state[4 + i] = u32::from_le_bytes(key[4 * i..4 * i + 4].try_into().unwrap());
    }
    fn quarter(x: &mut [u32; 16], a: usize, b: usize, c: usize, d: usize) {
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(16);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(12);
        x[a] = x[a].wrapping_add(x[b]);
        x[d] = (x[d] ^ x[a]).rotate_left(8);
        x[c] = x[c].wrapping_add(x[d]);
        x[b] = (x[b] ^ x[c]).rotate_left(7);
    }
    let mut words = Vec::new();
    for counter in 0u64.. {
        if words.len() >= 2 * n {
            break;
        }
        state[12] = counter as u32;
        state[13] = (counter >> 32) as u32;
        let mut x = state;
        for _ in 0..4 {
            quarter(&mut x, 0, 4, 8, 12);
            quarter(&mut x, 1, 5, 9, 13);
            quarter(&mut x, 2, 6, 10, 14);
            quarter(&mut x, 3, 7, 11, 15);
            quarter(&mut x, 0, 5, 10, 15);
            quarter(&mut x, 1, 6, 11, 12);
            quarter(&mut x, 2, 7, 8, 13);
            quarter(&mut x, 3, 4, 9, 14);
        }
        words.extend(x.iter().zip(&state).map(|(a, b)| a.wrapping_add(*b)));
    }
    words.chunks(2).take(n).map(|w| w[0] as u64 | (w[1] as u64) << 32).collect()
}

#[test]
fn seeded_draws_are_the_documented_chacha8_keystream() {
    // Seed s keys ChaCha8 with s's 8 little-endian bytes and 24 zeros; each draw takes one
    // 64-bit output x, u = (x >> 11) / 2^53, and picks by inverse CDF in id order. Recomputed
    // here from scratch, so that a change of generator, keying or mapping is caught.
    let logits = [0.5f32, -1.0, 2.0, 0.0, 1.0];
    let probs = softmax(&logits, 1.0);
    for seed in [0u64, 1, 42, 0xdead_beef_cafe_f00d] {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&seed.to_le_bytes());
        let expected: Vec<u32> = reference_chacha8(key, 300)
            .into_iter()
            .map(|x| {
                let u = (x >> 11) as f64 / (1u64 << 53) as f64;
                let mut cumulative = 0.0;
                probs
                    .iter()
                    .position(|p| {
                        cumulative += p;
                        u < cumulative
                    })
                    .unwrap_or(probs.len() - 1) as u32
            })
            .collect();
        let got = draws(SamplingParams { seed: Some(seed), ..SamplingParams::default() }, &logits, 300);
        // The reference normalizes before accumulating, the sampler scales u instead: the two
        // can disagree only for u within rounding of a boundary, which these draws avoid.
        assert_eq!(got, expected, "seed {seed}");
    }
}

#[test]
fn seeded_sequence_is_pinned() {
    // Pinned output for one seed and row, so that any change to what a seed produces (the
    // generator, its keying, the float mapping, the draw order, the filters) shows up here.
    let logits = [0.5f32, -1.0, 2.0, 0.0, 1.0, f32::NAN, 1.5, -0.5];
    let got = draws(SamplingParams { seed: Some(2024), ..SamplingParams::default() }, &logits, 40);
    let expected: Vec<u32> = vec![
        2, 2, 2, 4, 1, 4, 1, 6, 2, 6, 2, 2, 3, 6, 0, 2, 2, 2, 2, 2, 6, 4, 0, 4, 6, 2, 7, 6, 6, 6, 0, 4, 6, 2, 2, 3, 1,
        2, 2, 2,
    ];
    assert_eq!(got, expected);
    let got = draws(
        SamplingParams { seed: Some(7), temperature: 0.7, top_k: 4, top_p: 0.9, ..SamplingParams::default() },
        &logits,
        40,
    );
    let expected: Vec<u32> = vec![
        6, 2, 2, 2, 2, 2, 2, 2, 4, 6, 4, 4, 2, 2, 6, 4, 2, 2, 2, 4, 2, 2, 2, 2, 4, 6, 2, 2, 2, 2, 2, 6, 2, 2, 2, 6, 2,
        2, 6, 2,
    ];
    assert_eq!(got, expected);
}

#[test]
fn empirical_distribution_matches_softmax() {
    // 20k draws at temperature 1 (and 0.6) over 8 tokens. A category's frequency has standard
    // deviation sqrt(p(1 - p) / 20000) <= 0.0036, so a max abs difference of 0.015 is over
    // 4 sigma; the chi-square statistic (7 degrees of freedom) must stay under 24.3, its
    // 0.1% critical value. The draws are seeded, so the test is deterministic.
    let logits = [1.0f32, 0.2, -0.5, 2.1, 0.0, -2.0, 1.4, 0.7];
    for temperature in [1.0f32, 0.6] {
        let n = 20_000;
        let mut counts = [0usize; 8];
        for t in draws(SamplingParams { temperature, ..params() }, &logits, n) {
            counts[t as usize] += 1;
        }
        let probs = softmax(&logits, temperature as f64);
        let mut chi2 = 0.0;
        for (c, p) in counts.iter().zip(&probs) {
            let freq = *c as f64 / n as f64;
            assert!((freq - p).abs() < 0.015, "T {temperature}: {counts:?} vs {probs:?}");
            let expected = p * n as f64;
            chi2 += (*c as f64 - expected).powi(2) / expected;
        }
        assert!(chi2 < 24.3, "T {temperature}: chi-square {chi2}");
    }
}

#[test]
fn logprob_is_of_the_sampling_distribution() {
    let logits = [1.0f32, 0.2, -0.5, 2.1];
    let mut s = sampler(SamplingParams { temperature: 0.5, ..params() });
    let probs = softmax(&logits, 0.5);
    for _ in 0..100 {
        let got = s.sample(&logits, &[]).unwrap();
        assert_close(got.logprob, probs[got.token as usize].ln(), 1e-6);
    }
}

#[test]
fn infinite_logits_share_the_probability() {
    let logits = [0.0, f32::INFINITY, 1e30, f32::INFINITY, f32::NAN];
    let got = draws(params(), &logits, 1000);
    assert!(got.iter().all(|&t| t == 1 || t == 3));
    assert!(got.contains(&1) && got.contains(&3));
    let mut s = sampler(params());
    assert_close(s.sample(&logits, &[]).unwrap().logprob, 0.5f64.ln(), 1e-6);
    // NaN and -inf are never drawn.
    let got = draws(params(), &[f32::NAN, 0.0, f32::NEG_INFINITY, 0.0, f32::NAN], 500);
    assert!(got.iter().all(|&t| t == 1 || t == 3));
}

// ---------------------------------------------------------------------------------------
// Penalties
// ---------------------------------------------------------------------------------------

#[test]
fn penalties_follow_the_formulas() {
    let logits = [2.0f32, -1.0, 0.5, 3.0, -2.0, 0.0];
    // Token 0 once, 1 twice, 3 three times, 5 once; 2 and 4 never; 99 is out of range.
    let history = [3u32, 1, 0, 3, 99, 1, 3, 5];
    let count = [1.0f32, 2.0, 0.0, 3.0, 0.0, 1.0];
    let apply = |p: SamplingParams| {
        let mut l = logits;
        sampler(p).apply_penalties(&mut l, &history);
        l
    };

    // Repetition: positive logits divided, negative multiplied, once per distinct token.
    let rep = apply(SamplingParams { repetition_penalty: 1.5, ..params() });
    assert_eq!(rep, [2.0 / 1.5, -1.5, 0.5, 3.0 / 1.5, -2.0, 0.0]);
    let rep = apply(SamplingParams { repetition_penalty: 0.5, ..params() });
    assert_eq!(rep, [4.0, -0.5, 0.5, 6.0, -2.0, 0.0]);

    // OpenAI: l - c * frequency - (c > 0) * presence.
    let pen = apply(SamplingParams { presence_penalty: 0.5, frequency_penalty: 0.25, ..params() });
    let expected: Vec<f32> =
        (0..6).map(|i| if count[i] > 0.0 { logits[i] - count[i] * 0.25 - 0.5 } else { logits[i] }).collect();
    assert_eq!(pen.to_vec(), expected);
    assert_eq!(pen, [1.25, -2.0, 0.5, 1.75, -2.0, -0.75]);
    // Negative values encourage repetition.
    let pen = apply(SamplingParams { presence_penalty: -1.0, frequency_penalty: -0.5, ..params() });
    assert_eq!(pen, [3.5, 1.0, 0.5, 5.5, -2.0, 1.5]);

    // All three: repetition first, then the OpenAI terms.
    let all =
        apply(SamplingParams { repetition_penalty: 2.0, presence_penalty: 0.5, frequency_penalty: 1.0, ..params() });
    assert_eq!(all, [2.0 / 2.0 - 1.0 - 0.5, -2.0 - 2.0 - 0.5, 0.5, 3.0 / 2.0 - 3.0 - 0.5, -2.0, 0.0 - 1.0 - 0.5]);

    // Defaults change nothing; the scratch counts do not leak into the next call.
    assert_eq!(apply(params()), logits);
    let mut s = sampler(SamplingParams { frequency_penalty: 1.0, ..params() });
    let mut l = logits;
    s.apply_penalties(&mut l, &history);
    let mut l = logits;
    s.apply_penalties(&mut l, &[2]);
    assert_eq!(l, [2.0, -1.0, -0.5, 3.0, -2.0, 0.0]);
}

#[test]
fn penalties_steer_sampling() {
    // Greedy would repeat token 0; the history pushes it below token 1.
    let logits = [2.0f32, 1.5, 0.0];
    let mut s = sampler(SamplingParams { frequency_penalty: 0.3, ..SamplingParams::greedy() });
    assert_eq!(s.sample(&logits, &[0]).unwrap().token, 0); // 1.7 > 1.5
    assert_eq!(s.sample(&logits, &[0, 0]).unwrap().token, 1); // 1.4 < 1.5
    let mut s = sampler(SamplingParams { repetition_penalty: 1.5, ..SamplingParams::greedy() });
    assert_eq!(s.sample(&logits, &[0, 7, 1_000_000]).unwrap().token, 1); // 1.33 < 1.5
                                                                         // A penalty that leaves nothing finite is an error, not a panic.
    let mut s = sampler(SamplingParams { repetition_penalty: 2.0, ..params() });
    assert_eq!(s.sample(&[-3e38, f32::NEG_INFINITY], &[0]), Err(SamplingError::NoCandidates));
}

// ---------------------------------------------------------------------------------------
// Log-probabilities
// ---------------------------------------------------------------------------------------

#[test]
fn top_logprobs_are_log_softmax() {
    let logits = lcg_logits(1000, 5, 10.0);
    let probs = softmax(&logits, 1.0);
    let lsm = LogSoftmax::new(&logits);
    let total: f64 = (0..1000).map(|i| (lsm.logprob(i).unwrap() as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5, "{total}");
    for i in 0..1000u32 {
        assert_close(lsm.logprob(i).unwrap(), probs[i as usize].ln(), 1e-4);
    }
    assert_eq!(lsm.logprob(1000), None);

    let top = top_logprobs(&logits, 5);
    let mut order: Vec<usize> = (0..1000).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    assert_eq!(top.iter().map(|&(id, _)| id as usize).collect::<Vec<_>>(), order[..5]);
    for &(id, lp) in &top {
        assert_eq!(lp, lsm.logprob(id).unwrap());
    }
    let all = top_logprobs(&logits, 5000);
    assert_eq!(all.len(), 1000);
    let total: f64 = all.iter().map(|&(_, lp)| (lp as f64).exp()).sum();
    assert!((total - 1.0).abs() < 1e-5);
    assert!(top_logprobs(&logits, 0).is_empty());
}

#[test]
fn top_logprobs_ties_nan_and_infinities() {
    let logits = [0.0f32, 1.0, f32::NAN, 1.0, f32::NEG_INFINITY, 0.0];
    let top = top_logprobs(&logits, 10);
    // Ties by id; NaN and -inf (probability 0) are left out.
    assert_eq!(top.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [1, 3, 0, 5]);
    let norm = (2.0 * 1f64.exp() + 2.0).ln();
    assert_close(top[0].1, 1.0 - norm, 1e-6);
    assert_close(top[2].1, -norm, 1e-6);
    assert_eq!(LogSoftmax::new(&logits).logprob(2), Some(f32::NEG_INFINITY));
    // Huge logits do not overflow.
    let top = top_logprobs(&[3e38, 3e38, -3e38], 3);
    assert_eq!(top.len(), 2);
    assert_close(top[0].1, 0.5f64.ln(), 1e-6);
    // +inf logits share the mass; rows with no mass give nothing.
    let top = top_logprobs(&[f32::INFINITY, 0.0, f32::INFINITY, f32::INFINITY], 4);
    assert_eq!(top.iter().map(|&(id, _)| id).collect::<Vec<_>>(), [0, 2, 3]);
    assert_close(top[0].1, (1.0f64 / 3.0).ln(), 1e-6);
    assert!(top_logprobs(&[f32::NAN, f32::NEG_INFINITY], 2).is_empty());
    assert!(top_logprobs(&[], 2).is_empty());
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

fn invalid(p: SamplingParams) -> &'static str {
    match Sampler::new(p.clone()) {
        Err(SamplingError::InvalidParameter { name, reason }) => {
            assert_eq!(p.validate(), Err(SamplingError::InvalidParameter { name, reason: reason.clone() }));
            assert!(!reason.is_empty());
            name
        }
        other => panic!("{p:?} gave {other:?}"),
    }
}

#[test]
fn invalid_params_are_errors() {
    let d = SamplingParams::default;
    for t in [-0.1, f32::NAN, f32::INFINITY, -f32::INFINITY] {
        assert_eq!(invalid(SamplingParams { temperature: t, ..d() }), "temperature");
    }
    for p in [0.0, -0.5, 1.0001, f32::NAN] {
        assert_eq!(invalid(SamplingParams { top_p: p, ..d() }), "top_p");
    }
    for m in [-0.1, 1.1, f32::NAN] {
        assert_eq!(invalid(SamplingParams { min_p: m, ..d() }), "min_p");
    }
    for r in [0.0, -1.0, f32::NAN, f32::INFINITY] {
        assert_eq!(invalid(SamplingParams { repetition_penalty: r, ..d() }), "repetition_penalty");
    }
    for x in [2.5, -2.01, f32::NAN] {
        assert_eq!(invalid(SamplingParams { presence_penalty: x, ..d() }), "presence_penalty");
        assert_eq!(invalid(SamplingParams { frequency_penalty: x, ..d() }), "frequency_penalty");
    }
    assert_eq!(invalid(SamplingParams { max_tokens: 0, ..d() }), "max_tokens");
    assert_eq!(invalid(SamplingParams { stop: vec!["x".into(), String::new()], ..d() }), "stop");
    let err = Sampler::new(SamplingParams { top_p: 1.5, ..d() }).unwrap_err();
    assert_eq!(err.to_string(), "invalid sampling parameter `top_p`: must be in (0, 1], got 1.5");

    // Boundaries are valid; top_k 0 means off.
    for p in [
        d(),
        SamplingParams::greedy(),
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 1.0, ..d() },
        SamplingParams { top_p: f32::MIN_POSITIVE, min_p: 0.0, repetition_penalty: 1e-3, ..d() },
        SamplingParams { presence_penalty: -2.0, frequency_penalty: 2.0, max_tokens: 1, ..d() },
    ] {
        p.validate().unwrap();
    }
}

#[test]
fn samplers_and_checkers_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<Sampler>();
    assert_send::<StopChecker>();
    assert_send::<SamplingError>();
}

#[test]
fn bad_logits_are_errors() {
    let mut s = sampler(params());
    assert_eq!(s.sample(&[], &[]), Err(SamplingError::EmptyLogits));
    assert_eq!(s.sample(&[f32::NEG_INFINITY; 3], &[]), Err(SamplingError::NoCandidates));
    assert_eq!(s.sample(&[f32::NAN, f32::NEG_INFINITY], &[]), Err(SamplingError::NoCandidates));
    let mut g = sampler(SamplingParams::greedy());
    assert_eq!(g.sample(&[f32::NAN; 4], &[]), Err(SamplingError::NoCandidates));
    // The sampler still works afterwards, and a shorter row after a longer one is fine.
    assert_eq!(s.sample(&[f32::NAN, 0.0, f32::NEG_INFINITY], &[]).unwrap().token, 1);
    let mut p = sampler(SamplingParams { presence_penalty: 1.0, ..params() });
    p.sample(&lcg_logits(100, 1, 1.0), &[90, 50]).unwrap();
    p.sample(&[0.0, 0.0], &[90, 1]).unwrap();
}

// ---------------------------------------------------------------------------------------
// Stop strings
// ---------------------------------------------------------------------------------------

/// Feeds `pieces` and returns the emitted text and the matched stop's index (`finish` is
/// called when nothing matched).
fn run_stops(stops: &[&str], pieces: &[&str]) -> (String, Option<usize>) {
    let mut checker = StopChecker::new(stops);
    let mut out = String::new();
    for piece in pieces {
        let (emit, stop) = checker.push(piece).into_parts();
        out.push_str(&emit);
        if stop.is_some() {
            return (out, stop);
        }
    }
    out.push_str(&checker.finish());
    (out, None)
}

/// The non-streaming answer: the text up to the stop string that ends first.
fn reference_stop(stops: &[&str], text: &str) -> (String, Option<usize>) {
    let found = stops
        .iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .filter_map(|(i, s)| text.find(s).map(|start| (start + s.len(), start, i)))
        .min();
    match found {
        Some((_, start, i)) => (text[..start].to_string(), Some(i)),
        None => (text.to_string(), None),
    }
}

#[test]
fn stop_string_split_across_pieces_is_held_back_and_removed() {
    let mut c = StopChecker::new(["</answer>"]);
    assert_eq!(c.push("The answer is 4"), StopOutcome::Continue("The answer is 4".into()));
    assert_eq!(c.push(".</"), StopOutcome::Continue(".".into()));
    assert_eq!(c.held(), "</");
    assert_eq!(c.push("ans"), StopOutcome::Continue(String::new()));
    assert_eq!(c.push("wer> trailing"), StopOutcome::Stop { text: String::new(), stop: 0 });

    // A false start is released as soon as it cannot be a stop string any more.
    let mut c = StopChecker::new(["</answer>"]);
    assert_eq!(c.push("a </an"), StopOutcome::Continue("a ".into()));
    assert_eq!(c.push("d b"), StopOutcome::Continue("</and b".into()));
    assert_eq!(c.push("<"), StopOutcome::Continue(String::new()));
    assert_eq!(c.finish(), "<");
    assert_eq!(c.finish(), "");

    assert_eq!(run_stops(&["STOP"], &["ab", "cS", "T", "OPde"]), ("abc".into(), Some(0)));
    assert_eq!(run_stops(&["\n\n"], &["line\n", "\nnext"]), ("line".into(), Some(0)));
    // Within one piece, with text after it.
    assert_eq!(run_stops(&["x", "yy"], &["abyyxc"]), ("ab".into(), Some(1)));
}

#[test]
fn overlapping_stop_strings() {
    // "ab" completes before "abc" can.
    assert_eq!(run_stops(&["abc", "ab"], &["xa", "bc"]), ("x".into(), Some(1)));
    assert_eq!(run_stops(&["abc", "ab"], &["xabc"]), ("x".into(), Some(1)));
    // Same end: the longer (earlier-starting) one.
    assert_eq!(run_stops(&["bc", "abc"], &["xab", "cz"]), ("x".into(), Some(1)));
    // "abc" is held while "abd" or "abc" is possible, then released when neither is.
    let mut c = StopChecker::new(["abd", "bce"]);
    assert_eq!(c.push("xab"), StopOutcome::Continue("x".into()));
    assert_eq!(c.push("c"), StopOutcome::Continue("a".into())); // "bc" may still become "bce"
    assert_eq!(c.push("q"), StopOutcome::Continue("bcq".into()));
    // A stop string that is a suffix of another's prefix: "aab" inside "aaab".
    assert_eq!(run_stops(&["aab"], &["a", "a", "a", "b"]), ("a".into(), Some(0)));
    // Duplicates and empty strings are harmless; the first index is reported.
    assert_eq!(run_stops(&["", "end", "end"], &["the e", "nd"]), ("the ".into(), Some(1)));
}

#[test]
fn multibyte_text_and_stop_strings() {
    // Stop string of multi-byte characters, split between characters.
    assert_eq!(run_stops(&["日本"], &["今日は", "日", "本です"]), ("今日は".into(), Some(0)));
    // A held-back multi-byte prefix released later.
    let mut c = StopChecker::new(["é!"]);
    assert_eq!(c.push("café"), StopOutcome::Continue("caf".into()));
    assert_eq!(c.push(" ok"), StopOutcome::Continue("é ok".into()));
    // Multi-byte prefixes that share a lead byte: "é" (C3 A9) vs "è" (C3 A8) never matches
    // inside a character.
    assert_eq!(run_stops(&["è"], &["é", "éé"]), ("ééé".into(), None));
    assert_eq!(run_stops(&["🙂🙃"], &["a🙂", "🙂", "🙃b"]), ("a🙂".into(), Some(0)));
}

#[test]
fn no_stop_strings_pass_everything_through() {
    let mut c = StopChecker::new(Vec::<String>::new());
    for piece in ["Hello", ", ", "wörld", "!"] {
        assert_eq!(c.push(piece), StopOutcome::Continue(piece.into()));
    }
    assert_eq!(c.finish(), "");
    assert_eq!(run_stops(&["zz"], &["ab", "cz", "d"]), ("abczd".into(), None));
}

#[test]
fn streaming_matches_the_whole_text_for_every_split() {
    let cases: &[(&[&str], &str)] = &[
        (&["ab", "abc"], "xxabcab"),
        (&["abc", "bcd", "d"], "zabcd"),
        (&["</s>", "<|im_end|>"], "Hi <|im_en|> there <|im_end|> more"),
        (&["ñu", "u"], "añuu"),
        (&["needle"], "haystack without it"),
        (&["aa", "aab"], "baab"),
    ];
    for &(stops, text) in cases {
        let reference = reference_stop(stops, text);
        let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
        // Every way to cut the text into two or three pieces, and one piece per character.
        for (i, &a) in bounds.iter().enumerate() {
            for &b in &bounds[i..] {
                let pieces = [&text[..a], &text[a..b], &text[b..]];
                assert_eq!(run_stops(stops, &pieces), reference, "{stops:?} {pieces:?}");
            }
        }
        let chars: Vec<String> = text.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run_stops(stops, &chars), reference, "{stops:?} per character");
    }
}

// ---------------------------------------------------------------------------------------
// Finish reasons
// ---------------------------------------------------------------------------------------

/// A byte-level vocabulary: 0 = `<|endoftext|>` (EOS), 1 = `<|im_end|>` (also ends
/// generation), then the 256 byte characters.
fn tokenizer() -> Tokenizer {
    let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_end|>".into()];
    tokens.extend((0..=255u8).map(|b| byte_char(b).to_string()));
    let mut types = vec![3; 2];
    types.extend(std::iter::repeat_n(1, 256));
    Tokenizer::from_gguf(&gguf_with(&[
        ("tokenizer.ggml.model", string("gpt2")),
        ("tokenizer.ggml.pre", string("gpt2")),
        ("tokenizer.ggml.tokens", strings(&tokens)),
        ("tokenizer.ggml.token_type", i32s(&types)),
        ("tokenizer.ggml.merges", strings::<&str>(&[])),
        ("tokenizer.ggml.eos_token_id", MetadataValue::U32(0)),
    ]))
    .unwrap()
}

#[test]
fn finish_reasons() {
    let tok = tokenizer();
    assert!(tok.is_eos(0) && tok.is_eos(1) && !tok.is_eos(2));
    let a = tok.token_to_id("a").unwrap();
    assert_eq!(finish_reason(&tok, a, 1, 10, false), None);
    assert_eq!(finish_reason(&tok, 0, 1, 10, false), Some(FinishReason::Stop));
    assert_eq!(finish_reason(&tok, 1, 3, 10, false), Some(FinishReason::Stop));
    assert_eq!(finish_reason(&tok, a, 3, 10, true), Some(FinishReason::Stop));
    assert_eq!(finish_reason(&tok, a, 10, 10, false), Some(FinishReason::Length));
    // EOS or a stop string on the last allowed token is still a stop.
    assert_eq!(finish_reason(&tok, 0, 10, 10, false), Some(FinishReason::Stop));
    assert_eq!(finish_reason(&tok, a, 10, 10, true), Some(FinishReason::Stop));
    assert_eq!(finish_reason(&tok, a, 1, usize::MAX, false), None);
    assert_eq!(FinishReason::Stop.as_str(), "stop");
    assert_eq!(FinishReason::Length.to_string(), "length");
}

#[test]
fn generation_loop_with_stop_string_eos_and_length() {
    // Drive the whole loop from the module docs with a fake model that spells out a script,
    // one byte token per step, then EOS.
    let tok = tokenizer();
    let script = |text: &str| -> Vec<u32> {
        let mut ids = tok.encode(text, false).unwrap();
        ids.push(0);
        ids
    };
    let run = |text: &str, p: SamplingParams| -> (String, FinishReason, usize) {
        let ids = script(text);
        let mut sampler = Sampler::new(p.clone()).unwrap();
        let mut decoder = tok.stream_decoder(true);
        let mut stops = StopChecker::new(&p.stop);
        let (mut out, mut generated) = (String::new(), 0);
        loop {
            let mut logits = vec![0.0f32; tok.vocab_size()];
            logits[ids[generated] as usize] = 10.0;
            let token = sampler.sample(&logits, &ids[..generated]).unwrap().token;
            generated += 1;
            let mut hit = false;
            if !tok.is_eos(token) {
                if let Some(piece) = decoder.step(token).unwrap() {
                    let (emit, stop) = stops.push(&piece).into_parts();
                    out.push_str(&emit);
                    hit = stop.is_some();
                }
            }
            if let Some(reason) = finish_reason(&tok, token, generated, p.max_tokens, hit) {
                if !hit {
                    if let Some(piece) = decoder.flush().unwrap() {
                        out.push_str(&stops.push(&piece).into_parts().0);
                    }
                    out.push_str(&stops.finish());
                }
                return (out, reason, generated);
            }
        }
    };
    let greedy = SamplingParams::greedy;
    assert_eq!(run("héllo wörld", greedy()), ("héllo wörld".into(), FinishReason::Stop, 12 + 2));
    let stop = SamplingParams { stop: vec!["wö".into(), "xyz".into()], ..greedy() };
    // "wö" is three byte tokens; generation stops on the last of them.
    assert_eq!(run("héllo wörld", stop), ("héllo ".into(), FinishReason::Stop, 10));
    let short = SamplingParams { max_tokens: 3, stop: vec!["lo!".into()], ..greedy() };
    // "h", "é" (two tokens): the held-back text is flushed at the length limit.
    assert_eq!(run("héllo", short), ("hé".into(), FinishReason::Length, 3));
    let held = SamplingParams { max_tokens: 4, stop: vec!["lo!".into()], ..greedy() };
    assert_eq!(run("héllo", held), ("hél".into(), FinishReason::Length, 4));
}
