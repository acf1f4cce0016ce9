//! CLIP's text side as Stable Diffusion uses it: the BPE tokenizer and the text transformer that turn a
//! prompt into `encoder_hidden_states` `[1, 77, D]`. Both match Hugging Face transformers
//! (`CLIPTokenizer`, `CLIPTextModel`) on the same files.

mod bpe;
mod text_encoder;
mod tokenizer;
mod tokenizer_files;

pub use text_encoder::{Activation, ClipTextConfig, ClipTextEncoder};
pub use tokenizer::ClipTokenizer;
