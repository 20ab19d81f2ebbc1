//! The UI: files of `crates/studio/assets/` embedded in the binary, served at `/`.

use axum::http::{header, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use include_dir::{include_dir, Dir};

static ASSETS: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/assets");

pub async fn serve(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    if path.starts_with("api/") {
        return crate::error::ApiError::not_found("no such endpoint").into_response();
    }
    let path = if path.is_empty() { "index.html" } else { path };
    // A path without an extension is a view of the single-page app.
    let file = ASSETS.get_file(path).or_else(|| {
        (!path.rsplit('/').next().unwrap_or("").contains('.'))
            .then(|| ASSETS.get_file("index.html"))
            .flatten()
    });
    match file {
        Some(f) => {
            let mime = mime_guess::from_path(f.path()).first_or_octet_stream();
            (
                [
                    (header::CONTENT_TYPE, mime.essence_str().to_string()),
                    (header::CACHE_CONTROL, "no-cache".to_string()),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                ],
                f.contents(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
