fn main() -> anyhow::Result<()> {
    xboot::cli::main()
}
