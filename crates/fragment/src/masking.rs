//! Masking functions for display, the same at the city and on every node so that
//! fragments calling them decode anywhere: `mask_id('140215194406010011')` is
//! `1402**********0011`, `mask_name('张三')` is `张*`.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};

/// Keeps the first and last four characters of an identifier; shorter ones are all masked.
pub fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    if chars.len() <= 8 {
        return "*".repeat(chars.len());
    }
    let middle = "*".repeat(chars.len() - 8);
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 4..].iter().collect();
    format!("{head}{middle}{tail}")
}

/// Keeps the first character of a name (the family name) and masks the rest.
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => format!("{first}{}", "*".repeat(chars.count())),
        None => String::new(),
    }
}

fn text_udf(name: &str, f: fn(&str) -> String) -> ScalarUDF {
    create_udf(
        name,
        vec![DataType::Utf8],
        DataType::Utf8,
        Volatility::Immutable,
        Arc::new(move |args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            let input = cast(&arrays[0], &DataType::Utf8)?;
            let input = input
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("cast to Utf8");
            let out: StringArray = input.iter().map(|v| v.map(f)).collect();
            Ok(ColumnarValue::Array(Arc::new(out) as ArrayRef))
        }),
    )
}

/// `mask_id` and `mask_name` as SQL functions.
pub fn masking_udfs() -> Vec<ScalarUDF> {
    vec![
        text_udf("mask_id", mask_id),
        text_udf("mask_name", mask_name),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_the_contract_shows() {
        assert_eq!(mask_id("14021519440601123X"), "1402**********123X");
        assert_eq!(mask_id("1234"), "****");
        assert_eq!(mask_name("张三"), "张*");
        assert_eq!(mask_name("欧阳修远"), "欧***");
        assert_eq!(mask_name(""), "");
    }
}
