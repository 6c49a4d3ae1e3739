//! Keyed tokens of identifiers: HMAC-SHA256 under the nodes' linkage key, so that equal
//! identifiers match across nodes while the coordinator, without the key, learns nothing.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type};
use arrow::error::Result;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a token: a truncated HMAC-SHA256.
pub const TOKEN_BYTES: usize = 16;

/// Characters of a token in query results: its bytes in unpadded base64.
pub const TOKEN_CHARS: usize = (4 * TOKEN_BYTES).div_ceil(3);

/// A token.
pub type Token = [u8; TOKEN_BYTES];

/// Makes tokens under one key and epoch.
#[derive(Clone)]
pub struct Tokenizer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Tokens under `key` for key `epoch`.
    pub fn new(key: &str, epoch: u32) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
        mac.update(&epoch.to_be_bytes());
        Self { mac }
    }

    /// The token of `value`.
    pub fn token(&self, value: &str) -> Token {
        self.token_of(&[value.as_bytes()])
    }

    /// The token of the group whose key, in Arrow's row format, is `key`: 64 bits, set
    /// apart from identifiers' tokens, so that nodes name the same group alike.
    pub fn group(&self, key: &[u8]) -> u64 {
        let token = self.token_of(&[b"sunlight group\0", key]);
        u64::from_be_bytes(token[..8].try_into().expect("16 bytes"))
    }

    fn token_of(&self, parts: &[&[u8]]) -> Token {
        let mut mac = self.mac.clone();
        for part in parts {
            mac.update(part);
        }
        let digest = mac.finalize().into_bytes();
        digest[..TOKEN_BYTES].try_into().expect("digest is longer")
    }

    /// The token of `value` as unpadded URL-safe base64, the form tokens take inside
    /// query results, written in `buffer`.
    pub fn text<'b>(&self, value: &str, buffer: &'b mut [u8; TOKEN_CHARS]) -> &'b str {
        let written = URL_SAFE_NO_PAD
            .encode_slice(self.token(value), buffer)
            .expect("room for the token's characters");
        std::str::from_utf8(&buffer[..written]).expect("base64 is ASCII")
    }
}

/// Whether each value of type `t` has one text, and each text one value: a distinct count
/// of the values is one of their texts.
pub fn one_text_each(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Decimal128(..)
                | DataType::Decimal256(..)
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(..)
        )
}

/// `values` as the text their tokens are made of: as Arrow casts them to `Utf8`. Dates
/// of the years 0 to 9999 are written here, many times faster than Arrow writes them.
pub fn token_text(values: &ArrayRef) -> Result<ArrayRef> {
    let DataType::Date32 = values.data_type() else {
        return cast(values, &DataType::Utf8);
    };
    let dates = values.as_primitive::<Date32Type>();
    let mut text = StringBuilder::with_capacity(dates.len(), dates.len() * 10);
    for date in dates {
        match date.map(iso_date) {
            Some(Some(day)) => text.append_value(std::str::from_utf8(&day).expect("digits")),
            Some(None) => return cast(values, &DataType::Utf8),
            None => text.append_null(),
        }
    }
    Ok(Arc::new(text.finish()))
}

/// `YYYY-MM-DD` of the day `days` after 1970-01-01, for the years 0 to 9999: the civil
/// calendar of the proleptic Gregorian one, by eras of 400 years.
fn iso_date(days: i32) -> Option<[u8; 10]> {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let march_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * march_month + 2) / 5 + 1;
    let month = if march_month < 10 {
        march_month + 3
    } else {
        march_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut text = *b"0000-00-00";
    for (at, value, width) in [(0, year, 4), (5, month, 2), (8, day, 2)] {
        let mut value = value;
        for i in (at..at + width).rev() {
            text[i] = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use arrow::array::Date32Array;

    use super::*;

    #[test]
    fn dates_are_written_as_arrow_writes_them() {
        // From year 0 to past 9999, in steps that meet every month, and the edges.
        let mut days: Vec<Option<i32>> = (-719_528..2_932_897).step_by(7).map(Some).collect();
        days.extend([
            Some(-719_528),
            Some(2_932_896),
            Some(0),
            Some(-1),
            None,
            Some(19_782),
        ]);
        let within: ArrayRef = Arc::new(Date32Array::from(days));
        let expected = cast(&within, &DataType::Utf8).unwrap();
        assert_eq!(token_text(&within).unwrap().as_ref(), expected.as_ref());
        // A date past the year 9999 leaves the whole array to Arrow.
        let beyond: ArrayRef = Arc::new(Date32Array::from(vec![Some(0), Some(2_932_897)]));
        let expected = cast(&beyond, &DataType::Utf8).unwrap();
        assert_eq!(token_text(&beyond).unwrap().as_ref(), expected.as_ref());
    }
}
