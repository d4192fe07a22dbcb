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

/// The display this invocation uses (`None`: progress is not shown), for `--progress
/// mode` and `--quiet`.
pub fn display(mode: Mode, quiet: bool) -> Option<Arc<Display>> {
    DISPLAY
        .get_or_init(|| {
            let mode = if quiet { Mode::None } else { mode };
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
    (mode, quiet): (Mode, bool),
    label: &str,
    counter: Arc<AtomicU64>,
    total: Option<u64>,
) -> Option<TaskGuard> {
    let d = display(mode, quiet)?;
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
            // A part that is the whole restore would repeat its numbers.
            if s.task.is_whole_of_parent() {
                continue;
            }
            let done = s.task.done();
            let end = s.task.finished();
            let old = now - s.since >= SHOWN_AFTER;
            if self.json {
                // An operation always says it ended; a part only when it was long
                // enough to be reported at all.
                let due = s
                    .last_line
                    .is_none_or(|t| now - t >= Duration::from_secs(1));
                if (due && old && !end) || (end && (s.last_line.is_some() || !s.task.is_child())) {
                    json_line(&s.task, done, s.since, end);
                    s.last_line = Some(now);
                }
                continue;
            }
            if s.bar.is_none() && !end && (!s.task.is_child() || old) {
                let bar = new_bar(&s.task, done);
                s.bar = Some(self.multi.add(bar));
            }
            if let Some(b) = &s.bar {
                b.set_position(s.task.total.map_or(done, |t| done.min(t)));
                if end {
                    b.finish_and_clear();
                    self.multi.remove(b);
                }
            }
        }
        tasks.retain(|s| !s.task.finished());
    }
}

/// A bar for `task`, at `done` already: drawn only once the multi-progress owns it, its
/// rate and estimate counted from now.
fn new_bar(task: &Task, done: u64) -> ProgressBar {
    let amount = match task.unit {
        Unit::Bytes => ("{bytes:>10}", "{bytes_per_sec:>12}"),
        Unit::Items => ("{pos:>6}/{len}", "{per_sec:>9}"),
    };
    let template = match task.total {
        // At most 80 columns: a name, the bar, the percentage, done, rate, estimate.
        Some(_) => format!(
            "{{msg:24!}} {{bar:16}} {{percent:>3}}% {} {} ETA {{eta:>3}}",
            amount.0, amount.1
        ),
        None => format!(
            "{{spinner}} {{msg:30!}} {} {} {{elapsed:>4}}",
            amount.0, amount.1
        ),
    };
    let bar = ProgressBar::with_draw_target(task.total, ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(&template)
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let indent = if task.is_child() { "  " } else { "" };
    bar.set_message(format!(
        "{indent}{}",
        dbvault_formats::names::display(&task.label)
    ));
    bar.set_position(task.total.map_or(done, |t| done.min(t)));
    bar.reset_eta();
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
