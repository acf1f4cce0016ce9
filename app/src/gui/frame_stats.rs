//! How long the UI spends on each frame, kept for the status bar and for measurements.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The most recent frame durations.
#[derive(Default)]
pub struct FrameStats {
    recent: VecDeque<Duration>,
}

const KEEP: usize = 240;

impl FrameStats {
    pub fn record(&mut self, d: Duration) {
        if self.recent.len() == KEEP {
            self.recent.pop_front();
        }
        self.recent.push_back(d);
    }

    pub fn last(&self) -> Duration {
        self.recent.back().copied().unwrap_or_default()
    }

    /// The q-quantile (0..=1) of the recent frames, by the nearest-rank method.
    pub fn recent_quantile(&self, q: f64) -> Option<Duration> {
        let mut v: Vec<Duration> = self.recent.iter().copied().collect();
        quantile(&mut v, q)
    }
}

/// Nearest-rank quantile: the smallest value with at least `q` of the values at or below it.
pub fn quantile(values: &mut [Duration], q: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    values.sort();
    let rank = (q.clamp(0.0, 1.0) * values.len() as f64).ceil() as usize;
    values.get(rank.saturating_sub(1)).copied()
}

/// A measurement of frame times while an analysis job (an extraction) runs: the time the app
/// spends in each frame, and the interval between frame starts (what the user sees, including
/// rendering and waiting for the display).
pub struct Measurement {
    out: PathBuf,
    previous_start: Option<Instant>,
    work: Vec<Duration>,
    intervals: Vec<Duration>,
    busy_since: Option<Instant>,
    saw_busy: bool,
}

impl Measurement {
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            previous_start: None,
            work: Vec::new(),
            intervals: Vec::new(),
            busy_since: None,
            saw_busy: false,
        }
    }

    /// Record a frame; once the job has finished, write the report and return where.
    pub fn frame(
        &mut self,
        start: Instant,
        busy: bool,
        work: Duration,
    ) -> Option<Result<PathBuf, String>> {
        let previous = self.previous_start.replace(start);
        if busy {
            self.saw_busy = true;
            self.busy_since.get_or_insert(start);
            self.work.push(work);
            if let Some(p) = previous {
                self.intervals.push(start - p);
            }
            return None;
        }
        if !self.saw_busy {
            return None;
        }
        let job_seconds = self.busy_since.map_or(0.0, |s| (start - s).as_secs_f64());
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let report = serde_json::json!({
            "frames": self.work.len(),
            "job_seconds": job_seconds,
            "ui_work_ms": {"p50": ms(quantile(&mut self.work, 0.5)), "p99": ms(quantile(&mut self.work, 0.99)), "max": ms(self.work.iter().max().copied())},
            "frame_interval_ms": {"p50": ms(quantile(&mut self.intervals, 0.5)), "p99": ms(quantile(&mut self.intervals, 0.99)), "max": ms(self.intervals.iter().max().copied())},
            "method": "frames rendered continuously (request_repaint every frame) while the analysis job ran; ui_work = time inside App::ui; frame_interval = time between starts of consecutive frames; quantiles by nearest rank",
        });
        Some(
            std::fs::write(&self.out, report.to_string())
                .map(|()| self.out.clone())
                .map_err(|e| format!("{}: {e}", self.out.display())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(quantile(&mut v, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(quantile(&mut v, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
