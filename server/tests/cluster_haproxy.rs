//! Many servers, one service, for real: three `teleconsult` processes on loopback (their own
//! HTTP, WebSocket and media ports), one MongoDB-compatible store (FerretDB in CI), and HAProxy
//! from Debian in front with `deploy/haproxy/haproxy.cfg` itself (balance uri depth 2,
//! consistent hashing, health checks on /healthz/ready).
//!
//! - 10 consultations joined through the load balancer: every participant is served by its
//!   consultation's owner (the placement in the store), and the consultations spread over nodes;
//!   a join sent straight to a node that is not the owner is redirected and served by the owner.
//! - kill -9 of the node owning the most consultations mid-call: every affected participant
//!   comes back through the load balancer on a live node with media flowing (webrtc-rs peers of
//!   the load generator publishing real RTP); the recovery time of each is printed (and appended
//!   to `$TELECONSULT_RECOVERY_OUT` for `scripts/cluster-recovery`); billing of those
//!   consultations has no overlapping intervals, the dead owner's closed at its last checkpoint.
//! - SIGSTOP of another owner past its lease, a takeover, then SIGCONT: the stopped node fences
//!   itself (its sessions close with 1012) and its late billing writes change nothing.
//! - A rolling restart of the three nodes, one at a time (SIGTERM: drain, exit when its calls
//!   have ended, start again): new consultations avoid the draining node, its running calls keep
//!   their media until their participants leave, nobody anywhere is disconnected.
//!
//! The two tests run one at a time (each is three servers and HAProxy on a small machine).

mod common;

use common::{BinaryServer, T, poll};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use teleconsult::config::{Config, ExposeSecret};
use teleconsult::token::Role;
use teleconsult_loadtest::participant::{JoinOptions, Participant};
use teleconsult_store::{BillingInterval, ClusterStore, MongoStore};

/// The nodes' `cluster.lease_secs`: 2 s here (the minimum) to keep the test short;
/// `scripts/cluster-recovery` sets `TELECONSULT_TEST_LEASE_SECS=5`, the default.
fn lease_secs() -> u64 {
    std::env::var("TELECONSULT_TEST_LEASE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

/// The nodes' `cluster.operator_token` (what `teleconsult drain` presents).
const OPERATOR_TOKEN: &str = "operator-token-of-the-cluster-tests-0123456789";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Node {
    id: String,
    port: u16,
    dir: std::path::PathBuf,
    toml: String,
    server: Option<BinaryServer>,
}

impl Node {
    fn ws(&self, consultation: &str) -> String {
        format!("ws://127.0.0.1:{}/ws/{consultation}", self.port)
    }
    fn pid(&self) -> i32 {
        self.server.as_ref().expect("running").child.id() as i32
    }
    /// Where its metrics listener (and `/drain`) is bound, from its start-up line.
    fn metrics_addr(&self) -> std::net::SocketAddr {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let line = log
            .lines()
            .rfind(|l| l.contains("listening (HTTP"))
            .expect("the start-up line");
        let (_, rest) = line
            .split_once("metrics_addr=")
            .expect("metrics_addr logged");
        rest.split_whitespace().next().unwrap().parse().unwrap()
    }
    async fn start(&mut self) {
        let port = self.port.to_string();
        let server = BinaryServer::start(
            &self.dir,
            &self.toml,
            &[("TELECONSULT_SERVER__PORT", port.as_str())],
            "log",
        )
        .await;
        self.server = Some(server);
    }
}

struct HaProxy(Child);

impl Drop for HaProxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: i32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

/// Billing intervals of a consultation, sorted by start: none may overlap another.
fn assert_no_overlap(consultation: &str, intervals: &[BillingInterval]) {
    let mut v = intervals.to_vec();
    v.sort_by_key(|i| i.start);
    for pair in v.windows(2) {
        let end = pair[0].end.expect("the earlier interval is closed");
        assert!(
            end <= pair[1].start,
            "{consultation}: billing intervals overlap: {:?}",
            v
        );
    }
}

/// Join through `url` until it works (a node that just died is refused by the kernel, or
/// still named by a placement whose lease runs for a moment): the web client's ladder (0, 0.3,
/// 1.2, 2.7, 4.8 s, then every 7 s), at most `T` of attempts past the first.
async fn join_until(url: &str, token: &str, options: JoinOptions) -> Participant {
    const LADDER_MS: [u64; 6] = [0, 300, 1200, 2700, 4800, 7000];
    let deadline = Instant::now() + Duration::from_secs(30);
    for attempt in 0.. {
        tokio::time::sleep(Duration::from_millis(LADDER_MS[attempt.min(5)])).await;
        match Participant::join_with(url, token, options.clone()).await {
            Ok(p) => return p,
            Err(e) => assert!(Instant::now() < deadline, "no join at {url}: {e}"),
        }
    }
    unreachable!()
}

/// Whether `receiver` got at least `packets` audio packets from `sender` (participant id).
fn hears(receiver: &Participant, sender: &str, packets: usize) -> bool {
    receiver
        .peer
        .received()
        .get(sender)
        .is_some_and(|r| r.distinct_audio() >= packets)
}

/// A call of the rolling-restart test, with the node that owns it.
struct Running {
    c: String,
    owner: String,
    dr: Participant,
    pt: Participant,
    _publishing: Vec<tokio::task::JoinHandle<()>>,
}

struct Call {
    consultation: String,
    dr_token: String,
    pt_token: String,
    dr: Participant,
    pt: Participant,
    _publishing: Vec<tokio::task::JoinHandle<()>>,
}

/// Three nodes (their own ports, `cluster.public_url` = their own address, a lease of
/// [`lease_secs`], billing checkpoints every second) on one database, behind HAProxy running
/// `deploy/haproxy/haproxy.cfg`.
struct Cluster {
    nodes: Vec<Node>,
    lb_port: u16,
    /// The nodes' configuration as far as tokens are concerned (`--dev` keys).
    config: Config,
    store: std::sync::Arc<dyn teleconsult_store::Store>,
    cluster: MongoStore,
    _lb: HaProxy,
    /// HAProxy's own log (its health checks say when a node goes DOWN).
    lb_log: std::path::PathBuf,
}

/// The tests of this file each run three nodes and HAProxy: one at a time (two at once on a
/// small machine would starve both).
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Cluster {
    async fn start(name: &str) -> Option<Cluster> {
        let uri = common::mongo_uri()?;
        let database = format!("{name}_{:08x}", rand::random::<u32>());
        let root = common::temp_dir(&format!("cluster-{name}"));
        let mut nodes: Vec<Node> = (1..=3)
        .map(|i| {
            let id = format!("n{i}");
            let port = free_port();
            let dir = root.join(&id);
            std::fs::create_dir_all(&dir).unwrap();
            let toml = format!(
                "[storage]\nmongodb_uri = \"{uri}\"\ndatabase = \"{database}\"\ndata_dir = \"{}\"\n\
                 [cluster]\nenabled = true\nnode_id = \"{id}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 lease_secs = {}\noperator_token = \"{OPERATOR_TOKEN}\"\n[billing]\ncheckpoint_secs = 1\n",
                dir.join("data").display(),
                lease_secs()
            );
            Node {
                id,
                port,
                dir,
                toml,
                server: None,
            }
        })
        .collect();
        for n in &mut nodes {
            n.start().await;
        }

        // HAProxy with the shipped configuration, the addresses from the environment.
        let lb_port = free_port();
        let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/haproxy/haproxy.cfg");
        let mut cmd = Command::new("haproxy");
        cmd.arg("-db").arg("-f").arg(&cfg);
        cmd.env("TELECONSULT_LB_BIND", format!("127.0.0.1:{lb_port}"));
        for (i, n) in nodes.iter().enumerate() {
            cmd.env(
                format!("TELECONSULT_NODE{}", i + 1),
                format!("127.0.0.1:{}", n.port),
            );
        }
        let log = std::fs::File::create(root.join("haproxy.log")).unwrap();
        let lb = HaProxy(
            cmd.stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("haproxy runs (scripts/install-test-deps installs it)"),
        );
        let lb_addr: std::net::SocketAddr = format!("127.0.0.1:{lb_port}").parse().unwrap();
        poll(T, "HAProxy forwards to a ready node", || async move {
            (status_of(lb_addr, "/healthz/ready").await == Some(200)).then_some(())
        })
        .await;

        let mut config = Config::dev();
        config.storage.mongodb_uri = uri.clone().into();
        config.storage.database = database.clone();
        let store = teleconsult_store::open(&uri, &database, &root.join("client-data"))
            .await
            .unwrap();
        let cluster = MongoStore::open(&uri, &database).await.unwrap();
        Some(Cluster {
            nodes,
            lb_port,
            config,
            store,
            cluster,
            _lb: lb,
            lb_log: root.join("haproxy.log"),
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_behind_haproxy_survive_a_kill_and_fence_a_stopped_node() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::start("three").await else {
        return;
    };
    let Cluster {
        mut nodes,
        lb_port,
        config,
        store,
        cluster,
        _lb,
        lb_log,
    } = c;
    let lb = |c: &str| format!("ws://127.0.0.1:{lb_port}/ws/{c}");
    let practitioner = JoinOptions {
        auto_admit: true,
        ..Default::default()
    };

    // 1. Ten consultations through the load balancer, each served by its owner.
    let mut calls = Vec::new();
    for i in 0..10 {
        let c = format!("c-three-{i}");
        let dr_token = common::sign_token(
            config.auth.signing_secret.expose_secret().as_bytes(),
            &c,
            &format!("dr-{i}"),
            Role::Practitioner,
        );
        let pt_token =
            common::invite_token(&*store, &config, &c, &format!("pt-{i}"), Role::Patient).await;
        let dr = Participant::join_with(&lb(&c), &dr_token, practitioner.clone())
            .await
            .expect("the practitioner joins through the load balancer");
        let pt = Participant::join(&lb(&c), &pt_token)
            .await
            .expect("the patient joins through the load balancer");
        calls.push(Call {
            consultation: c,
            dr_token,
            pt_token,
            dr,
            pt,
            _publishing: Vec::new(),
        });
    }
    let mut owner_of = BTreeMap::new();
    for call in &calls {
        let p = cluster
            .placement(&call.consultation)
            .await
            .unwrap()
            .expect("placed");
        let owner = nodes.iter().find(|n| n.id == p.node).unwrap();
        for who in [&call.dr, &call.pt] {
            // Straight through the balancer to the owner, or redirected to it.
            assert!(
                who.served_by == lb(&call.consultation)
                    || who.served_by == owner.ws(&call.consultation),
                "{}",
                who.served_by
            );
        }
        owner_of.insert(call.consultation.clone(), p.node.clone());
    }
    let mut per_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in owner_of.values() {
        *per_node.entry(n.as_str()).or_default() += 1;
    }
    assert!(
        per_node.len() >= 2,
        "consultations spread over nodes: {per_node:?}"
    );
    // Each node holds exactly the consultations it owns, with both participants of each: no
    // participant is served anywhere but at its consultation's owner (the nodes' own counts, as
    // their heartbeats report them).
    let expected: BTreeMap<String, (u32, u32)> = nodes
        .iter()
        .map(|n| {
            let k = per_node.get(n.id.as_str()).copied().unwrap_or(0) as u32;
            (n.id.clone(), (k, 2 * k))
        })
        .collect();
    poll(
        T,
        "every node reports the participants of its own consultations",
        || {
            let cluster = cluster.clone();
            let expected = expected.clone();
            async move {
                let live = cluster
                    .live_nodes(teleconsult_accounts::now_millis())
                    .await
                    .ok()?;
                let seen: BTreeMap<String, (u32, u32)> = live
                    .into_iter()
                    .map(|n| (n.id, (n.consultations, n.participants)))
                    .collect();
                (seen == expected).then_some(())
            }
        },
    )
    .await;
    println!("placement over nodes: {per_node:?}");

    // A join sent straight to a node that does not own the consultation: redirected, served.
    let c0 = &calls[0].consultation;
    let wrong = nodes.iter().find(|n| n.id != owner_of[c0]).unwrap();
    let owner = nodes.iter().find(|n| n.id == owner_of[c0]).unwrap();
    let gu_token = common::invite_token(&*store, &config, c0, "gu-0", Role::Guest).await;
    let guest = Participant::join(&wrong.ws(c0), &gu_token)
        .await
        .expect("redirected, then served");
    assert_eq!(guest.served_by, owner.ws(c0));
    drop(guest);

    // 2. kill -9 of the node owning the most consultations, mid-call.
    let victim = per_node
        .iter()
        .max_by_key(|(_, k)| **k)
        .map(|(n, _)| n.to_string())
        .unwrap();
    let affected: Vec<usize> = (0..calls.len())
        .filter(|&i| owner_of[&calls[i].consultation] == victim)
        .collect();
    for &i in &affected {
        let call = &mut calls[i];
        call._publishing = vec![
            call.dr.peer.start_publishing(1),
            call.pt.peer.start_publishing(2),
        ];
    }
    for &i in &affected {
        let call = &calls[i];
        poll(T, "media flowing before the kill", || {
            let ok = hears(&call.dr, &call.pt.id, 20) && hears(&call.pt, &call.dr.id, 20);
            async move { ok.then_some(()) }
        })
        .await;
    }
    let killed_at = Instant::now();
    let killed_at_ms = teleconsult_accounts::now_millis();
    nodes
        .iter_mut()
        .find(|n| n.id == victim)
        .unwrap()
        .server
        .as_mut()
        .unwrap()
        .kill();
    // Every affected participant notices the drop and comes back through the load balancer,
    // all at once (as their browsers would).
    let rejoin = affected.iter().map(|&i| {
        let (c, dr_token, pt_token) = (
            calls[i].consultation.clone(),
            calls[i].dr_token.clone(),
            calls[i].pt_token.clone(),
        );
        let (lb_dr, lb_pt) = (lb(&c), lb(&c));
        let practitioner = practitioner.clone();
        async move {
            let (dr, pt) = tokio::join!(
                join_until(&lb_dr, &dr_token, practitioner),
                join_until(&lb_pt, &pt_token, JoinOptions::default())
            );
            let publishing = vec![dr.peer.start_publishing(1), pt.peer.start_publishing(2)];
            // Back = the other side hears this participant again (20 packets: 0.4 s of audio).
            let (mut dr_back, mut pt_back) = (None, None);
            let deadline = Instant::now() + Duration::from_secs(30);
            while dr_back.is_none() || pt_back.is_none() {
                assert!(Instant::now() < deadline, "{c}: media did not come back");
                if dr_back.is_none() && hears(&pt, &dr.id, 20) {
                    dr_back = Some(killed_at.elapsed());
                }
                if pt_back.is_none() && hears(&dr, &pt.id, 20) {
                    pt_back = Some(killed_at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (c, dr, pt, publishing, [dr_back.unwrap(), pt_back.unwrap()])
        }
    });
    let back = futures_util::future::join_all(rejoin).await;
    let mut recoveries = Vec::new();
    for (c, _dr, _pt, _publishing, times) in &back {
        let p = cluster.placement(c).await.unwrap().unwrap();
        assert_ne!(p.node, victim, "{c}: re-placed on a live node");
        assert!(p.epoch >= 2, "{c}: a new epoch");
        recoveries.extend(times.iter().map(|d| d.as_secs_f64()));
    }
    println!(
        "recovery after kill -9 of {victim} ({} consultations, {} participants), seconds: {:?}",
        back.len(),
        recoveries.len(),
        recoveries
    );
    if let Ok(out) = std::env::var("TELECONSULT_RECOVERY_OUT") {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(out)
            .unwrap();
        for r in &recoveries {
            writeln!(f, "{r:.3}").unwrap();
        }
    }
    // Billing: the dead owner's intervals closed at their last checkpoint, no overlap with the
    // new owner's; what is lost is at most the time since that checkpoint.
    for (c, ..) in &back {
        let intervals = poll(T, "the new owner's billing interval", || {
            let store = store.clone();
            let c = c.clone();
            async move {
                let v = store.billing_intervals(&c).await.ok()?;
                v.iter().any(|i| i.start > killed_at_ms).then_some(v)
            }
        })
        .await;
        assert!(
            intervals.iter().any(|i| i.start < killed_at_ms),
            "{c}: the dead owner's interval was stored: {intervals:?}"
        );
        assert_no_overlap(c, &intervals);
        let old: Vec<_> = intervals
            .iter()
            .filter(|i| i.start < killed_at_ms)
            .collect();
        assert!(
            old.iter()
                .all(|i| i.recovered && i.end == Some(i.checkpoint)),
            "{c}: the dead owner's interval ends at its last checkpoint: {old:?}"
        );
        let lost: Vec<i64> = old.iter().map(|i| killed_at_ms - i.checkpoint).collect();
        println!("{c}: billable time lost at the kill (ms): {lost:?}");
    }

    // 3. SIGSTOP of a live owner past its lease; a takeover; SIGCONT: it fences itself.
    let (c_stop, stopped) = calls
        .iter()
        .filter(|call| owner_of[&call.consultation] != victim)
        .map(|call| {
            (
                call.consultation.clone(),
                owner_of[&call.consultation].clone(),
            )
        })
        .next()
        .expect("a consultation on a surviving node");
    let call = calls
        .iter()
        .find(|call| call.consultation == c_stop)
        .unwrap();
    let stopped_pid = nodes.iter().find(|n| n.id == stopped).unwrap().pid();
    signal(stopped_pid, "-STOP");
    let stopped_id = stopped.clone();
    poll(
        Duration::from_secs(20),
        "the stopped node's lease runs out",
        || {
            let cluster = cluster.clone();
            let stopped = stopped_id.clone();
            async move {
                let live = cluster
                    .live_nodes(teleconsult_accounts::now_millis())
                    .await
                    .ok()?;
                (!live.iter().any(|n| n.id == stopped)).then_some(())
            }
        },
    )
    .await;
    // And until HAProxy's health checks took it out of the ring (a join it still forwarded to
    // the frozen process would wait for `timeout server`, as a browser's would).
    let server_name = format!(
        "node{}",
        nodes.iter().position(|n| n.id == stopped).unwrap() + 1
    );
    poll(
        Duration::from_secs(20),
        "HAProxy marks the stopped node down",
        || {
            let log = std::fs::read_to_string(&lb_log).unwrap_or_default();
            let down = log.contains(&format!("teleconsult_nodes/{server_name} is DOWN"));
            async move { down.then_some(()) }
        },
    )
    .await;
    // The practitioner's second device (a new connection) re-places it on a live node.
    let dr2 = join_until(&lb(&c_stop), &call.dr_token, practitioner.clone()).await;
    let p = cluster.placement(&c_stop).await.unwrap().unwrap();
    assert_ne!(p.node, stopped, "taken over by a live node");
    let before = store.billing_intervals(&c_stop).await.unwrap();
    signal(stopped_pid, "-CONT");
    for who in [&call.dr, &call.pt] {
        let closed = poll(T, "the stopped node fences itself", || {
            let code = who.close_code();
            async move { code }
        })
        .await;
        assert_eq!(closed.0, 1012, "{closed:?}");
    }
    // Nothing it wrote after waking changed the consultation's billing: the intervals it had
    // open were closed by the takeover at their last checkpoint, and stay so.
    let after = store.billing_intervals(&c_stop).await.unwrap();
    for i in &before {
        let now = after.iter().find(|a| a.id == i.id).unwrap();
        assert_eq!((now.end, now.checkpoint), (i.end, i.checkpoint), "{c_stop}");
    }
    assert_no_overlap(&c_stop, &after);
    drop(dr2);
    drop(back);
    drop(calls);
    let _ = cluster.database().drop().await;
}

/// The status of `GET path` at `addr`, or `None` while nothing answers (HTTP/1.0, raw).
async fn status_of(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: lb\r\n\r\n").as_bytes())
            .await
            .ok()?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.ok()?;
        let head = String::from_utf8_lossy(&buf);
        head.split_whitespace().nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()?
}

/// A rolling restart of all three nodes, one at a time, as a DaemonSet update does it: SIGTERM
/// makes the node drain (readiness 503, HAProxy takes it out of the ring); new consultations go
/// elsewhere; the call it carries goes on, media flowing, until its participants leave; then the
/// node exits by itself and starts again. No participant of any consultation is ever
/// disconnected but by their own `leave`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_of_three_draining_nodes_interrupts_no_consultation() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::start("rolling").await else {
        return;
    };
    let Cluster {
        mut nodes,
        lb_port,
        config,
        store,
        cluster,
        _lb,
        ..
    } = c;
    let lb = |c: &str| format!("ws://127.0.0.1:{lb_port}/ws/{c}");
    let practitioner = JoinOptions {
        auto_admit: true,
        ..Default::default()
    };
    let secret = config
        .auth
        .signing_secret
        .expose_secret()
        .as_bytes()
        .to_vec();
    let mut serial = 0;
    // A call (practitioner and patient, both publishing) through the load balancer.
    let call = async |serial: &mut usize| {
        *serial += 1;
        let c = format!("c-rolling-{serial}");
        let dr_token = common::sign_token(&secret, &c, &format!("dr-{serial}"), Role::Practitioner);
        let pt_token =
            common::invite_token(&*store, &config, &c, &format!("pt-{serial}"), Role::Patient)
                .await;
        let dr = Participant::join_with(&lb(&c), &dr_token, practitioner.clone())
            .await
            .unwrap();
        let pt = Participant::join(&lb(&c), &pt_token).await.unwrap();
        let publishing = vec![dr.peer.start_publishing(1), pt.peer.start_publishing(2)];
        let owner = cluster.placement(&c).await.unwrap().unwrap().node;
        Running {
            c,
            owner,
            dr,
            pt,
            _publishing: publishing,
        }
    };
    let heard = |p: &Participant, from: &str| {
        p.peer
            .received()
            .get(from)
            .map_or(0, |r| r.distinct_audio())
    };
    let mut calls: Vec<Running> = Vec::new();
    for node in nodes.iter_mut() {
        let id = node.id.clone();
        // At least one call running on this node (new ones until one is placed here).
        for _ in 0..12 {
            if calls.iter().any(|r| r.owner == id) {
                break;
            }
            calls.push(call(&mut serial).await);
        }
        assert!(
            calls.iter().any(|r| r.owner == id),
            "a consultation placed on {id}"
        );
        for r in calls.iter().filter(|r| r.owner == id) {
            poll(T, "media flowing", || {
                let ok = hears(&r.dr, &r.pt.id, 20) && hears(&r.pt, &r.dr.id, 20);
                async move { ok.then_some(()) }
            })
            .await;
        }

        // SIGTERM: it drains.
        signal(node.pid(), "-TERM");
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", node.port).parse().unwrap();
        poll(T, "the node turns not-ready", || async move {
            (status_of(addr, "/healthz/ready").await == Some(503)).then_some(())
        })
        .await;
        // A new consultation goes elsewhere...
        let new = call(&mut serial).await;
        assert_ne!(new.owner, id, "no new consultation on a draining node");
        calls.push(new);
        // ...while the running ones go on, media flowing both ways.
        let (mine, others): (Vec<Running>, Vec<Running>) =
            calls.drain(..).partition(|r| r.owner == id);
        calls = others;
        for r in &mine {
            let (a0, b0) = (heard(&r.dr, &r.pt.id), heard(&r.pt, &r.dr.id));
            poll(T, "media still flowing on the draining node", || {
                let ok = heard(&r.dr, &r.pt.id) >= a0 + 50 && heard(&r.pt, &r.dr.id) >= b0 + 50;
                async move { ok.then_some(()) }
            })
            .await;
            assert_eq!(
                r.dr.close_code(),
                None,
                "{}: the practitioner is still connected",
                r.c
            );
            assert_eq!(
                r.pt.close_code(),
                None,
                "{}: the patient is still connected",
                r.c
            );
        }
        // The calls end (everyone leaves): the node is empty, leaves the cluster and exits.
        for r in &mine {
            r.dr.send(teleconsult::protocol::ClientMessage::Leave);
            r.pt.send(teleconsult::protocol::ClientMessage::Leave);
        }
        for r in &mine {
            for p in [&r.dr, &r.pt] {
                let closed = poll(T, "left", || {
                    let code = p.close_code();
                    async move { code }
                })
                .await;
                assert_eq!(
                    closed.0, 1000,
                    "{}: closed by the participant's own leave: {closed:?}",
                    r.c
                );
            }
        }
        let mut server = node.server.take().unwrap();
        let status = poll(Duration::from_secs(20), "the drained node exits", || {
            let status = server.child.try_wait().expect("child status");
            async move { status }
        })
        .await;
        assert!(
            status.success(),
            "the drained node exits cleanly: {status:?}"
        );
        drop((mine, server));
        // And starts again.
        node.start().await;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{}", node.port).parse().unwrap();
        poll(T, "the restarted node is ready", || async move {
            (status_of(addr, "/healthz/ready").await == Some(200)).then_some(())
        })
        .await;
    }
    // Nobody still in a call was disconnected during the whole rolling restart.
    for r in &calls {
        assert_eq!(r.dr.close_code(), None, "{}", r.c);
        assert_eq!(r.pt.close_code(), None, "{}", r.c);
    }
    println!("rolling restart: {serial} consultations, none interrupted");
    drop(calls);
    let _ = cluster.database().drop().await;
}

/// The admitted state of a consultation survives its owner: kill -9 of the owner mid-call, the
/// patient's client comes back through HAProxy, lands on another node and is back in the call
/// at once — the practitioner (back too, admitting nobody) does nothing; media flows again; a
/// guest the practitioner removed stays out; billing has no overlap; and the dead owner's epoch
/// can no longer write the admissions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_kill_an_admitted_patient_is_back_in_the_call_without_a_new_admission() {
    use teleconsult::protocol::{ClientMessage, ServerMessage};
    use teleconsult_consultation::ParticipantState;
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::start("admit").await else {
        return;
    };
    let Cluster {
        mut nodes,
        lb_port,
        config,
        store,
        cluster,
        _lb,
        ..
    } = c;
    let lb = |c: &str| format!("ws://127.0.0.1:{lb_port}/ws/{c}");
    let c = "c-admit-1";
    let dr_token = common::sign_token(
        config.auth.signing_secret.expose_secret().as_bytes(),
        c,
        "dr-admit",
        Role::Practitioner,
    );
    let pt_token = common::invite_token(&*store, &config, c, "pt-admit", Role::Patient).await;
    let gu_token = common::invite_token(&*store, &config, c, "gu-admit", Role::Guest).await;
    // The practitioner admits whoever waits, this first time only.
    let dr = Participant::join_with(
        &lb(c),
        &dr_token,
        JoinOptions {
            auto_admit: true,
            ..Default::default()
        },
    )
    .await
    .expect("the practitioner joins");
    let pt = Participant::join(&lb(c), &pt_token).await.expect("patient");
    let gu = Participant::join(&lb(c), &gu_token).await.expect("guest");
    let admitted = |p: &Participant| {
        p.history
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, ServerMessage::Admitted { .. }))
    };
    poll(T, "the patient and the guest admitted", || {
        let ok = admitted(&pt) && admitted(&gu);
        async move { ok.then_some(()) }
    })
    .await;
    // The guest is removed by the practitioner.
    dr.send(ClientMessage::Remove {
        participant: gu.id.clone().into(),
    });
    poll(T, "the guest removed", || {
        let code = gu.close_code();
        async move { code }
    })
    .await;
    let _publishing = [dr.peer.start_publishing(1), pt.peer.start_publishing(2)];
    poll(T, "media flowing before the kill", || {
        let ok = hears(&dr, &pt.id, 20) && hears(&pt, &dr.id, 20);
        async move { ok.then_some(()) }
    })
    .await;
    let placed = cluster.placement(c).await.unwrap().unwrap();
    // The owner keeps the admissions in the store, with its epoch.
    let kept = poll(T, "the admissions in the store", || {
        let cluster = cluster.clone();
        async move {
            let a = cluster.admissions(c).await.ok()??;
            (a.admitted.len() == 2 && a.removed.len() == 1).then_some(a)
        }
    })
    .await;
    assert_eq!(kept.epoch, placed.epoch);
    assert!(
        kept.admitted.contains(&"account:dr-admit".to_string()),
        "{kept:?}"
    );
    assert!(
        kept.admitted.iter().any(|s| s.starts_with("invitation:")),
        "the patient's seat (an invitation id, never a name): {kept:?}"
    );
    assert!(kept.removed[0].starts_with("invitation:"), "{kept:?}");

    // kill -9 of the owner, mid-call.
    let killed_at_ms = teleconsult_accounts::now_millis();
    let owner = nodes.iter_mut().find(|n| n.id == placed.node).unwrap();
    owner.server.as_mut().unwrap().kill();
    drop((dr, pt, gu));
    // Both come back through the load balancer; the practitioner admits nobody this time.
    let url = lb(c);
    let (dr, pt) = tokio::join!(
        join_until(&url, &dr_token, JoinOptions::default()),
        join_until(&url, &pt_token, JoinOptions::default())
    );
    let p = cluster.placement(c).await.unwrap().unwrap();
    assert_ne!(p.node, placed.node, "re-placed on a live node");
    assert!(p.epoch > placed.epoch);
    let joined_admitted = pt.history.lock().unwrap().iter().any(|m| {
        matches!(m, ServerMessage::Joined { you, .. } if you.state == ParticipantState::Admitted)
    });
    assert!(
        joined_admitted,
        "the patient is back in the call at once, without a new admission"
    );
    assert!(
        !dr.history.lock().unwrap().iter().any(
            |m| matches!(m, ServerMessage::WaitingList { participants } if !participants.is_empty())
        ),
        "nobody waits for the practitioner"
    );
    let _publishing = [dr.peer.start_publishing(1), pt.peer.start_publishing(2)];
    poll(T, "media flowing again on the new owner", || {
        let ok = hears(&dr, &pt.id, 20) && hears(&pt, &dr.id, 20);
        async move { ok.then_some(()) }
    })
    .await;
    // The removed guest stays out.
    let again = Participant::join(&lb(c), &gu_token).await;
    match again {
        Err(_) => {}
        Ok(g) => {
            let code = poll(T, "the removed guest refused", || {
                let code = g.close_code();
                async move { code }
            })
            .await;
            assert_ne!(code.0, 1000, "{code:?}");
        }
    }
    // The new owner stamped its epoch: the dead owner's can no longer write the admissions.
    let now = cluster.admissions(c).await.unwrap().unwrap();
    assert_eq!(now.epoch, p.epoch);
    let stale = teleconsult_store::StoredAdmissions {
        epoch: placed.epoch,
        admitted: vec![],
        ..now.clone()
    };
    assert!(!cluster.save_admissions(&stale).await.unwrap());
    assert_eq!(
        cluster.admissions(c).await.unwrap().unwrap().admitted,
        now.admitted
    );
    // Billing: the dead owner's intervals closed at their last checkpoint, no overlap.
    let intervals = poll(T, "the new owner's billing interval", || {
        let store = store.clone();
        async move {
            let v = store.billing_intervals(c).await.ok()?;
            v.iter().any(|i| i.start > killed_at_ms).then_some(v)
        }
    })
    .await;
    assert_no_overlap(c, &intervals);
    assert!(
        intervals
            .iter()
            .filter(|i| i.start < killed_at_ms)
            .all(|i| i.recovered && i.end == Some(i.checkpoint)),
        "{intervals:?}"
    );
    drop((dr, pt));
    let _ = cluster.database().drop().await;
}

/// `teleconsult drain`, as an operator runs it against one node: refused without the operator
/// token; with it the node turns not-ready, new consultations go to other nodes (a join sent to
/// it straight is redirected), its running call goes on with media until it ends, and then the
/// node exits by itself and the command reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teleconsult_drain_stops_new_placements_keeps_the_call_and_exits_when_empty() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::start("opdrain").await else {
        return;
    };
    let Cluster {
        mut nodes,
        lb_port,
        config,
        store,
        cluster,
        _lb,
        ..
    } = c;
    let secret = config
        .auth
        .signing_secret
        .expose_secret()
        .as_bytes()
        .to_vec();
    let practitioner = JoinOptions {
        auto_admit: true,
        ..Default::default()
    };
    let call = async |i: usize, url: &str| {
        let c = format!("c-opdrain-{i}");
        let dr_token = common::sign_token(&secret, &c, &format!("dr-{i}"), Role::Practitioner);
        let pt_token =
            common::invite_token(&*store, &config, &c, &format!("pt-{i}"), Role::Patient).await;
        let url = url.replace("{c}", &c);
        let dr = Participant::join_with(&url, &dr_token, practitioner.clone())
            .await
            .unwrap();
        let pt = Participant::join(&url, &pt_token).await.unwrap();
        let owner = cluster.placement(&c).await.unwrap().unwrap().node;
        (c, owner, dr, pt)
    };
    let lb_url = format!("ws://127.0.0.1:{lb_port}/ws/{{c}}");
    let (c0, owner, dr, pt) = call(0, &lb_url).await;
    let _publishing = [dr.peer.start_publishing(1), pt.peer.start_publishing(2)];
    poll(T, "media flowing", || {
        let ok = hears(&dr, &pt.id, 20) && hears(&pt, &dr.id, 20);
        async move { ok.then_some(()) }
    })
    .await;
    let node = nodes.iter_mut().find(|n| n.id == owner).unwrap();
    let metrics = node.metrics_addr();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", node.port).parse().unwrap();

    // Without the operator token (or with another), nothing happens.
    let client = reqwest::Client::new();
    let drain_url = format!("http://{metrics}/drain");
    let r = client.post(&drain_url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&drain_url)
        .bearer_auth("operator-token-of-someone-else-0123456789xyz")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Nor on the public listener.
    let r = client
        .post(format!("http://{addr}/drain"))
        .bearer_auth(OPERATOR_TOKEN)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_client_error(), "{}", r.status());
    assert_eq!(status_of(addr, "/healthz/ready").await, Some(200));

    // The operator's command, as run on the node (its configuration holds the token).
    let out = node.dir.join("drain.out");
    let mut drain = Command::new(env!("CARGO_BIN_EXE_teleconsult"))
        .args(["drain", "--dev", "--config"])
        .arg(node.dir.join("teleconsult.toml"))
        .args(["--url", &format!("http://{metrics}"), "--wait", "120"])
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("teleconsult drain runs");
    poll(T, "the node turns not-ready", || async move {
        (status_of(addr, "/healthz/ready").await == Some(503)).then_some(())
    })
    .await;
    // New consultations go elsewhere, through the balancer or sent to it straight.
    let (_c1, owner1, _dr1, _pt1) = call(1, &lb_url).await;
    assert_ne!(owner1, owner, "no new consultation on the draining node");
    let straight = format!("ws://127.0.0.1:{}/ws/{{c}}", node.port);
    let (c2, owner2, dr2, _pt2) = call(2, &straight).await;
    assert_ne!(
        owner2, owner,
        "a join sent to the draining node is placed elsewhere"
    );
    assert_ne!(dr2.served_by, straight.replace("{c}", &c2), "redirected");
    // The running call goes on, media flowing, nobody disconnected.
    let heard = |p: &Participant, from: &str| {
        p.peer
            .received()
            .get(from)
            .map_or(0, |r| r.distinct_audio())
    };
    let (a0, b0) = (heard(&dr, &pt.id), heard(&pt, &dr.id));
    poll(T, "media still flowing on the draining node", || {
        let ok = heard(&dr, &pt.id) >= a0 + 50 && heard(&pt, &dr.id) >= b0 + 50;
        async move { ok.then_some(()) }
    })
    .await;
    assert_eq!(dr.close_code(), None);
    assert_eq!(pt.close_code(), None);
    assert!(
        drain.try_wait().unwrap().is_none(),
        "the command waits for the node"
    );
    let server = node.server.as_mut().unwrap();
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the node still runs"
    );

    // The call ends: the node leaves the cluster and exits, and the command says so.
    dr.send(teleconsult::protocol::ClientMessage::Leave);
    pt.send(teleconsult::protocol::ClientMessage::Leave);
    let status = poll(Duration::from_secs(30), "the drained node exits", || {
        let status = server.child.try_wait().expect("child status");
        async move { status }
    })
    .await;
    assert!(status.success(), "{status:?}");
    let done = poll(Duration::from_secs(30), "the drain command ends", || {
        let status = drain.try_wait().expect("drain status");
        async move { status }
    })
    .await;
    assert!(done.success(), "{done:?}");
    let printed = std::fs::read_to_string(&out).unwrap();
    assert!(
        printed.contains("drained: the node has exited"),
        "{printed}"
    );
    assert!(
        printed.contains(&format!("{owner}: draining=true")),
        "{printed}"
    );
    let live = cluster
        .live_nodes(teleconsult_accounts::now_millis())
        .await
        .unwrap();
    assert!(!live.iter().any(|n| n.id == owner), "it left the cluster");
    let _ = c0;
    let _ = cluster.database().drop().await;
}
