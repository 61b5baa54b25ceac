//! Choosing the next token from a model's logits, and deciding when generation ends.
//!
//! [`Sampler::sample`] turns one row of logits into a token. It applies, in this order:
//!
//! 1. the repetition, presence and frequency penalties against the token history,
//! 2. the temperature (0 = greedy: the argmax, ties broken by the lowest id),
//! 3. top-k, top-p (nucleus) and min-p, each on the distribution the previous step left,
//! 4. a draw from what remains, renormalized, with a seeded ChaCha8 generator.
//!
//! [`LogSoftmax`] (and [`top_logprobs`]) give the log-probabilities that OpenAI's `logprobs` /
//! `top_logprobs` report, which are those of the raw logits, not of the sampling distribution.
//!
//! Text-level stopping is separate: [`StopChecker`] watches the decoded text for stop strings
//! and holds back what could still become one; [`finish_reason`] combines EOS, stop strings
//! and `max_tokens` into a [`FinishReason`].
//!
//! One generation, end to end (`next_logits` stands in for the model):
//!
//! ```no_run
//! use max_serve::sampling::{finish_reason, FinishReason, Sampler, SamplingParams, StopChecker, StopOutcome};
//! use max_serve::tokenizer::Tokenizer;
//!
//! fn generate(
//!     tokenizer: &Tokenizer,
//!     prompt: &[u32],
//!     params: SamplingParams,
//!     mut next_logits: impl FnMut(&[u32]) -> Vec<f32>,
//! ) -> Result<(String, FinishReason), Box<dyn std::error::Error>> {
//!     let mut sampler = Sampler::new(params.clone())?;
//!     let mut decoder = tokenizer.stream_decoder(true);
//!     let mut stops = StopChecker::new(&params.stop);
//!     let mut tokens = prompt.to_vec();
//!     let mut text = String::new();
//!     loop {
//!         let logits = next_logits(&tokens);
//!         // OpenAI's penalties count the completion's tokens only.
//!         let token = sampler.sample(&logits, &tokens[prompt.len()..])?.token;
//!         tokens.push(token);
//!         let mut stop_hit = false;
//!         if !tokenizer.is_eos(token) {
//!             if let Some(piece) = decoder.step(token)? {
//!                 let (emit, hit) = stops.push(&piece).into_parts();
//!                 text.push_str(&emit); // a server would stream `emit` here
//!                 stop_hit = hit.is_some();
//!             }
//!         }
//!         let generated = tokens.len() - prompt.len();
//!         if let Some(reason) = finish_reason(tokenizer, token, generated, params.max_tokens, stop_hit) {
//!             if !stop_hit {
//!                 // Ending for another reason: what the decoder and the checker still hold
//!                 // goes out, unless it completes a stop string after all.
//!                 if let Some(piece) = decoder.flush()? {
//!                     if let StopOutcome::Stop { text: emit, .. } = stops.push(&piece) {
//!                         text.push_str(&emit);
//!                         return Ok((text, FinishReason::Stop));
//!                     }
//!                 }
//!                 text.push_str(&stops.finish());
//!             }
//!             return Ok((text, reason));
//!         }
//!     }
//! }
//! ```
//!
//! Reproducibility: with [`SamplingParams::seed`] set, the same parameters, logits and history
//! give the same tokens on every machine. The generator is ChaCha8 (one of `rand`'s named
//! portable generators: a fixed algorithm and byte order), keyed by the seed as described at
//! [`SamplingParams::seed`]; each non-greedy draw consumes exactly one 64-bit output. Everything
//! between the logits and the token — the exponentials, sums in a fixed order, the mapping of
//! the random bits to a number in `[0, 1)` — is this module's own IEEE arithmetic rather than
//! libm's or `rand`'s distributions, whose last bits may differ by platform or version. The
//! tests check the stream against a ChaCha8 written from the specification.

use std::cmp::Ordering;
use std::fmt;

use rand::rngs::{ChaCha8Rng, SysRng};
use rand::{Rng, SeedableRng};

use crate::tokenizer::Tokenizer;

/// Errors from sampling: invalid parameters, or logits nothing can be drawn from.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// A [`SamplingParams`] field is out of range (the message names the field and value).
    #[error("invalid sampling parameter `{name}`: {reason}")]
    InvalidParameter {
        /// The field, spelled as in [`SamplingParams`] (and in OpenAI's API).
        name: &'static str,
        /// What is wrong, with the value found.
        reason: String,
    },
    /// The logits row has no entries.
    #[error("cannot sample from an empty logits row")]
    EmptyLogits,
    /// The logits row has more entries than `u32` token ids can name.
    #[error("a logits row of {0} entries is larger than any vocabulary of u32 token ids")]
    TooManyLogits(usize),
    /// Every logit is `-inf` or NaN (NaN counts as `-inf`), possibly after the penalties, so
    /// no token has a positive probability.
    #[error("no token can be sampled: every logit is -inf or NaN")]
    NoCandidates,
    /// The operating system's entropy source failed while seeding an unseeded sampler.
    #[error("cannot seed the sampler from the operating system's entropy source: {0}")]
    Entropy(String),
}

/// Result alias for this module.
pub type Result<T, E = SamplingError> = std::result::Result<T, E>;

/// How to pick tokens, and when to stop. Field names and meanings follow OpenAI's API where
/// it has the parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens. `0` means
    /// greedy: the highest logit (after penalties), ties broken by the lowest token id. Must
    /// be finite and `>= 0`.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (ties broken by the lowest id). `0` disables.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of most likely tokens whose probabilities sum
    /// to at least `top_p` (always at least one token). In `(0, 1]`; `1` disables.
    pub top_p: f32,
    /// Keep only tokens whose probability is at least `min_p` times the most likely token's.
    /// In `[0, 1]`; `0` disables.
    pub min_p: f32,
    /// Seed for the random draws; `None` seeds from the operating system's entropy source.
    ///
    /// The generator is `rand`'s `ChaCha8Rng` whose 32-byte key is the seed's 8 little-endian
    /// bytes followed by 24 zero bytes (nonce and block counter start at 0). Keying directly,
    /// rather than through `SeedableRng::seed_from_u64`, keeps the stream a plain ChaCha8
    /// keystream that other implementations can reproduce.
    pub seed: Option<u64>,
    /// Hugging Face / llama.cpp repetition penalty: the logit of every token that occurs in
    /// the history is divided by it when positive and multiplied by it otherwise, once per
    /// distinct token. Finite and `> 0`; `1` disables.
    pub repetition_penalty: f32,
    /// OpenAI's presence penalty: subtracted once from the logit of every token that occurs
    /// in the history. In `[-2, 2]`; `0` disables.
    pub presence_penalty: f32,
    /// OpenAI's frequency penalty: subtracted from a token's logit once per occurrence in the
    /// history. In `[-2, 2]`; `0` disables.
    pub frequency_penalty: f32,
    /// Most tokens to generate (at least 1). The default, `usize::MAX`, leaves the limit to
    /// the context size.
    pub max_tokens: usize,
    /// Generation stops when the text contains one of these (see [`StopChecker`]); the stop
    /// string itself is not returned. None may be empty.
    pub stop: Vec<String>,
    /// Keep generating past end-of-generation tokens (for benchmarks; vLLM's `ignore_eos`).
    pub ignore_eos: bool,
    /// Record each generated token's log-probability under the model's own distribution,
    /// with this many most likely alternatives (OpenAI's `logprobs` / `top_logprobs`);
    /// `None` records nothing.
    pub logprobs: Option<usize>,
}

impl Default for SamplingParams {
    /// OpenAI's defaults: temperature 1, no truncation, no penalties, no stop strings.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            seed: None,
            repetition_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            max_tokens: usize::MAX,
            stop: Vec::new(),
            ignore_eos: false,
            logprobs: None,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding: temperature 0, everything else default.
    pub fn greedy() -> Self {
        SamplingParams { temperature: 0.0, ..Self::default() }
    }

    /// Checks every field's range (see the field docs). NaN is invalid everywhere.
    pub fn validate(&self) -> Result<()> {
        // Conditions are written as "valid if" and negated, so that NaN (for which every
        // comparison is false) fails them.
        fn check(ok: bool, name: &'static str, reason: impl FnOnce() -> String) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(SamplingError::InvalidParameter { name, reason: reason() })
            }
        }
        let t = self.temperature;
        check(t.is_finite() && t >= 0.0, "temperature", || format!("must be a finite number >= 0, got {t}"))?;
        let p = self.top_p;
        check(p > 0.0 && p <= 1.0, "top_p", || format!("must be in (0, 1], got {p}"))?;
        let m = self.min_p;
        check((0.0..=1.0).contains(&m), "min_p", || format!("must be in [0, 1], got {m}"))?;
        let r = self.repetition_penalty;
        check(r.is_finite() && r > 0.0, "repetition_penalty", || format!("must be a finite number > 0, got {r}"))?;
        let pp = self.presence_penalty;
        check((-2.0..=2.0).contains(&pp), "presence_penalty", || format!("must be in [-2, 2], got {pp}"))?;
        let fp = self.frequency_penalty;
        check((-2.0..=2.0).contains(&fp), "frequency_penalty", || format!("must be in [-2, 2], got {fp}"))?;
        check(self.max_tokens >= 1, "max_tokens", || "must be at least 1, got 0".to_string())?;
        // An empty stop string would match before any text, ending every request at once.
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            return Err(SamplingError::InvalidParameter { name: "stop", reason: format!("stop[{i}] is empty") });
        }
        Ok(())
    }
}

/// One sampled token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampled {
    /// The token id (an index into the logits row).
    pub token: u32,
    /// Natural log of the token's probability under the distribution it was drawn from:
    /// after penalties, temperature, top-k, top-p and min-p, renormalized. So it is `0` for
    /// greedy decoding and whenever a single token survives the filters. For OpenAI's
    /// `logprobs` (the model's own distribution) use [`LogSoftmax`] on the raw logits.
    pub logprob: f32,
}

/// A token in the candidate lists: the (penalized) logit and the id.
#[derive(Debug, Clone, Copy)]
struct Candidate {
    logit: f32,
    id: u32,
}

/// Most likely first: descending logit, then ascending id. A strict total order (ids are
/// unique, logits are never NaN here), so "the first k" is one well-defined set whatever
/// algorithm finds it, and ties always go to the lowest id.
fn by_likelihood(a: &Candidate, b: &Candidate) -> Ordering {
    b.logit.total_cmp(&a.logit).then(a.id.cmp(&b.id))
}

/// NaN logits count as `-inf` (never sampled), so that a broken row behaves the same way on
/// every run instead of depending on where comparisons with NaN happen to land. `-0.0`
/// becomes `0.0`, so that `==`/`<` and [`by_likelihood`]'s `total_cmp` agree on ties.
fn clean(logit: f32) -> f32 {
    if logit.is_nan() {
        f32::NEG_INFINITY
    } else {
        logit + 0.0
    }
}

/// `e^x` for `x <= 0`, from IEEE additions and multiplications only, so that it gives the
/// same bits on every platform. (`f64::exp` calls the platform's libm, whose last-bit
/// rounding differs between implementations; a draw near a boundary could then pick
/// different tokens on different machines for the same seed.) Relative error below 1e-15
/// (tested against `f64::exp`). Results below `e^-708`, the smallest normal `f64`, are 0: a
/// token that much less likely than the best one is never drawn anyway. NaN gives 0.
///
/// Written without data-dependent branches so that the loops calling it vectorize.
#[inline]
fn exp_nonpositive(x: f64) -> f64 {
    // ln 2 split as in fdlibm: LN2_HI has 32 significant bits, so k * LN2_HI is exact for
    // the k here; LN2_LO is the rest.
    const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000); // 6.93147180369123816490e-1
    const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76); // 1.90821492927058770002e-10
    const ROUND: f64 = 6_755_399_441_055_744.0; // 1.5 * 2^52: adding it rounds to an integer
                                                // Taylor coefficients 1/i!; to r^12 the remainder is below 2e-16 relative for |r| <= 0.35.
    const C: [f64; 13] = {
        let mut c = [1.0; 13];
        let mut i = 1;
        while i < 13 {
            c[i] = c[i - 1] / i as f64;
            i += 1;
        }
        c
    };
    let underflow = x.is_nan() || x < -708.0;
    let x = x.max(-708.0);
    // e^x = 2^k * e^r with k = round(x / ln 2), |r| <= ln(2) / 2. After adding ROUND, k sits
    // in the low mantissa bits of `shifted` as a two's complement integer.
    let shifted = x * std::f64::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let p = C[12] * r + C[11];
    let p = p * r + C[10];
    let p = p * r + C[9];
    let p = p * r + C[8];
    let p = p * r + C[7];
    let p = p * r + C[6];
    let p = p * r + C[5];
    let p = p * r + C[4];
    let p = p * r + C[3];
    let p = p * r + C[2];
    let p = p * r + C[1];
    let p = p * r + C[0];
    let k_int = shifted.to_bits().wrapping_sub(ROUND.to_bits()); // k in [-1022, 0], wrapped
    let scale = f64::from_bits(k_int.wrapping_add(1023) << 52);
    if underflow {
        0.0
    } else {
        p * scale
    }
}

/// A uniform `f64` in `[0, 1)` from the top 53 bits of one 64-bit output. Done here rather
/// than through `rand`'s distributions so that the mapping from generator output to draws
/// is part of this crate and cannot change under it.
fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// The generator for `seed` (key layout documented at [`SamplingParams::seed`]).
fn seeded_rng(seed: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

/// Draws tokens according to one request's [`SamplingParams`].
///
/// A sampler belongs to one generation: its random stream advances with every non-greedy
/// draw, so a seeded request gives the same tokens only when replayed from a fresh sampler.
/// It keeps scratch buffers between calls, so sampling a vocabulary of 150k entries does not
/// allocate after the first token.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
    /// The logits after NaN cleaning and penalties.
    work: Vec<f32>,
    /// Occurrences per token id in the history; all zero between calls.
    counts: Vec<u32>,
    /// Candidates for top-k / top-p selection.
    candidates: Vec<Candidate>,
    /// Unnormalized probability per token id (without top-k).
    weights: Vec<f64>,
    /// The tokens that survive the filters, ascending id, with their unnormalized probability.
    kept: Vec<(u32, f64)>,
}

impl fmt::Debug for Sampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sampler").field("params", &self.params).finish_non_exhaustive()
    }
}

impl Sampler {
    /// A sampler for `params`, after [`SamplingParams::validate`]. Without a seed it seeds
    /// from the operating system's entropy source.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = match params.seed {
            Some(seed) => seeded_rng(seed),
            None => ChaCha8Rng::try_from_rng(&mut SysRng).map_err(|e| SamplingError::Entropy(e.to_string()))?,
        };
        Ok(Sampler {
            params,
            rng,
            work: Vec::new(),
            counts: Vec::new(),
            candidates: Vec::new(),
            weights: Vec::new(),
            kept: Vec::new(),
        })
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (one entry per token id).
    ///
    /// `previous_tokens` is the history the penalties count. OpenAI applies presence and
    /// frequency penalties to the completion's tokens only, so a server passes the tokens
    /// generated so far; Hugging Face's repetition penalty also counts the prompt, so pass
    /// the prompt too if that is wanted (all three penalties see the same history). Ids
    /// outside the logits row are ignored.
    ///
    /// NaN logits count as `-inf`. It is an error if the row is empty or no token has a
    /// finite or `+inf` logit after the penalties. `+inf` logits (if any) share all the
    /// probability equally.
    pub fn sample(&mut self, logits: &[f32], previous_tokens: &[u32]) -> Result<Sampled> {
        if logits.is_empty() {
            return Err(SamplingError::EmptyLogits);
        }
        if u32::try_from(logits.len() - 1).is_err() {
            return Err(SamplingError::TooManyLogits(logits.len()));
        }
        let mut work = std::mem::take(&mut self.work);
        work.clear();
        work.extend_from_slice(logits);
        self.apply_penalties(&mut work, previous_tokens);
        // After the penalties, which leave NaN as NaN and may produce -0.0.
        for l in &mut work {
            *l = clean(*l);
        }
        let result = self.sample_penalized(&work);
        self.work = work;
        result
    }

    /// Applies the repetition, presence and frequency penalties of this sampler's parameters
    /// to `logits` in place, counting occurrences in `previous_tokens` (ids outside `logits`
    /// are ignored). For each distinct token `t` that occurs `c > 0` times, in `f32`:
    ///
    /// ```text
    /// l = if l > 0 { l / repetition_penalty } else { l * repetition_penalty }
    /// l = l - c * frequency_penalty - presence_penalty
    /// ```
    ///
    /// (repetition first, as both llama.cpp and vLLM order them). [`sample`](Self::sample)
    /// calls this; it is public so that the adjusted logits can be inspected.
    pub fn apply_penalties(&mut self, logits: &mut [f32], previous_tokens: &[u32]) {
        let SamplingParams { repetition_penalty: rep, presence_penalty: presence, frequency_penalty: freq, .. } =
            self.params;
        if previous_tokens.is_empty() || (rep == 1.0 && presence == 0.0 && freq == 0.0) {
            return;
        }
        // Counting into a dense per-id array that is all zero between calls, and zeroing only
        // the touched entries afterwards, costs O(history) rather than O(vocabulary).
        if self.counts.len() < logits.len() {
            self.counts.resize(logits.len(), 0);
        }
        let n = logits.len();
        for &t in previous_tokens {
            if let Some(c) = self.counts.get_mut(t as usize).filter(|_| (t as usize) < n) {
                *c = c.saturating_add(1);
            }
        }
        for &t in previous_tokens {
            let Some(c) = self.counts.get_mut(t as usize).filter(|_| (t as usize) < n) else { continue };
            if *c == 0 {
                continue; // a repeat of a token already handled
            }
            let count = std::mem::take(c);
            let l = &mut logits[t as usize];
            if rep != 1.0 {
                *l = if *l > 0.0 { *l / rep } else { *l * rep };
            }
            if presence != 0.0 || freq != 0.0 {
                *l = *l - count as f32 * freq - presence;
            }
        }
    }

    /// Everything after the penalties: temperature, the filters and the draw.
    fn sample_penalized(&mut self, work: &[f32]) -> Result<Sampled> {
        // The maximum is both the greedy answer (its first occurrence: the lowest id) and the
        // softmax's stabilizing shift. Two plain passes are faster than one with an index.
        let max = work.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY {
            return Err(SamplingError::NoCandidates);
        }
        let SamplingParams { temperature, top_k, top_p, min_p, .. } = self.params;
        if temperature == 0.0 {
            let best = work.iter().position(|&l| l == max).unwrap_or(0);
            return Ok(Sampled { token: best as u32, logprob: 0.0 });
        }
        // Unnormalized probability exp((l - max) / T), in f64: the largest is exactly 1, and a
        // tiny temperature underflows to 0 rather than overflowing. Tokens at +inf (from the
        // model, or a penalty overflowing) share the probability equally.
        let inv_t = 1.0 / f64::from(temperature);
        let infinite = max == f32::INFINITY;
        let weight = move |l: f32| -> f64 {
            if infinite {
                f64::from(u8::from(l == f32::INFINITY))
            } else {
                exp_nonpositive((f64::from(l) - f64::from(max)) * inv_t)
            }
        };
        // min-p compares with the most likely token, whose weight is 1.
        let min_weight = f64::from(min_p);
        if top_k > 0 && top_k_candidates(work.iter().copied(), top_k, &mut self.candidates) {
            // Only the k survivors are exponentiated.
            let candidates = &mut self.candidates;
            let mut keep = candidates.len();
            if top_p < 1.0 {
                let total: f64 = candidates.iter().map(|c| weight(c.logit)).sum();
                // Rounding can leave the sum of all just under the target: then all stay.
                keep = nucleus_len(candidates, &weight, f64::from(top_p) * total).unwrap_or(keep);
            }
            self.kept.clear();
            self.kept.extend(
                candidates[..keep].iter().map(|c| (c.id, weight(c.logit))).filter(|&(_, w)| w > 0.0 && w >= min_weight),
            );
            // Draw in id order whatever the filters were, so that the same surviving set gives
            // the same token for the same random number (top_k = vocab size == top_k = 0).
            self.kept.sort_unstable_by_key(|&(id, _)| id);
        } else {
            self.weights.clear();
            if infinite {
                self.weights.extend(work.iter().map(|&l| weight(l)));
            } else {
                // The hot loop at large vocabularies: kept free of branches so it vectorizes.
                let shift = f64::from(max);
                self.weights.extend(work.iter().map(|&l| exp_nonpositive((f64::from(l) - shift) * inv_t)));
            }
            // The last token (in likelihood order) that top-p keeps; None keeps everything.
            let mut boundary = None;
            if top_p < 1.0 {
                // Summed in id order, so the result does not depend on selection internals.
                let total: f64 = self.weights.iter().sum();
                let target = f64::from(top_p) * total;
                // The nucleus is usually a handful of tokens out of a large vocabulary: look
                // among the 64 most likely first, then 8x more each round, rather than sort
                // everything.
                let mut m = 64usize;
                loop {
                    let dropped = top_k_candidates(work.iter().copied(), m, &mut self.candidates);
                    if let Some(keep) = nucleus_len(&self.candidates, &weight, target) {
                        boundary = Some(self.candidates[keep - 1]);
                        break;
                    }
                    if !dropped {
                        break; // all tokens and still (by rounding) under the target: keep all
                    }
                    m = m.saturating_mul(8);
                }
            }
            // Filtered-out tokens get weight 0 in place: never drawn, and no list to build.
            if boundary.is_some() || min_weight > 0.0 {
                for (i, (&l, w)) in work.iter().zip(&mut self.weights).enumerate() {
                    let candidate = Candidate { logit: l, id: i as u32 };
                    let in_nucleus = boundary.is_none_or(|b| by_likelihood(&candidate, &b) != Ordering::Greater);
                    if *w < min_weight || !in_nucleus {
                        *w = 0.0;
                    }
                }
            }
            let u = uniform(&mut self.rng);
            return Ok(draw(self.weights.iter().enumerate().map(|(i, &w)| (i as u32, w)), u));
        }
        Ok(draw(self.kept.iter().copied(), uniform(&mut self.rng)))
    }
}

/// Leaves in `out` the `k` (>= 1) most likely of `logits` (no NaN, no `-0.0`; `-inf` never
/// counts), sorted by [`by_likelihood`]. Returns whether that dropped any token above `-inf`;
/// if not, `out` holds all of them.
///
/// One pass that skips every token not better than the current k-th best, with an O(len)
/// selection whenever the buffer fills: for small k almost every token costs one comparison,
/// with no sort of the vocabulary and no copy of it.
fn top_k_candidates(logits: impl Iterator<Item = f32>, k: usize, out: &mut Vec<Candidate>) -> bool {
    out.clear();
    let capacity = k.saturating_mul(2).max(1024);
    // The current k-th best logit once some token was dropped. Later tokens have higher ids,
    // so they lose ties with it and must beat it strictly.
    let mut cutoff = f32::NEG_INFINITY;
    let mut dropped = false;
    for (i, l) in logits.take(u32::MAX as usize).enumerate() {
        if l > cutoff {
            out.push(Candidate { logit: l, id: i as u32 });
            if out.len() >= capacity {
                out.select_nth_unstable_by(k - 1, by_likelihood);
                out.truncate(k);
                cutoff = out[k - 1].logit;
                dropped = true;
            }
        }
    }
    if out.len() > k {
        out.select_nth_unstable_by(k - 1, by_likelihood);
        out.truncate(k);
        dropped = true;
    }
    out.sort_unstable_by(by_likelihood);
    dropped
}

/// The length of the shortest prefix of `sorted` (most likely first) whose weights sum to at
/// least `target`; `None` if the whole slice does not reach it.
fn nucleus_len(sorted: &[Candidate], weight: &impl Fn(f32) -> f64, target: f64) -> Option<usize> {
    let mut cumulative = 0.0;
    for (i, c) in sorted.iter().enumerate() {
        cumulative += weight(c.logit);
        if cumulative >= target {
            return Some(i + 1);
        }
    }
    None
}

/// Picks from `tokens` (`(id, weight)` in ascending id; weights >= 0, at least one positive)
/// with `u` uniform in `[0, 1)`: the first token whose cumulative weight exceeds `u * total`.
/// Zero-weight tokens are never picked.
fn draw(tokens: impl Iterator<Item = (u32, f64)> + Clone, u: f64) -> Sampled {
    // Sequential sums in a fixed order: the same bits on every platform.
    let total: f64 = tokens.clone().map(|(_, w)| w).sum();
    let threshold = u * total;
    let mut cumulative = 0.0;
    // `u * total` can round up to `total`; then the last possible token is the answer.
    let mut chosen = (0, 0.0);
    for (id, w) in tokens {
        if w > 0.0 {
            chosen = (id, w);
            cumulative += w;
            if threshold < cumulative {
                break;
            }
        }
    }
    Sampled { token: chosen.0, logprob: (chosen.1 / total).ln() as f32 }
}

/// The log-softmax of a raw logits row, computed once and queried per token: what OpenAI's
/// `logprobs` and `top_logprobs` report. NaN logits count as `-inf`.
#[derive(Debug, Clone)]
pub struct LogSoftmax<'a> {
    logits: &'a [f32],
    /// The largest logit (`-inf` if none is larger, `+inf` if some are infinite).
    max: f32,
    /// `ln(sum(exp(l - max)))`, or for `max == +inf`, `ln(number of +inf logits)`.
    log_norm: f64,
}

impl<'a> LogSoftmax<'a> {
    /// Computes the normalizer of `logits` (in `f64`, shifted by the maximum for stability).
    pub fn new(logits: &'a [f32]) -> Self {
        let max = logits.iter().map(|&l| clean(l)).fold(f32::NEG_INFINITY, f32::max);
        let log_norm = if max == f32::INFINITY {
            (logits.iter().filter(|&&l| l == f32::INFINITY).count() as f64).ln()
        } else if max == f32::NEG_INFINITY {
            0.0 // every logprob is -inf; see `value`
        } else {
            let m = f64::from(max);
            // Exponentials a block at a time, so that they vectorize; then summed in order.
            let mut sum = 0.0;
            let mut block = [0.0f64; 64];
            for chunk in logits.chunks(block.len()) {
                for (e, &l) in block.iter_mut().zip(chunk) {
                    *e = exp_nonpositive(f64::from(clean(l)) - m);
                }
                sum += block[..chunk.len()].iter().sum::<f64>();
            }
            sum.ln()
        };
        LogSoftmax { logits, max, log_norm }
    }

    fn value(&self, logit: f32) -> f32 {
        let l = clean(logit);
        if self.max == f32::INFINITY {
            if l == f32::INFINITY {
                -self.log_norm as f32
            } else {
                f32::NEG_INFINITY
            }
        } else if l == f32::NEG_INFINITY {
            f32::NEG_INFINITY
        } else {
            (f64::from(l) - f64::from(self.max) - self.log_norm) as f32
        }
    }

    /// The log-probability of `token`; `None` if it is outside the row. `-inf` for tokens
    /// with probability 0.
    pub fn logprob(&self, token: u32) -> Option<f32> {
        self.logits.get(token as usize).map(|&l| self.value(l))
    }

    /// The `n` most likely tokens with their log-probabilities, most likely first (ties:
    /// lowest id first). Tokens with probability 0 (log-probability `-inf`, which JSON
    /// cannot carry) are left out, so fewer than `n` may come back.
    pub fn top(&self, n: usize) -> Vec<(u32, f32)> {
        if n == 0 {
            return Vec::new();
        }
        // Zero-probability tokens (NaN and -inf, and everything finite when some are +inf)
        // are treated as -inf, which the selection skips.
        let floor = if self.max == f32::INFINITY { f32::MAX } else { f32::NEG_INFINITY };
        let logits = self.logits.iter().map(|&l| clean(l)).map(|l| if l > floor { l } else { f32::NEG_INFINITY });
        let mut candidates = Vec::new();
        top_k_candidates(logits, n, &mut candidates);
        // A finite logit far below the maximum can still round to -inf in f32.
        candidates.iter().map(|c| (c.id, self.value(c.logit))).filter(|&(_, lp)| lp > f32::NEG_INFINITY).collect()
    }
}

/// The `n` most likely tokens of a raw logits row with their log-softmax values, most likely
/// first, ties by lowest id (see [`LogSoftmax::top`]).
pub fn top_logprobs(logits: &[f32], n: usize) -> Vec<(u32, f32)> {
    LogSoftmax::new(logits).top(n)
}

/// What [`StopChecker::push`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopOutcome {
    /// No stop string has completed. The text may be emitted now; it is empty while
    /// everything new could still be the start of a stop string.
    Continue(String),
    /// A stop string completed: emit `text` (everything before the stop string not yet
    /// emitted) and end generation.
    Stop {
        /// The remaining output, up to and excluding the stop string.
        text: String,
        /// Index of the stop string that matched, in the list given to [`StopChecker::new`].
        stop: usize,
    },
}

impl StopOutcome {
    /// The text to emit, and the matched stop string's index if generation should stop.
    pub fn into_parts(self) -> (String, Option<usize>) {
        match self {
            StopOutcome::Continue(text) => (text, None),
            StopOutcome::Stop { text, stop } => (text, Some(stop)),
        }
    }
}

/// Finds stop strings in streamed text.
///
/// Feed it the decoded text pieces in order ([`push`](Self::push)); it returns the text that
/// is safe to emit. A stop string may span several pieces, so text that could still become
/// the start of a stop string is held back until it cannot; the stop string itself is never
/// emitted. When generation ends for another reason, [`finish`](Self::finish) returns what is
/// held back.
///
/// If several stop strings occur, the one that completes first in the text wins (ties: the
/// longer one, which starts earlier), so the output never contains a stop string and does not
/// depend on how the text was split into pieces. Of `"ab"` and `"abc"`, `"ab"` always wins:
/// it is complete before the `c` arrives.
#[derive(Debug, Clone, Default)]
pub struct StopChecker {
    stops: Vec<String>,
    /// Text received but not yet emitted: the longest suffix of the text so far that is a
    /// proper prefix of some stop string.
    held: String,
}

impl StopChecker {
    /// A checker for these stop strings. Empty strings are ignored (never match).
    pub fn new<I, S>(stops: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        StopChecker { stops: stops.into_iter().map(|s| s.as_ref().to_string()).collect(), held: String::new() }
    }

    /// Adds the next piece of decoded text. After a [`StopOutcome::Stop`] the checker starts
    /// over empty (the caller is expected to end generation).
    pub fn push(&mut self, piece: &str) -> StopOutcome {
        self.held.push_str(piece);
        // Earliest end first, then earliest start. `find` gives each string's earliest
        // occurrence, which is also its earliest end.
        let found = self
            .stops
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty())
            .filter_map(|(i, s)| self.held.find(s.as_str()).map(|start| (start + s.len(), start, i)))
            .min();
        if let Some((_, start, stop)) = found {
            self.held.truncate(start);
            return StopOutcome::Stop { text: std::mem::take(&mut self.held), stop };
        }
        // Hold back from the earliest position whose suffix could still grow into a stop
        // string. Every stop string starts at a character boundary, so only those can match.
        let max_len = self.stops.iter().map(String::len).max().unwrap_or(0);
        let earliest = self.held.len().saturating_sub(max_len.saturating_sub(1));
        let hold_from = (earliest..self.held.len())
            .filter(|&i| self.held.is_char_boundary(i))
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|s| !s.is_empty() && s.starts_with(suffix))
            })
            .unwrap_or(self.held.len());
        let rest = self.held.split_off(hold_from);
        StopOutcome::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// The held-back text, for when generation ends without a stop string (EOS, length).
    /// The checker starts over empty.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// The text currently held back.
    pub fn held(&self) -> &str {
        &self.held
    }
}

/// Why a generation ended, as OpenAI's `finish_reason` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FinishReason {
    /// The model emitted an end-of-generation token, or the text reached a stop string.
    Stop,
    /// `max_tokens` tokens were generated.
    Length,
}

impl FinishReason {
    /// The OpenAI spelling: `"stop"` or `"length"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

impl fmt::Display for FinishReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether generation ends after `token`, the `generated`-th token of the completion (this
/// one included), given whether the [`StopChecker`] reported a stop string for its text.
///
/// An end-of-generation token ([`Tokenizer::is_eos`]) or a stop string is
/// [`FinishReason::Stop`]; otherwise reaching `max_tokens` is [`FinishReason::Length`]. Stop
/// wins when both happen on the same token, because the model did finish on its own.
pub fn finish_reason(
    tokenizer: &Tokenizer,
    token: u32,
    generated: usize,
    max_tokens: usize,
    stop_string_hit: bool,
) -> Option<FinishReason> {
    if tokenizer.is_eos(token) || stop_string_hit {
        Some(FinishReason::Stop)
    } else if generated >= max_tokens {
        Some(FinishReason::Length)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::exp_nonpositive;

    #[test]
    fn portable_exp_matches_std() {
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-0.0), 1.0);
        assert_eq!(exp_nonpositive(f64::NEG_INFINITY), 0.0);
        assert_eq!(exp_nonpositive(-746.0), 0.0);
        assert_eq!(exp_nonpositive(f64::NAN), 0.0);
        let mut worst = 0.0f64;
        // Dense near 0 (where most weights are) and across the whole normal range.
        let xs = (0..200_000).map(|i| -(i as f64) * 1e-4).chain((0..200_000).map(|i| -(i as f64) * 707.9 / 2e5));
        for x in xs {
            let (got, want) = (exp_nonpositive(x), x.exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-15, "worst relative error {worst:e}");
        // Below e^-708 (the normal range) results are 0.
        assert!(exp_nonpositive(-707.9) > 0.0);
        assert_eq!(exp_nonpositive(-708.1), 0.0);
    }
}
