//! Reading and writing the edge-list format (documented in the crate docs), plain and gzip.

use std::collections::HashSet;
use std::fs;
use std::io::{self, BufRead, BufWriter, Read, Write};
use std::path::Path;

use flate2::read::MultiGzDecoder;
use flate2::{Compression, GzBuilder};

use crate::data_noun::{is_decimal, parse_decimal_u32};
use crate::error::excerpt;
use crate::{is_valid_label, DataError, Edge, EdgeKind, NounGraph};

/// The first line of every edge list; the number is the format version.
const FORMAT_LINE: &str = "# wordnet-graph edge list, format 1";

/// What [`FORMAT_LINE`] errors say was expected.
const EXPECTED_FORMAT_LINE: &str = "`# wordnet-graph edge list, format 1`";

/// The gzip level of the writer. Fixed (like the header's mtime of 0) so that the output
/// depends only on the graph and the compressor's version; 9 gives the smallest file.
const GZIP_LEVEL: u32 = 9;

/// Most elements reserved up front from a declared count: a corrupt header must not be
/// able to make the reader allocate gigabytes before it finds out the lines are missing.
const MAX_RESERVED: usize = 1 << 20;

impl NounGraph {
    /// Writes the graph as an uncompressed edge list (format in the crate docs).
    ///
    /// Buffers internally, so `writer` may be unbuffered, and flushes before returning.
    /// The output depends only on the graph, so writing the same graph twice gives the
    /// same bytes. Fails only if `writer` does ([`DataError::Io`] without a path).
    pub fn write_edge_list(&self, writer: impl Write) -> Result<(), DataError> {
        let mut out = BufWriter::with_capacity(1 << 16, writer);
        self.write_lines(&mut out)
            .and_then(|()| out.flush())
            .map_err(|source| DataError::Io {
                path: None,
                line: None,
                source,
            })
    }

    /// Writes the header, node and edge lines.
    fn write_lines(&self, out: &mut impl Write) -> io::Result<()> {
        let hypernyms = self.edge_count(EdgeKind::Hypernym);
        let instances = self.edge_count(EdgeKind::InstanceHypernym);
        writeln!(out, "{FORMAT_LINE}")?;
        if self.check_wordnet_30_counts().is_ok() {
            writeln!(
                out,
                "# Noun hypernym graph derived from WordNet 3.0's data.noun. \
                 WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved."
            )?;
        } else {
            writeln!(out, "# Noun hypernym graph derived from a WordNet data.noun (WordNet is by Princeton University).")?;
        }
        writeln!(
            out,
            "# WordNet's license notice accompanies this file as WORDNET-LICENSE."
        )?;
        writeln!(
            out,
            "# Node lines: synset_offset<TAB>first lemma; a node's index is its position, from 0."
        )?;
        writeln!(
            out,
            "# Edge lines: child_index<TAB>parent_index<TAB>kind; kind @ = hypernym, @i = instance hypernym."
        )?;
        writeln!(
            out,
            "# {} nodes, {} edges: {hypernyms} hypernym, {instances} instance hypernym.",
            self.num_nodes(),
            self.num_edges()
        )?;
        writeln!(out, "nodes {}", self.num_nodes())?;
        for (offset, label) in self.offsets.iter().zip(&self.labels) {
            writeln!(out, "{offset:08}\t{label}")?;
        }
        writeln!(out, "edges {}", self.num_edges())?;
        for edge in &self.edges {
            writeln!(
                out,
                "{}\t{}\t{}",
                edge.child,
                edge.parent,
                edge.kind.symbol()
            )?;
        }
        Ok(())
    }

    /// Reads an uncompressed edge list (format in the crate docs).
    ///
    /// Checks everything the format promises: the format line, the declared node and edge
    /// counts against the actual lines (a truncated input is a
    /// [`DataError::CountMismatch`], as is data after the last edge), the shape of every
    /// field, unique offsets, valid labels and edge endpoints below the node count
    /// ([`DataError::EdgeOutOfRange`]). Errors carry the 1-based line number.
    pub fn read_edge_list(reader: impl BufRead) -> Result<Self, DataError> {
        let mut lines = Lines {
            reader,
            buffer: Vec::new(),
            line: 0,
        };

        match lines.next()? {
            None => return Err(missing(1, "format line")),
            Some((_, FORMAT_LINE)) => {}
            Some((line, text)) => return Err(bad(line, "format line", text, EXPECTED_FORMAT_LINE)),
        }

        let node_count = loop {
            match lines.next()? {
                None => return Err(missing(lines.line + 1, "nodes <count>")),
                Some((_, text)) if text.starts_with('#') => continue,
                Some((line, text)) => {
                    let count = parse_count(text, "nodes", line)?;
                    if u32::try_from(count).is_err() {
                        return Err(DataError::TooManyNodes { line: Some(line) });
                    }
                    break count;
                }
            }
        };

        let mut offsets = Vec::with_capacity(node_count.min(MAX_RESERVED));
        let mut labels = Vec::with_capacity(node_count.min(MAX_RESERVED));
        let mut seen = HashSet::with_capacity(node_count.min(MAX_RESERVED));
        while offsets.len() < node_count {
            let too_few = |line| DataError::CountMismatch {
                line: Some(line),
                what: "node lines",
                expected: node_count,
                found: offsets.len(),
            };
            let (line, text) = match lines.next()? {
                None => return Err(too_few(lines.line + 1)),
                Some((line, text)) if text.starts_with("edges ") => return Err(too_few(line)),
                Some((line, text)) => (line, text),
            };
            let (offset, label) = text
                .split_once('\t')
                .ok_or_else(|| missing(line, "label"))?;
            let offset = parse_decimal_u32(offset)
                .ok_or_else(|| bad(line, "synset_offset", offset, "a decimal synset offset"))?;
            if !is_valid_label(label) {
                return Err(DataError::InvalidLabel {
                    line: Some(line),
                    node: offsets.len(),
                    label: excerpt(label),
                });
            }
            if !seen.insert(offset) {
                return Err(DataError::DuplicateOffset {
                    line: Some(line),
                    offset,
                });
            }
            offsets.push(offset);
            labels.push(label.to_owned());
        }

        let edge_count = match lines.next()? {
            None => return Err(missing(lines.line + 1, "edges <count>")),
            Some((line, text)) => parse_count(text, "edges", line)?,
        };
        let mut edges = Vec::with_capacity(edge_count.min(MAX_RESERVED));
        while edges.len() < edge_count {
            let Some((line, text)) = lines.next()? else {
                return Err(DataError::CountMismatch {
                    line: Some(lines.line + 1),
                    what: "edge lines",
                    expected: edge_count,
                    found: edges.len(),
                });
            };
            let mut fields = text.splitn(3, '\t');
            let node = |field: Option<&str>, name: &'static str| -> Result<u32, DataError> {
                let text = field.ok_or_else(|| missing(line, name))?;
                let index = Some(text)
                    .filter(|text| is_decimal(text))
                    .and_then(|text| text.parse::<u64>().ok())
                    .ok_or_else(|| bad(line, name, text, "a decimal node index"))?;
                u32::try_from(index)
                    .ok()
                    .filter(|&index| (index as usize) < node_count)
                    .ok_or(DataError::EdgeOutOfRange {
                        line: Some(line),
                        edge: edges.len(),
                        node: index,
                        nodes: node_count,
                    })
            };
            let child = node(fields.next(), "child_index")?;
            let parent = node(fields.next(), "parent_index")?;
            let kind = fields.next().ok_or_else(|| missing(line, "kind"))?;
            let kind = EdgeKind::from_symbol(kind).ok_or_else(|| {
                bad(
                    line,
                    "kind",
                    kind,
                    "`@` (hypernym) or `@i` (instance hypernym)",
                )
            })?;
            edges.push(Edge {
                child,
                parent,
                kind,
            });
        }

        if let Some((line, _)) = lines.next()? {
            let mut extra = 1;
            while lines.next()?.is_some() {
                extra += 1;
            }
            return Err(DataError::CountMismatch {
                line: Some(line),
                what: "edge lines",
                expected: edge_count,
                found: edge_count + extra,
            });
        }

        Ok(NounGraph {
            offsets,
            labels,
            edges,
        })
    }

    /// The gzip-compressed edge list, as [`save`](Self::save) writes it: gzip header with
    /// mtime 0, no file name, OS byte 255, compression level 9. Deterministic for a given
    /// graph and `flate2`/`miniz_oxide` version (`Cargo.lock` pins them).
    pub fn to_gzip_bytes(&self) -> Result<Vec<u8>, DataError> {
        let mut encoder = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::new(GZIP_LEVEL));
        self.write_edge_list(&mut encoder)?;
        encoder.finish().map_err(|source| DataError::Io {
            path: None,
            line: None,
            source,
        })
    }

    /// Reads a gzip-compressed edge list held in memory.
    ///
    /// Decompresses everything first, so a truncated stream, a bad checksum or data that
    /// is not gzip is a [`DataError::Gzip`], never a partial graph; then parses like
    /// [`read_edge_list`](Self::read_edge_list). Concatenated gzip members are read as one
    /// stream, as `gzip -d` does.
    pub fn from_gzip_bytes(bytes: &[u8]) -> Result<Self, DataError> {
        // The shipped file compresses about 3:1; the cap only limits the up-front reservation.
        let mut text = Vec::with_capacity(bytes.len().saturating_mul(4).min(64 << 20));
        MultiGzDecoder::new(bytes)
            .read_to_end(&mut text)
            .map_err(|source| DataError::Gzip { path: None, source })?;
        Self::read_edge_list(text.as_slice())
    }

    /// Loads a gzip-compressed edge list file, such as the shipped [`crate::EDGE_LIST_PATH`].
    ///
    /// I/O and gzip errors name `path`; format errors name the line of the decompressed
    /// text. See [`from_gzip_bytes`](Self::from_gzip_bytes).
    pub fn load(path: impl AsRef<Path>) -> Result<Self, DataError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| DataError::Io {
            path: Some(path.to_path_buf()),
            line: None,
            source,
        })?;
        Self::from_gzip_bytes(&bytes).map_err(|error| error.with_path(path))
    }

    /// Saves the graph as a gzip-compressed edge list file, replacing any file at `path`;
    /// the bytes are those of [`to_gzip_bytes`](Self::to_gzip_bytes). I/O errors name `path`.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), DataError> {
        let path = path.as_ref();
        let bytes = self.to_gzip_bytes()?;
        fs::write(path, bytes).map_err(|source| DataError::Io {
            path: Some(path.to_path_buf()),
            line: None,
            source,
        })
    }
}

/// Lines of a reader, as UTF-8 without their `\n` or `\r\n`, numbered from 1.
struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
    /// Number of lines returned so far, which is the number of the last one.
    line: usize,
}

impl<R: BufRead> Lines<R> {
    /// The next line and its number, or `None` at the end of the input.
    fn next(&mut self) -> Result<Option<(usize, &str)>, DataError> {
        self.buffer.clear();
        let read = self
            .reader
            .read_until(b'\n', &mut self.buffer)
            .map_err(|source| DataError::Io {
                path: None,
                line: Some(self.line + 1),
                source,
            })?;
        if read == 0 {
            return Ok(None);
        }
        self.line += 1;
        let mut bytes = self.buffer.as_slice();
        if let Some(rest) = bytes.strip_suffix(b"\n") {
            bytes = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        let text =
            std::str::from_utf8(bytes).map_err(|_| DataError::InvalidUtf8 { line: self.line })?;
        Ok(Some((self.line, text)))
    }
}

/// Parses a `<keyword> <count>` line.
fn parse_count(text: &str, keyword: &'static str, line: usize) -> Result<usize, DataError> {
    let (field, expected) = match keyword {
        "nodes" => ("nodes <count>", "`nodes <count>` after the comment lines"),
        _ => (
            "edges <count>",
            "`edges <count>` after the declared number of node lines",
        ),
    };
    text.strip_prefix(keyword)
        .and_then(|rest| rest.strip_prefix(' '))
        .filter(|count| is_decimal(count))
        .and_then(|count| count.parse().ok())
        .ok_or_else(|| bad(line, field, text, expected))
}

/// A [`DataError::MissingField`].
fn missing(line: usize, field: &str) -> DataError {
    DataError::MissingField {
        line,
        field: field.to_owned(),
    }
}

/// A [`DataError::BadField`] quoting an excerpt of `value`.
fn bad(line: usize, field: &str, value: &str, expected: &'static str) -> DataError {
    DataError::BadField {
        line,
        field: field.to_owned(),
        value: excerpt(value),
        expected,
    }
}
