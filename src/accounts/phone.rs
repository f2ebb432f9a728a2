//! Phone numbers, normalised to E.164 (default country PH, as in the seed).

use phonenumber::country;

/// Parses what a user typed (`0917 123 4567`, `+63 917-123-4567`) into `+639171234567`.
pub fn normalize_phone(input: &str) -> Result<String, &'static str> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err("is required");
    }
    if trimmed.len() > 32 {
        return Err("is too long to be a phone number");
    }
    let parsed =
        phonenumber::parse(Some(country::Id::PH), trimmed).map_err(|_| "is not a phone number")?;
    if !phonenumber::is_valid(&parsed) {
        return Err("is not a valid phone number");
    }
    Ok(parsed.format().mode(phonenumber::Mode::E164).to_string())
}

/// The national significant number's digits of an E.164 number (`+639171234567` →
/// `9171234567`); empty when it does not parse.
pub fn national_digits(e164: &str) -> String {
    phonenumber::parse(None, e164)
        .map(|parsed| parsed.national().value().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_international_forms_agree() {
        assert_eq!(normalize_phone("0917 123 4567").unwrap(), "+639171234567");
        assert_eq!(
            normalize_phone("+63 917-123-4567").unwrap(),
            "+639171234567"
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert!(normalize_phone("").is_err());
        assert!(normalize_phone("hello").is_err());
        assert!(normalize_phone("123").is_err());
    }
}
