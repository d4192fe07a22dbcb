//! Progress on the terminal: the engine's tasks ([`dbvault_core::progress`]) drawn with
//! indicatif's multi-progress, one bar for an operation's whole (percentage and estimate
//! where the total is known) and one per part in flight; or, for wrappers
//! (`--progress json`), a JSON line per task a second on stderr. Nothing when stderr is
//! not a terminal (cron mails whatever a job writes there), with `--quiet`, or
//! `--progress none`.
//!
//! One thread reads the counters ten times a second; the engine never waits on it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dbvault_core::progress::{ProgressSink, Task, TaskGuard, Unit};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Bars when stderr is a terminal, else nothing.
    Auto,
    /// Bars on stderr's terminal.
    Bars,
    /// One JSON object per line on stderr, per running task each second and at its end.
    Json,
    /// Nothing.
    None,
}

/// A part shorter than this is not drawn on its own (it would only flicker).
const SHOWN_AFTER: Duration = Duration::from_millis(400);

struct Shown {
    task: Arc<Task>,
    bar: Option<ProgressBar>,
    since: Instant,
    last_line: Option<Instant>,
}

/// The display: tasks registered, drawn by one thread.
pub struct Display {
    json: bool,
    multi: MultiProgress,
    tasks: Mutex<Vec<Shown>>,
}

static DISPLAY: OnceLock<Option<Arc<Display>>> = OnceLock::new();
static THREAD: Mutex<Option<std::thread::JoinHandle<()>>> = Mutex::new(None);
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The display this invocation uses (`None`: progress is not shown).
pub fn display(cli: &crate::args::Cli) -> Option<Arc<Display>> {
    DISPLAY
        .get_or_init(|| {
            let mode = if cli.quiet { Mode::None } else { cli.progress };
            let json = match mode {
                Mode::None => return None,
                Mode::Auto if !std::io::stderr().is_terminal() => return None,
                Mode::Auto | Mode::Bars => false,
                Mode::Json => true,
            };
            let multi = MultiProgress::with_draw_target(if json {
                ProgressDrawTarget::hidden()
            } else {
                ProgressDrawTarget::stderr_with_hz(10)
            });
            let d = Arc::new(Display {
                json,
                multi,
                tasks: Mutex::new(Vec::new()),
            });
            let d2 = d.clone();
            let t = std::thread::spawn(move || {
                while !STOP.load(Ordering::Relaxed) {
                    d2.tick();
                    std::thread::sleep(Duration::from_millis(100));
                }
                d2.tick();
            });
            if let Ok(mut g) = THREAD.lock() {
                *g = Some(t);
            }
            Some(d)
        })
        .clone()
}

/// Draws the last state and clears the bars: before the process exits.
pub fn shutdown() {
    STOP.store(true, Ordering::Relaxed);
    if let Some(t) = THREAD.lock().ok().and_then(|mut g| g.take()) {
        let _ = t.join();
    }
}

/// Shows `counter` under `label` (a backup's bytes read), with `total` when known.
pub fn counter(
    cli: &crate::args::Cli,
    label: &str,
    counter: Arc<AtomicU64>,
    total: Option<u64>,
) -> Option<TaskGuard> {
    let d = display(cli)?;
    let g = TaskGuard::standalone(label, total, counter);
    d.started(g.task().clone());
    Some(g)
}

impl ProgressSink for Display {
    fn started(&self, task: Arc<Task>) {
        if let Ok(mut g) = self.tasks.lock() {
            g.push(Shown {
                task,
                bar: None,
                since: Instant::now(),
                last_line: None,
            });
        }
    }
}

impl Display {
    fn tick(&self) {
        let Ok(mut tasks) = self.tasks.lock() else {
            return;
        };
        let now = Instant::now();
        for s in tasks.iter_mut() {
            let done = s.task.done();
            if self.json {
                let end = s.task.finished();
                let due = s
                    .last_line
                    .is_none_or(|t| now - t >= Duration::from_secs(1));
                if (due && now - s.since >= SHOWN_AFTER) || (end && s.last_line.is_some()) {
                    json_line(&s.task, done, s.since, end);
                    s.last_line = Some(now);
                }
                continue;
            }
            if s.bar.is_none()
                && !s.task.finished()
                && (!s.task.is_child() || now - s.since >= SHOWN_AFTER)
            {
                let bar = self.multi.add(new_bar(&s.task));
                bar.reset_elapsed();
                s.bar = Some(bar);
            }
            if let Some(b) = &s.bar {
                b.set_position(s.task.total.map_or(done, |t| done.min(t)));
                if s.task.finished() {
                    b.finish_and_clear();
                    self.multi.remove(b);
                }
            }
        }
        tasks.retain(|s| !s.task.finished());
    }
}

fn new_bar(task: &Task) -> ProgressBar {
    let amount = match task.unit {
        Unit::Bytes => ("{bytes}", "{total_bytes}", "{bytes_per_sec}"),
        Unit::Items => ("{pos}", "{len}", "{per_sec}"),
    };
    let (bar, template) = match task.total {
        Some(t) => (
            ProgressBar::new(t),
            format!(
                "{{msg:32!}} [{{bar:24}}] {{percent:>3}}% {}/{} {} ETA {{eta}}",
                amount.0, amount.1, amount.2
            ),
        ),
        None => (
            ProgressBar::new_spinner(),
            format!(
                "{{spinner}} {{msg}} {} ({}) {{elapsed}}",
                amount.0, amount.2
            ),
        ),
    };
    bar.set_style(
        ProgressStyle::with_template(&template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let indent = if task.is_child() { "  " } else { "" };
    bar.set_message(format!("{indent}{}", crate::output::name(&task.label)));
    bar
}

fn json_line(task: &Task, done: u64, since: Instant, end: bool) {
    let v = serde_json::json!({
        "progress": task.label,
        "done": done,
        "total": task.total,
        "unit": match task.unit { Unit::Bytes => "bytes", Unit::Items => "items" },
        "seconds": (since.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "finished": end,
    });
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{v}");
}
