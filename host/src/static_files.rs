//! Serves a directory of static files (a demo page, a client bundle) on the gateway's port, for paths
//! no endpoint claims. Read-only, GET and HEAD only, no directory listings, no path outside the folder.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::engineio::Body;
use crate::serve::{Handler, text};

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("wasm") => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The file a request path names inside `root`, if it names one safely.
fn resolve(root: &Path, request_path: &str) -> Option<PathBuf> {
    let relative = request_path.trim_start_matches('/');
    let relative = if relative.is_empty() || relative.ends_with('/') {
        format!("{relative}index.html")
    } else {
        relative.to_owned()
    };
    let relative = Path::new(&relative);
    relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| root.join(relative))
}

/// A handler serving the files under `root`.
pub fn handler(root: PathBuf) -> Handler {
    let root = Arc::new(root);
    Arc::new(move |req| {
        let root = Arc::clone(&root);
        Box::pin(async move {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            let Some(path) = resolve(&root, req.uri().path()) else {
                return text(StatusCode::NOT_FOUND, "not found");
            };
            match tokio::fs::read(&path).await {
                Ok(bytes) => {
                    let mut resp = Response::new(Body::new(Bytes::from(bytes)));
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(content_type(&path)),
                    );
                    resp.headers_mut()
                        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                    resp
                }
                Err(_) => text(StatusCode::NOT_FOUND, "not found"),
            }
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_folder() {
        let root = Path::new("/srv/www");
        assert_eq!(
            resolve(root, "/"),
            Some(PathBuf::from("/srv/www/index.html"))
        );
        assert_eq!(
            resolve(root, "/js/app.js"),
            Some(PathBuf::from("/srv/www/js/app.js"))
        );
        assert_eq!(
            resolve(root, "/docs/"),
            Some(PathBuf::from("/srv/www/docs/index.html"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/../../b"), None);
        assert_eq!(
            resolve(root, "//etc/passwd"),
            Some(PathBuf::from("/srv/www/etc/passwd"))
        );
    }
}
