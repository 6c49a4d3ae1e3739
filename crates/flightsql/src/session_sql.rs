//! SQL about the caller's session, which the server answers itself rather than its
//! engine, for SQL tools that send statements only: `SET name = value` sets an option of
//! the session, as the `SetSessionOptions` action does, and `SHOW name` reads an option or
//! a note of the session's last answer, as `GetSessionOptions` does.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement as SqlStatement, Value};
use futures::{StreamExt, stream};
use sunlight_proto::flight::SessionOptionValue;
use sunlight_proto::flight::session_option_value::OptionValue;
use tonic::Status;
use tonic::metadata::MetadataMap;

use crate::session::{SESSION_COOKIE, Sessions, send_cookie};
use crate::statement::on_stack_for;
use crate::{Answer, StatementSchemas};

/// A statement about the caller's session.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum SessionStatement {
    /// `SET name = value`: sets an option the session offers.
    Set { name: String, value: bool },
    /// `SHOW name`: an option of the session, or a note of its last answer.
    Show { name: String },
}

impl SessionStatement {
    /// `sql` as a statement about the session, if it is one: any `SET` (the engines take
    /// none of their own), refused by name unless it sets an option `sessions` offer to
    /// true or false, and a `SHOW` of an option or a note `sessions` keep.
    pub(crate) fn parse(sql: &str, sessions: &Sessions) -> Option<Result<Self, Status>> {
        // Every query comes this way, twice: most name neither keyword, and are not parsed
        // here at all.
        let names = |keyword: &[u8]| {
            sql.as_bytes()
                .windows(keyword.len())
                .any(|w| w.eq_ignore_ascii_case(keyword))
        };
        if !names(b"set") && !names(b"show") {
            return None;
        }
        // Parsed on a stack deep enough for any expression, as every statement is.
        on_stack_for(sql, || {
            let mut statements = DFParser::parse_sql(sql).ok()?;
            let (Some(DfStatement::Statement(statement)), None) =
                (statements.pop_front(), statements.pop_front())
            else {
                return None;
            };
            match *statement {
                SqlStatement::Set(Set::SingleAssignment {
                    variable, values, ..
                }) => {
                    let name = variable.to_string().to_lowercase();
                    Some(set(sessions, name, &values))
                }
                SqlStatement::Set(other) => Some(Err(not_settable(sessions, &other.to_string()))),
                SqlStatement::ShowVariable { variable } => {
                    let name = variable
                        .iter()
                        .map(|i| i.value.to_lowercase())
                        .collect::<Vec<_>>()
                        .join(".");
                    sessions.keeps(&name).then_some(Ok(Self::Show { name }))
                }
                _ => None,
            }
        })
    }

    /// The schemas of its answer: none for `SET`, the name and value for `SHOW`.
    pub(crate) fn schemas(&self) -> StatementSchemas {
        StatementSchemas {
            dataset: self.schema(),
            parameters: Arc::new(Schema::empty()),
        }
    }

    fn schema(&self) -> SchemaRef {
        match self {
            Self::Set { .. } => Arc::new(Schema::empty()),
            Self::Show { .. } => Arc::new(Schema::new(vec![
                Field::new("name", DataType::Utf8, false),
                Field::new("value", DataType::Utf8, true),
            ])),
        }
    }

    /// Sets the option of a `SET` in the session of `user` that `headers` name, made
    /// where they name none: the cookie of a session so made. Such a statement takes
    /// effect as soon as a client asks to run it (`GetFlightInfo`), as well as when it
    /// fetches the answer, since a client need not fetch an empty answer, and one that
    /// does then holds the cookie before it fetches. Preparing it sets nothing.
    pub(crate) fn take_effect(
        &self,
        sessions: &Sessions,
        user: &str,
        headers: &MetadataMap,
    ) -> Result<Option<String>, Status> {
        let Self::Set { name, value } = self else {
            return Ok(None);
        };
        let option = SessionOptionValue {
            option_value: Some(OptionValue::BoolValue(*value)),
        };
        let (result, cookie) = sessions.set(user, headers, HashMap::from([(name.clone(), option)]));
        match result.errors.is_empty() {
            true => Ok(cookie),
            false => Err(not_settable(sessions, name)),
        }
    }

    /// Runs it in the session of `user` that `headers` name: the answer of a `SET` that
    /// made the session carries its cookie.
    pub(crate) fn run(
        &self,
        sessions: &Sessions,
        user: &str,
        headers: &MetadataMap,
    ) -> Result<Answer, Status> {
        let schema = self.schema();
        let mut answer = Answer {
            schema: schema.clone(),
            batches: stream::empty().boxed(),
            headers: MetadataMap::new(),
        };
        send_cookie(
            &mut answer.headers,
            self.take_effect(sessions, user, headers)?,
        )?;
        if let Self::Show { name } = self {
            let value = shown(sessions, user, headers, name);
            let batch = RecordBatch::try_new(
                schema,
                vec![
                    Arc::new(StringArray::from(vec![name.as_str()])),
                    Arc::new(StringArray::from(vec![value])),
                ],
            )
            .map_err(|e| Status::internal(e.to_string()))?;
            answer.batches = stream::iter([Ok(batch)]).boxed();
        }
        Ok(answer)
    }
}

/// `SET name = values`, where `name` is an option `sessions` offer and `values` one
/// boolean: `true` or `false`, `on` or `off`, bare or quoted.
fn set(sessions: &Sessions, name: String, values: &[Expr]) -> Result<SessionStatement, Status> {
    if !sessions.offers(&name) {
        return Err(not_settable(sessions, &name));
    }
    let text = match values {
        [Expr::Value(v)] => match &v.value {
            Value::Boolean(flag) => Some(flag.to_string()),
            Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => Some(text.clone()),
            _ => None,
        },
        [Expr::Identifier(ident)] => Some(ident.value.clone()),
        _ => None,
    };
    let value = match text.map(|t| t.to_lowercase()).as_deref() {
        Some("true" | "on") => true,
        Some("false" | "off") => false,
        _ => {
            let given = values.iter().map(ToString::to_string).collect::<Vec<_>>();
            return Err(Status::invalid_argument(format!(
                "SET {name} takes true or false, not {}",
                given.join(", ")
            )));
        }
    };
    Ok(SessionStatement::Set { name, value })
}

/// The value of option or note `name` in the session of `user` that `headers` name: an
/// option not set there is false; a note is NULL until an answer in the session leaves
/// one, and then reads as its text (a list comma-separated).
fn shown(sessions: &Sessions, user: &str, headers: &MetadataMap, name: &str) -> Option<String> {
    let values = sessions.get(user, headers).unwrap_or_default();
    match values.get(name).and_then(|v| v.option_value.clone()) {
        Some(OptionValue::BoolValue(flag)) => Some(flag.to_string()),
        Some(OptionValue::Int64Value(number)) => Some(number.to_string()),
        Some(OptionValue::StringListValue(list)) => Some(list.values.join(",")),
        Some(OptionValue::StringValue(text)) => Some(text),
        Some(OptionValue::DoubleValue(number)) => Some(number.to_string()),
        None => sessions.offers(name).then(|| false.to_string()),
    }
}

/// The refusal of a `SET` of `what`, which names what a session may set.
fn not_settable(sessions: &Sessions, what: &str) -> Status {
    let offered = sessions.offered();
    let how = match offered.first() {
        Some(first) => format!(
            "a session here may set {} only, to true or false (SET {first} = true), and \
             keeps it for the calls that send back its {SESSION_COOKIE} cookie",
            offered.join(", ")
        ),
        None => "this server offers no session options".to_string(),
    };
    Status::invalid_argument(format!("SET {what} is not supported: {how}"))
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use futures::TryStreamExt;

    use super::*;
    use crate::session::{AnswerNote, NoteKind, SessionOption};

    const OFFERED: [SessionOption; 1] = [SessionOption {
        name: "partial_results",
        header: "x-partial",
    }];

    const NOTES: [AnswerNote; 1] = [AnswerNote {
        name: "missing_nodes",
        header: "x-missing",
        kind: NoteKind::List,
    }];

    fn parsed(sql: &str) -> Option<Result<SessionStatement, Status>> {
        SessionStatement::parse(sql, &Sessions::new(&OFFERED, &NOTES))
    }

    fn set(name: &str, value: bool) -> SessionStatement {
        SessionStatement::Set {
            name: name.into(),
            value,
        }
    }

    async fn rows(answer: Answer) -> Vec<(String, Option<String>)> {
        let batches: Vec<RecordBatch> = answer.batches.try_collect().await.unwrap();
        batches
            .iter()
            .flat_map(|b| {
                let (names, values) = (b.column(0).as_string::<i32>(), b.column(1));
                let values = values.as_string::<i32>();
                (0..b.num_rows()).map(move |i| {
                    let value = values.is_valid(i).then(|| values.value(i).to_string());
                    (names.value(i).to_string(), value)
                })
            })
            .collect()
    }

    #[test]
    fn set_and_show_of_the_sessions_names_are_the_servers_and_the_rest_the_engines() {
        assert_eq!(
            parsed("SET partial_results = true").unwrap().unwrap(),
            set("partial_results", true)
        );
        assert_eq!(
            parsed("set PARTIAL_RESULTS to 'off'").unwrap().unwrap(),
            set("partial_results", false)
        );
        assert_eq!(
            parsed("SHOW missing_nodes").unwrap().unwrap(),
            SessionStatement::Show {
                name: "missing_nodes".into()
            }
        );
        for engines in [
            "SELECT 1",
            "SHOW TABLES",
            "SHOW datafusion.execution.batch_size",
            "SELECT 1; SET partial_results = true",
            "SELEC 1",
        ] {
            assert!(parsed(engines).is_none(), "{engines}");
        }
        let other = parsed("SET datafusion.execution.batch_size = 10")
            .unwrap()
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::InvalidArgument);
        assert!(
            other.message().contains("datafusion.execution.batch_size")
                && other.message().contains("partial_results only"),
            "{other}"
        );
        let value = parsed("SET partial_results = 2").unwrap().unwrap_err();
        assert!(value.message().contains("true or false, not 2"), "{value}");
        let note = parsed("SET missing_nodes = true").unwrap().unwrap_err();
        assert!(note.message().contains("SET missing_nodes"), "{note}");
        let none = SessionStatement::parse("SET x = 1", &Sessions::new(&[], &[]));
        assert!(
            none.unwrap()
                .unwrap_err()
                .message()
                .contains("offers no session options")
        );
    }

    #[tokio::test]
    async fn set_makes_a_session_whose_calls_show_it() {
        let sessions = Sessions::new(&OFFERED, &NOTES);
        let show = |name: &str| SessionStatement::Show { name: name.into() };
        let outside = MetadataMap::new();
        let unset = show("partial_results").run(&sessions, "ana", &outside);
        assert_eq!(
            rows(unset.unwrap()).await,
            [("partial_results".into(), Some("false".into()))]
        );

        let answer = set("partial_results", true)
            .run(&sessions, "ana", &outside)
            .unwrap();
        assert!(answer.schema.fields().is_empty());
        let cookie = answer.headers.get("set-cookie").expect("a new session");
        let mut call = MetadataMap::new();
        call.insert("cookie", cookie.to_str().unwrap().parse().unwrap());

        let mut headers = call.clone();
        sessions.apply("ana", &mut headers);
        assert_eq!(headers.get("x-partial").unwrap(), "true");
        let shown = show("partial_results")
            .run(&sessions, "ana", &call)
            .unwrap();
        assert_eq!(
            rows(shown).await,
            [("partial_results".into(), Some("true".into()))]
        );
        // A note reads NULL until an answer leaves one.
        let note = show("missing_nodes").run(&sessions, "ana", &call).unwrap();
        assert_eq!(rows(note).await, [("missing_nodes".into(), None)]);
        let mut answered = MetadataMap::new();
        answered.insert("x-missing", "140223,140224".parse().unwrap());
        sessions.record("ana", &call, &answered);
        let note = show("missing_nodes").run(&sessions, "ana", &call).unwrap();
        assert_eq!(
            rows(note).await,
            [("missing_nodes".into(), Some("140223,140224".into()))]
        );

        // The session has its cookie: setting again sends none.
        let again = set("partial_results", false)
            .run(&sessions, "ana", &call)
            .unwrap();
        assert!(again.headers.get("set-cookie").is_none());
        let shown = show("partial_results")
            .run(&sessions, "ana", &call)
            .unwrap();
        assert_eq!(
            rows(shown).await,
            [("partial_results".into(), Some("false".into()))]
        );
    }
}
