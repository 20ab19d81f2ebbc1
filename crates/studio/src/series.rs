//! Chart data computed in the database's order: a metric of one run cut into N buckets
//! along step, tokens or training time; each bucket keeps min, max, last and count, so a
//! spike survives any zoom level, and counts its non-finite values (never dropped).

use crate::error::{ApiError, ApiResult};
use crate::journal::{BAD_LOSS, BAD_LR, BAD_TPS, BAD_VAL};
use rusqlite::{params, Connection};
use serde_json::{json, Value};

pub struct Query {
    pub metric: String,
    pub x: String,
    pub from: Option<f64>,
    pub to: Option<f64>,
    pub buckets: usize,
}

#[derive(Clone, Copy)]
struct Bucket {
    x: f64,
    min: f64,
    max: f64,
    last: Option<f64>,
    count: u64,
    nonfinite: u64,
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

pub fn series(conn: &Connection, run_id: i64, q: &Query) -> ApiResult<Value> {
    let (kind, col, bit, xc) = columns(&q.metric, &q.x)?;
    let buckets = q.buckets.clamp(1, 10_000);
    let (lo, hi): (Option<f64>, Option<f64>) = conn.query_row(
        &format!("SELECT MIN({xc}), MAX({xc}) FROM events WHERE run_id = ?1 AND type = ?2"),
        params![run_id, kind],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
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
    let mut acc: Vec<Option<Bucket>> = vec![None; buckets];
    let mut st = conn.prepare(&format!(
        "SELECT {xc}, {col}, bad & ?3 FROM events
         WHERE run_id = ?1 AND type = ?2 AND {xc} >= ?4 AND {xc} <= ?5 ORDER BY id"
    ))?;
    let mut rows = st.query(params![run_id, kind, bit, from, to])?;
    while let Some(r) = rows.next()? {
        let x: f64 = r.get(0)?;
        let v: Option<f64> = r.get(1)?;
        let bad: i64 = r.get(2)?;
        let b = acc[index(x)].get_or_insert(Bucket {
            x,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: None,
            count: 0,
            nonfinite: 0,
        });
        b.count += 1;
        b.x = x;
        match v {
            Some(v) => {
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.last = Some(v);
            }
            None if bad != 0 => {
                b.nonfinite += 1;
                b.last = None;
            }
            None => b.count -= 1,
        }
    }
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
        "SELECT type, {xc}, data FROM events WHERE run_id = ?1
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
