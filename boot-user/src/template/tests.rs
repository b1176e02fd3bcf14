//! Template engine tests: the deployment guide's cmdline, then tables of renderings
//! and of errors with their positions.
use super::*;
use crate::http::urls::Endpoints;
use crate::inventory::{Host, Image, Interface};

const GUIDE_CMDLINE: &str = "console=ttyS0 console=tty0 root=live:https://sos-ch-dk-2.exo.io/osimages/squareos-9.2/squareos-9.2.squashfs BOOTIF=01-{{ $.nic.MAC | toString | replace \":\" \"-\" }} grendel.hostname={{ $.host.Name }} grendel.address=http://grendel.example.com rd.live.overlay.readonly=1 rd.live.overlay.overlayfs=1 rd.neednet=1";

fn cn1() -> (Host, Image) {
    let nic = Interface {
        mac: Some("aa:bb:cc:11:22:33".parse().unwrap()),
        ip: Some("192.168.0.51/24".into()),
        fqdn: "cn1.example.com".into(),
        mtu: 9000,
        ..Interface::default()
    };
    let host = Host {
        name: "cn1".into(),
        provision: true,
        boot_image: "squareos-9.2".into(),
        tags: vec!["gpu".into(), "rack1".into()],
        interfaces: vec![nic],
        ..Host::default()
    };
    let image = Image {
        name: "squareos-9.2".into(),
        kernel: "/var/lib/grendel/vmlinuz".into(),
        initrd: vec![
            "/var/lib/grendel/initramfs.img".into(),
            "/var/lib/grendel/extra.img".into(),
        ],
        cmdline: GUIDE_CMDLINE.into(),
        provision_templates: [("postscript".to_string(), "#!/bin/sh".to_string())].into(),
        ..Image::default()
    };
    (host, image)
}

fn data() -> Data {
    let (host, image) = cn1();
    Data::new(
        &host,
        &host.interfaces[0],
        &image,
        &Endpoints::new("http://10.0.0.1:8080", "TOK"),
    )
}

fn render(src: &str) -> Result<String, TemplateError> {
    Template::parse(src)?.render(&data())
}

#[test]
fn guide_cmdline_renders() {
    let out = render(GUIDE_CMDLINE).unwrap();
    assert!(
        out.contains(" BOOTIF=01-aa-bb-cc-11-22-33 grendel.hostname=cn1 "),
        "{out}"
    );
    assert!(out.starts_with("console=ttyS0 console=tty0 root=live:https://sos-ch-dk-2.exo.io/"));
    assert!(out.ends_with("rd.neednet=1"));
}

#[test]
fn renderings() {
    let rows: &[(&str, &str)] = &[
        ("plain text", "plain text"),
        ("{{ .host.Name }}", "cn1"),
        ("{{ $.nic.MAC | upper | replace \":\" \"\" }}", "AABBCC112233"),
        ("{{ $.nic.IP }} {{ $.nic.Addr }} {{ $.nic.MTU }} {{ $.nic.FQDN }}", "192.168.0.51/24 192.168.0.51 9000 cn1.example.com"),
        ("{{ $.endpoints.KernelURL }}", "http://10.0.0.1:8080/boot/TOK/kernel"),
        ("{{ $.endpoints.InitrdURL 1 }}", "http://10.0.0.1:8080/boot/TOK/initrd-1"),
        ("{{ index $.endpoints.InitrdURLs 0 }}", "http://10.0.0.1:8080/boot/TOK/initrd-0"),
        ("{{ $.endpoints.ProvisionURL \"postscript\" }}", "http://10.0.0.1:8080/boot/TOK/provision/postscript"),
        ("{{ $.token }} {{ $.baseuri }}", "TOK http://10.0.0.1:8080"),
        ("{{ $.bootimage.Name }}={{ $.image.Name }}", "squareos-9.2=squareos-9.2"),
        ("{{ if $.host.Provision }}yes{{ else }}no{{ end }}", "yes"),
        ("{{ if eq $.host.Name \"cn2\" }}a{{ else if eq $.host.Name \"cn1\" }}b{{ else }}c{{ end }}", "b"),
        ("{{ range $i, $t := $.host.Tags }}[{{ $i }}:{{ $t }}]{{ end }}", "[0:gpu][1:rack1]"),
        ("{{ range $.host.Tags }}{{ . }},{{ end }}", "gpu,rack1,"),
        ("{{ range list }}x{{ else }}none{{ end }}", "none"),
        ("{{ with $.host }}{{ .Name }}{{ end }}", "cn1"),
        ("{{ $n := $.host.Name }}{{ $n }}-{{ $n | upper }}", "cn1-CN1"),
        ("{{ $n := 1 }}{{ $n = 2 }}{{ $n }}", "2"),
        ("{{ if $x := $.host.Name }}{{ $x }}{{ end }}", "cn1"),
        ("a  {{- \"b\" -}}  c", "abc"),
        ("{{/* a comment */}}x", "x"),
        ("{{ hasTag $.host \"gpu\" }} {{ hasTag $.host \"cpu\" }}", "true false"),
        ("{{ join \",\" $.host.Tags }} {{ Join $.host.Tags \"+\" }}", "gpu,rack1 gpu+rack1"),
        ("{{ \"a.b.c\" | splitList \".\" | last }}", "c"),
        ("{{ (split \".\" \"a.b\")._1 }}", "b"),
        ("{{ \"  x \" | trim | quote }}", "\"x\""),
        ("{{ \"cn1.example.com\" | trimSuffix \".example.com\" | trimPrefix \"c\" }}", "n1"),
        ("{{ $.nic.VLAN | default \"none\" }} {{ $.host.Name | default \"x\" }}", "none cn1"),
        ("{{ printf \"%s-%03d|%-4s|%x\" $.host.Name 7 \"ab\" 255 }}", "cn1-007|ab  |ff"),
        ("{{ len $.host.Tags }} {{ add 1 2 3 }} {{ sub 5 2 }} {{ Add 1 1 }}", "2 6 3 2"),
        ("{{ and true 0 }} {{ or 0 \"\" \"z\" }} {{ not false }}", "0 z true"),
        ("{{ lt 1 2 }} {{ ge \"b\" \"a\" }} {{ ne 1 1 }}", "true true false"),
        ("{{ contains \"rack\" \"rack1\" }} {{ hasPrefix \"cn\" $.host.Name }}", "true true"),
        ("{{ ternary \"y\" \"n\" $.nic.BMC }}", "n"),
        ("{{ \"a\\nb\" | nindent 2 }}", "\n  a\n  b"),
        ("{{ index $.image.ProvisionTemplates \"postscript\" }}", "#!/bin/sh"),
        ("{{ (index $.host.Interfaces 0).MAC }}", "aa:bb:cc:11:22:33"),
        ("{{ print 1 2 \"a\" }} {{ `raw\\n` }}", "1 2a raw\\n"),
        ("{{ nil }}|{{ $.host.Tags }}", "|[gpu rack1]"),
    ];
    for (src, want) in rows {
        match render(src) {
            Ok(got) => assert_eq!(&got, want, "{src}"),
            Err(e) => panic!("{src}: {e}"),
        }
    }
}

#[test]
fn errors_name_position_and_cause() {
    let rows: &[(&str, (usize, usize), &str)] = &[
        ("x {{ $.host.Name ", (1, 3), "unclosed action"),
        ("{{ foo $.host.Name }}", (1, 4), "unknown function \"foo\""),
        ("a\n{{ $.host.Nam }}", (2, 4), "unknown field \"Nam\" in $.host (it has: BootImage, BootInterface, Firmware, HasAnyTags, HasTags, ID, InterfaceBMC, Interfaces, Name, Provision, TagList, Tags, UID)"),
        ("{{ $.hots.Name }}", (1, 4), "unknown field \"hots\" in $"),
        ("{{ .nic.MAC.Foo }}", (1, 4), ".nic.MAC is a string, it has no field \"Foo\""),
        ("{{ if $.host.Provision }}x", (1, 1), "unclosed {{if}}"),
        ("{{ if 1 }}{{ else }}{{ else }}{{ end }}", (1, 21), "a second {{else}}"),
        ("x{{ end }}", (1, 2), "unexpected {{end}}"),
        ("{{ $x }}", (1, 4), "undefined variable $x"),
        ("{{ $x = 1 }}", (1, 1), "undefined variable $x"),
        ("{{ if 1 }}{{ $y := 2 }}{{ end }}{{ $y }}", (1, 36), "undefined variable $y"),
        ("{{ \"a\" | \"b\" }}", (1, 10), "constant cannot receive input"),
        ("{{ template \"x\" }}", (1, 4), "no template \"x\" is defined"),
        ("{{ template x }}", (1, 13), "template takes a quoted template name"),
        ("{{ define \"a\" }}x", (1, 1), "unclosed {{define}}"),
        ("{{ define \"a\" }}{{ end }}{{ define \"a\" }}{{ end }}", (1, 36), "template \"a\" is defined twice"),
        ("{{ define \"a\" }}{{ $v }}{{ end }}", (1, 20), "undefined variable $v"),
        ("{{ break }}", (1, 4), "{{break}} is not supported"),
        ("a\n{{ regexMatch \"[a-\" $.host.Name }}", (2, 4), "regexMatch: bad regex"),
        ("{{ replace \":\" \"-\" }}", (1, 4), "replace: expected 3 arguments (old new string), got 2"),
        ("{{ ( $.host.Name }}", (1, 1), "unclosed ("),
        ("{{ }}", (1, 1), "missing value"),
        ("{{ $.host.Name | }}", (1, 16), "missing value"),
        ("{{ $.host.Name 1 }}", (1, 4), "not a function"),
        ("{{ index $.host.Tags 5 }}", (1, 4), "index 5 out of range"),
        ("{{ $.endpoints.InitrdURL }}", (1, 4), "InitrdURL takes one index"),
        ("{{ range $.host.Name }}{{ end }}", (1, 1), "range can't iterate over a string"),
        ("{{ eq 1 \"1\" }}", (1, 4), "incompatible types"),
    ];
    for (src, (line, col), msg) in rows {
        let e = render(src).expect_err(src);
        assert!(e.msg.contains(msg), "{src}: got {e}");
        assert_eq!((e.line, e.col), (*line, *col), "{src}: got {e}");
    }
}

#[test]
fn unchecked_parse_renders_any_value() {
    let t = Template::parse_unchecked("{{ .a.b }}-{{ range .l }}{{ . }}{{ end }}").unwrap();
    let v = Value::map([
        ("a", Value::map([("b", Value::from("x"))])),
        ("l", Value::from(vec!["1", "2"])),
    ]);
    assert_eq!(t.render_value(&v).unwrap(), "x-12");
    assert!(
        Template::parse("{{ .a.b }}").is_err(),
        "the boot schema has no .a"
    );
}

#[test]
fn garbage_never_panics() {
    // Every prefix of some tricky templates: an error or a rendering, never a panic or
    // a hang.
    let srcs = [
        GUIDE_CMDLINE,
        "{{- if $x := (index $.host.Tags 0) -}}{{ $x | printf \"%q\" }}{{ else if 1 }}{{ end }}",
        "{{ range $i, $v := $.host.Interfaces }}{{ $v.MAC }}{{ else }}-{{ end }}{{/* c */ -}}",
        "{{ \"\\u00e9\\x41\" }}{{ `r` }}{{ -1 }}{{ 0x1f }}é{{ . }}",
    ];
    for src in srcs {
        for (i, _) in src.char_indices() {
            let _ = render(&src[..i]);
        }
    }
}

#[test]
fn check_image_names_each_bad_template() {
    let (_, mut image) = cn1();
    assert!(check_image(&image).is_empty());
    image.cmdline = "x {{ $.host.Nam }}".into();
    image
        .provision_templates
        .insert("kickstart".into(), "{{ if 1 }}".into());
    let errs: Vec<String> = check_image(&image)
        .into_iter()
        .map(|(w, e)| format!("{w}: {e}"))
        .collect();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert!(
        errs[0].starts_with("cmdline: line 1, column 6: unknown field \"Nam\""),
        "{errs:?}"
    );
    assert_eq!(
        errs[1],
        "provision_templates.kickstart: line 1, column 1: unclosed {{if}}: no matching {{end}}"
    );
}

#[test]
fn grendel_nic_host_and_site_data() {
    use crate::dhcp::settings::HostNet;
    let site = data::Site {
        rootpw: "$6$s$h".into(),
        admin_keys: vec!["ssh-ed25519 AAAA a@b".into()],
        net: Some(HostNet {
            addr: "192.168.0.51".parse().unwrap(),
            prefix: 24,
            mask: "255.255.255.0".parse().unwrap(),
            broadcast: None,
            router: Some("192.168.0.254".parse().unwrap()),
            dns: vec![
                "192.168.0.2".parse().unwrap(),
                "192.168.0.3".parse().unwrap(),
            ],
            domain: None,
            domain_search: vec!["example.com".into()],
            mtu: Some(1500),
        }),
        config: funcs::json_value(serde_json::json!({
            "provision": {"listen": "0.0.0.0:80", "metrics": true, "token_ttl": 600},
            "dhcp": {"dns_servers": ["10.0.0.2", "10.0.0.3"], "domain_search": "a.example, b.example"},
        })),
        template_dirs: vec![],
    };
    let d = data().with_site(&site);
    let rows: &[(&str, &str)] = &[
        ("{{ $.nic.HostName }} {{ $.nic.ShortName }} {{ $.nic.Domain }}", "cn1.example.com cn1 example.com"),
        ("{{ $.nic.CIDR }} {{ $.nic.AddrString }} {{ $.nic.Netmask }} {{ $.nic.NetmaskString }}", "192.168.0.51/24 192.168.0.51 ffffff00 255.255.255.0"),
        ("{{ $.nic.Gateway }} {{ $.nic.DNS }} {{ join \",\" $.nic.DNSList }} {{ $.nic.DomainSearch }}", "192.168.0.254 [192.168.0.2 192.168.0.3] 192.168.0.2,192.168.0.3 [example.com]"),
        ("{{ $.nic.InterfaceMTU }}", "9000"),
        ("{{ $.host.UID }} {{ $.host.TagList }} {{ $.host.BootInterface.MAC }}", "cn1 gpu,rack1 aa:bb:cc:11:22:33"),
        ("{{ $.host.HasTags \"gpu\" \"rack1\" }} {{ $.host.HasTags \"gpu\" \"x\" }}", "true false"),
        ("{{ $.host.HasAnyTags \"x\" \"rack1\" }} {{ $.host.HasAnyTags \"x\" }}", "true false"),
        ("{{ if $.host.HasTags \"gpu\" }}g{{ end }}", "g"),
        ("{{ $.rootpw }} {{ range $.adminSSHPubKeys }}[{{ . }}]{{ end }}", "$6$s$h [ssh-ed25519 AAAA a@b]"),
        ("{{ $.endpoints.KickstartURL }}", "http://10.0.0.1:8080/boot/TOK/kickstart"),
        ("{{ ConfigValueString \"provision.listen\" }}|{{ ConfigValueString \"provision.token_ttl\" }}|{{ ConfigValueString \"no.such\" }}", "0.0.0.0:80|600|"),
        ("{{ ConfigValueBool \"provision.metrics\" }} {{ ConfigValueBool \"provision.nope\" }}", "true false"),
        ("{{ ConfigValueStringSlice \"dhcp.dns_servers\" }} {{ ConfigValueStringSlice \"dhcp.domain_search\" }} {{ ConfigValueStringSlice \"x\" }}", "[10.0.0.2 10.0.0.3] [a.example b.example] []"),
        ("{{ define \"t\" }}{{ ConfigValueString \"provision.listen\" }}{{ end }}{{ template \"t\" 1 }}", "0.0.0.0:80"),
        ("{{ $.config.provision.listen }}", "0.0.0.0:80"),
        ("{{ $.endpoints.CloudInitURL }} {{ $.endpoints.UserDataURL }}", "http://10.0.0.1:8080/boot/TOK/cloud-init/ http://10.0.0.1:8080/boot/TOK/cloud-init/user-data"),
        ("{{ $.endpoints.MetaDataURL }} {{ $.endpoints.VendorDataURL }}", "http://10.0.0.1:8080/boot/TOK/cloud-init/meta-data http://10.0.0.1:8080/boot/TOK/cloud-init/vendor-data"),
    ];
    for (src, want) in rows {
        let got = Template::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .render(&d)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(&got, want, "{src}");
    }
    // Without site data the DHCP-derived values are empty, not errors.
    assert_eq!(
        render("[{{ $.nic.Gateway }}][{{ $.rootpw }}]").unwrap(),
        "[][]"
    );
    // A host without a BMC interface: its InterfaceBMC is nil.
    let e = render("{{ $.host.InterfaceBMC.IP }}").unwrap_err();
    assert!(e.msg.contains("is nil"), "{e}");
}

#[test]
fn builtin_templates_parse_against_the_data_model() {
    for (name, src) in files::BUILTIN {
        let out = Template::parse(src)
            .unwrap_or_else(|e| panic!("built-in {name}: {e}"))
            .render(&data())
            .unwrap_or_else(|e| panic!("built-in {name}: {e}"));
        assert!(!out.contains("<no value>"), "{name}: {out}");
    }
}

#[test]
fn sprig_and_grendel_functions() {
    let rows: &[(&str, &str)] = &[
        ("{{ regexMatch \"^cn[0-9]+$\" $.host.Name }} {{ regexMatch \"^gpu\" $.host.Name }}", "true false"),
        ("{{ regexFind \"[0-9]+\" \"rack12-u3\" }}", "12"),
        ("{{ regexFindAll \"[0-9]+\" \"rack12-u3-x4\" -1 }} {{ regexFindAll \"[0-9]+\" \"a1b2\" 1 }}", "[12 3 4] [1]"),
        ("{{ regexReplaceAll \"([a-z]+)([0-9]+)\" $.host.Name \"${2}-${1}\" }}", "1-cn"),
        ("{{ regexReplaceAllLiteral \"[0-9]\" $.host.Name \"$1\" }}", "cn$1"),
        ("{{ regexSplit \"[.-]\" \"a.b-c\" -1 }} {{ regexSplit \"\\\\.\" \"a.b.c\" 2 }}", "[a b c] [a b.c]"),
        ("{{ b64enc \"xboot:1\" }} {{ \"eGJvb3Q6MQ==\" | b64dec }}", "eGJvb3Q6MQ== xboot:1"),
        ("{{ sha1sum \"abc\" }}", "a9993e364706816aba3e25717850c26c9cd0d89d"),
        ("{{ sha256sum \"abc\" }}", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("{{ toJson $.host.Tags }} {{ toJson (dict \"a\" 1 \"b\" true) }}", "[\"gpu\",\"rack1\"] {\"a\":1,\"b\":true}"),
        ("{{ (fromJson \"{\\\"k\\\":[1,2]}\").k }}", "[1 2]"),
        ("{{ $d := dict \"rack\" \"r1\" \"u\" 3 }}{{ get $d \"rack\" }}|{{ get $d \"x\" }}|{{ hasKey $d \"u\" }}|{{ hasKey $d \"x\" }}|{{ keys $d }}", "r1||true|false|[rack u]"),
        ("{{ until 3 }} {{ untilStep 2 10 3 }} {{ range until 2 }}{{ . }};{{ end }}", "[0 1 2] [2 5 8] 0;1;"),
        ("{{ seq 3 }}|{{ seq 2 4 }}|{{ seq 10 -3 4 }}|{{ seq 3 1 }}", "1 2 3|2 3 4|10 7 4|3 2 1"),
        ("{{ Mul 3 4 }} {{ Mul 2 (Add 1 2) }}", "12 6"),
    ];
    for (src, want) in rows {
        assert_eq!(
            &render(src).unwrap_or_else(|e| panic!("{src}: {e}")),
            want,
            "{src}"
        );
    }
    for (src, want) in [
        ("{{ regexMatch \"(\" \"x\" }}", "bad regex"),
        ("{{ b64dec \"***\" }}", "not base64"),
        ("{{ dict \"a\" }}", "key value pairs"),
        ("{{ untilStep 0 5 0 }}", "step 0"),
        ("{{ until 1000000 }}", "more than 100000 numbers"),
        ("{{ get \"x\" \"k\" }}", "expected a map"),
    ] {
        let e = render(src).unwrap_err();
        assert!(e.msg.contains(want), "{src}: {e}");
    }
    let h512 = render("{{ CryptSHA512 \"s3cret\" }}").unwrap();
    assert!(h512.starts_with("$6$"), "{h512}");
    assert!(sha_crypt::sha512_check("s3cret", &h512).is_ok());
    assert!(sha_crypt::sha512_check("other", &h512).is_err());
    let h256 = render("{{ \"s3cret\" | CryptSHA256 }}").unwrap();
    assert!(h256.starts_with("$5$"), "{h256}");
    assert!(sha_crypt::sha256_check("s3cret", &h256).is_ok());
    // A fresh salt each time.
    assert_ne!(h512, render("{{ CryptSHA512 \"s3cret\" }}").unwrap());
}

#[test]
fn define_template_and_block() {
    let rows: &[(&str, &str)] = &[
        ("{{ define \"nic\" }}{{ .MAC }}/{{ $.IP }}{{ end }}[{{ template \"nic\" $.nic }}]", "[aa:bb:cc:11:22:33/192.168.0.51/24]"),
        ("{{ template \"h\" . }}{{ define \"h\" }}{{ .host.Name }}{{ end }}", "cn1"),
        ("{{ define \"t\" }}<{{ . }}>{{ end }}{{ range $.host.Tags }}{{ template \"t\" . }}{{ end }}", "<gpu><rack1>"),
        ("{{ define \"none\" }}[{{ . }}]{{ end }}{{ template \"none\" }}", "[]"),
        ("a{{ block \"b\" $.host }}{{ .Name }}{{ end }}z", "acn1z"),
        ("{{ define \"x\" }}{{ template \"y\" . }}{{ end }}{{ define \"y\" }}y{{ . }}{{ end }}{{ template \"x\" 1 }}", "y1"),
    ];
    for (src, want) in rows {
        assert_eq!(
            &render(src).unwrap_or_else(|e| panic!("{src}: {e}")),
            want,
            "{src}"
        );
    }
    // A template calling itself stops with an error, not a hang or a crash.
    let e = render("{{ define \"r\" }}{{ template \"r\" . }}{{ end }}{{ template \"r\" 1 }}")
        .unwrap_err();
    assert!(e.msg.contains("nest more than 64 deep"), "{e}");
    // A defined body's fields are checked when it renders.
    let e = render("{{ define \"n\" }}{{ .Nope }}{{ end }}{{ template \"n\" $.nic }}").unwrap_err();
    assert!(e.msg.contains("unknown field \"Nope\""), "{e}");
}

#[test]
fn host_uid_is_grendels_uid_then_id_then_name() {
    let (mut host, image) = cn1();
    let ends = Endpoints::new("http://10.0.0.1:8080", "TOK");
    let uid = |h: &crate::inventory::Host| {
        let d = Data::new(h, &h.interfaces[0], &image, &ends);
        Template::parse("{{ $.host.UID }}")
            .unwrap()
            .render(&d)
            .unwrap()
    };
    host.id.clear();
    host.uid.clear();
    assert_eq!(uid(&host), "cn1");
    host.id = "7".into();
    assert_eq!(uid(&host), "7");
    host.uid = "2Jm4zXbS8Hk1Vt0aQe3LrN5pWcY".into();
    assert_eq!(uid(&host), "2Jm4zXbS8Hk1Vt0aQe3LrN5pWcY");
}

/// `$.host.BootImage` is the image the host boots: its own `boot_image`, else the
/// `provision.default_image` it was given (the image of this boot).
#[test]
fn boot_image_honours_the_default_image() {
    let (mut host, image) = cn1();
    let endpoints = Endpoints::new("http://10.0.0.1:8080", "TOK");
    let t = Template::parse("{{ $.host.BootImage }}").unwrap();
    let own = Data::new(&host, &host.interfaces[0], &image, &endpoints);
    assert_eq!(t.render(&own).unwrap(), "squareos-9.2");
    host.boot_image.clear();
    let default = Image {
        name: "site-default".into(),
        ..image.clone()
    };
    let by_default = Data::new(&host, &host.interfaces[0], &default, &endpoints);
    assert_eq!(t.render(&by_default).unwrap(), "site-default");
}

/// `{{ template "NAME" }}` across files of the templates directories: a file by its
/// name (with or without `.tmpl`), a `define` in another file, files calling files
/// (and each other), and the errors: a name found nowhere, a file that does not parse.
#[test]
fn template_calls_reach_other_files() {
    let d = tempfile::tempdir().unwrap();
    let w = |name: &str, text: &str| std::fs::write(d.path().join(name), text).unwrap();
    w(
        "disk.tmpl",
        "part / --size {{ .size }}{{ template \"tail\" }}",
    );
    w(
        "common.tmpl",
        "{{ define \"tail\" }} # {{ template \"sig.tmpl\" }}{{ end }}",
    );
    w("sig.tmpl", "by xboot");
    w(
        "loop-a.tmpl",
        "a{{ if false }}{{ template \"loop-b\" }}{{ end }}",
    );
    w("loop-b.tmpl", "b{{ template \"loop-a.tmpl\" }}");
    w("broken.tmpl", "ok\n{{ if }}");
    let dirs = vec![
        std::path::PathBuf::from("/nonexistent-xboot"),
        d.path().to_path_buf(),
    ];
    let render = |src: &str| Template::parse_with_dirs(src, &dirs)?.render(&data());
    assert_eq!(
        render("{{ $.host.Name }}: {{ template \"disk\" (dict \"size\" 20) }}").unwrap(),
        "cn1: part / --size 20 # by xboot"
    );
    assert_eq!(
        render("{{ template \"disk.tmpl\" (dict \"size\" 1) }}").unwrap(),
        "part / --size 1 # by xboot"
    );
    assert_eq!(render("{{ template \"tail\" }}").unwrap(), " # by xboot");
    assert_eq!(render("{{ template \"loop-b\" }}").unwrap(), "ba");
    // A define of the template itself wins over a file of that name.
    assert_eq!(
        render("{{ define \"sig.tmpl\" }}mine{{ end }}{{ template \"sig.tmpl\" }}").unwrap(),
        "mine"
    );
    let e = render("x\n  {{ template \"nowhere\" }}").unwrap_err();
    assert_eq!((e.line, e.col), (2, 6), "{e}");
    assert!(e.msg.contains("no template \"nowhere\" is defined"), "{e}");
    assert!(e.msg.contains(&d.path().display().to_string()), "{e}");
    let e = render("{{ template \"broken\" }}").unwrap_err();
    assert!(e.msg.contains("broken.tmpl"), "{e}");
    assert!(e.msg.contains("line 2, column 1: missing value"), "{e}");
    // Without directories, as before: only the template's own defines.
    assert!(Template::parse("{{ template \"sig.tmpl\" }}")
        .unwrap_err()
        .msg
        .contains("no template \"sig.tmpl\" is defined"));
}
