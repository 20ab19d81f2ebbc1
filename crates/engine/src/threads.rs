//! The engine's thread count: rayon's global pool, configured once per process.

use crate::error::EngineError;

/// Sets the number of worker threads (0 = rayon's default: one per core). Calling it again
/// with the count already in effect is fine; changing it after the pool started is an error.
pub fn set_threads(n: usize) -> Result<(), EngineError> {
    match rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global()
    {
        Ok(()) => Ok(()),
        Err(_) if n == 0 || rayon::current_num_threads() == n => Ok(()),
        Err(e) => Err(EngineError::Threads(format!(
            "cannot use {n} threads: the pool already runs {} ({e})",
            rayon::current_num_threads()
        ))),
    }
}

/// Threads the engine uses.
pub fn current() -> usize {
    rayon::current_num_threads()
}
