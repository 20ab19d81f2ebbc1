//! Choosing the next token from logits: repeat penalty, then greedy (temperature 0) or
//! top-k → temperature → top-p → min-p → a draw from a seeded PRNG. Same seed, same tokens.

/// Sampling settings; the defaults are llama.cpp's.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplerConfig {
    /// 0 = greedy (argmax).
    pub temperature: f32,
    /// Keep the k most likely tokens; 0 = all.
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p; 1 = all.
    pub top_p: f32,
    /// Drop tokens less likely than `min_p` times the most likely one; 0 = none.
    pub min_p: f32,
    /// Divides positive logits (multiplies negative ones) of recently seen tokens; 1 = off.
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at; 0 = none.
    pub repeat_last_n: usize,
    pub seed: u64,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SamplerError {
    #[error("sampler: `{field}` is {value}, must be {rule}")]
    Invalid {
        field: &'static str,
        value: String,
        rule: &'static str,
    },
}

impl SamplerConfig {
    pub fn greedy() -> SamplerConfig {
        SamplerConfig {
            temperature: 0.0,
            ..SamplerConfig::default()
        }
    }

    pub fn validate(&self) -> Result<(), SamplerError> {
        let bad = |field, value: f32, rule| {
            Err(SamplerError::Invalid {
                field,
                value: value.to_string(),
                rule,
            })
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad("temperature", self.temperature, "a finite number >= 0");
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad("top_p", self.top_p, "in (0, 1]");
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad("min_p", self.min_p, "in [0, 1]");
        }
        if !(self.repeat_penalty.is_finite() && self.repeat_penalty > 0.0) {
            return bad("repeat_penalty", self.repeat_penalty, "a finite number > 0");
        }
        Ok(())
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, and the same stream everywhere.
#[derive(Debug, Clone)]
pub struct SmallRng {
    s: [u64; 4],
}

impl SmallRng {
    pub fn new(seed: u64) -> SmallRng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        SmallRng {
            s: [next(), next(), next(), next()],
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let r = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        r
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Picks tokens according to a `SamplerConfig`, remembering recent tokens for the penalty.
pub struct Sampler {
    cfg: SamplerConfig,
    rng: SmallRng,
    recent: Vec<u32>,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(cfg: SamplerConfig) -> Result<Sampler, SamplerError> {
        cfg.validate()?;
        Ok(Sampler {
            rng: SmallRng::new(cfg.seed),
            cfg,
            recent: Vec::new(),
            candidates: Vec::new(),
        })
    }

    pub fn config(&self) -> &SamplerConfig {
        &self.cfg
    }

    /// Records a token as seen (prompt tokens too, so the penalty covers them).
    pub fn accept(&mut self, token: u32) {
        if self.cfg.repeat_last_n == 0 {
            return;
        }
        self.recent.push(token);
        if self.recent.len() > self.cfg.repeat_last_n {
            let extra = self.recent.len() - self.cfg.repeat_last_n;
            self.recent.drain(..extra);
        }
    }

    /// Chooses the next token from `logits` (not modified) and records it.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        let token = self.choose(logits);
        self.accept(token);
        token
    }

    fn penalised(&self, logit: f32) -> f32 {
        if logit > 0.0 {
            logit / self.cfg.repeat_penalty
        } else {
            logit * self.cfg.repeat_penalty
        }
    }

    fn choose(&mut self, logits: &[f32]) -> u32 {
        self.candidates.clear();
        self.candidates
            .extend(logits.iter().enumerate().map(|(i, &l)| (i as u32, l)));
        if self.cfg.repeat_penalty != 1.0 && !self.recent.is_empty() {
            let mut seen: Vec<u32> = self.recent.clone();
            seen.sort_unstable();
            seen.dedup();
            for t in seen {
                // Each token is penalised once however often it appeared.
                if let Some(&l) = logits.get(t as usize) {
                    let p = self.penalised(l);
                    self.candidates[t as usize].1 = p;
                }
            }
        }
        let c = &mut self.candidates;
        if c.is_empty() {
            return 0;
        }
        if self.cfg.temperature == 0.0 {
            return argmax_pairs(c);
        }
        // Most likely first; ties broken by the lower id so the order is deterministic.
        let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = if self.cfg.top_k == 0 {
            c.len()
        } else {
            self.cfg.top_k.min(c.len())
        };
        if k < c.len() {
            c.select_nth_unstable_by(k - 1, by_logit);
            c.truncate(k);
        }
        c.sort_unstable_by(by_logit);
        // Softmax at the temperature (in f64: tiny probabilities still add up).
        let max = c[0].1 as f64;
        let t = self.cfg.temperature as f64;
        let mut probs: Vec<f64> = c
            .iter()
            .map(|&(_, l)| ((l as f64 - max) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut keep = probs.len();
        if self.cfg.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= self.cfg.top_p as f64 {
                    keep = i + 1;
                    break;
                }
            }
        }
        if self.cfg.min_p > 0.0 {
            let floor = probs[0] * self.cfg.min_p as f64;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let kept: f64 = probs[..keep].iter().sum();
        let mut r = self.rng.next_f64() * kept;
        for i in 0..keep {
            r -= probs[i];
            if r < 0.0 {
                return c[i].0;
            }
        }
        c[keep - 1].0
    }
}

/// Index of the largest logit (the first one on ties).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

fn argmax_pairs(c: &[(u32, f32)]) -> u32 {
    let mut best = 0;
    for (i, &(_, l)) in c.iter().enumerate() {
        if l > c[best].1 {
            best = i;
        }
    }
    c[best].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax() {
        let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    }

    #[test]
    fn penalty_changes_greedy_choice() {
        let mut s = Sampler::new(SamplerConfig {
            repeat_penalty: 2.0,
            ..SamplerConfig::greedy()
        })
        .unwrap();
        s.accept(1);
        // 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 2);
    }
}
