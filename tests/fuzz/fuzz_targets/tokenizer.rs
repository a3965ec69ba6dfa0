//! `tokenizer.json` (first input byte even) or `tokenizer_config.json` (odd); the rest of the
//! input is the file. A tokenizer that loads must then encode, decode and stream.
#![no_main]
use graftlm_fuzz::{check, put, restore};
use libfuzzer_sys::fuzz_target;

const DIR: &str = "fixtures/models/llama/lit";

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let (file, other) = if which % 2 == 0 {
        ("tokenizer.json", "tokenizer_config.json")
    } else {
        ("tokenizer_config.json", "tokenizer.json")
    };
    restore(DIR, other);
    let dir = put(DIR, file, rest);
    let Some(tok) = check(&dir, graftlm::Tokenizer::from_dir(&dir)) else {
        return;
    };
    if let Ok(ids) = tok.encode("The Python interpreter, héllo 🐍") {
        let _ = tok.decode(&ids);
        let mut stream = graftlm::TextStream::new(&tok, &[]);
        for &id in &ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
    }
    let _ = (tok.eos_id(), tok.vocab_size(), tok.id_to_token(u32::MAX));
});
