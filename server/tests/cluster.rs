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

/// A free loopback TCP port (so that a node's `public_url` can name it before it starts).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node reachable at its own `public_url` (a port picked beforehand).
fn routed_node_config(uri: &str, database: &str, id: &str) -> Config {
    let mut c = node_config(uri, database, id);
    let port = free_port();
    c.server.port = port;
    c.cluster.public_url = format!("http://127.0.0.1:{port}");
    c
}

/// Routing: whichever node a join reaches, the consultation is served by its placement's owner
/// (the other node answers `redirect` and closes with 4302); the owner renews the lease while
/// the call runs; and when a newer epoch appears in the store, the old owner fences itself: its
/// sessions close with 1012 (reconnect through the load balancer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_reach_the_owner_through_a_redirect_and_a_newer_epoch_fences_it() {
    use teleconsult::token::Role;
    use teleconsult_loadtest::participant::Participant;
    let Some(uri) = common::mongo_uri() else {
        return;
    };
    let database = format!("route_{:08x}", rand::random::<u32>());
    let a = TestServer::start_with(routed_node_config(&uri, &database, "node-a")).await;
    let b = TestServer::start_with(routed_node_config(&uri, &database, "node-b")).await;
    let store = MongoStore::open(&uri, &database).await.unwrap();
    let nodes = [&a, &b];
    let url = |s: &TestServer, c: &str| format!("ws://{}/ws/{c}", s.http_addr);

    // The practitioner joins through node a: served by whichever node the placement chose.
    let c = "c-route";
    let dr = Participant::join(
        &url(&a, c),
        &a.token(c, "dr-route", Role::Practitioner).await,
    )
    .await
    .expect("the practitioner joins");
    let placed = store
        .placement(c)
        .await
        .unwrap()
        .expect("placed at the first join");
    assert_eq!(placed.epoch, 1);
    let owner = nodes
        .iter()
        .find(|s| s.config.cluster.node_id == placed.node)
        .unwrap();
    let other = nodes
        .iter()
        .find(|s| s.config.cluster.node_id != placed.node)
        .unwrap();
    assert_eq!(dr.served_by, url(owner, c), "served by the owner");

    // The patient's join sent to the other node is redirected to the owner, and served there.
    let pt_token = a.token(c, "pt-route", Role::Patient).await;
    let pt = Participant::join(&url(other, c), &pt_token)
        .await
        .expect("the patient joins after the redirect");
    assert_eq!(pt.served_by, url(owner, c));
    assert_eq!(owner.server.state.consultations.participant_ids(c).len(), 2);
    assert!(
        other
            .server
            .state
            .consultations
            .participant_ids(c)
            .is_empty()
    );
    // A join on the legacy `/ws` is routed the same way; a token for another consultation is
    // refused on `/ws/{consultation}`.
    let legacy = format!("ws://{}/ws", other.http_addr);
    let guest = Participant::join(&legacy, &a.token(c, "gu-route", Role::Guest).await)
        .await
        .unwrap();
    assert_eq!(guest.served_by, url(owner, c));
    let wrong = Participant::join(&url(other, "c-elsewhere"), &pt_token).await;
    assert!(wrong.is_err(), "a token for another consultation");

    // The owner renews its lease while the call runs (beyond the first lease of 2 s).
    let first = placed.lease_until;
    common::poll(std::time::Duration::from_secs(10), "a renewal", || {
        let store = store.clone();
        async move {
            let p = store.placement(c).await.ok()??;
            (p.epoch == 1 && p.lease_until > first + 1_000).then_some(())
        }
    })
    .await;

    // A newer epoch for the other node (as a takeover after a lost lease writes it): the owner
    // sees it at its next renewal and closes every session of the consultation with 1012.
    let now = teleconsult_accounts::now_millis();
    let takeover = teleconsult_store::Placement {
        consultation: c.into(),
        epoch: 2,
        node: other.config.cluster.node_id.clone(),
        claimed_at: now,
        lease_until: now + 2_000,
    };
    assert!(store.claim_placement(&takeover).await.unwrap());
    for p in [&dr, &pt, &guest] {
        let closed = common::poll(std::time::Duration::from_secs(10), "fenced", || {
            let code = p.close_code();
            async move { code }
        })
        .await;
        assert_eq!(closed.0, 1012, "{closed:?}");
    }
    assert!(
        owner
            .server
            .state
            .consultations
            .participant_ids(c)
            .is_empty()
    );

    a.shutdown().await;
    b.shutdown().await;
    let _ = store.database().drop().await;
}
