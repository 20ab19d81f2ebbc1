//! `neuralforge studio`: the local web app. An axum server over a SQLite store, a run manager
//! that drives `neuralforge train --json` children, and the UI embedded from `assets/`.
//! The HTTP API is described in docs/studio-api.md.

mod api;
mod args;
mod assets;
mod children;
mod cli_runs;
mod db;
pub mod error;
mod jobs;
mod journal;
mod reindex;
mod runs;
mod security;
mod series;
mod sse;
mod tiles;
mod util;

pub use error::StudioError;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What `neuralforge studio` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub host: String,
    pub port: u16,
    pub data_dir: Option<PathBuf>,
    pub token: Option<String>,
    pub open: bool,
    pub reindex: bool,
}

fn data_dir(given: Option<PathBuf>) -> Result<PathBuf, StudioError> {
    let dir = match given {
        Some(d) => d,
        None => directories::ProjectDirs::from("", "", "neuralforge")
            .map(|p| p.data_dir().to_path_buf())
            .ok_or(StudioError::NoDataDir)?,
    };
    for sub in ["", "runs", "generations", "datasets", "exports", "models"] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).map_err(|source| StudioError::DataDir {
            path: d.display().to_string(),
            source,
        })?;
    }
    dir.canonicalize().map_err(|source| StudioError::DataDir {
        path: dir.display().to_string(),
        source,
    })
}

fn parse_host(host: &str) -> Result<IpAddr, StudioError> {
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| StudioError::Host(host.to_string()))
}

fn new_token() -> Result<String, StudioError> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn exe() -> Result<PathBuf, StudioError> {
    match std::env::var_os("NEURALFORGE_EXE") {
        Some(p) => Ok(PathBuf::from(p)),
        None => Ok(std::env::current_exe()?),
    }
}

/// Runs the studio until SIGINT/SIGTERM.
pub fn serve(opts: Options) -> Result<(), StudioError> {
    let data_dir = data_dir(opts.data_dir.clone())?;
    let db_path = data_dir.join("studio.sqlite");
    let db = Arc::new(db::Db::open(&db_path).map_err(|source| StudioError::Db {
        path: db_path.display().to_string(),
        source,
    })?);
    let exe = exe()?;
    let m = runs::Manager::new(Arc::clone(&db), exe.clone(), data_dir.clone());
    if opts.reindex {
        let (runs, events) = reindex::reindex_all(&m).map_err(|e| {
            StudioError::Io(std::io::Error::other(format!("reindex: {}", e.message)))
        })?;
        println!("studio: reindexed {runs} runs ({events} events)");
    } else {
        reindex::discover(&m);
    }
    let ip = parse_host(&opts.host)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(util::cores().clamp(2, 8))
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr = SocketAddr::new(ip, opts.port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| StudioError::Bind {
                addr: addr.to_string(),
                source,
            })?;
        let port = listener.local_addr()?.port();
        let token = match opts.token.clone() {
            Some(t) if !t.is_empty() => Some(t),
            _ if security::token_required(ip) => Some(new_token()?),
            _ => None,
        };
        let shown = match ip {
            IpAddr::V6(_) => format!("[{ip}]"),
            IpAddr::V4(_) => ip.to_string(),
        };
        let url = match &token {
            Some(t) => format!("http://{shown}:{port}/?token={t}"),
            None => format!("http://{shown}:{port}/"),
        };
        println!("studio: listening on {url}");
        println!("studio: data in {}", data_dir.display());
        let _ = std::io::stdout().flush();
        if opts.open {
            let _ = std::process::Command::new("xdg-open").arg(&url).spawn();
        }
        m.start();
        let tasks = jobs::Tasks::new(Arc::clone(&db), exe, data_dir.clone());
        let guard = Arc::new(security::Guard {
            port,
            host_name: opts.host.to_ascii_lowercase(),
            token,
            data_dir: data_dir.clone(),
        });
        let app = api::router(api::App {
            m,
            tasks,
            db,
            data_dir,
            options: Arc::new(Mutex::new(None)),
        })
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .layer(axum::middleware::from_fn_with_state(guard, security::guard));
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown())
        .await?;
        Ok(())
    })
}

async fn shutdown() {
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
