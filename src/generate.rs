//! Text generation: prefill the prompt, then one token at a time through the KV cache, with
//! LitGPT's stop-sequence rules, stop strings that are never half-emitted, and streaming.

use crate::backend::ModelBackend;
use crate::error::{Error, Result};
pub use crate::model::logits_to_vec;
use crate::model::Model;
use crate::sampling::{Sampler, SamplingParams};
use crate::tokenizer::{TextStream, Tokenizer};

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// `max_new_tokens` were generated.
    MaxTokens,
    /// A stop token sequence (EOS by default) was generated.
    StopTokens,
    /// A stop string appeared in the text.
    StopString,
    /// The streaming callback asked to stop.
    Callback,
}

impl StopReason {
    /// A short lowercase name (`"max_tokens"`, `"eos"`, ...), as printed by the CLI.
    pub fn as_str(&self) -> &'static str {
        match self {
            StopReason::MaxTokens => "max_tokens",
            StopReason::StopTokens => "eos",
            StopReason::StopString => "stop_string",
            StopReason::Callback => "callback",
        }
    }
}

/// What to generate. The default: 50 new tokens, [`SamplingParams::default`] (`litgpt
/// generate`'s), the tokenizer's EOS ids as stop tokens, kept in the output.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct GenerateOptions {
    /// Number of new tokens at most (≥ 1).
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Token sequences that end generation. `None`: the tokenizer's EOS ids, each on its own;
    /// `Some(vec![])`: never stop early.
    pub stop_tokens: Option<Vec<Vec<u32>>>,
    /// Keep the stop sequence in `generated_ids` (LitGPT `generate` does; its chat does not).
    pub include_stop_tokens: bool,
    /// Strings that end generation; the text is cut before them.
    pub stop_strings: Vec<String>,
}

impl GenerateOptions {
    /// `max_new_tokens` tokens sampled with `sampling`, the other fields as the default.
    pub fn new(max_new_tokens: usize, sampling: SamplingParams) -> Self {
        Self {
            max_new_tokens,
            sampling,
            ..Self::default()
        }
    }
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 50,
            sampling: SamplingParams::default(),
            stop_tokens: None,
            include_stop_tokens: true,
            stop_strings: Vec::new(),
        }
    }
}

/// The result of one generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    pub prompt_ids: Vec<u32>,
    /// New token ids (with the stop sequence when `include_stop_tokens`).
    pub generated_ids: Vec<u32>,
    /// The new text as it continues the prompt (special tokens skipped, cut at a stop string).
    pub text: String,
    pub stop_reason: StopReason,
}

/// Holds back streamed text that might be the start of a stop string.
struct StopStrings<'a> {
    stops: &'a [String],
    text: String,
    emitted: usize,
}

impl<'a> StopStrings<'a> {
    /// Adds `piece`; returns (text safe to emit, whether a stop string was found).
    fn push(&mut self, piece: &str) -> (String, bool) {
        self.text.push_str(piece);
        let longest = self.stops.iter().map(String::len).max().unwrap_or(0);
        let mut from = self.emitted.saturating_sub(longest);
        while !self.text.is_char_boundary(from) {
            from -= 1;
        }
        let hit = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[from..].find(s.as_str()).map(|i| from + i))
            .min();
        if let Some(i) = hit {
            let out = self.text[self.emitted.min(i)..i].to_string();
            self.text.truncate(i);
            self.emitted = i;
            return (out, true);
        }
        // Hold back the longest suffix that is a proper prefix of a stop string.
        let mut safe = self.text.len();
        for s in self.stops {
            for (k, _) in s.char_indices().skip(1) {
                if self.text.ends_with(&s[..k]) {
                    safe = safe.min(self.text.len() - k);
                }
            }
        }
        let safe = safe.max(self.emitted);
        let out = self.text[self.emitted..safe].to_string();
        self.emitted = safe;
        (out, false)
    }

    fn flush(&mut self) -> String {
        let out = self.text[self.emitted..].to_string();
        self.emitted = self.text.len();
        out
    }
}

/// One sequence being generated, fed one logits row at a time: sampling, LitGPT's running match
/// of stop sequences, stop strings and text streaming.
struct Decoder<'a> {
    sampler: Sampler,
    stop_tokens: Vec<Vec<u32>>,
    progress: Vec<usize>,
    stream: TextStream<'a>,
    stops: StopStrings<'a>,
    prompt_ids: Vec<u32>,
    tokens: Vec<u32>,
    /// `tokens[..released]` were turned into text.
    released: usize,
    reason: StopReason,
    cut_at: Option<usize>,
    max_new_tokens: usize,
    include_stop_tokens: bool,
    done: bool,
}

impl<'a> Decoder<'a> {
    /// Checks the request (`block_size`: the model's context length).
    fn new(
        tokenizer: &'a Tokenizer,
        prompt_ids: &[u32],
        opts: &'a GenerateOptions,
        block_size: usize,
    ) -> Result<Self> {
        if prompt_ids.is_empty() {
            return Err(Error::EmptyPrompt);
        }
        if opts.max_new_tokens == 0 {
            return Err(Error::invalid("max_new_tokens", "must be at least 1"));
        }
        let total = prompt_ids.len().saturating_add(opts.max_new_tokens);
        if total > block_size {
            return Err(Error::ContextOverflow {
                prompt_tokens: prompt_ids.len(),
                max_new_tokens: opts.max_new_tokens,
                total,
                block_size,
            });
        }
        let stop_tokens: Vec<Vec<u32>> = match &opts.stop_tokens {
            None => tokenizer.eos_ids.iter().map(|&e| vec![e]).collect(),
            Some(seqs) => seqs.iter().filter(|s| !s.is_empty()).cloned().collect(),
        };
        Ok(Self {
            sampler: Sampler::new(opts.sampling)?,
            progress: vec![0; stop_tokens.len()],
            stop_tokens,
            stream: TextStream::new(tokenizer, prompt_ids),
            stops: StopStrings {
                stops: &opts.stop_strings,
                text: String::new(),
                emitted: 0,
            },
            prompt_ids: prompt_ids.to_vec(),
            tokens: Vec::new(),
            released: 0,
            reason: StopReason::MaxTokens,
            cut_at: None,
            max_new_tokens: opts.max_new_tokens,
            include_stop_tokens: opts.include_stop_tokens,
            done: false,
        })
    }

    /// The cache capacity this sequence needs.
    fn capacity(&self) -> usize {
        self.prompt_ids.len() + self.max_new_tokens
    }

    /// Samples the next token from the last position's logits and streams what became text;
    /// returns the token (to feed back unless [`Decoder::done`]).
    fn step(&mut self, logits: &[f32], on_text: &mut dyn FnMut(&str) -> bool) -> Result<u32> {
        let token = self.sampler.sample(logits);
        self.tokens.push(token);
        // LitGPT's running match of stop sequences.
        for (i, seq) in self.stop_tokens.iter().enumerate() {
            if token == seq[self.progress[i]] {
                self.progress[i] += 1;
                if self.progress[i] == seq.len() {
                    self.reason = StopReason::StopTokens;
                    self.cut_at = Some(self.tokens.len() - seq.len());
                    self.done = true;
                    return Ok(token);
                }
            } else {
                self.progress[i] = 0;
            }
        }
        // Tokens that may still become part of a stop sequence are held back.
        let safe = self.tokens.len() - self.progress.iter().copied().max().unwrap_or(0);
        if let Some(r) = self.release(safe, on_text)? {
            self.reason = r;
            self.done = true;
        } else if self.tokens.len() >= self.max_new_tokens {
            self.done = true;
        }
        Ok(token)
    }

    /// Turns `tokens[released..upto]` into text; returns a reason to stop, if any.
    fn release(
        &mut self,
        upto: usize,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Option<StopReason>> {
        while self.released < upto {
            let piece = self.stream.push(self.tokens[self.released])?;
            self.released += 1;
            if let Some(piece) = piece {
                let (out, hit) = self.stops.push(&piece);
                if !out.is_empty() && !on_text(&out) {
                    return Ok(Some(StopReason::Callback));
                }
                if hit {
                    return Ok(Some(StopReason::StopString));
                }
            }
        }
        Ok(None)
    }

    /// Streams what is left and returns the result.
    fn finish(mut self, on_text: &mut dyn FnMut(&str) -> bool) -> Result<Generation> {
        if self.reason == StopReason::MaxTokens {
            if let Some(r) = self.release(self.tokens.len(), on_text)? {
                self.reason = r;
            }
        }
        if self.reason != StopReason::StopString && self.reason != StopReason::Callback {
            if let Some(piece) = self.stream.finish()? {
                let (out, hit) = self.stops.push(&piece);
                if !out.is_empty() {
                    on_text(&out);
                }
                if hit {
                    self.reason = StopReason::StopString;
                }
            }
            let rest = self.stops.flush();
            if !rest.is_empty() {
                on_text(&rest);
            }
        }
        let mut generated_ids = self.tokens;
        if let (Some(cut), false) = (self.cut_at, self.include_stop_tokens) {
            generated_ids.truncate(cut);
        }
        Ok(Generation {
            prompt_ids: self.prompt_ids,
            generated_ids,
            text: self.stops.text,
            stop_reason: self.reason,
        })
    }
}

/// Generates a continuation of `prompt_ids`. `on_text` receives each new piece of text (whole
/// UTF-8, never part of a stop string) and returns `false` to stop.
pub fn generate<B: ModelBackend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    let mut d = Decoder::new(tokenizer, prompt_ids, opts, model.config().block_size)?;
    let mut cache = model.new_cache(d.capacity());
    let mut token = d.step(
        &logits_to_vec(model.forward(prompt_ids, &mut cache, true)?)?,
        on_text,
    )?;
    while !d.done {
        let row = logits_to_vec(model.forward(&[token], &mut cache, true)?)?;
        token = d.step(&row, on_text)?;
    }
    d.finish(on_text)
}

/// One sequence of [`generate_batch`]: its prompt and the LoRA adapter it uses (`None`: the base).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct BatchRequest<'a> {
    pub prompt_ids: &'a [u32],
    pub adapter: Option<&'a str>,
}

impl<'a> BatchRequest<'a> {
    /// A request for `prompt_ids` with the separately kept adapter `adapter` (`None`: the base).
    pub fn new(prompt_ids: &'a [u32], adapter: Option<&'a str>) -> Self {
        Self {
            prompt_ids,
            adapter,
        }
    }
}

/// Generates a continuation for each request, each with its own adapter, decoding all the
/// unfinished sequences in one [`Model::forward_batch`] per step (one read of the base weights
/// for all). Every sequence gets its own sampler seeded from `opts`, so each result equals
/// [`generate`] run alone with only that adapter active (bit for bit where the host kernels run,
/// AVX-512 CPUs on flex; elsewhere up to rounding, which can flip a near-tie). `on_text(i,
/// piece)` streams request `i`'s text; returning `false` stops that request. Everything is
/// checked before anything runs.
pub fn generate_batch<B: ModelBackend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    requests: &[BatchRequest<'_>],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(usize, &str) -> bool,
) -> Result<Vec<Generation>> {
    let block_size = model.config().block_size;
    let vocab = model.config().padded_vocab_size;
    if let Some(bad) = requests
        .iter()
        .flat_map(|r| r.prompt_ids)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(Error::invalid(
            "ids",
            format!("token id {bad} is outside the vocabulary (size {vocab})"),
        ));
    }
    let mut decs = requests
        .iter()
        .map(|r| Decoder::new(tokenizer, r.prompt_ids, opts, block_size).map(Some))
        .collect::<Result<Vec<_>>>()?;
    let choices: Vec<Option<&str>> = requests.iter().map(|r| r.adapter).collect();
    model.check_row_adapters(&choices)?;
    let mut results: Vec<Option<Generation>> = vec![None; requests.len()];
    // A finished request streams its last text and gets its result at once.
    let mut finish = |i: usize,
                      d: &mut Option<Decoder<'_>>,
                      on_text: &mut dyn FnMut(usize, &str) -> bool|
     -> Result<()> {
        if let Some(d) = d.take() {
            results[i] = Some(d.finish(&mut |t| on_text(i, t))?);
        }
        Ok(())
    };
    // Prompts one by one (each its own length), then all unfinished sequences together.
    let (mut live, mut caches, mut next) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in requests.iter().enumerate() {
        let Some(d) = decs[i].as_mut() else { continue };
        let mut cache = model.new_cache(d.capacity());
        let row = logits_to_vec(model.forward_with(r.prompt_ids, &mut cache, true, r.adapter)?)?;
        let token = d.step(&row, &mut |t| on_text(i, t))?;
        if d.done {
            finish(i, &mut decs[i], on_text)?;
        } else {
            live.push(i);
            caches.push(cache);
            next.push(token);
        }
    }
    while !live.is_empty() {
        let adapters: Vec<Option<&str>> = live.iter().map(|&i| requests[i].adapter).collect();
        let logits = logits_to_vec(model.forward_batch(&next, &mut caches, &adapters)?)?;
        let width = logits.len() / live.len();
        let mut finished = Vec::new();
        for (slot, &i) in live.iter().enumerate() {
            let Some(d) = decs[i].as_mut() else { continue };
            let row = &logits[slot * width..(slot + 1) * width];
            next[slot] = d.step(row, &mut |t| on_text(i, t))?;
            if d.done {
                finish(i, &mut decs[i], on_text)?;
                finished.push(slot);
            }
        }
        for &slot in finished.iter().rev() {
            live.remove(slot);
            caches.remove(slot);
            next.remove(slot);
        }
    }
    results
        .into_iter()
        .map(|g| g.ok_or_else(|| Error::Unsupported("a batch request did not finish".into())))
        .collect()
}

#[cfg(test)]
mod tests;
