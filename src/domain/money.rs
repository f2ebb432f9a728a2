//! Money: exact decimals, never floats. On the wire, decimal strings with two places
//! (`"1150.00"`); requests may send a JSON number or a string.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serializer};
use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};

/// Currency of every amount (the seed's default).
pub const CURRENCY: &str = "PHP";

/// Rounds to centavos, half away from zero (how receipts are rounded).
pub fn round_money(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(2, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
}

/// Serialises as `"1150.00"`.
pub fn serialize<S: Serializer>(amount: &Decimal, serializer: S) -> Result<S::Ok, S::Error> {
    let mut rounded = round_money(*amount);
    rounded.rescale(2);
    serializer.serialize_str(&rounded.to_string())
}

/// Accepts `1150`, `1150.5` or `"1150.50"`; refuses more than two decimal places.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Decimal, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(serde_json::Number),
        Text(String),
    }
    let text = match Raw::deserialize(deserializer)? {
        Raw::Number(n) => n.to_string(),
        Raw::Text(s) => s,
    };
    parse_amount(&text).map_err(serde::de::Error::custom)
}

pub fn parse_amount(text: &str) -> Result<Decimal, String> {
    // rust_decimal reads `1_0` as 10; an amount is plain digits.
    if text.contains('_') {
        return Err(format!("{text:?} is not a decimal amount"));
    }
    let value = Decimal::from_str(text.trim())
        .or_else(|_| Decimal::from_scientific(text.trim()))
        .map_err(|_| format!("{text:?} is not a decimal amount"))?;
    if value.normalize().scale() > 2 {
        return Err("must have at most two decimal places".to_owned());
    }
    Ok(value)
}

/// OpenAPI schema of an amount in a request: a decimal string or a JSON number, as
/// [`deserialize`] accepts both; `nullable` for an optional amount. For `schema_with`, which
/// drops the field's doc comment, so `description` is given here.
pub fn input_schema(description: &str, nullable: bool) -> utoipa::openapi::Object {
    let mut types = vec![Type::String, Type::Number];
    if nullable {
        types.push(Type::Null);
    }
    ObjectBuilder::new()
        .schema_type(SchemaType::Array(types))
        .description(Some(format!(
            "{description} A decimal string (`\"1150.00\"`) or a number, at most two decimal places."
        )))
        .examples([serde_json::json!("1150.00")])
        .build()
}

/// `Option<Decimal>` with the same wire form.
pub mod option {
    use rust_decimal::Decimal;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        amount: &Option<Decimal>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match amount {
            Some(a) => super::serialize(a, serializer),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Decimal>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(deserialize_with = "super::deserialize")] Decimal);
        Option::<Wrap>::deserialize(deserializer).map(|o| o.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_exactly_and_refuse_sub_centavo_precision() {
        assert_eq!(parse_amount("1150.5").unwrap().to_string(), "1150.5");
        assert_eq!(parse_amount("1150").unwrap().to_string(), "1150");
        assert!(parse_amount("1.005").is_err());
        assert!(parse_amount("1_0").is_err());
        assert!(parse_amount("abc").is_err());
    }

    #[test]
    fn amounts_serialise_with_two_places() {
        #[derive(serde::Serialize)]
        struct S(#[serde(serialize_with = "serialize")] Decimal);
        assert_eq!(
            serde_json::to_string(&S(Decimal::from(1150))).unwrap(),
            "\"1150.00\""
        );
    }
}
