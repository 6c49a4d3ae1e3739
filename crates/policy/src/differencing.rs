//! [`AnswerHistory`]: the differencing check. Two answers to one user whose persons
//! differ by fewer than k let the user subtract one from the other and learn about those
//! few; the later one is refused. Answers compare twice: by every person their groups were
//! formed from, and by the persons of the groups they show, so that a total less a
//! breakdown that held a small group back does not give that group away.

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
    statement: String,
    persons: AnswerSketches,
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
    /// answers in the window by at least one and fewer than `k`; remembers it otherwise.
    pub fn admit(
        &self,
        user: &str,
        statement: &str,
        persons: AnswerSketches,
        k: usize,
    ) -> Result<()> {
        let mut users = self.users.lock().expect("not poisoned");
        let answers = users.entry(user.to_string()).or_default();
        let now = Instant::now();
        answers.retain(|a| now.duration_since(a.at) <= self.window);
        for earlier in answers.iter() {
            let pairs = [
                ("behind", &persons.all, &earlier.persons.all),
                (
                    "in the groups shown by",
                    &persons.shown,
                    &earlier.persons.shown,
                ),
            ];
            for (which, now_persons, then_persons) in pairs {
                if let Some(d) = now_persons.difference(then_persons)
                    && d > 0
                    && d < k
                {
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
            statement: statement.to_string(),
            persons,
        });
        Ok(())
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
        history.admit("ana", "q1", all.clone(), 5).unwrap();
        history.admit("ana", "q1 again", all.clone(), 5).unwrap();
        let refusal = history
            .admit("ana", "q2", all_but_one.clone(), 5)
            .unwrap_err();
        assert_eq!(refusal.rule, Rule::Differencing);
        assert!(refusal.message.contains("differ by 1"), "{refusal}");
        history.admit("bo", "q2", all_but_one, 5).unwrap();
        history
            .admit(
                "ana",
                "far",
                AnswerSketches::whole(PersonSketch::of(50..100)),
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
        history.admit("ana", "total", total, 5).unwrap();
        let refusal = history
            .admit("ana", "breakdown", breakdown.clone(), 5)
            .unwrap_err();
        assert!(
            refusal.message.contains("in the groups shown by")
                && refusal.message.contains("differ by 2"),
            "{refusal}"
        );
        history
            .admit("bo", "breakdown", breakdown.clone(), 5)
            .unwrap();
        history
            .admit("bo", "breakdown again", breakdown, 5)
            .unwrap();
    }
}
