//! Parsing WordNet's `data.noun` (format described in `wndb(5)`).

use std::collections::HashMap;
use std::io::BufRead;
use std::str::SplitAsciiWhitespace;

use crate::error::excerpt;
use crate::{is_valid_label, DataError, Edge, EdgeKind, NounGraph};

/// Parts of speech a WordNet pointer may target.
const POINTER_POS: [&str; 5] = ["n", "v", "a", "s", "r"];

impl NounGraph {
    /// Parses WordNet's `data.noun` into the noun hypernym graph.
    ///
    /// Reads `reader` to the end, one line per synset:
    /// `synset_offset lex_filenum ss_type w_cnt word lex_id [word lex_id...] p_cnt [ptr...] | gloss`
    /// with `w_cnt` a 2-digit hexadecimal number, `p_cnt` a 3-digit decimal number and each
    /// pointer the four fields `pointer_symbol synset_offset pos source/target`
    /// (see `wndb(5)`). Lines starting with two spaces are the license header and are skipped.
    ///
    /// Makes a node per synset, labelled with its first lemma, and an edge per `@` and `@i`
    /// pointer whose target part of speech is `n`. Pointers may point forward in the file.
    /// Other pointers (antonyms, meronyms, derivations to verbs, ...) are checked for
    /// shape and otherwise ignored. Only the part of each line before the gloss (`|`) has
    /// to be UTF-8.
    ///
    /// The checks are strict, so that a corrupt or misaligned line is reported rather than
    /// silently turned into wrong edges: `ss_type` must be `n`; numbers must have the
    /// documented radix; each pointer must have a known part of speech and a 4-digit
    /// hexadecimal source/target; nothing but the gloss may follow the pointers; offsets
    /// must be unique; and every hypernym target must be a synset of the input
    /// ([`DataError::UnknownPointerTarget`], reported at the line of the pointer).
    /// Errors carry the 1-based line number, license header lines included.
    ///
    /// This does not check WordNet 3.0's counts: call
    /// [`check_wordnet_30_counts`](Self::check_wordnet_30_counts) for that.
    pub fn from_data_noun(mut reader: impl BufRead) -> Result<Self, DataError> {
        let mut offsets = Vec::new();
        let mut labels = Vec::new();
        let mut node_of_offset = HashMap::new();
        // (child, target offset, kind, line), resolved once all synsets are known.
        let mut pointers = Vec::new();
        let mut buffer = Vec::new();
        let mut line = 0usize;
        loop {
            buffer.clear();
            let read = reader
                .read_until(b'\n', &mut buffer)
                .map_err(|source| DataError::Io {
                    path: None,
                    line: Some(line + 1),
                    source,
                })?;
            if read == 0 {
                break;
            }
            line += 1;
            if buffer.starts_with(b"  ") {
                continue;
            }
            // Lemmas never contain `|`, so the first one starts the gloss, which may be in
            // any encoding and is not needed.
            let fields = match buffer.iter().position(|&byte| byte == b'|') {
                Some(bar) => &buffer[..bar],
                None => &buffer[..],
            };
            let fields =
                std::str::from_utf8(fields).map_err(|_| DataError::InvalidUtf8 { line })?;
            let synset = parse_synset(fields, line)?;

            let node = u32::try_from(offsets.len())
                .map_err(|_| DataError::TooManyNodes { line: Some(line) })?;
            if node_of_offset.insert(synset.offset, node).is_some() {
                return Err(DataError::DuplicateOffset {
                    line: Some(line),
                    offset: synset.offset,
                });
            }
            if !is_valid_label(synset.label) {
                return Err(DataError::InvalidLabel {
                    line: Some(line),
                    node: offsets.len(),
                    label: excerpt(synset.label),
                });
            }
            offsets.push(synset.offset);
            labels.push(synset.label.to_owned());
            pointers.extend(
                synset
                    .hypernyms
                    .into_iter()
                    .map(|(target, kind)| (node, target, kind, line)),
            );
        }

        let mut edges = Vec::with_capacity(pointers.len());
        for (child, target, kind, line) in pointers {
            let parent = *node_of_offset
                .get(&target)
                .ok_or(DataError::UnknownPointerTarget { line, target })?;
            edges.push(Edge {
                child,
                parent,
                kind,
            });
        }
        Ok(NounGraph {
            offsets,
            labels,
            edges,
        })
    }
}

/// The parts of one `data.noun` line that the graph needs.
struct Synset<'a> {
    offset: u32,
    label: &'a str,
    /// `(target offset, kind)` of the `@` and `@i` pointers to nouns, in line order.
    hypernyms: Vec<(u32, EdgeKind)>,
}

/// Parses the fields of a synset line, up to (excluding) the gloss's `|`.
fn parse_synset(text: &str, line: usize) -> Result<Synset<'_>, DataError> {
    let mut fields = Fields {
        iter: text.split_ascii_whitespace(),
        line,
    };
    let offset = fields.next(|| "synset_offset".into())?;
    let offset = parse_decimal_u32(offset).ok_or_else(|| {
        bad(
            line,
            "synset_offset".into(),
            offset,
            "an 8-digit decimal synset offset",
        )
    })?;
    let lex_filenum = fields.next(|| "lex_filenum".into())?;
    if !is_decimal(lex_filenum) {
        return Err(bad(
            line,
            "lex_filenum".into(),
            lex_filenum,
            "a 2-digit decimal lexicographer file number",
        ));
    }
    let ss_type = fields.next(|| "ss_type".into())?;
    if ss_type != "n" {
        return Err(bad(
            line,
            "ss_type".into(),
            ss_type,
            "`n`: data.noun holds noun synsets only",
        ));
    }
    let w_cnt = fields.next(|| "w_cnt".into())?;
    let words = parse_hex_u8(w_cnt)
        .filter(|&count| count > 0)
        .ok_or_else(|| {
            bad(
                line,
                "w_cnt".into(),
                w_cnt,
                "a 2-digit hexadecimal word count of at least 1",
            )
        })?;
    let mut label = "";
    for word in 1..=words {
        let lemma = fields.next(|| format!("word {word}"))?;
        if word == 1 {
            label = lemma;
        }
        let lex_id = fields.next(|| format!("lex_id {word}"))?;
        if !is_hex(lex_id) {
            return Err(bad(
                line,
                format!("lex_id {word}"),
                lex_id,
                "a 1-digit hexadecimal lex_id",
            ));
        }
    }
    let p_cnt = fields.next(|| "p_cnt".into())?;
    let pointer_count = parse_decimal_u32(p_cnt).ok_or_else(|| {
        bad(
            line,
            "p_cnt".into(),
            p_cnt,
            "a 3-digit decimal pointer count",
        )
    })?;
    let mut hypernyms = Vec::new();
    for pointer in 1..=pointer_count {
        let symbol = fields.next(|| format!("pointer {pointer} pointer_symbol"))?;
        let target = fields.next(|| format!("pointer {pointer} synset_offset"))?;
        let target = parse_decimal_u32(target).ok_or_else(|| {
            bad(
                line,
                format!("pointer {pointer} synset_offset"),
                target,
                "an 8-digit decimal synset offset",
            )
        })?;
        let pos = fields.next(|| format!("pointer {pointer} pos"))?;
        if !POINTER_POS.contains(&pos) {
            return Err(bad(
                line,
                format!("pointer {pointer} pos"),
                pos,
                "a part of speech: n, v, a, s or r",
            ));
        }
        let source_target = fields.next(|| format!("pointer {pointer} source/target"))?;
        if source_target.len() != 4 || !is_hex(source_target) {
            return Err(bad(
                line,
                format!("pointer {pointer} source/target"),
                source_target,
                "a 4-digit hexadecimal source/target number",
            ));
        }
        if pos == "n" {
            if let Some(kind) = EdgeKind::from_symbol(symbol) {
                hypernyms.push((target, kind));
            }
        }
    }
    if let Some(extra) = fields.iter.next() {
        return Err(bad(
            line,
            "gloss separator".into(),
            extra,
            "`|` right after the pointers (noun synsets have no verb frames); is p_cnt right?",
        ));
    }
    Ok(Synset {
        offset,
        label,
        hypernyms,
    })
}

/// The whitespace-separated fields of one line, with errors naming the missing field.
struct Fields<'a> {
    iter: SplitAsciiWhitespace<'a>,
    line: usize,
}

impl<'a> Fields<'a> {
    /// The next field, or [`DataError::MissingField`] naming the field `field()` returns
    /// (a closure, so that the name is only formatted on error).
    fn next(&mut self, field: impl FnOnce() -> String) -> Result<&'a str, DataError> {
        self.iter.next().ok_or_else(|| DataError::MissingField {
            line: self.line,
            field: field(),
        })
    }
}

/// A [`DataError::BadField`] quoting an excerpt of `value`.
fn bad(line: usize, field: String, value: &str, expected: &'static str) -> DataError {
    DataError::BadField {
        line,
        field,
        value: excerpt(value),
        expected,
    }
}

/// Whether `text` is a non-empty run of ASCII decimal digits.
pub(crate) fn is_decimal(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_digit())
}

/// Whether `text` is a non-empty run of ASCII hexadecimal digits.
fn is_hex(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

/// Parses plain decimal digits (no sign, unlike `str::parse`) that fit in a `u32`.
pub(crate) fn parse_decimal_u32(text: &str) -> Option<u32> {
    if is_decimal(text) {
        text.parse().ok()
    } else {
        None
    }
}

/// Parses plain hexadecimal digits (no sign) that fit in a `u8`.
fn parse_hex_u8(text: &str) -> Option<u8> {
    if is_hex(text) {
        u8::from_str_radix(text, 16).ok()
    } else {
        None
    }
}
