//! The README's `cargo run … --example NAME` commands name an example that Cargo finds
//! there: `cargo run` without `--package` looks only in the workspace's default members,
//! which a `default-members` list can leave the example out of (the 0.2 line's main command
//! once failed with "no example target named `wordnet` in default-run packages").

use std::path::Path;
use std::process::Command;

use crate::workspace_root;

/// Every `cargo run` line with `--example` in the README's `sh` blocks.
fn readme_example_commands(readme: &str) -> Vec<String> {
    let mut in_sh = false;
    let mut commands = Vec::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && trimmed == "```sh";
        } else if in_sh && trimmed.starts_with("cargo run") && trimmed.contains("--example") {
            let command = trimmed.split('#').next().unwrap_or(trimmed).trim();
            commands.push(command.to_string());
        }
    }
    commands
}

/// The value after `flag` in `command`.
fn flag_value<'a>(command: &'a str, flag: &str) -> Option<&'a str> {
    let mut words = command.split_whitespace();
    words.find(|word| *word == flag)?;
    words.next()
}

/// The examples of the default members of the workspace of `manifest`.
fn default_member_examples(manifest: &Path) -> Vec<String> {
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(manifest)
        .output()
        .expect("running cargo metadata");
    assert!(
        output.status.success(),
        "cargo metadata {}: {}",
        manifest.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let defaults = metadata["workspace_default_members"].as_array().unwrap();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|package| defaults.contains(&package["id"]))
        .flat_map(|package| package["targets"].as_array().unwrap().iter())
        .filter(|target| {
            let kinds = target["kind"].as_array().unwrap();
            kinds.iter().any(|kind| kind == "example")
        })
        .map(|target| target["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn every_readme_example_command_finds_its_example() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = readme_example_commands(&readme);
    assert!(
        commands.iter().any(|c| c.contains("burn-0.22/Cargo.toml")),
        "the README's main command (the 0.2 line's example) was not found: {commands:?}"
    );
    for command in &commands {
        let example = flag_value(command, "--example").unwrap();
        let manifest = flag_value(command, "--manifest-path").unwrap_or("Cargo.toml");
        let examples = default_member_examples(&root.join(manifest));
        assert!(
            examples.iter().any(|name| name == example),
            "`{command}`: no default member of {manifest} has example {example:?} (it has {examples:?})"
        );
    }
}

#[test]
fn commands_are_read_from_sh_blocks_only() {
    let readme = "```sh\ncargo run --example a   # note\ncargo xtask x\n```\n\
                  ```rust\ncargo run --example b\n```\ncargo run --example c\n";
    assert_eq!(readme_example_commands(readme), ["cargo run --example a"]);
    assert_eq!(flag_value("cargo run --example a", "--example"), Some("a"));
    assert_eq!(flag_value("cargo run", "--manifest-path"), None);
}
