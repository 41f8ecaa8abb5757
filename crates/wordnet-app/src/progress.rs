//! Progress of the long training loop: a progress bar with steps/s and the running loss
//! when a person watches a terminal, a line every tenth of an epoch otherwise (a log, CI).

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

use crate::train::StepObserver;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// An updating bar on stderr (which should be a terminal).
    Bar,
    /// A plain line on stdout every tenth of an epoch.
    Lines,
    /// Nothing (tests).
    Hidden,
}

impl ProgressMode {
    /// A bar when stdout and stderr (which draws it) are terminals; lines otherwise, so a
    /// redirected or piped report still shows progress, in the report itself.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Lines
        }
    }
}

/// A [`StepObserver`] that shows the steps of each epoch.
pub struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    started: Instant,
    epoch: usize,
    epochs: usize,
    steps: usize,
    loss_sum: f64,
    next_line: usize,
}

impl Progress {
    /// Shows progress as `mode` says.
    pub fn new(mode: ProgressMode) -> Self {
        Self {
            mode,
            bar: None,
            started: Instant::now(),
            epoch: 0,
            epochs: 0,
            steps: 0,
            loss_sum: 0.0,
            next_line: 0,
        }
    }
}

impl StepObserver for Progress {
    fn epoch_start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        (self.epoch, self.epochs, self.steps) = (epoch, epochs, steps);
        self.loss_sum = 0.0;
        self.next_line = steps.div_ceil(10);
        self.started = Instant::now();
        if self.mode == ProgressMode::Bar {
            let bar =
                ProgressBar::with_draw_target(Some(steps as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "epoch {prefix} [{bar:32}] {pos}/{len} steps · {rate} · loss {msg} · ETA {eta}",
                )
                .expect("a valid template")
                .with_key(
                    "rate",
                    |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{:.2} steps/s", state.per_sec());
                    },
                )
                .progress_chars("=> "),
            );
            bar.set_prefix(format!("{epoch}/{epochs}"));
            bar.enable_steady_tick(Duration::from_millis(250));
            self.bar = Some(bar);
        }
    }

    fn step(&mut self, step: usize, loss: f64) {
        self.loss_sum += loss;
        let running = self.loss_sum / step as f64;
        match &self.bar {
            Some(bar) => {
                bar.set_message(format!("{running:.4}"));
                bar.set_position(step as u64);
            }
            None if self.mode == ProgressMode::Lines
                && (step >= self.next_line || step == self.steps) =>
            {
                let secs = self.started.elapsed().as_secs_f64();
                println!(
                    "  epoch {}/{}: step {step}/{} ({:.0}%), {:.2} steps/s, loss {running:.4}",
                    self.epoch,
                    self.epochs,
                    self.steps,
                    100.0 * step as f64 / self.steps as f64,
                    step as f64 / secs.max(1e-9),
                );
                let _ = std::io::Write::flush(&mut std::io::stdout());
                self.next_line = step + self.steps.div_ceil(10);
            }
            None => {}
        }
    }

    fn epoch_end(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
