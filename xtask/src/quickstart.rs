//! `cargo xtask quickstart [--wgpu] [--dir DIR]`: the 0.2 line's README quick start, run the
//! way a new user runs it.
//!
//! It writes a fresh Cargo project whose manifest is the README's `[dependencies]` block as
//! printed (`burn = "0.22.1"` with Burn's default features, `burn-sparse-adam = "0.2"`) and
//! whose `main` is the README's first Rust block as printed, then `cargo run`s it with a
//! lock file of its own (the newest versions the requirements allow, as `cargo add` gives).
//! The one addition is a `[patch.crates-io]` section pointing `burn-sparse-adam` and
//! `sparse-adam-core` at this repository, which stands for the published crates. `--wgpu`
//! takes the README's wgpu dependency lines instead, Burn's default `wgpu` features
//! (fusion on) included.
//!
//! The project lives in `target/quickstart/` (or `--dir`) with its own `target/`, so the first
//! run builds Burn from the registry the way a user's first build does (minutes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::workspace_root;

/// The README whose quick start is run.
const README: &str = "burn-0.22/burn-sparse-adam/README.md";

pub fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let mut wgpu = false;
    let mut dir = root.join("target").join("quickstart");
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--wgpu" => wgpu = true,
            "--dir" => {
                dir = PathBuf::from(args.next().ok_or("--dir needs a directory")?);
            }
            other => return Err(format!("quickstart: unknown argument {other:?}")),
        }
    }
    let readme_path = root.join(README);
    let readme = fs::read_to_string(&readme_path)
        .map_err(|err| format!("reading {}: {err}", readme_path.display()))?;
    let quick = QuickStart::from_readme(&readme)?;
    let dependencies = if wgpu {
        &quick.wgpu_dependencies
    } else {
        &quick.dependencies
    };
    let project = dir.join(if wgpu { "wgpu" } else { "default" });
    write_project(&project, &root, dependencies, &quick.main)?;
    println!(
        "quickstart: {} (README dependencies:\n{}\n)",
        project.display(),
        dependencies.trim_end()
    );
    let status = Command::new(env!("CARGO"))
        .args(["run", "--manifest-path"])
        .arg(project.join("Cargo.toml"))
        // The user's project is not part of this repository's workspaces, nor of its target.
        .env_remove("CARGO_TARGET_DIR")
        .status()
        .map_err(|err| format!("running cargo: {err}"))?;
    if status.success() {
        println!("quickstart: the README's quick start ran unchanged");
        Ok(())
    } else {
        Err(format!(
            "the README's quick start failed: cargo run {status}"
        ))
    }
}

/// The pieces of the README's "Quick start" section, as printed.
#[derive(Debug, PartialEq)]
struct QuickStart {
    /// The first TOML block: the `[dependencies]` a new project adds.
    dependencies: String,
    /// The first Rust block: what the project's `main` runs.
    main: String,
    /// The second TOML block (the lines that replace the two dependencies for wgpu), under
    /// the first block's `[dependencies]` header.
    wgpu_dependencies: String,
}

impl QuickStart {
    fn from_readme(readme: &str) -> Result<Self, String> {
        let start = readme
            .find("## Quick start")
            .ok_or("the README has no \"## Quick start\" section")?;
        let section = &readme[start..];
        let section = match section[3..].find("\n## ") {
            Some(end) => &section[..end + 3],
            None => section,
        };
        let toml = code_blocks(section, "toml");
        let rust = code_blocks(section, "rust");
        let (Some(dependencies), Some(wgpu_lines), Some(main)) =
            (toml.first(), toml.get(1), rust.first())
        else {
            return Err(format!(
                "the quick start should hold two toml blocks and a rust block; found {} and {}",
                toml.len(),
                rust.len()
            ));
        };
        if !dependencies.trim_start().starts_with("[dependencies]") {
            return Err("the quick start's first toml block is not a [dependencies] table".into());
        }
        Ok(Self {
            dependencies: dependencies.clone(),
            main: main.clone(),
            wgpu_dependencies: format!("[dependencies]\n{wgpu_lines}"),
        })
    }
}

/// The bodies of the fenced blocks of `lang` in `text` (a fence's info string may add
/// attributes after a comma, as rustdoc's do), with rustdoc's hidden-line marks removed.
fn code_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        match current.as_mut() {
            None => {
                let info = trimmed.strip_prefix("```");
                if info.and_then(|info| info.split(',').next()).map(str::trim) == Some(lang) {
                    current = Some(String::new());
                }
            }
            Some(body) => {
                if trimmed.starts_with("```") {
                    blocks.extend(current.take());
                } else {
                    let line = if lang == "rust" {
                        hidden_line(line)
                    } else {
                        line
                    };
                    body.push_str(line);
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// A rustdoc hidden line (`# code`, or a lone `#`) is compiled: keep its code.
fn hidden_line(line: &str) -> &str {
    match line.trim_start() {
        "#" => "",
        trimmed => trimmed.strip_prefix("# ").unwrap_or(line),
    }
}

fn write_project(
    project: &Path,
    root: &Path,
    dependencies: &str,
    main: &str,
) -> Result<(), String> {
    let src = project.join("src");
    fs::create_dir_all(&src).map_err(|err| format!("creating {}: {err}", src.display()))?;
    let manifest = format!(
        "[package]\nname = \"quickstart\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
         # A project of its own, not a member of the repository's workspace.\n[workspace]\n\n\
         {dependencies}\n\
         # Stands for the published crates.\n[patch.crates-io]\n\
         burn-sparse-adam = {{ path = {:?} }}\nsparse-adam-core = {{ path = {:?} }}\n",
        root.join("burn-0.22/burn-sparse-adam").display().to_string(),
        root.join("crates/sparse-adam-core").display().to_string(),
    );
    let body: String = main
        .lines()
        .map(|line| format!("    {line}\n").replace("    \n", "\n"))
        .collect();
    let main_rs = format!("fn main() {{\n{body}}}\n");
    for (path, text) in [
        (project.join("Cargo.toml"), manifest),
        (src.join("main.rs"), main_rs),
    ] {
        fs::write(&path, text).map_err(|err| format!("writing {}: {err}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readme_quick_start_is_found_as_printed() {
        let readme = fs::read_to_string(workspace_root().join(README)).unwrap();
        let quick = QuickStart::from_readme(&readme).unwrap();
        assert!(
            quick.dependencies.contains("burn = \"0.22.1\""),
            "{quick:?}"
        );
        assert!(
            quick.dependencies.contains("burn-sparse-adam = \"0.2\""),
            "{quick:?}"
        );
        assert!(quick.main.contains("collect_grads"), "{quick:?}");
        assert!(
            quick.wgpu_dependencies.contains("features = [\"wgpu\"]"),
            "{quick:?}"
        );
    }

    #[test]
    fn blocks_keep_hidden_lines_and_skip_other_languages() {
        let text = "## Quick start\n```toml\n[dependencies]\na = \"1\"\n```\n\
                    ```text\nnot code\n```\n```rust,no_run\n# use x;\nlet a = 1;\n#\n```\n\
                    ```toml\nb = \"2\"\n```\n## Next\n```rust\nlater\n```\n";
        let quick = QuickStart::from_readme(text).unwrap();
        assert_eq!(quick.dependencies, "[dependencies]\na = \"1\"\n");
        assert_eq!(quick.main, "use x;\nlet a = 1;\n\n");
        assert_eq!(quick.wgpu_dependencies, "[dependencies]\nb = \"2\"\n");
    }

    #[test]
    fn a_readme_without_the_blocks_is_refused() {
        let err =
            QuickStart::from_readme("## Quick start\n```toml\n[dependencies]\n```\n").unwrap_err();
        assert!(err.contains("two toml blocks and a rust block"), "{err}");
        assert!(QuickStart::from_readme("# nothing").is_err());
    }
}
