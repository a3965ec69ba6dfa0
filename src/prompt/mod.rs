//! Prompt styles: a byte-exact port of LitGPT 0.5.13's `litgpt/prompts.py`.
//!
//! A [`PromptStyle`] wraps the user's prompt in the template a model was fine-tuned on
//! ([`PromptStyle::apply`]) and names the token sequences that end a reply
//! ([`PromptStyle::stop_tokens`]). Every prompt style class of `prompts.py` is here, with the
//! same default system prompts and the same Python truthiness: an empty `sys_prompt` (or
//! Alpaca `input`) counts as absent, exactly like `sys_prompt or default` in Python.
//!
//! Where this port differs from LitGPT (deliberately, and only there):
//! - Only the plain string prompt is supported; the list-of-chat-messages form that
//!   `Llama3.apply` and `R1Base.apply` also accept is not ported.
//! - LitGPT's `**kwargs` are not ported except Alpaca's `input`
//!   ([`PromptStyle::apply_with_input`]); every other style ignores kwargs in LitGPT too.
//! - [`PromptStyle::stop_tokens`] leaves out a sequence holding a token the tokenizer lacks:
//!   an eos of `None` (LitGPT keeps `[None]`, which can never match, so the result is the same)
//!   and a token `token_to_id` cannot find (where LitGPT raises `ValueError`).
//! - [`PromptStyle::from_name`] also accepts `"default"`, which is not a key of LitGPT's
//!   `prompt_styles` dict; [`PromptStyle::from_class_path`] also accepts a bare class name.
//! - `init_args` in `prompt_style.yaml` are ignored, as LitGPT's `load_prompt_style` (which calls
//!   `cls()`) ignores them; class paths outside `litgpt.prompts` are rejected.

use crate::error::{Error, Result};
use std::path::Path;

mod table;

#[cfg(test)]
use table::MODEL_PATTERNS;
use table::{Kind, CLASSES, MODEL_REGEXES, NAMES};

/// What prompt styles need from a tokenizer to compute stop sequences.
pub trait TokenLookup {
    /// The end-of-sequence token id, if the tokenizer has one.
    fn eos_id(&self) -> Option<u32>;
    /// Like LitGPT `tokenizer.token_to_id` (None where LitGPT would raise).
    fn token_to_id(&self, token: &str) -> Option<u32>;
    /// Like LitGPT `tokenizer.encode(text, bos=False)` (ids only).
    fn encode_no_bos(&self, text: &str) -> Vec<u32>;
}

const ALPACA_SYS: &str = "Below is an instruction that describes a task. \
    Write a response that appropriately completes the request.\n\n";
const ALPACA_INPUT_SYS: &str = "Below is an instruction that describes a task, paired with an \
    input that provides further context. Write a response that appropriately completes the request.\n\n";
const STABLELM_ALPHA_SYS: &str = "# StableLM Tuned (Alpha version)\n- StableLM is a helpful and \
    harmless open-source AI language model developed by StabilityAI.\n- StableLM is excited to be \
    able to help the user, but will refuse to do anything that could be considered harmful to the \
    user.\n- StableLM is more than just an information source, StableLM is also able to write \
    poetry, short stories, and make jokes.\n- StableLM will refuse to participate in anything that \
    could harm a human.";
/// `dumps(function_metadata)` with its braces doubled, as `Llama2FunctionCalling` writes it.
const LLAMA2_FUNCTIONS: &str =
    "{{\"function\": \"search_bing\", \"description\": \"Search the web \
    for content on Bing. This allows users to search online/the internet/the web for content.\", \
    \"arguments\": [{{\"name\": \"query\", \"type\": \"string\", \"description\": \"The search \
    query string\"}}]}}";
const LLAMA2_FUNCTIONS_SYS: &str = "You are a helpful, respectful and honest assistant. Always \
    answer as helpfully aspossible. Your only response should be JSON formatted functions";
const LLAMA2_SYS: &str = "You are a helpful, respectful and honest assistant. Always answer as \
    helpfully as possible, while being safe.  Your answers should not include any harmful, \
    unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your \
    responses are socially unbiased and positive in nature.\n\nIf a question does not make any \
    sense, or is not factually coherent, explain why instead of answering something not correct. \
    If you don't know the answer to a question, please don't share false information.";
const PHI4_REASONING_SYS: &str = "You are Phi, a language model trained by Microsoft to help \
    users. Your role as an assistant involves thoroughly exploring questions through a systematic \
    thinking process before providing the final precise and accurate solutions. This requires \
    engaging in a comprehensive cycle of analysis, summarizing, exploration, reassessment, \
    reflection, backtracing, and iteration to develop well-considered thinking process. Please \
    structure your response into two main sections: Thought and Solution using the specified \
    format: <think> {Thought section} </think> {Solution section}. In the Thought section, detail \
    your reasoning process in steps. Each step should include detailed considerations such as \
    analysing questions, summarizing relevant findings, brainstorming new ideas, verifying the \
    accuracy of the current steps, refining any errors, and revisiting previous steps. In the \
    Solution section, based on various attempts, explorations, and reflections from the Thought \
    section, systematically present the final solution that you deem correct. The Solution \
    section should be logical, accurate, and concise and detail necessary steps needed to reach \
    the conclusion. Now, try to solve the following question through the above guidelines:";
const SALAMANDRA_SYS: &str = "I am Salamandra, an AI language model developed at the Barcelona \
    Supercomputing Centre (BSC) by the Language Technologies Unit. My knowledge base was last \
    updated on August 2023. Today Date: 2024-09-30\nSoy Salamandra, un modelo lingüístico de IA \
    desarrollado en el Barcelona Supercomputing Centre (BSC) por la Language Technologies Unit. \
    Mi base de conocimientos se actualizó por última vez en agosto de 2023.\nSoc Salamandra, un \
    model de llenguatge d'IA desenvolupat al Barcelona Supercomputing Centre (BSC) per la \
    Language Technologies Unit.";

/// Python truthiness of an optional string: `None` and `""` are both absent.
fn truthy(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

/// Python `str.strip()`: Rust's whitespace plus U+001C..U+001F, which Python also strips.
fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

/// A LitGPT prompt style (one of the classes of `litgpt/prompts.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptStyle {
    kind: Kind,
}

impl PromptStyle {
    /// By the key of LitGPT's `prompt_styles` dict (`"alpaca"`, `"llama3"`, ...), plus
    /// `"default"` for `Default`. Unknown names give [`Error::PromptStyle`] listing the known ones.
    pub fn from_name(name: &str) -> Result<Self> {
        match NAMES.iter().find(|(n, _)| *n == name) {
            Some(&(_, kind)) => Ok(Self { kind }),
            None => {
                let known: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
                Err(Error::PromptStyle(format!(
                    "unknown prompt style `{name}`; known: {}",
                    known.join(", ")
                )))
            }
        }
    }

    /// By LitGPT class path as written in `prompt_style.yaml`, e.g. `"litgpt.prompts.Alpaca"`
    /// (also `"litgpt.PromptStyle"`, which LitGPT re-exports, and a bare class name, `"Alpaca"`).
    pub fn from_class_path(class_path: &str) -> Result<Self> {
        let (module, class) = match class_path.rsplit_once('.') {
            Some((module, class)) => (Some(module), class),
            None => (None, class_path),
        };
        let found = CLASSES.iter().find(|(c, _)| *c == class);
        match (module, found) {
            (None | Some("litgpt.prompts"), Some(&(_, kind))) => Ok(Self { kind }),
            (Some("litgpt"), Some(&(_, Kind::Base))) => Ok(Self { kind: Kind::Base }),
            _ => {
                let known: Vec<&str> = CLASSES.iter().map(|(c, _)| *c).collect();
                Err(Error::PromptStyle(format!(
                    "unknown prompt style class `{class_path}`; known: litgpt.prompts.{{{}}}",
                    known.join(", ")
                )))
            }
        }
    }

    /// LitGPT `model_name_to_prompt_style(config.name)`: the first of its regexes that
    /// `re.search` finds in `model_name` decides; none gives `Default`.
    pub fn for_model_name(model_name: &str) -> Self {
        let kind = MODEL_REGEXES
            .iter()
            .find(|(re, _)| re.is_match(model_name))
            .map_or(Kind::Default, |&(_, kind)| kind);
        Self { kind }
    }

    /// Reads `<dir>/prompt_style.yaml` if it is a file (`Ok(None)` if not), like LitGPT's
    /// `has_prompt_style` + `load_prompt_style`. The file is YAML with a `class_path` key
    /// (`class_path: litgpt.prompts.Alpaca`); other keys such as `init_args` are ignored. An
    /// unreadable or malformed file, or an unknown class, is an error naming the path.
    pub fn load(dir: &Path) -> Result<Option<Self>> {
        #[derive(serde::Deserialize)]
        struct StyleFile {
            class_path: String,
        }
        let path = dir.join("prompt_style.yaml");
        if !path.is_file() {
            return Ok(None);
        }
        let text = crate::file::read_to_string(&path)?;
        let file: StyleFile = serde_yaml::from_str(&text).map_err(|e| Error::parse(&path, e))?;
        Self::from_class_path(&file.class_path)
            .map(Some)
            .map_err(|e| Error::parse(&path, e))
    }

    /// Like LitGPT `load_prompt_style(dir) if has_prompt_style(dir) else
    /// PromptStyle.from_config(config)` where `config.name == model_name`.
    pub fn resolve(dir: &Path, model_name: &str) -> Result<Self> {
        Ok(Self::load(dir)?.unwrap_or_else(|| Self::for_model_name(model_name)))
    }

    /// The LitGPT class name, e.g. `"Alpaca"`.
    pub fn name(&self) -> &str {
        CLASSES
            .iter()
            .find(|(_, k)| *k == self.kind)
            .map_or("PromptStyle", |(c, _)| *c)
    }

    /// `style.apply(prompt, sys_prompt=sys_prompt)`; an empty `sys_prompt` counts as `None`.
    pub fn apply(&self, prompt: &str, sys_prompt: Option<&str>) -> String {
        self.apply_with_input(prompt, sys_prompt, None)
    }

    /// `style.apply(prompt, sys_prompt=sys_prompt, input=input)`: only `Alpaca` uses `input`
    /// (when non-empty); every other style ignores it, as in LitGPT.
    pub fn apply_with_input(
        &self,
        prompt: &str,
        sys_prompt: Option<&str>,
        input: Option<&str>,
    ) -> String {
        let sys = truthy(sys_prompt);
        let or = |default: &'static str| sys.unwrap_or(default);
        match self.kind {
            Kind::Base | Kind::Default => prompt.to_string(),
            Kind::Alpaca => match truthy(input) {
                Some(input) => format!(
                    "{}### Instruction:\n{prompt}\n\n### Input:\n{input}\n\n### Response:\n",
                    or(ALPACA_INPUT_SYS)
                ),
                None => format!("{}### Instruction:\n{prompt}\n\n### Response:\n", or(ALPACA_SYS)),
            },
            Kind::Flan => format!("{}### Instruction:\n{prompt}\n\n### Response:\n", or(ALPACA_SYS)),
            Kind::Longform => format!(
                "{}### Instruction:\n{prompt}\n\n### Response:\n",
                or(ALPACA_INPUT_SYS)
            ),
            Kind::StableLmAlpha => format!(
                "<|SYSTEM|>{}<|USER|>{prompt}<|ASSISTANT|>",
                or(STABLELM_ALPHA_SYS)
            ),
            Kind::StableLmZephyr | Kind::Falcon3 => {
                format!("<|user|>\n{prompt}<|endoftext|>\n<|assistant|>\n")
            }
            Kind::Falcon => format!("{prompt}\nAnswer:"),
            Kind::Llama2FunctionCalling => format!(
                "<FUNCTIONS>{LLAMA2_FUNCTIONS}</FUNCTIONS>\n\n[INST]<<SYS>>\n{}\n<</SYS>>\n\n{prompt}[/INST]\n\n",
                py_strip(or(LLAMA2_FUNCTIONS_SYS))
            ),
            Kind::Llama2 => format!(
                "[INST] <<SYS>>\n{}\n<</SYS>>\n\n {prompt} [/INST] ",
                or(LLAMA2_SYS)
            ),
            Kind::Llama3 => format!(
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{}<|eot_id|>\
                 <|start_header_id|>user<|end_header_id|>\n\n{prompt}<|eot_id|>\
                 <|start_header_id|>assistant<|end_header_id|>\n\n",
                or("You are a helpful assistant.")
            ),
            Kind::R1Base => format!("{}<｜User｜>{prompt}<｜Assistant｜>", or("")),
            Kind::FreeWilly2 => format!(
                "### System:\n{}\n\n### User:\n{prompt}\n\n### Assistant:\n",
                or("This is a system prompt, please behave and help the user.")
            ),
            Kind::Platypus => format!("### Instruction:\n\n{prompt}\n\n### Response:\n"),
            Kind::StableCode => format!("###Instruction\n{prompt}###Response\n"),
            Kind::CodeLlama => match sys {
                Some(sys) => format!("[INST] <<SYS>>\n{sys}\n<</SYS>>\n\n{prompt} [/INST]"),
                None => format!("[INST] {prompt} [/INST]"),
            },
            Kind::Phi1 => format!("{prompt}\n\nAnswer:"),
            Kind::Phi2 => format!("Instruct: {prompt}\nOutput:"),
            Kind::Phi3 => format!(
                "<|system|>\n{}<|end|>\n<|user|>\n{prompt}<|end|>\n<|assistant|>\n",
                or("You are a helpful assistant.")
            ),
            Kind::Phi4 => {
                let system = sys.map_or(String::new(), |s| {
                    format!("<|im_start|>system<|im_sep|>{s}<|im_end|>")
                });
                format!(
                    "{system}<|im_start|>user<|im_sep|>{prompt}<|im_end|><|im_start|>assistant<|im_sep|>"
                )
            }
            // `<|im_start>` (sic) is what LitGPT writes.
            Kind::Phi4Reasoning => format!(
                "<|im_start>system<|im_sep|>{}<|im_end|><|im_start|>user<|im_sep|>{prompt}\
                 <|im_end|><|im_start|>assistant<|im_sep|>",
                or(PHI4_REASONING_SYS)
            ),
            Kind::Phi4Mini => {
                let system = sys.map_or(String::new(), |s| format!("<|system|>{s}<|end|>"));
                format!("{system}<|user|>{prompt}<|end|><|assistant|>")
            }
            Kind::Phi4MiniReasoning => format!(
                "<|system|>{}<|end|><|user|>{prompt}<|end|><|assistant|>",
                or("Your name is Phi, an AI math expert developed by Microsoft.")
            ),
            Kind::TinyLlama => format!(
                "<|system|>\n{}</s>\n<|user|>\n{prompt}</s>\n<|assistant|>\n",
                or("You are a friendly chatbot who always gives helpful, detailed, and polite answers.")
            ),
            Kind::Gemma => {
                format!("<start_of_turn>user\n{prompt}<end_of_turn>\n<start_of_turn>model\n")
            }
            Kind::Olmo => format!("<|endoftext|><|user|>\n{prompt}\n<|assistant|>\n"),
            Kind::ChatMl
            | Kind::Qwen25
            | Kind::Qwen25Math
            | Kind::QwQ
            | Kind::Qwen3
            | Kind::SmolLm2
            | Kind::Salamandra => {
                let system = sys.or(self.chatml_system()).map_or(String::new(), |s| {
                    format!("<|im_start|>system\n{s}<|im_end|>\n")
                });
                format!("{system}<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n")
            }
        }
    }

    /// The `system_message` a `ChatML` subclass passes to `ChatML.__init__`.
    fn chatml_system(&self) -> Option<&'static str> {
        match self.kind {
            Kind::Qwen25 => {
                Some("You are Qwen, created by Alibaba Cloud. You are a helpful assistant.")
            }
            Kind::Qwen25Math => {
                Some("Please reason step by step, and put your final answer within \\boxed{}.")
            }
            Kind::QwQ => Some(
                "You are a helpful and harmless assistant. You are Qwen developed by Alibaba. \
                 You should think step-by-step.",
            ),
            Kind::SmolLm2 => {
                Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
            }
            Kind::Salamandra => Some(SALAMANDRA_SYS),
            _ => None,
        }
    }

    /// `style.stop_tokens(tokenizer)`, in LitGPT's order. A sequence holding a token the
    /// tokenizer lacks is left out: an eos of `None` (LitGPT's `[None]` never matches anyway)
    /// or a token `token_to_id` cannot find (where LitGPT would raise).
    pub fn stop_tokens(&self, tok: &dyn TokenLookup) -> Vec<Vec<u32>> {
        let id = |t: &str| tok.token_to_id(t);
        let mut seqs = vec![vec![tok.eos_id()]];
        match self.kind {
            Kind::StableLmAlpha => {
                for t in ["<|SYSTEM|>", "<|ASSISTANT|>", "<|USER|>"] {
                    seqs.push(vec![id(t)]);
                }
            }
            Kind::Falcon => {
                seqs.push(vec![id("User"), id(":")]);
                seqs.push(vec![Some(193), id("User")]); // 193: '\n'
            }
            Kind::Falcon3 => seqs.push(vec![id("<|endoftext|>")]),
            Kind::Llama3 => seqs.push(vec![id("<|eot_id|>")]),
            Kind::R1Base => seqs.push(vec![id("<｜end▁of▁sentence｜>")]),
            Kind::Phi1 => {
                seqs.push(vec![id("Answer"), id(":")]);
                seqs.push(vec![Some(198), id("Answer"), id(":")]);
            }
            _ => {}
        }
        seqs.into_iter()
            .filter_map(|seq| seq.into_iter().collect::<Option<Vec<u32>>>())
            .collect()
    }
}

#[cfg(test)]
mod tests;
