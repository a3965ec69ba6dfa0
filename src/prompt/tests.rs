//! Tests of the prompt styles against strings produced by LitGPT 0.5.13's `prompts.py`.
use super::*;
use std::collections::HashMap;

const PROMPT: &str = "What is 2+2?";
const SYS_CASE_PROMPT: &str = "Hi \"there\"\n{x}";
/// Leading/trailing whitespace and U+001C, to check `Llama2FunctionCalling`'s `.strip()`.
const SYS: &str = "  Be brief.\u{1c} ";

/// (class, apply(PROMPT, None), apply(SYS_CASE_PROMPT, Some(SYS))), produced by LitGPT 0.5.13.
const APPLY_CASES: &[(&str, &str, &str)] = &[
    ("PromptStyle", "What is 2+2?", "Hi \"there\"\n{x}"),
    ("Default", "What is 2+2?", "Hi \"there\"\n{x}"),
    ("Alpaca", "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n", "  Be brief.\u{1c} ### Instruction:\nHi \"there\"\n{x}\n\n### Response:\n"),
    ("FLAN", "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n", "  Be brief.\u{1c} ### Instruction:\nHi \"there\"\n{x}\n\n### Response:\n"),
    ("Longform", "Below is an instruction that describes a task, paired with an input that provides further context. Write a response that appropriately completes the request.\n\n### Instruction:\nWhat is 2+2?\n\n### Response:\n", "  Be brief.\u{1c} ### Instruction:\nHi \"there\"\n{x}\n\n### Response:\n"),
    ("StableLMAlpha", "<|SYSTEM|># StableLM Tuned (Alpha version)\n- StableLM is a helpful and harmless open-source AI language model developed by StabilityAI.\n- StableLM is excited to be able to help the user, but will refuse to do anything that could be considered harmful to the user.\n- StableLM is more than just an information source, StableLM is also able to write poetry, short stories, and make jokes.\n- StableLM will refuse to participate in anything that could harm a human.<|USER|>What is 2+2?<|ASSISTANT|>", "<|SYSTEM|>  Be brief.\u{1c} <|USER|>Hi \"there\"\n{x}<|ASSISTANT|>"),
    ("StableLMZephyr", "<|user|>\nWhat is 2+2?<|endoftext|>\n<|assistant|>\n", "<|user|>\nHi \"there\"\n{x}<|endoftext|>\n<|assistant|>\n"),
    ("Falcon", "What is 2+2?\nAnswer:", "Hi \"there\"\n{x}\nAnswer:"),
    ("Falcon3", "<|user|>\nWhat is 2+2?<|endoftext|>\n<|assistant|>\n", "<|user|>\nHi \"there\"\n{x}<|endoftext|>\n<|assistant|>\n"),
    ("Llama2FunctionCalling", "<FUNCTIONS>{{\"function\": \"search_bing\", \"description\": \"Search the web for content on Bing. This allows users to search online/the internet/the web for content.\", \"arguments\": [{{\"name\": \"query\", \"type\": \"string\", \"description\": \"The search query string\"}}]}}</FUNCTIONS>\n\n[INST]<<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully aspossible. Your only response should be JSON formatted functions\n<</SYS>>\n\nWhat is 2+2?[/INST]\n\n", "<FUNCTIONS>{{\"function\": \"search_bing\", \"description\": \"Search the web for content on Bing. This allows users to search online/the internet/the web for content.\", \"arguments\": [{{\"name\": \"query\", \"type\": \"string\", \"description\": \"The search query string\"}}]}}</FUNCTIONS>\n\n[INST]<<SYS>>\nBe brief.\n<</SYS>>\n\nHi \"there\"\n{x}[/INST]\n\n"),
    ("Llama2", "[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. Please ensure that your responses are socially unbiased and positive in nature.\n\nIf a question does not make any sense, or is not factually coherent, explain why instead of answering something not correct. If you don't know the answer to a question, please don't share false information.\n<</SYS>>\n\n What is 2+2? [/INST] ", "[INST] <<SYS>>\n  Be brief.\u{1c} \n<</SYS>>\n\n Hi \"there\"\n{x} [/INST] "),
    ("Llama3", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n  Be brief.\u{1c} <|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi \"there\"\n{x}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"),
    ("R1Base", "<｜User｜>What is 2+2?<｜Assistant｜>", "  Be brief.\u{1c} <｜User｜>Hi \"there\"\n{x}<｜Assistant｜>"),
    ("FreeWilly2", "### System:\nThis is a system prompt, please behave and help the user.\n\n### User:\nWhat is 2+2?\n\n### Assistant:\n", "### System:\n  Be brief.\u{1c} \n\n### User:\nHi \"there\"\n{x}\n\n### Assistant:\n"),
    ("Platypus", "### Instruction:\n\nWhat is 2+2?\n\n### Response:\n", "### Instruction:\n\nHi \"there\"\n{x}\n\n### Response:\n"),
    ("StableCode", "###Instruction\nWhat is 2+2?###Response\n", "###Instruction\nHi \"there\"\n{x}###Response\n"),
    ("CodeLlama", "[INST] What is 2+2? [/INST]", "[INST] <<SYS>>\n  Be brief.\u{1c} \n<</SYS>>\n\nHi \"there\"\n{x} [/INST]"),
    ("Phi1", "What is 2+2?\n\nAnswer:", "Hi \"there\"\n{x}\n\nAnswer:"),
    ("Phi2", "Instruct: What is 2+2?\nOutput:", "Instruct: Hi \"there\"\n{x}\nOutput:"),
    ("Phi3", "<|system|>\nYou are a helpful assistant.<|end|>\n<|user|>\nWhat is 2+2?<|end|>\n<|assistant|>\n", "<|system|>\n  Be brief.\u{1c} <|end|>\n<|user|>\nHi \"there\"\n{x}<|end|>\n<|assistant|>\n"),
    ("Phi4", "<|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>", "<|im_start|>system<|im_sep|>  Be brief.\u{1c} <|im_end|><|im_start|>user<|im_sep|>Hi \"there\"\n{x}<|im_end|><|im_start|>assistant<|im_sep|>"),
    ("Phi4Reasoning", "<|im_start>system<|im_sep|>You are Phi, a language model trained by Microsoft to help users. Your role as an assistant involves thoroughly exploring questions through a systematic thinking process before providing the final precise and accurate solutions. This requires engaging in a comprehensive cycle of analysis, summarizing, exploration, reassessment, reflection, backtracing, and iteration to develop well-considered thinking process. Please structure your response into two main sections: Thought and Solution using the specified format: <think> {Thought section} </think> {Solution section}. In the Thought section, detail your reasoning process in steps. Each step should include detailed considerations such as analysing questions, summarizing relevant findings, brainstorming new ideas, verifying the accuracy of the current steps, refining any errors, and revisiting previous steps. In the Solution section, based on various attempts, explorations, and reflections from the Thought section, systematically present the final solution that you deem correct. The Solution section should be logical, accurate, and concise and detail necessary steps needed to reach the conclusion. Now, try to solve the following question through the above guidelines:<|im_end|><|im_start|>user<|im_sep|>What is 2+2?<|im_end|><|im_start|>assistant<|im_sep|>", "<|im_start>system<|im_sep|>  Be brief.\u{1c} <|im_end|><|im_start|>user<|im_sep|>Hi \"there\"\n{x}<|im_end|><|im_start|>assistant<|im_sep|>"),
    ("Phi4Mini", "<|user|>What is 2+2?<|end|><|assistant|>", "<|system|>  Be brief.\u{1c} <|end|><|user|>Hi \"there\"\n{x}<|end|><|assistant|>"),
    ("Phi4MiniReasoning", "<|system|>Your name is Phi, an AI math expert developed by Microsoft.<|end|><|user|>What is 2+2?<|end|><|assistant|>", "<|system|>  Be brief.\u{1c} <|end|><|user|>Hi \"there\"\n{x}<|end|><|assistant|>"),
    ("TinyLlama", "<|system|>\nYou are a friendly chatbot who always gives helpful, detailed, and polite answers.</s>\n<|user|>\nWhat is 2+2?</s>\n<|assistant|>\n", "<|system|>\n  Be brief.\u{1c} </s>\n<|user|>\nHi \"there\"\n{x}</s>\n<|assistant|>\n"),
    ("Gemma", "<start_of_turn>user\nWhat is 2+2?<end_of_turn>\n<start_of_turn>model\n", "<start_of_turn>user\nHi \"there\"\n{x}<end_of_turn>\n<start_of_turn>model\n"),
    ("OLMo", "<|endoftext|><|user|>\nWhat is 2+2?\n<|assistant|>\n", "<|endoftext|><|user|>\nHi \"there\"\n{x}\n<|assistant|>\n"),
    ("ChatML", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("Qwen2_5", "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("Qwen2_5_Math", "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("QwQ", "<|im_start|>system\nYou are a helpful and harmless assistant. You are Qwen developed by Alibaba. You should think step-by-step.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("Qwen3", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("SmolLM2", "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
    ("Salamandra", "<|im_start|>system\nI am Salamandra, an AI language model developed at the Barcelona Supercomputing Centre (BSC) by the Language Technologies Unit. My knowledge base was last updated on August 2023. Today Date: 2024-09-30\nSoy Salamandra, un modelo lingüístico de IA desarrollado en el Barcelona Supercomputing Centre (BSC) por la Language Technologies Unit. Mi base de conocimientos se actualizó por última vez en agosto de 2023.\nSoc Salamandra, un model de llenguatge d'IA desenvolupat al Barcelona Supercomputing Centre (BSC) per la Language Technologies Unit.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n", "<|im_start|>system\n  Be brief.\u{1c} <|im_end|>\n<|im_start|>user\nHi \"there\"\n{x}<|im_end|>\n<|im_start|>assistant\n"),
];

#[test]
fn apply_matches_litgpt_for_every_class() {
    assert_eq!(APPLY_CASES.len(), CLASSES.len());
    for &(class, plain, with_sys) in APPLY_CASES {
        let style = PromptStyle::from_class_path(class).unwrap();
        assert_eq!(style.name(), class);
        assert_eq!(style.apply(PROMPT, None), plain, "{class}");
        assert_eq!(style.apply(SYS_CASE_PROMPT, Some(SYS)), with_sys, "{class}");
        // Python `sys_prompt or default`: "" is the same as None (checked against LitGPT).
        assert_eq!(
            style.apply("Q", Some("")),
            style.apply("Q", None),
            "{class}"
        );
    }
}

#[test]
fn alpaca_input_matches_litgpt() {
    let alpaca = PromptStyle::from_name("alpaca").unwrap();
    assert_eq!(
        alpaca.apply_with_input("Sum", None, Some("1 2")),
        "Below is an instruction that describes a task, paired with an input that provides \
         further context. Write a response that appropriately completes the request.\n\n\
         ### Instruction:\nSum\n\n### Input:\n1 2\n\n### Response:\n"
    );
    assert_eq!(
        alpaca.apply_with_input("Sum", Some("S:"), Some("1 2")),
        "S:### Instruction:\nSum\n\n### Input:\n1 2\n\n### Response:\n"
    );
    assert_eq!(
        alpaca.apply_with_input("Sum", None, Some("")),
        alpaca.apply("Sum", None)
    );
    let flan = PromptStyle::from_name("flan").unwrap();
    assert_eq!(
        flan.apply_with_input("Sum", None, Some("1 2")),
        flan.apply("Sum", None)
    );
}

#[test]
fn from_name_covers_litgpt_registry() {
    let expected = [
        ("alpaca", "Alpaca"),
        ("flan", "FLAN"),
        ("longform", "Longform"),
        ("stablelm-alpha", "StableLMAlpha"),
        ("stablelm-zephyr", "StableLMZephyr"),
        ("falcon", "Falcon"),
        ("llama2-function-calling", "Llama2FunctionCalling"),
        ("llama2", "Llama2"),
        ("freewilly2", "FreeWilly2"),
        ("platypus", "Platypus"),
        ("stablecode", "StableCode"),
        ("codellama", "CodeLlama"),
        ("phi-1", "Phi1"),
        ("phi-2", "Phi2"),
        ("phi-3", "Phi3"),
        ("phi-4", "Phi4"),
        ("phi-4-reasoning", "Phi4Reasoning"),
        ("phi-4-mini", "Phi4Mini"),
        ("phi-4-mini-reasoning", "Phi4MiniReasoning"),
        ("tinyllama", "TinyLlama"),
        ("gemma", "Gemma"),
        ("llama3", "Llama3"),
        ("olmo", "OLMo"),
        ("qwen2.5", "Qwen2_5"),
        ("qwen2.5-math", "Qwen2_5_Math"),
        ("qwq", "QwQ"),
        ("qwen3", "Qwen3"),
        ("smollm2", "SmolLM2"),
        ("salamandra", "Salamandra"),
        ("default", "Default"),
    ];
    assert_eq!(expected.len(), NAMES.len());
    for (key, class) in expected {
        assert_eq!(PromptStyle::from_name(key).unwrap().name(), class);
    }
    let err = PromptStyle::from_name("Alpaca").unwrap_err().to_string();
    assert!(
        err.contains("`Alpaca`") && err.contains("alpaca, flan"),
        "{err}"
    );
}

#[test]
fn from_class_path_variants() {
    let ok = |p: &str| PromptStyle::from_class_path(p).unwrap().name().to_string();
    assert_eq!(ok("litgpt.prompts.Alpaca"), "Alpaca");
    assert_eq!(ok("Alpaca"), "Alpaca");
    assert_eq!(ok("litgpt.prompts.ChatML"), "ChatML");
    assert_eq!(ok("litgpt.prompts.Qwen2_5_Math"), "Qwen2_5_Math");
    assert_eq!(ok("litgpt.PromptStyle"), "PromptStyle");
    for bad in [
        "",
        "litgpt.prompts.",
        "litgpt.prompts.Config",
        "litgpt.prompts.alpaca",
        "litgpt.Alpaca",
        "my.module.Alpaca",
    ] {
        let err = PromptStyle::from_class_path(bad).unwrap_err();
        assert!(matches!(err, Error::PromptStyle(_)), "{bad}: {err}");
    }
}

#[test]
fn model_patterns_all_compile() {
    assert_eq!(MODEL_REGEXES.len(), MODEL_PATTERNS.len());
}

#[test]
fn for_model_name_matches_litgpt() {
    // Expected classes from LitGPT's `model_name_to_prompt_style` (note its quirks:
    // "CodeLlama-34b-Instruct-hf" hits the Llama 3 pattern; `.` does not match "\n").
    let cases = [
        ("Llama-2-7b-chat-hf", "Llama2"),
        ("Qwen2.5-0.5B-Instruct", "Qwen2_5"),
        ("SmolLM2-135M-Instruct", "SmolLM2"),
        ("phi-2", "Phi2"),
        ("pythia-14m", "Default"),
        ("tiny-llama-1.1b-chat", "TinyLlama"),
        ("Meta-Llama-3-8B-Instruct", "Llama3"),
        ("x\nR1", "R1Base"),
        ("Llama-3\n-Instruct", "Default"),
        ("Qwen2.5", "Default"),
        ("Camel-Platypus2-13B", "Platypus"),
        ("CodeGemma-7b-it", "Gemma"),
        ("CodeLlama-13b-Instruct-hf", "CodeLlama"),
        ("CodeLlama-34b-Instruct-hf", "Llama3"),
        ("Falcon3-10B-Base", "Default"),
        ("Falcon3-10B-Instruct", "Falcon3"),
        ("FreeWilly2", "FreeWilly2"),
        ("Llama-2-13b-chat-hf", "Llama2"),
        (
            "Llama-2-7b-chat-hf-function-calling-v2",
            "Llama2FunctionCalling",
        ),
        ("OLMo-1B-hf", "OLMo"),
        ("Phi-3-mini-128k-instruct", "Phi3"),
        ("Phi-4-mini-instruct", "Phi4Mini"),
        ("Phi-4-mini-reasoning", "Phi4MiniReasoning"),
        ("Phi-4-reasoning", "Phi4Reasoning"),
        ("QwQ-32B", "QwQ"),
        ("Qwen2.5-0.5B", "Qwen2_5"),
        ("Qwen2.5-Math-1.5B", "Qwen2_5_Math"),
        ("Qwen3-0.6B", "Qwen3"),
        ("R1-Distill-Llama-70B", "R1Base"),
        ("SmolLM2-1.7B-Instruct", "SmolLM2"),
        ("falcon-40b-instruct", "Falcon"),
        ("phi-1_5", "Phi1"),
        ("phi-4", "Phi4"),
        ("salamandra-2b-instruct", "Salamandra"),
        ("stablecode-instruct-alpha-3b", "StableCode"),
        ("stablelm-tuned-alpha-3b", "StableLMAlpha"),
        ("stablelm-zephyr-3b", "StableLMZephyr"),
    ];
    for (name, class) in cases {
        assert_eq!(PromptStyle::for_model_name(name).name(), class, "{name:?}");
    }
}

/// A unique scratch directory (removed by the caller).
fn scratch_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("graftlm-prompt-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn load_and_resolve() {
    let dir = scratch_dir("load");
    let file = dir.join("prompt_style.yaml");
    assert_eq!(PromptStyle::load(&dir).unwrap(), None);
    assert_eq!(PromptStyle::resolve(&dir, "phi-2").unwrap().name(), "Phi2");
    // Exactly what LitGPT's `save_prompt_style("alpaca", dir)` writes.
    std::fs::write(&file, "class_path: litgpt.prompts.Alpaca\n").unwrap();
    assert_eq!(PromptStyle::load(&dir).unwrap().unwrap().name(), "Alpaca");
    assert_eq!(
        PromptStyle::resolve(&dir, "phi-2").unwrap().name(),
        "Alpaca"
    );
    std::fs::write(&file, "class_path: litgpt.prompts.ChatML\ninit_args: {}\n").unwrap();
    assert_eq!(PromptStyle::load(&dir).unwrap().unwrap().name(), "ChatML");
    for bad in [
        "",
        "class_path: [1, 2]\n",
        "init_args: {}\n",
        "class_path: x.Nope\n",
        ": :",
    ] {
        std::fs::write(&file, bad).unwrap();
        let err = PromptStyle::load(&dir).unwrap_err();
        assert!(matches!(err, Error::Parse { .. }), "{bad:?}: {err}");
        assert!(err.to_string().contains("prompt_style.yaml"), "{err}");
        assert!(PromptStyle::resolve(&dir, "phi-2").is_err());
    }
    // A directory named prompt_style.yaml is not a prompt style file (`is_file()`).
    std::fs::remove_file(&file).unwrap();
    std::fs::create_dir(&file).unwrap();
    assert_eq!(PromptStyle::load(&dir).unwrap(), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

struct FakeTok {
    eos: Option<u32>,
    vocab: HashMap<&'static str, u32>,
}

impl TokenLookup for FakeTok {
    fn eos_id(&self) -> Option<u32> {
        self.eos
    }
    fn token_to_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }
    fn encode_no_bos(&self, text: &str) -> Vec<u32> {
        text.bytes().map(u32::from).collect()
    }
}

fn fake(eos: Option<u32>) -> FakeTok {
    let vocab = [
        ("<|SYSTEM|>", 10),
        ("<|ASSISTANT|>", 11),
        ("<|USER|>", 12),
        ("User", 13),
        (":", 14),
        ("<|endoftext|>", 15),
        ("<|eot_id|>", 16),
        ("<｜end▁of▁sentence｜>", 17),
        ("Answer", 18),
    ];
    FakeTok {
        eos,
        vocab: vocab.into_iter().collect(),
    }
}

#[test]
fn stop_tokens_match_litgpt() {
    // Produced by LitGPT 0.5.13 with a fake tokenizer of the same vocabulary and eos 2.
    let special: [(&str, Vec<Vec<u32>>); 6] = [
        ("StableLMAlpha", vec![vec![2], vec![10], vec![11], vec![12]]),
        ("Falcon", vec![vec![2], vec![13, 14], vec![193, 13]]),
        ("Falcon3", vec![vec![2], vec![15]]),
        ("Llama3", vec![vec![2], vec![16]]),
        ("R1Base", vec![vec![2], vec![17]]),
        ("Phi1", vec![vec![2], vec![18, 14], vec![198, 18, 14]]),
    ];
    let tok = fake(Some(2));
    for &(class, _) in CLASSES {
        let style = PromptStyle::from_class_path(class).unwrap();
        let expected = special
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(vec![vec![2]], |(_, s)| s.clone());
        assert_eq!(style.stop_tokens(&tok), expected, "{class}");
    }
}

#[test]
fn stop_tokens_skip_missing_ids() {
    let no_eos = fake(None);
    let default = PromptStyle::from_name("default").unwrap();
    assert!(default.stop_tokens(&no_eos).is_empty());
    let llama3 = PromptStyle::from_name("llama3").unwrap();
    assert_eq!(llama3.stop_tokens(&no_eos), vec![vec![16]]);
    let mut partial = fake(Some(7));
    partial.vocab.remove(":");
    let falcon = PromptStyle::from_name("falcon").unwrap();
    assert_eq!(falcon.stop_tokens(&partial), vec![vec![7], vec![193, 13]]);
    let phi1 = PromptStyle::from_name("phi-1").unwrap();
    assert_eq!(phi1.stop_tokens(&partial), vec![vec![7]]);
}
