//! [`AnswerHistory`]: the differencing check. Two answers to one user whose persons
//! differ by fewer than k let the user subtract one from the other and learn about those
//! few; the later one is refused. Answers compare twice: by every person their groups were
//! formed from, and by the persons of the groups they show, so that a total less a
//! breakdown that held a small group back does not give that group away. An answer the
//! city merges from several parts, such as a query and its subqueries, compares each part
//! as well: with its other parts, whose figures it shows side by side, and with the parts
//! of earlier answers.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{PersonSketch, Refusal, Result, Rule};

/// Each user's recent answers, by the persons behind them.
#[derive(Debug)]
pub struct AnswerHistory {
    window: Duration,
    per_user: usize,
    users: Mutex<HashMap<String, VecDeque<Answered>>>,
}

#[derive(Debug)]
struct Answered {
    at: Instant,
    /// The statement answered, as a refusal quotes it.
    statement: String,
    /// The persons behind the whole answer, then those behind each part, if several.
    persons: Vec<AnswerSketches>,
}

/// The persons behind one answer, as sketches that add up across nodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerSketches {
    /// Every person the answer's groups were formed from, held-back groups included.
    pub all: PersonSketch,
    /// The persons of the groups the answer shows, less those also in a held-back group.
    pub shown: PersonSketch,
}

impl AnswerSketches {
    /// The sketches of an answer that held no group back.
    pub fn whole(all: PersonSketch) -> Self {
        Self {
            shown: all.clone(),
            all,
        }
    }

    /// Adds the persons of another part of the answer, such as another node's.
    pub fn add(&mut self, other: &AnswerSketches) {
        self.all.add(&other.all);
        self.shown.add(&other.shown);
    }
}

impl AnswerHistory {
    /// Compares answers given within `window`, keeping at most `per_user` per user.
    pub fn new(window: Duration, per_user: usize) -> Self {
        Self {
            window,
            per_user,
            users: Mutex::default(),
        }
    }

    /// Refuses an answer to `user` whose persons differ from those of one of their
    /// answers in the window by at least one and fewer than `k`, or whose `parts` (the
    /// persons behind each fragment the city merged it from) differ so from each other or
    /// from an earlier answer's parts; remembers it otherwise.
    pub fn admit(
        &self,
        user: &str,
        statement: &str,
        parts: Vec<AnswerSketches>,
        k: usize,
    ) -> Result<()> {
        let Some(mut whole) = parts.first().cloned() else {
            return Ok(());
        };
        for part in &parts[1..] {
            whole.add(part);
        }
        for (i, one) in parts.iter().enumerate() {
            for other in &parts[i + 1..] {
                if let Some((which, d)) = differ(one, other, k) {
                    return Err(Refusal::new(
                        Rule::Differencing,
                        format!(
                            "the persons {which} two parts of this answer (a subquery, a \
                             side or a query it joins) differ by {d}; two figures whose \
                             persons differ by fewer than {k} would reveal those persons"
                        ),
                    ));
                }
            }
        }
        let mut persons = vec![whole];
        if parts.len() > 1 {
            persons.extend(parts);
        }
        let mut users = self.users.lock().expect("not poisoned");
        let answers = users.entry(user.to_string()).or_default();
        let now = Instant::now();
        answers.retain(|a| now.duration_since(a.at) <= self.window);
        for earlier in answers.iter() {
            let pairs = persons
                .iter()
                .flat_map(|p| earlier.persons.iter().map(move |e| (p, e)));
            for (now_persons, then_persons) in pairs {
                if let Some((which, d)) = differ(now_persons, then_persons, k) {
                    return Err(Refusal::new(
                        Rule::Differencing,
                        format!(
                            "the persons {which} this answer differ by {d} from those {which} \
                             your answer to `{}` {}s ago; two answers that differ by fewer \
                             than {k} persons would reveal those persons",
                            earlier.statement,
                            now.duration_since(earlier.at).as_secs()
                        ),
                    ));
                }
            }
        }
        if answers.len() == self.per_user {
            answers.pop_front();
        }
        answers.push_back(Answered {
            at: now,
            statement: quoted(statement),
            persons,
        });
        Ok(())
    }
}

/// How two sets of persons differ by at least one and fewer than `k`, if they do: by every
/// person behind them, or by the persons of the groups they show.
fn differ(one: &AnswerSketches, other: &AnswerSketches, k: usize) -> Option<(&'static str, usize)> {
    [
        ("behind", &one.all, &other.all),
        ("in the groups shown by", &one.shown, &other.shown),
    ]
    .into_iter()
    .find_map(|(which, a, b)| {
        let d = a.difference(b)?;
        (d > 0 && d < k).then_some((which, d))
    })
}

/// How many characters of an earlier statement a refusal quotes.
const QUOTED: usize = 200;

/// `statement` as a refusal quotes it: whole, or its first [`QUOTED`] characters and `…`.
fn quoted(statement: &str) -> String {
    match statement.char_indices().nth(QUOTED) {
        Some((end, _)) => format!("{}…", &statement[..end]),
        None => statement.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_that_differs_by_a_few_persons_is_refused_for_its_user_only() {
        let history = AnswerHistory::new(Duration::from_secs(60), 10);
        let all = AnswerSketches::whole(PersonSketch::of(0..100));
        let all_but_one = AnswerSketches::whole(PersonSketch::of(1..100));
        history.admit("ana", "q1", vec![all.clone()], 5).unwrap();
        history
            .admit("ana", "q1 again", vec![all.clone()], 5)
            .unwrap();
        let refusal = history
            .admit("ana", "q2", vec![all_but_one.clone()], 5)
            .unwrap_err();
        assert_eq!(refusal.rule, Rule::Differencing);
        assert!(refusal.message.contains("differ by 1"), "{refusal}");
        history.admit("bo", "q2", vec![all_but_one], 5).unwrap();
        history
            .admit(
                "ana",
                "far",
                vec![AnswerSketches::whole(PersonSketch::of(50..100))],
                5,
            )
            .unwrap();
    }

    #[test]
    fn a_breakdown_that_held_back_a_few_persons_is_compared_by_the_groups_it_shows() {
        let history = AnswerHistory::new(Duration::from_secs(60), 10);
        let total = AnswerSketches::whole(PersonSketch::of(0..100));
        let breakdown = AnswerSketches {
            all: PersonSketch::of(0..100),
            shown: PersonSketch::of(2..100),
        };
        history.admit("ana", "total", vec![total], 5).unwrap();
        let refusal = history
            .admit("ana", "breakdown", vec![breakdown.clone()], 5)
            .unwrap_err();
        assert!(
            refusal.message.contains("in the groups shown by")
                && refusal.message.contains("differ by 2"),
            "{refusal}"
        );
        history
            .admit("bo", "breakdown", vec![breakdown.clone()], 5)
            .unwrap();
        history
            .admit("bo", "breakdown again", vec![breakdown], 5)
            .unwrap();
    }

    #[test]
    fn the_parts_of_an_answer_compare_with_each_other_and_with_earlier_parts() {
        let history = AnswerHistory::new(Duration::from_secs(60), 10);
        let of = |persons: std::ops::Range<u64>| AnswerSketches::whole(PersonSketch::of(persons));
        history
            .admit("ana", "twice", vec![of(0..100), of(0..100)], 5)
            .unwrap();
        let long = format!(
            "SELECT count(*) FROM persons WHERE {}",
            "村 = 1 OR ".repeat(999)
        );
        history.admit("cy", &long, vec![of(0..100)], 5).unwrap();
        history.admit("bo", "one", vec![of(0..100)], 5).unwrap();
        for (user, parts, says) in [
            // A query less its subquery over one person fewer.
            (
                "ana",
                vec![of(0..100), of(1..100)],
                "two parts of this answer",
            ),
            // The same parts twice: the whole counts each person twice, and so would hide
            // one person fewer; each part still compares with the earlier answer's.
            (
                "ana",
                vec![of(1..100), of(1..100)],
                "your answer to `twice`",
            ),
            // A part beside a far larger one compares alone with an earlier answer.
            (
                "bo",
                vec![of(1_000..9_000), of(1..100)],
                "your answer to `one`",
            ),
            // A long statement is quoted in part.
            (
                "cy",
                vec![of(1..100)],
                &format!(
                    "your answer to `{}…` ",
                    &long[..long.char_indices().nth(200).unwrap().0]
                ),
            ),
        ] {
            let refusal = history.admit(user, "later", parts, 5).unwrap_err();
            assert!(
                refusal.message.contains(says) && refusal.message.contains("differ by 1"),
                "{refusal}"
            );
        }
    }
}
