//! Keyed tokens of identifiers: HMAC-SHA256 under the nodes' linkage key, so that equal
//! identifiers match across nodes while the coordinator, without the key, learns nothing.
//! Tokens travel from a node to the city as their bytes ([`TOKEN_TYPE`]) and take part
//! in the city's plans as text ([`as_planned`]).

use std::fmt::Write;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayBuilder, ArrayRef, AsArray, GenericListArray, OffsetSizeTrait, StringBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::compute::cast;
use arrow::datatypes::{DataType, Date32Type, Field, FieldRef};
use arrow::error::{ArrowError, Result};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of a token: a truncated HMAC-SHA256.
pub const TOKEN_BYTES: usize = 16;

/// Characters of a token in query results: its bytes in unpadded base64.
pub const TOKEN_CHARS: usize = (4 * TOKEN_BYTES).div_ceil(3);

/// The type of a column of tokens on its way from a node to the city: 16 bytes a token,
/// where their text takes 22 characters and an offset.
pub const TOKEN_TYPE: DataType = DataType::FixedSizeBinary(TOKEN_BYTES as i32);

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
}

/// `token` as unpadded URL-safe base64, the form tokens take inside the city's plans and
/// answers, written in `buffer`.
pub(crate) fn text_of<'b>(token: &[u8], buffer: &'b mut [u8; TOKEN_CHARS]) -> &'b str {
    let written = URL_SAFE_NO_PAD
        .encode_slice(token, buffer)
        .expect("room for the token's characters");
    std::str::from_utf8(&buffer[..written]).expect("base64 is ASCII")
}

/// `field` as it travels from a node: tokens, or lists of tokens, as [`TOKEN_TYPE`].
pub fn travelling(field: &Field, tokens: bool) -> Field {
    let data_type = match (tokens, field.data_type()) {
        (false, _) => return field.clone(),
        (true, DataType::List(inner)) => {
            DataType::List(Arc::new(inner.as_ref().clone().with_data_type(TOKEN_TYPE)))
        }
        (true, DataType::LargeList(inner)) => {
            DataType::LargeList(Arc::new(inner.as_ref().clone().with_data_type(TOKEN_TYPE)))
        }
        (true, _) => TOKEN_TYPE,
    };
    field.clone().with_data_type(data_type)
}

/// The first bytes of the token that stands for a number of a node's own persons, those
/// no other node holds ([`own_persons`]). A token's 16 bytes begin so by chance with a
/// probability of 2⁻⁹⁶.
const OWN_PERSONS: &[u8; 12] = b"sunlight:own";

/// The token a node lists, in the state of a distinct count of persons, in place of
/// `count` of its own persons: those no other node holds, which it alone counts.
pub(crate) fn own_persons(count: u32) -> Token {
    let mut token = [0; TOKEN_BYTES];
    token[..OWN_PERSONS.len()].copy_from_slice(OWN_PERSONS);
    token[OWN_PERSONS.len()..].copy_from_slice(&count.to_be_bytes());
    token
}

/// The number of own persons `token` stands for, if it is an [`own_persons`] token.
fn own_count(token: &[u8]) -> Option<u32> {
    let count = token.strip_prefix(OWN_PERSONS)?;
    Some(u32::from_be_bytes(count.try_into().ok()?))
}

/// `column`, which node `node` sent for `field` of a fragment's plan, as that field:
/// tokens, or lists of tokens, become their text, and in a list an [`own_persons`] token
/// becomes that many texts of `node`'s own (`140212#0`, `140212#1`, …), which no other
/// node's and no token's text equals. A column of any other type than the plan's is an
/// error.
pub fn as_planned(column: &ArrayRef, field: &Field, node: &str) -> Result<ArrayRef> {
    let planned = field.data_type();
    match (column.data_type(), planned) {
        (found, _) if found == planned => Ok(column.clone()),
        (DataType::List(sent), DataType::List(inner)) if sent.data_type() == &TOKEN_TYPE => {
            lists_of_texts(column.as_list::<i32>(), inner, node)
        }
        (DataType::LargeList(sent), DataType::LargeList(inner))
            if sent.data_type() == &TOKEN_TYPE =>
        {
            lists_of_texts(column.as_list::<i64>(), inner, node)
        }
        (DataType::List(_), DataType::List(inner)) => {
            rebuilt(column.as_list::<i32>(), inner, |v| {
                as_planned(v, inner, node)
            })
        }
        (DataType::LargeList(_), DataType::LargeList(inner)) => {
            rebuilt(column.as_list::<i64>(), inner, |v| {
                as_planned(v, inner, node)
            })
        }
        (&TOKEN_TYPE, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
            let tokens = column.as_fixed_size_binary();
            let mut text = StringBuilder::with_capacity(tokens.len(), tokens.len() * TOKEN_CHARS);
            let mut buffer = [0; TOKEN_CHARS];
            for token in tokens {
                match token {
                    Some(token) => text.append_value(text_of(token, &mut buffer)),
                    None => text.append_null(),
                }
            }
            cast(&text.finish(), planned)
        }
        (found, _) => Err(ArrowError::SchemaError(format!(
            "column {} came as {found} where the plan makes {planned}",
            field.name()
        ))),
    }
}

/// `list`, lists of tokens that `node` sent, as lists of their texts, of `field`; an
/// [`own_persons`] token becomes as many texts of `node`'s own.
fn lists_of_texts<O: OffsetSizeTrait>(
    list: &GenericListArray<O>,
    field: &FieldRef,
    node: &str,
) -> Result<ArrayRef> {
    let tokens = list.values().as_fixed_size_binary();
    let mut text = StringBuilder::with_capacity(tokens.len(), tokens.len() * TOKEN_CHARS);
    let mut offsets = Vec::with_capacity(list.len() + 1);
    offsets.push(O::usize_as(0));
    let (mut buffer, mut own) = ([0; TOKEN_CHARS], String::new());
    for bounds in list.offsets().windows(2) {
        for at in bounds[0].as_usize()..bounds[1].as_usize() {
            if tokens.is_null(at) {
                text.append_null();
                continue;
            }
            let token = tokens.value(at);
            match own_count(token) {
                Some(count) => {
                    for person in 0..count {
                        own.clear();
                        write!(own, "{node}#{person}").expect("a String takes any text");
                        text.append_value(&own);
                    }
                }
                None => text.append_value(text_of(token, &mut buffer)),
            }
        }
        offsets.push(O::usize_as(text.len()));
    }
    let values = cast(&text.finish(), field.data_type())?;
    let lists = GenericListArray::<O>::try_new(
        field.clone(),
        OffsetBuffer::new(offsets.into()),
        values,
        list.nulls().cloned(),
    )?;
    Ok(Arc::new(lists))
}

/// `list` with `f` applied to its values, as lists of `field`.
pub(crate) fn rebuilt<O: OffsetSizeTrait, E: From<ArrowError>>(
    list: &GenericListArray<O>,
    field: &FieldRef,
    f: impl Fn(&ArrayRef) -> std::result::Result<ArrayRef, E>,
) -> std::result::Result<ArrayRef, E> {
    let values = cast(&f(list.values())?, field.data_type())?;
    let rebuilt = GenericListArray::<O>::try_new(
        field.clone(),
        list.offsets().clone(),
        values,
        list.nulls().cloned(),
    )?;
    Ok(Arc::new(rebuilt))
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
    use arrow::array::{Date32Array, FixedSizeBinaryArray, Int32Array, ListArray, StringArray};
    use arrow::buffer::OffsetBuffer;

    use super::*;

    #[test]
    fn tokens_travel_as_bytes_and_are_planned_as_their_text() {
        let tokenizer = Tokenizer::new("a key of the test", 0);
        let (a, b) = (tokenizer.token("a"), tokenizer.token("b"));
        let sent: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                [Some(a), None, Some(b)].into_iter(),
                TOKEN_BYTES as i32,
            )
            .unwrap(),
        );
        let text = |t: &Token| URL_SAFE_NO_PAD.encode(t);
        let expected = StringArray::from(vec![Some(text(&a)), None, Some(text(&b))]);
        let field = Field::new("person_id", DataType::Utf8, true);
        assert_eq!(travelling(&field, true).data_type(), &TOKEN_TYPE);
        assert_eq!(travelling(&field, false), field);
        let planned = as_planned(&sent, &field, "140212").unwrap();
        assert_eq!(planned.as_string::<i32>(), &expected);
        assert!(
            planned
                .as_string::<i32>()
                .iter()
                .flatten()
                .all(|t| t.len() == TOKEN_CHARS)
        );

        // The state of a distinct count: lists of tokens become lists of their texts.
        let inner = Arc::new(Field::new_list_field(DataType::Utf8, true));
        let state = Field::new("state", DataType::List(inner.clone()), false);
        let travelling_state = travelling(&state, true);
        let DataType::List(sent_inner) = travelling_state.data_type() else {
            panic!("a list travels as a list");
        };
        let lists: ArrayRef = Arc::new(
            ListArray::try_new(
                sent_inner.clone(),
                OffsetBuffer::from_lengths([2, 1]),
                sent,
                None,
            )
            .unwrap(),
        );
        let planned = as_planned(&lists, &state, "140212").unwrap();
        let planned = planned.as_list::<i32>();
        assert_eq!(planned.value(0).as_string::<i32>(), &expected.slice(0, 2));
        assert_eq!(planned.value(1).as_string::<i32>(), &expected.slice(2, 1));

        // Anything else that differs from the plan is an error that names the column.
        let numbers: ArrayRef = Arc::new(Int32Array::from(vec![1]));
        let err = as_planned(&numbers, &field, "140212").unwrap_err();
        assert!(
            err.to_string()
                .contains("column person_id came as Int32 where the plan makes Utf8"),
            "{err}"
        );
    }

    #[test]
    fn a_count_of_own_persons_becomes_as_many_texts_of_the_node() {
        let tokenizer = Tokenizer::new("a key of the test", 0);
        let shared = tokenizer.token("shared");
        let values = [
            Some(own_persons(3)),
            Some(shared),
            Some(own_persons(2)),
            None,
        ];
        let sent: ArrayRef = Arc::new(
            FixedSizeBinaryArray::try_from_sparse_iter_with_size(
                values.into_iter(),
                TOKEN_BYTES as i32,
            )
            .unwrap(),
        );
        let inner = Arc::new(Field::new_list_field(DataType::Utf8, true));
        let state = Field::new("state", DataType::List(inner), false);
        let DataType::List(sent_inner) = travelling(&state, true).data_type().clone() else {
            panic!("a list travels as a list");
        };
        // Sliced, as a batch of a larger answer is.
        let lists: ArrayRef = Arc::new(
            ListArray::try_new(
                sent_inner,
                OffsetBuffer::from_lengths([1, 2, 1, 0]),
                sent,
                None,
            )
            .unwrap()
            .slice(1, 3),
        );
        let planned = as_planned(&lists, &state, "140212").unwrap();
        let texts = |i| -> Vec<Option<String>> {
            let list = planned.as_list::<i32>().value(i);
            let texts = list.as_string::<i32>().iter();
            texts.map(|t| t.map(str::to_string)).collect()
        };
        let own = |n: u32| Some(format!("140212#{n}"));
        let shared_text = Some(URL_SAFE_NO_PAD.encode(shared));
        assert_eq!(texts(0), [shared_text, own(0), own(1)]);
        assert_eq!(texts(1), [None]);
        assert!(planned.as_list::<i32>().value(2).is_empty());
        assert_eq!(own_count(&own_persons(70_000)), Some(70_000));
        assert_eq!(own_count(&shared), None);
    }

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
