//! SIGINT and SIGTERM: the first asks the run to stop (it finishes its block of work, keeps
//! what it did and exits with 128 + the signal number); a later one ends the process at
//! once — the second for runs whose work is saved as they go (checkpoints, finished
//! stages), the third for `sample`, whose measurements exist only in memory until its
//! report is written (`timeout` sends SIGTERM to the process and then to its group, and a
//! repeated Ctrl-C is common).

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Context, Result};
use latflow::StopToken;

/// SIGINT and SIGTERM: the first sets `stop` (the run finishes its step, saves and exits);
/// the `fatal`-th one ends the process at once.
pub(crate) struct Signals {
    pub(crate) stop: StopToken,
    pub(crate) last: Arc<AtomicUsize>,
}

impl Signals {
    /// Installs the handlers: the first signal requests a stop, the `fatal`-th (at least
    /// the second) ends the process with 128 + its number.
    pub(crate) fn install(fatal: usize) -> Result<Self> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(AtomicUsize::new(0));
        let fatal = fatal.max(2);
        for signal in [SIGINT, SIGTERM] {
            let count = received.clone();
            // SAFETY: the action only touches an atomic counter and calls `_exit`, both
            // async-signal-safe.
            unsafe {
                signal_hook::low_level::register(signal, move || {
                    if count.fetch_add(1, Ordering::SeqCst) + 1 >= fatal {
                        signal_hook::low_level::exit(128 + signal);
                    }
                })
            }
            .context("installing the signal handlers")?;
            flag::register(signal, stop.clone()).context("installing the signal handlers")?;
            flag::register_usize(signal, last.clone(), signal as usize)
                .context("installing the signal handlers")?;
        }
        Ok(Signals {
            stop: StopToken::from_flag(stop),
            last,
        })
    }

    pub(crate) fn name(&self) -> &'static str {
        match self.last.load(Ordering::SeqCst) as i32 {
            signal_hook::consts::SIGINT => "SIGINT",
            signal_hook::consts::SIGTERM => "SIGTERM",
            _ => "a stop request",
        }
    }

    /// 128 + the signal number, as a shell reports a process ended by that signal.
    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from((128 + self.last.load(Ordering::SeqCst).min(127)) as u8)
    }

    /// Reports a run this signal stopped: with `json`, one line `{"outcome": "stopped",
    /// "signal": ..}` joined by the object `fields`; always `message` (what was stopped,
    /// where the finished work is, how to continue) on stderr. Returns the exit code.
    pub(crate) fn report_stop(
        &self,
        json: bool,
        fields: serde_json::Value,
        message: &str,
    ) -> ExitCode {
        let signal = self.name();
        if json {
            let mut value = serde_json::json!({ "outcome": "stopped", "signal": signal });
            if let (Some(all), serde_json::Value::Object(extra)) = (value.as_object_mut(), fields) {
                all.extend(extra);
            }
            println!("{value}");
        }
        eprintln!("latflow: {signal} received: {message}");
        self.exit_code()
    }
}
