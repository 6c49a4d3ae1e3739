//! Errors of the domain rules.

/// An input that breaks the data contract.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A resident ID is not 18 characters of digits with an optional final `X`.
    #[error("resident ID {id:?} is malformed: it has {reason}")]
    MalformedResidentId {
        /// The rejected input.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The check character of a resident ID does not match its first 17 digits.
    #[error("resident ID {id:?} has check character {found:?}, expected {expected:?}")]
    ResidentIdCheck {
        /// The rejected input.
        id: String,
        /// The check character in the input.
        found: char,
        /// The check character computed from the first 17 digits.
        expected: char,
    },
    /// Characters 7–14 of a resident ID are not a calendar date.
    #[error("resident ID {id:?} has birth date part {part:?}, which is not a date")]
    ResidentIdBirthDate {
        /// The rejected input.
        id: String,
        /// Characters 7–14.
        part: String,
    },
    /// A node code that is not one of the city's nodes.
    #[error(
        "unknown node code {0:?}; known codes are {codes} (see DOMAIN.md)",
        codes = crate::node::known_codes("and")
    )]
    UnknownNode(String),
    /// A table name that the contract does not define.
    #[error(
        "unknown table {0:?}; tables are persons, disbursements, payroll, disability_certs, subsidy_standards"
    )]
    UnknownTable(String),
    /// A model id that is not one of the problem models.
    #[error("unknown problem model {0:?}")]
    UnknownModel(String),
}

/// Result of the domain rules.
pub type Result<T, E = Error> = std::result::Result<T, E>;
