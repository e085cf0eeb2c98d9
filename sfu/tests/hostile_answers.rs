//! Hostile answers (issue 15): each one the SFU refuses leaves the session as it was, so the
//! genuine answer that follows still applies and the call goes on. Before `sfu::answer`, such
//! answers were either accepted (media then never started, nobody told) or refused after the
//! stack had dropped its offer, so the genuine answer failed and no new offer ever came.

mod common;

use common::Sim;
use std::time::Duration;
use teleconsult_sfu::Kind;

#[test]
fn hostile_answers_before_every_genuine_one_are_refused_and_the_call_goes_on() {
    let mut sim = Sim::in_consultation("hostile-answers");
    // Both clients send six hostile variants of every answer (first and renegotiations) before
    // the genuine one.
    sim.hostile_first = vec![0, 1];
    sim.join("practitioner", true);
    sim.run_for(Duration::from_millis(100));
    sim.join("patient", true);
    let done = sim.run_until(Duration::from_secs(5), |s| {
        s.all_settled()
            && [(0, 1), (1, 0)].iter().all(|&(a, b)| {
                let from = &s.clients[b];
                [Kind::Audio, Kind::Video]
                    .into_iter()
                    .all(|k| s.clients[a].received_from(&from.name, from.generation, k) >= 20)
            })
    });
    assert!(done, "media flows both ways after {:?}", sim.elapsed());
    // Every answer of both was preceded by its hostile variants, each refused.
    let answers: usize = sim.clients.iter().map(|c| c.answers).sum();
    assert!(answers >= 3, "first answers and a renegotiation: {answers}");
    assert_eq!(
        sim.refused_answers,
        answers as u64 * common::hostile_answers("v=0\r\n").len() as u64
    );
}
