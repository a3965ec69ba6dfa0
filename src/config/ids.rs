//! [`LinearId`]: the model's linear layers by typed id, and their one spelling as internal
//! (LitGPT) names — what adapters key their updates by and the name table maps stored tensors
//! onto.

use std::fmt;

/// One linear layer of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LinearId {
    /// Block `i`'s fused query/key/value projection (`transformer.h.{i}.attn.qkv`).
    Qkv(usize),
    /// Block `i`'s attention output projection (`transformer.h.{i}.attn.proj`).
    Proj(usize),
    /// Block `i`'s GPT-NeoX MLP input (`transformer.h.{i}.mlp.fc`).
    Fc(usize),
    /// Block `i`'s gate projection of a gated MLP (`transformer.h.{i}.mlp.fc_1`).
    Gate(usize),
    /// Block `i`'s up projection of a gated MLP (`transformer.h.{i}.mlp.fc_2`).
    Up(usize),
    /// Block `i`'s MLP output projection (`transformer.h.{i}.mlp.proj`).
    MlpProj(usize),
    /// The output head (`lm_head`).
    Head,
}

impl LinearId {
    /// The id of an internal name; `None` for any other string.
    pub fn parse(name: &str) -> Option<Self> {
        if name == "lm_head" {
            return Some(LinearId::Head);
        }
        let (i, part) = name.strip_prefix("transformer.h.")?.split_once('.')?;
        // (Digits only: `usize::from_str` would also take a leading `+`.)
        if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let i = i.parse().ok()?;
        Some(match part {
            "attn.qkv" => LinearId::Qkv(i),
            "attn.proj" => LinearId::Proj(i),
            "mlp.fc" => LinearId::Fc(i),
            "mlp.fc_1" => LinearId::Gate(i),
            "mlp.fc_2" => LinearId::Up(i),
            "mlp.proj" => LinearId::MlpProj(i),
            _ => return None,
        })
    }

    /// The block it belongs to (`None` for the head).
    pub fn layer(self) -> Option<usize> {
        match self {
            LinearId::Qkv(i)
            | LinearId::Proj(i)
            | LinearId::Fc(i)
            | LinearId::Gate(i)
            | LinearId::Up(i)
            | LinearId::MlpProj(i) => Some(i),
            LinearId::Head => None,
        }
    }
}

impl fmt::Display for LinearId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (i, part) = match *self {
            LinearId::Head => return f.write_str("lm_head"),
            LinearId::Qkv(i) => (i, "attn.qkv"),
            LinearId::Proj(i) => (i, "attn.proj"),
            LinearId::Fc(i) => (i, "mlp.fc"),
            LinearId::Gate(i) => (i, "mlp.fc_1"),
            LinearId::Up(i) => (i, "mlp.fc_2"),
            LinearId::MlpProj(i) => (i, "mlp.proj"),
        };
        write!(f, "transformer.h.{i}.{part}")
    }
}

#[cfg(test)]
mod tests {
    use super::LinearId;

    /// Every id spells a name that parses back to it; other strings are no id.
    #[test]
    fn names_round_trip() {
        for id in [
            LinearId::Qkv(0),
            LinearId::Proj(3),
            LinearId::Fc(12),
            LinearId::Gate(1),
            LinearId::Up(7),
            LinearId::MlpProj(30),
            LinearId::Head,
        ] {
            assert_eq!(LinearId::parse(&id.to_string()), Some(id));
        }
        for bad in [
            "transformer.h.+1.attn.qkv",
            "transformer.h..attn.qkv",
            "transformer.h.1.attn",
            "transformer.h.1.attn.qkv.weight",
            "model.layers.1.self_attn.q_proj",
            "",
        ] {
            assert_eq!(LinearId::parse(bad), None, "{bad}");
        }
    }
}
