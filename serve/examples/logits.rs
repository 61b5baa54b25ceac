//! Prints the next-token logits of a model after a list of token ids, as JSON (for
//! comparing with other implementations).
//!
//! `cargo run --release -p max-serve --features compile --example logits -- MODEL ID ID ...`

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((model, ids)) = args.split_first() else {
        return Err("usage: logits MODEL(.maxa|.gguf) TOKEN_ID...".into());
    };
    let ids: Vec<u32> = ids.iter().map(|s| s.parse()).collect::<Result<_, _>>()?;
    let llm = max_serve::LLM::new(model, max_serve::PipelineConfig::default())?;
    let logits = llm.next_token_logits(&ids)?;
    println!("{}", serde_json::to_string(&logits)?);
    Ok(())
}
