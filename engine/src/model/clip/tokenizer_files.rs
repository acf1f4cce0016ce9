//! Reading a `tokenizer/` folder as transformers' `CLIPTokenizer.from_pretrained` does: the BPE
//! vocabulary and merges (`vocab.json` + `merges.txt`, or `tokenizer.json`), the special tokens
//! (`special_tokens_map.json` wins over `tokenizer_config.json`, CLIP's defaults otherwise) and the
//! added tokens that are cut out of the text before BPE, with their matching flags.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::error::{Error, Result, WithPath};

/// CLIP's context length: what SD text encoders have position embeddings for.
const DEFAULT_MAX_LENGTH: usize = 77;
/// Anything longer is not a real text-encoder context (transformers writes 1e30 for "unset").
const LONGEST_MAX_LENGTH: u64 = 4096;

/// A token matched in the text before normalization or BPE (the special tokens, and any token
/// added to the vocabulary later). Flags as in Hugging Face tokenizers' `AddedToken`.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct AddedToken {
    pub content: String,
    pub id: u32,
    /// Matched in the normalized (lower-cased...) text rather than the raw text.
    pub normalized: bool,
    /// Also swallows the whitespace on its left / right.
    pub lstrip: bool,
    pub rstrip: bool,
    /// Only matched when not inside a word.
    pub single_word: bool,
    /// A special token (bos, eos...), rather than an ordinary word added to the vocabulary.
    pub special: bool,
}

/// The special tokens by role, as strings.
pub(super) struct SpecialTokens {
    pub bos: String,
    pub eos: String,
    pub pad: String,
    pub unk: String,
}

pub(super) struct TokenizerFiles {
    pub vocab: HashMap<String, u32>,
    /// Every token of every merge, and their join, is in `vocab`.
    pub merges: Vec<(String, String)>,
    /// The file the merges come from (`merges.txt` or `tokenizer.json`).
    pub merges_path: PathBuf,
    pub added_tokens: Vec<AddedToken>,
    pub special: SpecialTokens,
    pub max_length: usize,
}

const ROLES: [(&str, &str); 4] = [
    ("bos_token", "<|startoftext|>"),
    ("eos_token", "<|endoftext|>"),
    ("unk_token", "<|endoftext|>"),
    ("pad_token", "<|endoftext|>"),
];

pub(super) fn read(dir: &Path) -> Result<TokenizerFiles> {
    if !dir.is_dir() {
        return Err(Error::file(dir, "tokenizer folder not found"));
    }
    let config_path = dir.join("tokenizer_config.json");
    let config = read_json_object_if_present(&config_path)?;
    let special_map_path = dir.join("special_tokens_map.json");
    let special_map = read_json_object_if_present(&special_map_path)?;

    // Each role's definition: a string, or an object with "content" and flags.
    let sources = [
        (&special_map, special_map_path.as_path()),
        (&config, config_path.as_path()),
    ];
    let role_definitions = ROLES
        .iter()
        .map(|&(role, default)| {
            let found = sources
                .iter()
                .find_map(|(map, path)| map.as_ref().and_then(|m| m.get(role)).map(|v| (v, *path)));
            match found {
                Some((value, path)) => RoleDefinition::parse(value, path, role),
                None => Ok(RoleDefinition::plain(default)),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let content = |index: usize| {
        role_definitions
            .get(index)
            .map(|r| r.content.clone())
            .unwrap_or_default()
    };
    let special = SpecialTokens {
        bos: content(0),
        eos: content(1),
        unk: content(2),
        pad: content(3),
    };

    let tokenizer_json_path = dir.join("tokenizer.json");
    let (vocab, merges, mut added_tokens, merges_path) = if tokenizer_json_path.is_file() {
        let (vocab, merges, added_tokens) = read_tokenizer_json(&tokenizer_json_path)?;
        (vocab, merges, added_tokens, tokenizer_json_path)
    } else {
        let vocab_path = dir.join("vocab.json");
        let merges_path = dir.join("merges.txt");
        if !vocab_path.is_file() || !merges_path.is_file() {
            return Err(Error::file(
                dir,
                "a CLIP tokenizer folder needs vocab.json and merges.txt (or tokenizer.json)",
            ));
        }
        (
            read_vocab_json(&vocab_path)?,
            read_merges_txt(&merges_path)?,
            Vec::new(),
            merges_path,
        )
    };
    check_merges(&merges, &vocab, &merges_path)?;

    if let Some(decoder) = config.as_ref().and_then(|c| c.get("added_tokens_decoder")) {
        for token in parse_added_tokens_decoder(decoder, &config_path)? {
            if !added_tokens.iter().any(|t| t.content == token.content) {
                added_tokens.push(token);
            }
        }
    }
    add_role_tokens(&role_definitions, &vocab, &mut added_tokens, dir)?;

    let max_length = match config.as_ref().and_then(|c| c.get("model_max_length")) {
        None => DEFAULT_MAX_LENGTH,
        Some(value) => match value.as_u64() {
            Some(n) if (2..=LONGEST_MAX_LENGTH).contains(&n) => n as usize,
            _ => {
                return Err(Error::file(
                    &config_path,
                    format!("model_max_length {value} is not a usable sequence length (2..={LONGEST_MAX_LENGTH})"),
                ))
            }
        },
    };

    Ok(TokenizerFiles {
        vocab,
        merges,
        merges_path,
        added_tokens,
        special,
        max_length,
    })
}

/// One role's definition in the config files.
#[derive(Clone, Debug)]
struct RoleDefinition {
    content: String,
    /// A plain string counts as `normalized: false`, as transformers registers it.
    normalized: bool,
    lstrip: bool,
    rstrip: bool,
    single_word: bool,
}

impl RoleDefinition {
    fn plain(content: &str) -> Self {
        RoleDefinition {
            content: content.to_string(),
            normalized: false,
            lstrip: false,
            rstrip: false,
            single_word: false,
        }
    }

    fn parse(value: &Value, path: &Path, role: &str) -> Result<Self> {
        match value {
            Value::String(s) => Ok(Self::plain(s)),
            Value::Object(fields) => {
                let content = fields
                    .get("content")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        Error::file(path, format!("`{role}` has no string \"content\""))
                    })?;
                let flag = |name: &str, default: bool| flag(fields, name, default, path, role);
                Ok(RoleDefinition {
                    content: content.to_string(),
                    normalized: flag("normalized", true)?,
                    lstrip: flag("lstrip", false)?,
                    rstrip: flag("rstrip", false)?,
                    single_word: flag("single_word", false)?,
                })
            }
            _ => Err(Error::file(
                path,
                format!("`{role}` must be a string or an object with \"content\""),
            )),
        }
    }
}

fn flag(
    fields: &Map<String, Value>,
    name: &str,
    default: bool,
    path: &Path,
    what: &str,
) -> Result<bool> {
    match fields.get(name) {
        None => Ok(default),
        Some(Value::Bool(b)) => Ok(*b),
        Some(other) => Err(Error::file(
            path,
            format!("`{what}`.{name} must be true or false, not {other}"),
        )),
    }
}

/// The special tokens that neither tokenizer.json nor `added_tokens_decoder` listed: older
/// configs only name them by role. A token several roles share is matched in the normalized
/// text only when every role says `normalized: true` (SD 1.x's configs give `<|endoftext|>` as a
/// plain pad string, and transformers then matches it case-sensitively in the raw text).
fn add_role_tokens(
    roles: &[RoleDefinition],
    vocab: &HashMap<String, u32>,
    added_tokens: &mut Vec<AddedToken>,
    dir: &Path,
) -> Result<()> {
    for role in roles {
        if added_tokens.iter().any(|t| t.content == role.content) {
            continue;
        }
        let id = *vocab.get(&role.content).ok_or_else(|| {
            Error::file(
                dir,
                format!("special token `{}` is not in the vocabulary", role.content),
            )
        })?;
        let sharing = roles.iter().filter(|r| r.content == role.content);
        let last = sharing.clone().next_back().unwrap_or(role);
        added_tokens.push(AddedToken {
            content: role.content.clone(),
            id,
            normalized: sharing.clone().all(|r| r.normalized),
            lstrip: last.lstrip,
            rstrip: last.rstrip,
            single_word: last.single_word,
            special: true,
        });
    }
    Ok(())
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    serde_json::from_str(&text).map_err(|e| Error::file(path, format!("invalid JSON: {e}")))
}

fn read_json_object_if_present(path: &Path) -> Result<Option<Map<String, Value>>> {
    if !path.is_file() {
        return Ok(None);
    }
    match read_json(path)? {
        Value::Object(map) => Ok(Some(map)),
        _ => Err(Error::file(path, "expected a JSON object")),
    }
}

fn vocab_from_object(value: &Value, path: &Path, what: &str) -> Result<HashMap<String, u32>> {
    let Value::Object(entries) = value else {
        return Err(Error::file(
            path,
            format!("{what} must be a JSON object of token -> id"),
        ));
    };
    entries
        .iter()
        .map(|(token, id)| {
            let id = id
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    Error::file(
                        path,
                        format!("{what}: token `{token}` has id {id}, not a u32"),
                    )
                })?;
            Ok((token.clone(), id))
        })
        .collect()
}

fn read_vocab_json(path: &Path) -> Result<HashMap<String, u32>> {
    vocab_from_object(&read_json(path)?, path, "vocab")
}

/// One merge per line, `left right`; the `#version` header is skipped, as are blank lines.
fn read_merges_txt(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).with_path(path)?;
    let mut merges = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.starts_with("#version") || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(left), Some(right), None) => merges.push((left.to_string(), right.to_string())),
            _ => {
                return Err(Error::file(
                    path,
                    format!(
                        "line {}: expected two tokens separated by one space, got `{line}`",
                        index + 1
                    ),
                ))
            }
        }
    }
    Ok(merges)
}

/// Every merge's two tokens and their join must be in the vocabulary (BPE could not produce the
/// join otherwise; tokenizers' BPE builder even assumes it).
fn check_merges(
    merges: &[(String, String)],
    vocab: &HashMap<String, u32>,
    path: &Path,
) -> Result<()> {
    for (index, (left, right)) in merges.iter().enumerate() {
        let joined = format!("{left}{right}");
        for token in [left, right, &joined] {
            if !vocab.contains_key(token) {
                return Err(Error::file(
                    path,
                    format!(
                        "merge {} `{left} {right}`: `{token}` is not in the vocabulary",
                        index + 1
                    ),
                ));
            }
        }
    }
    Ok(())
}

type ModelParts = (HashMap<String, u32>, Vec<(String, String)>, Vec<AddedToken>);

/// The BPE model and the added tokens of a tokenizers `tokenizer.json`. Its normalizer and
/// pre-tokenizer are ignored: CLIPTokenizer sets its own.
fn read_tokenizer_json(path: &Path) -> Result<ModelParts> {
    let json = read_json(path)?;
    let model = json
        .get("model")
        .ok_or_else(|| Error::file(path, "no \"model\""))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(Error::file(
                path,
                format!("model type {kind} is not CLIP's BPE"),
            ));
        }
    }
    let vocab_value = model
        .get("vocab")
        .ok_or_else(|| Error::file(path, "no \"model.vocab\""))?;
    let vocab = vocab_from_object(vocab_value, path, "model.vocab")?;
    let merge_values = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::file(path, "no \"model.merges\" list"))?;
    let mut merges = Vec::with_capacity(merge_values.len());
    for (index, merge) in merge_values.iter().enumerate() {
        let pair = match merge {
            Value::String(s) => {
                let mut parts = s.split(' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(l), Some(r), None) => Some((l.to_string(), r.to_string())),
                    _ => None,
                }
            }
            Value::Array(items) => match items.as_slice() {
                [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                _ => None,
            },
            _ => None,
        };
        merges.push(pair.ok_or_else(|| {
            Error::file(
                path,
                format!("model.merges[{index}] is not a pair of tokens: {merge}"),
            )
        })?);
    }
    let mut added_tokens = Vec::new();
    if let Some(list) = json.get("added_tokens").and_then(Value::as_array) {
        for (index, entry) in list.iter().enumerate() {
            let what = format!("added_tokens[{index}]");
            let id = entry
                .get("id")
                .and_then(Value::as_u64)
                .and_then(|id| u32::try_from(id).ok());
            let id = id.ok_or_else(|| Error::file(path, format!("{what} has no valid \"id\"")))?;
            added_tokens.push(parse_added_token(entry, id, path, &what)?);
        }
    }
    Ok((vocab, merges, added_tokens))
}

/// transformers' `added_tokens_decoder`: `{"49406": {"content": ..., flags}}`.
fn parse_added_tokens_decoder(value: &Value, path: &Path) -> Result<Vec<AddedToken>> {
    let Value::Object(entries) = value else {
        return Err(Error::file(
            path,
            "added_tokens_decoder must be an object of id -> token",
        ));
    };
    let mut tokens = Vec::new();
    for (id_text, entry) in entries {
        let what = format!("added_tokens_decoder.{id_text}");
        let id: u32 = id_text
            .parse()
            .map_err(|_| Error::file(path, format!("{what}: `{id_text}` is not a token id")))?;
        tokens.push(parse_added_token(entry, id, path, &what)?);
    }
    tokens.sort_by_key(|t| t.id);
    Ok(tokens)
}

fn parse_added_token(entry: &Value, id: u32, path: &Path, what: &str) -> Result<AddedToken> {
    let Value::Object(fields) = entry else {
        return Err(Error::file(path, format!("{what} must be an object")));
    };
    let content = fields
        .get("content")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::file(path, format!("{what} has no string \"content\"")))?;
    let special = flag(fields, "special", false, path, what)?;
    Ok(AddedToken {
        content: content.to_string(),
        id,
        // tokenizers' default: special tokens match the raw text.
        normalized: flag(fields, "normalized", !special, path, what)?,
        lstrip: flag(fields, "lstrip", false, path, what)?,
        rstrip: flag(fields, "rstrip", false, path, what)?,
        single_word: flag(fields, "single_word", false, path, what)?,
        special,
    })
}
