//! The dispatch page's base map: tiles from a configured URL template (`HILOT_MAP_TILES`), or a
//! local PMTiles archive Hilot serves itself (`HILOT_MAP_PMTILES`) for the page to read with
//! HTTP range requests (no tile server, no internet); with neither, a plain grid and a note on
//! how to add streets.

use std::path::{Path, PathBuf};

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Settings;
use crate::error::{ApiError, Problem};
use crate::state::AppState;

/// Where the page finds the PMTiles archive.
pub const PMTILES_PATH: &str = "/v1/map/basemap.pmtiles";
/// What the page says when no base map is configured.
pub const NO_BASE_MAP_HELP: &str = "No street map is configured: the map shows a plain grid. \
     To add streets, start Hilot with HILOT_MAP_PMTILES=/path/to/city.pmtiles (a local PMTiles \
     archive, served by Hilot: no tile server, no internet) or HILOT_MAP_TILES set to a tile URL \
     template such as https://tile.example.org/{z}/{x}/{y}.png, with HILOT_MAP_ATTRIBUTION.";
/// Attribution when an archive or template names none.
pub const DEFAULT_ATTRIBUTION: &str = "Map data © OpenStreetMap contributors";

/// What a PMTiles v3 header says about its tiles (the first 127 bytes of the archive).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct PmtilesInfo {
    /// `mvt` (vector), `png`, `jpeg`, `webp` or `avif`.
    pub tile_type: &'static str,
    pub min_zoom: u8,
    pub max_zoom: u8,
    /// `[west, south, east, north]`.
    pub bounds: [f64; 4],
    /// `[lng, lat, zoom]`.
    pub center: [f64; 3],
}

fn le_i32(bytes: &[u8], at: usize) -> f64 {
    let raw = i32::from_le_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    f64::from(raw) / 10_000_000.0
}

/// Reads a PMTiles v3 header, or says why the bytes are not one.
pub fn read_pmtiles_header(bytes: &[u8]) -> Result<PmtilesInfo, String> {
    if bytes.len() < 127 || &bytes[0..7] != b"PMTiles" {
        return Err("not a PMTiles archive (no PMTiles header)".into());
    }
    if bytes[7] != 3 {
        return Err(format!(
            "PMTiles version {} is not supported (version 3 is)",
            bytes[7]
        ));
    }
    let tile_type = match bytes[99] {
        1 => "mvt",
        2 => "png",
        3 => "jpeg",
        4 => "webp",
        5 => "avif",
        other => return Err(format!("unknown PMTiles tile type {other}")),
    };
    Ok(PmtilesInfo {
        tile_type,
        min_zoom: bytes[100],
        max_zoom: bytes[101],
        bounds: [
            le_i32(bytes, 102),
            le_i32(bytes, 106),
            le_i32(bytes, 110),
            le_i32(bytes, 114),
        ],
        center: [
            le_i32(bytes, 119),
            le_i32(bytes, 123),
            f64::from(bytes[118]),
        ],
    })
}

/// Checks the configured archive at start-up, so a wrong path fails loudly, not on the page.
pub fn check_pmtiles(path: &Path) -> anyhow::Result<PmtilesInfo> {
    use std::io::Read as _;
    let mut header = [0u8; 127];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .map_err(|e| anyhow::anyhow!("HILOT_MAP_PMTILES: cannot read {}: {e}", path.display()))?;
    read_pmtiles_header(&header)
        .map_err(|why| anyhow::anyhow!("HILOT_MAP_PMTILES: {}: {why}", path.display()))
}

/// How the page draws its base map.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BaseMap {
    /// `pmtiles` (Hilot serves the archive at `url`), `tiles` (a URL template) or `none`.
    pub source: &'static str,
    /// The archive's address, or the tile URL template with `{z}`, `{x}`, `{y}`.
    pub url: Option<String>,
    /// `raster` or `vector`.
    pub format: Option<&'static str>,
    pub attribution: Option<String>,
    /// The archive's header, for `pmtiles`.
    pub pmtiles: Option<PmtilesInfo>,
    /// With no base map: how to add streets.
    pub help: Option<&'static str>,
}

impl BaseMap {
    /// The base map the settings describe (PMTiles first when both are set).
    pub fn from_settings(settings: &Settings) -> anyhow::Result<Self> {
        let attribution = settings
            .map_attribution
            .as_deref()
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned);
        if let Some(path) = &settings.map_pmtiles {
            let info = check_pmtiles(path)?;
            return Ok(Self {
                source: "pmtiles",
                url: Some(PMTILES_PATH.to_owned()),
                format: Some(if info.tile_type == "mvt" {
                    "vector"
                } else {
                    "raster"
                }),
                attribution: Some(attribution.unwrap_or_else(|| DEFAULT_ATTRIBUTION.into())),
                pmtiles: Some(info),
                help: None,
            });
        }
        if let Some(template) = settings.map_tiles.as_deref().map(str::trim) {
            if !(template.contains("{z}") && template.contains("{x}") && template.contains("{y}")) {
                anyhow::bail!("HILOT_MAP_TILES must be a URL template with {{z}}, {{x}} and {{y}}: {template}");
            }
            let path = template.split(['?', '#']).next().unwrap_or(template);
            let vector = path.ends_with(".pbf") || path.ends_with(".mvt");
            return Ok(Self {
                source: "tiles",
                url: Some(template.to_owned()),
                format: Some(if vector { "vector" } else { "raster" }),
                attribution: Some(attribution.unwrap_or_else(|| DEFAULT_ATTRIBUTION.into())),
                pmtiles: None,
                help: None,
            });
        }
        Ok(Self {
            source: "none",
            url: None,
            format: None,
            attribution: None,
            pmtiles: None,
            help: Some(NO_BASE_MAP_HELP),
        })
    }
}

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
