//! Per-query settings and outcomes shared between the city's Flight service and the
//! fragments it runs: deadline, partial results, and what each node sent.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sunlight_domain::NodeCode;

pub use sunlight_client::{
    HELD_HEADER, MISSING_HEADER, MISSING_REASONS_HEADER, PARTIAL_HEADER, RELEASED_HEADER,
    SHOWN_SKETCH_HEADER, SKETCH_HEADER, SUPPRESSED_HEADER,
};
use sunlight_policy::AnswerSketches;

/// What a node sent for one query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transfer {
    /// Rows received.
    pub rows: u64,
    /// Bytes of Flight data received (headers and bodies).
    pub bytes: u64,
}

/// Most bytes of the reasons an answer's header gives for its missing nodes, shared among
/// them: clients cap the size of an answer's headers (gRPC-Java at 8 KiB in all), and the
/// audit log keeps the reasons whole.
const REASONS_BYTES: usize = 3_000;

/// Settings and outcomes of one federated query, stored as a session extension.
#[derive(Debug)]
pub struct QueryControl {
    /// Id of the query, sent with each fragment.
    pub query_id: String,
    /// Succeed without the nodes that fail, listing them, instead of failing.
    pub partial: bool,
    /// How long the nodes have to answer, from the first call to one in a run.
    pub timeout: Duration,
    deadline: Mutex<Option<Instant>>,
    /// Attempts per fragment before a node counts as down.
    pub attempts: u32,
    missing: Mutex<BTreeMap<NodeCode, String>>,
    received: Mutex<BTreeMap<NodeCode, Transfer>>,
    /// The nodes that answered a fragment in this run of the query.
    answered: Mutex<BTreeSet<NodeCode>>,
    suppressed: AtomicU64,
    released: AtomicU64,
    /// The persons behind each fragment the answer is merged from, by a number of the
    /// fragment's own.
    sketches: Mutex<BTreeMap<u64, AnswerSketches>>,
    excluded: Mutex<Vec<Exclusion>>,
    /// The shared-person epoch the nodes count with, and whether the query must run
    /// without one.
    shared: Mutex<(Option<u64>, bool)>,
}

/// Groups every node leaves out of some of the query's fragments when it runs again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exclusion {
    /// The fragments, by [`crate::NodeFragmentExec::identity`].
    pub fragments: BTreeSet<u64>,
    /// The groups, by token.
    pub groups: BTreeSet<u64>,
}

impl QueryControl {
    /// Settings of a new query.
    pub fn new(partial: bool, timeout: Duration, attempts: u32) -> Self {
        Self {
            query_id: uuid::Uuid::new_v4().to_string(),
            partial,
            timeout,
            deadline: Mutex::default(),
            attempts: attempts.max(1),
            missing: Mutex::default(),
            received: Mutex::default(),
            answered: Mutex::default(),
            suppressed: AtomicU64::new(0),
            released: AtomicU64::new(0),
            sketches: Mutex::default(),
            excluded: Mutex::default(),
            shared: Mutex::default(),
        }
    }

    /// Records that `node` did not answer.
    pub fn mark_missing(&self, node: NodeCode, reason: String) {
        self.missing
            .lock()
            .expect("not poisoned")
            .insert(node, reason);
    }

    /// Whether `node` did not answer some fragment of this query.
    pub fn is_missing(&self, node: NodeCode) -> bool {
        self.missing
            .lock()
            .expect("not poisoned")
            .contains_key(&node)
    }

    /// Nodes that did not answer, with the reason.
    pub fn missing(&self) -> BTreeMap<NodeCode, String> {
        self.missing.lock().expect("not poisoned").clone()
    }

    /// The reasons of the nodes that did not answer, as an answer's header carries them
    /// ([`MISSING_REASONS_HEADER`]): a line a node, its code and its reason, each reason
    /// clipped to its share of [`REASONS_BYTES`].
    pub fn missing_reasons(&self) -> String {
        let missing = self.missing.lock().expect("not poisoned");
        let share = REASONS_BYTES / missing.len().max(1);
        missing
            .iter()
            .map(|(node, reason)| {
                let reason = reason.replace('\n', " ");
                match reason.len() > share {
                    true => format!("{node} {}…\n", &reason[..reason.floor_char_boundary(share)]),
                    false => format!("{node} {reason}\n"),
                }
            })
            .collect()
    }

    /// Adds to what `node` sent.
    pub fn add_received(&self, node: NodeCode, rows: u64, bytes: u64) {
        let mut received = self.received.lock().expect("not poisoned");
        let entry = received.entry(node).or_default();
        entry.rows += rows;
        entry.bytes += bytes;
        self.answered.lock().expect("not poisoned").insert(node);
    }

    /// Whether a node that failed a fragment answered another in this run: a partial
    /// answer would then hold a part of the query with the node and a part without.
    pub fn torn(&self) -> bool {
        let answered = self.answered.lock().expect("not poisoned");
        let missing = self.missing.lock().expect("not poisoned");
        missing.keys().any(|node| answered.contains(node))
    }

    /// Starts a run of the query: the nodes have the whole time to answer again, and
    /// those missing from an earlier run stay left out.
    pub fn start_run(&self) {
        self.answered.lock().expect("not poisoned").clear();
        *self.deadline.lock().expect("not poisoned") = None;
    }

    /// Adds the groups a node held back for counting fewer than k persons, and those it
    /// released that count at least k.
    pub fn add_groups(&self, suppressed: u64, released: u64) {
        self.suppressed.fetch_add(suppressed, Ordering::Relaxed);
        self.released.fetch_add(released, Ordering::Relaxed);
    }

    /// Adds a node's sketches of the persons behind the groups of the fragment `part`.
    pub fn add_sketch(&self, part: u64, sketch: AnswerSketches) {
        let mut sketches = self.sketches.lock().expect("not poisoned");
        match sketches.get_mut(&part) {
            Some(total) => total.add(&sketch),
            None => {
                sketches.insert(part, sketch);
            }
        }
    }

    /// Asks every node to leave out groups of some fragments in the query's next run, and
    /// forgets the groups and persons of this one; what the nodes sent still counts.
    pub fn exclude(&self, exclusions: Vec<Exclusion>) {
        *self.excluded.lock().expect("not poisoned") = exclusions;
        self.suppressed.store(0, Ordering::Relaxed);
        self.released.store(0, Ordering::Relaxed);
        self.sketches.lock().expect("not poisoned").clear();
    }

    /// The groups, by token, every node leaves out of the fragment of `identity`.
    pub fn excluded_in(&self, identity: u64) -> Vec<u64> {
        let excluded = self.excluded.lock().expect("not poisoned");
        let groups: BTreeSet<u64> = excluded
            .iter()
            .filter(|e| e.fragments.contains(&identity))
            .flat_map(|e| e.groups.iter().copied())
            .collect();
        groups.into_iter().collect()
    }

    /// Has the nodes count persons with the shared set of `epoch`, unless the query must
    /// run without one.
    pub fn share(&self, epoch: Option<u64>) {
        let mut shared = self.shared.lock().expect("not poisoned");
        if !shared.1 {
            shared.0 = epoch;
        }
    }

    /// Has the nodes count persons without a shared set from now on: a node did not
    /// hold the one named.
    pub fn unshare(&self) {
        *self.shared.lock().expect("not poisoned") = (None, true);
    }

    /// The shared-person epoch the nodes count with.
    pub fn shared(&self) -> Option<u64> {
        self.shared.lock().expect("not poisoned").0
    }

    /// The persons behind each fragment of the answer, as far as the nodes sketched them.
    pub fn sketches(&self) -> Vec<AnswerSketches> {
        self.sketches
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Whether groups were held back and none about persons was released: the answer
    /// would only show what the filter left out.
    pub fn all_suppressed(&self) -> bool {
        self.suppressed() > 0 && self.released.load(Ordering::Relaxed) == 0
    }

    /// Groups the nodes held back, all together: which node held back what stays hidden.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }

    /// Groups left out of the answer: those the nodes held back, or, after a run that
    /// left out groups at every node, those groups where they are more. A group left out
    /// everywhere may leave no part of it to hold back, as where its rows are also those
    /// of a group of another fragment that was left out.
    pub fn left_out(&self) -> u64 {
        let excluded = self.excluded.lock().expect("not poisoned");
        let excluded: usize = excluded.iter().map(|e| e.groups.len()).sum();
        self.suppressed().max(excluded as u64)
    }

    /// What each node sent.
    pub fn received(&self) -> BTreeMap<NodeCode, Transfer> {
        self.received.lock().expect("not poisoned").clone()
    }

    /// Time left before the deadline, which the first call of this starts: a query
    /// planned ahead of its run has its whole time when it runs.
    pub fn remaining(&self) -> Duration {
        let now = Instant::now();
        let mut deadline = self.deadline.lock().expect("not poisoned");
        deadline
            .get_or_insert(now + self.timeout)
            .saturating_duration_since(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reasons_of_missing_nodes_share_a_bounded_header() {
        let control = QueryControl::new(true, Duration::from_secs(30), 1);
        assert_eq!(control.missing_reasons(), "");
        control.mark_missing("140215".parse().unwrap(), "refused:\nbroken".into());
        assert_eq!(control.missing_reasons(), "140215 refused: broken\n");
        let codes = ["140212", "140213", "140214", "140221", "140222", "140223"];
        for code in codes {
            control.mark_missing(code.parse().unwrap(), "file:///数据/".repeat(100));
        }
        let reasons = control.missing_reasons();
        assert_eq!(reasons.lines().count(), 7);
        assert!(reasons.len() <= REASONS_BYTES + 7 * "140215 …\n".len());
        assert!(
            reasons
                .lines()
                .all(|l| l.ends_with('…') || l == "140215 refused: broken"),
            "{reasons}"
        );
    }

    #[test]
    fn the_deadline_starts_with_the_first_call_to_a_node() {
        let control = QueryControl::new(false, Duration::from_secs(30), 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(control.remaining(), Duration::from_secs(30));
        std::thread::sleep(Duration::from_millis(20));
        assert!(control.remaining() <= Duration::from_millis(29_980));
    }
}
