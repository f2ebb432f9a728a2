//! Field checks shared by every endpoint; each failure names the field as the client sent it.

use crate::error::FieldError;

/// Latitude within -90..90 and longitude within -180..180, both finite.
pub fn check_lat_lng(
    errors: &mut Vec<FieldError>,
    lat_field: &str,
    lng_field: &str,
    lat: f64,
    lng: f64,
) {
    if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
        errors.push(FieldError::new(
            lat_field,
            "must be a latitude between -90 and 90",
        ));
    }
    if !lng.is_finite() || !(-180.0..=180.0).contains(&lng) {
        errors.push(FieldError::new(
            lng_field,
            "must be a longitude between -180 and 180",
        ));
    }
}

/// Trimmed length in characters between `min` and `max`.
pub fn check_text(errors: &mut Vec<FieldError>, field: &str, value: &str, min: usize, max: usize) {
    let len = value.trim().chars().count();
    if len < min {
        errors.push(FieldError::new(
            field,
            if min == 1 {
                "must not be empty".to_owned()
            } else {
                format!("must be at least {min} characters")
            },
        ));
    } else if len > max {
        errors.push(FieldError::new(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    if let Some(problem) = unsafe_text(value) {
        errors.push(FieldError::new(field, problem));
    }
}

/// What is wrong with text people will read (names, addresses, messages), if anything:
/// control characters (a newline is fine); characters that reverse or re-order what follows
/// (the bidirectional overrides and isolates, which can make `gnp.exe` read as `exe.png` on a
/// dispatcher's screen); and text with nothing visible in it (zero-width spaces and their like,
/// which make an empty-looking name). Joiners inside emoji stay allowed.
pub fn unsafe_text(value: &str) -> Option<&'static str> {
    if value.chars().any(|c| c.is_control() && c != '\n') {
        return Some("must not contain control characters");
    }
    if value.chars().any(is_bidi_control) {
        return Some("must not contain bidirectional control characters");
    }
    let trimmed = value.trim();
    if !trimmed.is_empty()
        && trimmed
            .chars()
            .all(|c| c.is_whitespace() || is_invisible(c))
    {
        return Some("must contain a visible character");
    }
    None
}

/// U+202A–U+202E (embeddings and overrides), U+2066–U+2069 (isolates), U+061C, U+200E, U+200F.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}' | '\u{200E}' | '\u{200F}')
}

/// Characters that draw nothing.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200D}'
            | '\u{2060}'..='\u{2064}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
    ) || is_bidi_control(c)
}

/// `Some(trimmed)` for a non-blank optional string.
pub fn optional_text(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

/// A whole number within `min..=max`.
pub fn check_range<T: PartialOrd + std::fmt::Display + Copy>(
    errors: &mut Vec<FieldError>,
    field: &str,
    value: T,
    min: T,
    max: T,
) {
    if value < min || value > max {
        errors.push(FieldError::new(
            field,
            format!("must be between {min} and {max}"),
        ));
    }
}

/// The seed stores coordinates as DECIMAL(10,8)/(11,8): keep 8 decimals (about 1 mm).
pub fn coordinate(value: f64) -> rust_decimal::Decimal {
    rust_decimal::Decimal::from_f64_retain(value)
        .unwrap_or_default()
        .round_dp(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coordinates_out_of_range_or_nan_are_named() {
        let mut errors = Vec::new();
        check_lat_lng(&mut errors, "lat", "lng", 91.0, f64::NAN);
        let fields: Vec<_> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["lat", "lng"]);
        errors.clear();
        check_lat_lng(&mut errors, "lat", "lng", -90.0, 180.0);
        assert!(errors.is_empty());
    }

    #[test]
    fn text_bounds_and_control_characters() {
        let mut errors = Vec::new();
        check_text(&mut errors, "city", "  ", 1, 10);
        check_text(&mut errors, "city", "a very long city name", 1, 10);
        check_text(&mut errors, "city", "ok\u{0}", 1, 10);
        assert_eq!(errors.len(), 3);
    }

    #[test]
    fn text_that_reorders_or_shows_nothing_is_refused_and_emoji_are_kept() {
        use super::unsafe_text;
        assert_eq!(unsafe_text("Maria Santos"), None);
        assert_eq!(unsafe_text("line one\nline two"), None);
        // A family emoji is joined with U+200D.
        assert_eq!(
            unsafe_text("Thanks \u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}"),
            None
        );
        assert!(unsafe_text("\u{202E}gnp.exe").is_some());
        assert!(unsafe_text("a\u{2067}b").is_some());
        assert!(unsafe_text("\u{200B}").is_some());
        assert!(unsafe_text(" \u{200B}\u{FEFF} ").is_some());
        assert!(unsafe_text("tab\there").is_some());
    }
}
