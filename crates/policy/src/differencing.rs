//! [`AnswerHistory`]: the differencing check. Two answers to one user whose persons
//! differ by fewer than k let the user subtract one from the other and learn about those
//! few; the later one is refused.

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
    sketch: PersonSketch,
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
    pub fn admit(&self, user: &str, statement: &str, sketch: PersonSketch, k: usize) -> Result<()> {
        let mut users = self.users.lock().expect("not poisoned");
        let answers = users.entry(user.to_string()).or_default();
        let now = Instant::now();
        answers.retain(|a| now.duration_since(a.at) <= self.window);
        for earlier in answers.iter() {
            if let Some(d) = sketch.difference(&earlier.sketch)
                && d > 0
                && d < k
            {
                return Err(Refusal::new(
                    Rule::Differencing,
                    format!(
                        "the persons behind this answer differ by {d} from those behind your \
                         answer to `{}` {}s ago; two answers that differ by fewer than {k} \
                         persons would reveal those persons",
                        earlier.statement,
                        now.duration_since(earlier.at).as_secs()
                    ),
                ));
            }
        }
        if answers.len() == self.per_user {
            answers.pop_front();
        }
        answers.push_back(Answered {
            at: now,
            statement: statement.to_string(),
            sketch,
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
        let all = PersonSketch::of(0..100);
        let all_but_one = PersonSketch::of(1..100);
        history.admit("ana", "q1", all.clone(), 5).unwrap();
        history.admit("ana", "q1 again", all.clone(), 5).unwrap();
        let refusal = history
            .admit("ana", "q2", all_but_one.clone(), 5)
            .unwrap_err();
        assert_eq!(refusal.rule, Rule::Differencing);
        assert!(refusal.message.contains("differ by 1"), "{refusal}");
        history.admit("bo", "q2", all_but_one, 5).unwrap();
        history
            .admit("ana", "far", PersonSketch::of(50..100), 5)
            .unwrap();
    }
}
