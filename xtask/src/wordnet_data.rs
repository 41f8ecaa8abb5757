//! `cargo xtask wordnet-data`: regenerates (or, with `--check`, verifies) the shipped
//! WordNet 3.0 noun graph `examples/data/wordnet-nouns.tsv.gz` from WordNet's `data.noun`.
//!
//! ```text
//! cargo xtask wordnet-data [--wordnet-dir DIR] [--check]
//! ```
//!
//! * `--wordnet-dir DIR`: where `data.noun` lives; default `/usr/share/wordnet`, where
//!   Debian's and Ubuntu's `wordnet-base` package installs it.
//! * `--check`: derive the file in memory and fail if it differs from the committed one,
//!   without writing anything (for CI).
//!
//! The derivation fails unless `data.noun` has exactly WordNet 3.0's counts, so a
//! different WordNet version cannot slip in. Output is byte-for-byte reproducible for a
//! given `data.noun` and `Cargo.lock` (the gzip header has mtime 0 and the level is fixed).

use std::fs::{self, File};
use std::io::BufReader;
use std::path::{Path, PathBuf};

use wordnet_graph::{EdgeKind, NounGraph, EDGE_LIST_PATH};

/// Where `wordnet-base` installs the database on Debian and Ubuntu.
const DEFAULT_WORDNET_DIR: &str = "/usr/share/wordnet";

const USAGE: &str = "usage: cargo xtask wordnet-data [--wordnet-dir DIR] [--check]

Derives the WordNet 3.0 noun hypernym graph from DIR/data.noun (default DIR:
/usr/share/wordnet, from `apt-get install wordnet-base`), checks WordNet 3.0's counts
and writes examples/data/wordnet-nouns.tsv.gz.

  --wordnet-dir DIR  directory holding WordNet's data.noun
  --check            write nothing; fail if the committed file differs from a fresh derivation";

/// Runs the subcommand; `args` are the arguments after `wordnet-data`.
///
/// Errors are complete messages for the user (what failed, which file, what to do).
pub fn run(args: &[String]) -> Result<(), String> {
    let mut wordnet_dir = PathBuf::from(DEFAULT_WORDNET_DIR);
    let mut check = false;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--check" => check = true,
            "--wordnet-dir" => {
                let dir = args
                    .next()
                    .ok_or_else(|| format!("--wordnet-dir needs a directory\n\n{USAGE}"))?;
                wordnet_dir = PathBuf::from(dir);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => match other.strip_prefix("--wordnet-dir=") {
                Some(dir) => wordnet_dir = PathBuf::from(dir),
                None => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
            },
        }
    }

    let graph = derive(&wordnet_dir)?;
    let bytes = graph
        .to_gzip_bytes()
        .map_err(|error| format!("cannot compress the edge list: {error}"))?;
    let output = workspace_root().join(EDGE_LIST_PATH);

    if check {
        compare(&graph, &bytes, &output)?;
        println!("{} is up to date ({} bytes)", output.display(), bytes.len());
    } else {
        if let Some(dir) = output.parent() {
            fs::create_dir_all(dir)
                .map_err(|error| format!("cannot create `{}`: {error}", dir.display()))?;
        }
        fs::write(&output, &bytes)
            .map_err(|error| format!("cannot write `{}`: {error}", output.display()))?;
        println!("wrote {} ({} bytes)", output.display(), bytes.len());
    }
    println!(
        "{} nodes (noun synsets), {} edges: {} hypernym (@), {} instance hypernym (@i)",
        graph.num_nodes(),
        graph.num_edges(),
        graph.edge_count(EdgeKind::Hypernym),
        graph.edge_count(EdgeKind::InstanceHypernym),
    );
    Ok(())
}

/// Parses `dir/data.noun` and checks WordNet 3.0's counts.
fn derive(dir: &Path) -> Result<NounGraph, String> {
    let path = dir.join("data.noun");
    if !path.is_file() {
        return Err(format!(
            "`{}` not found. Install WordNet 3.0's database (Debian/Ubuntu: \
             `apt-get install wordnet-base`) or pass --wordnet-dir DIR.",
            path.display()
        ));
    }
    let file =
        File::open(&path).map_err(|error| format!("cannot open `{}`: {error}", path.display()))?;
    let graph = NounGraph::from_data_noun(BufReader::with_capacity(1 << 20, file))
        .map_err(|error| format!("`{}`: {error}", path.display()))?;
    graph.check_wordnet_30_counts().map_err(|error| {
        format!(
            "`{}` is not WordNet 3.0's data.noun: {error}",
            path.display()
        )
    })?;
    Ok(graph)
}

/// Fails unless the committed file at `output` has exactly `bytes`, saying whether the
/// graph itself differs or only its encoding.
fn compare(graph: &NounGraph, bytes: &[u8], output: &Path) -> Result<(), String> {
    let committed = fs::read(output).map_err(|error| {
        format!(
            "cannot read `{}`: {error}; run `cargo xtask wordnet-data` to create it",
            output.display()
        )
    })?;
    if committed == bytes {
        return Ok(());
    }
    let reason = match NounGraph::from_gzip_bytes(&committed) {
        Err(error) => format!("it does not load: {error}"),
        Ok(committed_graph) if committed_graph == *graph => {
            "the graph is the same but the bytes differ (the writer, flate2 or miniz_oxide changed)"
                .to_owned()
        }
        Ok(committed_graph) => format!(
            "the graph differs (committed: {} nodes, {} edges; derived: {} nodes, {} edges)",
            committed_graph.num_nodes(),
            committed_graph.num_edges(),
            graph.num_nodes(),
            graph.num_edges()
        ),
    };
    Err(format!(
        "`{}` is out of date: {reason}. Run `cargo xtask wordnet-data` and commit the result.",
        output.display()
    ))
}

/// The workspace root: the parent of xtask's manifest directory.
fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}
