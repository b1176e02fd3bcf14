//! The router's handlers: token check, then a rendered text or a streamed file.
//!
//! Files are served by tower-http's `ServeFile` (GET, HEAD, Range, conditional
//! requests) with bodies of [`super::file_body`] (streamed in chunks, never read whole). Every refusal answers one line of
//! text saying why, and is logged naming the host and the file.
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tower::ServiceExt;
use tower_http::services::ServeFile;

use super::boot::{render_ipxe_script, BootView};
use super::complete;
use super::token::now_secs;
use super::HttpService;
use crate::events::EventKind;
use crate::inventory::{Host, Image, Interface};
use crate::template::data::Site;
use crate::tftp::root::{PathError, Root};

/// A refusal: status and a one-line reason (sent as the body, and logged).
#[derive(Debug)]
pub(super) struct HttpError {
    status: StatusCode,
    msg: String,
}

impl HttpError {
    fn new(status: StatusCode, msg: impl Into<String>) -> HttpError {
        let msg = msg.into();
        if status.is_server_error() || status == StatusCode::NOT_FOUND {
            tracing::error!("HTTP {}: {msg}", status.as_u16());
        } else {
            tracing::warn!("HTTP {}: {msg}", status.as_u16());
        }
        HttpError { status, msg }
    }

    /// An error whose log line says more than its body: `detail` (server paths, link
    /// targets) is for the operator, `public` for a client that needs no token.
    fn logged(status: StatusCode, public: impl Into<String>, detail: &str) -> HttpError {
        let e = HttpError::new(status, detail);
        HttpError {
            msg: public.into(),
            ..e
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (
            self.status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("{}\n", self.msg),
        )
            .into_response()
    }
}

type Result<T> = std::result::Result<T, HttpError>;

/// One authorized boot: what the token designates, from the current inventory.
pub(super) struct Boot {
    host: Host,
    nic: Interface,
    image: Image,
    token: String,
    base_url: String,
    /// The base URL at the host's segment VIP, if it has one.
    vip_base_url: Option<String>,
}

impl Boot {
    fn view(&self) -> BootView<'_> {
        BootView {
            host: &self.host,
            nic: &self.nic,
            image: &self.image,
            base_url: &self.base_url,
            token: &self.token,
            vip_base_url: self.vip_base_url.as_deref(),
        }
    }

    fn err(&self, status: StatusCode, what: impl std::fmt::Display) -> HttpError {
        HttpError::new(
            status,
            format!("host {}: image {}: {what}", self.host.name, self.image.name),
        )
    }
}

/// The base URL to put in rendered URLs: `provision.advertise_url`, else the address
/// the client reached us at (its `Host` header, if it is one: [`host_authority`]), with
/// the scheme of the listener the request came in on.
fn request_base_url(st: &HttpService, headers: &HeaderMap) -> Result<String> {
    let cfg = &st.shared.config.provision;
    if let Some(url) = cfg.advertise_url.as_deref().filter(|u| !u.is_empty()) {
        return Ok(url.trim_end_matches('/').to_string());
    }
    let scheme = if st.tls { "https" } else { "http" };
    match headers.get(header::HOST) {
        Some(h) => host_authority(h.as_bytes())
            .map(|a| format!("{scheme}://{a}"))
            .ok_or_else(|| {
                HttpError::new(
                    StatusCode::BAD_REQUEST,
                    "bad Host header: not a host name or address with an optional port",
                )
            }),
        None if st.tls => Ok(format!(
            "https://{}",
            cfg.tls_listen_addr().unwrap_or_else(|| cfg.listen.clone())
        )),
        None => Ok(format!("http://{}", cfg.listen)),
    }
}

/// `h` if it is a `Host` header xboot puts into URLs: a DNS name (letters, digits, `-`,
/// `.`), an IPv4 address or a bracketed IPv6 address, and an optional port; nothing
/// else (no user info, path, quotes, spaces or control bytes reach a rendered script).
pub(super) fn host_authority(h: &[u8]) -> Option<String> {
    let h = std::str::from_utf8(h).ok()?;
    let (host, port) = if h.starts_with('[') {
        let end = h.find(']')? + 1;
        match &h[end..] {
            "" => (&h[..end], None),
            rest => (&h[..end], Some(rest.strip_prefix(':')?)),
        }
    } else {
        match h.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (h, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return None;
        }
    }
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && (host.parse::<std::net::Ipv4Addr>().is_ok()
                || crate::inventory::validate::check_hostname(host).is_ok())
    };
    host_ok.then(|| h.to_string())
}

/// Checks `token` against the key and the current inventory. Boot files also need the
/// host to be set to provision; the postscript and `complete` do not (a node reports
/// back after the flag may have been cleared).
fn authorize(
    st: &HttpService,
    token: &str,
    headers: &HeaderMap,
    need_provision: bool,
) -> Result<Boot> {
    let forbidden = |m: String| HttpError::new(StatusCode::FORBIDDEN, m);
    let claims = st
        .key
        .verify(token, now_secs())
        .map_err(|e| forbidden(e.to_string()))?;
    let inv = st.shared.inventory();
    let host = inv.host(&claims.host).ok_or_else(|| {
        forbidden(format!(
            "token names host {}, which is not in the inventory",
            claims.host
        ))
    })?;
    let nic = host.interface_by_mac(claims.mac).ok_or_else(|| {
        forbidden(format!(
            "host {} has no boot interface {} any more",
            host.name, claims.mac
        ))
    })?;
    if need_provision && !host.provision {
        return Err(forbidden(format!(
            "host {} is not set to provision",
            host.name
        )));
    }
    let image = inv.boot_image_of(host).ok_or_else(|| {
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "host {}: boot image {:?} is not in the inventory",
                host.name,
                inv.boot_image_name(host)
            ),
        )
    })?;
    Ok(Boot {
        vip_base_url: super::urls::segment_vip_base_url(&st.shared.config, st.tls, host, nic),
        host: host.clone(),
        nic: nic.clone(),
        image: image.clone(),
        token: token.to_string(),
        base_url: request_base_url(st, headers)?,
    })
}

/// `GET|HEAD /boot/{token}/{file}`.
pub(super) async fn boot_get(
    State(st): State<HttpService>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let need_provision = file != "postscript";
    let boot = authorize(&st, &token, req.headers(), need_provision)?;
    match file.as_str() {
        "ipxe" => ipxe(&st, &boot, req.method()),
        "postscript" => provision_template(&st, &boot, "postscript", req.method()).await,
        "complete" => Err(boot.err(StatusCode::METHOD_NOT_ALLOWED, "complete takes POST")),
        _ => boot_file(&st, &boot, &file, req).await,
    }
}

/// `GET|HEAD /boot/{token}/file/{file}`: Grendel's paths for the same files.
pub(super) async fn grendel_file(
    State(st): State<HttpService>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    let boot = authorize(&st, &token, req.headers(), true)?;
    boot_file(&st, &boot, &file, req).await
}

/// `GET /boot/{token}/provision/{name}`.
pub(super) async fn provision(
    State(st): State<HttpService>,
    Path((token, name)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let boot = authorize(&st, &token, &headers, false)?;
    provision_template(&st, &boot, &name, &method).await
}

/// `POST /boot/{token}/{file}`: only `complete`, once per boot and from the client the
/// boot's files went to (see [`super::complete`]).
pub(super) async fn boot_post(
    State(st): State<HttpService>,
    Path((token, file)): Path<(String, String)>,
    req: Request,
) -> Result<Response> {
    if file != "complete" {
        return Err(HttpError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("POST is only for complete, not {file}"),
        ));
    }
    let boot = authorize(&st, &token, req.headers(), false)?;
    let from = peer_ip(&req);
    // One complete of this host at a time: its check and its record must not interleave.
    let _one = st.complete_locks.of(&boot.host.name).lock().await;
    let tag = complete::boot_tag(&token);
    let state = complete::boot_state(&st.shared.events.for_host(&boot.host.name), &tag);
    let host_addrs: Vec<IpAddr> = boot
        .host
        .interfaces
        .iter()
        .filter_map(|i| crate::inventory::model::parse_cidr(i.ip.as_deref()?).ok())
        .map(|n| IpAddr::V4(n.addr()))
        .collect();
    let from_ip = from.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
    if let Some(why) = complete::refusal(&state, from_ip, &host_addrs) {
        let status = match state {
            complete::BootState::Started { .. } => StatusCode::FORBIDDEN,
            _ => StatusCode::CONFLICT,
        };
        return Err(boot.err(status, why));
    }
    if let Some(hook) = &st.on_complete {
        hook(boot.host.name.clone())
            .await
            .map_err(|e| boot.err(StatusCode::INTERNAL_SERVER_ERROR, format!("complete: {e}")))?;
    }
    let to = match &state {
        complete::BootState::Started { to } => to.as_str(),
        _ => "?",
    };
    st.shared.events.record_boot(
        &boot.host.name,
        EventKind::Complete,
        format!(
            "from {from_ip} (MAC {}; the boot's files went to {to})",
            boot.nic.mac.unwrap_or_default()
        ),
        &tag,
        &from_ip.to_string(),
    );
    tracing::info!(
        "host {} reported provisioning complete (from {from_ip})",
        boot.host.name
    );
    Ok(Json(serde_json::json!({ "status": "ok" })).into_response())
}

fn ipxe(st: &HttpService, boot: &Boot, method: &Method) -> Result<Response> {
    let script = render_ipxe_script(&boot.view())
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if method == Method::GET {
        let detail = format!(
            "image {} via {}",
            boot.image.name,
            boot.nic.mac.unwrap_or_default()
        );
        st.shared
            .events
            .record(&boot.host.name, EventKind::IpxeScript, detail);
    }
    Ok(text(script))
}

fn text(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

async fn provision_template(
    st: &HttpService,
    boot: &Boot,
    name: &str,
    method: &Method,
) -> Result<Response> {
    provision_template_or(st, boot, name, None, method).await
}

/// Renders the image's provision template `name`; when the image has none, the
/// template `fallback` names (a file of the templates directories or a built-in).
async fn provision_template_or(
    st: &HttpService,
    boot: &Boot,
    name: &str,
    fallback: Option<&str>,
    method: &Method,
) -> Result<Response> {
    let cfg = &st.shared.config;
    let value = match (boot.image.provision_templates.get(name), fallback) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => f.to_string(),
        (None, None) => match (&cfg.provision.postscript, name) {
            (Some(path), "postscript") => tokio::fs::read_to_string(path).await.map_err(|e| {
                boot.err(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("cannot read provision.postscript {}: {e}", path.display()),
                )
            })?,
            _ => {
                let hint = if name == "postscript" {
                    " (and no provision.postscript is configured)"
                } else {
                    ""
                };
                return Err(boot.err(
                    StatusCode::NOT_FOUND,
                    format!("no provision template {name:?}{hint}"),
                ));
            }
        },
    };
    let dirs = cfg.provision.template_dirs();
    let (src, _) = crate::template::files::resolve(&value, &dirs).map_err(|e| {
        boot.err(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("provision template {name:?}: {e}"),
        )
    })?;
    let site = Site {
        rootpw: cfg.provision.root_password.clone().unwrap_or_default(),
        admin_keys: cfg.admin_ssh_pubkeys.clone().unwrap_or_default(),
        net: crate::dhcp::settings::Settings::from_config(cfg)
            .ok()
            .and_then(|s| s.host_net(&boot.nic)),
        config: serde_json::to_value(cfg.as_ref())
            .map(crate::template::funcs::json_value)
            .unwrap_or_default(),
        template_dirs: dirs.clone(),
    };
    let out = boot
        .view()
        .render_with_site(&src, name, &site)
        .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if method == Method::GET {
        st.shared
            .events
            .record(&boot.host.name, EventKind::Postscript, name);
    }
    Ok(text(out))
}

/// `GET|HEAD /boot/{token}/kickstart`: `provision_templates.kickstart`, else the
/// template `kickstart` (a `kickstart.tmpl` file, else the built-in).
pub(super) async fn kickstart(
    State(st): State<HttpService>,
    Path(token): Path<String>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let boot = authorize(&st, &token, &headers, false)?;
    provision_template_or(&st, &boot, "kickstart", Some("kickstart"), &method).await
}

/// `GET|HEAD /boot/{token}/cloud-init/{user-data,meta-data,vendor-data}`: the image's
/// provision template of that name, else the template of that name (file or built-in).
pub(super) async fn cloud_init(
    State(st): State<HttpService>,
    Path((token, file)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
) -> Result<Response> {
    let boot = authorize(&st, &token, &headers, false)?;
    match file.as_str() {
        "user-data" | "meta-data" | "vendor-data" => {
            provision_template_or(&st, &boot, &file, Some(&file), &method).await
        }
        _ => Err(boot.err(
            StatusCode::NOT_FOUND,
            format!("no cloud-init file {file:?} (user-data, meta-data, vendor-data)"),
        )),
    }
}

/// Which image file `file` designates: (event kind, label, path).
fn image_file(boot: &Boot, file: &str) -> Result<(EventKind, String, String)> {
    let (base, sig) = match file.strip_suffix(".sig") {
        Some(b) => (b, ".sig"),
        None => (file, ""),
    };
    let im = &boot.image;
    let (kind, path) = match base {
        "kernel" => (EventKind::Kernel, im.kernel.clone()),
        "liveimg" => (EventKind::LiveImage, im.liveimg.clone()),
        _ => {
            let n = base
                .strip_prefix("initrd-")
                .and_then(|n| n.parse::<usize>().ok());
            match n.and_then(|n| im.initrd.get(n)) {
                Some(p) => (EventKind::Initrd, p.clone()),
                None => {
                    return Err(boot.err(
                        StatusCode::NOT_FOUND,
                        format!(
                            "no boot file {file:?} (image has {} initrd)",
                            im.initrd.len()
                        ),
                    ))
                }
            }
        }
    };
    if path.is_empty() {
        return Err(boot.err(StatusCode::NOT_FOUND, format!("image has no {base}")));
    }
    Ok((kind, file.to_string(), format!("{path}{sig}")))
}

async fn boot_file(st: &HttpService, boot: &Boot, file: &str, req: Request) -> Result<Response> {
    let (kind, label, path) = image_file(boot, file)?;
    // Cluster mode: a file with a recorded blob is its verified bytes, here or fetched
    // now from a server that has them.
    let blob = st.blobs.as_ref().zip(boot.image.blob(&path));
    // Held from before the lookup until the body is sent: the cache GC leaves it.
    let hold = blob.map(|(blobs, b)| blobs.hold(&b.sha256));
    let canonical = match blob {
        Some((blobs, b)) => blobs.ensure(b).await.map_err(|e| {
            boot.err(
                StatusCode::BAD_GATEWAY,
                format!("{label} {path}: blob {} not available here: {e}", b.sha256),
            )
        })?,
        None => resolve_image_file(st, boot, &label, &path).await?,
    };
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .map(|r| format!(" {r}"));
    let is_get = req.method() == Method::GET;
    let to = peer_ip(&req).map(|a| a.to_canonical().to_string());
    let resp = serve_file(canonical, req).await;
    let resp = match hold {
        Some(h) => holding(resp, h),
        None => resp,
    };
    if is_get && resp.status().is_success() {
        let to = to.unwrap_or_else(|| "?".into());
        let range = range.filter(|_| resp.status() == StatusCode::PARTIAL_CONTENT);
        let detail = format!("{label} {path}{} to {to}", range.unwrap_or_default());
        let tag = complete::boot_tag(&boot.token);
        st.shared
            .events
            .record_boot(&boot.host.name, kind, detail, &tag, &to);
    }
    Ok(resp)
}

/// `GET|HEAD /blobs/sha256/{hex}` (cluster mode): a blob this server has, for another
/// server's prefetch, signed with the cluster's keyring (else 403); never fetched from
/// elsewhere to answer.
pub(super) async fn blob(
    State(st): State<HttpService>,
    Path(hex): Path<String>,
    req: Request,
) -> Result<Response> {
    let Some(blobs) = st.blobs.clone() else {
        return Err(HttpError::new(
            StatusCode::NOT_FOUND,
            "no blobs here (not in cluster mode)",
        ));
    };
    if !crate::inventory::BlobRef::valid_digest(&hex) {
        return Err(HttpError::new(
            StatusCode::BAD_REQUEST,
            "a blob is named by 64 lower-case hex digits",
        ));
    }
    let from = peer(&req);
    // Only servers holding the cluster's keyring: image files are no public download.
    let signature = req
        .headers()
        .get(crate::cluster::peer::HEADER)
        .map(|v| v.to_str().unwrap_or(""));
    let server = blobs
        .check_peer(signature, req.method().as_str(), &hex)
        .map_err(|e| {
            tracing::warn!("blobs: {hex} refused to {from}: {e}");
            HttpError::new(StatusCode::FORBIDDEN, e.to_string())
        })?;
    let hold = blobs.hold(&hex);
    let path = blobs
        .local(&hex)
        .await
        .map_err(|e| HttpError::new(StatusCode::NOT_FOUND, format!("blob {hex}: {e}")))?;
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|r| r.to_str().ok())
        .unwrap_or("whole")
        .to_string();
    let resp = holding(serve_file(path, req).await, hold);
    tracing::info!(
        "blobs: {hex} ({range}) to {from} (server {server}): {}",
        resp.status().as_u16()
    );
    Ok(resp)
}

/// `resp` with its body keeping `hold` until it is sent or dropped.
fn holding(resp: Response, hold: crate::cluster::blobs::Hold) -> Response {
    resp.map(|body| Body::new(Holding { body, _hold: hold }))
}

/// A body that keeps a value alive as long as it is (hand-written: http-body-util's
/// `map_frame` would drop the size hint, which hyper uses for Content-Length).
struct Holding {
    body: Body,
    _hold: crate::cluster::blobs::Hold,
}

impl hyper::body::Body for Holding {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<std::result::Result<hyper::body::Frame<Self::Data>, Self::Error>>>
    {
        hyper::body::Body::poll_frame(std::pin::Pin::new(&mut self.body), cx)
    }

    fn is_end_stream(&self) -> bool {
        hyper::body::Body::is_end_stream(&self.body)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::Body::size_hint(&self.body)
    }
}

/// The image file `path` of `boot` inside the image roots (its canonical path).
async fn resolve_image_file(
    st: &HttpService,
    boot: &Boot,
    label: &str,
    path: &str,
) -> Result<PathBuf> {
    // Confined to the image roots again at serving (validation checked them, but a file
    // may have become a link out since): the canonical file is what is served.
    let roots = st.shared.config.provision.image_roots();
    let p = PathBuf::from(&path);
    let resolved = tokio::task::spawn_blocking(move || roots.resolve(&p))
        .await
        .map_err(|e| boot.err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let canonical = match resolved {
        Ok(p) => p,
        Err(PathError::NotFound(_)) => {
            return Err(boot.err(
                StatusCode::NOT_FOUND,
                format!("{label} file {path}: no such file"),
            ))
        }
        Err(PathError::NotAFile(_)) => {
            return Err(boot.err(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{label} {path} is not a regular file"),
            ))
        }
        Err(e) => {
            let e = HttpError::logged(
                StatusCode::FORBIDDEN,
                format!(
                    "host {}: image {}: {label} is outside the image roots",
                    boot.host.name, boot.image.name
                ),
                &format!(
                    "host {}: image {}: {label}: {e} (image roots: {})",
                    boot.host.name,
                    boot.image.name,
                    st.shared.config.provision.image_roots().list()
                ),
            );
            return Err(e);
        }
    };
    Ok(canonical)
}

/// ServeFile decides the answer (Range, HEAD, conditionals); a GET's file bytes are
/// then read by [`super::file_body`].
async fn serve_file(path: PathBuf, mut req: Request) -> Response {
    let get = req.method() == Method::GET;
    let spans = req.extensions().get::<super::sendfile::Spans>().cloned();
    if let Some(v) = req.headers().get(header::IF_RANGE) {
        if !if_range_holds(v, &path).await {
            req.headers_mut().remove(header::RANGE);
        }
    }
    let resp = match ServeFile::new(&path).oneshot(req).await {
        Ok(resp) => resp.map(Body::new),
        Err(never) => match never {},
    };
    if get {
        super::file_body::replace(&path, resp, spans).await
    } else {
        resp
    }
}

/// Whether an `If-Range` validator still holds, so that the Range is honoured (RFC 9110
/// 13.1.5): ServeFile ignores the header, and would send a range of a changed file.
/// Files get no ETag, so only a date can hold: the file's Last-Modified, to the second.
async fn if_range_holds(v: &axum::http::HeaderValue, path: &std::path::Path) -> bool {
    let Some(date) = v
        .to_str()
        .ok()
        .and_then(|s| httpdate::parse_http_date(s).ok())
    else {
        return false;
    };
    let secs = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .ok()
    };
    match tokio::fs::metadata(path).await.and_then(|m| m.modified()) {
        Ok(m) => secs(m).is_some() && secs(m) == secs(date),
        Err(_) => false,
    }
}

fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_canonical())
}

fn peer(req: &Request) -> String {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.to_string())
        .unwrap_or_else(|| "?".into())
}

/// Serves `name` from the directory `dir` (no token: firmware and repo files).
async fn static_file(
    what: &'static str,
    dir: PathBuf,
    name: String,
    req: Request,
) -> Result<Response> {
    let from = peer(&req);
    let resolved = tokio::task::spawn_blocking(move || {
        let root = Root::new(&dir).map_err(|e| {
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{what}: the server cannot read its directory"),
                format!("{what} directory {e}"),
            )
        })?;
        root.resolve(&name).map_err(|e| {
            // The body names only what was asked: no server path, no link target (an
            // existence oracle outside the root for anyone on the boot network).
            let (status, public) = match &e {
                PathError::NotFound(n) | PathError::NotAFile(n) => {
                    (StatusCode::NOT_FOUND, format!("{what} {n:?}: not found"))
                }
                PathError::DotDot(n) => (
                    StatusCode::FORBIDDEN,
                    format!("{what} {n:?}: '..' is not allowed"),
                ),
                PathError::OutsideRoot { name, .. } | PathError::NotUnderRoots(name) => (
                    StatusCode::FORBIDDEN,
                    format!("{what} {name:?}: outside the served directory"),
                ),
            };
            (
                status,
                public,
                format!("{what} {e} (in {})", root.dir().display()),
            )
        })
    })
    .await
    .map_err(|e| HttpError::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}")))?;
    let path = resolved.map_err(|(status, public, detail)| {
        HttpError::logged(status, public, &format!("{detail}, asked by {from}"))
    })?;
    tracing::debug!("HTTP {what} {} to {from}", path.display());
    Ok(serve_file(path, req).await)
}

/// `GET|HEAD /firmware/{*file}`: EFI iPXE binaries for UEFI HTTP boot, from
/// `provision.firmware_dir` (default: `tftp.root`).
pub(super) async fn firmware(
    State(st): State<HttpService>,
    Path(file): Path<String>,
    req: Request,
) -> Result<Response> {
    let cfg = &st.shared.config;
    let dir = cfg
        .provision
        .firmware_dir
        .clone()
        .unwrap_or_else(|| cfg.tftp.root.clone());
    static_file("firmware", dir, file, req).await
}

/// `GET|HEAD /repo/{*path}`: static files of `provision.repo_dir`.
pub(super) async fn repo(
    State(st): State<HttpService>,
    Path(path): Path<String>,
    req: Request,
) -> Result<Response> {
    static_file(
        "repo",
        st.shared.config.provision.repo_dir.clone(),
        path,
        req,
    )
    .await
}

/// `GET /`: liveness, as Grendel answers it.
pub(super) async fn index() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "up" }))
}

#[cfg(test)]
mod tests {
    use super::host_authority;

    #[test]
    fn host_headers_put_into_urls() {
        for ok in [
            "10.0.0.1",
            "10.0.0.1:8080",
            "boot.lan",
            "boot-1.lan:80",
            "[fd00::1]",
            "[fd00::1]:8080",
            "localhost",
        ] {
            assert_eq!(host_authority(ok.as_bytes()).as_deref(), Some(ok), "{ok}");
        }
        for bad in [
            "",
            ":80",
            "evil.com/x",
            "user@evil.com",
            "a b",
            "evil\";chain http://x",
            "host:99999",
            "host:",
            "host:8a",
            "fd00::1",
            "[fd00::1",
            "[zz]:80",
            "[fd00::1]x",
            "-bad.lan",
            "a..b",
            "h\u{e9}te",
        ] {
            assert_eq!(host_authority(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(host_authority(b"boot\xff.lan"), None);
        assert_eq!(host_authority(b"boot\r\n.lan"), None);
    }
}
