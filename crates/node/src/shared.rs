//! The node's part in counting persons across nodes exactly with few tokens. The city
//! reads every node's person tokens once ([`person_tokens`]) and tells each node which
//! of its persons another node holds too ([`share_persons`]), under an epoch. A fragment
//! that names the epoch then lists, in a distinct count of persons, only the tokens of
//! those persons, and counts the others, which it alone holds.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow::array::Array;
use fixedbitset::FixedBitSet;
use sunlight_policy::TOKEN_BYTES;
use sunlight_proto::v1::{PersonTokenSet, SharedPersons, SharedPersonsReply};

use crate::node::Node;
use crate::persons::served_with_persons;
use crate::{Error, Result};

/// Shared sets a node keeps at once: one per coordinator replica that renewed lately.
const HELD_EPOCHS: usize = 4;

/// The shared sets a node process holds, by epoch.
pub struct SharedSets {
    /// This process; a set found from another one's tokens does not hold here.
    instance: u64,
    sets: Mutex<VecDeque<(u64, Arc<FixedBitSet>)>>,
}

impl Default for SharedSets {
    fn default() -> Self {
        Self {
            instance: uuid::Uuid::new_v4().as_u64_pair().0,
            sets: Mutex::default(),
        }
    }
}

impl SharedSets {
    /// The numbers of the persons other nodes hold too, under `epoch`, if this process
    /// holds it.
    pub fn held(&self, epoch: u64) -> Option<Arc<FixedBitSet>> {
        let sets = self.sets.lock().expect("not poisoned");
        sets.iter()
            .find(|(e, _)| *e == epoch)
            .map(|(_, s)| s.clone())
    }

    fn hold(&self, epoch: u64, shared: FixedBitSet) {
        let mut sets = self.sets.lock().expect("not poisoned");
        sets.retain(|(e, _)| *e != epoch);
        if sets.len() == HELD_EPOCHS {
            sets.pop_front();
        }
        sets.push_back((epoch, Arc::new(shared)));
    }
}

/// The tokens of every person of the node's served tables, once all are numbered.
pub async fn person_tokens(node: &Node, user: &str) -> Result<PersonTokenSet> {
    node.city_only(user, "person tokens")?;
    if node.privacy().policy.persons.tokenizer().is_none() {
        return Err(Error::Config(format!(
            "node {} has no linkage key, so its persons have no tokens to share; set \
             [linkage] key in its config",
            node.code()
        )));
    }
    for table in served_with_persons(node) {
        node.persons_of(table).await?;
    }
    let tokens = node.privacy().policy.persons.all_tokens()?;
    let persons = tokens.len();
    node.audit().record(
        user,
        "person tokens",
        "",
        &format!("allowed: the tokens of {persons} persons"),
    );
    Ok(PersonTokenSet {
        instance: node.shared().instance,
        tokens: tokens.values().to_vec(),
    })
}

/// Marks the node's persons whose tokens `request` lists as held by other nodes too,
/// under its epoch. A request found from another process's tokens is refused: this one
/// may hold other persons.
pub async fn share_persons(
    node: &Node,
    user: &str,
    request: SharedPersons,
) -> Result<SharedPersonsReply> {
    node.city_only(user, "shared persons")?;
    let shared = node.shared();
    if request.instance != shared.instance {
        return Err(Error::FragmentRefused(format!(
            "the shared persons were found from the tokens of another process of node {} \
             (it restarted, or loaded its files again, since); ask for its tokens again",
            node.code()
        )));
    }
    if !request.tokens.len().is_multiple_of(TOKEN_BYTES) {
        return Err(Error::FragmentRefused(format!(
            "shared persons come as tokens of {TOKEN_BYTES} bytes; {} bytes is not a \
             whole number of them",
            request.tokens.len()
        )));
    }
    let tokens = node.privacy().policy.persons.all_tokens()?;
    let numbers: HashMap<&[u8], usize> = (0..tokens.len()).map(|n| (tokens.value(n), n)).collect();
    let mut marked = FixedBitSet::with_capacity(tokens.len());
    for token in request.tokens.chunks_exact(TOKEN_BYTES) {
        if let Some(&number) = numbers.get(token) {
            marked.insert(number);
        }
    }
    let persons = marked.count_ones(..) as u64;
    shared.hold(request.epoch, marked);
    node.audit().record(
        user,
        "shared persons",
        &format!("epoch {:016x}", request.epoch),
        &format!("allowed: {persons} persons held by other nodes too"),
    );
    Ok(SharedPersonsReply { persons })
}
