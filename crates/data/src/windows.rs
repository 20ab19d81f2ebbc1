//! Training windows over a token stream (llama2.c convention) and their batch order.
//!
//! A stream of N tokens holds W = floor((N-1)/T) windows of T+1 tokens; window i covers tokens
//! [i*T, i*T+T] (inputs are the first T, targets the last T). Windows are handed out one after the
//! other by a cursor that counts windows consumed since the start of training:
//! - `Sequential`: the window at cursor c is c mod W, so micro-batch k of size B holds windows
//!   (k*B + b) mod W;
//! - `Shuffle`: every pass over the data (epoch) is a fresh permutation of the W windows, drawn by
//!   a seeded SplitMix64 generator; the generator state at the start of the current epoch and the
//!   cursor are all a checkpoint needs to continue the exact same order.

use serde::{Deserialize, Serialize};

/// Errors in window arithmetic, each saying what is wrong.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WindowError {
    #[error("the data holds {tokens} tokens, fewer than one window of seq_len + 1 = {needed}")]
    TooShort { tokens: usize, needed: usize },
    #[error("seq_len must be at least 1")]
    ZeroSeqLen,
    #[error("the saved data order is for {saved} windows but the data now holds {now}")]
    Mismatch { saved: u64, now: u64 },
}

/// How the windows of one pass are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DataOrder {
    Sequential,
    Shuffle,
}

impl DataOrder {
    pub const NAMES: &'static [&'static str] = &["sequential", "shuffle"];

    pub fn parse(s: &str) -> Option<DataOrder> {
        match s {
            "sequential" => Some(DataOrder::Sequential),
            "shuffle" => Some(DataOrder::Shuffle),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            DataOrder::Sequential => "sequential",
            DataOrder::Shuffle => "shuffle",
        }
    }
}

/// Number of windows of `seq_len` in a stream of `n_tokens`, or an error when there is not one.
pub fn window_count(n_tokens: usize, seq_len: usize) -> Result<usize, WindowError> {
    if seq_len == 0 {
        return Err(WindowError::ZeroSeqLen);
    }
    let w = n_tokens.saturating_sub(1) / seq_len;
    if w == 0 {
        return Err(WindowError::TooShort {
            tokens: n_tokens,
            needed: seq_len + 1,
        });
    }
    Ok(w)
}

/// The token range [i*T, i*T+T] (inclusive, T+1 tokens) of window `i`.
pub fn window_range(i: usize, seq_len: usize) -> std::ops::Range<usize> {
    i * seq_len..i * seq_len + seq_len + 1
}

/// SplitMix64: tiny, fast, and its whole state is one u64 (easy to checkpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitMix64 {
    pub state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n > 0), by rejection so no value is favoured.
    pub fn below(&mut self, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let x = self.next_u64();
            if x < zone {
                return x % n;
            }
        }
    }
}

/// What a checkpoint stores to continue the window order exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    pub order: DataOrder,
    pub windows: u64,
    /// Windows handed out since training began.
    pub cursor: u64,
    /// The epoch whose permutation `epoch_rng` draws (shuffle only).
    pub epoch: u64,
    /// Generator state at the start of that epoch (shuffle only).
    pub epoch_rng: SplitMix64,
}

/// Hands out window indices in the configured order.
#[derive(Debug, Clone)]
pub struct WindowOrder {
    state: OrderState,
    rng: SplitMix64,
    /// Permutation of the current epoch (empty for sequential order).
    perm: Vec<u32>,
}

impl WindowOrder {
    pub fn new(order: DataOrder, windows: usize, seed: u64) -> WindowOrder {
        let rng = SplitMix64::new(seed ^ 0x5EED_DA7A_0000_0000);
        let state = OrderState {
            order,
            windows: windows as u64,
            cursor: 0,
            epoch: 0,
            epoch_rng: rng,
        };
        let mut w = WindowOrder {
            state,
            rng,
            perm: Vec::new(),
        };
        w.start_epoch();
        w
    }

    /// Continues from a saved state; fails when the data no longer has the same window count.
    pub fn restore(saved: &OrderState, windows: usize) -> Result<WindowOrder, WindowError> {
        if saved.windows != windows as u64 || windows == 0 {
            return Err(WindowError::Mismatch {
                saved: saved.windows,
                now: windows as u64,
            });
        }
        let mut w = WindowOrder {
            state: saved.clone(),
            rng: saved.epoch_rng,
            perm: Vec::new(),
        };
        w.start_epoch();
        Ok(w)
    }

    /// Draws the permutation of the current epoch from `rng` (its state is kept first).
    fn start_epoch(&mut self) {
        if self.state.order == DataOrder::Sequential {
            return;
        }
        self.state.epoch_rng = self.rng;
        let n = self.state.windows as usize;
        self.perm.clear();
        self.perm.extend(0..n as u32);
        for i in (1..n).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            self.perm.swap(i, j);
        }
    }

    /// The next window index.
    pub fn next_window(&mut self) -> usize {
        let w = self.state.windows;
        let c = self.state.cursor;
        let idx = match self.state.order {
            DataOrder::Sequential => (c % w) as usize,
            DataOrder::Shuffle => {
                if c / w != self.state.epoch {
                    self.state.epoch = c / w;
                    self.start_epoch();
                }
                self.perm[(c % w) as usize] as usize
            }
        };
        self.state.cursor += 1;
        idx
    }

    /// The windows of the next micro-batch of `batch` rows.
    pub fn next_batch(&mut self, batch: usize, into: &mut Vec<usize>) {
        into.clear();
        for _ in 0..batch {
            let w = self.next_window();
            into.push(w);
        }
    }

    pub fn state(&self) -> &OrderState {
        &self.state
    }

    pub fn windows(&self) -> usize {
        self.state.windows as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_windows_llama2c_style() {
        assert_eq!(window_count(257, 256), Ok(1));
        assert_eq!(window_count(513, 256), Ok(2));
        assert_eq!(window_count(512, 256), Ok(1));
        assert!(matches!(
            window_count(256, 256),
            Err(WindowError::TooShort { .. })
        ));
        assert_eq!(window_count(10, 0), Err(WindowError::ZeroSeqLen));
        assert_eq!(window_range(2, 4), 8..13);
    }

    #[test]
    fn sequential_batches_wrap_modulo_w() {
        let mut o = WindowOrder::new(DataOrder::Sequential, 5, 1);
        let mut b = Vec::new();
        o.next_batch(3, &mut b);
        assert_eq!(b, [0, 1, 2]);
        o.next_batch(3, &mut b);
        assert_eq!(b, [3, 4, 0]);
        o.next_batch(3, &mut b);
        assert_eq!(b, [1, 2, 3]);
    }

    #[test]
    fn shuffle_is_a_permutation_per_epoch_and_seeded() {
        let mut a = WindowOrder::new(DataOrder::Shuffle, 50, 7);
        let mut seen: Vec<usize> = (0..50).map(|_| a.next_window()).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        let mut b = WindowOrder::new(DataOrder::Shuffle, 50, 7);
        let mut c = WindowOrder::new(DataOrder::Shuffle, 50, 8);
        let xb: Vec<usize> = (0..50).map(|_| b.next_window()).collect();
        let xc: Vec<usize> = (0..50).map(|_| c.next_window()).collect();
        assert_ne!(xb, xc);
        assert_ne!(xb, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn restore_continues_the_same_order_across_epochs() {
        let mut full = WindowOrder::new(DataOrder::Shuffle, 13, 3);
        let reference: Vec<usize> = (0..60).map(|_| full.next_window()).collect();
        for cut in [0, 5, 13, 20, 39, 59] {
            let mut o = WindowOrder::new(DataOrder::Shuffle, 13, 3);
            let mut got: Vec<usize> = (0..cut).map(|_| o.next_window()).collect();
            let saved = serde_json::to_string(o.state()).unwrap();
            let saved: OrderState = serde_json::from_str(&saved).unwrap();
            let mut r = WindowOrder::restore(&saved, 13).unwrap();
            got.extend((cut..60).map(|_| r.next_window()));
            assert_eq!(got, reference, "cut at {cut}");
        }
    }

    #[test]
    fn restore_refuses_other_data() {
        let o = WindowOrder::new(DataOrder::Sequential, 13, 3);
        assert!(matches!(
            WindowOrder::restore(o.state(), 12),
            Err(WindowError::Mismatch { .. })
        ));
    }
}
