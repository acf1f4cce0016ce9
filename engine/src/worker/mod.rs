//! The engine thread: it owns the model and the caches, runs [`Command`]s one at a time and
//! answers with [`Event`]s, waking the UI after each.
//!
//! Every command gets a [`JobId`] and a cancel flag. A newer command for the same [`ViewKey`]
//! supersedes the older one at once: [`EngineHandle::send`] raises the older job's flag, so a
//! queued job is skipped and a running one stops at its next check (between UNet modules). So
//! scrubbing t queues one extraction, not fifty. Errors, and panics, become [`Event::Error`]s with
//! a readable message; the thread keeps running and keeps what it had loaded. Files are written by
//! a second thread the engine owns ([`writer`]), so computing never waits for the disk.

mod annotation;
mod engine;
mod protocol;
mod writer;

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};

pub use annotation::{annotation_path, read_keypoints, Keypoints};
pub use protocol::*;

/// Wakes the UI (the app passes `ctx.request_repaint`).
pub type Waker = Box<dyn Fn() + Send>;

/// How the engine thread is set up.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Memory budget of the feature cache, in bytes.
    pub cache_budget: usize,
    /// Keep features on disk here too.
    pub cache_dir: Option<PathBuf>,
    pub device: candle_core::Device,
    /// What models are loaded in.
    pub precision: crate::device::Precision,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            cache_budget: 2 << 30,
            cache_dir: None,
            device: candle_core::Device::Cpu,
            precision: crate::device::Precision::F32,
        }
    }
}

struct Job {
    id: JobId,
    view: Option<ViewKey>,
    cancel: Arc<AtomicBool>,
    command: Command,
}

/// Cancel flags of the jobs not finished yet.
#[derive(Default)]
struct Flags {
    by_job: HashMap<JobId, Arc<AtomicBool>>,
    latest_by_view: HashMap<ViewKey, JobId>,
}

/// The UI's end of the engine thread.
pub struct EngineHandle {
    commands: Option<Sender<Job>>,
    events: Receiver<Event>,
    flags: Arc<Mutex<Flags>>,
    next_id: AtomicU64,
}

impl EngineHandle {
    /// Start the engine thread.
    pub fn spawn(config: EngineConfig, waker: Waker) -> crate::Result<Self> {
        let (command_tx, command_rx) = crossbeam_channel::unbounded::<Job>();
        let (event_tx, event_rx) = crossbeam_channel::unbounded::<Event>();
        let outbox = Arc::new(Outbox {
            events: event_tx,
            waker: Mutex::new(waker),
        });
        let writer = writer::Writer::spawn(outbox.clone())?;
        let flags = Arc::new(Mutex::new(Flags::default()));
        let thread_flags = flags.clone();
        std::thread::Builder::new()
            .name("diffscope-engine".into())
            .spawn(move || run(config, command_rx, outbox, writer, thread_flags))
            .map_err(|e| crate::Error::invalid(format!("cannot start the engine thread: {e}")))?;
        Ok(Self {
            commands: Some(command_tx),
            events: event_rx,
            flags,
            next_id: AtomicU64::new(1),
        })
    }

    /// Queue a command; an older unfinished command for the same view is cancelled.
    pub fn send(&self, command: Command) -> JobId {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let view = command.view();
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut flags = lock(&self.flags);
            if let Some(view) = view {
                if let Some(older) = flags.latest_by_view.insert(view, id) {
                    if let Some(flag) = flags.by_job.get(&older) {
                        flag.store(true, Ordering::Relaxed);
                    }
                }
            }
            flags.by_job.insert(id, cancel.clone());
        }
        if let Some(tx) = &self.commands {
            // The thread only ends when the handle is dropped, so a failed send cannot happen here.
            let _ = tx.send(Job {
                id,
                view,
                cancel,
                command,
            });
        }
        id
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Wait up to `timeout` for the next event (for tests and headless use).
    pub fn recv_timeout(&self, timeout: std::time::Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Ask a job to stop; it answers with [`Event::Cancelled`] (unless it had already finished).
    pub fn cancel(&self, job: JobId) {
        if let Some(flag) = lock(&self.flags).by_job.get(&job) {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

impl Drop for EngineHandle {
    fn drop(&mut self) {
        for flag in lock(&self.flags).by_job.values() {
            flag.store(true, Ordering::Relaxed);
        }
        // Closing the channel ends the thread once the current job has stopped.
        self.commands = None;
    }
}

fn lock(flags: &Mutex<Flags>) -> std::sync::MutexGuard<'_, Flags> {
    // A panic while holding this lock cannot leave the maps inconsistent; keep going.
    flags.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends events and wakes the UI; shared by the engine thread and its writer.
pub(crate) struct Outbox {
    events: Sender<Event>,
    waker: Mutex<Waker>,
}

impl Outbox {
    pub fn emit(&self, event: Event) {
        let _ = self.events.send(event);
        // A panic in the waker cannot leave it half-changed; keep going.
        (self.waker.lock().unwrap_or_else(|e| e.into_inner()))();
    }
}

/// Sends a job's events and wakes the UI.
pub(crate) struct Reporter<'a> {
    pub job: JobId,
    pub view: Option<ViewKey>,
    pub cancel: &'a AtomicBool,
    outbox: &'a Outbox,
}

impl Reporter<'_> {
    pub fn emit(&self, event: Event) {
        self.outbox.emit(event);
    }

    pub fn progress(&self, fraction: f32, message: impl Into<String>) {
        self.emit(Event::Progress {
            job: self.job,
            view: self.view,
            fraction: fraction.clamp(0.0, 1.0),
            message: message.into(),
        });
    }

    pub fn check_cancel(&self) -> crate::Result<()> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(crate::Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

fn run(
    config: EngineConfig,
    commands: Receiver<Job>,
    outbox: Arc<Outbox>,
    writer: writer::Writer,
    flags: Arc<Mutex<Flags>>,
) {
    lower_priority();
    let mut engine = engine::Engine::new(config, writer);
    let mut queue: VecDeque<Job> = VecDeque::new();
    loop {
        if queue.is_empty() {
            match commands.recv() {
                Ok(job) => queue.push_back(job),
                Err(_) => return,
            }
        }
        queue.extend(commands.try_iter());
        // Interactive jobs (loads, the view) go before background ones (sweeps, plots, tables).
        let next = queue
            .iter()
            .position(|j| !is_background(j.view))
            .unwrap_or(0);
        let Some(job) = queue.remove(next) else {
            continue;
        };
        let reporter = Reporter {
            job: job.id,
            view: job.view,
            cancel: &job.cancel,
            outbox: &outbox,
        };
        if job.cancel.load(Ordering::Relaxed) {
            reporter.emit(Event::Cancelled {
                job: job.id,
                view: job.view,
            });
        } else {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                engine.execute(job.command, &reporter)
            }));
            match outcome {
                Ok(Ok(())) => {}
                Ok(Err(crate::Error::Cancelled)) => reporter.emit(Event::Cancelled {
                    job: job.id,
                    view: job.view,
                }),
                Ok(Err(e)) => reporter.emit(Event::Error {
                    job: job.id,
                    view: job.view,
                    message: e.to_string(),
                }),
                Err(panic) => reporter.emit(Event::Error {
                    job: job.id,
                    view: job.view,
                    message: format!(
                        "internal error (please report it): {}",
                        panic_message(&panic)
                    ),
                }),
            }
        }
        let mut flags = lock(&flags);
        flags.by_job.remove(&job.id);
        if let Some(view) = job.view {
            if flags.latest_by_view.get(&view) == Some(&job.id) {
                flags.latest_by_view.remove(&view);
            }
        }
    }
}

fn is_background(view: Option<ViewKey>) -> bool {
    matches!(view, Some(ViewKey::Sweep | ViewKey::Elbow | ViewKey::Pck))
}

/// Run the engine, and the compute threads it starts (they inherit it), below the UI's priority,
/// so that drawing and input are scheduled first and compute takes what is left.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // On Linux the nice value is per thread: `who = 0` is the calling thread only.
        // SAFETY: setpriority has no memory effects; a failure only leaves the priority as it was.
        let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, ENGINE_NICE) };
    }
}

/// Nice value of the engine thread (0 is normal, 19 the lowest).
#[cfg(target_os = "linux")]
const ENGINE_NICE: libc::c_int = 10;

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}
