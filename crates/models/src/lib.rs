//! Problem model packages: a folder with `model.toml` (id, version, titles, description,
//! severity, parameters, linkage) and `rule.sql`, the node-local rule over DOMAIN.md's
//! tables. The seven models of DOMAIN.md ship built in.
//!
//! A local rule returns the `payment_id` of each hit. A rule that spans nodes declares a
//! `[linkage]` step and returns link columns that nodes turn into keyed tokens:
//! - `kind = "duplicate"`: `payment_id, link_key`; a row is a hit when its key occurs in
//!   two or more rows city-wide.
//! - `kind = "covered_by"`: `payment_id, link_person, period`, and a second query
//!   (`cover = "cover.sql"`) returning `link_person, start_date, end_date` intervals; a row
//!   is a hit when an interval of the same person on any node covers its period.
#![warn(missing_docs)]

mod validate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A package that cannot be read or would not run safely.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file of the package cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `model.toml` is malformed.
    #[error("{}: {message}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A query of the package does not plan against the contract's tables.
    #[error("model {model}, {file}: {message}")]
    Sql {
        /// Model id.
        model: String,
        /// `rule.sql` or the cover query.
        file: String,
        /// The parser's or planner's message.
        message: String,
    },
    /// A query returns the wrong columns.
    #[error("model {model}, {file}: {message}")]
    Output {
        /// Model id.
        model: String,
        /// `rule.sql` or the cover query.
        file: String,
        /// What is wrong.
        message: String,
    },
}

/// Result of the models crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How bad a hit is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Review when time allows.
    Low,
    /// Review in the normal course.
    Medium,
    /// Review first.
    High,
}

/// The cross-node step of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Linkage {
    /// Rows whose `link_key` occurs two or more times city-wide.
    Duplicate,
    /// Rows whose (`link_person`, `period`) lies in an interval of the cover query.
    CoveredBy {
        /// SQL returning `link_person, start_date, end_date`.
        cover: String,
    },
}

/// A versioned detection model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelPackage {
    /// Model id, e.g. `duplicate_payment`.
    pub id: String,
    /// Version, counting from 1.
    pub version: u32,
    /// Chinese title.
    pub title_zh: String,
    /// English title.
    pub title_en: String,
    /// What a hit means.
    pub description: String,
    /// How bad a hit is.
    pub severity: Severity,
    /// Named parameters, documented for reviewers.
    pub parameters: BTreeMap<String, String>,
    /// The node-local rule.
    pub rule: String,
    /// The cross-node step, if the rule spans nodes.
    pub linkage: Option<Linkage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    id: String,
    version: u32,
    title_zh: String,
    title_en: String,
    description: String,
    severity: Severity,
    #[serde(default)]
    parameters: BTreeMap<String, String>,
    linkage: Option<ManifestLinkage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestLinkage {
    kind: String,
    cover: Option<String>,
}

impl ModelPackage {
    /// Reads the package in `dir` (`model.toml`, `rule.sql` and any file it names).
    pub fn load(dir: &Path) -> Result<Self> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|source| Error::Read { path, source })
        };
        Self::parse(&dir.join("model.toml"), &read("model.toml")?, read)
    }

    fn parse(
        manifest_path: &Path,
        manifest: &str,
        read: impl Fn(&str) -> Result<String>,
    ) -> Result<Self> {
        let bad = |message: String| Error::Manifest {
            path: manifest_path.to_path_buf(),
            message,
        };
        let m: Manifest = toml::from_str(manifest).map_err(|e| bad(e.to_string()))?;
        if m.id.is_empty()
            || !m
                .id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())
        {
            return Err(bad(format!(
                "id {:?} must be lower-case letters, digits and _",
                m.id
            )));
        }
        if m.version == 0 {
            return Err(bad("version counts from 1".into()));
        }
        let linkage = match m.linkage {
            None => None,
            Some(l) => Some(match (l.kind.as_str(), l.cover) {
                ("duplicate", None) => Linkage::Duplicate,
                ("covered_by", Some(cover)) => Linkage::CoveredBy {
                    cover: read(&cover)?,
                },
                ("covered_by", None) => {
                    return Err(bad(
                        "linkage covered_by needs `cover = \"<file>.sql\"`".into()
                    ));
                }
                (kind, _) => {
                    return Err(bad(format!(
                        "unknown linkage kind {kind:?}; expected \"duplicate\" or \"covered_by\""
                    )));
                }
            }),
        };
        Ok(Self {
            id: m.id,
            version: m.version,
            title_zh: m.title_zh,
            title_en: m.title_en,
            description: m.description.trim().to_string(),
            severity: m.severity,
            parameters: m.parameters,
            rule: read("rule.sql")?,
            linkage,
        })
    }

    /// The seven models of DOMAIN.md, in its order.
    pub fn builtins() -> Vec<ModelPackage> {
        sunlight_domain::ProblemModel::ALL
            .iter()
            .map(|model| {
                let id = model.to_string();
                let read = |name: &str| {
                    BUILTIN
                        .iter()
                        .find(|(i, file, _)| *i == id && *file == name)
                        .map(|(_, _, text)| text.to_string())
                        .ok_or_else(|| Error::Read {
                            path: Path::new("builtin").join(&id).join(name),
                            source: std::io::ErrorKind::NotFound.into(),
                        })
                };
                let manifest = Path::new("builtin").join(&id).join("model.toml");
                Self::parse(&manifest, &read("model.toml")?, read)
            })
            .collect::<Result<_>>()
            .expect("built-in packages are well formed")
    }
}

macro_rules! builtin_files {
    ($($id:literal: $($file:literal),+;)*) => {
        &[$($(($id, $file, include_str!(concat!("../builtin/", $id, "/", $file))),)+)*]
    };
}

/// (model id, file name, contents) of the built-in packages.
const BUILTIN: &[(&str, &str, &str)] = builtin_files! {
    "payroll_on_dibao": "model.toml", "rule.sql", "cover.sql";
    "underage_elderly_allowance": "model.toml", "rule.sql";
    "duplicate_payment": "model.toml", "rule.sql";
    "deceased_recipient": "model.toml", "rule.sql";
    "shared_account": "model.toml", "rule.sql";
    "over_standard": "model.toml", "rule.sql";
    "disability_without_cert": "model.toml", "rule.sql";
};

pub use validate::validate;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_the_seven_models_of_the_contract() {
        let ids: Vec<_> = ModelPackage::builtins().into_iter().map(|p| p.id).collect();
        let contract: Vec<_> = sunlight_domain::ProblemModel::ALL
            .iter()
            .map(|m| m.to_string())
            .collect();
        assert_eq!(ids, contract);
    }

    #[test]
    fn manifest_errors_name_the_file_and_field() {
        let read = |_: &str| Ok("SELECT payment_id FROM disbursements".to_string());
        let path = Path::new("m/model.toml");
        let err = ModelPackage::parse(path, "id = \"x\"", read).unwrap_err();
        assert!(
            err.to_string().contains("m/model.toml") && err.to_string().contains("version"),
            "{err}"
        );
        let manifest = "id = \"x\"\nversion = 1\ntitle_zh = \"t\"\ntitle_en = \"t\"\ndescription = \"d\"\nseverity = \"high\"\n[linkage]\nkind = \"fuzzy\"\n";
        let err = ModelPackage::parse(path, manifest, read).unwrap_err();
        assert!(
            err.to_string().contains("unknown linkage kind \"fuzzy\""),
            "{err}"
        );
    }
}
