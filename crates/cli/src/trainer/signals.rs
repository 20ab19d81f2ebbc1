//! SIGINT/SIGTERM: the first one asks the run to stop cleanly (finish the micro-step,
//! checkpoint, report); a second one ends the process at once without touching files.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

#[derive(Clone)]
pub struct StopSignal {
    which: Arc<AtomicUsize>,
    armed: Arc<AtomicBool>,
}

impl StopSignal {
    /// Installs the handlers. The order matters: the conditional exit is registered first so
    /// that it sees the flag as the *previous* signal left it.
    pub fn install() -> anyhow::Result<StopSignal> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let which = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        for (sig, code) in [(SIGINT, 130), (SIGTERM, 143)] {
            signal_hook::flag::register_conditional_shutdown(sig, code, armed.clone())?;
            signal_hook::flag::register(sig, armed.clone())?;
            signal_hook::flag::register_usize(sig, which.clone(), sig as usize)?;
        }
        Ok(StopSignal { which, armed })
    }

    /// A stop signal that never fires (for work that installs no handlers, e.g. `--dry-run`).
    pub fn inert() -> StopSignal {
        StopSignal {
            which: Arc::new(AtomicUsize::new(0)),
            armed: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The signal received, if any (SIGINT = 2, SIGTERM = 15).
    pub fn received(&self) -> Option<i32> {
        if self.armed.load(Ordering::Relaxed) {
            Some(self.which.load(Ordering::Relaxed) as i32)
        } else {
            None
        }
    }

    /// Exit status for a run stopped by `sig`: 128 + signal number.
    pub fn exit_code(sig: i32) -> i32 {
        128 + sig
    }
}
