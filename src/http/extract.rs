//! Extractors that turn bad input into clear problem+json answers naming the field.

use actix_web::dev::Payload;
use actix_web::error::PayloadError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, FieldError};

/// A JSON body. Malformed JSON answers 400; a well-formed body with a missing or mistyped
/// field answers 422 naming that field (`location.lat`), which actix's own `Json` cannot do.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let content_type_ok = is_json_content_type(req);
        let body = web::Bytes::from_request(req, payload);
        let limit = body_limit(req);
        Box::pin(async move {
            if !content_type_ok {
                return Err(ApiError::UnsupportedMediaType(
                    "send the body as application/json".into(),
                ));
            }
            let bytes = body.await.map_err(|error| body_error(&error, limit))?;
            parse_json(&bytes).map(Json)
        })
    }
}

/// A raw body (read within the size cap and the deadline), for handlers that parse it twice.
#[derive(Debug)]
pub struct RawBody(pub web::Bytes);

impl FromRequest for RawBody {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let body = web::Bytes::from_request(req, payload);
        let limit = body_limit(req);
        Box::pin(async move {
            body.await
                .map(RawBody)
                .map_err(|error| body_error(&error, limit))
        })
    }
}

fn body_limit(req: &HttpRequest) -> usize {
    req.app_data::<BodyLimit>()
        .map_or(crate::config::DEFAULT_MAX_BODY_BYTES, |l| l.0)
}

/// A body that could not be read: too large (413), too slow (408), or cut off (400).
fn body_error(error: &actix_web::Error, limit: usize) -> ApiError {
    match error.as_error::<PayloadError>() {
        Some(PayloadError::Overflow) => ApiError::PayloadTooLarge { limit },
        Some(PayloadError::Io(io)) if io.kind() == std::io::ErrorKind::TimedOut => {
            ApiError::RequestTimeout {
                limit_s: super::body::deadline_secs(io),
            }
        }
        _ => ApiError::BadRequest(format!("could not read the request body: {error}")),
    }
}

/// The body size cap, stored beside actix's `PayloadConfig` so errors can quote it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

fn is_json_content_type(req: &HttpRequest) -> bool {
    match req.headers().get(header::CONTENT_TYPE) {
        // A missing content type is accepted: many simple clients omit it for JSON.
        None => true,
        Some(value) => value
            .to_str()
            .map(|v| {
                let essence = v
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                essence == "application/json" || essence.ends_with("+json")
            })
            .unwrap_or(false),
    }
}

/// Parses JSON, classifying failures as 400 (not JSON) or 422 (JSON of the wrong shape).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest(
            "the request body is empty; expected a JSON object".into(),
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|error| {
        let path = error.path().to_string();
        let inner = error.into_inner();
        match inner.classify() {
            serde_json::error::Category::Data => {
                let (field, message) = field_and_message(&path, &inner.to_string());
                ApiError::Validation {
                    detail: format!("{field}: {message}"),
                    errors: vec![FieldError::new(field, message)],
                }
            }
            // `1e999` is valid JSON (the grammar sets no range) that fits no number type: the
            // field's value is wrong, not the syntax, so name the field.
            serde_json::error::Category::Syntax
                if path != "." && inner.to_string().starts_with("number out of range") =>
            {
                ApiError::Validation {
                    detail: format!("{path}: is out of range"),
                    errors: vec![FieldError::new(path, "is out of range")],
                }
            }
            _ => ApiError::BadRequest(format!("malformed JSON: {inner}")),
        }
    })?;
    deserializer
        .end()
        .map_err(|e| ApiError::BadRequest(format!("malformed JSON: {e}")))?;
    refuse_nul(bytes)?;
    Ok(value)
}

/// PostgreSQL stores no NUL character (U+0000) in text or JSON: a body holding one anywhere is
/// refused with a 422 naming the field, before any handler tries to store it. Cheap for the
/// bodies without one: only a body containing the escape `\u0000` is walked.
pub fn refuse_nul(bytes: &[u8]) -> Result<(), ApiError> {
    const ESCAPE: &[u8] = b"\\u0000";
    if !bytes.windows(ESCAPE.len()).any(|w| w == ESCAPE) {
        return Ok(());
    }
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(());
    };
    match nul_path(&value, String::new()) {
        Some(path) => {
            let field = if path.is_empty() {
                "body".to_owned()
            } else {
                path
            };
            Err(ApiError::invalid(
                field,
                "must not contain the NUL character (U+0000)",
            ))
        }
        None => Ok(()),
    }
}

/// The path (`location.address`, `specializations[2]`) of the first string holding a NUL.
fn nul_path(value: &serde_json::Value, path: String) -> Option<String> {
    use serde_json::Value;
    match value {
        Value::String(text) => text.contains('\0').then_some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| nul_path(item, format!("{path}[{i}]"))),
        Value::Object(fields) => fields.iter().find_map(|(key, item)| {
            let at = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.contains('\0') {
                return Some(if path.is_empty() {
                    "body".into()
                } else {
                    path.clone()
                });
            }
            nul_path(item, at)
        }),
        _ => None,
    }
}

/// serde reports a missing field at its parent's path; name the field itself instead.
fn field_and_message(path: &str, message: &str) -> (String, String) {
    let message = strip_position(message);
    let parent = if path == "." { "" } else { path };
    if let Some(rest) = message.strip_prefix("missing field `") {
        let name = rest.split('`').next().unwrap_or(rest);
        let field = if parent.is_empty() {
            name.to_owned()
        } else {
            format!("{parent}.{name}")
        };
        return (field, "is required".to_owned());
    }
    let field = if parent.is_empty() { "body" } else { parent };
    (field.to_owned(), message.to_owned())
}

/// serde_json appends " at line 1 column 17"; clients need the field, not the column.
fn strip_position(message: &str) -> &str {
    message
        .rfind(" at line ")
        .map_or(message, |at| &message[..at])
}

/// Query strings, parsed with the same field-naming errors as bodies (422).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for Query<T> {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(parse_query(req.query_string()).map(Query))
    }
}

pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    if let Some((key, _)) = url::form_urlencoded::parse(query.as_bytes())
        .find(|(key, value)| key.contains('\0') || value.contains('\0'))
    {
        return Err(ApiError::invalid(
            key.replace('\0', ""),
            "must not contain the NUL character (U+0000)",
        ));
    }
    let deserializer =
        serde_urlencoded::Deserializer::new(url::form_urlencoded::parse(query.as_bytes()));
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        let (field, message) = field_and_message(&path, &error.into_inner().to_string());
        ApiError::Validation {
            detail: format!("{field}: {message}"),
            errors: vec![FieldError::new(field, message)],
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Location {
        lat: f64,
        lng: f64,
    }

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        location: Location,
    }

    fn field_of(error: ApiError) -> String {
        match error {
            ApiError::Validation { errors, .. } => errors[0].field.clone(),
            other => panic!("expected a validation error, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_bad_request() {
        assert!(matches!(
            parse_json::<Body>(b"{\"name\": "),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            parse_json::<Body>(b""),
            Err(ApiError::BadRequest(_))
        ));
    }

    #[test]
    fn a_number_too_large_for_its_type_is_named() {
        let error =
            parse_json::<Body>(br#"{"name":"a","location":{"lat":1e999,"lng":1}}"#).unwrap_err();
        assert_eq!(field_of(error), "location.lat");
    }

    #[test]
    fn missing_nested_field_is_named() {
        let error = parse_json::<Body>(br#"{"name":"a","location":{"lat":1}}"#).unwrap_err();
        assert_eq!(field_of(error), "location.lng");
    }

    #[test]
    fn mistyped_field_is_named() {
        let error =
            parse_json::<Body>(br#"{"name":"a","location":{"lat":"x","lng":1}}"#).unwrap_err();
        assert_eq!(field_of(error), "location.lat");
    }

    #[test]
    fn a_nul_anywhere_is_a_422_naming_the_field() {
        let error =
            parse_json::<serde_json::Value>(br#"{"a":{"b":["ok","x\u0000y"]}}"#).unwrap_err();
        assert_eq!(field_of(error), "a.b[1]");
        // An escaped backslash followed by "u0000" is plain text, not a NUL.
        assert!(parse_json::<serde_json::Value>(br#"{"a":"\\u0000"}"#).is_ok());
        let error = parse_query::<serde_json::Value>("code=a%00b").unwrap_err();
        assert_eq!(field_of(error), "code");
    }

    #[test]
    fn query_errors_name_the_field() {
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Q {
            lat: f64,
        }
        assert_eq!(field_of(parse_query::<Q>("lat=abc").unwrap_err()), "lat");
        assert_eq!(field_of(parse_query::<Q>("").unwrap_err()), "lat");
    }
}
