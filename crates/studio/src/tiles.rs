//! Pre-aggregated runs of a metric's values, so that a chart of a 1,000,000-step run reads a
//! few tens of thousands of rows instead of a million. A tile summarises `TILE` consecutive
//! values (in event order) of one metric of one run: their min, max, last, counts, and for
//! each x axis the lowest, highest and last x. Tiles are a cache of the `events` rows: built
//! for the complete groups of values not yet tiled (on a series request, after an import or a
//! reindex), dropped with the run, and always deterministic (the same rows give the same
//! tiles, so two requests that build at once insert the same keys).

use rusqlite::{params, Connection};

/// Values per tile: small enough that the tiles cut by a bucket edge cost little to read raw.
pub const TILE: usize = 32;

/// The statistics of one bucket or tile, built value by value in event order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// x of the last value (of the axis in use).
    pub x: f64,
    pub min: f64,
    pub max: f64,
    pub last: Option<f64>,
    pub count: u64,
    pub nonfinite: u64,
}

impl Stats {
    pub fn new(x: f64) -> Stats {
        Stats {
            x,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: None,
            count: 0,
            nonfinite: 0,
        }
    }

    /// One value: finite, non-finite (`bad`), or absent (not counted).
    pub fn add(&mut self, x: f64, v: Option<f64>, bad: bool) {
        self.x = x;
        match v {
            Some(v) => {
                self.count += 1;
                self.min = self.min.min(v);
                self.max = self.max.max(v);
                self.last = Some(v);
            }
            None if bad => {
                self.count += 1;
                self.nonfinite += 1;
                self.last = None;
            }
            None => {}
        }
    }

    /// A later group of values, as if they were added one by one.
    pub fn merge(&mut self, o: &Stats) {
        self.x = o.x;
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        if o.count > 0 {
            self.last = o.last;
        }
        self.count += o.count;
        self.nonfinite += o.nonfinite;
    }
}

/// One x axis of a tile: lowest, highest and last x; None when a value had no x on it.
#[derive(Clone, Copy, Debug)]
pub struct Span {
    pub lo: f64,
    pub hi: f64,
    pub last: f64,
}

#[derive(Clone, Debug)]
pub struct Tile {
    pub first_id: i64,
    pub last_id: i64,
    pub stats: Stats,
    /// step, tokens, time.
    pub spans: [Option<Span>; 3],
}

/// The x columns in axis order.
pub const AXES: [&str; 3] = ["x_step", "x_tokens", "x_time"];

pub fn axis_index(xc: &str) -> usize {
    AXES.iter().position(|a| *a == xc).unwrap_or(0)
}

type RawRow = (i64, [Option<f64>; 3], Option<f64>, bool);

fn tile_of(rows: &[RawRow]) -> Tile {
    let mut stats = Stats::new(0.0);
    let mut spans: [Option<Span>; 3] = [None; 3];
    let mut complete = [true; 3];
    for (_, xs, v, bad) in rows {
        stats.add(0.0, *v, *bad);
        for a in 0..3 {
            match xs[a] {
                Some(x) => {
                    let s = spans[a].get_or_insert(Span {
                        lo: x,
                        hi: x,
                        last: x,
                    });
                    s.lo = s.lo.min(x);
                    s.hi = s.hi.max(x);
                    s.last = x;
                }
                None => complete[a] = false,
            }
        }
    }
    for a in 0..3 {
        if !complete[a] {
            spans[a] = None;
        }
    }
    Tile {
        first_id: rows.first().map_or(0, |r| r.0),
        last_id: rows.last().map_or(0, |r| r.0),
        stats,
        spans,
    }
}

/// Builds the tiles of every complete group of `TILE` untiled values of `metric` (events of
/// `kind`, value column `col`, non-finite bit `bit`); returns how many were added.
pub fn extend(
    conn: &Connection,
    run_id: i64,
    metric: &str,
    kind: &str,
    col: &str,
    bit: i64,
) -> rusqlite::Result<usize> {
    let after = tiled_up_to(conn, run_id, metric)?;
    let untiled: i64 = conn
        .prepare_cached("SELECT COUNT(*) FROM events WHERE run_id = ?1 AND type = ?2 AND id > ?3")?
        .query_row(params![run_id, kind, after], |r| r.get(0))?;
    if (untiled as usize) < TILE {
        return Ok(0);
    }
    let mut st = conn.prepare(&format!(
        "SELECT id, x_step, x_tokens, x_time, {col}, bad & ?4 FROM events
         WHERE run_id = ?1 AND type = ?2 AND id > ?3 ORDER BY id"
    ))?;
    let mut rows = st.query(params![run_id, kind, after, bit])?;
    let mut group: Vec<RawRow> = Vec::with_capacity(TILE);
    let mut tiles = Vec::new();
    while let Some(r) = rows.next()? {
        group.push((
            r.get(0)?,
            [r.get(1)?, r.get(2)?, r.get(3)?],
            r.get(4)?,
            r.get::<_, i64>(5)? != 0,
        ));
        if group.len() == TILE {
            tiles.push(tile_of(&group));
            group.clear();
        }
    }
    drop(rows);
    let tx = conn.unchecked_transaction()?;
    {
        let mut ins = tx.prepare_cached(
            "INSERT OR IGNORE INTO tiles(run_id, metric, first_id, last_id, count, nonfinite,
                 vmin, vmax, vlast, step_lo, step_hi, step_last, tokens_lo, tokens_hi,
                 tokens_last, time_lo, time_hi, time_last)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,
                     ?18)",
        )?;
        for t in &tiles {
            let s = &t.stats;
            let finite = s.min <= s.max;
            let sp = |a: usize| t.spans[a].map(|s| (s.lo, s.hi, s.last));
            let (s0, s1, s2) = (sp(0), sp(1), sp(2));
            ins.execute(params![
                run_id,
                metric,
                t.first_id,
                t.last_id,
                s.count as i64,
                s.nonfinite as i64,
                finite.then_some(s.min),
                finite.then_some(s.max),
                s.last,
                s0.map(|s| s.0),
                s0.map(|s| s.1),
                s0.map(|s| s.2),
                s1.map(|s| s.0),
                s1.map(|s| s.1),
                s1.map(|s| s.2),
                s2.map(|s| s.0),
                s2.map(|s| s.1),
                s2.map(|s| s.2),
            ])?;
        }
    }
    tx.commit()?;
    Ok(tiles.len())
}

/// The id of the last tiled event of a metric (0 when none).
pub fn tiled_up_to(conn: &Connection, run_id: i64, metric: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT COALESCE(MAX(last_id), 0) FROM tiles WHERE run_id = ?1 AND metric = ?2",
    )?
    .query_row(params![run_id, metric], |r| r.get(0))
}

/// Every tile of a metric, in event order.
pub fn load(conn: &Connection, run_id: i64, metric: &str) -> rusqlite::Result<Vec<Tile>> {
    let mut st = conn.prepare_cached(
        "SELECT first_id, last_id, count, nonfinite, vmin, vmax, vlast, step_lo, step_hi,
                step_last, tokens_lo, tokens_hi, tokens_last, time_lo, time_hi, time_last
         FROM tiles WHERE run_id = ?1 AND metric = ?2 ORDER BY last_id",
    )?;
    let rows = st.query_map(params![run_id, metric], |r| {
        let span = |i: usize| -> rusqlite::Result<Option<Span>> {
            Ok(
                match (
                    r.get::<_, Option<f64>>(i)?,
                    r.get::<_, Option<f64>>(i + 1)?,
                    r.get::<_, Option<f64>>(i + 2)?,
                ) {
                    (Some(lo), Some(hi), Some(last)) => Some(Span { lo, hi, last }),
                    _ => None,
                },
            )
        };
        Ok(Tile {
            first_id: r.get(0)?,
            last_id: r.get(1)?,
            stats: Stats {
                x: 0.0,
                count: r.get::<_, i64>(2)? as u64,
                nonfinite: r.get::<_, i64>(3)? as u64,
                min: r.get::<_, Option<f64>>(4)?.unwrap_or(f64::INFINITY),
                max: r.get::<_, Option<f64>>(5)?.unwrap_or(f64::NEG_INFINITY),
                last: r.get(6)?,
            },
            spans: [span(7)?, span(10)?, span(13)?],
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_groups_equals_adding_each_value() {
        let vals: Vec<(f64, Option<f64>, bool)> = (0..100)
            .map(|i| {
                let v = match i % 13 {
                    5 => None,
                    7 => Some(50.0),
                    _ => Some(i as f64 * 0.5),
                };
                (i as f64, v, i % 13 == 5 && i % 2 == 0)
            })
            .collect();
        let mut one = Stats::new(0.0);
        for (x, v, b) in &vals {
            one.add(*x, *v, *b);
        }
        let mut merged = Stats::new(0.0);
        for chunk in vals.chunks(7) {
            let mut s = Stats::new(0.0);
            for (x, v, b) in chunk {
                s.add(*x, *v, *b);
            }
            merged.merge(&s);
        }
        assert_eq!(one, merged);
    }
}
