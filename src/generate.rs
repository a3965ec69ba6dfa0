//! Text generation: prefill the prompt, then one token at a time through the KV cache, with
//! LitGPT's stop-sequence rules, stop strings that are never half-emitted, and streaming.

use burn::prelude::*;

use crate::error::{Error, Result};
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

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
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

/// Copies a `[1, vocab]` logits tensor to the host.
pub fn logits_to_vec<B: Backend>(logits: Tensor<B, 2>) -> Result<Vec<f32>> {
    logits
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| Error::Unsupported(format!("reading logits from the device: {e:?}")))
}

/// Generates a continuation of `prompt_ids`. `on_text` receives each new piece of text (whole
/// UTF-8, never part of a stop string) and returns `false` to stop.
pub fn generate<B: Backend>(
    model: &Model<B>,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    opts: &GenerateOptions,
    on_text: &mut dyn FnMut(&str) -> bool,
) -> Result<Generation> {
    if prompt_ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    if opts.max_new_tokens == 0 {
        return Err(Error::invalid("max_new_tokens", "must be at least 1"));
    }
    let block_size = model.config().block_size;
    let total = prompt_ids.len().saturating_add(opts.max_new_tokens);
    if total > block_size {
        return Err(Error::ContextOverflow {
            prompt_tokens: prompt_ids.len(),
            max_new_tokens: opts.max_new_tokens,
            total,
            block_size,
        });
    }
    let mut sampler = Sampler::new(opts.sampling)?;
    let stop_tokens: Vec<Vec<u32>> = match &opts.stop_tokens {
        None => tokenizer.eos_ids.iter().map(|&e| vec![e]).collect(),
        Some(seqs) => seqs.iter().filter(|s| !s.is_empty()).cloned().collect(),
    };
    let mut progress = vec![0usize; stop_tokens.len()];
    let mut stream = TextStream::new(tokenizer, prompt_ids);
    let mut stops = StopStrings {
        stops: &opts.stop_strings,
        text: String::new(),
        emitted: 0,
    };

    let mut cache = model.new_cache(total);
    let mut tokens: Vec<u32> = Vec::new();
    let mut released = 0; // tokens[..released] were turned into text
    let mut reason = StopReason::MaxTokens;
    let mut cut_at: Option<usize> = None;

    // Turns tokens[released..upto] into text; returns a reason to stop, if any.
    let mut release =
        |tokens: &[u32], released: &mut usize, upto: usize| -> Result<Option<StopReason>> {
            while *released < upto {
                let piece = stream.push(tokens[*released])?;
                *released += 1;
                if let Some(piece) = piece {
                    let (out, hit) = stops.push(&piece);
                    if !out.is_empty() && !on_text(&out) {
                        return Ok(Some(StopReason::Callback));
                    }
                    if hit {
                        return Ok(Some(StopReason::StopString));
                    }
                }
            }
            Ok(None)
        };

    for step in 0..opts.max_new_tokens {
        let input: &[u32] = if step == 0 {
            prompt_ids
        } else {
            &tokens[tokens.len() - 1..]
        };
        let row = logits_to_vec(model.forward(input, &mut cache, true)?)?;
        let token = sampler.sample(&row);
        tokens.push(token);

        // LitGPT's running match of stop sequences.
        let mut finished = None;
        for (i, seq) in stop_tokens.iter().enumerate() {
            if token == seq[progress[i]] {
                progress[i] += 1;
                if progress[i] == seq.len() {
                    finished = Some(seq.len());
                    break;
                }
            } else {
                progress[i] = 0;
            }
        }
        if let Some(len) = finished {
            reason = StopReason::StopTokens;
            cut_at = Some(tokens.len() - len);
            break;
        }
        // Tokens that may still become part of a stop sequence are held back.
        let safe = tokens.len() - progress.iter().copied().max().unwrap_or(0);
        if let Some(r) = release(&tokens, &mut released, safe)? {
            reason = r;
            break;
        }
    }
    if reason == StopReason::MaxTokens {
        if let Some(r) = release(&tokens, &mut released, tokens.len())? {
            reason = r;
        }
    }
    if reason != StopReason::StopString && reason != StopReason::Callback {
        if let Some(piece) = stream.finish()? {
            let (out, hit) = stops.push(&piece);
            if !out.is_empty() {
                on_text(&out);
            }
            if hit {
                reason = StopReason::StopString;
            }
        }
        let rest = stops.flush();
        if !rest.is_empty() {
            on_text(&rest);
        }
    }
    let mut generated_ids = tokens;
    if let (Some(cut), false) = (cut_at, opts.include_stop_tokens) {
        generated_ids.truncate(cut);
    }
    Ok(Generation {
        prompt_ids: prompt_ids.to_vec(),
        generated_ids,
        text: stops.text,
        stop_reason: reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_strings_hold_back_prefixes_and_cut() {
        let stops = vec!["\n\nUser".to_string()];
        let mut s = StopStrings {
            stops: &stops,
            text: String::new(),
            emitted: 0,
        };
        assert_eq!(s.push("Hello"), ("Hello".to_string(), false));
        assert_eq!(s.push(" there\n"), (" there".to_string(), false));
        assert_eq!(s.push("\nUs"), (String::new(), false));
        assert_eq!(s.push("er: hi"), (String::new(), true));
        assert_eq!(s.text, "Hello there");
    }

    #[test]
    fn stop_strings_release_false_alarms() {
        let stops = vec!["STOP".to_string()];
        let mut s = StopStrings {
            stops: &stops,
            text: String::new(),
            emitted: 0,
        };
        assert_eq!(s.push("ab ST"), ("ab ".to_string(), false));
        assert_eq!(s.push("ART"), ("START".to_string(), false));
        assert_eq!(s.flush(), "");
    }
}
