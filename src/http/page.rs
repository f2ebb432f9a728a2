//! The live dispatch map: `web/` is compiled into the binary, so the page and its libraries
//! (from npm) are served by Hilot itself, with no CDN and no files to deploy beside it.

use actix_web::http::header;
use actix_web::{get, web, HttpResponse};
use include_dir::{include_dir, Dir};

use crate::error::ApiError;

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web");

fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        "ico" => "image/x-icon",
        _ => "application/octet-stream",
    }
}

fn serve(path: &str) -> Result<HttpResponse, ApiError> {
    let file = WEB
        .get_file(path)
        .ok_or_else(|| ApiError::NotFound(format!("no asset {path}")))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type(path)))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(file.contents()))
}

/// The live dispatch map (admin log-in on the page).
#[utoipa::path(
    tag = "dispatch",
    responses((status = 200, description = "The dispatch map page", content_type = "text/html", body = String))
)]
#[get("/")]
pub async fn index() -> Result<HttpResponse, ApiError> {
    serve("index.html")
}

/// The page's scripts, styles and libraries.
#[utoipa::path(
    tag = "dispatch",
    params(("path" = String, Path, description = "A file of the page")),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = String),
        (status = 404, description = "No such file", body = crate::error::Problem, content_type = "application/problem+json"),
    )
)]
#[get("/assets/{path:.*}")]
pub async fn asset(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let path = path.into_inner();
    if path.split('/').any(|part| part == "..") {
        return Err(ApiError::NotFound("no such asset".into()));
    }
    serve(&path)
}
