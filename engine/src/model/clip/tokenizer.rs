//! CLIP's tokenizer, giving the ids transformers' `CLIPTokenizer` (5.x, backed by Hugging Face
//! tokenizers) gives for `tokenizer(text, padding="max_length", max_length=77, truncation=True)`.
//!
//! The pipeline, in tokenizers' order:
//! 1. cut out added tokens that match the raw text (special tokens registered with
//!    `normalized: false`, e.g. SD 2's pad token `!`, so every `!` of a SD 2 prompt is id 0);
//! 2. normalize each remaining piece: NFC, every whitespace run to one space, lower-case
//!    (character by character: no final sigma);
//! 3. cut out added tokens that match the normalized text;
//! 4. split into words with CLIP's pattern (whitespace dropped), then GPT-2's byte-level pattern;
//! 5. byte-level BPE on each word, with `</w>` on its last character;
//! 6. keep the first `max_length - 2` ids, wrap them in bos/eos, pad to `max_length`.
//!
//! transformers 4.x's `CLIPTokenizer` was a Python BPE (BasicTokenizer, and ftfy when installed)
//! that gives other ids for CJK runs, control and format characters, decomposed accents and final
//! sigma; its `CLIPTokenizerFast` is what 5.x and this code follow.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use super::bpe::Bpe;
use super::tokenizer_files::{self, AddedToken};
use crate::error::{Error, Result};

/// CLIP's word pattern (its `<|startoftext|>`/`<|endoftext|>` alternatives only matter for
/// special tokens that were not cut out as added tokens).
const CLIP_WORDS: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";
/// GPT-2's pattern, which tokenizers' ByteLevel pre-tokenizer applies to each CLIP word. Words hold
/// no whitespace, so its lookahead alternative `\s+(?!\S)` (unsupported by `regex`) never matters.
const BYTE_LEVEL_WORDS: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+";

pub struct ClipTokenizer {
    bpe: Bpe,
    /// Added tokens matched in the raw text, and in the normalized text (with their normalized
    /// content as the pattern).
    raw_added: Vec<AddedToken>,
    normalized_added: Vec<AddedToken>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
    whitespace_run: Regex,
    clip_words: Regex,
    byte_level_words: Regex,
    dir: PathBuf,
}

/// A stretch of text, or an added token already cut out of it.
enum Piece {
    Text(String),
    Token(u32),
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

        let whitespace_run = compile(r"\s+")?;
        let mut raw_added = Vec::new();
        let mut normalized_added = Vec::new();
        for token in files.added_tokens {
            if token.content.is_empty() {
                continue;
            }
            if token.normalized {
                let content = normalize(&token.content, &whitespace_run);
                normalized_added.push(AddedToken { content, ..token });
            } else {
                raw_added.push(token);
            }
        }
        let bpe = Bpe::new(files.vocab, &files.merges, Some(&files.special.unk))
            .map_err(|message| Error::file(dir, message))?;
        Ok(ClipTokenizer {
            bpe,
            raw_added,
            normalized_added,
            bos_id,
            eos_id,
            pad_id,
            max_length: files.max_length,
            whitespace_run,
            clip_words: compile(CLIP_WORDS)?,
            byte_level_words: compile(BYTE_LEVEL_WORDS)?,
            dir: dir.to_path_buf(),
        })
    }

    /// The ids of `text`: bos, at most `max_length - 2` token ids, eos, then padding to
    /// `max_length` (77 for SD).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let content = self.content_ids(text)?;
        let kept = content.len().min(self.max_length - 2);
        let mut ids = Vec::with_capacity(self.max_length);
        ids.push(self.bos_id);
        ids.extend_from_slice(&content[..kept]);
        ids.push(self.eos_id);
        ids.resize(self.max_length, self.pad_id);
        Ok(ids)
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
        self.bpe.token_id(token)
    }

    /// The ids of `text` without bos/eos, truncation or padding.
    fn content_ids(&self, text: &str) -> Result<Vec<u32>> {
        let mut pieces = Vec::new();
        for piece in split_added(text, &self.raw_added) {
            match piece {
                Piece::Text(raw) => {
                    let normalized = normalize(&raw, &self.whitespace_run);
                    pieces.extend(split_added(&normalized, &self.normalized_added));
                }
                token => pieces.push(token),
            }
        }
        let mut ids = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Token(id) => ids.push(id),
                Piece::Text(text) => {
                    for word in self.clip_words.find_iter(&text) {
                        for part in split_isolated(&self.byte_level_words, word.as_str()) {
                            self.bpe
                                .tokenize_word(part, &mut ids)
                                .map_err(|message| Error::file(&self.dir, message))?;
                        }
                    }
                }
            }
        }
        Ok(ids)
    }
}

fn compile(pattern: &str) -> Result<Regex> {
    Regex::new(pattern).map_err(|e| Error::invalid(format!("internal regex `{pattern}`: {e}")))
}

/// CLIPTokenizer's normalizer: NFC, whitespace runs to one space, per-character lower-case.
fn normalize(text: &str, whitespace_run: &Regex) -> String {
    let composed: String = text.nfc().collect();
    let spaced = whitespace_run.replace_all(&composed, " ");
    spaced.chars().flat_map(char::to_lowercase).collect()
}

/// Splits a match-or-gap list out of `text` (tokenizers' "isolated" split), dropping nothing.
fn split_isolated<'t>(pattern: &Regex, text: &'t str) -> Vec<&'t str> {
    let mut parts = Vec::new();
    let mut end_of_last = 0;
    for found in pattern.find_iter(text) {
        if found.start() > end_of_last {
            parts.push(&text[end_of_last..found.start()]);
        }
        parts.push(found.as_str());
        end_of_last = found.end();
    }
    if end_of_last < text.len() {
        parts.push(&text[end_of_last..]);
    }
    parts
}

/// Cuts the added tokens out of `text`, leftmost match first and the longest at one position, with
/// their lstrip/rstrip/single_word rules (as tokenizers' AddedVocabulary).
fn split_added(text: &str, tokens: &[AddedToken]) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut piece_start = 0; // start of the text not yet emitted
    let mut search_from = 0;
    while let Some((token, start, end)) = next_match(text, search_from, tokens) {
        search_from = end;
        if token.single_word {
            let alone_before = !text[..start].chars().next_back().is_some_and(is_word_char);
            let alone_after = !text[end..].chars().next().is_some_and(is_word_char);
            if !(alone_before && alone_after) {
                continue;
            }
        }
        let mut cut_start = start;
        if token.lstrip {
            let before = &text[..start];
            cut_start = before
                .trim_end_matches(char::is_whitespace)
                .len()
                .max(piece_start);
        }
        let mut cut_end = end;
        if token.rstrip {
            let after = &text[end..];
            cut_end += after.len() - after.trim_start_matches(char::is_whitespace).len();
        }
        if piece_start < cut_start {
            pieces.push(Piece::Text(text[piece_start..cut_start].to_string()));
        }
        pieces.push(Piece::Token(token.id));
        piece_start = cut_end;
        search_from = search_from.max(cut_end);
    }
    if piece_start < text.len() {
        pieces.push(Piece::Text(text[piece_start..].to_string()));
    }
    pieces
}

/// The leftmost added token in `text[from..]`, the longest one where several start at the same place.
fn next_match<'a>(
    text: &str,
    from: usize,
    tokens: &'a [AddedToken],
) -> Option<(&'a AddedToken, usize, usize)> {
    if tokens.is_empty() {
        return None;
    }
    let rest = text.get(from..)?;
    rest.char_indices().find_map(|(offset, _)| {
        let here = &rest[offset..];
        tokens
            .iter()
            .filter(|t| here.starts_with(t.content.as_str()))
            .max_by_key(|t| t.content.len())
            .map(|t| (t, from + offset, from + offset + t.content.len()))
    })
}

/// `\w` as tokenizers' single_word check (a `regex` crate `\w`) defines it.
fn is_word_char(c: char) -> bool {
    static WORD: LazyLock<Option<Regex>> = LazyLock::new(|| Regex::new(r"^\w$").ok());
    let mut buffer = [0u8; 4];
    WORD.as_ref()
        .is_some_and(|re| re.is_match(c.encode_utf8(&mut buffer)))
}
