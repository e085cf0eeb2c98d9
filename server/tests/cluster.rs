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

/// The first server message (or the close) of a join sent to `url` with `headers`.
async fn first_answer(
    url: &str,
    headers: &[(&'static str, String)],
    join: serde_json::Value,
) -> Result<teleconsult::protocol::ServerMessage, (u16, String)> {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request().expect("request");
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().expect("header"));
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connects");
    ws.send(Message::Text(join.to_string().into()))
        .await
        .expect("sends");
    loop {
        match tokio::time::timeout(common::T, ws.next())
            .await
            .expect("answer")
        {
            Some(Ok(Message::Text(t))) => {
                return Ok(serde_json::from_str(&t).expect("protocol"));
            }
            Some(Ok(Message::Close(f))) => {
                return Err(f
                    .map(|f| (u16::from(f.code), f.reason.to_string()))
                    .unwrap_or((1005, String::new())));
            }
            Some(Ok(_)) => continue,
            other => return Err((1006, format!("{other:?}"))),
        }
    }
}

/// A practitioner signed in on one node (session cookie, no link) joins a consultation another
/// node owns: the redirect carries a join ticket (in the message, never the URL), and the owner
/// seats them with it — as their account, under their name — although the cookie never reaches
/// it. The ticket works once, only for its consultation, and not when edited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_in_practitioner_is_redirected_with_a_single_use_join_ticket() {
    use teleconsult::accounts::{NewAccount, StaffRole};
    use teleconsult::protocol::ServerMessage;
    let Some(uri) = common::mongo_uri() else {
        return;
    };
    let database = format!("ticket_{:08x}", rand::random::<u32>());
    let a = TestServer::start_with(routed_node_config(&uri, &database, "node-a")).await;
    let b = TestServer::start_with(routed_node_config(&uri, &database, "node-b")).await;
    let store = MongoStore::open(&uri, &database).await.unwrap();
    let now = teleconsult_accounts::now_millis();

    // A practitioner account and a consultation of theirs, owned by node b.
    let svc = &a.server.state.accounts;
    let org = svc.create_organisation("Clinic", now).await.unwrap();
    const PASSWORD: &str = "correct horse battery staple";
    let account = svc
        .create_account(
            &org.id,
            NewAccount {
                email: "dr@ticket.example".into(),
                display_name: "Dr Ticket".into(),
                roles: vec![StaffRole::Practitioner],
                password: PASSWORD.into(),
            },
            now,
        )
        .await
        .unwrap();
    let c = "c-ticket";
    a.server
        .state
        .store
        .upsert_scheduled_consultation(&teleconsult_store::ScheduledConsultation {
            id: c.into(),
            organisation: org.id.clone(),
            practitioner: account.id.clone(),
            scheduled_at: None,
            status: teleconsult_store::ConsultationStatus::Scheduled,
            created_at: now,
            policy: teleconsult_store::Policy::Standard,
        })
        .await
        .unwrap();
    assert!(
        store
            .claim_placement(&teleconsult_store::Placement {
                consultation: c.into(),
                epoch: 1,
                node: "node-b".into(),
                claimed_at: now,
                lease_until: now + 2_000,
            })
            .await
            .unwrap()
    );

    // Signed in on node a.
    let body = serde_json::json!({ "email": "dr@ticket.example", "password": PASSWORD });
    let r = common::request(
        a.http_addr,
        "POST",
        "/api/auth/login",
        &[("Content-Type", "application/json".to_string())],
        serde_json::to_vec(&body).unwrap(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let cookie = r
        .header("set-cookie")
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let origin = format!("http://{}", a.http_addr);
    let on_a = format!("ws://{}/ws/{c}", a.http_addr);
    let session_join =
        serde_json::json!({"type": "join", "token": "", "protocol": 2, "consultation": c});
    let answer = first_answer(
        &on_a,
        &[("Cookie", cookie.clone()), ("Origin", origin.clone())],
        session_join,
    )
    .await;
    let (url, ticket) = match answer {
        Ok(ServerMessage::Redirect {
            url,
            ticket: Some(ticket),
        }) => (url, ticket),
        other => panic!("a redirect with a ticket: {other:?}"),
    };
    assert_eq!(url, format!("ws://{}/ws/{c}", b.http_addr));
    assert!(
        !url.contains(&ticket) && !url.contains('?'),
        "never in the URL"
    );

    // On node b: no cookie there (another host), the ticket instead; the page's origin is a
    // live node's.
    let ticket_join =
        |t: &str| serde_json::json!({"type": "join", "token": t, "protocol": 2, "consultation": c});
    // Edited (one character of the signature): refused.
    let mut edited = ticket.clone();
    let last = edited.pop().unwrap();
    edited.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(
        first_answer(&url, &[("Origin", origin.clone())], ticket_join(&edited))
            .await
            .err(),
        Some((4401, "expired".to_string())),
        "an edited ticket"
    );
    // For another consultation's path: refused.
    let elsewhere = format!("ws://{}/ws/c-other", b.http_addr);
    let wrong = first_answer(
        &elsewhere,
        &[("Origin", origin.clone())],
        ticket_join(&ticket),
    )
    .await;
    assert!(wrong.is_err(), "{wrong:?}");
    // (The path is checked after the redemption: a ticket sent to the wrong path is spent.) A
    // new one for the real join.
    let answer = first_answer(
        &on_a,
        &[("Cookie", cookie.clone()), ("Origin", origin.clone())],
        serde_json::json!({"type": "join", "token": "", "protocol": 2, "consultation": c}),
    )
    .await;
    let Ok(ServerMessage::Redirect {
        ticket: Some(ticket),
        ..
    }) = answer
    else {
        panic!("a second redirect with a ticket: {answer:?}");
    };
    match first_answer(&url, &[("Origin", origin.clone())], ticket_join(&ticket)).await {
        Ok(ServerMessage::Joined { you, .. }) => {
            assert_eq!(you.role.as_str(), "practitioner");
            assert_eq!(you.display_name, "Dr Ticket");
        }
        other => panic!("joined on the owner with the ticket: {other:?}"),
    }
    // Once only.
    assert_eq!(
        first_answer(&url, &[("Origin", origin.clone())], ticket_join(&ticket))
            .await
            .err(),
        Some((4401, "expired".to_string())),
        "a ticket is single-use"
    );
    a.shutdown().await;
    b.shutdown().await;
    let _ = store.database().drop().await;
}
