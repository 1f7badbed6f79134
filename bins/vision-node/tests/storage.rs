//! Storage faults against the real binary (issue 20), the same scenarios as the
//! matrix's `fault:disk-full`, `fault:store-corruption`, `fault:mempool-kill9` and
//! `fault:early-sigterm` (`testkit::scenarios`).

use testkit::scenarios::{Fault, SKIP, fault_cell};

fn run(fault: Fault) {
    testkit::use_node_binary(env!("CARGO_BIN_EXE_vision-node").into());
    let (r, mut cluster) = fault_cell(fault);
    match r {
        Ok(summary) => eprintln!("{}: {summary}", fault.name()),
        Err(e) if e.starts_with(SKIP) => eprintln!("{}: {e}", fault.name()),
        Err(e) => {
            cluster.keep();
            panic!(
                "{}: {e} (logs kept in {})",
                fault.name(),
                cluster.dir.display()
            );
        }
    }
}

#[test]
fn a_full_disk_takes_the_store_down_and_space_brings_it_back_without_a_restart() {
    run(Fault::DiskFull);
}

#[test]
fn damaged_or_empty_stores_are_refused_or_shown_down_never_ok() {
    run(Fault::StoreCorruption);
}

#[test]
fn accepted_transactions_survive_kill_9() {
    run(Fault::MempoolKill9);
}

#[test]
fn sigterm_in_the_first_milliseconds_exits_0() {
    run(Fault::EarlySigterm);
}
