//! Server-sent events of a run: every stored event after the client's `Last-Event-ID`, read
//! from the database (so a reconnect gets exactly what it missed), written in batches at most
//! ~20 times a second whatever the event rate, plus an `event: status` frame (no id) when
//! the run's row changes.

use crate::db;
use crate::runs::Manager;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::Response;
use bytes::Bytes;
use rusqlite::params;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// Minimum gap between two writes to one client.
pub const FLUSH_EVERY: Duration = Duration::from_millis(50);
const KEEPALIVE: Duration = Duration::from_secs(15);
const BATCH: usize = 5000;

/// Where to start: `Last-Event-ID` wins over `?after=`.
pub fn start_after(headers: &HeaderMap, after: Option<i64>) -> i64 {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .or(after)
        .unwrap_or(0)
}

pub fn response(rx: mpsc::Receiver<Result<Bytes, Infallible>>) -> Response {
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

/// One SSE frame per stored event: its id, its type, and the JSON with `id` added.
fn frame(buf: &mut String, id: i64, kind: &str, data: &str) {
    use std::fmt::Write;
    let body = data.strip_prefix('{').unwrap_or(data);
    let sep = if body.trim_start().starts_with('}') {
        ""
    } else {
        ","
    };
    let _ = write!(
        buf,
        "id: {id}\nevent: {kind}\ndata: {{\"id\":{id}{sep}{body}\n\n"
    );
}

type Batch = (Vec<(i64, String, String)>, Option<String>);

fn read_batch(m: &Manager, run_id: i64, after: i64) -> Batch {
    let conn = m.db.conn();
    let rows = conn
        .prepare_cached(
            "SELECT id, type, data FROM events WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )
        .and_then(|mut st| {
            st.query_map(params![run_id, after, BATCH as i64], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .map(|rows| rows.flatten().collect())
        })
        .unwrap_or_default();
    let status = db::get_run(&conn, run_id).ok().map(|v| v.to_string());
    (rows, status)
}

pub fn run_stream(m: Arc<Manager>, run_id: i64, after: i64) -> Response {
    let (tx, rx) = mpsc::channel(4);
    let mut changes = m.changes.subscribe();
    tokio::spawn(async move {
        let mut last = after;
        let mut last_status = String::new();
        loop {
            changes.mark_unchanged();
            let m2 = Arc::clone(&m);
            let Ok((rows, status)) =
                tokio::task::spawn_blocking(move || read_batch(&m2, run_id, last)).await
            else {
                return;
            };
            let full = rows.len() == BATCH;
            let mut buf = String::new();
            for (id, kind, data) in &rows {
                frame(&mut buf, *id, kind, data);
                last = *id;
            }
            match status {
                Some(s) if s != last_status => {
                    buf.push_str("event: status\ndata: ");
                    buf.push_str(&s);
                    buf.push_str("\n\n");
                    last_status = s;
                }
                Some(_) => {}
                None => {
                    buf.push_str("event: status\ndata: {\"deleted\":true}\n\n");
                    let _ = tx.send(Ok(Bytes::from(buf))).await;
                    return;
                }
            }
            if !buf.is_empty() && tx.send(Ok(Bytes::from(buf))).await.is_err() {
                return;
            }
            tokio::time::sleep(FLUSH_EVERY).await;
            if full {
                continue;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(KEEPALIVE) => {
                    if tx.send(Ok(Bytes::from_static(b": keepalive\n\n"))).await.is_err() {
                        return;
                    }
                }
                _ = tx.closed() => return,
            }
        }
    });
    response(rx)
}

#[cfg(test)]
mod tests {
    #[test]
    fn frames_carry_the_row_id_in_data() {
        let mut b = String::new();
        super::frame(&mut b, 7, "step", r#"{"type":"step","step":1}"#);
        assert_eq!(
            b,
            "id: 7\nevent: step\ndata: {\"id\":7,\"type\":\"step\",\"step\":1}\n\n"
        );
    }
}
