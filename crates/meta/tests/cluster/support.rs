//! A group of in-process replicas, each behind its own gRPC server on loopback, that can
//! be stopped, restarted from disk and cut off from each other.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sunlight_flightsql::RunningServer;
use sunlight_meta::{
    Actor, AdminClient, Command, Faults, MetaState, Outcome, Replica, ReplicaConfig, ReplicaId,
    Role, admin_service, raft_service, token_sha256,
};
use tonic::service::Routes;

pub const SECRET: &str = "test-cluster-secret-0123456789";
pub const ADMIN_TOKEN: &str = "admin-token-for-tests";

pub struct Member {
    pub id: ReplicaId,
    pub addr: SocketAddr,
    pub dir: PathBuf,
    pub running: Option<(Arc<Replica>, RunningServer)>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub faults: Faults,
    pub members: Vec<Member>,
    pub fsync: bool,
    pub snapshot_every: u64,
}

pub fn config(id: ReplicaId, dir: PathBuf, fsync: bool, snapshot_every: u64) -> ReplicaConfig {
    ReplicaConfig {
        id,
        data: dir,
        secret: SECRET.into(),
        fsync,
        heartbeat_ms: 50,
        election_timeout_ms: 300,
        snapshot_every,
        tls: None,
    }
}

pub fn admin() -> Actor {
    Actor {
        user: "root".into(),
        role: Some(Role::Administrator),
    }
}

/// A write that can be found again by `name`: a draft model of that id.
pub fn marker(name: &str) -> Command {
    Command::AddModel {
        id: name.into(),
        version: 1,
        package: String::new(),
    }
}

async fn serve(replica: &Arc<Replica>, listen: SocketAddr) -> RunningServer {
    let routes =
        Routes::new(raft_service(replica.clone())).add_service(admin_service(replica.clone()));
    // A restarted replica takes its old port back; the old socket may linger briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match RunningServer::start(listen, routes.clone()).await {
            Ok(server) => return server,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!("rebinding {listen}: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("cannot bind {listen}: {e}"),
        }
    }
}

impl TestCluster {
    /// `n` replicas: the first initialises the group and holds the admin user, the
    /// others join through the admin service.
    pub async fn start(n: usize, fsync: bool, snapshot_every: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cluster = Self {
            dir,
            faults: Faults::default(),
            members: Vec::new(),
            fsync,
            snapshot_every,
        };
        for i in 0..n {
            let id = i as ReplicaId + 1;
            let member_dir = cluster.dir.path().join(format!("replica-{id}"));
            let replica = Replica::open(
                &config(id, member_dir.clone(), fsync, snapshot_every),
                cluster.faults.clone(),
            )
            .await
            .unwrap();
            let server = serve(&replica, "127.0.0.1:0".parse().unwrap()).await;
            let addr = server.addr();
            if id == 1 {
                replica.initialize(&addr.to_string()).await.unwrap();
                let outcome = replica
                    .propose(
                        admin(),
                        Command::AddUser {
                            name: "root".into(),
                            role: Role::Administrator,
                            node: None,
                            token_sha256: token_sha256(ADMIN_TOKEN),
                            expires_ms: None,
                        },
                    )
                    .await
                    .unwrap();
                assert!(matches!(outcome, Outcome::Applied { .. }), "{outcome:?}");
            }
            cluster.members.push(Member {
                id,
                addr,
                dir: member_dir,
                running: Some((replica, server)),
            });
            if id > 1 {
                cluster
                    .client()
                    .add_replica(id, &addr.to_string())
                    .await
                    .unwrap();
            }
        }
        cluster
    }

    pub fn addrs(&self) -> Vec<String> {
        self.members.iter().map(|m| m.addr.to_string()).collect()
    }

    pub fn client(&self) -> AdminClient {
        AdminClient::new(&self.addrs(), ADMIN_TOKEN).unwrap()
    }

    pub fn member(&self, id: ReplicaId) -> &Member {
        &self.members[id as usize - 1]
    }

    pub fn replica(&self, id: ReplicaId) -> Arc<Replica> {
        self.member(id)
            .running
            .as_ref()
            .expect("replica is running")
            .0
            .clone()
    }

    pub fn running_ids(&self) -> Vec<ReplicaId> {
        self.members
            .iter()
            .filter(|m| m.running.is_some())
            .map(|m| m.id)
            .collect()
    }

    /// Stops replica `id` and its server, keeping its disk.
    pub async fn stop(&mut self, id: ReplicaId) {
        let member = &mut self.members[id as usize - 1];
        if let Some((replica, server)) = member.running.take() {
            replica.shutdown().await;
            let _ = server.stop().await;
        }
    }

    /// Restarts replica `id` from its disk at its old address.
    pub async fn restart(&mut self, id: ReplicaId) {
        let config = config(
            id,
            self.member(id).dir.clone(),
            self.fsync,
            self.snapshot_every,
        );
        let replica = Replica::open(&config, self.faults.clone()).await.unwrap();
        let server = serve(&replica, self.member(id).addr).await;
        self.members[id as usize - 1].running = Some((replica, server));
    }

    /// The leader agreed by the running replicas in `among`, waiting up to `within`.
    pub async fn leader(&self, among: &[ReplicaId], within: Duration) -> ReplicaId {
        let deadline = Instant::now() + within;
        loop {
            let seen: Vec<_> = among
                .iter()
                .map(|&id| self.replica(id).status().leader)
                .collect();
            if let Some(Some(leader)) = seen.first()
                && among.contains(leader)
                && seen.iter().all(|s| s == &Some(*leader))
            {
                return *leader;
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every running replica has applied the same state, and returns it.
    pub async fn converged(&self, within: Duration) -> MetaState {
        let deadline = Instant::now() + within;
        loop {
            let states: Vec<MetaState> = self
                .running_ids()
                .iter()
                .map(|&id| self.replica(id).read(MetaState::clone))
                .collect();
            if states.windows(2).all(|w| w[0] == w[1]) {
                return states.into_iter().next().unwrap();
            }
            assert!(Instant::now() < deadline, "replicas did not converge");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop_all(&mut self) {
        for id in self.running_ids() {
            self.stop(id).await;
        }
    }
}

/// The test writes in a state.
pub fn markers(state: &MetaState) -> Vec<String> {
    state.models.keys().cloned().collect()
}
