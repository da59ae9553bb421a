//! The operator dashboard: plain JavaScript modules and one style sheet (`api/dashboard/`),
//! embedded in the binary, served at `/` and `/assets/app/`. No build step and nothing fetched
//! at run time; the page talks only to the public GraphQL API.

use axum::extract::Path;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::AppState;

macro_rules! files {
    ($($path:literal),* $(,)?) => {
        &[$(($path, include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/", $path)))),*]
    };
}

/// Every asset, by its path under `/assets/app/`.
static ASSETS: &[(&str, &str)] = files!(
    "style.css",
    "js/api.js",
    "js/app.js",
    "js/dom.js",
    "js/views/chart.js",
    "js/views/emails.js",
    "js/views/feed.js",
    "js/views/form.js",
    "js/views/jobs.js",
    "js/views/names.js",
    "js/views/overview.js",
    "js/views/paging.js",
    "js/views/user-form.js",
    "js/views/user.js",
    "js/views/uplift.js",
    "js/views/users.js",
);

static INDEX: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/dashboard/index.html"));

/// What the page may load and run: only our own origin. Inline styles are allowed for the
/// emails' HTML (shown in a sandboxed frame without scripts, which inherits this policy).
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; \
     frame-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/app/{*path}", get(asset))
}

fn secured(response: Response) -> Response {
    let mut response = super::security::page(response, CONTENT_SECURITY_POLICY);
    // The code changes with the binary: browsers revalidate rather than run a stale copy.
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

async fn index() -> Response {
    secured(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], INDEX).into_response())
}

async fn asset(Path(path): Path<String>) -> Response {
    let Some((_, body)) = ASSETS.iter().find(|(name, _)| *name == path) else {
        return secured((StatusCode::NOT_FOUND, "no such asset").into_response());
    };
    let content_type = if path.ends_with(".css") {
        "text/css; charset=utf-8"
    } else {
        "text/javascript; charset=utf-8"
    };
    secured(([(header::CONTENT_TYPE, content_type)], *body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every module the page imports is served: a new file that is not listed here would be a
    /// 404 in the browser.
    #[test]
    fn every_file_in_the_dashboard_folder_is_served() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
        let mut on_disk = Vec::new();
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(dir).expect("dashboard folder") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    stack.push(path);
                } else if path.file_name() != Some("index.html".as_ref()) {
                    let rel = path.strip_prefix(&root).expect("under root");
                    on_disk.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        on_disk.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|(p, _)| (*p).to_owned()).collect();
        served.sort();
        assert_eq!(on_disk, served);
    }

    #[test]
    fn imports_name_only_served_modules() {
        for (path, body) in ASSETS.iter().filter(|(p, _)| p.ends_with(".js")) {
            let dir = std::path::Path::new(path).parent().expect("a folder");
            for line in body.lines().filter(|l| l.starts_with("import ")) {
                let target = line
                    .split('\'')
                    .nth(1)
                    .unwrap_or_else(|| panic!("{path}: {line}"));
                let joined = normalize(&dir.join(target));
                assert!(
                    ASSETS.iter().any(|(p, _)| *p == joined),
                    "{path} imports {target} ({joined}), which is not served"
                );
            }
        }
    }

    fn normalize(path: &std::path::Path) -> String {
        let mut parts: Vec<String> = Vec::new();
        for part in path.components() {
            match part {
                std::path::Component::ParentDir => {
                    parts.pop();
                }
                std::path::Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
                _ => {}
            }
        }
        parts.join("/")
    }
}
