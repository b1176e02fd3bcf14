//! What the crate's two BPF binaries (`boot-ebpf`, the XDP program, and `bench-client`)
//! share as a library: the panic handler every `no_std` binary needs once.
#![no_std]

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    loop {}
}
