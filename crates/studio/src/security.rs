//! Request checks, in this order: Host (DNS rebinding), token (when one is in force: any
//! bind beyond loopback, or `--token`), Origin on state-changing methods (CSRF). No CORS
//! headers are ever sent. Errors that leave the machine name no absolute path outside the
//! data dir.

use crate::error::ApiError;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

pub const COOKIE: &str = "nf_studio_token";

pub struct Guard {
    pub port: u16,
    /// The name given to --host, when it is a name rather than an address.
    pub host_name: String,
    pub token: Option<String>,
    pub data_dir: PathBuf,
}

/// Binding anything but a loopback address exposes the studio: a token is then required.
pub fn token_required(ip: IpAddr) -> bool {
    !ip.is_loopback()
}

/// `host[:port]` of a Host header or an Origin, split; IPv6 in brackets.
fn split_host(h: &str) -> (String, Option<u16>) {
    if let Some(rest) = h.strip_prefix('[') {
        if let Some((name, tail)) = rest.split_once(']') {
            let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
            return (name.to_string(), port);
        }
    }
    match h.rsplit_once(':') {
        Some((name, port)) => (name.to_string(), port.parse().ok()),
        None => (h.to_string(), None),
    }
}

impl Guard {
    /// A name a rebinding attack cannot use: an IP literal, `localhost`, or the bound name.
    pub fn host_ok(&self, host: &str) -> bool {
        let (name, port) = split_host(host);
        if port.unwrap_or(80) != self.port {
            return false;
        }
        let name = name.to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok() || name == "localhost" || name == self.host_name
    }

    fn origin_ok(&self, origin: &str, host: &str) -> bool {
        match origin.strip_prefix("http://") {
            Some(o) => o.eq_ignore_ascii_case(host) && self.host_ok(o),
            None => false,
        }
    }

    fn token_ok(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let bearer = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let cookie = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|kv| {
                kv.trim()
                    .strip_prefix(&format!("{COOKIE}="))
                    .map(str::to_string)
            })
            .collect::<Vec<_>>();
        bearer.is_some_and(|b| same(b, token)) || cookie.iter().any(|c| same(c, token))
    }
}

/// Equality in time that does not depend on where the strings differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn query_token(query: &str) -> Option<String> {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("token="))
        .map(|t| t.to_string())
}

fn refuse(status: StatusCode, code: &'static str, msg: &str) -> Response {
    ApiError::new(status, code, msg).into_response()
}

pub async fn guard(
    State(g): State<Arc<Guard>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if !g.host_ok(&host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "bad_host",
            "unexpected Host header",
        );
    }
    // The one-time URL: exchange the token for a cookie and drop it from the address bar.
    if let (Some(token), Some(q)) = (&g.token, req.uri().query()) {
        if let Some(t) = query_token(q) {
            if same(&t, token) && req.method() == Method::GET {
                let cookie = format!("{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/");
                return Response::builder()
                    .status(StatusCode::SEE_OTHER)
                    .header(header::LOCATION, "/")
                    .header(header::SET_COOKIE, cookie)
                    .body(Body::empty())
                    .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
            }
        }
    }
    if !g.token_ok(req.headers()) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid token is required",
        );
    }
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !safe {
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let ok = origin.to_str().is_ok_and(|o| g.origin_ok(o, &host));
            if !ok {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "bad_origin",
                    "cross-origin request refused",
                );
            }
        }
        let cross = req
            .headers()
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|s| s == "cross-site");
        if cross {
            return refuse(
                StatusCode::FORBIDDEN,
                "bad_origin",
                "cross-site request refused",
            );
        }
    }
    let resp = next.run(req).await;
    if peer.ip().is_loopback() {
        return resp;
    }
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if resp.status().as_u16() >= 400 {
        scrub_response(resp, &g.data_dir).await
    } else if json {
        scrub_json_errors(resp, &g.data_dir).await
    } else {
        resp
    }
}

/// Answers larger than this are passed on as they are (event pages of huge runs).
const SCRUB_LIMIT: usize = 16 << 20;

async fn scrub_response(resp: Response, data_dir: &std::path::Path) -> Response {
    let (mut parts, body) = resp.into_parts();
    match axum::body::to_bytes(body, 1 << 20).await {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(scrub(&text, data_dir)))
        }
        Err(_) => Response::from_parts(parts, Body::empty()),
    }
}

/// A successful JSON answer can still carry errors (a validation that failed, a job's or a
/// run's error, `error` events): their texts are scrubbed, the rest is left alone (paths the
/// user picked are the point of the file browser and of the run list).
async fn scrub_json_errors(resp: Response, data_dir: &std::path::Path) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, SCRUB_LIMIT).await else {
        return Response::from_parts(parts, Body::empty());
    };
    let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    scrub_errors_in(&mut v, data_dir, false);
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(v.to_string()))
}

/// Scrubs every string under an `error` key and the `message` of `error` events.
fn scrub_errors_in(v: &mut serde_json::Value, data_dir: &std::path::Path, inside: bool) {
    use serde_json::Value;
    match v {
        Value::String(s) if inside => *s = scrub(s, data_dir),
        Value::Array(a) => a
            .iter_mut()
            .for_each(|x| scrub_errors_in(x, data_dir, inside)),
        Value::Object(o) => {
            let error_event = o.get("type").and_then(Value::as_str) == Some("error");
            for (k, x) in o.iter_mut() {
                let here = inside || k == "error" || (error_event && k == "message");
                scrub_errors_in(x, data_dir, here);
            }
        }
        _ => {}
    }
}

/// Replaces each absolute path outside `data_dir` by its last component.
pub fn scrub(text: &str, data_dir: &std::path::Path) -> String {
    let dd = data_dir.to_string_lossy();
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('/') {
        let starts_path = i == 0
            || rest[..i]
                .chars()
                .last()
                .is_some_and(|c| c.is_whitespace() || "\"'(=:,[".contains(c));
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if !starts_path {
            out.push('/');
            rest = &rest[1..];
            continue;
        }
        let end = rest
            .find(|c: char| c.is_whitespace() || "\"'),;]".contains(c))
            .unwrap_or(rest.len());
        let path = &rest[..end];
        if path.starts_with(dd.as_ref()) {
            out.push_str(path);
        } else {
            let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
            out.push_str("…/");
            out.push_str(last);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> Guard {
        Guard {
            port: 7860,
            host_name: "127.0.0.1".into(),
            token: None,
            data_dir: PathBuf::from("/home/u/.local/share/neuralforge"),
        }
    }

    #[test]
    fn loopback_needs_no_token_anything_else_does() {
        for ip in ["127.0.0.1", "127.0.0.2", "::1"] {
            assert!(!token_required(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["0.0.0.0", "192.168.1.5", "::", "10.0.0.1"] {
            assert!(token_required(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn host_header_must_be_an_address_or_localhost_on_our_port() {
        let g = guard();
        assert!(g.host_ok("127.0.0.1:7860"));
        assert!(g.host_ok("localhost:7860"));
        assert!(g.host_ok("[::1]:7860"));
        assert!(!g.host_ok("evil.example:7860"));
        assert!(!g.host_ok("127.0.0.1:80"));
        assert!(!g.host_ok(""));
    }

    #[test]
    fn origin_must_match_the_host() {
        let g = guard();
        assert!(g.origin_ok("http://127.0.0.1:7860", "127.0.0.1:7860"));
        assert!(!g.origin_ok("http://evil.example:7860", "127.0.0.1:7860"));
        assert!(!g.origin_ok("null", "127.0.0.1:7860"));
        assert!(!g.origin_ok("http://localhost:7860", "127.0.0.1:7860"));
    }

    #[test]
    fn paths_outside_the_data_dir_are_scrubbed() {
        let dd = PathBuf::from("/d/nf");
        let s = scrub(
            "data: no such file: /home/me/secret/x.txt (see /d/nf/runs/3)",
            &dd,
        );
        assert_eq!(s, "data: no such file: …/x.txt (see /d/nf/runs/3)");
        assert_eq!(scrub("a/b and 1/2", &dd), "a/b and 1/2");
    }

    #[test]
    fn errors_inside_json_answers_are_scrubbed_and_nothing_else() {
        let dd = PathBuf::from("/d/nf");
        let mut v = serde_json::json!({
            "ok": false,
            "error": {"message": "data: no such file or folder: /home/me/x.bin", "code": "c"},
            "run_dir": "/home/me/runs/1",
            "events": [{"type": "error", "message": "cannot open /srv/secret/y"},
                       {"type": "info", "message": "/home/me/keep"}],
        });
        scrub_errors_in(&mut v, &dd, false);
        assert_eq!(
            v["error"]["message"],
            "data: no such file or folder: …/x.bin"
        );
        assert_eq!(v["error"]["code"], "c");
        assert_eq!(v["run_dir"], "/home/me/runs/1");
        assert_eq!(v["events"][0]["message"], "cannot open …/y");
        assert_eq!(v["events"][1]["message"], "/home/me/keep");
    }
}
