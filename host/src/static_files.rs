//! Serves a directory of static files (a demo page, a client bundle) on the gateway's port, for paths
//! no endpoint claims. Read-only, GET and HEAD only, no directory listings, no path outside the folder
//! (a symbolic link is followed only when its target is inside the folder too).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::engineio::Body;
use crate::http_util::{Handler, text};

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

/// The file to serve for `request_path`: named safely, and still inside `root` (canonical) once
/// symbolic links are resolved.
async fn locate(root: &Path, request_path: &str) -> Option<PathBuf> {
    let path = resolve(root, request_path)?;
    let real = tokio::fs::canonicalize(&path).await.ok()?;
    real.starts_with(root).then_some(real)
}

/// A handler serving the files under `root`.
pub fn handler(root: PathBuf) -> Handler {
    let root = Arc::new(std::fs::canonicalize(&root).unwrap_or(root));
    Arc::new(move |req| {
        let root = Arc::clone(&root);
        Box::pin(async move {
            if req.method() != Method::GET && req.method() != Method::HEAD {
                return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
            }
            let Some(path) = locate(&root, req.uri().path()).await else {
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

    #[tokio::test]
    async fn links_out_of_the_folder_are_not_followed() {
        let base = std::env::temp_dir().join(format!("ioplex-static-{}", std::process::id()));
        let (root, outside) = (base.join("root"), base.join("outside"));
        std::fs::create_dir_all(&root).expect("root");
        std::fs::create_dir_all(&outside).expect("outside");
        std::fs::write(outside.join("secret.txt"), "secret").expect("write");
        std::fs::write(root.join("page.html"), "page").expect("write");
        std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("leak.txt"))
            .expect("link");
        std::os::unix::fs::symlink(root.join("page.html"), root.join("alias.html")).expect("link");
        let root = std::fs::canonicalize(&root).expect("canonical");
        assert!(locate(&root, "/page.html").await.is_some());
        assert!(
            locate(&root, "/alias.html").await.is_some(),
            "links inside are fine"
        );
        assert_eq!(locate(&root, "/leak.txt").await, None);
        std::fs::remove_dir_all(&base).expect("cleanup");
    }
}
