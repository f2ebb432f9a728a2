//! The dispatch page's base map: tiles from a configured URL template (`HILOT_MAP_TILES`), or a
//! local PMTiles archive Hilot serves itself (`HILOT_MAP_PMTILES`) for the page to read with
//! HTTP range requests (no tile server, no internet); with neither, a plain grid and a note on
//! how to add streets.

use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

use crate::config::Settings;

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
