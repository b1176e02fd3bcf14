//! A small iPXE-script interpreter (pure): the subset boot servers render (`#!ipxe`,
//! `set`, `kernel`, `initrd`, `imgfetch`, `chain`, `boot`, `echo`, comments, labels) with
//! `${...}` expansion, so a simulated node fetches exactly what the server said.
use std::collections::HashMap;

/// What a script tells the node to do, in order, URLs resolved against the script's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Kernel {
        url: String,
        args: String,
    },
    Initrd {
        url: String,
    },
    /// Fetch and run another script (the rest of this one never runs).
    Chain {
        url: String,
    },
    Boot,
}

/// Variables for `${...}`: `mac`, `net0/mac`, `ip`, `net0/ip`, `hostname`, plus `set`.
#[derive(Clone, Debug, Default)]
pub struct Vars(pub HashMap<String, String>);

impl Vars {
    pub fn for_nic(mac: [u8; 6], ip: std::net::Ipv4Addr) -> Vars {
        let m = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        let mut v = HashMap::new();
        for k in ["mac", "net0/mac"] {
            v.insert(k.to_string(), m.clone());
        }
        for k in ["ip", "net0/ip"] {
            v.insert(k.to_string(), ip.to_string());
        }
        Vars(v)
    }

    fn get(&self, name: &str) -> String {
        // `${net0/mac:hexhyp}`: a typed read; only the MAC's hyphenated form matters here.
        let (key, ty) = name.split_once(':').unwrap_or((name, ""));
        let v = self.0.get(key).cloned().unwrap_or_default();
        match ty {
            "hexhyp" => v.replace(':', "-"),
            "hexraw" => v.replace(':', ""),
            _ => v,
        }
    }

    /// Expands every `${name}` in `s` (unknown names expand to nothing, as in iPXE).
    pub fn expand(&self, s: &str) -> String {
        let mut out = String::with_capacity(s.len());
        let mut rest = s;
        while let Some(i) = rest.find("${") {
            out.push_str(&rest[..i]);
            match rest[i + 2..].find('}') {
                Some(j) => {
                    out.push_str(&self.get(&rest[i + 2..i + 2 + j]));
                    rest = &rest[i + 3 + j..];
                }
                None => {
                    out.push_str(&rest[i..]);
                    rest = "";
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Resolves `url` against the script's `base` (absolute, host-relative or path-relative).
pub fn resolve(base: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_string();
    }
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    if url.starts_with('/') {
        return format!("{}{url}", &base[..host_end]);
    }
    let path = base.split(['?', '#']).next().unwrap_or(base);
    let dir_end = path
        .rfind('/')
        .filter(|&i| i >= host_end)
        .unwrap_or(host_end);
    format!("{}/{url}", &path[..dir_end])
}

/// Runs `script` (fetched from `base`) and returns its actions up to `boot` or `chain`.
pub fn run(script: &str, base: &str, vars: &mut Vars) -> Result<Vec<Action>, String> {
    let mut lines = script.lines();
    match lines.next().map(str::trim) {
        Some(l) if l.starts_with("#!ipxe") => {}
        other => return Err(format!("not an iPXE script (first line {other:?})")),
    }
    let mut out = vec![];
    for raw in lines {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(':') {
            continue;
        }
        let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let rest = vars.expand(rest.trim());
        // Options such as `--name initrd-0` or `--autofree` come before the URL.
        let mut words = rest.split_whitespace().peekable();
        let mut positional = vec![];
        while let Some(w) = words.next() {
            if let Some(opt) = w.strip_prefix("--") {
                if matches!(opt, "name" | "timeout") {
                    words.next();
                }
                continue;
            }
            positional.push(w);
            positional.extend(words.by_ref());
        }
        let url = positional.first().map(|u| resolve(base, u));
        match cmd {
            "set" => {
                let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((&rest, ""));
                vars.0.insert(k.to_string(), v.trim().to_string());
            }
            "kernel" | "imgexec" => out.push(Action::Kernel {
                url: url.ok_or("kernel without a URL")?,
                args: positional[1..].join(" "),
            }),
            "initrd" | "imgfetch" | "module" => out.push(Action::Initrd {
                url: url.ok_or("initrd without a URL")?,
            }),
            "chain" => {
                out.push(Action::Chain {
                    url: url.ok_or("chain without a URL")?,
                });
                return Ok(out);
            }
            "boot" => {
                out.push(Action::Boot);
                return Ok(out);
            }
            "echo" | "dhcp" | "ifopen" | "ifconf" | "sleep" | "prompt" | "goto" => {}
            other => return Err(format!("unsupported iPXE command {other:?} in {line:?}")),
        }
    }
    Ok(out)
}

/// The value of `key=` in a kernel command line.
pub fn cmdline_param<'a>(args: &'a str, key: &str) -> Option<&'a str> {
    args.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn xboot_like_script() {
        let mut v = Vars::for_nic([2, 0, 0, 0, 0x0a, 0xff], Ipv4Addr::new(10, 77, 1, 1));
        let s = "#!ipxe\n# rendered\nset base http://10.77.0.1:8080/boot/T\n\
                 kernel --name kernel ${base}/kernel console=ttyS0 xboot.postscript=${base}/postscript\n\
                 initrd --name initrd-0 ${base}/initrd-0\nboot\necho never\n";
        let a = run(s, "http://10.77.0.1:8080/boot/T/ipxe", &mut v).unwrap();
        assert_eq!(
            a,
            [
                Action::Kernel {
                    url: "http://10.77.0.1:8080/boot/T/kernel".into(),
                    args: "console=ttyS0 xboot.postscript=http://10.77.0.1:8080/boot/T/postscript"
                        .into()
                },
                Action::Initrd {
                    url: "http://10.77.0.1:8080/boot/T/initrd-0".into()
                },
                Action::Boot
            ]
        );
        let Action::Kernel { args, .. } = &a[0] else {
            unreachable!()
        };
        assert_eq!(
            cmdline_param(args, "xboot.postscript"),
            Some("http://10.77.0.1:8080/boot/T/postscript")
        );
    }

    #[test]
    fn chain_per_mac_and_relative_urls() {
        let mut v = Vars::for_nic([2, 0, 0, 0, 0x0a, 0xff], Ipv4Addr::new(10, 77, 1, 1));
        let a = run(
            "#!ipxe\nchain /boot/${net0/mac:hexhyp}.ipxe\n",
            "http://h:80/boot.ipxe",
            &mut v,
        )
        .unwrap();
        assert_eq!(
            a,
            [Action::Chain {
                url: "http://h:80/boot/02-00-00-00-0a-ff.ipxe".into()
            }]
        );
        assert_eq!(resolve("http://h/a/b.ipxe?x=1", "k"), "http://h/a/k");
        assert_eq!(resolve("http://h", "k"), "http://h/k");
        assert!(run("kernel x", "http://h/", &mut v).is_err());
        assert!(run("#!ipxe\nsanboot x\n", "http://h/", &mut v)
            .unwrap_err()
            .contains("sanboot"));
    }
}
