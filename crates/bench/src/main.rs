//! `cargo xtask bench`: issue 4's benchmark (see BENCHMARKS.md at the repository root).
//!
//! For each table size and implementation it re-executes itself in a fresh process
//! (`--single IMPL ROWS`, hidden), so that each measurement's peak resident set is its own,
//! prints that process's JSON line, and at the end a results table, the comparison with
//! PyTorch (`--torch`) and issue 4's targets.

mod measure;
mod record;
mod report;
mod targets;
mod torch;

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};

use burn_sparse_adam::testing::TestBackend;
use measure::{Impl, Workload};
use record::{Record, TorchRecord};

const USAGE: &str = "usage: cargo xtask bench [OPTIONS]
   (or: cargo run --release -p sparse-adam-bench -- [OPTIONS])

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
                     adam (Embedding + Burn's Adam, epsilon 1e-8); default sparse,dense,adam
  --backend NAME     ndarray or wgpu (default: the test suite's selection,
                     BURN_SPARSE_ADAM_BACKEND, ndarray when unset)
  --gpu              wgpu's adapter is a real GPU: its timings count (without it, wgpu
                     results are marked functional_only: a software adapter's timings
                     mean nothing)
  --phases           on wgpu, also time the phases of a step (lookup, loss, backward,
                     gradient collection), synchronizing after each; always done on ndarray
  --torch            also run crates/bench/bench_torch.py (needs python3 with torch) and
                     compare side by side
  --torch-threads N  OMP_NUM_THREADS for PyTorch (default: PyTorch's own, one per core)
  --python PATH      the Python interpreter for --torch (default python3)
  --malloc-keep      every measured process, ours and PyTorch's, runs with glibc malloc
                     told to keep freed blocks (GLIBC_TUNABLES, see BENCHMARKS.md) instead
                     of returning each batch-sized block to the kernel and faulting it in
                     again next step
  --json-only        print only the JSON lines (progress still goes to stderr)
  -h, --help         this text";

/// The command line.
struct Options {
    rows: Vec<usize>,
    dim: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    impls: Vec<Impl>,
    backend: TestBackend,
    gpu: bool,
    phases: bool,
    torch: bool,
    torch_threads: Option<usize>,
    python: String,
    json_only: bool,
    /// `--malloc-keep`: the children run with [`measure::MALLOC_KEEP`].
    malloc_keep: bool,
    /// Hidden: run one measurement in this process and print its JSON line.
    single: Option<(Impl, usize)>,
}

fn parse_count(flag: &str, value: &str) -> Result<usize, String> {
    let parsed = value.parse::<usize>().ok().or_else(|| {
        // `1e6`: a float that is a whole number.
        let x = value.parse::<f64>().ok()?;
        (x.fract() == 0.0 && (0.0..1e15).contains(&x)).then_some(x as usize)
    });
    parsed.ok_or_else(|| format!("{flag}: {value:?} is not a count"))
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        rows: vec![10_000, 100_000, 1_000_000],
        dim: 64,
        batch: 4096,
        steps: 30,
        warmup: 3,
        impls: Impl::ALL.to_vec(),
        // Replaced below by `--backend`, or else by the test suite's selection.
        backend: TestBackend::NdArray,
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
            "--backend" => backend = Some(TestBackend::parse(value()?)?),
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
    o.backend = backend.unwrap_or_else(TestBackend::selected);
    if o.rows.is_empty() || o.rows.contains(&0) {
        return Err("--rows: every table needs at least one row".into());
    }
    if o.dim == 0 || o.batch == 0 || o.steps == 0 {
        return Err("--dim, --batch and --steps must be at least 1".into());
    }
    if o.impls.is_empty() {
        return Err("--impls: nothing to measure".into());
    }
    Ok(o)
}

impl Options {
    fn workload(&self, rows: usize) -> Workload {
        Workload {
            rows,
            dim: self.dim,
            batch: self.batch,
            steps: self.steps,
            warmup: self.warmup,
            backend: self.backend,
            gpu: self.gpu,
            phases: self.phases(),
        }
    }

    /// Whether the phases of a step are timed: always on ndarray, where synchronizing costs
    /// nothing; on wgpu with `--phases` only.
    fn phases(&self) -> bool {
        self.phases || self.backend == TestBackend::NdArray
    }
}

/// Runs one measurement in a fresh process (this binary, `--single`), returning its record.
fn run_child(o: &Options, imp: Impl, rows: usize) -> Result<Record, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this binary: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.args(["--single", imp.short(), &rows.to_string()])
        .args(["--dim", &o.dim.to_string()])
        .args(["--batch", &o.batch.to_string()])
        .args(["--steps", &o.steps.to_string()])
        .args(["--warmup", &o.warmup.to_string()])
        .args(["--backend", o.backend.name()]);
    if o.gpu {
        cmd.arg("--gpu");
    }
    if o.phases {
        cmd.arg("--phases");
    }
    if o.malloc_keep {
        cmd.env("GLIBC_TUNABLES", measure::MALLOC_KEEP);
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

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let o = match parse_args(&args) {
        Ok(o) => o,
        Err(err) => {
            eprintln!("sparse-adam-bench: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };

    if let Some((imp, rows)) = o.single {
        let record = measure::run_single(imp, &o.workload(rows));
        print_line(&record.to_json());
        return ExitCode::SUCCESS;
    }

    if o.steps < 20 {
        eprintln!(
            "sparse-adam-bench: note: --steps {} < 20, fewer steps than issue 4 asks for",
            o.steps
        );
    }
    if let Err(why) = o.backend.probe() {
        eprintln!(
            "sparse-adam-bench: {} cannot run here: {why}",
            o.backend.name()
        );
        return ExitCode::FAILURE;
    }
    if o.backend == TestBackend::Wgpu && !o.gpu {
        eprintln!(
            "sparse-adam-bench: wgpu results are marked functional_only (the adapter is not \
             identified; pass --gpu when it is a real GPU)"
        );
    }
    let load_start = measure::load_average();

    let mut records = Vec::new();
    let mut failures = 0;
    for &rows in &o.rows {
        for &imp in &o.impls {
            eprintln!(
                "sparse-adam-bench: {} on {}, {rows} rows x {} ...",
                imp.name(),
                o.backend.name(),
                o.dim
            );
            match run_child(&o, imp, rows) {
                Ok(record) => {
                    print_line(&record.to_json());
                    records.push(record);
                }
                Err(err) => {
                    eprintln!("sparse-adam-bench: {err}");
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
            glibc_tunables: o.malloc_keep.then_some(measure::MALLOC_KEEP),
        };
        match runner.probe() {
            Ok(version) => {
                for &rows in &o.rows {
                    for mode in ["sparse", "dense"] {
                        eprintln!("sparse-adam-bench: PyTorch {version} {mode}, {rows} rows ...");
                        match runner.run(rows, o.dim, o.batch, o.steps, mode) {
                            Ok(lines) => {
                                for t in lines {
                                    print_line(&t.to_json());
                                    torch_records.push(t);
                                }
                            }
                            Err(err) => {
                                eprintln!("sparse-adam-bench: PyTorch: {err}");
                                failures += 1;
                            }
                        }
                    }
                }
            }
            Err(why) => {
                let note = format!("PyTorch not run: {why}");
                eprintln!("sparse-adam-bench: {note}");
                torch_note = Some(note);
            }
        }
    }
    let load_end = measure::load_average();

    if !o.json_only {
        println!();
        println!(
            "burn-sparse-adam benchmark: backend {}, d = {}, batch = {}, {} timed steps after {} warm-up, \
             medians; load average {} at start, {} at end ({} cores)",
            o.backend.name(),
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
                format!(
                    "GLIBC_TUNABLES={} (--malloc-keep; ours and PyTorch's)",
                    measure::MALLOC_KEEP
                )
            } else if let Some(t) = measure::glibc_tunables() {
                format!("GLIBC_TUNABLES={t} (inherited)")
            } else {
                "glibc's defaults".into()
            }
        );
        println!(
            "SparseAdam row update: {}",
            // burn-sparse-adam's feature `testing` includes its kernels.
            match o.backend {
                TestBackend::NdArray => {
                    "fused lookup, row sum and row update (burn-sparse-adam feature `ndarray`)"
                }
                TestBackend::Wgpu => {
                    "fused row update, one CubeCL kernel (burn-sparse-adam feature `wgpu`); \
                     lookup and row sum composed"
                }
            }
        );
        println!();
        print!("{}", report::results_table(&records));
        let phases = report::phases_table(&records);
        if !phases.is_empty() {
            println!();
            print!("{phases}");
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
        println!("issue 4's targets:");
        print!(
            "{}",
            report::targets_text(&targets::targets(&records, &torch_records))
        );
    }
    if failures > 0 {
        eprintln!("sparse-adam-bench: {failures} measurement(s) failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
