//! CLIP's tokenizer, giving the ids transformers' `CLIPTokenizer` (5.x, backed by Hugging Face
//! tokenizers) gives for `tokenizer(text, padding="max_length", max_length=77, truncation=True)`.
//!
//! It is Hugging Face's `tokenizers` crate (which candle already builds in) set up as
//! `CLIPTokenizer` sets it up, from whatever files the folder has ([`super::tokenizer_files`]):
//! 1. added tokens cut out of the raw text (special tokens registered with `normalized: false`,
//!    e.g. SD 2's pad token `!`, so every `!` of a SD 2 prompt is id 0);
//! 2. normalization: NFC, every whitespace run to one space, lower-case;
//! 3. added tokens with `normalized: true` cut out of the normalized text;
//! 4. CLIP's word pattern (whitespace dropped), then GPT-2's byte-level split and byte map;
//! 5. BPE on each word, with `</w>` on its last character;
//! 6. the first `max_length - 2` ids between bos and eos, padded to `max_length` with the pad token.
//!
//! transformers 4.x's `CLIPTokenizer` was a Python BPE (BasicTokenizer, and ftfy when installed)
//! that gives other ids for CJK runs, control and format characters, decomposed accents and final
//! sigma; its `CLIPTokenizerFast` is what 5.x and this code follow.

use std::path::{Path, PathBuf};

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::replace::ReplacePattern;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as Normalizers, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizers;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    Decoder, Model, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use super::tokenizer_files::{self, TokenizerFiles};
use crate::error::{Error, Result};

/// CLIP's word pattern (its `<|startoftext|>`/`<|endoftext|>` alternatives only matter for
/// special tokens that were not cut out as added tokens).
const CLIP_WORDS: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// Appended to the last character of every word, so word ends have their own tokens.
const END_OF_WORD: &str = "</w>";

/// What a token is in the padded sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRole {
    Start,
    Word,
    End,
    Padding,
}

/// One token of a prompt as the tokenizer cut it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromptToken {
    pub id: u32,
    /// As the vocabulary writes it (`cat</w>`, `<|startoftext|>`).
    pub token: String,
    /// Readable: the word piece without `</w>`, its bytes decoded.
    pub text: String,
    pub role: TokenRole,
}

pub struct ClipTokenizer {
    tokenizer: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
    dir: PathBuf,
}

impl ClipTokenizer {
    /// Reads a repo's `tokenizer/` folder (`vocab.json` + `merges.txt`, or `tokenizer.json`, with
    /// `special_tokens_map.json` / `tokenizer_config.json`).
    pub fn from_dir(dir: &Path) -> Result<ClipTokenizer> {
        let files = tokenizer_files::read(dir)?;
        let id_of = |token: &str, role: &str| -> Result<u32> {
            files
                .added_tokens
                .iter()
                .find(|t| t.content == token)
                .map(|t| t.id)
                .or_else(|| files.vocab.get(token).copied())
                .ok_or_else(|| {
                    Error::file(
                        dir,
                        format!("{role} token `{token}` is not in the vocabulary"),
                    )
                })
        };
        let bos_id = id_of(&files.special.bos, "bos")?;
        let eos_id = id_of(&files.special.eos, "eos")?;
        let pad_id = id_of(&files.special.pad, "pad")?;
        let max_length = files.max_length;
        let tokenizer = build(files, dir, (bos_id, eos_id, pad_id))?;
        Ok(ClipTokenizer {
            tokenizer,
            bos_id,
            eos_id,
            pad_id,
            max_length,
            dir: dir.to_path_buf(),
        })
    }

    /// The ids of `text`: bos, at most `max_length - 2` token ids, eos, then padding to
    /// `max_length` (77 for SD).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| {
            Error::file(
                &self.dir,
                format!("cannot tokenize the prompt {text:?}: {e}"),
            )
        })?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The tokens of `text` as [`Self::encode`] cuts them: the start token, the words' tokens,
    /// the end token, then padding, each with its id and readable text (`cat</w>` reads `cat`).
    pub fn tokens(&self, text: &str) -> Result<Vec<PromptToken>> {
        let encoding = self.tokenizer.encode(text, true).map_err(|e| {
            Error::file(
                &self.dir,
                format!("cannot tokenize the prompt {text:?}: {e}"),
            )
        })?;
        let mask = encoding.get_attention_mask();
        let last_real = mask.iter().rposition(|&m| m == 1).unwrap_or(0);
        let readable = ByteLevelDecoder::default();
        Ok((encoding.get_ids().iter())
            .zip(encoding.get_tokens())
            .enumerate()
            .map(|(i, (&id, token))| {
                let role = match i {
                    0 => TokenRole::Start,
                    i if i == last_real => TokenRole::End,
                    i if i > last_real => TokenRole::Padding,
                    _ => TokenRole::Word,
                };
                let word = token.strip_suffix(END_OF_WORD).unwrap_or(token);
                let text = readable
                    .decode_chain(vec![word.to_string()])
                    .map(|parts| parts.concat())
                    .unwrap_or_else(|_| word.to_string());
                PromptToken {
                    id,
                    token: token.clone(),
                    text,
                    role,
                }
            })
            .collect())
    }

    /// The sequence length `encode` pads to (`model_max_length`, 77 unless the config says otherwise).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The id of one vocabulary entry (`<|endoftext|>`, `cat</w>`...).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.tokenizer.get_model().token_to_id(token)
    }
}

/// The tokenizers pipeline `CLIPTokenizer` builds on these files.
fn build(files: TokenizerFiles, dir: &Path, (bos, eos, pad): (u32, u32, u32)) -> Result<Tokenizer> {
    let TokenizerFiles {
        vocab,
        merges,
        merges_path,
        added_tokens,
        special,
        max_length,
    } = files;
    let internal = |what: &str, e: tokenizers::Error| Error::invalid(format!("{what}: {e}"));
    let bpe = BPE::builder()
        .vocab_and_merges(vocab.into_iter().collect::<Vocab>(), merges)
        .unk_token(special.unk.clone())
        .end_of_word_suffix(END_OF_WORD.to_string())
        .build()
        .map_err(|e| Error::file(&merges_path, e.to_string()))?;
    let mut tokenizer = Tokenizer::new(bpe);

    let whitespace_runs = Replace::new(ReplacePattern::Regex(r"\s+".into()), " ")
        .map_err(|e| internal("whitespace pattern", e))?;
    tokenizer
        .with_normalizer(Some(Normalizers::new(vec![
            NFC.into(),
            whitespace_runs.into(),
            Lowercase.into(),
        ])))
        .map_err(|e| internal("normalizer", e))?;
    let words = Split::new(
        SplitPattern::Regex(CLIP_WORDS.to_string()),
        SplitDelimiterBehavior::Removed,
        true,
    )
    .map_err(|e| internal("word pattern", e))?;
    tokenizer.with_pre_tokenizer(Some(PreTokenizers::new(vec![
        words.into(),
        ByteLevel::new(false, true, true).into(),
    ])));

    // After the normalizer, so that tokens with `normalized: true` are matched normalized.
    tokenizer
        .add_special_tokens(added_tokens.iter().map(|t| {
            tokenizers::AddedToken::from(t.content.clone(), t.special)
                .normalized(t.normalized)
                .lstrip(t.lstrip)
                .rstrip(t.rstrip)
                .single_word(t.single_word)
        }))
        .map_err(|e| Error::file(dir, format!("added tokens: {e}")))?;
    for token in &added_tokens {
        let id = tokenizer.token_to_id(&token.content);
        if id != Some(token.id) {
            return Err(Error::file(
                dir,
                format!(
                    "added token `{}` has id {} in the files but {} in the vocabulary",
                    token.content,
                    token.id,
                    id.map_or("none".to_string(), |id| id.to_string())
                ),
            ));
        }
    }

    let wrap = RobertaProcessing::new((special.eos.clone(), eos), (special.bos.clone(), bos))
        .trim_offsets(false)
        .add_prefix_space(false);
    tokenizer.with_post_processor(Some(wrap));
    tokenizer
        .with_truncation(Some(TruncationParams {
            direction: TruncationDirection::Right,
            max_length,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
        }))
        .map_err(|e| internal("truncation", e))?;
    tokenizer.with_padding(Some(PaddingParams {
        strategy: PaddingStrategy::Fixed(max_length),
        direction: PaddingDirection::Right,
        pad_to_multiple_of: None,
        pad_id: pad,
        pad_type_id: 0,
        pad_token: special.pad.clone(),
    }));
    Ok(tokenizer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_say_what_they_are() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/sd1_tiny/tokenizer");
        let tokenizer = ClipTokenizer::from_dir(&dir).unwrap();
        let tokens = tokenizer.tokens("A photo of a CAT").unwrap();
        assert_eq!(tokens.len(), 77);
        let ids: Vec<u32> = tokens.iter().map(|t| t.id).collect();
        assert_eq!(ids, tokenizer.encode("A photo of a CAT").unwrap());
        let words: Vec<(&str, TokenRole)> = tokens[..7]
            .iter()
            .map(|t| (t.text.as_str(), t.role))
            .collect();
        use TokenRole::*;
        assert_eq!(
            words,
            [
                ("<|startoftext|>", Start),
                ("a", Word),
                ("photo", Word),
                ("of", Word),
                ("a", Word),
                ("cat", Word),
                ("<|endoftext|>", End)
            ]
        );
        assert_eq!(tokens[5].token, "cat</w>");
        assert!(tokens[7..].iter().all(|t| t.role == Padding));
        let empty = tokenizer.tokens("").unwrap();
        assert_eq!(
            (empty[0].role, empty[1].role, empty[2].role),
            (Start, End, Padding)
        );
    }

    /// A copy of sd1_tiny's tokenizer folder, one file replaced.
    fn sd1_with(file: &str, text: &str) -> tempfile::TempDir {
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/models/sd1_tiny/tokenizer");
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir(&source).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, dir.path().join(path.file_name().unwrap())).unwrap();
        }
        std::fs::write(dir.path().join(file), text).unwrap();
        dir
    }

    fn error_of(dir: &Path) -> String {
        ClipTokenizer::from_dir(dir)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
    }

    /// Two vocabulary entries whose join is not one: an error, not a panic in the BPE builder
    /// (which assumes every join is in the vocabulary).
    #[test]
    fn a_merge_whose_join_is_not_in_the_vocabulary_is_an_error_naming_it() {
        let dir = sd1_with(
            "merges.txt",
            "#version: 0.2\n<|startoftext|> <|endoftext|>\n",
        );
        let message = error_of(dir.path());
        assert!(
            message.contains("merges.txt")
                && message.contains("merge 1")
                && message.contains("`<|startoftext|><|endoftext|>` is not in the vocabulary"),
            "{message}"
        );
    }

    #[test]
    fn an_added_token_whose_id_disagrees_with_the_vocabulary_is_an_error_naming_it() {
        let config =
            r#"{"added_tokens_decoder": {"7": {"content": "<|endoftext|>", "special": true}}}"#;
        let dir = sd1_with("tokenizer_config.json", config);
        let message = error_of(dir.path());
        assert!(
            message.contains("`<|endoftext|>` has id 7 in the files but 2513"),
            "{message}"
        );
    }
}
