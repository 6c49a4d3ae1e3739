//! The functions that make lists as long as their arguments say, `range`,
//! `generate_series`, `array_repeat` and `array_resize`, bounded. DataFusion makes their
//! answers outside the memory pool, at once: `range(1, 10000000000)` asks for 80 GB, and
//! the operating system would end the server that tried. Each is DataFusion's own function,
//! first refusing a call that would make more than [`MAX_LIST_VALUES`] values. They run
//! when the rows they are called for do, not at planning: a list made at planning from
//! constants is copied into every row of every batch, however long.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Int64Type, IntervalMonthDayNanoType, TimeUnit};
use datafusion::error::{DataFusionError, Result};
use datafusion::functions_nested::{
    range::{gen_series_udf, range_udf},
    repeat::array_repeat_udf,
    resize::array_resize_udf,
};
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};

/// The most values one call of such a function makes, over the rows it is called for:
/// 80 MB of 64-bit values.
pub const MAX_LIST_VALUES: u64 = 10_000_000;

/// `range`, `generate_series`, `array_repeat` and `array_resize`, bounded.
pub fn bounded_list_udfs() -> Vec<ScalarUDF> {
    [
        (range_udf(), Maker::Sequence { stop_too: false }),
        (gen_series_udf(), Maker::Sequence { stop_too: true }),
        (array_repeat_udf(), Maker::Repeat),
        (array_resize_udf(), Maker::Resize),
    ]
    .into_iter()
    .map(|(inner, maker)| {
        let signature = Signature {
            volatility: Volatility::Volatile,
            ..inner.signature().clone()
        };
        ScalarUDF::new_from_impl(Bounded {
            inner: inner.as_ref().clone(),
            signature,
            maker,
        })
    })
    .collect()
}

/// How a function's arguments size its lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Maker {
    /// `(stop)`, `(start, stop)` or `(start, stop, step)`: numbers, dates or timestamps,
    /// up to `stop`, or to it and it too.
    Sequence { stop_too: bool },
    /// `(element, count)`: `count` copies of the element.
    Repeat,
    /// `(list, size[, value])`: the list cut or padded to `size` elements.
    Resize,
}

/// A function that makes lists, refusing calls that would make too many values.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    inner: ScalarUDF,
    /// The inner function's, but volatile, so that it is not computed at planning.
    signature: Signature,
    maker: Maker,
}

impl ScalarUDFImpl for Bounded {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        // From constants alone, one list is made and copied into each row.
        let copies = match args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            true => args.number_rows as u64,
            false => 1,
        };
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let one = match self.maker {
            Maker::Sequence { stop_too } => sequence_values(&arrays, stop_too)?,
            Maker::Repeat => copies_values(&arrays[0], &arrays[1]),
            Maker::Resize => {
                // Padded with the value, or with NULLs, one value each as a size is.
                let padding = arrays.get(2).unwrap_or(&arrays[1]);
                copies_values(padding, &arrays[1]).saturating_add(leaves(&arrays[0]))
            }
        };
        let values = one.saturating_mul(copies);
        if values > MAX_LIST_VALUES {
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{}(…) would make {values} values in one call, for {} row(s), and a call \
                 makes {MAX_LIST_VALUES} at the most: narrow its bounds, or count them with \
                 arithmetic",
                self.name(),
                args.number_rows
            )));
        }
        self.inner.invoke_with_args(args)
    }
}

/// The values `count` copies of `element` make, row by row, a list's counted by the
/// values it holds at every depth.
fn copies_values(element: &ArrayRef, count: &ArrayRef) -> u64 {
    let Some(count) = count.as_primitive_opt::<Int64Type>() else {
        return 0;
    };
    (0..count.len())
        .filter(|&i| count.is_valid(i))
        .map(|i| {
            let copies = u64::try_from(count.value(i)).unwrap_or(0);
            copies.saturating_mul(leaves_of(element.as_ref(), i, i + 1).max(1))
        })
        .fold(0, u64::saturating_add)
}

/// The values of `array`, those of its lists at every depth.
fn leaves(array: &ArrayRef) -> u64 {
    leaves_of(array.as_ref(), 0, array.len())
}

/// The values rows `start..end` of `array` hold, those of its lists at every depth.
fn leaves_of(array: &dyn Array, start: usize, end: usize) -> u64 {
    match array.data_type() {
        DataType::List(_) => {
            let list = array.as_list::<i32>();
            let offsets = list.value_offsets();
            let (from, to) = (offsets[start], offsets[end]);
            leaves_of(list.values().as_ref(), from as usize, to as usize)
        }
        DataType::LargeList(_) => {
            let list = array.as_list::<i64>();
            let offsets = list.value_offsets();
            let (from, to) = (offsets[start], offsets[end]);
            leaves_of(list.values().as_ref(), from as usize, to as usize)
        }
        DataType::FixedSizeList(_, size) => {
            let list = array.as_fixed_size_list();
            let size = *size as usize;
            leaves_of(list.values().as_ref(), start * size, end * size)
        }
        _ => (end - start) as u64,
    }
}

/// The values `range` or `generate_series` makes from `args`: for each row of numbers, as
/// many as it makes; of dates or times, the most it can make, as it steps by the shortest
/// its step can be.
fn sequence_values(args: &[ArrayRef], stop_too: bool) -> Result<u64> {
    const HOUR: i128 = 3_600_000_000_000;
    let counted = match (args, args.first().map(|a| a.data_type())) {
        (_, Some(DataType::Int64)) => {
            let numbers: Vec<Vec<Option<i128>>> = args
                .iter()
                .map(|a| values(a, &DataType::Int64))
                .collect::<Result<_>>()?;
            (0..args[0].len())
                .map(|i| match numbers.as_slice() {
                    [stop] => steps(Some(0), stop[i], Some(1), stop_too),
                    [start, stop] => steps(start[i], stop[i], Some(1), stop_too),
                    [start, stop, step] => steps(start[i], stop[i], step[i], stop_too),
                    _ => None,
                })
                .collect()
        }
        ([start, stop, step], Some(DataType::Date32 | DataType::Date64)) => {
            let in_days = |a| values(a, &DataType::Date32);
            // A month is 28 days at the least.
            let units = |months, days, _| [(months, 28), (days, 1)];
            stepped(&in_days(start)?, &in_days(stop)?, step, units)?
        }
        ([start, stop, step], Some(DataType::Timestamp(_, zone))) => {
            let nanoseconds = DataType::Timestamp(TimeUnit::Nanosecond, zone.clone());
            let in_nanoseconds = |a| values(a, &nanoseconds);
            // A day is 23 hours at the least, where clocks change, and a month 28 such days.
            let units =
                |months, days, nanos| [(months, 28 * 23 * HOUR), (days, 23 * HOUR), (nanos, 1)];
            stepped(&in_nanoseconds(start)?, &in_nanoseconds(stop)?, step, units)?
        }
        _ => Vec::new(),
    };
    Ok(counted.into_iter().flatten().fold(0, u64::saturating_add))
}

/// The values of `array` as `data_type`, a type of 64 bits or fewer, as numbers.
fn values(array: &ArrayRef, data_type: &DataType) -> Result<Vec<Option<i128>>> {
    let array = cast(array, data_type)?;
    let array = cast(&array, &DataType::Int64)?;
    Ok(array
        .as_primitive::<Int64Type>()
        .iter()
        .map(|v| v.map(i128::from))
        .collect())
}

/// For each row, the most values from `start` to `stop` in steps of `step`, an interval
/// whose months, days and nanoseconds `units` weighs by the shortest each can be.
fn stepped<const N: usize>(
    start: &[Option<i128>],
    stop: &[Option<i128>],
    step: &ArrayRef,
    units: impl Fn(i128, i128, i128) -> [(i128, i128); N],
) -> Result<Vec<Option<u64>>> {
    let step = step.as_primitive::<IntervalMonthDayNanoType>();
    (0..step.len())
        .map(|i| {
            let (Some(start), Some(stop), false) = (start[i], stop[i], step.is_null(i)) else {
                return Ok(None);
            };
            let (months, days, nanos) = IntervalMonthDayNanoType::to_parts(step.value(i));
            let shortest = shortest_step(&units(months.into(), days.into(), nanos.into()))?;
            Ok(steps(
                Some(0),
                Some((stop - start).abs()),
                Some(shortest),
                true,
            ))
        })
        .collect()
}

/// The values from `start` towards `stop` in steps of `step`, up to `stop` or, with
/// `stop_too`, to it and it too: none where the step leads away from `stop`, and none for
/// a NULL argument or a step of zero, which DataFusion answers itself.
fn steps(
    start: Option<i128>,
    stop: Option<i128>,
    step: Option<i128>,
    stop_too: bool,
) -> Option<u64> {
    let (start, stop, step) = (start?, stop?, step?);
    let distance = (stop - start) * step.signum();
    let count = match (distance < 0, stop_too) {
        (true, _) => 0,
        (false, true) => distance.checked_div(step.abs())? + 1,
        (false, false) => (distance + step.abs() - 1).checked_div(step.abs())?,
    };
    Some(u64::try_from(count).unwrap_or(u64::MAX))
}

/// The shortest an interval of `parts`, each a count and the shortest its unit can be, can
/// step. Parts of both signs could step back and forth, or not at all, and are refused.
fn shortest_step(parts: &[(i128, i128)]) -> Result<i128> {
    let forward = parts.iter().any(|(count, _)| *count > 0);
    let backward = parts.iter().any(|(count, _)| *count < 0);
    if forward && backward {
        return Err(DataFusionError::Execution(
            "the step of a range of dates or times goes forward in one unit and back in \
             another (such as INTERVAL '1 month -30 days'); step in one direction"
                .to_string(),
        ));
    }
    Ok(parts.iter().map(|(count, unit)| count.abs() * unit).sum())
}

#[cfg(test)]
mod tests {
    use arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    fn bounded() -> SessionContext {
        let context = SessionContext::new();
        for udf in bounded_list_udfs() {
            context.register_udf(udf);
        }
        context
    }

    async fn answer(context: &SessionContext, sql: &str) -> Result<String> {
        let batches = context.sql(sql).await?.collect().await?;
        Ok(pretty_format_batches(&batches)?.to_string())
    }

    #[tokio::test]
    async fn lists_within_the_bound_are_datafusions_own() {
        let (ours, theirs) = (bounded(), SessionContext::new());
        for sql in [
            "SELECT range(5), range(1, 10, 3), range(10, 1, -4), generate_series(1, 4)",
            "SELECT range(a), generate_series(a, 2 * a, 2) FROM (VALUES (1), (NULL), (3)) t(a)",
            "SELECT range(DATE '2023-01-31', DATE '2023-06-01', INTERVAL '1 month'), \
             generate_series(DATE '2023-03-01', DATE '2023-01-01', INTERVAL '-20 days')",
            "SELECT generate_series(TIMESTAMP '2023-03-25 00:00:00', \
             TIMESTAMP '2023-03-26 00:00:00', INTERVAL '5 hours 30 minutes')",
            "SELECT array_repeat(7, 3), array_repeat([1, 2], 2), array_repeat('x', 0)",
            "SELECT array_resize([1, 2], 4, 0), array_resize([[1], [2, 3]], 3), \
             array_resize([1, 2, 3], 1)",
            "SELECT cardinality(range(10000000)), range(1, 3, 0) IS NULL",
        ] {
            let expected = answer(&theirs, sql).await.map_err(|e| e.to_string());
            assert_eq!(
                answer(&ours, sql).await.map_err(|e| e.to_string()),
                expected
            );
        }
    }

    #[tokio::test]
    async fn lists_past_the_bound_are_refused_before_they_are_made() {
        let context = bounded();
        for (sql, values) in [
            ("SELECT range(1, 10000000000)", "9999999999"),
            ("SELECT generate_series(-5, 10000000, 1)", "10000006"),
            // Over the rows a call is made for: 2 + 3 + … + 5,001.
            (
                "SELECT cardinality(range(a + 1)) FROM generate_series(1, 5000) t(a)",
                "12507500",
            ),
            (
                "SELECT range(DATE '1900-01-01', DATE '2100-01-01', INTERVAL '1 day') \
                 FROM generate_series(1, 200)",
                "14610000",
            ),
            (
                "SELECT range(TIMESTAMP '2000-01-01 00:00:00', TIMESTAMP '2100-01-01 00:00:00', \
                 INTERVAL '1 minute')",
                "52596001",
            ),
            ("SELECT array_repeat(0, 20000000)", "20000000"),
            // A list from constants, copied into each of 300 rows.
            (
                "SELECT range(-20000, 20000, 1) FROM generate_series(1, 300)",
                "12000000",
            ),
            ("SELECT array_repeat(range(1000), 20000)", "20000000"),
            ("SELECT array_repeat([[1, 2], [3]], 4000000)", "12000000"),
            ("SELECT array_resize([1, 2], 10000001)", "10000003"),
            ("SELECT array_resize([[1]], 10000000, [1, 2])", "20000001"),
        ] {
            let e = answer(&context, sql).await.unwrap_err().to_string();
            assert!(
                e.contains(&format!("would make {values} values in one call, for "))
                    && e.contains("row(s), and a call makes 10000000 at the most"),
                "{sql}: {e}"
            );
        }
        let e = answer(
            &context,
            "SELECT range(DATE '2023-01-01', DATE '2023-02-01', INTERVAL '1 month -30 days')",
        )
        .await
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("goes forward in one unit and back in another"),
            "{e}"
        );
    }
}
