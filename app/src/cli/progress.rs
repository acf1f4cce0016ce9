//! Progress of long CLI work on stderr: on a terminal one bar redrawn in place with the rate and
//! the time left; otherwise (a log file, a cluster job's output) plain lines, at most one every
//! few seconds, never a carriage return.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often a terminal bar is redrawn.
const TERMINAL_EVERY: Duration = Duration::from_millis(100);
/// How often a plain line is written when stderr is not a terminal.
const LOG_EVERY: Duration = Duration::from_secs(5);
const BAR_WIDTH: usize = 24;

pub struct Progress {
    label: String,
    unit: &'static str,
    total: usize,
    done: usize,
    note: String,
    started: Instant,
    shown: Option<Instant>,
    terminal: bool,
    /// A bar is on the terminal's last line (a newline is owed before other output).
    open_bar: bool,
}

impl Progress {
    /// Progress of `total` units of work (`unit` names them: "images", "UNet passes").
    pub fn new(label: impl Into<String>, total: usize, unit: &'static str) -> Self {
        Self {
            label: label.into(),
            unit,
            total,
            done: 0,
            note: String::new(),
            started: Instant::now(),
            shown: None,
            terminal: std::io::stderr().is_terminal(),
            open_bar: false,
        }
    }

    /// `done` of the total are finished; `note` says what runs now.
    pub fn set(&mut self, done: usize, note: impl Into<String>) {
        self.done = done.min(self.total);
        self.note = note.into();
        let every = if self.terminal {
            TERMINAL_EVERY
        } else {
            LOG_EVERY
        };
        // The first report and the last always show; the others when enough time has passed.
        let due = self.shown.is_none_or(|at| at.elapsed() >= every) || self.done == self.total;
        if due {
            self.show();
        }
    }

    /// A change of total (work discovered as it runs), keeping what is done.
    pub fn set_total(&mut self, total: usize) {
        self.total = total;
    }

    /// The final line: the totals and the time taken.
    pub fn finish(&mut self) {
        self.done = self.total;
        self.note.clear();
        self.show();
        self.close_bar();
    }

    fn close_bar(&mut self) {
        if self.open_bar {
            eprintln!();
            self.open_bar = false;
        }
    }

    fn show(&mut self) {
        self.shown = Some(Instant::now());
        let line = self.line(self.started.elapsed());
        let mut err = std::io::stderr().lock();
        if self.terminal {
            // Back to the line's start and clear it, so a shorter line leaves nothing behind.
            let _ = write!(err, "\r\x1b[K{line}");
            self.open_bar = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// `label [#####-----] 12/40 UNet passes  3.1/s  elapsed 0m04s  ETA 0m09s  note`
    fn line(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let fraction = match self.total {
            0 => 1.0,
            total => self.done as f64 / total as f64,
        };
        let filled = (fraction * BAR_WIDTH as f64).round() as usize;
        let bar = format!("{}{}", "#".repeat(filled), "-".repeat(BAR_WIDTH - filled));
        let rate = match self.done {
            0 => String::new(),
            done => format!("  {}/s", rate_text(done as f64 / secs.max(1e-9))),
        };
        let eta = match (self.done, self.done == self.total) {
            (_, true) => String::new(),
            (0, false) => "  ETA ?".to_string(),
            (done, false) => {
                let left = (self.total - done) as f64 * secs / done as f64;
                format!("  ETA {}", duration_text(left))
            }
        };
        let note = match self.note.is_empty() {
            true => String::new(),
            false => format!("  {}", self.note),
        };
        format!(
            "{} [{bar}] {}/{} {}{rate}  elapsed {}{eta}{note}",
            self.label,
            self.done,
            self.total,
            self.unit,
            duration_text(secs)
        )
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        // An error ends the run mid-bar: its message starts on a line of its own.
        self.close_bar();
    }
}

fn rate_text(per_second: f64) -> String {
    if per_second >= 10.0 {
        format!("{per_second:.0}")
    } else if per_second >= 0.1 {
        format!("{per_second:.2}")
    } else {
        format!("{per_second:.4}")
    }
}

/// `0m09s`, `12m30s`, `2h05m`.
pub fn duration_text(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else {
        format!("{}m{:02}s", s / 60, s % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(done: usize, total: usize, note: &str) -> Progress {
        let mut p = Progress::new("extract", total, "images");
        p.done = done;
        p.note = note.into();
        p
    }

    #[test]
    fn the_line_shows_count_rate_and_time_left() {
        let line = at(10, 40, "cat.jpg").line(Duration::from_secs(5));
        assert_eq!(
            line,
            "extract [######------------------] 10/40 images  2.00/s  elapsed 0m05s  ETA 0m15s  cat.jpg"
        );
        let done = at(40, 40, "").line(Duration::from_secs(7200));
        assert!(
            done.ends_with("40/40 images  0.0056/s  elapsed 2h00m"),
            "{done}"
        );
        assert!(at(0, 3, "")
            .line(Duration::ZERO)
            .contains("0/3 images  elapsed 0m00s  ETA ?"));
    }
}
