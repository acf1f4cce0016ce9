//! CLIP's text side as Stable Diffusion uses it: the tokenizer (Hugging Face tokenizers' BPE, set
//! up from a `tokenizer/` folder) and the text transformer that turn a prompt into
//! `encoder_hidden_states` `[1, 77, D]`. Both match Hugging Face transformers (`CLIPTokenizer`,
//! `CLIPTextModel`) on the same files.

mod text_encoder;
mod tokenizer;
mod tokenizer_files;

pub use text_encoder::{Activation, ClipTextConfig, ClipTextEncoder, TextEncoding};
pub use tokenizer::{ClipTokenizer, PromptToken, TokenRole};
