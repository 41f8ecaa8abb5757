//! Unit tests: parsing `data.noun`, the edge-list format, gzip, errors and the shipped file.

use std::io::Read;
use std::path::PathBuf;

use crate::*;

/// Real-format `data.noun` lines: the start of the license header, then synsets taken from
/// WordNet 3.0 with their pointer lists shortened (and `p_cnt` adjusted), `physicist`'s
/// hypernym redirected to a synset of the sample, and one `@` pointer to a verb added.
const SAMPLE: &str = "  1 This software and database is being provided to you, the LICENSEE, by  
  2 Princeton University under the following license.  By obtaining, using  
00001740 03 n 01 entity 0 003 ~ 00001930 n 0000 ~ 00002137 n 0000 ~ 04424418 n 0000 | that which is perceived or known or inferred to have its own distinct existence (living or nonliving)  
00001930 03 n 01 physical_entity 0 002 @ 00001740 n 0000 ~ 00002452 n 0000 | an entity that has physical existence  
00002137 03 n 02 abstraction 0 abstract_entity 0 003 @ 00001740 n 0000 + 00692347 v 0101 ~ 00023100 n 0000 | a general concept formed by extracting common features from specific examples  
10428004 18 n 01 physicist 0 004 @ 00001930 n 0000 ;c 06090869 n 0000 @ 01234567 v 0000 ~i 10954498 n 0000 | a scientist trained in physics  
10954498 18 n 02 Einstein 0 Albert_Einstein 0 002 @i 10428004 n 0000 + 03031248 a 0101 | physicist born in Germany who formulated the special theory of relativity and the general theory of relativity; Einstein also proposed that light consists of discrete quantized bundles of energy (later called photons) (1879-1955)  
";

fn sample() -> NounGraph {
    NounGraph::from_data_noun(SAMPLE.as_bytes()).expect("the sample parses")
}

fn edge(child: u32, parent: u32, kind: EdgeKind) -> Edge {
    Edge {
        child,
        parent,
        kind,
    }
}

/// The sample's lines 3 and 4 with `line` appended as line 5: errors should name line 5.
fn data_noun_with(line: &str) -> Result<NounGraph, DataError> {
    let mut text: String = SAMPLE.lines().take(4).map(|l| format!("{l}\n")).collect();
    text.push_str(line);
    text.push('\n');
    NounGraph::from_data_noun(text.as_bytes())
}

fn edge_list(graph: &NounGraph) -> String {
    let mut out = Vec::new();
    graph
        .write_edge_list(&mut out)
        .expect("writing to a Vec works");
    String::from_utf8(out).expect("the writer writes UTF-8")
}

fn read(text: &str) -> Result<NounGraph, DataError> {
    NounGraph::read_edge_list(text.as_bytes())
}

/// The shipped file, found from this crate's manifest directory.
fn shipped_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(EDGE_LIST_PATH)
}

#[test]
fn parses_sample_data_noun() {
    let graph = sample();
    assert_eq!(graph.offsets(), [1740, 1930, 2137, 10428004, 10954498]);
    assert_eq!(
        graph.labels(),
        [
            "entity",
            "physical_entity",
            "abstraction",
            "physicist",
            "Einstein"
        ]
    );
    assert_eq!(
        graph.edges(),
        [
            edge(1, 0, EdgeKind::Hypernym),
            edge(2, 0, EdgeKind::Hypernym),
            edge(3, 1, EdgeKind::Hypernym),
            edge(4, 3, EdgeKind::InstanceHypernym),
        ]
    );
    assert_eq!(graph.num_nodes(), 5);
    assert_eq!(graph.num_edges(), 4);
    assert_eq!(graph.edge_count(EdgeKind::Hypernym), 3);
    assert_eq!(graph.edge_count(EdgeKind::InstanceHypernym), 1);
    assert_eq!(graph.index_of("physicist"), Some(3));
    assert_eq!(
        graph.index_of("abstract_entity"),
        None,
        "only first lemmas are labels"
    );
    assert_eq!(graph.index_of_offset(10954498), Some(4));
    assert_eq!(graph.label(4), Some("Einstein"));
    assert_eq!(graph.offset(1), Some(1930));
    assert_eq!(graph.label(5), None);
    assert_eq!(graph.offset(5), None);
}

#[test]
fn tolerates_crlf_and_missing_gloss_and_invalid_utf8_in_gloss() {
    let text =
        b"00000001 03 n 01 a 0 000\r\n00000002 03 n 01 b 0 001 @ 00000001 n 0000 | caf\xe9\r\n";
    let graph = NounGraph::from_data_noun(&text[..]).expect("parses");
    assert_eq!(graph.labels(), ["a", "b"]);
    assert_eq!(graph.edges(), [edge(1, 0, EdgeKind::Hypernym)]);
    assert_eq!(
        NounGraph::from_data_noun(&b""[..]).expect("empty input"),
        NounGraph::default()
    );
}

#[test]
fn data_noun_errors_name_field_and_line() {
    let cases: [(&str, &str); 9] = [
        ("00009999 03 n 0g thing 0 000 | bad hex word count", "w_cnt"),
        ("00009999 03 n 00 000 | zero words", "w_cnt"),
        (
            "00009999 03 n 01 thing 0 001 @ 00001740 x 0000 | bad pos",
            "pointer 1 pos",
        ),
        (
            "00009999 03 n 01 thing 0 001 @ 0000174O n 0000 | letter O",
            "pointer 1 synset_offset",
        ),
        (
            "00009999 03 n 01 thing 0 001 @ 00001740 n 00 | short source/target",
            "pointer 1 source/target",
        ),
        (
            "00009999 03 n 01 thing 0 000 @ 00001740 n 0000 | p_cnt too small",
            "gloss separator",
        ),
        ("00009999 03 v 01 thing 0 000 | a verb", "ss_type"),
        ("0000x999 03 n 01 thing 0 000 | bad offset", "synset_offset"),
        ("00009999 03 n 01 thing 0 -01 | signed p_cnt", "p_cnt"),
    ];
    for (line, expected_field) in cases {
        match data_noun_with(line) {
            Err(DataError::BadField { line: 5, field, .. }) if field == expected_field => {}
            other => panic!("{line:?}: expected a bad `{expected_field}` on line 5, got {other:?}"),
        }
    }
    let missing: [(&str, &str); 4] = [
        ("00009999 03 n 01 thing", "lex_id 1"),
        ("00009999 03 n 02 thing 0 000 | w_cnt too large", "lex_id 2"),
        (
            "00009999 03 n 01 thing 0 002 @ 00001740 n 0000 | p_cnt too large",
            "pointer 2 pointer_symbol",
        ),
        ("", "synset_offset"),
    ];
    for (line, expected_field) in missing {
        match data_noun_with(line) {
            Err(DataError::MissingField { line: 5, field }) if field == expected_field => {}
            other => {
                panic!("{line:?}: expected a missing `{expected_field}` on line 5, got {other:?}")
            }
        }
    }
}

#[test]
fn data_noun_reference_errors() {
    assert!(matches!(
        data_noun_with("00009999 03 n 01 thing 0 001 @i 99999999 n 0000 | unknown target"),
        Err(DataError::UnknownPointerTarget {
            line: 5,
            target: 99999999
        })
    ));
    assert!(matches!(
        data_noun_with("00001930 03 n 01 again 0 000 | duplicate"),
        Err(DataError::DuplicateOffset {
            line: Some(5),
            offset: 1930
        })
    ));
    let text = b"00000001 03 n 01 caf\xe9 0 000 | bad lemma\n";
    assert!(matches!(
        NounGraph::from_data_noun(&text[..]),
        Err(DataError::InvalidUtf8 { line: 1 })
    ));
    let text = "00000001 03 n 01 a\u{b}b 0 000 | control character in a lemma\n";
    assert!(matches!(
        NounGraph::from_data_noun(text.as_bytes()),
        Err(DataError::InvalidLabel {
            line: Some(1),
            node: 0,
            ..
        })
    ));
}

#[test]
fn edge_list_round_trip() {
    let graph = sample();
    let text = edge_list(&graph);
    assert!(text.starts_with("# wordnet-graph edge list, format 1\n"));
    assert!(text.contains("\nnodes 5\n00001740\tentity\n"));
    assert!(text.contains("\nedges 4\n1\t0\t@\n"));
    assert!(text.ends_with("\n4\t3\t@i\n"));
    assert_eq!(read(&text).expect("reads back"), graph);
    assert_eq!(
        read(&text.replace('\n', "\r\n")).expect("CRLF reads back"),
        graph
    );
    assert_eq!(
        edge_list(&read(&text).expect("reads back")),
        text,
        "stable text"
    );

    let empty = NounGraph::default();
    assert_eq!(read(&edge_list(&empty)).expect("empty graph"), empty);
}

#[test]
fn gzip_round_trip_is_deterministic() {
    let graph = sample();
    let bytes = graph.to_gzip_bytes().expect("compresses");
    assert_eq!(bytes, graph.to_gzip_bytes().expect("compresses"));
    assert_eq!(bytes[..2], [0x1f, 0x8b], "gzip magic");
    assert_eq!(bytes[4..8], [0, 0, 0, 0], "mtime 0");
    assert_eq!(
        NounGraph::from_gzip_bytes(&bytes).expect("decompresses"),
        graph
    );

    let dir = std::env::temp_dir().join(format!("wordnet-graph-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("sample.tsv.gz");
    graph.save(&path).expect("saves");
    assert_eq!(std::fs::read(&path).expect("reads"), bytes);
    assert_eq!(NounGraph::load(&path).expect("loads"), graph);
    std::fs::remove_dir_all(&dir).expect("cleans up");
}

#[test]
fn gzip_errors() {
    let bytes = sample().to_gzip_bytes().expect("compresses");
    for cut in [1, 10, bytes.len() / 2, bytes.len() - 4, bytes.len() - 1] {
        match NounGraph::from_gzip_bytes(&bytes[..cut]) {
            Err(DataError::Gzip { path: None, .. }) => {}
            other => panic!("truncated to {cut} bytes: expected a gzip error, got {other:?}"),
        }
    }
    let mut corrupt = bytes.clone();
    let crc = corrupt.len() - 8;
    corrupt[crc] ^= 0xff;
    assert!(matches!(
        NounGraph::from_gzip_bytes(&corrupt),
        Err(DataError::Gzip { .. })
    ));
    assert!(matches!(
        NounGraph::from_gzip_bytes(b"nodes 0\nedges 0\n"),
        Err(DataError::Gzip { .. })
    ));

    let missing = PathBuf::from("/nonexistent/wordnet-nouns.tsv.gz");
    let error = NounGraph::load(&missing).expect_err("no such file");
    assert!(matches!(error, DataError::Io { .. }));
    assert_eq!(error.path(), Some(missing.as_path()));
    assert!(
        error
            .to_string()
            .contains("/nonexistent/wordnet-nouns.tsv.gz"),
        "{error}"
    );
}

#[test]
fn edge_list_errors_name_line() {
    let text = edge_list(&sample());
    let lines: Vec<&str> = text.lines().collect();
    let nodes_line = 1 + lines
        .iter()
        .position(|l| l.starts_with("nodes "))
        .expect("nodes line");
    let edges_line = 1 + lines
        .iter()
        .position(|l| l.starts_with("edges "))
        .expect("edges line");
    // Replaces line `number` (1-based) of the sample's edge list.
    let with_line = |number: usize, replacement: &str| -> Result<NounGraph, DataError> {
        let mut changed = lines.clone();
        changed[number - 1] = replacement;
        read(&(changed.join("\n") + "\n"))
    };

    let error = with_line(edges_line + 2, "1\t5\t@").expect_err("node 5 does not exist");
    assert!(
        matches!(
            error,
            DataError::EdgeOutOfRange {
                line: Some(l),
                edge: 1,
                node: 5,
                nodes: 5
            } if l == edges_line + 2
        ),
        "{error:?}"
    );
    assert_eq!(error.line(), Some(edges_line + 2));
    assert!(
        error
            .to_string()
            .starts_with(&format!("line {}: ", edges_line + 2)),
        "{error}"
    );

    let error = with_line(edges_line + 1, "1\t99999999999\t@").expect_err("huge index");
    assert!(
        matches!(
            error,
            DataError::EdgeOutOfRange {
                node: 99999999999,
                ..
            }
        ),
        "{error:?}"
    );
    let error = with_line(edges_line + 1, "1\t0\tx").expect_err("bad kind");
    assert!(
        matches!(error, DataError::BadField { ref field, .. } if field == "kind"),
        "{error:?}"
    );
    let error = with_line(edges_line + 1, "1\t0").expect_err("no kind");
    assert!(
        matches!(error, DataError::MissingField { ref field, .. } if field == "kind"),
        "{error:?}"
    );
    let error = with_line(edges_line + 1, "1\t-0\t@").expect_err("signed index");
    assert!(
        matches!(error, DataError::BadField { ref field, .. } if field == "parent_index"),
        "{error:?}"
    );
    let error = with_line(nodes_line + 2, "00001740\tagain").expect_err("duplicate offset");
    assert!(
        matches!(error, DataError::DuplicateOffset { offset: 1740, .. }),
        "{error:?}"
    );
    let error = with_line(nodes_line + 1, "00001740\t").expect_err("empty label");
    assert!(
        matches!(error, DataError::InvalidLabel { node: 0, .. }),
        "{error:?}"
    );
    let error = with_line(nodes_line + 1, "00001740 entity").expect_err("no tab");
    assert!(
        matches!(error, DataError::MissingField { ref field, .. } if field == "label"),
        "{error:?}"
    );
    let error = with_line(1, "# wordnet-graph edge list, format 2").expect_err("future format");
    assert!(
        matches!(error, DataError::BadField { line: 1, .. }),
        "{error:?}"
    );
    let error = with_line(nodes_line, "nodes five").expect_err("bad count");
    assert!(matches!(error, DataError::BadField { .. }), "{error:?}");
    for error in [
        with_line(nodes_line, "nodes 6").expect_err("too few node lines"),
        with_line(nodes_line, "nodes 4").expect_err("too many node lines"),
    ] {
        assert!(
            matches!(
                error,
                DataError::BadField { .. } | DataError::CountMismatch { .. }
            ),
            "{error:?}"
        );
    }
    assert!(matches!(
        with_line(nodes_line, "nodes 6"),
        Err(DataError::CountMismatch {
            what: "node lines",
            expected: 6,
            found: 5,
            ..
        })
    ));
    assert!(matches!(
        with_line(edges_line, "edges 5"),
        Err(DataError::CountMismatch {
            what: "edge lines",
            expected: 5,
            found: 4,
            ..
        })
    ));
    assert!(matches!(
        with_line(edges_line, "edges 2"),
        Err(DataError::CountMismatch {
            what: "edge lines",
            expected: 2,
            found: 4,
            line: Some(l),
        }) if l == edges_line + 3
    ));

    // Truncation anywhere gives an error, never a smaller graph.
    for cut in 0..lines.len() {
        let truncated = lines[..cut].join("\n");
        assert!(read(&truncated).is_err(), "truncated to {cut} lines");
    }
    assert!(matches!(
        read(""),
        Err(DataError::MissingField { line: 1, .. })
    ));
    let graph =
        read(&text.replacen("\tentity\n", "\tcaf\u{e9}\n", 1)).expect("UTF-8 labels are fine");
    assert_eq!(graph.label(0), Some("caf\u{e9}"));
    let mut bytes = text.clone().into_bytes();
    let at = bytes.len() - 2;
    bytes[at] = 0xff;
    assert!(matches!(
        NounGraph::read_edge_list(bytes.as_slice()),
        Err(DataError::InvalidUtf8 { .. })
    ));
}

#[test]
fn corrupt_counts_do_not_allocate_or_panic() {
    let header = "# wordnet-graph edge list, format 1\n";
    assert!(matches!(
        read(&format!("{header}nodes 4000000000\n")),
        Err(DataError::CountMismatch { found: 0, .. })
    ));
    assert!(matches!(
        read(&format!("{header}nodes 5000000000\n")),
        Err(DataError::TooManyNodes { line: Some(2) })
    ));
    assert!(matches!(
        read(&format!("{header}nodes 99999999999999999999999\n")),
        Err(DataError::BadField { line: 2, .. })
    ));
    assert!(matches!(
        read(&format!("{header}nodes 0\nedges 18446744073709551615\n")),
        Err(DataError::CountMismatch { found: 0, .. })
    ));
}

#[test]
fn new_checks_invariants() {
    let (offsets, labels, edges) = sample().into_parts();
    let graph = NounGraph::new(offsets.clone(), labels.clone(), edges.clone()).expect("valid");
    assert_eq!(graph, sample());

    assert!(matches!(
        NounGraph::new(offsets.clone(), labels[..4].to_vec(), edges.clone()),
        Err(DataError::CountMismatch {
            expected: 5,
            found: 4,
            ..
        })
    ));
    let mut bad_edges = edges.clone();
    bad_edges.push(edge(0, 5, EdgeKind::Hypernym));
    assert!(matches!(
        NounGraph::new(offsets.clone(), labels.clone(), bad_edges),
        Err(DataError::EdgeOutOfRange {
            line: None,
            edge: 4,
            node: 5,
            nodes: 5
        })
    ));
    let mut bad_labels = labels.clone();
    bad_labels[2] = "two\nlines".into();
    assert!(matches!(
        NounGraph::new(offsets.clone(), bad_labels, edges.clone()),
        Err(DataError::InvalidLabel { node: 2, .. })
    ));
    let mut bad_offsets = offsets;
    bad_offsets[4] = bad_offsets[0];
    assert!(matches!(
        NounGraph::new(bad_offsets, labels, edges),
        Err(DataError::DuplicateOffset { offset: 1740, .. })
    ));
}

#[test]
fn adjacency_is_undirected_csr() {
    let adjacency = sample().adjacency();
    assert_eq!(adjacency.num_nodes(), 5);
    assert_eq!(adjacency.offsets(), [0, 2, 4, 5, 7, 8]);
    assert_eq!(adjacency.neighbours(0), [1, 2]);
    assert_eq!(adjacency.neighbours(1), [0, 3]);
    assert_eq!(adjacency.neighbours(2), [0]);
    assert_eq!(adjacency.neighbours(3), [1, 4]);
    assert_eq!(adjacency.neighbours(4), [3]);
    assert_eq!(adjacency.degree(3), 2);
    assert_eq!(adjacency.neighbour_list().len(), 8);
    let empty = NounGraph::default().adjacency();
    assert_eq!((empty.num_nodes(), empty.offsets()), (0, &[0][..]));
}

#[test]
fn wordnet_30_count_check() {
    match sample().check_wordnet_30_counts() {
        Err(DataError::CountMismatch {
            line: None,
            expected: WORDNET_30_NOUN_SYNSETS,
            found: 5,
            ..
        }) => {}
        other => panic!("expected a node count mismatch, got {other:?}"),
    }
    assert_eq!(
        EdgeKind::from_symbol("@i"),
        Some(EdgeKind::InstanceHypernym)
    );
    assert_eq!(EdgeKind::from_symbol("~"), None);
    for kind in EdgeKind::ALL {
        assert_eq!(EdgeKind::from_symbol(kind.symbol()), Some(kind));
    }
}

#[test]
fn shipped_file_is_wordnet_30() {
    let path = shipped_path();
    let graph = NounGraph::load(&path).unwrap_or_else(|error| panic!("{error}"));
    graph.check_wordnet_30_counts().expect("WordNet 3.0 counts");
    assert_eq!(graph.num_nodes(), WORDNET_30_NOUN_SYNSETS);
    assert_eq!(
        graph.num_edges(),
        WORDNET_30_HYPERNYM_POINTERS + WORDNET_30_INSTANCE_HYPERNYM_POINTERS
    );
    assert_eq!(
        (graph.label(0), graph.offset(0)),
        (Some("entity"), Some(1740))
    );

    // Every synset but `entity` has a hypernym, and `dog` is a `canine`.
    let mut has_parent = vec![false; graph.num_nodes()];
    for edge in graph.edges() {
        has_parent[edge.child as usize] = true;
    }
    let roots: Vec<usize> = (0..graph.num_nodes()).filter(|&n| !has_parent[n]).collect();
    assert_eq!(roots, [0]);
    let dog = graph.index_of("dog").expect("dog");
    let canine = graph.index_of("canine").expect("canine");
    assert!(graph.adjacency().neighbours(dog).contains(&canine));

    // The file is in the writer's canonical form (comments included), so regenerating it
    // from data.noun changes nothing as long as WordNet and the writer stay the same.
    let mut text = Vec::new();
    flate2::read::GzDecoder::new(std::fs::read(&path).expect("reads").as_slice())
        .read_to_end(&mut text)
        .expect("decompresses");
    let mut canonical = Vec::new();
    graph.write_edge_list(&mut canonical).expect("writes");
    assert!(
        text == canonical,
        "the shipped file is not in canonical form"
    );
}

/// Corrupts `input` at a few pseudo-random places (a fixed LCG, so failures reproduce):
/// overwrites, deletes or duplicates bytes.
fn mutate(input: &[u8], seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = |bound: usize| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as usize) % bound.max(1)
    };
    let mut out = input.to_vec();
    for _ in 0..1 + next(3) {
        let at = next(out.len());
        match next(4) {
            0 if !out.is_empty() => out[at] = b"\t\n 0@i#x\xff"[next(9)],
            1 if !out.is_empty() => {
                out.remove(at);
            }
            2 => out.truncate(at),
            _ => {
                let byte = out.get(at).copied().unwrap_or(b'\n');
                out.insert(at, byte);
            }
        }
    }
    out
}

#[test]
fn corrupted_inputs_never_panic() {
    let graph = sample();
    let text = edge_list(&graph);
    let gzip = graph.to_gzip_bytes().expect("compresses");
    for seed in 0..3000 {
        // Results vary (a mutation may be harmless); what matters is returning at all.
        let _ = NounGraph::from_data_noun(mutate(SAMPLE.as_bytes(), seed).as_slice());
        let _ = NounGraph::read_edge_list(mutate(text.as_bytes(), seed).as_slice());
        let _ = NounGraph::from_gzip_bytes(&mutate(&gzip, seed));
    }
}
