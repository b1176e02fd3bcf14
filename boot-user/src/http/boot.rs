//! What a host is sent, as pure functions of one [`BootView`] (host, NIC, image, base
//! URL, token): the rendered kernel command line, the iPXE script, provision templates. The router, the
//! CLI's `xboot host show NAME --boot` and tests all call these.
use super::urls::Endpoints;
use crate::inventory::{Host, Image, Interface};
use crate::template::data::Site;
use crate::template::{Data, Template, TemplateError};

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BootError {
    #[error("host {host}: image {image}: {what}: {source}")]
    Template {
        host: String,
        image: String,
        what: String,
        source: TemplateError,
    },
    #[error("host {host}: image {image} has no kernel")]
    NoKernel { host: String, image: String },
}

/// One boot of one host: what every rendering here is a function of.
#[derive(Clone, Copy, Debug)]
pub struct BootView<'a> {
    pub host: &'a Host,
    /// The interface the host boots from.
    pub nic: &'a Interface,
    pub image: &'a Image,
    /// `http://SERVER:PORT` as the node reaches us.
    pub base_url: &'a str,
    /// The boot URL token of this host and MAC.
    pub token: &'a str,
    /// `http://VIP:PORT` when the host's segment has a VIP (`cluster.segment.vip`): the
    /// live image URL names it, and the script falls back to it.
    pub vip_base_url: Option<&'a str>,
}

impl BootView<'_> {
    /// The template data of this boot.
    pub fn data(&self) -> Data {
        Data::new(self.host, self.nic, self.image, &self.endpoints())
    }

    /// The URLs of this boot.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints::new(self.base_url, self.token).with_vip(self.vip_base_url)
    }

    /// Renders `src` (a template of the image, called `what` in errors).
    pub fn render_template(&self, src: &str, what: &str) -> Result<String, BootError> {
        self.render_with_site(src, what, &Site::default())
    }

    /// [`Self::render_template`] with the site-wide data of `site` (`$.rootpw`,
    /// `$.adminSSHPubKeys`, the interface's gateway and DNS).
    pub fn render_with_site(
        &self,
        src: &str,
        what: &str,
        site: &Site,
    ) -> Result<String, BootError> {
        let err = |source| BootError::Template {
            host: self.host.name.clone(),
            image: self.image.name.clone(),
            what: what.to_string(),
            source,
        };
        let t = Template::parse_with_dirs(src, &site.template_dirs).map_err(err)?;
        t.render(&self.data().with_site(site)).map_err(err)
    }

    /// The image's kernel command line rendered for this boot, on one line.
    pub fn cmdline(&self) -> Result<String, BootError> {
        let out = self.render_template(&self.image.cmdline, "cmdline")?;
        Ok(out.split_whitespace().collect::<Vec<_>>().join(" "))
    }
}

/// The iPXE script that boots `image` on `host`:
///
/// ```text
/// #!ipxe
/// kernel --name kernel http://SERVER/boot/TOKEN/kernel initrd=initrd-0 CMDLINE
/// initrd --name initrd-0 http://SERVER/boot/TOKEN/initrd-0
/// boot kernel
/// ```
///
/// Each initrd is named `initrd-N` in iPXE and listed as `initrd=initrd-N` on the
/// command line, which is how an EFI-stub kernel finds it (BIOS kernels get all of them
/// through the boot protocol either way). With `image.verify`, `imgtrust` and an
/// `imgverify` per file (signatures at `URL.sig`) are added.
///
/// With a segment VIP each fetch falls back to the same file at the VIP
/// (`kernel URL ARGS || kernel VIP-URL ARGS`): the server that rendered the script is
/// tried first, so the segment's servers share the kernel and initrd load as DHCP spread
/// the nodes, and a node whose server died after sending the script gets the files from
/// the one holding the VIP by then.
pub fn render_ipxe_script(boot: &BootView<'_>) -> Result<String, BootError> {
    let (host, image) = (boot.host, boot.image);
    if image.kernel.is_empty() {
        return Err(BootError::NoKernel {
            host: host.name.clone(),
            image: image.name.clone(),
        });
    }
    let cmdline = boot.cmdline()?;
    let e = boot.endpoints();
    let vip = e.at_vip().filter(|v| v.base_url() != e.base_url());
    // `cmd(URL)`, then `|| cmd(VIP URL)` with a VIP.
    let or_vip = |cmd: &dyn Fn(&Endpoints) -> String| match &vip {
        Some(v) => format!("{} || {}\n", cmd(&e), cmd(v)),
        None => format!("{}\n", cmd(&e)),
    };
    let mut s = format!(
        "#!ipxe\n# xboot: host {}, image {}\n",
        host.name, image.name
    );
    if image.verify {
        s.push_str("imgtrust --permanent\n");
    }
    let initrd_args: Vec<String> = (0..image.initrd.len())
        .map(|i| format!("initrd=initrd-{i}"))
        .collect();
    let args: Vec<&str> = initrd_args
        .iter()
        .map(String::as_str)
        .chain([cmdline.as_str()])
        .filter(|a| !a.is_empty())
        .collect();
    let args = args.join(" ");
    s.push_str(&or_vip(&|e| {
        format!("kernel --name kernel {} {args}", e.kernel())
            .trim_end()
            .to_string()
    }));
    if image.verify {
        s.push_str(&or_vip(&|e| format!("imgverify kernel {}.sig", e.kernel())));
    }
    for i in 0..image.initrd.len() {
        s.push_str(&or_vip(&|e| {
            format!("initrd --name initrd-{i} {}", e.initrd(i))
        }));
        if image.verify {
            s.push_str(&or_vip(&|e| {
                format!("imgverify initrd-{i} {}.sig", e.initrd(i))
            }));
        }
    }
    s.push_str("boot kernel\n");
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cn1() -> (Host, Image) {
        let nic = Interface {
            mac: Some("aa:bb:cc:11:22:33".parse().unwrap()),
            ..Interface::default()
        };
        let host = Host {
            name: "cn1".into(),
            provision: true,
            interfaces: vec![nic],
            ..Host::default()
        };
        let image = Image {
            name: "img".into(),
            kernel: "/k".into(),
            initrd: vec!["/i0".into(), "/i1".into()],
            cmdline: "console=ttyS0\n  BOOTIF=01-{{ $.nic.MAC | replace \":\" \"-\" }} root=live:{{ $.endpoints.LiveImageURL }}".into(),
            ..Image::default()
        };
        (host, image)
    }

    fn view<'a>(host: &'a Host, image: &'a Image, base_url: &'a str) -> BootView<'a> {
        BootView {
            host,
            nic: &host.interfaces[0],
            image,
            base_url,
            token: "T",
            vip_base_url: None,
        }
    }

    #[test]
    fn ipxe_script() {
        let (host, image) = cn1();
        let s = render_ipxe_script(&view(&host, &image, "http://10.0.0.1:8080")).unwrap();
        assert_eq!(
            s,
            "#!ipxe\n# xboot: host cn1, image img\n\
             kernel --name kernel http://10.0.0.1:8080/boot/T/kernel initrd=initrd-0 initrd=initrd-1 \
             console=ttyS0 BOOTIF=01-aa-bb-cc-11-22-33 root=live:http://10.0.0.1:8080/boot/T/liveimg\n\
             initrd --name initrd-0 http://10.0.0.1:8080/boot/T/initrd-0\n\
             initrd --name initrd-1 http://10.0.0.1:8080/boot/T/initrd-1\n\
             boot kernel\n"
        );
    }

    #[test]
    fn ipxe_script_verify_and_errors() {
        let (host, mut image) = cn1();
        image.verify = true;
        image.initrd.truncate(1);
        image.cmdline.clear();
        let s = render_ipxe_script(&view(&host, &image, "http://h")).unwrap();
        assert!(s.contains("imgtrust --permanent\nkernel --name kernel http://h/boot/T/kernel initrd=initrd-0\nimgverify kernel http://h/boot/T/kernel.sig\n"), "{s}");
        assert!(
            s.contains("imgverify initrd-0 http://h/boot/T/initrd-0.sig\n"),
            "{s}"
        );
        image.cmdline = "x={{ $.host.Nme }}".into();
        let e = render_ipxe_script(&view(&host, &image, "http://h"))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("host cn1: image img: cmdline: line 1, column 6: unknown field \"Nme\""),
            "{e}"
        );
        image.kernel.clear();
        let e = render_ipxe_script(&view(&host, &image, "http://h")).unwrap_err();
        assert_eq!(e.to_string(), "host cn1: image img has no kernel");
    }

    /// A segment VIP: the live root names it, and every fetch of the script falls back
    /// to it; without one, or when the script came through the VIP, the lines are as
    /// before.
    #[test]
    fn ipxe_script_with_a_segment_vip() {
        let (host, mut image) = cn1();
        image.initrd.truncate(1);
        let mut v = view(&host, &image, "http://10.0.0.1:8080");
        v.vip_base_url = Some("http://10.0.0.250:8080");
        let s = render_ipxe_script(&v).unwrap();
        assert_eq!(
            s,
            "#!ipxe\n# xboot: host cn1, image img\n\
             kernel --name kernel http://10.0.0.1:8080/boot/T/kernel initrd=initrd-0 \
             console=ttyS0 BOOTIF=01-aa-bb-cc-11-22-33 root=live:http://10.0.0.250:8080/boot/T/liveimg \
             || kernel --name kernel http://10.0.0.250:8080/boot/T/kernel initrd=initrd-0 \
             console=ttyS0 BOOTIF=01-aa-bb-cc-11-22-33 root=live:http://10.0.0.250:8080/boot/T/liveimg\n\
             initrd --name initrd-0 http://10.0.0.1:8080/boot/T/initrd-0 \
             || initrd --name initrd-0 http://10.0.0.250:8080/boot/T/initrd-0\n\
             boot kernel\n"
        );
        let verified = Image {
            verify: true,
            ..image.clone()
        };
        let s = render_ipxe_script(&BootView {
            image: &verified,
            ..v
        })
        .unwrap();
        assert!(
            s.contains(
                "imgverify kernel http://10.0.0.1:8080/boot/T/kernel.sig \
                 || imgverify kernel http://10.0.0.250:8080/boot/T/kernel.sig\n"
            ),
            "{s}"
        );
        // Rendered for a request to the VIP itself: nothing to fall back to.
        v.base_url = "http://10.0.0.250:8080";
        let s = render_ipxe_script(&v).unwrap();
        assert!(!s.contains("||"), "{s}");
        assert!(
            s.contains("root=live:http://10.0.0.250:8080/boot/T/liveimg"),
            "{s}"
        );
    }
}
