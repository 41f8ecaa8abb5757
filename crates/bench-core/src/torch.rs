//! The PyTorch side: runs `bench_torch.py` (unchanged) with the same sizes and parses its
//! JSON lines.
//!
//! Each (rows, mode) runs in a Python process of its own, through a three-line wrapper that
//! runs the script with `runpy` and then prints the process's peak resident set
//! (`ru_maxrss`), so PyTorch's memory is measured per configuration as ours is.

use std::path::PathBuf;
use std::process::Command;

use crate::record::TorchRecord;

/// The script, `crates/bench/bench_torch.py` (next to the 0.1 line's bench, which both lines'
/// benches run).
pub fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/bench_torch.py")
}

/// Runs the script it is given as `sys.argv[1]`, then prints the peak RSS in KiB.
const WRAPPER: &str = "import resource, runpy, sys
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name='__main__')
print('PEAK_RSS_KIB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)";

/// How to run Python.
pub struct Torch {
    /// The interpreter (`--python`, default `python3`).
    pub python: String,
    /// `OMP_NUM_THREADS` for the script (`--torch-threads`), or PyTorch's default.
    pub threads: Option<usize>,
    /// `GLIBC_TUNABLES` for the script's process (`--malloc-keep`).
    pub glibc_tunables: Option<&'static str>,
}

impl Torch {
    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.python);
        if let Some(n) = self.threads {
            cmd.env("OMP_NUM_THREADS", n.to_string())
                .env("MKL_NUM_THREADS", n.to_string());
        }
        if let Some(t) = self.glibc_tunables {
            cmd.env("GLIBC_TUNABLES", t);
        }
        cmd
    }

    /// PyTorch's version, or why it cannot run and how to get it.
    pub fn probe(&self) -> Result<String, String> {
        let hint = "install it with `pip install torch numpy` (the CPU wheels suffice: \
                    `pip install torch numpy --index-url https://download.pytorch.org/whl/cpu`)";
        if !script_path().is_file() {
            return Err(format!("{} is missing", script_path().display()));
        }
        let out = self
            .command()
            .args(["-c", "import torch; print(torch.__version__)"])
            .output()
            .map_err(|e| format!("cannot run {}: {e}; {hint}", self.python))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!("{} cannot import torch; {hint}", self.python))
        }
    }

    /// Runs the script for one table size and one mode (`sparse` or `dense`).
    pub fn run(
        &self,
        rows: usize,
        dim: usize,
        batch: usize,
        steps: usize,
        mode: &str,
    ) -> Result<Vec<TorchRecord>, String> {
        let script = script_path();
        let out = self
            .command()
            .arg("-c")
            .arg(WRAPPER)
            .arg(&script)
            .args(["--rows", &rows.to_string()])
            .args(["--dim", &dim.to_string()])
            .args(["--batch", &batch.to_string()])
            .args(["--steps", &steps.to_string()])
            .args(["--modes", mode])
            .output()
            .map_err(|e| format!("cannot run {}: {e}", self.python))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed ({}): {}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        let peak = stdout.lines().find_map(|l| {
            l.strip_prefix("PEAK_RSS_KIB ")?
                .trim()
                .parse::<f64>()
                .ok()
                .map(|kib| kib / 1024.0)
        });
        stdout
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| TorchRecord::from_json(l, peak))
            .collect()
    }
}
