//! The dispatch page's base map over HTTP: what the page should draw (`GET /v1/map/base`)
//! and the local PMTiles archive, served with range requests. What the settings describe lives
//! in [`crate::console::basemap`], below the state that holds it.

use std::path::PathBuf;

use actix_web::{get, web, HttpRequest, HttpResponse};

pub use crate::console::basemap::*;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// The base map the dispatch page draws.
#[utoipa::path(
    tag = "dispatch",
    responses((status = 200, description = "The base map source", body = BaseMap))
)]
#[get("/v1/map")]
pub async fn base_map(state: web::Data<AppState>) -> web::Json<BaseMap> {
    web::Json(state.base_map.as_ref().clone())
}

fn pmtiles_path(state: &AppState) -> Option<&PathBuf> {
    state.settings.map_pmtiles.as_ref()
}

/// The local PMTiles archive, read by the page with HTTP range requests (206).
#[utoipa::path(
    tag = "dispatch",
    params(("Range" = Option<String>, Header, description = "`bytes=start-end`: the part of the archive wanted")),
    responses(
        (status = 200, description = "The whole archive", content_type = "application/vnd.pmtiles", body = String),
        (status = 206, description = "The requested bytes", content_type = "application/vnd.pmtiles", body = String),
        (status = 404, description = "No archive configured (HILOT_MAP_PMTILES)", body = Problem, content_type = "application/problem+json"),
        (status = 416, description = "The range is outside the archive"),
    )
)]
#[get("/v1/map/basemap.pmtiles")]
pub async fn pmtiles(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let path = pmtiles_path(&state).ok_or_else(|| {
        ApiError::NotFound("no PMTiles archive is configured (HILOT_MAP_PMTILES)".into())
    })?;
    let path = path.clone();
    let file = web::block(move || actix_files::NamedFile::open(path))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("file thread: {e}")))?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("opening the PMTiles archive: {e}")))?
        .set_content_type(
            "application/vnd.pmtiles"
                .parse()
                .expect("a valid MIME type"),
        )
        .disable_content_disposition();
    Ok(file.into_response(&req))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn header(tile_type: u8) -> Vec<u8> {
        let mut bytes = vec![0u8; 127];
        bytes[0..7].copy_from_slice(b"PMTiles");
        bytes[7] = 3;
        bytes[99] = tile_type;
        bytes[100] = 0;
        bytes[101] = 14;
        bytes[102..106].copy_from_slice(&(1_209_500_000_i32).to_le_bytes());
        bytes[106..110].copy_from_slice(&(145_000_000_i32).to_le_bytes());
        bytes[110..114].copy_from_slice(&(1_211_000_000_i32).to_le_bytes());
        bytes[114..118].copy_from_slice(&(146_500_000_i32).to_le_bytes());
        bytes[118] = 13;
        bytes[119..123].copy_from_slice(&(1_210_244_000_i32).to_le_bytes());
        bytes[123..127].copy_from_slice(&(145_547_000_i32).to_le_bytes());
        bytes
    }

    #[test]
    fn a_pmtiles_header_is_read() {
        let info = read_pmtiles_header(&header(2)).unwrap();
        assert_eq!(info.tile_type, "png");
        assert_eq!((info.min_zoom, info.max_zoom), (0, 14));
        assert_eq!(info.bounds, [120.95, 14.5, 121.1, 14.65]);
        assert_eq!(info.center, [121.0244, 14.5547, 13.0]);
        assert_eq!(read_pmtiles_header(&header(1)).unwrap().tile_type, "mvt");
    }

    #[test]
    fn other_files_are_refused_with_a_reason() {
        assert!(read_pmtiles_header(b"not a map")
            .unwrap_err()
            .contains("PMTiles"));
        let mut v2 = header(2);
        v2[7] = 2;
        assert!(read_pmtiles_header(&v2).unwrap_err().contains("version 2"));
        assert!(read_pmtiles_header(&header(9))
            .unwrap_err()
            .contains("type 9"));
    }

    #[test]
    fn without_settings_the_page_is_told_how_to_add_streets() {
        let none = BaseMap::from_settings(&Settings::default()).unwrap();
        assert_eq!(none.source, "none");
        assert!(none.help.unwrap().contains("HILOT_MAP_PMTILES"));
        let tiles = BaseMap::from_settings(&Settings {
            map_tiles: Some("https://tiles.example.org/{z}/{x}/{y}.png".into()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!((tiles.source, tiles.format), ("tiles", Some("raster")));
        let vector = BaseMap::from_settings(&Settings {
            map_tiles: Some("https://tiles.example.org/{z}/{x}/{y}.mvt?key=1".into()),
            ..Settings::default()
        })
        .unwrap();
        assert_eq!(vector.format, Some("vector"));
        assert!(BaseMap::from_settings(&Settings {
            map_tiles: Some("https://tiles.example.org/map.png".into()),
            ..Settings::default()
        })
        .is_err());
    }
}
