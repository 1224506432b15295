//! A real Redis Cluster (or Valkey cluster) on loopback ports for integration tests: a
//! private PostgreSQL and N primaries with the module loaded, created with
//! `redis-cli --cluster create`.

use crate::*;
use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

pub struct Cluster {
    pub pg: Pg,
    pub nodes: Vec<Redis>,
    /// What every node loads the module with (a node added later too).
    module_args: Vec<String>,
}

impl Cluster {
    /// `primaries` nodes sharing the 16384 slots; `setup_sql` runs in PostgreSQL first.
    pub fn start(setup_sql: &str, primaries: usize) -> Cluster {
        Self::start_with_sources(setup_sql, &[], primaries)
    }

    /// A cluster whose nodes serve named sources too (issue #53): for each `(name, sql)`, a
    /// database `name` set up with `sql`, served as source `name`.
    pub fn start_with_sources(
        setup_sql: &str,
        sources: &[(&str, &str)],
        primaries: usize,
    ) -> Cluster {
        let pg = Pg::start();
        pg.execute(setup_sql);
        for (name, sql) in sources {
            pg.create_database(name, sql);
        }
        let names: Vec<&str> = sources.iter().map(|(name, _)| *name).collect();
        let module_args = module_args_with_sources(&pg, &names, &[]);
        let nodes: Vec<Redis> = (0..primaries).map(|_| Self::node(&module_args)).collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        run_ok(
            Command::new("redis-cli")
                .args(["--cluster", "create"])
                .args(&addresses)
                .args(["--cluster-replicas", "0", "--cluster-yes"]),
        );
        let cluster = Cluster {
            pg,
            nodes,
            module_args,
        };
        cluster.wait_ok();
        cluster
    }

    fn node(module_args: &[String]) -> Redis {
        let bus = free_port().to_string();
        Redis::start_with(
            module_args,
            &[
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus,
                "--cluster-node-timeout",
                "2000",
            ],
            &[],
        )
        .unwrap_or_else(|log| panic!("cluster node did not start:\n{log}"))
    }

    /// Waits until every node says the cluster is ok and knows every node.
    pub fn wait_ok(&self) {
        for node in &self.nodes {
            wait_for("the cluster to be ok", Duration::from_secs(30), || {
                let mut con = node.connection();
                let info: String = redis::cmd("CLUSTER").arg("INFO").query(&mut con).ok()?;
                let known = format!("cluster_known_nodes:{}", self.nodes.len());
                (info.contains("cluster_state:ok") && info.contains(&known)).then_some(())
            });
        }
    }

    /// Adds a replica of `self.nodes[primary]` and waits until it is in sync; returns its
    /// index in `self.nodes`.
    pub fn add_replica(&mut self, primary: usize) -> usize {
        let replica = Self::node(&self.module_args);
        let primary_port = self.nodes[primary].port;
        let primary_id: String = redis::cmd("CLUSTER")
            .arg("MYID")
            .query(&mut self.nodes[primary].connection())
            .unwrap();
        run_ok(
            Command::new("redis-cli")
                .args(["--cluster", "add-node"])
                .arg(format!("127.0.0.1:{}", replica.port))
                .arg(format!("127.0.0.1:{primary_port}"))
                .args(["--cluster-slave", "--cluster-master-id", &primary_id]),
        );
        self.nodes.push(replica);
        self.wait_ok();
        let replica = self.nodes.last().unwrap();
        wait_for("the replica to be in sync", Duration::from_secs(30), || {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query(&mut replica.connection())
                .ok()?;
            info.contains("master_link_status:up").then_some(())
        });
        self.nodes.len() - 1
    }

    /// A cluster client that follows MOVED.
    pub fn client(&self) -> redis::cluster::ClusterConnection {
        let urls: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("redis://127.0.0.1:{}/", n.port))
            .collect();
        redis::cluster::ClusterClient::new(urls)
            .unwrap()
            .get_connection()
            .unwrap()
    }

    /// Which node (by port) serves each slot, from CLUSTER SLOTS.
    pub fn slot_owners(&self) -> HashMap<u16, u16> {
        Self::slot_owners_seen_by(&self.nodes[0])
    }

    /// Which node (by port) serves each slot, as `node` sees it.
    fn slot_owners_seen_by(node: &Redis) -> HashMap<u16, u16> {
        let mut con = node.connection();
        let ranges: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut con).unwrap();
        let mut owners = HashMap::new();
        for range in ranges {
            let range: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
            let start: u16 = redis::from_redis_value(range[0].clone()).unwrap();
            let end: u16 = redis::from_redis_value(range[1].clone()).unwrap();
            let primary: Vec<redis::Value> = redis::from_redis_value(range[2].clone()).unwrap();
            let port: u16 = redis::from_redis_value(primary[1].clone()).unwrap();
            for slot in start..=end {
                owners.insert(slot, port);
            }
        }
        owners
    }

    /// The slot of a key, as the cluster computes it.
    pub fn slot_of(&self, key: &str) -> u16 {
        let mut con = self.nodes[0].connection();
        redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(key)
            .query(&mut con)
            .unwrap()
    }

    /// How many cache entries the nodes hold; panics if any key is in a slot its node does not serve (as it
    /// sees the cluster itself: right after a failover, other nodes may not know yet).
    pub fn assert_keys_in_own_slots(&self) -> usize {
        let mut total = 0;
        for node in &self.nodes {
            let owners = Self::slot_owners_seen_by(node);
            let mut con = node.connection();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
            for key in keys {
                let slot = self.slot_of(&key);
                assert_eq!(
                    owners[&slot], node.port,
                    "node {} holds {key} of slot {slot}, served by {}",
                    node.port, owners[&slot]
                );
                // The replication source's position key is checked, not counted.
                total += usize::from(key.starts_with("pg_cache:"));
            }
        }
        total
    }

    /// Waits until no node holds a cache entry.
    pub fn wait_all_empty(&self, what: &str) {
        wait_for(what, Duration::from_secs(20), || {
            self.nodes
                .iter()
                .all(|n| {
                    redis::cmd("KEYS")
                        .arg("pg_cache:*")
                        .query::<Vec<String>>(&mut n.connection())
                        .unwrap()
                        .is_empty()
                })
                .then_some(())
        });
    }

    /// A plain connection to the node serving `key`.
    pub fn owner_of(&self, key: &str) -> redis::Connection {
        let port = self.slot_owners()[&self.slot_of(key)];
        connect(port)
    }

    /// A plain connection to a node that does not serve `key`.
    pub fn other_than_owner_of(&self, key: &str) -> redis::Connection {
        let port = self.slot_owners()[&self.slot_of(key)];
        let node = self.nodes.iter().find(|n| n.port != port).unwrap();
        connect(node.port)
    }
}
