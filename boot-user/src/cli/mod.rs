//! The `xboot` command line (clap): `serve`, `check-config`, and the client commands that
//! talk to a running server's API (`host`, `image`, `status`, `events`, `discovered`).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod accounts;
mod check;
mod client_cmds;
mod events;
mod output;
mod show_boot;
mod token_key;

/// Default API socket of the client commands (`api.socket_path`'s default).
pub const DEFAULT_SOCKET: &str = "/var/run/xboot/xboot-api.socket";

#[derive(Debug, Parser)]
#[command(
    name = "xboot",
    version,
    about = "Network boot server for bare-metal fleets"
)]
pub struct Cli {
    /// Log filter (error, warn, info, debug, trace, or a RUST_LOG directive). Default:
    /// RUST_LOG, else `info` for serve and `warn` for the other commands.
    #[arg(long, global = true, value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Debug messages: --log-level debug (Grendel's flag).
    #[arg(long, global = true)]
    pub debug: bool,
    /// Informational messages: --log-level info (Grendel's flag).
    #[arg(long, global = true)]
    pub verbose: bool,
    /// Config file [default: /etc/xboot/xboot.toml, else /etc/grendel/grendel.toml, the
    /// first that exists]. `serve` and `check-config` need one; the client commands take
    /// the API socket (`api.socket_path`) from it when --socket is not given. Keys can be
    /// set by the environment too: XBOOT_<SECTION>_<KEY> or GRENDEL_<SECTION>_<KEY>.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "XBOOT_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,
    /// API unix socket [default: api.socket_path of --config, else /var/run/xboot/xboot-api.socket].
    #[arg(long, global = true, env = "XBOOT_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Talk to the API over TCP instead (`host:port` of api.listen).
    #[arg(
        long,
        global = true,
        env = "XBOOT_API",
        value_name = "HOST:PORT",
        conflicts_with = "socket"
    )]
    pub api: Option<String>,
    /// Bearer token for --api (api.token).
    #[arg(long, global = true, env = "XBOOT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Inventory files, for every command that reads an inventory offline.
    #[command(flatten)]
    pub files: InventoryFiles,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the boot server (DHCP, TFTP, HTTP, API).
    Serve(ServeArgs),
    /// Validate a config and its inventory offline: exit 0, or 1 with every problem.
    CheckConfig,
    /// Hosts: list, show, add, import, export, delete, provision, unprovision.
    #[command(subcommand)]
    Host(HostCmd),
    /// Boot images: list, show, add, import, export, delete.
    #[command(subcommand)]
    Image(ImageCmd),
    /// API users (password sign-in, roles read-only, operator, admin).
    #[command(subcommand)]
    User(accounts::UserCmd),
    /// API bearer tokens: scoped (read-only, operator, admin), optionally expiring.
    #[command(subcommand)]
    Token(accounts::TokenCmd),
    /// The boot-token keyring: rotate it (a new signing key; tokens of the old one stay
    /// valid until they expire), or show its keys.
    #[command(subcommand)]
    TokenKey(token_key::TokenKeyCmd),
    /// The whole inventory: dump it (Grendel's `db dump` shape) or restore one.
    #[command(subcommand)]
    Db(DbCmd),
    /// Server status: inventory counts, uptime, service counters.
    Status(JsonFlag),
    /// Boot events (DHCP, TFTP, script, kernel, initrd, complete ...) of the hosts of a node set.
    Events {
        /// Node set, e.g. cn[001-010].
        nodeset: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Unknown MACs the DHCP server has seen (and not answered).
    Discovered(JsonFlag),
    // BMC power control comes from branch `bmc`:
    /// BMC power control over IPMI (RMCP+) or Redfish: `xboot bmc power cycle cn[1-100] --pxe`.
    Bmc(crate::bmc::cli::BmcArgs),
    /// Cluster mode (`[cluster]` of --config): the servers sharing the inventory in etcd.
    #[command(subcommand)]
    Cluster(ClusterCmd),
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Servers, their segments, the revision each applied against etcd's, staleness.
    Status(JsonFlag),
    /// Prints the keepalived.conf that keeps a segment's VIP (`cluster.segment` `vip`)
    /// on a server of the segment whose xboot answers HTTP (run it on each of them).
    Keepalived(KeepalivedArgs),
}

#[derive(Debug, Clone, Args)]
pub struct KeepalivedArgs {
    /// The segment (`cluster.segment` `name`) whose VIP this is.
    #[arg(long)]
    pub segment: String,
    /// VRRP priority; the same on every server of the segment (they are equal).
    #[arg(long, default_value_t = 100)]
    pub priority: u8,
    /// Seconds between VRRP advertisements (VRRPv3: fractions down to 0.01).
    #[arg(long, default_value_t = 1.0)]
    pub advert_int: f64,
    /// Failed health checks in a row (one a second) that move the VIP away.
    #[arg(long, default_value_t = 2)]
    pub fall: u32,
    /// The NIC holding the VIP; default: the segment's first `interfaces`.
    #[arg(long)]
    pub interface: Option<String>,
}

/// `xboot serve`: Grendel's flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The config file (global --config).
    #[arg(skip)]
    pub config: PathBuf,
    /// The inventory files (global --hosts, --images).
    #[arg(skip)]
    pub files: InventoryFiles,
    /// State directory (overrides state_dir).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// API socket (global --socket; overrides api.socket_path).
    #[arg(skip)]
    pub socket: Option<PathBuf>,
    /// Listen on this address: replaces the host part of every listen address
    /// (dhcp, tftp, pxe, provision, api), the ports stay (Grendel's flag).
    #[arg(long, value_name = "IP")]
    pub listen: Option<std::net::IpAddr>,
    /// Grendel's database path (sets `dbpath`: xboot keeps its store under state_dir, so
    /// anything but :memory: is warned about and not used).
    #[arg(long, value_name = "PATH")]
    pub dbpath: Option<String>,
    /// Grendel's service selection (dhcp,pxe,tftp,dns,provision,api). Not implemented:
    /// accepted with a warning, every configured service runs (`dhcp.mode = "off"`
    /// turns DHCP off).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub services: Vec<String>,
}

/// Inventory files given on the command line (override `hosts` / `images` of the
/// config). Global, so every command that reads an inventory offline (`serve`,
/// `check-config`, `host show --boot`, `bmc` without `--server`) takes them the same way.
#[derive(Debug, Clone, Default, Args)]
pub struct InventoryFiles {
    /// Hosts file (Grendel hosts.json or xboot TOML) [default: hosts of --config].
    #[arg(long, global = true, value_name = "FILE")]
    pub hosts: Option<PathBuf>,
    /// Images file (Grendel images.json or xboot TOML) [default: images of --config].
    #[arg(long, global = true, value_name = "FILE")]
    pub images: Option<PathBuf>,
}

impl InventoryFiles {
    fn given(&self) -> bool {
        self.hosts.is_some() || self.images.is_some()
    }
}

#[derive(Debug, Clone, Copy, Default, Args)]
pub struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which hosts a command is about: a node set (`all` = every host), tags, or both.
#[derive(Debug, Clone, Default, Args)]
pub struct Select {
    /// Node set, e.g. cn[001-010]; `all` for every host.
    #[arg(required_unless_present = "tags")]
    pub nodeset: Option<String>,
    /// Only the hosts carrying any of these tags (repeat or comma-separate).
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
}

/// Like [`Select`], with the node set optional (listing commands: every host by default).
#[derive(Debug, Clone, Default, Args)]
pub struct SelectAll {
    /// Node set, e.g. cn[001-010] [default: all].
    pub nodeset: Option<String>,
    /// Only the hosts carrying any of these tags (repeat or comma-separate).
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
}

impl From<SelectAll> for Select {
    fn from(s: SelectAll) -> Select {
        Select {
            nodeset: s.nodeset,
            tags: s.tags,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum HostCmd {
    /// List hosts (all, or those of a node set and/or tags).
    List {
        #[command(flatten)]
        select: SelectAll,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Print one host as JSON; with --boot, what it would be sent instead: the DHCP
    /// answer per client kind, its iPXE script and its rendered kernel command line.
    Show {
        name: String,
        /// Show the boot answers (needs --config).
        #[arg(long)]
        boot: bool,
        /// With --boot: the server address DHCP answers from [default: the local
        /// address in the host's subnet].
        #[arg(long, requires = "boot")]
        server: Option<std::net::Ipv4Addr>,
    },
    /// Add or replace a host with one boot interface (and optionally a BMC).
    Add(AddHost),
    /// Add or replace the hosts (and images) of a file: Grendel hosts.json or xboot TOML.
    Import { file: PathBuf },
    /// Print hosts as a Grendel hosts.json array (or xboot TOML).
    Export {
        #[command(flatten)]
        select: SelectAll,
        /// xboot TOML ([[host]] tables) instead of JSON.
        #[arg(long)]
        toml: bool,
    },
    /// Delete the hosts of a node set (and/or tags).
    Delete(Select),
    /// Boot the hosts of a node set from the network (provision = true).
    Provision(Select),
    /// Let the hosts of a node set boot from disk (provision = false).
    Unprovision(Select),
    /// Add tags to the hosts of a node set: `xboot host tag cn[1-4] gpu rack:a1`.
    Tag(TagArgs),
    /// Remove tags from the hosts of a node set.
    Untag(TagArgs),
}

#[derive(Debug, Args)]
pub struct TagArgs {
    /// Node set, e.g. cn[001-010]; `all` for every host.
    pub nodeset: String,
    /// The tags to add or remove.
    #[arg(required = true)]
    pub tag: Vec<String>,
    /// Only the hosts of the node set carrying any of these tags.
    #[arg(long, short = 't', value_delimiter = ',')]
    pub tags: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// Print the whole inventory as JSON, in Grendel's `db dump` shape
    /// (`{"Users": [], "Hosts": [...], "Images": [...]}`).
    Dump {
        /// Write to this file instead of standard output.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Replace the whole inventory by a dump (xboot's or Grendel's `db dump`, or any
    /// inventory file): validated first, applied in one transaction, nothing changed on
    /// error. Grendel's users are skipped with a warning.
    Restore { file: PathBuf },
}

#[derive(Debug, Args)]
pub struct AddHost {
    pub name: String,
    /// MAC of the boot interface.
    #[arg(long)]
    pub mac: String,
    /// Address with prefix length, e.g. 192.168.0.51/24.
    #[arg(long)]
    pub ip: String,
    /// Image to boot.
    #[arg(long)]
    pub image: Option<String>,
    /// Boot the image (provision = true); needs --image.
    #[arg(long, requires = "image")]
    pub provision: bool,
    /// Boot file override (undionly.kpxe, snponly-x86_64.efi ...).
    #[arg(long)]
    pub firmware: Option<String>,
    /// Tags (repeat or comma-separate).
    #[arg(long = "tag", value_delimiter = ',')]
    pub tags: Vec<String>,
    #[arg(long)]
    pub fqdn: Option<String>,
    #[arg(long)]
    pub ifname: Option<String>,
    /// Address of the host's BMC.
    #[arg(long)]
    pub bmc_ip: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// List images.
    List(JsonFlag),
    /// Print one image as JSON.
    Show { name: String },
    /// Add or replace an image. Relative paths are taken from the current directory.
    Add(AddImage),
    /// Add or replace the images (and hosts) of a file: Grendel images.json or xboot TOML.
    Import { file: PathBuf },
    /// Print images as a Grendel images.json array (or xboot TOML).
    Export {
        #[arg(long)]
        toml: bool,
    },
    /// Delete an image.
    Delete { name: String },
}

#[derive(Debug, Args)]
pub struct AddImage {
    pub name: String,
    #[arg(long)]
    pub kernel: PathBuf,
    /// Initrd files, in order (repeat the flag).
    #[arg(long)]
    pub initrd: Vec<PathBuf>,
    /// Live root image (squashfs).
    #[arg(long)]
    pub liveimg: Option<PathBuf>,
    /// Kernel command line template.
    #[arg(long, default_value = "")]
    pub cmdline: String,
}

/// Entry point of the `xboot` binary.
pub fn main() -> anyhow::Result<()> {
    let mut cli = Cli::parse();
    let level = cli.log_level.clone().or_else(|| {
        (cli.debug
            .then_some("debug")
            .or(cli.verbose.then_some("info")))
        .map(String::from)
    });
    init_logging(level.as_deref(), matches!(cli.command, Command::Serve(_)));
    if cli.config.is_none() {
        cli.config = default_config(&DEFAULT_CONFIGS.map(std::path::Path::new));
        if let Some(c) = &cli.config {
            tracing::info!("using config file {}", c.display());
        }
    }
    run(cli)
}

/// Where the config is looked for when neither --config nor XBOOT_CONFIG names one.
pub const DEFAULT_CONFIGS: [&str; 2] = ["/etc/xboot/xboot.toml", "/etc/grendel/grendel.toml"];

/// The first of `candidates` that exists.
pub fn default_config(candidates: &[&std::path::Path]) -> Option<PathBuf> {
    candidates
        .iter()
        .find(|p| p.is_file())
        .map(|p| p.to_path_buf())
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(mut args) => {
            args.config = cli.config.ok_or_else(|| {
                anyhow::anyhow!(
                    "xboot serve needs --config FILE (or XBOOT_CONFIG, or one of {})",
                    DEFAULT_CONFIGS.join(", ")
                )
            })?;
            args.socket = cli.socket;
            args.files = cli.files;
            crate::serve::run(args)
        }
        Command::Cluster(ClusterCmd::Status(j)) => {
            let path = cli.config.ok_or_else(|| {
                anyhow::anyhow!("xboot cluster status needs --config FILE (or XBOOT_CONFIG)")
            })?;
            let config = crate::config::Config::load(&path)?;
            let cluster = config.cluster.as_ref().ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: no [cluster] section (standalone server)",
                    path.display()
                )
            })?;
            crate::cluster::status::run(cluster, j.json)
        }
        Command::Cluster(ClusterCmd::Keepalived(k)) => {
            use crate::cluster::keepalived;
            let path = cli.config.ok_or_else(|| {
                anyhow::anyhow!("xboot cluster keepalived needs --config FILE (or XBOOT_CONFIG)")
            })?;
            let config = crate::config::Config::load(&path)?;
            let opts = keepalived::Options {
                priority: k.priority,
                advert_int: k.advert_int,
                fall: k.fall,
                interface: k.interface,
            };
            let vrrp = keepalived::Vrrp::of(&config, &k.segment, &opts)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            print!("{}", keepalived::render(&vrrp));
            Ok(())
        }
        Command::TokenKey(cmd) => token_key::run(cmd, cli.config.as_deref()),
        Command::CheckConfig => {
            let config = cli.config.ok_or_else(|| {
                anyhow::anyhow!("xboot check-config needs --config FILE (or XBOOT_CONFIG)")
            })?;
            check::run(&config, &cli.files)
        }
        Command::Host(HostCmd::Show {
            name,
            boot: true,
            server,
        }) => {
            let path = cli.config.clone().ok_or_else(|| {
                anyhow::anyhow!("xboot host show --boot needs --config FILE (or XBOOT_CONFIG)")
            })?;
            let config = crate::config::Config::load(&path)?;
            let endpoint = endpoint(Some(&path), cli.socket, cli.api, cli.token)?;
            let inv = current_inventory(&config, endpoint, &cli.files)?;
            show_boot::run(&config, &inv, &name, server)
        }
        Command::Bmc(args) if args.via_server() && cli.files.given() => {
            anyhow::bail!(
                "--hosts/--images read an inventory here; with --server the server's inventory is used: pass one or the other"
            )
        }
        Command::Bmc(args) if args.via_server() => {
            let endpoint = endpoint(cli.config.as_deref(), cli.socket, cli.api, cli.token)?;
            let client = crate::api::client::Client::new(endpoint);
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let code = rt.block_on(crate::bmc::cli::run_via_api(&args, &client))?;
            std::process::exit(code);
        }
        Command::Bmc(args) => {
            let path = cli.config.clone().ok_or_else(|| {
                anyhow::anyhow!(
                    "xboot bmc needs --config FILE (or XBOOT_CONFIG) for [bmc] credentials"
                )
            })?;
            let config = crate::config::Config::load(&path)?;
            let endpoint = endpoint(Some(&path), cli.socket, cli.api, cli.token)?;
            let inv = current_inventory(&config, endpoint, &cli.files)?;
            let code = crate::bmc::cli::run(&args, &config, &inv)?;
            std::process::exit(code);
        }
        Command::User(cmd) => {
            let remote = cli.api.is_some();
            let endpoint = endpoint(cli.config.as_deref(), cli.socket, cli.api, cli.token)?;
            let client = crate::api::client::Client::new(endpoint);
            accounts::run_user(cmd, cli.config.as_deref(), remote, client)
        }
        Command::Token(cmd) => {
            let remote = cli.api.is_some();
            let endpoint = endpoint(cli.config.as_deref(), cli.socket, cli.api, cli.token)?;
            let client = crate::api::client::Client::new(endpoint);
            accounts::run_token(cmd, cli.config.as_deref(), remote, client)
        }
        // Cluster mode: every server's events, merged (--api asks that one server).
        Command::Events { nodeset, json }
            if cli.api.is_none() && cluster_of(cli.config.as_deref()).is_some() =>
        {
            let cluster = cluster_of(cli.config.as_deref()).expect("checked by the guard");
            let local = endpoint(cli.config.as_deref(), cli.socket, None, None)?;
            events::run(&cluster, &nodeset, local, cli.token, json.json)
        }
        _ if cli.files.given() => anyhow::bail!(
            "--hosts/--images are for the commands that read an inventory offline (serve, \
             check-config, host show --boot, bmc power without --server); this one asks \
             the running server"
        ),
        command => {
            let endpoint = endpoint(cli.config.as_deref(), cli.socket, cli.api, cli.token)?;
            client_cmds::run(command, crate::api::client::Client::new(endpoint))
        }
    }
}

/// The inventory of the files given with --hosts/--images (each falling back to the
/// config's), else as the running server has it (through the API), else the config's
/// inventory files read offline.
fn current_inventory(
    config: &crate::config::Config,
    endpoint: crate::api::client::Endpoint,
    files: &InventoryFiles,
) -> anyhow::Result<crate::inventory::Inventory> {
    use crate::inventory::{Host, Image, Inventory};
    let offline = |hosts: Option<&std::path::Path>, images: Option<&std::path::Path>| {
        let roots = config.provision.image_roots();
        crate::inventory::plan(
            (vec![], vec![]),
            None,
            hosts,
            images,
            &roots,
            &Default::default(),
            config.provision.default_image.as_deref(),
        )
        .map(|s| s.inventory)
    };
    if files.given() {
        let hosts = files.hosts.as_deref().or(config.hosts.as_deref());
        let images = files.images.as_deref().or(config.images.as_deref());
        return Ok(offline(hosts, images)?);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = crate::api::client::Client::new(endpoint);
    let fetch = async {
        let hosts = client.get("/v1/hosts").await?;
        let images = client.get("/v1/images").await?;
        Ok::<_, crate::api::client::ClientError>((hosts, images))
    };
    match rt.block_on(fetch) {
        Ok((hosts, images)) => {
            let hosts: Vec<Host> = serde_json::from_value(hosts)?;
            let images: Vec<Image> = serde_json::from_value(images)?;
            Ok(Inventory::from_parts_unchecked(hosts, images)
                .with_default_image(config.provision.default_image.as_deref()))
        }
        Err(e) => {
            tracing::info!("API not reachable ({e}); reading the inventory files of the config");
            Ok(offline(config.hosts.as_deref(), config.images.as_deref())?)
        }
    }
}

/// The `[cluster]` of the config at `path`, if it loads and has one.
fn cluster_of(path: Option<&std::path::Path>) -> Option<crate::config::cluster::ClusterConfig> {
    crate::config::Config::load(path?).ok()?.cluster
}

/// Where the client commands find the API: --api, --socket, the config's socket, the default.
fn endpoint(
    config: Option<&std::path::Path>,
    socket: Option<PathBuf>,
    api: Option<String>,
    token: Option<String>,
) -> anyhow::Result<crate::api::client::Endpoint> {
    use crate::api::client::Endpoint;
    if let Some(addr) = api {
        return Ok(Endpoint::Tcp { addr, token });
    }
    if let Some(s) = socket {
        return Ok(Endpoint::Unix(s));
    }
    if let Some(c) = config {
        let cfg = crate::config::Config::load(c)?;
        return Ok(Endpoint::Unix(cfg.api.socket_path));
    }
    Ok(Endpoint::Unix(PathBuf::from(DEFAULT_SOCKET)))
}

/// tracing to stderr: --log-level (or --debug, --verbose), else RUST_LOG, else `info`
/// (serve) / `warn` (others).
fn init_logging(level: Option<&str>, serve: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| EnvFilter::new(if serve { "info" } else { "warn" })),
    };
    let shown = filter.to_string();
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    tracing::debug!("log filter: {shown}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_grendel_style_serve_and_client_commands() {
        let cli = Cli::try_parse_from([
            "xboot", "serve", "--config", "g.toml", "--hosts", "h.json", "--images", "i.json",
        ])
        .unwrap();
        assert!(matches!(cli.command, Command::Serve(_)));
        assert_eq!(cli.config.unwrap(), PathBuf::from("g.toml"));
        assert_eq!(cli.files.hosts.unwrap(), PathBuf::from("h.json"));
        // The inventory flags are the same for every command that reads one offline.
        for argv in [
            &[
                "xboot", "host", "show", "cn1", "--boot", "--hosts", "h.json", "--images", "i.json",
            ][..],
            &[
                "xboot", "bmc", "power", "status", "cn[1-2]", "--hosts", "h.json",
            ][..],
            &["xboot", "check-config", "-c", "g.toml", "--hosts", "h.json"][..],
        ] {
            let cli = Cli::try_parse_from(argv).unwrap();
            assert_eq!(
                cli.files.hosts.unwrap(),
                PathBuf::from("h.json"),
                "{argv:?}"
            );
        }
        let cli = Cli::try_parse_from([
            "xboot", "host", "list", "cn[1-3]", "--json", "--socket", "/tmp/s",
        ])
        .unwrap();
        assert_eq!(cli.socket.unwrap(), PathBuf::from("/tmp/s"));
        assert!(matches!(
            cli.command,
            Command::Host(HostCmd::List {
                json: JsonFlag { json: true },
                ..
            })
        ));
        assert!(Cli::try_parse_from([
            "xboot",
            "host",
            "add",
            "cn1",
            "--mac",
            "m",
            "--ip",
            "i",
            "--provision"
        ])
        .is_err());
        let cli = Cli::try_parse_from([
            "xboot", "host", "add", "cn1", "--mac", "m", "--ip", "i", "--tag", "a,b", "--tag", "c",
        ])
        .unwrap();
        let Command::Host(HostCmd::Add(a)) = cli.command else {
            panic!()
        };
        assert_eq!(a.tags, ["a", "b", "c"]);
        // Selection by tags: a node set or --tags (or both) for the verbs that change.
        let cli = Cli::try_parse_from(["xboot", "host", "provision", "--tags", "gpu,ib"]).unwrap();
        let Command::Host(HostCmd::Provision(sel)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (sel.nodeset, sel.tags),
            (None, vec!["gpu".into(), "ib".into()])
        );
        assert!(Cli::try_parse_from(["xboot", "host", "delete"]).is_err());
        let cli =
            Cli::try_parse_from(["xboot", "host", "tag", "all", "gpu", "rack:a1", "-t", "old"])
                .unwrap();
        let Command::Host(HostCmd::Tag(t)) = cli.command else {
            panic!()
        };
        assert_eq!(
            (t.nodeset.as_str(), t.tag, t.tags),
            (
                "all",
                vec!["gpu".into(), "rack:a1".into()],
                vec!["old".into()]
            )
        );
        assert!(Cli::try_parse_from(["xboot", "host", "untag", "cn1"]).is_err());
        assert!(matches!(
            Cli::try_parse_from(["xboot", "db", "dump", "-o", "d.json"])
                .unwrap()
                .command,
            Command::Db(DbCmd::Dump { output: Some(_) })
        ));
    }
}
