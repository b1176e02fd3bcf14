//! `xboot check-config`: validates a config, its TLS certificates, its inventory files and (when the server is
//! not holding it) the stored inventory they merge with, without starting anything.
use std::path::Path;

use anyhow::Context;

use super::InventoryFiles;
use crate::config::Config;
use crate::inventory::{self, FileEntries, Store, StoreError};

pub fn run(config_path: &Path, files: &InventoryFiles) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    for w in config.warnings() {
        eprintln!("warning: {w}");
    }
    // The certificates serve would load (a bad path or mismatched pair stops it).
    for (section, files) in [
        ("provision", config.provision.tls_files()),
        ("api", config.api.tls_files()),
    ] {
        if let Some((cert, key)) = files {
            crate::tls::Certificate::load(section, cert, key)?;
        }
    }
    let hosts = files.hosts.clone().or_else(|| config.hosts.clone());
    let images = files.images.clone().or_else(|| config.images.clone());
    let (stored, remembered, label, note) = stored_inventory(&config.state_dir())?;
    let s = inventory::plan(
        stored,
        label.as_deref(),
        hosts.as_deref(),
        images.as_deref(),
        &config.provision.image_roots(),
        &remembered,
        config.provision.default_image.as_deref(),
    )?;
    for w in &s.warnings {
        eprintln!("warning: {w}");
    }
    check_api_accounts(&config)?;
    let inv = &s.inventory;
    let provisioned = inv.hosts().iter().filter(|h| h.provision).count();
    println!(
        "{}: OK: {} hosts ({} provisioned), {} images{}",
        config_path.display(),
        inv.hosts().len(),
        provisioned,
        inv.images().len(),
        note
    );
    Ok(())
}

/// `api.listen` without `api.token` needs an account or token in the store, as `serve`
/// requires (a store a running server holds has passed that check).
fn check_api_accounts(config: &Config) -> anyhow::Result<()> {
    let Some(addr) = config.api.listen else {
        return Ok(());
    };
    if config.api.token.as_deref().is_some_and(|t| !t.is_empty()) {
        return Ok(());
    }
    let empty = match Store::open_existing(&config.state_dir()) {
        Ok(None) => true,
        Ok(Some(s)) => crate::api::accounts::Accounts::load(Some(std::sync::Arc::new(s)))?
            .is_empty(crate::api::accounts::now_secs()),
        Err(StoreError::InUse { .. }) => false,
        Err(e) => return Err(e.into()),
    };
    if empty {
        anyhow::bail!("{}", crate::api::auth::no_account_message(addr));
    }
    Ok(())
}

type Stored = (Vec<inventory::Host>, Vec<inventory::Image>);

/// The stored inventory if it exists and no server holds it, with a note for the report.
/// Opens it without creating or writing anything; a damaged store is an error (serve
/// would refuse it), one held by a running server a note.
fn stored_inventory(
    state_dir: &Path,
) -> anyhow::Result<(Stored, FileEntries, Option<String>, String)> {
    match Store::open_existing(state_dir) {
        Ok(None) => Ok((
            (vec![], vec![]),
            FileEntries::default(),
            None,
            String::new(),
        )),
        Ok(Some(s)) => {
            let file = s.path().display().to_string();
            let stored = s.load().with_context(|| format!("reading {file}"))?;
            let remembered = s
                .file_entries()
                .with_context(|| format!("reading {file}"))?;
            let note = format!(" (files merged over the store {file})");
            Ok((stored, remembered, Some(file), note))
        }
        Err(e @ StoreError::InUse { .. }) => {
            let note = format!(" (files only: the store is not readable now: {e})");
            Ok(((vec![], vec![]), FileEntries::default(), None, note))
        }
        Err(e) => Err(e.into()),
    }
}
