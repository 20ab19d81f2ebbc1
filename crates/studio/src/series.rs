//! Chart data computed in the database's order: a metric of one run cut into N buckets
//! along step, tokens or training time; each bucket keeps min, max, last and count, so a
//! spike survives any zoom level, and counts its non-finite values (never dropped).

use crate::error::{ApiError, ApiResult};
use crate::journal::{BAD_LOSS, BAD_LR, BAD_TPS, BAD_VAL};
use crate::tiles::{self, Stats};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

pub struct Query {
    pub metric: String,
    pub x: String,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub buckets: usize,
}

/// f32 precision is plenty for a chart and halves the payload.
fn short(v: f64) -> Value {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        json!(v as i64)
    } else {
        // The shortest text of the f32, read back as f64, prints short.
        let short: f64 = format!("{}", v as f32).parse().unwrap_or(v);
        json!(short)
    }
}

fn columns(metric: &str, x: &str) -> ApiResult<(&'static str, &'static str, i64, &'static str)> {
    let (kind, col, bit) = match metric {
        "loss" => ("batch", "loss", BAD_LOSS),
        "val_loss" => ("val", "val_loss", BAD_VAL),
        "lr" => ("step", "lr", BAD_LR),
        "tokens_per_s" => ("step", "tps", BAD_TPS),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_metric",
                "metric: expected loss, val_loss, lr or tokens_per_s",
            ))
        }
    };
    let xc = match x {
        "step" => "x_step",
        "tokens" => "x_tokens",
        "time" => "x_time",
        _ => {
            return Err(ApiError::bad_request(
                "invalid_x",
                "x: expected step, tokens or time",
            ))
        }
    };
    Ok((kind, col, bit, xc))
}

/// Tiles every metric of a run as far as its events go (after an import or a reindex, so the
/// first chart does not pay for it).
pub fn build_tiles(conn: &Connection, run_id: i64) -> ApiResult<()> {
    for metric in ["loss", "val_loss", "lr", "tokens_per_s"] {
        let (kind, col, bit, _) = columns(metric, "step")?;
        tiles::extend(conn, run_id, metric, kind, col, bit)?;
    }
    Ok(())
}

/// Merges the raw values of events `lo..=hi` (ids) into the buckets.
#[allow(clippy::too_many_arguments)]
fn raw_into(
    conn: &Connection,
    sql: &str,
    run_id: i64,
    kind: &str,
    bit: i64,
    (from, to): (f64, f64),
    (lo, hi): (i64, i64),
    acc: &mut [Option<Stats>],
    index: &dyn Fn(f64) -> usize,
) -> ApiResult<()> {
    let mut st = conn.prepare_cached(sql)?;
    let mut rows = st.query(params![run_id, kind, bit, from, to, lo, hi])?;
    while let Some(r) = rows.next()? {
        let x: f64 = r.get(0)?;
        let v: Option<f64> = r.get(1)?;
        let bad = r.get::<_, i64>(2)? != 0;
        acc[index(x)].get_or_insert(Stats::new(x)).add(x, v, bad);
    }
    Ok(())
}

pub fn series(conn: &Connection, run_id: i64, q: &Query) -> ApiResult<Value> {
    let (kind, col, bit, xc) = columns(&q.metric, &q.x)?;
    let buckets = q.buckets.clamp(1, 10_000);
    // The tiles are a cache: when they cannot be built (a read-only moment), raw rows serve.
    let _ = tiles::extend(conn, run_id, &q.metric, kind, col, bit);
    let tiles = tiles::load(conn, run_id, &q.metric)?;
    let axis = tiles::axis_index(xc);
    let tail_from = tiles.last().map_or(0, |t| t.last_id);
    // The x range: the tiles' spans, raw rows where a tile lacks one, and the untiled tail.
    let range_sql = format!(
        "SELECT MIN({xc}), MAX({xc}) FROM events
         WHERE run_id = ?1 AND type = ?2 AND id >= ?3 AND id <= ?4"
    );
    let raw_range = |a: i64, b: i64| -> ApiResult<(Option<f64>, Option<f64>)> {
        Ok(conn
            .prepare_cached(&range_sql)?
            .query_row(params![run_id, kind, a, b], |r| Ok((r.get(0)?, r.get(1)?)))?)
    };
    let (mut lo, mut hi) = raw_range(tail_from + 1, i64::MAX)?;
    let widen = |lo: &mut Option<f64>, hi: &mut Option<f64>, a: f64, b: f64| {
        *lo = Some(lo.map_or(a, |l| l.min(a)));
        *hi = Some(hi.map_or(b, |h| h.max(b)));
    };
    for t in &tiles {
        match t.spans[axis] {
            Some(s) => widen(&mut lo, &mut hi, s.lo, s.hi),
            None => {
                if let (Some(a), Some(b)) = raw_range(t.first_id, t.last_id)? {
                    widen(&mut lo, &mut hi, a, b);
                }
            }
        }
    }
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return Ok(
            json!({"metric": q.metric, "x": q.x, "points": [], "markers": [],
                         "x_range": null}),
        );
    };
    let from = q.from.unwrap_or(lo).max(lo);
    let to = q.to.unwrap_or(hi).min(hi).max(from);
    let width = ((to - from) / buckets as f64).max(f64::MIN_POSITIVE);
    let index = |x: f64| (((x - from) / width) as usize).min(buckets - 1);
    let mut acc: Vec<Option<Stats>> = vec![None; buckets];
    let raw_sql = format!(
        "SELECT {xc}, {col}, bad & ?3 FROM events
         WHERE run_id = ?1 AND type = ?2 AND {xc} >= ?4 AND {xc} <= ?5 AND id >= ?6 AND id <= ?7
         ORDER BY id"
    );
    // Tiles whose values all fall in one bucket are merged whole, and so are tiles cut by a
    // bucket edge that span at most 1/8 of a bucket (they go to the bucket of their last x:
    // an edge moves by less than 1/16 pixel at 2 buckets a pixel, and every value, spike and
    // NaN still counts). The others (cut by the range, wide against a bucket when zoomed
    // in, or without this x) are read raw, consecutive ones at once, always in event order
    // so that each bucket's `last` is the last value.
    let mut pending: Option<(i64, i64)> = None;
    for t in &tiles {
        let whole = t.spans[axis].filter(|s| {
            s.lo >= from && s.hi <= to && (index(s.lo) == index(s.hi) || s.hi - s.lo <= width / 8.0)
        });
        let outside = t.spans[axis].is_some_and(|s| s.hi < from || s.lo > to);
        if outside {
            continue;
        }
        match whole {
            Some(span) => {
                if let Some(r) = pending.take() {
                    raw_into(
                        conn,
                        &raw_sql,
                        run_id,
                        kind,
                        bit,
                        (from, to),
                        r,
                        &mut acc,
                        &index,
                    )?;
                }
                let mut st = t.stats;
                st.x = span.last;
                acc[index(span.last)]
                    .get_or_insert(Stats::new(span.last))
                    .merge(&st);
            }
            None => {
                pending = Some(match pending {
                    Some((a, _)) => (a, t.last_id),
                    None => (t.first_id, t.last_id),
                });
            }
        }
    }
    if let Some(r) = pending.take() {
        raw_into(
            conn,
            &raw_sql,
            run_id,
            kind,
            bit,
            (from, to),
            r,
            &mut acc,
            &index,
        )?;
    }
    raw_into(
        conn,
        &raw_sql,
        run_id,
        kind,
        bit,
        (from, to),
        (tail_from + 1, i64::MAX),
        &mut acc,
        &index,
    )?;
    let points: Vec<Value> = acc
        .into_iter()
        .flatten()
        .filter(|b| b.count > 0)
        .map(|b| {
            let finite = b.min <= b.max;
            let mut p = vec![
                short(b.x),
                if finite { short(b.min) } else { Value::Null },
                if finite { short(b.max) } else { Value::Null },
                b.last.map_or(Value::Null, short),
                json!(b.count),
            ];
            if b.nonfinite > 0 {
                p.push(json!(b.nonfinite));
            }
            Value::Array(p)
        })
        .collect();
    let markers = markers(conn, run_id, xc, from, to, width)?;
    Ok(json!({
        "metric": q.metric,
        "x": q.x,
        "points": points,
        "markers": markers,
        "x_range": [short(lo), short(hi)],
        "bucket_width": width,
    }))
}

/// Checkpoints, evaluations and restarts in range; at most one of each kind per bucket.
fn markers(
    conn: &Connection,
    run_id: i64,
    xc: &str,
    from: f64,
    to: f64,
    width: f64,
) -> ApiResult<Vec<Value>> {
    let mut st = conn.prepare(&format!(
        // By (run, type): the planner would otherwise walk every event of the run.
        "SELECT type, {xc}, data FROM events INDEXED BY events_by_run_type WHERE run_id = ?1
         AND type IN ('checkpoint', 'val', 'restart') AND {xc} >= ?2 AND {xc} <= ?3 ORDER BY id"
    ))?;
    let mut rows = st.query(params![run_id, from, to])?;
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let x: f64 = r.get(1)?;
        let slot = ((x - from) / width) as i64;
        if kind != "restart" && !seen.insert((kind.clone(), slot)) {
            continue;
        }
        let mut m = json!({"kind": kind, "x": short(x)});
        if kind == "restart" {
            let data: String = r.get(2)?;
            let e = crate::db::parse_json(&data);
            m["reason"] = e.get("reason").cloned().unwrap_or(Value::Null);
        }
        out.push(m);
    }
    Ok(out)
}
