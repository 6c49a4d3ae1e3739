//! Flight SQL sessions: the `SetSessionOptions`, `GetSessionOptions` and `CloseSession`
//! actions. A session is named by the `arrow_flight_session_id` cookie and belongs to the
//! user who made it. Its options are the engine's [`SessionOption`]s, each standing for a
//! request header: a call made in a session carries the headers of the options set there,
//! unless it sends them itself, so that an option set once and a header sent with each
//! call ask the same of the engine. A session also keeps the engine's [`AnswerNote`]s of
//! its last answer, which clients that cannot read response headers get as options.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sunlight_proto::flight::session_option_value::{OptionValue, StringListValue};
use sunlight_proto::flight::set_session_options_result::{Error as OptionError, ErrorValue};
use sunlight_proto::flight::{SessionOptionValue, SetSessionOptionsResult};
use tonic::Status;
use tonic::metadata::{MetadataMap, MetadataValue};

/// The cookie that names a session.
pub const SESSION_COOKIE: &str = "arrow_flight_session_id";

/// How long a session lives after its last call.
const IDLE: Duration = Duration::from_secs(3600);

/// Most sessions held at once; the one idle longest goes first.
const MAX_SESSIONS: usize = 10_000;

/// A boolean option a client may set for its session, and the header it stands for.
#[derive(Debug, Clone, Copy)]
pub struct SessionOption {
    /// Its name in `SetSessionOptions`.
    pub name: &'static str,
    /// The request header that asks the same for one call, sent as `true` or `false`.
    pub header: &'static str,
}

/// What an answer's response header tells of it, which a session keeps for its last
/// answer as a read-only option of the same name.
#[derive(Debug, Clone, Copy)]
pub struct AnswerNote {
    /// Its name in `GetSessionOptions`.
    pub name: &'static str,
    /// The response header that tells it.
    pub header: &'static str,
    /// How the header's text reads.
    pub kind: NoteKind,
}

/// How the text of an [`AnswerNote`]'s header reads.
#[derive(Debug, Clone, Copy)]
pub enum NoteKind {
    /// A whole number.
    Number,
    /// A list, comma-separated.
    List,
}

impl AnswerNote {
    /// The note of an answer whose headers are `headers`, if they hold it and it reads.
    fn read(&self, headers: &MetadataMap) -> Option<OptionValue> {
        let text = headers.get(self.header)?.to_str().ok()?;
        Some(match self.kind {
            NoteKind::Number => OptionValue::Int64Value(text.parse().ok()?),
            NoteKind::List => OptionValue::StringListValue(StringListValue {
                values: text
                    .split(',')
                    .filter(|v| !v.is_empty())
                    .map(str::to_string)
                    .collect(),
            }),
        })
    }
}

#[derive(Debug)]
struct Session {
    user: String,
    used: Instant,
    options: BTreeMap<String, bool>,
    /// The notes of the last answer in the session.
    notes: BTreeMap<String, OptionValue>,
}

impl Session {
    /// Whether `user` may act in this session: it is theirs and has not expired.
    fn serves(&self, user: &str) -> bool {
        self.user == user && self.used.elapsed() < IDLE
    }

    /// Sets option `name`, one of `offered`, or unsets it when `value` is none.
    fn set(
        &mut self,
        offered: &[SessionOption],
        name: &str,
        value: Option<OptionValue>,
    ) -> Result<(), ErrorValue> {
        if !offered.iter().any(|o| o.name == name) {
            return Err(ErrorValue::InvalidName);
        }
        match value {
            None => self.options.remove(name),
            Some(value) => {
                let flag = flag(value).ok_or(ErrorValue::InvalidValue)?;
                self.options.insert(name.to_string(), flag)
            }
        };
        Ok(())
    }
}

/// The live sessions of one server.
#[derive(Debug)]
pub(crate) struct Sessions {
    offered: &'static [SessionOption],
    notes: &'static [AnswerNote],
    live: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    /// Sessions whose options are `offered`, and which keep the `notes` of their last
    /// answer.
    pub(crate) fn new(offered: &'static [SessionOption], notes: &'static [AnswerNote]) -> Self {
        Self {
            offered,
            notes,
            live: Mutex::new(HashMap::new()),
        }
    }

    /// Whether a session may set option `name`.
    pub(crate) fn offers(&self, name: &str) -> bool {
        self.offered.iter().any(|o| o.name == name)
    }

    /// Whether `name` is an option a session may set or a note it keeps.
    pub(crate) fn keeps(&self, name: &str) -> bool {
        self.offers(name) || self.notes.iter().any(|n| n.name == name)
    }

    /// The names of the options a session may set.
    pub(crate) fn offered(&self) -> Vec<&'static str> {
        self.offered.iter().map(|o| o.name).collect()
    }

    /// Keeps the notes of an answer, whose response headers are `answer`, in the session
    /// of the call whose headers are `headers`, if it was made in one; a call that fails
    /// leaves no notes (`answer` is then empty).
    pub(crate) fn record(&self, user: &str, headers: &MetadataMap, answer: &MetadataMap) {
        if self.notes.is_empty() {
            return;
        }
        let mut live = self.live.lock().expect("sessions lock");
        let Some(session) = callers(&live, user, headers).and_then(|id| live.get_mut(&id)) else {
            return;
        };
        session.notes = self
            .notes
            .iter()
            .filter_map(|note| Some((note.name.to_string(), note.read(answer)?)))
            .collect();
    }

    /// Adds to `headers` those of the options set in the caller's session, where the call
    /// does not send them itself.
    pub(crate) fn apply(&self, user: &str, headers: &mut MetadataMap) {
        let mut live = self.live.lock().expect("sessions lock");
        let Some(session) = callers(&live, user, headers).and_then(|id| live.get_mut(&id)) else {
            return;
        };
        session.used = Instant::now();
        for option in self.offered {
            if let (Some(value), false) = (
                session.options.get(option.name),
                headers.contains_key(option.header),
            ) {
                headers.insert(option.header, MetadataValue::from_static(text(*value)));
            }
        }
    }

    /// Sets `options` in the caller's session, made if the call names none: the errors
    /// by option name, and the cookie to send back when the session is new.
    pub(crate) fn set(
        &self,
        user: &str,
        headers: &MetadataMap,
        options: HashMap<String, SessionOptionValue>,
    ) -> (SetSessionOptionsResult, Option<String>) {
        let mut live = self.live.lock().expect("sessions lock");
        let now = Instant::now();
        live.retain(|_, s| now.duration_since(s.used) < IDLE);
        let (id, new) = match callers(&live, user, headers) {
            Some(id) => (id, false),
            None => {
                if live.len() >= MAX_SESSIONS
                    && let Some(oldest) = live
                        .iter()
                        .min_by_key(|(_, s)| s.used)
                        .map(|(k, _)| k.clone())
                {
                    live.remove(&oldest);
                }
                (new_id(), true)
            }
        };
        let session = live.entry(id.clone()).or_insert_with(|| Session {
            user: user.to_string(),
            used: now,
            options: BTreeMap::new(),
            notes: BTreeMap::new(),
        });
        session.used = now;
        let errors = options
            .into_iter()
            .filter_map(|(name, value)| {
                let error = session.set(self.offered, &name, value.option_value).err()?;
                Some((
                    name,
                    OptionError {
                        value: error as i32,
                    },
                ))
            })
            .collect();
        let cookie = new.then(|| format!("{SESSION_COOKIE}={id}"));
        (SetSessionOptionsResult { errors }, cookie)
    }

    /// The options set in the caller's session, and the notes of its last answer.
    pub(crate) fn get(
        &self,
        user: &str,
        headers: &MetadataMap,
    ) -> Result<HashMap<String, SessionOptionValue>, Status> {
        let live = self.live.lock().expect("sessions lock");
        let id = callers(&live, user, headers).ok_or_else(no_session)?;
        let session = &live[&id];
        let options = session
            .options
            .iter()
            .map(|(name, value)| (name, OptionValue::BoolValue(*value)));
        let notes = session
            .notes
            .iter()
            .map(|(name, value)| (name, value.clone()));
        Ok(options
            .chain(notes)
            .map(|(name, value)| {
                let value = SessionOptionValue {
                    option_value: Some(value),
                };
                (name.clone(), value)
            })
            .collect())
    }

    /// Ends the caller's session.
    pub(crate) fn close(&self, user: &str, headers: &MetadataMap) -> Result<(), Status> {
        let mut live = self.live.lock().expect("sessions lock");
        let id = callers(&live, user, headers).ok_or_else(no_session)?;
        live.remove(&id);
        Ok(())
    }
}

/// Adds to response `headers` the `cookie` of a session just made, if any.
pub(crate) fn send_cookie(headers: &mut MetadataMap, cookie: Option<String>) -> Result<(), Status> {
    if let Some(cookie) = cookie {
        let value = cookie
            .parse()
            .map_err(|_| Status::internal("session cookie is not a valid header value"))?;
        headers.insert("set-cookie", value);
    }
    Ok(())
}

fn no_session() -> Status {
    Status::not_found(format!(
        "the call names no live session of this user: set an option first \
         (SetSessionOptions), and send back the {SESSION_COOKIE} cookie it returns"
    ))
}

/// The session the call's cookies name, if it is live and `user`'s.
fn callers(live: &HashMap<String, Session>, user: &str, headers: &MetadataMap) -> Option<String> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|cookies| cookies.split(';'))
        .find_map(|c| c.trim().strip_prefix(SESSION_COOKIE)?.strip_prefix('='))
        .filter(|id| live.get(*id).is_some_and(|s| s.serves(user)))
        .map(str::to_string)
}

/// A boolean value, given as one or as its text, as clients that pass connection
/// strings through do.
fn flag(value: OptionValue) -> Option<bool> {
    match value {
        OptionValue::BoolValue(flag) => Some(flag),
        OptionValue::StringValue(text) => text.parse().ok(),
        _ => None,
    }
}

fn text(flag: bool) -> &'static str {
    if flag { "true" } else { "false" }
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARTIAL: SessionOption = SessionOption {
        name: "partial_results",
        header: "x-partial",
    };

    fn with_cookie(cookie: &str) -> MetadataMap {
        let mut headers = MetadataMap::new();
        headers.insert("cookie", format!("other=1; {cookie}").parse().unwrap());
        headers
    }

    fn value(option_value: OptionValue) -> SessionOptionValue {
        SessionOptionValue {
            option_value: Some(option_value),
        }
    }

    #[test]
    fn options_set_once_become_headers_of_the_sessions_calls() {
        let sessions = Sessions::new(&[PARTIAL], &[]);
        let (result, cookie) = sessions.set(
            "ana",
            &MetadataMap::new(),
            HashMap::from([
                (
                    "partial_results".into(),
                    value(OptionValue::StringValue("true".into())),
                ),
                (
                    "catalog".into(),
                    value(OptionValue::StringValue("x".into())),
                ),
            ]),
        );
        assert_eq!(
            result.errors["catalog"].value,
            ErrorValue::InvalidName as i32
        );
        assert!(!result.errors.contains_key("partial_results"));
        let cookie = cookie.expect("a new session sends its cookie");

        let mut call = with_cookie(&cookie);
        sessions.apply("ana", &mut call);
        assert_eq!(call.get("x-partial").unwrap(), "true");
        // Another user's call with the same cookie is not in the session.
        let mut stolen = with_cookie(&cookie);
        sessions.apply("bob", &mut stolen);
        assert!(stolen.get("x-partial").is_none());
        // A call's own header wins.
        let mut own = with_cookie(&cookie);
        own.insert("x-partial", MetadataValue::from_static("false"));
        sessions.apply("ana", &mut own);
        assert_eq!(own.get("x-partial").unwrap(), "false");

        let (result, again) = sessions.set(
            "ana",
            &with_cookie(&cookie),
            HashMap::from([("partial_results".into(), value(OptionValue::Int64Value(1)))]),
        );
        assert_eq!(
            result.errors["partial_results"].value,
            ErrorValue::InvalidValue as i32
        );
        assert!(again.is_none(), "the session already has its cookie");
        let options = sessions.get("ana", &with_cookie(&cookie)).unwrap();
        assert_eq!(
            options["partial_results"].option_value,
            Some(OptionValue::BoolValue(true))
        );

        sessions.close("ana", &with_cookie(&cookie)).unwrap();
        let closed = sessions.get("ana", &with_cookie(&cookie)).unwrap_err();
        assert_eq!(closed.code(), tonic::Code::NotFound);
        let mut after = with_cookie(&cookie);
        sessions.apply("ana", &mut after);
        assert!(after.get("x-partial").is_none());
    }

    #[test]
    fn a_session_keeps_the_notes_of_its_last_answer() {
        const NOTES: [AnswerNote; 2] = [
            AnswerNote {
                name: "missing_nodes",
                header: "x-missing",
                kind: NoteKind::List,
            },
            AnswerNote {
                name: "suppressed_groups",
                header: "x-suppressed",
                kind: NoteKind::Number,
            },
        ];
        let sessions = Sessions::new(&[PARTIAL], &NOTES);
        let answer = |missing: &str, suppressed: &str| {
            let mut headers = MetadataMap::new();
            headers.insert("x-missing", missing.parse().unwrap());
            headers.insert("x-suppressed", suppressed.parse().unwrap());
            headers
        };
        let (_, cookie) = sessions.set(
            "ana",
            &MetadataMap::new(),
            HashMap::from([(
                "partial_results".into(),
                value(OptionValue::BoolValue(true)),
            )]),
        );
        let call = with_cookie(&cookie.unwrap());
        let notes = |user| {
            let mut options = sessions.get(user, &call).unwrap();
            options.remove("partial_results");
            let mut notes: Vec<_> = options
                .into_iter()
                .map(|(name, v)| (name, v.option_value.unwrap()))
                .collect();
            notes.sort_by(|a, b| a.0.cmp(&b.0));
            notes
        };
        assert!(notes("ana").is_empty(), "no answer yet");

        sessions.record("ana", &call, &answer("140223,140224", "7"));
        let list = |codes: &[&str]| {
            OptionValue::StringListValue(StringListValue {
                values: codes.iter().map(ToString::to_string).collect(),
            })
        };
        assert_eq!(
            notes("ana"),
            [
                ("missing_nodes".into(), list(&["140223", "140224"])),
                ("suppressed_groups".into(), OptionValue::Int64Value(7)),
            ]
        );
        // The next answer's notes replace them; a call outside the session, or another
        // user's with the same cookie, leaves them.
        sessions.record("ana", &call, &answer("", "0"));
        sessions.record("ana", &MetadataMap::new(), &answer("140212", "1"));
        sessions.record("bob", &call, &answer("140212", "1"));
        assert_eq!(
            notes("ana"),
            [
                ("missing_nodes".into(), list(&[])),
                ("suppressed_groups".into(), OptionValue::Int64Value(0)),
            ]
        );
        // A call that fails leaves none.
        sessions.record("ana", &call, &MetadataMap::new());
        assert!(notes("ana").is_empty());
        // Notes are read, not set.
        let (result, _) = sessions.set(
            "ana",
            &call,
            HashMap::from([(
                "suppressed_groups".into(),
                value(OptionValue::Int64Value(0)),
            )]),
        );
        assert_eq!(
            result.errors["suppressed_groups"].value,
            ErrorValue::InvalidName as i32
        );
    }
}
