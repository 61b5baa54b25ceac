//! Continuous batching over one [`LLM`]: requests join and leave the running batch at token
//! boundaries.
//!
//! A worker thread owns the model's KV cache. Each turn it admits waiting requests into
//! free cache rows (prefilling each and sampling its first token), then runs one batched
//! decode step over every running request. A request ends on its own (end of generation,
//! stop string, `max_tokens`, the cache length) or when its receiver is dropped (a client
//! that went away): its cache row is free for the next request at once.

use crate::llm::{Generation, LlmError, Row, TokenLogprob, LLM};
use crate::sampling::SamplingParams;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a request's receiver gets, in order: text pieces as they become final, then one
/// `Done` (or `Failed`).
#[derive(Debug)]
pub enum Event {
    /// Newly final text, with the log-probabilities of the tokens generated since the last
    /// `Text` (when the request asked for them; a token's text may be held back, e.g. while
    /// it could start a stop string, so a piece can carry several tokens or none).
    Text(String, Vec<TokenLogprob>),
    /// The finished completion.
    Done(Generation),
    /// The request could not be completed.
    Failed(String),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The prompt or parameters are invalid (empty, too long, bad sampling values).
    #[error(transparent)]
    Invalid(#[from] LlmError),
    /// The queue of waiting requests is full.
    #[error("the server is busy: {0} requests are already waiting")]
    QueueFull(usize),
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

struct Job {
    ids: Vec<u32>,
    params: SamplingParams,
    events: UnboundedSender<Event>,
}

/// Counters the engine keeps (for metrics).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Requests waiting for a cache row.
    pub waiting: AtomicUsize,
    /// Requests generating.
    pub running: AtomicUsize,
    /// Prompt tokens prefilled, in total.
    pub prompt_tokens: AtomicUsize,
    /// Tokens generated, in total.
    pub generated_tokens: AtomicUsize,
}

/// A continuous-batching engine over one model.
pub struct Engine {
    llm: Arc<LLM>,
    jobs: Option<mpsc::Sender<Job>>,
    stats: Arc<EngineStats>,
    max_waiting: usize,
    worker: Option<JoinHandle<()>>,
}

impl Engine {
    /// Starts the worker thread. At most `max_waiting` requests wait for a cache row; more
    /// are refused with [`SubmitError::QueueFull`]. The worker owns the model's KV cache
    /// while it runs: the model's own `generate*` calls (and another engine on the same
    /// model) wait until this engine is dropped.
    pub fn new(llm: Arc<LLM>, max_waiting: usize) -> Engine {
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let worker = {
            let (llm, stats) = (llm.clone(), stats.clone());
            std::thread::Builder::new().name("max-engine".into()).spawn(move || run(&llm, &rx, &stats)).expect("spawning the engine thread")
        };
        Engine { llm, jobs: Some(tx), stats, max_waiting, worker: Some(worker) }
    }

    /// The model.
    pub fn llm(&self) -> &Arc<LLM> {
        &self.llm
    }

    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Queues a request; its events arrive on the returned receiver. Dropping the receiver
    /// cancels the request.
    pub fn submit(&self, ids: Vec<u32>, params: SamplingParams) -> Result<UnboundedReceiver<Event>, SubmitError> {
        params.validate().map_err(LlmError::from)?;
        self.llm.check_prompt(&ids)?;
        if self.stats.waiting.load(Ordering::SeqCst) >= self.max_waiting {
            return Err(SubmitError::QueueFull(self.max_waiting));
        }
        let (tx, rx) = unbounded_channel();
        self.stats.waiting.fetch_add(1, Ordering::SeqCst);
        let sent = self.jobs.as_ref().ok_or(SubmitError::Stopped)?.send(Job { ids, params, events: tx });
        if sent.is_err() {
            self.stats.waiting.fetch_sub(1, Ordering::SeqCst);
            return Err(SubmitError::Stopped);
        }
        Ok(rx)
    }
}

impl Drop for Engine {
    /// Stops taking requests; the worker finishes the running ones, then exits.
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// A running request: its row state and where its events go.
struct Running {
    row: Row,
    events: UnboundedSender<Event>,
    /// Log-probabilities already sent with `Text` events.
    sent: usize,
}

impl Running {
    /// Sends `text` (if any) with the log-probabilities recorded since the last send.
    fn send_text(&mut self, text: &str) {
        if !text.is_empty() {
            let new = self.row.logprobs_after(self.sent).to_vec();
            self.sent += new.len();
            let _ = self.events.send(Event::Text(text.to_string(), new));
        }
    }
}

/// The worker loop.
fn run(llm: &LLM, jobs: &mpsc::Receiver<Job>, stats: &EngineStats) {
    let mut cache = llm.lock_cache();
    let mut free: Vec<usize> = (0..llm.max_batch_size()).rev().collect();
    let mut running: Vec<Running> = Vec::new();
    let mut open = true;
    loop {
        // Admit waiting requests into free rows (blocking only when there is nothing to run).
        while open && !free.is_empty() {
            let job = if running.is_empty() {
                match jobs.recv() {
                    Ok(j) => j,
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            } else {
                match jobs.try_recv() {
                    Ok(j) => j,
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            };
            stats.waiting.fetch_sub(1, Ordering::SeqCst);
            if job.events.is_closed() {
                continue;
            }
            let slot = free.pop().expect("a free row");
            match admit(llm, &mut cache, slot, job, stats) {
                Some(r) if r.row.finish.is_none() => {
                    stats.running.fetch_add(1, Ordering::SeqCst);
                    running.push(r);
                }
                Some(r) => {
                    let _ = r.events.send(Event::Done(r.row.into_generation()));
                    free.push(slot);
                }
                None => free.push(slot),
            }
        }
        if running.is_empty() {
            if !open {
                return;
            }
            continue;
        }
        // Requests whose client went away end now.
        let (gone, keep): (Vec<Running>, Vec<Running>) = running.into_iter().partition(|r| r.events.is_closed());
        running = keep;
        for r in gone {
            free.push(r.row.slot);
            stats.running.fetch_sub(1, Ordering::SeqCst);
        }
        if running.is_empty() {
            continue;
        }
        // One decode step over every running request.
        let mut rows: Vec<Row> = Vec::new();
        let mut senders: Vec<(UnboundedSender<Event>, usize)> = Vec::new();
        for r in running.drain(..) {
            rows.push(r.row);
            senders.push((r.events, r.sent));
        }
        let active: Vec<usize> = (0..rows.len()).collect();
        let mut texts = vec![String::new(); rows.len()];
        let step = llm.decode_step(&mut cache, &mut rows, &active).and_then(|logits| llm.take_samples(&mut rows, &active, &logits, &mut |i, text| texts[i].push_str(text)));
        stats.generated_tokens.fetch_add(rows.len(), Ordering::SeqCst);
        for ((row, (events, sent)), text) in rows.into_iter().zip(senders).zip(texts) {
            let mut r = Running { row, events, sent };
            if let Err(e) = &step {
                let _ = r.events.send(Event::Failed(e.to_string()));
                free.push(r.row.slot);
                stats.running.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            r.send_text(&text);
            if r.row.finish.is_some() {
                free.push(r.row.slot);
                stats.running.fetch_sub(1, Ordering::SeqCst);
                let _ = r.events.send(Event::Done(r.row.into_generation()));
            } else {
                running.push(r);
            }
        }
    }
}

/// Prefills a request into `slot` and samples its first token. `None` if it failed (the
/// client was told).
fn admit(llm: &LLM, cache: &mut max_runtime::State, slot: usize, job: Job, stats: &EngineStats) -> Option<Running> {
    let n = job.ids.len();
    let mut rows = match Row::new(llm, slot, job.ids, &job.params) {
        Ok(r) => vec![r],
        Err(e) => {
            let _ = job.events.send(Event::Failed(e.to_string()));
            return None;
        }
    };
    let events = job.events;
    let mut text = String::new();
    let result = llm.prefill(cache, std::slice::from_ref(&rows[0].ids), &[slot]).and_then(|logits| {
        rows[0].cached = n;
        llm.take_samples(&mut rows, &[0], &logits, &mut |_, t| text.push_str(t))
    });
    stats.prompt_tokens.fetch_add(n, Ordering::SeqCst);
    stats.generated_tokens.fetch_add(1, Ordering::SeqCst);
    match result {
        Ok(()) => {
            let mut r = Running { row: rows.pop().expect("one row"), events, sent: 0 };
            r.send_text(&text);
            Some(r)
        }
        Err(e) => {
            let _ = events.send(Event::Failed(e.to_string()));
            None
        }
    }
}
