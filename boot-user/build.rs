//! Builds the XDP program (crate boot-ebpf) for the BPF target with the nightly
//! toolchain and bpf-linker; the object is embedded in the daemon (see src/xdp).
fn main() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../boot-ebpf");
    let pkg = aya_build::Package {
        name: "boot-ebpf",
        root_dir: root,
        ..Default::default()
    };
    aya_build::build_ebpf([pkg], aya_build::Toolchain::default())
}
