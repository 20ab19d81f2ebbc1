//! The training run: loop, checkpoints, resume, signals, progress (used by `cmd::train`).
