//! Pure domain rules: validation, money, positions. No I/O here.

pub mod hours;
pub mod money;
pub mod pricing;
pub mod validate;
