//! The bench binaries' `main`: the command line, one fresh process per measurement (the
//! binary re-executes itself with `--single IMPL ROWS`, hidden, so that each measurement's
//! peak resident set is its own), PyTorch beside it (`--torch`) and the report.
//!
//! A Burn line's binary implements [`Line`] (its backends and its measurement) and calls
//! [`main`].

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use crate::record::{Record, TorchRecord};
use crate::workload::{self, Impl, Workload, MALLOC_KEEP};
use crate::{report, targets, torch};

/// A Burn line's side of the benchmark: its backends and one measurement in this process.
pub trait Line {
    /// The line's backends (its test suite's).
    type Backend: Copy + PartialEq;

    /// The binary's name, in messages.
    const PROGRAM: &'static str;
    /// What the report's title calls the library measured.
    const TITLE: &'static str;
    /// What `cargo xtask bench` needs besides the options to run this line (`""` for the
    /// default line, ` --line 0.2`).
    const XTASK_ARGS: &'static str;
    /// How `cargo run --release` finds the binary (`-p sparse-adam-bench`).
    const CARGO_ARGS: &'static str;
    /// The line's CPU backend: the default, where phases are always timed.
    const CPU: Self::Backend;

    /// Parses a backend name (`--backend`).
    fn parse_backend(name: &str) -> Result<Self::Backend, String>;
    /// The test suite's selection (`BURN_SPARSE_ADAM_BACKEND`), the default.
    fn selected_backend() -> Self::Backend;
    /// The backend's name.
    fn backend_name(backend: Self::Backend) -> &'static str;
    /// Whether the backend can run here, or why not.
    fn probe(backend: Self::Backend) -> Result<(), String>;
    /// How SparseAdam's row update runs on the backend, for the report.
    fn row_update(backend: Self::Backend) -> &'static str;
    /// Runs one measurement in this process.
    fn run_single(imp: Impl, work: &Workload<Self::Backend>) -> Record;
    /// Whether the line has `imp` on `backend` (compact moments are not on every line, nor
    /// on every backend).
    fn supports(imp: Impl, backend: Self::Backend) -> bool {
        let _ = (imp, backend);
        true
    }
}

/// The usage text of `L`'s binary.
pub fn usage<L: Line>() -> String {
    let cpu = L::backend_name(L::CPU);
    format!(
        "usage: cargo xtask bench{xtask} [OPTIONS]
   (or: cargo run --release {cargo} -- [OPTIONS])

An embedding table of V rows, `--batch` Zipf-distributed lookups a step (bench_torch.py's
sampler), loss sum(lookup * upstream), backward, optimizer step (lr 1e-3). For each V and
implementation: the median training step, the median optimizer step and the peak resident
set, each (V, implementation) in a process of its own.

options:
  --rows LIST        table sizes V (default 10000,100000,1000000; 1e6 is accepted)
  --dim N            row width d (default 64)
  --batch N          lookups per step (default 4096)
  --steps N          timed steps; the medians are over these (default 30, at least 20)
  --warmup N         untimed steps before them (default 3)
  --impls LIST       sparse (SparseEmbedding + SparseAdam), dense (Embedding + SparseAdam),
                     adam (Embedding + Burn's Adam, epsilon 1e-8); default sparse,dense,adam;
                     also sparse-bf16, sparse-f16 (the 0.2 line): sparse with its moments
                     stored in 16 bits (SparseAdamConfig's moment_dtype); sparse-device
                     (the 0.2 line): sparse with check_indices off (on wgpu the lookups
                     are planned on the device, nothing read back)
  --backend NAME     {cpu} or wgpu (default: the test suite's selection,
                     BURN_SPARSE_ADAM_BACKEND, {cpu} when unset)
  --gpu              wgpu's adapter is a real GPU: its timings count (without it, wgpu
                     results are marked functional_only: a software adapter's timings
                     mean nothing)
  --phases           on wgpu, also time the phases of a step (lookup, loss, backward,
                     gradient collection), synchronizing after each; always done on {cpu}
  --torch            also run crates/bench/bench_torch.py (needs python3 with torch) and
                     compare side by side
  --torch-threads N  OMP_NUM_THREADS for PyTorch (default: PyTorch's own, one per core)
  --python PATH      the Python interpreter for --torch (default python3)
  --malloc-keep      every measured process, ours and PyTorch's, runs with glibc malloc
                     told to keep freed blocks (GLIBC_TUNABLES, see BENCHMARKS.md) instead
                     of returning each batch-sized block to the kernel and faulting it in
                     again next step
  --json-only        print only the JSON lines (progress still goes to stderr)
  -h, --help         this text",
        xtask = L::XTASK_ARGS,
        cargo = L::CARGO_ARGS,
    )
}

/// The command line.
pub struct Options<B> {
    pub rows: Vec<usize>,
    pub dim: usize,
    pub batch: usize,
    pub steps: usize,
    pub warmup: usize,
    pub impls: Vec<Impl>,
    pub backend: B,
    pub gpu: bool,
    pub phases: bool,
    pub torch: bool,
    pub torch_threads: Option<usize>,
    pub python: String,
    pub json_only: bool,
    /// `--malloc-keep`: the children run with [`MALLOC_KEEP`].
    pub malloc_keep: bool,
    /// Hidden: run one measurement in this process and print its JSON line.
    pub single: Option<(Impl, usize)>,
}

fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    let parsed = value.parse::<usize>().ok().or_else(|| {
        // `1e6`: a float that is a whole number.
        let x = value.parse::<f64>().ok()?;
        (x.fract() == 0.0 && (0.0..1e15).contains(&x)).then_some(x as usize)
    });
    parsed.ok_or_else(|| format!("{flag}: {value:?} is not a count"))
}

/// Parses the command line of `L`'s binary (without the program name).
pub fn parse_args<L: Line>(args: &[String]) -> Result<Options<L::Backend>, String> {
    let mut o = Options {
        rows: vec![10_000, 100_000, 1_000_000],
        dim: 64,
        batch: 4096,
        steps: 30,
        warmup: 3,
        impls: Impl::ALL.to_vec(),
        // Replaced below by `--backend`, or else by the test suite's selection.
        backend: L::CPU,
        gpu: false,
        phases: false,
        torch: false,
        torch_threads: None,
        python: "python3".into(),
        json_only: false,
        malloc_keep: false,
        single: None,
    };
    let mut backend = None;
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "--rows" => {
                o.rows = value()?
                    .split(',')
                    .map(|v| parse_count(flag, v.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--dim" => o.dim = parse_count(flag, value()?)?,
            "--batch" => o.batch = parse_count(flag, value()?)?,
            "--steps" => o.steps = parse_count(flag, value()?)?,
            "--warmup" => o.warmup = parse_count(flag, value()?)?,
            "--impls" => {
                o.impls = value()?
                    .split(',')
                    .map(|v| Impl::parse(v.trim()))
                    .collect::<Result<_, _>>()?
            }
            "--backend" => backend = Some(L::parse_backend(value()?)?),
            "--gpu" => o.gpu = true,
            "--phases" => o.phases = true,
            "--torch" => o.torch = true,
            "--torch-threads" => o.torch_threads = Some(parse_count(flag, value()?)?),
            "--python" => o.python = value()?.to_string(),
            "--json-only" => o.json_only = true,
            "--malloc-keep" => o.malloc_keep = true,
            "--single" => {
                let imp = Impl::parse(value()?)?;
                let rows = parse_count(flag, value()?)?;
                o.single = Some((imp, rows));
            }
            other => return Err(format!("unknown option {other:?}")),
        }
    }
    o.backend = backend.unwrap_or_else(L::selected_backend);
    if o.rows.is_empty() || o.rows.contains(&0) {
        return Err("--rows: every table needs at least one row".into());
    }
    if o.dim == 0 || o.batch == 0 || o.steps == 0 {
        return Err("--dim, --batch and --steps must be at least 1".into());
    }
    if o.impls.is_empty() {
        return Err("--impls: nothing to measure".into());
    }
    if let Some(imp) = o
        .impls
        .iter()
        .chain(o.single.as_ref().map(|(imp, _)| imp))
        .find(|i| !L::supports(**i, o.backend))
    {
        return Err(format!(
            "--impls {}: not on this line on {} ({})",
            imp.short(),
            L::backend_name(o.backend),
            L::TITLE
        ));
    }
    Ok(o)
}

impl<B: Copy + PartialEq> Options<B> {
    /// The workload of the table of `rows` rows; `cpu` is the line's CPU backend.
    pub fn workload(&self, rows: usize, cpu: B) -> Workload<B> {
        Workload {
            rows,
            dim: self.dim,
            batch: self.batch,
            steps: self.steps,
            warmup: self.warmup,
            backend: self.backend,
            gpu: self.gpu,
            // Always on the CPU backend, where synchronizing costs nothing; on wgpu with
            // `--phases` only.
            phases: self.phases || self.backend == cpu,
        }
    }
}

/// Runs one measurement in a fresh process (this binary, `--single`), returning its record.
fn run_child<L: Line>(o: &Options<L::Backend>, imp: Impl, rows: usize) -> Result<Record, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--single", imp.short(), &rows.to_string()])
        .args(["--dim", &o.dim.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--steps", &o.steps.to_string()])
        .args(["--warmup", &o.warmup.to_string()])
        .args(["--backend", L::backend_name(o.backend)]);
    if o.gpu {
        cmd.arg("--gpu");
    }
    if o.phases {
        cmd.arg("--phases");
    }
    if o.malloc_keep {
        cmd.env("GLIBC_TUNABLES", MALLOC_KEEP);
    }
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cannot start a measurement: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{} at {rows} rows failed ({})",
            imp.name(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rfind(|l| l.starts_with('{'))
        .ok_or_else(|| format!("{} at {rows} rows printed no result", imp.name()))?;
    Record::from_json(line)
}

fn print_line(line: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// The bench binary of `L`: reads the command line, measures, reports.
pub fn main<L: Line>() -> ExitCode {
    let program = L::PROGRAM;
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{}", usage::<L>());
        return ExitCode::SUCCESS;
    }
    let o = match parse_args::<L>(&args) {
        Ok(o) => o,
        Err(err) => {
            eprintln!("{program}: {err}\n\n{}", usage::<L>());
            return ExitCode::from(2);
        }
    };

    if let Some((imp, rows)) = o.single {
        let record = L::run_single(imp, &o.workload(rows, L::CPU));
        print_line(&record.to_json());
        return ExitCode::SUCCESS;
    }

    if o.steps < 20 {
        eprintln!(
            "{program}: note: --steps {} < 20, fewer steps than issue 4 asks for",
            o.steps
        );
    }
    let backend = L::backend_name(o.backend);
    if let Err(why) = L::probe(o.backend) {
        eprintln!("{program}: {backend} cannot run here: {why}");
        return ExitCode::FAILURE;
    }
    if o.backend != L::CPU && !o.gpu {
        eprintln!(
            "{program}: wgpu results are marked functional_only (the adapter is not \
             identified; pass --gpu when it is a real GPU)"
        );
    }
    let load_start = workload::load_average();

    let mut records = Vec::new();
    let mut failures = 0;
    for &rows in &o.rows {
        for &imp in &o.impls {
            eprintln!(
                "{program}: {} on {backend}, {rows} rows x {} ...",
                imp.name(),
                o.dim
            );
            match run_child::<L>(&o, imp, rows) {
                Ok(record) => {
                    print_line(&record.to_json());
                    records.push(record);
                }
                Err(err) => {
                    eprintln!("{program}: {err}");
                    failures += 1;
                }
            }
        }
    }

    let mut torch_records: Vec<TorchRecord> = Vec::new();
    let mut torch_note = None;
    if o.torch {
        let runner = torch::Torch {
            python: o.python.clone(),
            threads: o.torch_threads,
            glibc_tunables: o.malloc_keep.then_some(MALLOC_KEEP),
        };
        match runner.probe() {
            Ok(version) => {
                for &rows in &o.rows {
                    for mode in ["sparse", "dense"] {
                        eprintln!("{program}: PyTorch {version} {mode}, {rows} rows ...");
                        match runner.run(rows, o.dim, o.batch, o.steps, mode) {
                            Ok(lines) => {
                                for t in lines {
                                    print_line(&t.to_json());
                                    torch_records.push(t);
                                }
                            }
                            Err(err) => {
                                eprintln!("{program}: PyTorch: {err}");
                                failures += 1;
                            }
                        }
                    }
                }
            }
            Err(why) => {
                let note = format!("PyTorch not run: {why}");
                eprintln!("{program}: {note}");
                torch_note = Some(note);
            }
        }
    }
    let load_end = workload::load_average();

    if !o.json_only {
        println!();
        println!(
            "{} benchmark: backend {backend}, d = {}, batch = {}, {} timed steps after {} warm-up, \
             medians; load average {} at start, {} at end ({} cores)",
            L::TITLE,
            o.dim,
            o.batch,
            o.steps,
            o.warmup,
            load_start.map_or("?".into(), |l| format!("{l:.2}")),
            load_end.map_or("?".into(), |l| format!("{l:.2}")),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        );
        println!(
            "malloc: {}",
            if o.malloc_keep {
                format!("GLIBC_TUNABLES={MALLOC_KEEP} (--malloc-keep; ours and PyTorch's)")
            } else if let Some(t) = workload::glibc_tunables() {
                format!("GLIBC_TUNABLES={t} (inherited)")
            } else {
                "glibc's defaults".into()
            }
        );
        println!("SparseAdam row update: {}", L::row_update(o.backend));
        if let Some(line) = report::threads_line(&records) {
            println!("{line}");
        }
        println!();
        print!("{}", report::results_table(&records));
        let phases = report::phases_table(&records);
        if !phases.is_empty() {
            println!();
            print!("{phases}");
        }
        let floor = report::floor_table(&records);
        if !floor.is_empty() {
            println!();
            print!("{floor}");
        }
        if !torch_records.is_empty() {
            println!();
            print!("{}", report::torch_table(&records, &torch_records));
        }
        if let Some(note) = &torch_note {
            println!();
            println!("{note}");
        }
        println!();
        println!("targets (issues 4 and 15):");
        print!(
            "{}",
            report::targets_text(&targets::targets(&records, &torch_records))
        );
    }
    if failures > 0 {
        eprintln!("{program}: {failures} measurement(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line without Burn: two backends, a measurement that records nothing measured.
    struct Fake;

    impl Line for Fake {
        type Backend = bool;
        const PROGRAM: &'static str = "fake-bench";
        const TITLE: &'static str = "fake";
        const XTASK_ARGS: &'static str = " --line fake";
        const CARGO_ARGS: &'static str = "-p fake-bench";
        const CPU: bool = false;

        fn parse_backend(name: &str) -> Result<bool, String> {
            match name {
                "cpu" => Ok(false),
                "wgpu" => Ok(true),
                _ => Err(format!("unknown backend {name:?}")),
            }
        }
        fn selected_backend() -> bool {
            false
        }
        fn backend_name(backend: bool) -> &'static str {
            if backend {
                "wgpu"
            } else {
                "cpu"
            }
        }
        fn probe(_: bool) -> Result<(), String> {
            Ok(())
        }
        fn row_update(_: bool) -> &'static str {
            "none"
        }
        fn run_single(_: Impl, _: &Workload<bool>) -> Record {
            unreachable!("not measured in tests")
        }
        fn supports(imp: Impl, _: bool) -> bool {
            imp != Impl::SparseF16
        }
    }

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn parses_the_command_line() {
        let o = parse_args::<Fake>(&args(
            "--rows 10,1e6 --dim 8 --impls sparse,burn-adam --backend wgpu --single dense 1e3",
        ))
        .unwrap();
        assert_eq!(o.rows, [10, 1_000_000]);
        assert_eq!((o.dim, o.batch, o.steps, o.warmup), (8, 4096, 30, 3));
        assert_eq!(o.impls, [Impl::Sparse, Impl::Adam]);
        assert!(o.backend);
        assert_eq!(o.single, Some((Impl::Dense, 1000)));
        // Phases: always on the CPU backend, with `--phases` elsewhere.
        assert!(!o.workload(10, Fake::CPU).phases);
        let o = parse_args::<Fake>(&[]).unwrap();
        assert_eq!(o.impls, Impl::ALL);
        assert!(o.workload(10, Fake::CPU).phases);
        // Compact moments: asked for by name; a line without them refuses them.
        let o = parse_args::<Fake>(&args("--impls sparse,sparse-bf16")).unwrap();
        assert_eq!(o.impls, [Impl::Sparse, Impl::SparseBf16]);
        for refused in ["--impls sparse-f16", "--single burn-sparse-f16 10"] {
            let Err(err) = parse_args::<Fake>(&args(refused)) else {
                panic!("{refused} accepted");
            };
            assert!(
                err.contains("sparse-f16") && err.contains("not on this line"),
                "{err}"
            );
        }
    }

    #[test]
    fn rejects_bad_command_lines() {
        for bad in [
            "--rows 0",
            "--rows 1.5",
            "--dim 0",
            "--impls",
            "--impls torch",
            "--backend tpu",
            "--frobnicate",
        ] {
            assert!(parse_args::<Fake>(&args(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn usage_names_the_line() {
        let text = usage::<Fake>();
        assert!(text.starts_with("usage: cargo xtask bench --line fake [OPTIONS]\n"));
        assert!(text.contains("(or: cargo run --release -p fake-bench -- [OPTIONS])"));
        assert!(text.contains("--backend NAME     cpu or wgpu"));
        assert!(text.contains("always done on cpu\n"));
    }
}
