//! XDP fast path: BPF_PROG_TEST_RUN tables, differential equivalence with the slow path,
//! fuzzing, real clients in namespaces, reload under load. All need root (the program
//! is loaded into the kernel); without it they skip, like the namespace tests.
mod clients;
mod differential;
mod fixture;
mod fuzz;
mod reload;
mod table;

use xboot::xdp::{FastPath, LoadOptions};

use crate::netns;

#[test]
fn xdp_program_verifies() {
    if netns::need_root() {
        return;
    }
    let mut fp = FastPath::load(LoadOptions::for_hosts(10)).unwrap();
    let n = fp.verified_instructions();
    eprintln!("verified instructions: {n:?}, size {:?}", fp.program_size());
    assert!(n.unwrap() > 0);
}


