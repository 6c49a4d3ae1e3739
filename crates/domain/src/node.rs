//! The nodes of the city: GB/T 2260 codes, names and pinyin.

use std::fmt;
use std::str::FromStr;

use crate::{Error, Result};

/// A node of the city as listed in `DOMAIN.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// GB/T 2260 code.
    pub code: &'static str,
    /// Chinese name.
    pub name: &'static str,
    /// Pinyin, used in host names and folder names.
    pub pinyin: &'static str,
}

/// All nodes: the city-tier data node first, then the ten county-level areas.
pub const NODES: [NodeInfo; 11] = [
    NodeInfo {
        code: "140200",
        name: "大同市",
        pinyin: "datong",
    },
    NodeInfo {
        code: "140212",
        name: "新荣区",
        pinyin: "xinrong",
    },
    NodeInfo {
        code: "140213",
        name: "平城区",
        pinyin: "pingcheng",
    },
    NodeInfo {
        code: "140214",
        name: "云冈区",
        pinyin: "yungang",
    },
    NodeInfo {
        code: "140215",
        name: "云州区",
        pinyin: "yunzhou",
    },
    NodeInfo {
        code: "140221",
        name: "阳高县",
        pinyin: "yanggao",
    },
    NodeInfo {
        code: "140222",
        name: "天镇县",
        pinyin: "tianzhen",
    },
    NodeInfo {
        code: "140223",
        name: "广灵县",
        pinyin: "guangling",
    },
    NodeInfo {
        code: "140224",
        name: "灵丘县",
        pinyin: "lingqiu",
    },
    NodeInfo {
        code: "140225",
        name: "浑源县",
        pinyin: "hunyuan",
    },
    NodeInfo {
        code: "140226",
        name: "左云县",
        pinyin: "zuoyun",
    },
];

/// A validated node code, one of [`NODES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeCode(&'static str);

impl NodeCode {
    /// The city's own data node.
    pub const CITY: NodeCode = NodeCode("140200");

    /// All node codes, city first.
    pub fn all() -> impl Iterator<Item = NodeCode> {
        NODES.iter().map(|n| NodeCode(n.code))
    }

    /// The ten county-level nodes.
    pub fn counties() -> impl Iterator<Item = NodeCode> {
        Self::all().filter(|c| *c != Self::CITY)
    }

    /// The code as text.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// Name and pinyin of this node.
    pub fn info(&self) -> &'static NodeInfo {
        NODES
            .iter()
            .find(|n| n.code == self.0)
            .expect("NodeCode is always valid")
    }
}

/// The codes of [`NODES`], each run of consecutive codes as a range, with `last` before
/// the last: "140200, 140212–140215 and 140221–140226".
pub fn known_codes(last: &str) -> String {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for code in NODES.map(|n| n.code.parse::<u32>().expect("codes are digits")) {
        match runs.last_mut() {
            Some((_, end)) if *end + 1 == code => *end = code,
            _ => runs.push((code, code)),
        }
    }
    let mut written: Vec<String> = runs
        .iter()
        .map(|&(first, end)| match first == end {
            true => first.to_string(),
            false => format!("{first}–{end}"),
        })
        .collect();
    let final_run = written.pop().expect("the city has nodes");
    format!("{} {last} {final_run}", written.join(", "))
}

impl FromStr for NodeCode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        NODES
            .iter()
            .find(|n| n.code == s.trim())
            .map(|n| NodeCode(n.code))
            .ok_or_else(|| Error::UnknownNode(s.to_string()))
    }
}

impl fmt::Display for NodeCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl serde::Serialize for NodeCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_known_codes_only() {
        assert_eq!("140215".parse::<NodeCode>().unwrap().info().name, "云州区");
        assert_eq!(NodeCode::all().count(), 11);
        assert_eq!(NodeCode::counties().count(), 10);
        let err = "140299".parse::<NodeCode>().unwrap_err().to_string();
        assert!(err.contains("140299"), "{err}");
        // The codes it lists are the codes there are.
        assert!(
            err.contains("140200, 140212–140215 and 140221–140226"),
            "{err}"
        );
        assert!("140216".parse::<NodeCode>().is_err());
        assert!("140226".parse::<NodeCode>().is_ok());
    }
}
