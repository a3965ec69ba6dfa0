//! [`AdapterFormat`]: the adapter file formats graftlm reads, named once at the bottom layer so
//! the model can record what was grafted without knowing any format's details.

/// The adapter formats graftlm reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdapterFormat {
    /// LitGPT `lit_model.pth.lora` + `hyperparameters.yaml`.
    LitGptLora,
    /// PEFT `adapter_model.safetensors` (or `.bin`) + `adapter_config.json`.
    PeftLora,
    /// LitGPT LLaMA-Adapter `lit_model.pth.adapter`.
    LitGptAdapter,
    /// LitGPT LLaMA-Adapter v2 `lit_model.pth.adapter_v2`.
    LitGptAdapterV2,
}

impl AdapterFormat {
    /// A short name for messages and JSON (`litgpt-lora`, `peft-lora`).
    pub fn as_str(&self) -> &'static str {
        match self {
            AdapterFormat::LitGptLora => "litgpt-lora",
            AdapterFormat::PeftLora => "peft-lora",
            AdapterFormat::LitGptAdapter => "litgpt-adapter",
            AdapterFormat::LitGptAdapterV2 => "litgpt-adapter-v2",
        }
    }

    /// Whether it is a LLaMA-Adapter (a gated prefix, and for v2 norm and affine updates),
    /// which grafts more than low-rank updates.
    pub fn is_llama_adapter(&self) -> bool {
        matches!(
            self,
            AdapterFormat::LitGptAdapter | AdapterFormat::LitGptAdapterV2
        )
    }
}
