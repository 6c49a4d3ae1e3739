//! [`CityAnalysts`]: the county analysts of this node that the city's administrators
//! registered. The coordinator sends them, by the SHA-256 of their tokens, and the node
//! lets them run SQL as it lets the users of its own config.

use std::collections::HashMap;
use std::sync::RwLock;

use sha2::{Digest, Sha256};
use sunlight_proto::v1::{Analysts, AnalystsReply};
use tonic::Status;

/// The set the coordinator sent last, by token hash.
#[derive(Debug, Default)]
pub struct CityAnalysts {
    held: RwLock<Held>,
}

#[derive(Debug, Default, PartialEq)]
struct Held {
    group: String,
    version: u64,
    /// Hex SHA-256 of a token → the analyst's name here and when the token expires.
    by_token: HashMap<String, (String, Option<i64>)>,
}

impl CityAnalysts {
    /// Holds `set` in place of the one held, unless the one held is newer and of the
    /// same metadata group. Whether the analysts changed, and what the node holds now; an
    /// entry that is not an analyst refuses the whole set, named.
    pub fn replace(&self, set: &Analysts) -> Result<(bool, AnalystsReply), Status> {
        let mut by_token = HashMap::new();
        for (i, analyst) in set.analysts.iter().enumerate() {
            let hash = &analyst.token_sha256;
            let bad = if analyst.name.trim().is_empty() {
                Some("has no name")
            } else if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
                Some("has no hex SHA-256 of a token")
            } else {
                None
            };
            if let Some(bad) = bad {
                return Err(Status::invalid_argument(format!(
                    "analyst {i} ({:?}) {bad}; the node keeps the analysts it held",
                    analyst.name
                )));
            }
            let expires = (analyst.expires_ms > 0).then_some(analyst.expires_ms);
            let name = format!("{}@city", analyst.name);
            by_token.insert(hash.to_ascii_lowercase(), (name, expires));
        }
        let mut held = self.held.write().expect("not poisoned");
        let newer = set.group != held.group || set.version >= held.version;
        let changed = newer && held.by_token != by_token;
        if newer {
            *held = Held {
                group: set.group.clone(),
                version: set.version,
                by_token,
            };
        }
        let reply = AnalystsReply {
            version: held.version,
            analysts: held.by_token.len() as u32,
        };
        Ok((changed, reply))
    }

    /// The names of the analysts held, sorted.
    pub fn names(&self) -> Vec<String> {
        let held = self.held.read().expect("not poisoned");
        let mut names: Vec<String> = held.by_token.values().map(|(n, _)| n.clone()).collect();
        names.sort();
        names
    }

    /// The name of the analyst holding `token`, if one does: refused where it expired.
    pub fn user(&self, token: &str, now_ms: i64) -> Option<Result<String, Status>> {
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        let held = self.held.read().expect("not poisoned");
        let (name, expires) = held.by_token.get(&hash)?;
        Some(match expires {
            Some(at) if *at <= now_ms => Err(Status::unauthenticated(format!(
                "the token of {name} expired at {}",
                chrono::DateTime::from_timestamp_millis(*at).unwrap_or_default()
            ))),
            _ => Ok(name.clone()),
        })
    }
}

#[cfg(test)]
mod tests {
    use sunlight_proto::v1::Analyst;

    use super::*;

    fn analyst(name: &str, token: &str, expires_ms: i64) -> Analyst {
        Analyst {
            name: name.into(),
            token_sha256: hex::encode(Sha256::digest(token.as_bytes())),
            expires_ms,
        }
    }

    #[test]
    fn keeps_the_newest_set_and_checks_expiry() {
        let analysts = CityAnalysts::default();
        let set = Analysts {
            version: 7,
            analysts: vec![analyst("zhao", "t-zhao", 0), analyst("li", "t-li", 1_000)],
            group: "g1".into(),
        };
        let (changed, reply) = analysts.replace(&set).unwrap();
        assert!(changed);
        assert_eq!((reply.version, reply.analysts), (7, 2));
        assert_eq!(
            analysts.user("t-zhao", 5_000).unwrap().unwrap(),
            "zhao@city"
        );
        let expired = analysts.user("t-li", 5_000).unwrap().unwrap_err();
        assert!(expired.message().contains("the token of li@city expired"));
        assert!(analysts.user("t-other", 5_000).is_none());

        // The same set again changes nothing; an older one is ignored.
        assert!(!analysts.replace(&set).unwrap().0);
        let older = Analysts {
            version: 6,
            analysts: vec![],
            group: "g1".into(),
        };
        let (changed, reply) = analysts.replace(&older).unwrap();
        assert!(!changed);
        assert_eq!((reply.version, reply.analysts), (7, 2));

        // A newer one without zhao revokes his token here.
        let newer = Analysts {
            version: 9,
            analysts: vec![analyst("li", "t-li", 0)],
            group: "g1".into(),
        };
        assert!(analysts.replace(&newer).unwrap().0);
        assert!(analysts.user("t-zhao", 5_000).is_none());
        assert_eq!(analysts.user("t-li", 5_000).unwrap().unwrap(), "li@city");

        // The city's metadata created anew counts from the start: its set replaces the
        // one held, though its version is lower.
        let anew = Analysts {
            version: 3,
            analysts: vec![],
            group: "g2".into(),
        };
        let (changed, reply) = analysts.replace(&anew).unwrap();
        assert!(changed);
        assert_eq!((reply.version, reply.analysts), (3, 0));
        assert!(analysts.user("t-li", 5_000).is_none());
    }

    #[test]
    fn refuses_a_set_with_a_bad_entry_whole() {
        let analysts = CityAnalysts::default();
        let mut bad = analyst("wang", "t", 0);
        bad.token_sha256 = "t".into();
        let set = Analysts {
            version: 1,
            analysts: vec![analyst("zhao", "t-zhao", 0), bad],
            group: "g1".into(),
        };
        let err = analysts.replace(&set).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(
            err.message()
                .contains("analyst 1 (\"wang\") has no hex SHA-256 of a token"),
            "{err}"
        );
        assert!(analysts.user("t-zhao", 0).is_none());
    }
}
