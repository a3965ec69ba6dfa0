//! [`Arch`]: which architecture a configuration describes, decided once when the config is read
//! (from `model_type` for Hugging Face configs, from the structure for LitGPT ones), so nothing
//! later guesses it from flags.

use super::{Family, MlpKind, ModelConfig, NormKind};

/// The architectures graftlm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Arch {
    Llama,
    Mistral,
    Qwen2,
    Qwen3,
    Olmo2,
    Gemma,
    Gemma2,
    Phi,
    Phi3,
    StableLm,
    Falcon,
    GptNeox,
}

impl Arch {
    /// Every architecture, in the order above.
    pub const ALL: [Arch; 12] = [
        Arch::Llama,
        Arch::Mistral,
        Arch::Qwen2,
        Arch::Qwen3,
        Arch::Olmo2,
        Arch::Gemma,
        Arch::Gemma2,
        Arch::Phi,
        Arch::Phi3,
        Arch::StableLm,
        Arch::Falcon,
        Arch::GptNeox,
    ];

    /// Its name in words (`inspect`'s `architecture`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "Llama",
            Arch::Mistral => "Mistral",
            Arch::Qwen2 => "Qwen2",
            Arch::Qwen3 => "Qwen3",
            Arch::Olmo2 => "OLMo-2",
            Arch::Gemma => "Gemma",
            Arch::Gemma2 => "Gemma 2",
            Arch::Phi => "Phi",
            Arch::Phi3 => "Phi-3",
            Arch::StableLm => "StableLM",
            Arch::Falcon => "Falcon",
            Arch::GptNeox => "GPT-NeoX",
        }
    }

    /// The Hugging Face `model_type` of its `config.json`.
    pub fn hf_model_type(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Mistral => "mistral",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Olmo2 => "olmo2",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Phi => "phi",
            Arch::Phi3 => "phi3",
            Arch::StableLm => "stablelm",
            Arch::Falcon => "falcon",
            Arch::GptNeox => "gpt_neox",
        }
    }

    /// The Hugging Face class that loads it (`config.json`'s `architectures`).
    pub fn hf_class(self) -> &'static str {
        match self {
            Arch::Llama => "LlamaForCausalLM",
            Arch::Mistral => "MistralForCausalLM",
            Arch::Qwen2 => "Qwen2ForCausalLM",
            Arch::Qwen3 => "Qwen3ForCausalLM",
            Arch::Olmo2 => "Olmo2ForCausalLM",
            Arch::Gemma => "GemmaForCausalLM",
            Arch::Gemma2 => "Gemma2ForCausalLM",
            Arch::Phi => "PhiForCausalLM",
            Arch::Phi3 => "Phi3ForCausalLM",
            Arch::StableLm => "StableLmForCausalLM",
            Arch::Falcon => "FalconForCausalLM",
            Arch::GptNeox => "GPTNeoXForCausalLM",
        }
    }

    /// The architecture of a Hugging Face `model_type`; `None` for one graftlm does not run.
    pub fn from_hf_model_type(model_type: &str) -> Option<Arch> {
        Arch::ALL
            .into_iter()
            .find(|a| a.hf_model_type() == model_type)
    }

    /// The architecture a LitGPT configuration describes, from its structure (LitGPT's
    /// `model_config.yaml` names the model, not the architecture).
    pub(crate) fn from_structure(cfg: &ModelConfig) -> Arch {
        let gemma = matches!(cfg.norm, NormKind::RmsNorm { unit_offset: true })
            || cfg.mlp == MlpKind::Gemma;
        if cfg.extras.norm_qk_all_heads {
            Arch::Olmo2
        } else if gemma && cfg.extras.post_attention_norm {
            Arch::Gemma2
        } else if gemma {
            Arch::Gemma
        } else if cfg.family == Family::HfPhi3 || cfg.name.starts_with("Phi-3") {
            Arch::Phi3
        } else if cfg.mlp == MlpKind::GptNeox && !cfg.mlp_bias {
            Arch::Falcon
        } else if cfg.shared_attention_norm {
            Arch::Phi
        } else if cfg.mlp == MlpKind::GptNeox {
            Arch::GptNeox
        } else if cfg.norm_qk {
            Arch::Qwen3
        } else if cfg.norm == NormKind::LayerNorm {
            Arch::StableLm
        } else if cfg.qkv_bias && !cfg.attn_out_bias {
            Arch::Qwen2
        } else if cfg.sliding_window.is_some() {
            Arch::Mistral
        } else {
            Arch::Llama
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `model_type` maps back to its architecture.
    #[test]
    fn model_types_round_trip() {
        for a in Arch::ALL {
            assert_eq!(Arch::from_hf_model_type(a.hf_model_type()), Some(a));
        }
        assert_eq!(Arch::from_hf_model_type("bert"), None);
    }

    /// A LitGPT checkpoint and its Hugging Face twin (every fixture family) are the same
    /// architecture: decided from the structure for the one, from `model_type` for the other.
    #[test]
    fn litgpt_and_hf_twins_agree() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/models");
        let mut seen = 0;
        for entry in std::fs::read_dir(&root).unwrap() {
            let dir = entry.unwrap().path();
            let (lit, hf) = (dir.join("lit"), dir.join("hf"));
            if !(lit.is_dir() && hf.is_dir()) {
                continue;
            }
            let a = ModelConfig::from_dir(&lit).unwrap().arch;
            let b = ModelConfig::from_dir(&hf).unwrap().arch;
            assert_eq!(a, b, "{}", dir.display());
            seen += 1;
        }
        assert!(seen >= 10, "only {seen} fixture families");
    }
}
