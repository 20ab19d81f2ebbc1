//! Log-probabilities of the model's own next-token distribution: the softmax of the raw
//! logits, before temperature, penalties or any sampling filter (what `--logprobs` reports).

/// `log softmax(logits)`, with the normaliser computed once.
pub struct LogSoftmax<'a> {
    logits: &'a [f32],
    log_z: f64,
}

impl<'a> LogSoftmax<'a> {
    pub fn new(logits: &'a [f32]) -> Self {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        // Summed in f64 so a 50k-token vocabulary loses nothing to rounding.
        let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
        LogSoftmax {
            logits,
            log_z: max + sum.ln(),
        }
    }

    /// The log-probability of token `id` (negative infinity for an id outside the vocabulary).
    pub fn of(&self, id: u32) -> f64 {
        self.logits
            .get(id as usize)
            .map_or(f64::NEG_INFINITY, |&l| l as f64 - self.log_z)
    }

    /// The `n` most likely tokens, most likely first; equal logits in id order.
    pub fn top(&self, n: usize) -> Vec<(u32, f64)> {
        let mut ids: Vec<u32> = (0..self.logits.len() as u32).collect();
        let by_logit = |a: &u32, b: &u32| {
            let (la, lb) = (self.logits[*a as usize], self.logits[*b as usize]);
            lb.total_cmp(&la).then(a.cmp(b))
        };
        let n = n.min(ids.len());
        if n == 0 {
            return Vec::new();
        }
        if n < ids.len() {
            ids.select_nth_unstable_by(n - 1, by_logit);
            ids.truncate(n);
        }
        ids.sort_unstable_by(by_logit);
        ids.into_iter().map(|id| (id, self.of(id))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_probabilities_sum_to_one_and_rank_by_logit() {
        let logits = [1.0f32, 3.0, -2.0, 3.0, 0.5];
        let lp = LogSoftmax::new(&logits);
        let total: f64 = (0..5).map(|i| lp.of(i).exp()).sum();
        assert!((total - 1.0).abs() < 1e-12, "{total}");
        let top = lp.top(3);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 0], "ties in id order, then the next logit");
        // log p(1) - log p(0) is the logit difference.
        assert!((top[0].1 - top[2].1 - 2.0).abs() < 1e-12);
        assert_eq!(lp.top(10).len(), 5);
        assert_eq!(lp.of(9), f64::NEG_INFINITY);
    }

    #[test]
    fn large_logits_do_not_overflow() {
        let lp = LogSoftmax::new(&[1000.0, 1000.0]);
        assert!((lp.of(0) - 0.5f64.ln()).abs() < 1e-12);
    }
}
