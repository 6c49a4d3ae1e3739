//! [`Prepared`]: a statement planned and checked at the city, not yet run, and
//! [`PreparedStatements`], where the plans made for a client's `GetFlightInfo` wait for
//! the `DoGet` that runs them, so that a statement is planned once, not twice.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::ExecutionPlan;
use sunlight_flightsql::{Statement, StatementSchemas};

use crate::control::QueryControl;

/// A statement planned and checked against the disclosure rules, not yet run.
#[derive(Debug)]
pub(crate) struct Prepared {
    /// SHA-256 of the optimized logical plan.
    pub plan_sha256: String,
    /// The control the plan reports to.
    pub control: Arc<QueryControl>,
    /// The schema of the answer.
    pub schema: SchemaRef,
    /// The context to run the plan in.
    pub task: Arc<TaskContext>,
    /// The checked physical plan.
    pub plan: Arc<dyn ExecutionPlan>,
}

/// One kept plan and whose it is.
#[derive(Debug)]
struct Kept {
    user: String,
    statement: Statement,
    at: Instant,
    schemas: StatementSchemas,
    prepared: Prepared,
}

/// Plans kept for a short while after a client asked for a statement's schema. Each is
/// taken once, by the same user asking the same statement with the same settings; any
/// other asks plan anew. Asking the schema again, as clients do between preparing a
/// statement and running it, reads the kept plan's.
#[derive(Debug)]
pub(crate) struct PreparedStatements {
    kept: Mutex<Vec<Kept>>,
    ttl: Duration,
    capacity: usize,
}

impl PreparedStatements {
    /// Keeps up to `capacity` plans, each for `ttl`.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            kept: Mutex::default(),
            ttl,
            capacity,
        }
    }

    /// Keeps `prepared`, the plan of `statement` for `user` with its `schemas`, dropping
    /// the oldest plan when full.
    pub fn keep(
        &self,
        user: &str,
        statement: &Statement,
        schemas: StatementSchemas,
        prepared: Prepared,
    ) {
        let mut kept = self.kept.lock().expect("not poisoned");
        kept.retain(|k| k.at.elapsed() < self.ttl);
        if kept.len() >= self.capacity {
            kept.remove(0);
        }
        kept.push(Kept {
            user: user.to_string(),
            statement: statement.clone(),
            at: Instant::now(),
            schemas,
            prepared,
        });
    }

    /// The schemas of the plan kept for `user`'s `statement` run with partial results
    /// `partial`, which stays kept.
    pub fn schemas(
        &self,
        user: &str,
        statement: &Statement,
        partial: bool,
    ) -> Option<StatementSchemas> {
        let kept = self.kept.lock().expect("not poisoned");
        let at = self.position(&kept, user, statement, partial)?;
        Some(kept[at].schemas.clone())
    }

    /// Takes the plan kept for `user`'s `statement` run with partial results `partial`.
    pub fn take(&self, user: &str, statement: &Statement, partial: bool) -> Option<Prepared> {
        let mut kept = self.kept.lock().expect("not poisoned");
        let at = self.position(&kept, user, statement, partial)?;
        Some(kept.remove(at).prepared)
    }

    fn position(
        &self,
        kept: &[Kept],
        user: &str,
        statement: &Statement,
        partial: bool,
    ) -> Option<usize> {
        kept.iter().position(|k| {
            k.user == user
                && k.statement == *statement
                && k.prepared.control.partial == partial
                && k.at.elapsed() < self.ttl
        })
    }
}

#[cfg(test)]
mod tests {
    use arrow::datatypes::Schema;
    use datafusion::physical_plan::empty::EmptyExec;
    use sunlight_domain::Table;

    use super::*;

    fn schemas() -> StatementSchemas {
        StatementSchemas {
            dataset: Table::Persons.schema(),
            parameters: Arc::new(Schema::empty()),
        }
    }

    fn prepared(partial: bool) -> Prepared {
        let schema = Table::Persons.schema();
        Prepared {
            plan_sha256: "digest".into(),
            control: Arc::new(QueryControl::new(partial, Duration::from_secs(30), 1)),
            schema: schema.clone(),
            task: Arc::new(TaskContext::default()),
            plan: Arc::new(EmptyExec::new(schema)),
        }
    }

    #[test]
    fn a_kept_plan_is_taken_once_by_its_user_for_its_statement() {
        let kept = PreparedStatements::new(Duration::from_secs(30), 2);
        let count = Statement::new("SELECT count(*) FROM persons");
        kept.keep("ana", &count, schemas(), prepared(false));
        assert!(kept.take("bo", &count, false).is_none());
        assert!(
            kept.take("ana", &Statement::new("SELECT 1"), false)
                .is_none()
        );
        assert!(kept.take("ana", &count, true).is_none());
        assert!(kept.schemas("bo", &count, false).is_none());
        let asked_again = kept.schemas("ana", &count, false).expect("kept");
        assert_eq!(asked_again.dataset, Table::Persons.schema());
        assert!(kept.take("ana", &count, false).is_some());
        assert!(kept.schemas("ana", &count, false).is_none());
        assert!(kept.take("ana", &count, false).is_none());
    }

    #[test]
    fn kept_plans_expire_and_the_oldest_gives_way() {
        let kept = PreparedStatements::new(Duration::from_secs(30), 2);
        let statements = ["SELECT 1", "SELECT 2", "SELECT 3"].map(Statement::new);
        for statement in &statements {
            kept.keep("ana", statement, schemas(), prepared(false));
        }
        assert!(kept.take("ana", &statements[0], false).is_none());
        assert!(kept.take("ana", &statements[2], false).is_some());

        let expired = PreparedStatements::new(Duration::ZERO, 2);
        expired.keep("ana", &statements[0], schemas(), prepared(false));
        assert!(expired.take("ana", &statements[0], false).is_none());
    }
}
