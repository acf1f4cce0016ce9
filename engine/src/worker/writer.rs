//! The engine's file writer: figures, text exports, sessions and feature dumps are written on this
//! thread, so a slow disk never holds up computation. Each write answers for its job with
//! [`Event::Written`], or an [`Event::Error`] naming the file; writes run in the order submitted,
//! and the ones queued when the engine stops are finished first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::Sender;

use super::{panic_message, Event, JobId, Outbox};
use crate::error::{Error, Result};
use crate::io::atomic::write_atomically;

/// A write: the paths it wrote, or why it could not.
type Write = Box<dyn FnOnce() -> Result<Vec<PathBuf>> + Send>;

pub(crate) struct Writer {
    queue: Option<Sender<(JobId, Write)>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn spawn(outbox: Arc<Outbox>) -> Result<Self> {
        let (queue, writes) = crossbeam_channel::unbounded::<(JobId, Write)>();
        let thread = std::thread::Builder::new()
            .name("diffscope-writer".into())
            .spawn(move || {
                for (job, write) in writes {
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(write));
                    outbox.emit(match outcome {
                        Ok(Ok(paths)) => Event::Written { job, paths },
                        Ok(Err(e)) => Event::Error {
                            job,
                            view: None,
                            message: e.to_string(),
                        },
                        Err(panic) => Event::Error {
                            job,
                            view: None,
                            message: format!(
                                "internal error while writing (please report it): {}",
                                panic_message(&panic)
                            ),
                        },
                    });
                }
            })
            .map_err(|e| Error::invalid(format!("cannot start the file writer thread: {e}")))?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
        })
    }

    /// Queue a write for `job`; its event follows when it is done.
    pub fn submit(
        &self,
        job: JobId,
        write: impl FnOnce() -> Result<Vec<PathBuf>> + Send + 'static,
    ) -> Result<()> {
        self.queue
            .as_ref()
            .and_then(|q| q.send((job, Box::new(write))).ok())
            .ok_or_else(|| Error::invalid("the file writer has stopped; nothing was written"))
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once the writes already queued are done.
        self.queue = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An RGBA image as PNG, atomically.
pub(crate) fn write_png(path: &Path, width: u32, height: u32, rgba: &[u8]) -> Result<()> {
    write_atomically(path, |tmp| {
        image::save_buffer_with_format(
            tmp,
            rgba,
            width,
            height,
            image::ColorType::Rgba8,
            image::ImageFormat::Png,
        )
        .map_err(|e| Error::file(path, format!("cannot write PNG: {e}")))
    })
}

/// A text file, atomically.
pub(crate) fn write_text(path: &Path, text: &str) -> Result<()> {
    write_atomically(path, |tmp| {
        std::fs::write(tmp, text.as_bytes()).map_err(|e| Error::file(path, e.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use super::*;

    #[test]
    fn submitting_never_waits_for_the_disk_and_failures_name_the_file() {
        let (events, received) = crossbeam_channel::unbounded();
        let writer = Writer::spawn(Arc::new(Outbox {
            events,
            waker: Mutex::new(Box::new(|| {})),
        }))
        .unwrap();
        // A write held up (a slow disk) until released.
        let (release, held) = crossbeam_channel::bounded::<()>(0);
        writer
            .submit(1, move || {
                held.recv().ok();
                Ok(vec![PathBuf::from("slow.png")])
            })
            .unwrap();
        // The submitter goes on at once; the next writes wait their turn.
        let dir = tempfile::tempdir().unwrap();
        let not_a_folder = dir.path().join("notes.txt");
        std::fs::write(&not_a_folder, "a file").unwrap();
        let inside_a_file = not_a_folder.join("session.json");
        writer
            .submit(2, move || {
                write_text(&inside_a_file, "{}")?;
                Ok(vec![inside_a_file])
            })
            .unwrap();
        writer.submit(3, || panic!("broken encoder")).unwrap();
        let text = dir.path().join("out/points.csv");
        let written = text.clone();
        writer
            .submit(4, move || {
                write_text(&written, "a,b\n")?;
                Ok(vec![written])
            })
            .unwrap();
        assert!(received.try_recv().is_err(), "nothing is written yet");
        release.send(()).unwrap();
        let wait = Duration::from_secs(10);
        let next = || received.recv_timeout(wait).expect("the writer answers");
        assert!(matches!(next(), Event::Written { job: 1, .. }));
        match next() {
            Event::Error {
                job: 2,
                view: None,
                message,
            } => assert!(message.contains("notes.txt"), "{message}"),
            other => panic!("{other:?}"),
        }
        match next() {
            Event::Error {
                job: 3, message, ..
            } => {
                assert!(message.contains("broken encoder"), "{message}")
            }
            other => panic!("{other:?}"),
        }
        match next() {
            Event::Written { job: 4, paths } => assert_eq!(paths, vec![text.clone()]),
            other => panic!("{other:?}"),
        }
        assert_eq!(std::fs::read_to_string(&text).unwrap(), "a,b\n");
    }
}
