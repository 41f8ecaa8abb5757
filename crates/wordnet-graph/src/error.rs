//! The crate's error type.

use std::error::Error;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// Longest excerpt of offending input that an error message quotes, in characters; a
/// corrupt file can hold a megabyte-long "field", which must not end up in a log line.
const MAX_QUOTED_CHARS: usize = 60;

/// Everything that can go wrong while parsing `data.noun`, reading or writing an edge
/// list, or checking a graph.
///
/// Errors that stem from a particular line of input carry its 1-based line number (header
/// and comment lines included), available uniformly through [`DataError::line`]. Errors
/// found while validating an in-memory graph ([`NounGraph::new`](crate::NounGraph::new),
/// [`NounGraph::check_wordnet_30_counts`](crate::NounGraph::check_wordnet_30_counts)) have
/// no line. Quoted input is cut to a few dozen characters.
///
/// The enum is `#[non_exhaustive]` so that new checks can be added without a breaking change.
#[derive(Debug)]
#[non_exhaustive]
pub enum DataError {
    /// Reading or writing failed at the operating-system level.
    Io {
        /// The file involved, when the operation was given a path.
        path: Option<PathBuf>,
        /// The line being read when the error happened, if reading line by line.
        line: Option<usize>,
        /// The underlying error.
        source: io::Error,
    },
    /// The gzip stream is truncated, has a bad checksum or is not gzip at all.
    Gzip {
        /// The file involved, when the operation was given a path.
        path: Option<PathBuf>,
        /// The decompressor's error.
        source: io::Error,
    },
    /// A line (or, for `data.noun`, the part of it before the gloss) is not valid UTF-8.
    InvalidUtf8 {
        /// The 1-based line number.
        line: usize,
    },
    /// A line ends before a required field (for example a `data.noun` line whose `p_cnt`
    /// announces more pointers than it holds, or an input that stops before its header).
    MissingField {
        /// The 1-based line number.
        line: usize,
        /// The field that is missing, named as in `wndb(5)` or the edge-list format.
        field: String,
    },
    /// A field is present but has the wrong shape.
    BadField {
        /// The 1-based line number.
        line: usize,
        /// The field, named as in `wndb(5)` or the edge-list format.
        field: String,
        /// The offending text, cut to a few dozen characters.
        value: String,
        /// What was expected instead.
        expected: &'static str,
    },
    /// A hypernym pointer names a synset offset that no noun synset of the input has.
    UnknownPointerTarget {
        /// The 1-based line number of the synset holding the pointer.
        line: usize,
        /// The target synset offset.
        target: u32,
    },
    /// Two nodes have the same synset offset.
    DuplicateOffset {
        /// The 1-based line number of the second occurrence, when read from input.
        line: Option<usize>,
        /// The repeated synset offset.
        offset: u32,
    },
    /// A label is empty or contains a control character (tab, line break, ...), which the
    /// line-oriented edge-list format could not represent.
    InvalidLabel {
        /// The 1-based line number, when read from input.
        line: Option<usize>,
        /// The 0-based node index.
        node: usize,
        /// The offending label, cut to a few dozen characters.
        label: String,
    },
    /// An edge refers to a node index that does not exist.
    EdgeOutOfRange {
        /// The 1-based line number, when read from input.
        line: Option<usize>,
        /// The 0-based index of the edge.
        edge: usize,
        /// The node index the edge refers to.
        node: u64,
        /// The number of nodes of the graph.
        nodes: usize,
    },
    /// A count differs from what was declared or expected: header counts of an edge list
    /// versus its actual lines, labels versus offsets, or a graph versus WordNet 3.0's counts.
    CountMismatch {
        /// The 1-based line number where the mismatch became apparent, when read from input.
        line: Option<usize>,
        /// What was counted.
        what: &'static str,
        /// The declared or expected count.
        expected: usize,
        /// The actual count.
        found: usize,
    },
    /// The input has more nodes than `u32` node indices can address.
    TooManyNodes {
        /// The 1-based line number of the first node that does not fit, when read from input.
        line: Option<usize>,
    },
}

impl DataError {
    /// The 1-based input line the error refers to, if any.
    pub fn line(&self) -> Option<usize> {
        match self {
            DataError::InvalidUtf8 { line }
            | DataError::MissingField { line, .. }
            | DataError::BadField { line, .. }
            | DataError::UnknownPointerTarget { line, .. } => Some(*line),
            DataError::Io { line, .. }
            | DataError::DuplicateOffset { line, .. }
            | DataError::InvalidLabel { line, .. }
            | DataError::EdgeOutOfRange { line, .. }
            | DataError::CountMismatch { line, .. }
            | DataError::TooManyNodes { line } => *line,
            DataError::Gzip { .. } => None,
        }
    }

    /// The file the error refers to, if the failing operation was given a path.
    pub fn path(&self) -> Option<&Path> {
        match self {
            DataError::Io { path, .. } | DataError::Gzip { path, .. } => path.as_deref(),
            _ => None,
        }
    }

    /// Attaches `path` to an I/O or gzip error that does not name a file yet.
    pub(crate) fn with_path(mut self, file: &Path) -> Self {
        if let DataError::Io { path, .. } | DataError::Gzip { path, .. } = &mut self {
            if path.is_none() {
                *path = Some(file.to_path_buf());
            }
        }
        self
    }
}

/// Cuts `text` to [`MAX_QUOTED_CHARS`] characters, marking the cut with `...`.
pub(crate) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// Writes `line N: ` when a line is known.
fn write_line_prefix(f: &mut fmt::Formatter<'_>, line: Option<usize>) -> fmt::Result {
    match line {
        Some(line) => write!(f, "line {line}: "),
        None => Ok(()),
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line_prefix(f, self.line())?;
        match self {
            DataError::Io { path, source, .. } => {
                write!(f, "I/O error")?;
                if let Some(path) = path {
                    write!(f, " on `{}`", path.display())?;
                }
                write!(f, ": {source}")
            }
            DataError::Gzip { path, source } => {
                write!(f, "truncated or corrupt gzip data")?;
                if let Some(path) = path {
                    write!(f, " in `{}`", path.display())?;
                }
                write!(f, ": {source}")
            }
            DataError::InvalidUtf8 { .. } => write!(f, "invalid UTF-8"),
            DataError::MissingField { field, .. } => {
                write!(f, "missing field `{field}`: the line has too few fields")
            }
            DataError::BadField {
                field,
                value,
                expected,
                ..
            } => write!(f, "bad field `{field}` {value:?}: expected {expected}"),
            DataError::UnknownPointerTarget { target, .. } => write!(
                f,
                "hypernym pointer to synset {target:08}, which is not a noun synset of the input"
            ),
            DataError::DuplicateOffset { offset, .. } => {
                write!(f, "synset offset {offset:08} occurs more than once")
            }
            DataError::InvalidLabel { node, label, .. } => write!(
                f,
                "node {node} has label {label:?}: labels must be non-empty and free of control \
                 characters such as tabs and line breaks"
            ),
            DataError::EdgeOutOfRange {
                edge, node, nodes, ..
            } => write!(
                f,
                "edge {edge} refers to node {node}, but the graph has only {nodes} nodes"
            ),
            DataError::CountMismatch {
                what,
                expected,
                found,
                ..
            } => write!(
                f,
                "wrong number of {what}: expected {expected}, found {found}"
            ),
            DataError::TooManyNodes { .. } => {
                write!(f, "more nodes than 32-bit node indices can address")
            }
        }
    }
}

impl Error for DataError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            DataError::Io { source, .. } | DataError::Gzip { source, .. } => Some(source),
            _ => None,
        }
    }
}
