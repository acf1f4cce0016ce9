//! Byte-level BPE as CLIP uses it: a word's UTF-8 bytes become printable characters (GPT-2's
//! byte-to-unicode map), its last character carries the end-of-word suffix `</w>`, then the
//! lowest-ranked adjacent pair is merged (leftmost first on ties) until no pair has a merge.
//! This is the order Hugging Face tokenizers' BPE merges in, so ids agree even for merge lists
//! whose ranks are not consistent.

use std::collections::HashMap;

/// Appended to the last character of every word, so word ends have their own tokens.
pub(super) const END_OF_WORD: &str = "</w>";

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes map to
/// themselves, the others to U+0100 onwards in byte order.
pub(super) fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_extra = 256u32;
    for (byte, slot) in table.iter_mut().enumerate() {
        let printable = matches!(byte, 0x21..=0x7E | 0xA1..=0xAC | 0xAE..=0xFF);
        let code = if printable {
            byte as u32
        } else {
            next_extra += 1;
            next_extra - 1
        };
        // Every code here is below 0x200, so always a valid char.
        *slot = char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER);
    }
    table
}

/// A merge: the pair's rank (its line in merges.txt) and the id of the joined token.
#[derive(Clone, Copy, Debug)]
struct Merge {
    rank: u32,
    merged_id: u32,
}

pub(super) struct Bpe {
    vocab: HashMap<String, u32>,
    merges: HashMap<(u32, u32), Merge>,
    unk_id: Option<u32>,
    byte_chars: [char; 256],
}

impl Bpe {
    /// `merges` in rank order. A later duplicate of a pair replaces the earlier one, as in
    /// tokenizers. Errors say which token is missing from the vocabulary.
    pub(super) fn new(
        vocab: HashMap<String, u32>,
        merges: &[(String, String)],
        unk_token: Option<&str>,
    ) -> Result<Bpe, String> {
        let mut merge_map = HashMap::with_capacity(merges.len());
        for (rank, (left, right)) in merges.iter().enumerate() {
            let lookup = |token: &str| {
                vocab.get(token).copied().ok_or_else(|| {
                    format!(
                        "merge {} `{left} {right}`: `{token}` is not in the vocabulary",
                        rank + 1
                    )
                })
            };
            let pair = (lookup(left)?, lookup(right)?);
            let merged_id = lookup(&format!("{left}{right}"))?;
            let rank = u32::try_from(rank).map_err(|_| "too many merges".to_string())?;
            merge_map.insert(pair, Merge { rank, merged_id });
        }
        let unk_id = unk_token.and_then(|unk| vocab.get(unk).copied());
        Ok(Bpe {
            vocab,
            merges: merge_map,
            unk_id,
            byte_chars: byte_to_unicode(),
        })
    }

    pub(super) fn token_id(&self, token: &str) -> Option<u32> {
        self.vocab.get(token).copied()
    }

    /// Appends the ids of one pre-tokenized word (raw text, not yet byte-mapped).
    pub(super) fn tokenize_word(&self, word: &str, out: &mut Vec<u32>) -> Result<(), String> {
        let mapped: Vec<char> = word
            .bytes()
            .map(|b| self.byte_chars[usize::from(b)])
            .collect();
        let mut symbols = Vec::with_capacity(mapped.len());
        let mut buffer = String::new();
        for (index, &c) in mapped.iter().enumerate() {
            buffer.clear();
            buffer.push(c);
            if index + 1 == mapped.len() {
                buffer.push_str(END_OF_WORD);
            }
            match self.vocab.get(&buffer).copied().or(self.unk_id) {
                Some(id) => symbols.push(id),
                None => {
                    return Err(format!(
                        "`{buffer}` (from the word `{word}`) is not in the vocabulary and there is no unknown token"
                    ))
                }
            }
        }
        self.merge_all(&mut symbols);
        out.extend_from_slice(&symbols);
        Ok(())
    }

    /// Merges until no adjacent pair has a merge. `pair_merges[i]` caches the merge of
    /// `(symbols[i], symbols[i + 1])`, so each step only looks up the two pairs it changed.
    fn merge_all(&self, symbols: &mut Vec<u32>) {
        let lookup = |left: u32, right: u32| self.merges.get(&(left, right)).copied();
        let mut pair_merges: Vec<Option<Merge>> = symbols
            .windows(2)
            .map(|pair| lookup(pair[0], pair[1]))
            .collect();
        loop {
            let best = pair_merges
                .iter()
                .enumerate()
                .filter_map(|(pos, merge)| merge.map(|m| (m.rank, pos, m.merged_id)))
                .min();
            let Some((_, pos, merged_id)) = best else {
                break;
            };
            symbols[pos] = merged_id;
            symbols.remove(pos + 1);
            pair_merges.remove(pos);
            if pos > 0 {
                pair_merges[pos - 1] = lookup(symbols[pos - 1], merged_id);
            }
            if pos < pair_merges.len() {
                pair_merges[pos] = lookup(merged_id, symbols[pos + 1]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        let table = byte_to_unicode();
        assert_eq!(table[usize::from(b'!')], '!');
        assert_eq!(table[usize::from(b'a')], 'a');
        assert_eq!(table[0], '\u{100}');
        assert_eq!(table[usize::from(b' ')], '\u{120}');
        assert_eq!(table[0xAD], '\u{143}');
        let distinct: std::collections::HashSet<char> = table.iter().copied().collect();
        assert_eq!(distinct.len(), 256);
    }

    fn toy_bpe(merges: &[(&str, &str)]) -> Bpe {
        let mut vocab = HashMap::new();
        for token in ["a", "b", "c", "a</w>", "b</w>", "c</w>", "<unk>"] {
            vocab.insert(token.to_string(), vocab.len() as u32);
        }
        for (l, r) in merges {
            let joined = format!("{l}{r}");
            if !vocab.contains_key(&joined) {
                vocab.insert(joined, vocab.len() as u32);
            }
        }
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|(l, r)| (l.to_string(), r.to_string()))
            .collect();
        Bpe::new(vocab, &merges, Some("<unk>")).expect("toy vocabulary is consistent")
    }

    fn tokens(bpe: &Bpe, word: &str) -> Vec<String> {
        let mut ids = Vec::new();
        bpe.tokenize_word(word, &mut ids)
            .expect("toy word tokenizes");
        let by_id: HashMap<u32, &String> = bpe.vocab.iter().map(|(t, id)| (*id, t)).collect();
        ids.iter().map(|id| by_id[id].clone()).collect()
    }

    #[test]
    fn merges_lowest_rank_first_and_leftmost_on_ties() {
        let bpe = toy_bpe(&[("a", "a"), ("b", "c</w>"), ("aa", "b")]);
        assert_eq!(tokens(&bpe, "aaa"), ["aa", "a</w>"]);
        assert_eq!(tokens(&bpe, "aabc"), ["aa", "bc</w>"]);
        assert_eq!(tokens(&bpe, "aab"), ["aa", "b</w>"]);
        assert_eq!(tokens(&bpe, "aabb"), ["aab", "b</w>"]);
        assert_eq!(tokens(&bpe, "bc"), ["bc</w>"]);
    }

    #[test]
    fn unknown_characters_become_unk_one_each() {
        let bpe = toy_bpe(&[]);
        assert_eq!(tokens(&bpe, "axxb"), ["a", "<unk>", "<unk>", "b</w>"]);
    }

    #[test]
    fn merge_of_unknown_token_is_an_error() {
        let vocab: HashMap<String, u32> = [("a".to_string(), 0)].into_iter().collect();
        let err = Bpe::new(vocab, &[("a".into(), "q".into())], None)
            .err()
            .unwrap_or_default();
        assert!(err.contains("`q` is not in the vocabulary"), "{err}");
    }
}
