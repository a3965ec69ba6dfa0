//! LitGPT's prompt-style tables (`litgpt/prompts.py`): the style classes, and which one a
//! `prompt_style.yaml` class name, a style name or a model name selects.

use std::sync::LazyLock;

use regex::Regex;

/// One prompt style class of LitGPT's `prompts.py`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Base,
    Default,
    Alpaca,
    Flan,
    Longform,
    StableLmAlpha,
    StableLmZephyr,
    Falcon,
    Falcon3,
    Llama2FunctionCalling,
    Llama2,
    Llama3,
    R1Base,
    FreeWilly2,
    Platypus,
    StableCode,
    CodeLlama,
    Phi1,
    Phi2,
    Phi3,
    Phi4,
    Phi4Reasoning,
    Phi4Mini,
    Phi4MiniReasoning,
    TinyLlama,
    Gemma,
    Olmo,
    ChatMl,
    Qwen25,
    Qwen25Math,
    QwQ,
    Qwen3,
    SmolLm2,
    Salamandra,
}

/// Every class of `prompts.py` (a subclass of `PromptStyle`, or itself) by its Python name.
pub(super) const CLASSES: &[(&str, Kind)] = &[
    ("PromptStyle", Kind::Base),
    ("Default", Kind::Default),
    ("Alpaca", Kind::Alpaca),
    ("FLAN", Kind::Flan),
    ("Longform", Kind::Longform),
    ("StableLMAlpha", Kind::StableLmAlpha),
    ("StableLMZephyr", Kind::StableLmZephyr),
    ("Falcon", Kind::Falcon),
    ("Falcon3", Kind::Falcon3),
    ("Llama2FunctionCalling", Kind::Llama2FunctionCalling),
    ("Llama2", Kind::Llama2),
    ("Llama3", Kind::Llama3),
    ("R1Base", Kind::R1Base),
    ("FreeWilly2", Kind::FreeWilly2),
    ("Platypus", Kind::Platypus),
    ("StableCode", Kind::StableCode),
    ("CodeLlama", Kind::CodeLlama),
    ("Phi1", Kind::Phi1),
    ("Phi2", Kind::Phi2),
    ("Phi3", Kind::Phi3),
    ("Phi4", Kind::Phi4),
    ("Phi4Reasoning", Kind::Phi4Reasoning),
    ("Phi4Mini", Kind::Phi4Mini),
    ("Phi4MiniReasoning", Kind::Phi4MiniReasoning),
    ("TinyLlama", Kind::TinyLlama),
    ("Gemma", Kind::Gemma),
    ("OLMo", Kind::Olmo),
    ("ChatML", Kind::ChatMl),
    ("Qwen2_5", Kind::Qwen25),
    ("Qwen2_5_Math", Kind::Qwen25Math),
    ("QwQ", Kind::QwQ),
    ("Qwen3", Kind::Qwen3),
    ("SmolLM2", Kind::SmolLm2),
    ("Salamandra", Kind::Salamandra),
];

/// LitGPT's `prompt_styles` dict, in its order, plus graftlm's `"default"`.
pub(super) const NAMES: &[(&str, Kind)] = &[
    ("alpaca", Kind::Alpaca),
    ("flan", Kind::Flan),
    ("longform", Kind::Longform),
    ("stablelm-alpha", Kind::StableLmAlpha),
    ("stablelm-zephyr", Kind::StableLmZephyr),
    ("falcon", Kind::Falcon),
    ("llama2-function-calling", Kind::Llama2FunctionCalling),
    ("llama2", Kind::Llama2),
    ("freewilly2", Kind::FreeWilly2),
    ("platypus", Kind::Platypus),
    ("stablecode", Kind::StableCode),
    ("codellama", Kind::CodeLlama),
    ("phi-1", Kind::Phi1),
    ("phi-2", Kind::Phi2),
    ("phi-3", Kind::Phi3),
    ("phi-4", Kind::Phi4),
    ("phi-4-reasoning", Kind::Phi4Reasoning),
    ("phi-4-mini", Kind::Phi4Mini),
    ("phi-4-mini-reasoning", Kind::Phi4MiniReasoning),
    ("tinyllama", Kind::TinyLlama),
    ("gemma", Kind::Gemma),
    ("llama3", Kind::Llama3),
    ("olmo", Kind::Olmo),
    ("qwen2.5", Kind::Qwen25),
    ("qwen2.5-math", Kind::Qwen25Math),
    ("qwq", Kind::QwQ),
    ("qwen3", Kind::Qwen3),
    ("smollm2", Kind::SmolLm2),
    ("salamandra", Kind::Salamandra),
    ("default", Kind::Default),
];

/// `model_name_to_prompt_style`'s `re.search` patterns, in its order.
pub(super) const MODEL_PATTERNS: &[(&str, Kind)] = &[
    (r"stablelm-tuned-alpha", Kind::StableLmAlpha),
    (r"stablelm-zephyr-3b", Kind::StableLmZephyr),
    (r"stablecode-instruct", Kind::StableCode),
    (r"Falcon3.*-Instruct", Kind::Falcon3),
    (r"falcon.*-instruct", Kind::Falcon),
    (
        r"Llama-2-7b-chat-hf-function-calling-v2",
        Kind::Llama2FunctionCalling,
    ),
    (r"Llama-2.*-chat", Kind::Llama2),
    (r"Llama-3.*-Instruct", Kind::Llama3),
    (r"Llama-3.*-Instruct-*", Kind::Llama3),
    (r"OLMo-2.*-(Instruct|SFT|DPO)", Kind::Llama3),
    (r"R1", Kind::R1Base),
    (r"FreeWilly2", Kind::FreeWilly2),
    (r"Platypus", Kind::Platypus),
    (r"CodeLlama|Mi[sx]tral.*Instruct", Kind::CodeLlama),
    (r"phi-1", Kind::Phi1),
    (r"phi-2", Kind::Phi2),
    (r"Phi-3", Kind::Phi3),
    (r"Phi-4-reasoning", Kind::Phi4Reasoning),
    (r"Phi-4-mini-reasoning", Kind::Phi4MiniReasoning),
    (r"Phi-4-mini", Kind::Phi4Mini),
    (r"phi-4", Kind::Phi4),
    (r"tiny-llama.*chat", Kind::TinyLlama),
    (r"(Code)?Gemma.*-it", Kind::Gemma),
    (r"OLMo.*-hf", Kind::Olmo),
    (r"Qwen2\.5-Math-.*", Kind::Qwen25Math),
    (r"Qwen2\.5-.*", Kind::Qwen25),
    (r"QwQ-.*", Kind::QwQ),
    (r"Qwen3-.*", Kind::Qwen3),
    (r"SmolLM2.*-Instruct", Kind::SmolLm2),
    (r"salamandra-.*-instruct", Kind::Salamandra),
];

/// The compiled [`MODEL_PATTERNS`] (constants, so compiling cannot fail; a test checks it).
pub(super) static MODEL_REGEXES: LazyLock<Vec<(Regex, Kind)>> = LazyLock::new(|| {
    MODEL_PATTERNS
        .iter()
        .filter_map(|&(pattern, kind)| Regex::new(pattern).ok().map(|re| (re, kind)))
        .collect()
});
