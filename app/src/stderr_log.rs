//! Where the engine's log messages go: warnings and errors from diffscope's own crates, on stderr
//! as `diffscope: MESSAGE` (what the engine printed itself before it reported through `log`).
//! Other crates' messages (wgpu's, for one) are left out, as they were.

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLog;

impl Log for StderrLog {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= Level::Warn && metadata.target().starts_with("diffscope")
    }

    fn log(&self, record: &Record) {
        if self.enabled(record.metadata()) {
            eprintln!("diffscope: {}", record.args());
        }
    }

    fn flush(&self) {}
}

static LOGGER: StderrLog = StderrLog;

/// Install the logger (once; a second call changes nothing).
pub fn install() {
    if log::set_logger(&LOGGER).is_ok() {
        log::set_max_level(LevelFilter::Warn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(level: Level, target: &str) -> bool {
        StderrLog.enabled(&Metadata::builder().level(level).target(target).build())
    }

    #[test]
    fn shows_diffscopes_warnings_and_errors_only() {
        assert!(shown(Level::Warn, "diffscope_engine::worker::engine"));
        assert!(shown(Level::Error, "diffscope::cli"));
        assert!(!shown(Level::Info, "diffscope_engine::worker::engine"));
        assert!(!shown(Level::Warn, "wgpu_core::device"));
    }
}
