//! Admission control on the control plane (7070) against real `vision-node`
//! processes, as an outsider attacks from its own loopback address (127.9.9.9): the
//! same scenarios as the matrix's `admission:<name>` steps
//! (`testkit::scenarios::Attack`), at `AdmissionOpts::quick` sizes (a few seconds
//! of flood each; the matrix runs the counts). Each keeps its cluster's
//! logs when it fails.

#![allow(clippy::print_stdout)]
use testkit::scenarios::{AdmissionOpts, Attack, admission_cell};

fn run(a: Attack) {
    let (r, mut c) = admission_cell(a, AdmissionOpts::quick());
    match r {
        Ok(line) => println!("{}: {line}", a.name()),
        Err(e) => {
            c.keep();
            panic!("{}: {e} (logs kept in {})", a.name(), c.dir.display());
        }
    }
}

/// Hellos from one key and from fresh keys: honest signers get 200 on every hello
/// and heartbeat, members stay connected, a repeated nonce still gets 409, the
/// flood gets 429 with Retry-After, counted in /metrics.
#[test]
fn replay_flood_locks_nobody_out() {
    run(Attack::ReplayFlood);
}

/// Heartbeats from fresh keys: honest members in every seed_peers answer, no flood
/// identity handed out or in a peer book, the cluster size bounded and back after.
#[test]
fn sybil_flood_buys_no_membership() {
    run(Attack::SybilFlood);
}

/// A fake relaying the real anchor's hellos at a pinned address is refused.
#[test]
fn relayed_hello_of_a_pinned_anchor_is_refused() {
    run(Attack::RelayedHello);
}

/// Silent sockets and a slowloris from one address leave /api/status fast for
/// others, are closed within about 6 s, and never exceed the address's cap.
#[test]
fn silent_sockets_do_not_starve_the_control_plane() {
    run(Attack::SilentSockets);
}

/// Signed membership digests from strangers' fresh keys (403 or 429), replays of a
/// real anchor's (409, never charged to its key), malformed ones (typed errors): no
/// member added or evicted, status fast, members connected, the anchor's own key
/// still answered 200 from elsewhere.
#[test]
fn digest_flood_changes_no_membership_and_locks_out_no_anchor() {
    run(Attack::DigestFlood);
}

/// Full-size block bodies announced from 8 addresses and held unfinished: refused
/// 503 `busy` unread once the room for large bodies (and each address's share) is
/// taken; the node's memory stays bounded; honest hellos and heartbeats all 200.
#[test]
fn held_large_bodies_are_bounded_and_small_ones_still_served() {
    run(Attack::BodyHold);
}

/// A seed the node probes and an address strangers make the anchor dial back answer
/// with 64 MiB bodies: each node takes at most its small-answer bound (plus kernel
/// buffers) and hangs up; the member stays connected and mines.
#[test]
fn bloated_answers_are_cut_off_at_the_small_answer_bound() {
    run(Attack::BloatedAnswers);
}
