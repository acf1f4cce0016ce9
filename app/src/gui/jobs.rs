//! The one table of engine jobs the workbench waits for: what each is for, when it was sent, and
//! its progress. A job's events count only while it is in the table; a newer job for the same
//! view takes the older one's place, so the older one's late answers are ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use diffscope_engine::worker::{JobId, ViewKey};

/// What a job is for.
#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    /// The model, the analysis or a plot: one job per view at a time.
    View(ViewKey),
    /// Loading the image at this path.
    Image(PathBuf),
    /// Writing files (an export, a session): what is written.
    Write(&'static str),
}

#[derive(Clone, Debug)]
pub struct Job {
    pub kind: JobKind,
    pub sent: Instant,
    /// The fraction done and what it is doing, once the engine said.
    pub progress: Option<(f32, String)>,
}

#[derive(Default)]
pub struct JobTable {
    /// By id, which is the order the jobs were sent in.
    jobs: BTreeMap<JobId, Job>,
}

impl JobTable {
    /// Wait for job `id`; a job for the same view that was waited for is forgotten.
    pub fn start(&mut self, id: JobId, kind: JobKind) {
        if let JobKind::View(view) = kind {
            self.jobs.retain(|_, job| job.kind != JobKind::View(view));
        }
        let job = Job {
            kind,
            sent: Instant::now(),
            progress: None,
        };
        self.jobs.insert(id, job);
    }

    /// Whether the workbench still waits for job `id`.
    pub fn contains(&self, id: JobId) -> bool {
        self.jobs.contains_key(&id)
    }

    /// Stop waiting for job `id`; returns it if it was waited for.
    pub fn finish(&mut self, id: JobId) -> Option<Job> {
        self.jobs.remove(&id)
    }

    pub fn set_progress(&mut self, id: JobId, fraction: f32, message: String) {
        if let Some(job) = self.jobs.get_mut(&id) {
            job.progress = Some((fraction, message));
        }
    }

    /// The job running for `view`, if any.
    pub fn for_view(&self, view: ViewKey) -> Option<(JobId, &Job)> {
        self.jobs
            .iter()
            .find(|(_, job)| job.kind == JobKind::View(view))
            .map(|(id, job)| (*id, job))
    }

    pub fn is_running(&self, view: ViewKey) -> bool {
        self.for_view(view).is_some()
    }

    /// The jobs running for views, in the order they were sent.
    pub fn views(&self) -> impl Iterator<Item = (ViewKey, &Job)> {
        self.jobs.values().filter_map(|job| match job.kind {
            JobKind::View(view) => Some((view, job)),
            _ => None,
        })
    }

    /// The paths of the images being loaded, in the order they were asked for.
    pub fn images(&self) -> impl Iterator<Item = &Path> {
        self.jobs.values().filter_map(|job| match &job.kind {
            JobKind::Image(path) => Some(path.as_path()),
            _ => None,
        })
    }

    /// Stop waiting for the images being loaded.
    pub fn forget_images(&mut self) {
        self.jobs
            .retain(|_, job| !matches!(job.kind, JobKind::Image(_)));
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_job_for_a_view_replaces_the_older_one() {
        let mut jobs = JobTable::default();
        jobs.start(1, JobKind::View(ViewKey::Analysis));
        jobs.start(2, JobKind::Image("a.png".into()));
        jobs.start(3, JobKind::View(ViewKey::Analysis));
        jobs.start(4, JobKind::Image("b.png".into()));
        assert!(!jobs.contains(1));
        assert_eq!(jobs.for_view(ViewKey::Analysis).map(|(id, _)| id), Some(3));
        assert_eq!(
            jobs.images().collect::<Vec<_>>(),
            [Path::new("a.png"), Path::new("b.png")]
        );
        jobs.set_progress(3, 0.5, "extracting".into());
        assert_eq!(
            jobs.views().next().unwrap().1.progress.as_ref().unwrap().0,
            0.5
        );
        jobs.forget_images();
        assert!(jobs.finish(3).is_some());
        assert!(jobs.finish(3).is_none());
        assert!(jobs.is_empty());
    }
}
