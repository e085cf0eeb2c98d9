//! Servers as nodes of one cluster, on a real MongoDB-compatible server (FerretDB in CI): each
//! node's heartbeat document, readiness, and leaving on shutdown; and the refusal of cluster mode
//! on the embedded store.

mod common;

use common::{TestServer, http_get};
use teleconsult::config::Config;
use teleconsult_store::{ClusterStore, MongoStore};

fn node_config(uri: &str, database: &str, id: &str) -> Config {
    let mut c = Config::for_tests();
    c.storage.mongodb_uri = uri.to_string().into();
    c.storage.database = database.to_string();
    c.cluster.enabled = true;
    c.cluster.node_id = id.to_string();
    c.cluster.public_url = format!("http://{id}.nodes.test:8080");
    c.cluster.region = "eu-west".into();
    c.cluster.lease_secs = 2;
    c
}

#[test]
fn cluster_mode_is_refused_on_the_embedded_store_with_a_clear_message() {
    let mut c = Config::for_tests();
    c.cluster.enabled = true;
    c.cluster.node_id = "bad id!".into();
    let err = c.validate(true).expect_err("refused").to_string();
    assert!(
        err.contains("cluster.enabled: a cluster needs the MongoDB backend"),
        "{err}"
    );
    assert!(err.contains("cluster.node_id"), "{err}");
    assert!(err.contains("cluster.public_url"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_announce_themselves_are_ready_and_leave_on_shutdown() {
    let Some(uri) = common::mongo_uri() else {
        return;
    };
    let database = format!("cluster_{:08x}", rand::random::<u32>());
    let a = TestServer::start_with(node_config(&uri, &database, "node-a")).await;
    let b = TestServer::start_with(node_config(&uri, &database, "node-b")).await;
    let store = MongoStore::open(&uri, &database).await.unwrap();
    let now = teleconsult_accounts::now_millis();
    let live = store.live_nodes(now).await.unwrap();
    let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    let na = &live[0];
    assert_eq!(na.public_url, "http://node-a.nodes.test:8080");
    assert_eq!(na.media_addr, a.media_addr.to_string());
    assert_eq!(na.region.as_deref(), Some("eu-west"));
    assert!(na.lease_until > now && na.lease_until <= now + 2_000 + 1_000);

    for s in [&a, &b] {
        let (status, body) = http_get(s.http_addr, "/healthz/ready", None).await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = http_get(s.http_addr, "/healthz/live", None).await;
        assert_eq!(status, 200, "{body}");
    }
    let (_, body) = http_get(a.http_addr, "/healthz", None).await;
    let health: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["cluster"]["node"], "node-a");
    assert_eq!(health["cluster"]["ready"], true);

    // The heartbeat keeps the lease ahead of the clock (two leases later it is still alive).
    let first = na.heartbeat_at;
    common::poll(
        std::time::Duration::from_secs(10),
        "a later heartbeat",
        || {
            let store = store.clone();
            async move {
                let n = store
                    .live_nodes(teleconsult_accounts::now_millis())
                    .await
                    .ok()?;
                n.into_iter()
                    .find(|n| n.id == "node-a" && n.heartbeat_at > first + 1_000)
            }
        },
    )
    .await;

    a.shutdown().await;
    let live = store
        .live_nodes(teleconsult_accounts::now_millis())
        .await
        .unwrap();
    let ids: Vec<&str> = live.iter().map(|n| n.id.as_str()).collect();
    assert_eq!(ids, ["node-b"], "a node that shuts down leaves at once");
    b.shutdown().await;
    let _ = store.database().drop().await;
}

/// A rolling update: the draining node announces it (readiness 503, `draining` in the store),
/// keeps its call running, and is done only when the call ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_node_turns_unready_and_waits_for_its_calls() {
    use teleconsult_signaling::protocol::ClientMessage;
    let Some(uri) = common::mongo_uri() else {
        return;
    };
    let database = format!("drain_{:08x}", rand::random::<u32>());
    let s = TestServer::start_with(node_config(&uri, &database, "node-d")).await;
    let store = MongoStore::open(&uri, &database).await.unwrap();
    let doc = s
        .join(
            "c-drain",
            "dr-drain",
            teleconsult::token::Role::Practitioner,
        )
        .await;

    let drained = {
        let server = &s.server;
        async move { server.drain(std::time::Duration::from_secs(30)).await }
    };
    let watch = async {
        common::poll(
            std::time::Duration::from_secs(5),
            "draining announced",
            || {
                let store = store.clone();
                async move {
                    let n = store
                        .live_nodes(teleconsult_accounts::now_millis())
                        .await
                        .ok()?;
                    n.into_iter().find(|n| {
                        n.id == "node-d" && n.state == teleconsult_store::NodeState::Draining
                    })
                }
            },
        )
        .await;
        let (status, body) = http_get(s.http_addr, "/healthz/ready", None).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("draining"), "{body}");
        // Still serving the call in progress; then it ends.
        let (status, _) = http_get(s.http_addr, "/healthz/live", None).await;
        assert_eq!(status, 200);
        // Someone is in a call here, so the drain cannot have finished yet.
        assert_eq!(s.server.state.consultations.load().1, 1);
        doc.send(ClientMessage::Leave);
    };
    let (emptied, ()) = tokio::join!(drained, watch);
    assert!(
        emptied,
        "the drain ended when the call did, within its limit"
    );
    s.shutdown().await;
    let _ = store.database().drop().await;
}
