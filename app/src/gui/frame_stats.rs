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

/// A measurement of frame times while an analysis job (an extraction) runs, and, for comparison,
/// while nothing runs (before the job and after it): the time the app spends in each frame, and
/// the interval between frame starts (what the user sees, including rendering).
pub struct Measurement {
    out: PathBuf,
    previous_start: Option<Instant>,
    busy: Series,
    idle: Series,
    busy_since: Option<Instant>,
    job_seconds: Option<f64>,
    idle_after_job: usize,
}

/// Idle frames recorded after the job, for the comparison.
const IDLE_FRAMES_AFTER: usize = 120;

#[derive(Default)]
struct Series {
    work: Vec<Duration>,
    intervals: Vec<Duration>,
}

impl Series {
    fn push(&mut self, work: Duration, interval: Option<Duration>) {
        self.work.push(work);
        self.intervals.extend(interval);
    }

    fn report(&mut self) -> serde_json::Value {
        let ms = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1e3);
        let summary = |v: &mut Vec<Duration>| {
            serde_json::json!({
                "p50": ms(quantile(v, 0.5)),
                "p99": ms(quantile(v, 0.99)),
                "max": ms(v.iter().max().copied()),
            })
        };
        serde_json::json!({
            "frames": self.work.len(),
            "ui_work_ms": summary(&mut self.work),
            "frame_interval_ms": summary(&mut self.intervals),
        })
    }
}

impl Measurement {
    pub fn new(out: PathBuf) -> Self {
        Self {
            out,
            previous_start: None,
            busy: Series::default(),
            idle: Series::default(),
            busy_since: None,
            job_seconds: None,
            idle_after_job: 0,
        }
    }

    /// Record a frame; once the job has finished and enough idle frames followed, write the
    /// report and return where.
    pub fn frame(
        &mut self,
        start: Instant,
        busy: bool,
        work: Duration,
    ) -> Option<Result<PathBuf, String>> {
        let interval = self.previous_start.replace(start).map(|p| start - p);
        if busy {
            self.busy_since.get_or_insert(start);
            self.busy.push(work, interval);
            return None;
        }
        self.idle.push(work, interval);
        if let Some(since) = self.busy_since {
            self.job_seconds
                .get_or_insert((start - since).as_secs_f64());
            self.idle_after_job += 1;
        }
        if self.idle_after_job < IDLE_FRAMES_AFTER {
            return None;
        }
        let report = serde_json::json!({
            "job_seconds": self.job_seconds,
            "while_extracting": self.busy.report(),
            "idle": self.idle.report(),
            "method": "frames rendered continuously (request_repaint every frame); while_extracting: frames while the analysis job (feature extraction) ran; idle: frames with no job, before and after it; ui_work = time inside App::ui; frame_interval = time between starts of consecutive frames (includes rendering); quantiles by nearest rank",
        });
        self.idle_after_job = 0;
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
