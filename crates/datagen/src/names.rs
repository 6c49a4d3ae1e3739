//! Names of people, townships and villages, and the geography of each node.

use rand::Rng;
use rand::seq::IndexedRandom;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use sunlight_domain::NodeCode;

const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "赵", "黄", "周", "吴", "徐", "孙", "胡", "朱", "高", "林",
    "何", "郭", "马", "罗", "梁", "宋", "郑", "谢", "韩", "唐", "冯", "于", "董", "程", "曹", "袁",
    "邓", "许", "沈", "曾", "彭", "吕", "苏", "卢", "贾", "丁", "魏", "薛", "阎", "段", "武", "乔",
];
const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明",
    "超", "秀", "霞", "平", "刚", "桂", "英", "华", "玉", "兰", "红", "建", "国", "文", "志", "海",
    "林", "峰", "春", "梅", "燕", "鹏", "辉", "福", "德", "宝", "成", "荣", "凤", "金", "银", "生",
];
const PLACE_HEADS: &[&str] = &[
    "东", "西", "南", "北", "新", "古", "大", "小", "石", "杨", "王", "高", "马", "李", "周", "许",
    "瓦", "吉", "堡", "峰", "水", "柳", "上", "下", "前", "后", "白", "红", "青", "黑",
];
const PLACE_TAILS: &[&str] = &[
    "家庄", "营", "堡", "店", "窑", "沟", "坪", "峪", "湾", "寨", "庄", "屯", "河", "泉", "梁",
];

/// The township and the two villages of the 聚乐乡 story on node 140215.
pub const JULE_TOWNSHIP: &str = "聚乐乡";
/// The villages that merged in 2020.
pub const JULE_VILLAGES: [&str; 2] = ["聚乐堡村", "西册田村"];

/// A person's name: a surname and one or two given characters.
pub fn person_name(rng: &mut impl Rng) -> String {
    let mut name = SURNAMES.choose(rng).expect("non-empty").to_string();
    for _ in 0..rng.random_range(1..=2) {
        name.push_str(GIVEN.choose(rng).expect("non-empty"));
    }
    name
}

/// A township and its villages.
#[derive(Debug, Clone)]
pub struct Township {
    pub name: String,
    pub villages: Vec<String>,
}

/// The townships and villages of one node.
#[derive(Debug, Clone)]
pub struct Geography {
    pub townships: Vec<Township>,
}

impl Geography {
    /// The geography of `node`, the same for every caller with the same seed.
    pub fn of(node: NodeCode, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ node_salt(node) ^ 0x6765_6f67);
        let mut used = std::collections::HashSet::new();
        let mut place = |rng: &mut ChaCha8Rng, suffix: &str| loop {
            let name = format!(
                "{}{}{suffix}",
                PLACE_HEADS.choose(rng).expect("non-empty"),
                PLACE_TAILS.choose(rng).expect("non-empty")
            );
            if used.insert(name.clone()) {
                return name;
            }
        };
        let mut townships: Vec<Township> = (0..rng.random_range(6..=9))
            .map(|_| {
                let suffix = if rng.random_bool(0.5) { "镇" } else { "乡" };
                let name = place(&mut rng, suffix);
                let villages = (0..rng.random_range(6..=14))
                    .map(|_| place(&mut rng, "村"))
                    .collect();
                Township { name, villages }
            })
            .collect();
        if node.as_str() == "140215" {
            let mut villages: Vec<String> = JULE_VILLAGES.iter().map(|v| v.to_string()).collect();
            villages.extend((0..4).map(|_| place(&mut rng, "村")));
            townships[0] = Township {
                name: JULE_TOWNSHIP.to_string(),
                villages,
            };
        }
        Geography { townships }
    }

    /// A random (township, village) pair.
    pub fn place(&self, rng: &mut impl Rng) -> (String, String) {
        let township = self.townships.choose(rng).expect("non-empty");
        let village = township.villages.choose(rng).expect("non-empty");
        (township.name.clone(), village.clone())
    }
}

/// Mixes a node code into a seed so that each node draws its own stream.
pub fn node_salt(node: NodeCode) -> u64 {
    node.as_str()
        .parse::<u64>()
        .expect("node codes are digits")
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
