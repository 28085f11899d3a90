//! The ndctl verbs through a running `devmap serve` (`--socket`, or `DEVMAP_SOCKET`): the
//! service holds the regions it serves (their lock), so the verbs that change one (`create-`,
//! `destroy-`, `enable-` and `disable-namespace`, `clear-errors`) and `check-namespace` ask it
//! to, and print what the in-process verb prints; given a socket whose service does not serve
//! the region, all but `enable-` and `disable-namespace` (whose meaning is the service's)
//! work on it in-process, as without one. This module owns what they share: the
//! connection, the region's index among the service's regions (`regionX`, `namespaceX.N`,
//! `daxX.N`: its place in the service's `-r` order), the region's path as the service is sent
//! it, and the namespace's object read from the region file (read-only, taking no lock, as
//! `list` reads it) with the verb's own fields and the service's socket beside it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use devmap::client::Client;
use devmap::namespace::{Access, Label, Region};
use serde::Serialize;

use super::json::{Detail, NamespaceObject, OutputArgs, find};
use super::open::{open, region_error};
use crate::output;

/// A region the service at `socket` serves, and the connection to it.
pub struct Via {
    /// The connection.
    pub client: Client,
    /// The service's socket, as given.
    pub socket: PathBuf,
    /// The region file, as given.
    pub path: PathBuf,
    /// The region's path as requests name it: resolved, so that a service started elsewhere
    /// (another working directory, a link) finds it.
    pub region: String,
    /// Its index among the service's regions.
    pub index: u64,
}

impl Via {
    /// Connects to the service at `socket` and finds `region` among the regions it serves;
    /// refuses a region it does not serve, naming those it does.
    pub fn connect(socket: &Path, region: &Path) -> Result<Via> {
        Via::ask(socket, region)?.map_err(|served| {
            anyhow!(
                "region {} is not served by the service at {} (it serves: {}): give one of \
                 those, or leave out --socket (and DEVMAP_SOCKET) to work on it in this process",
                region.display(),
                socket.display(),
                served.join(", ")
            )
        })
    }

    /// As [`Via::connect`], but `None` when the service does not serve `region`: then no
    /// service holds it, and the verbs that can work on it in-process do so, as without a
    /// socket.
    pub fn serving(socket: &Path, region: &Path) -> Result<Option<Via>> {
        Ok(Via::ask(socket, region)?.ok())
    }

    /// The connection to the service at `socket` and `region`'s place among its regions, or
    /// the regions it serves when `region` is not one.
    fn ask(socket: &Path, region: &Path) -> Result<std::result::Result<Via, Vec<String>>> {
        let client = Client::connect(socket)?;
        let served = client
            .listing()
            .with_context(|| {
                format!(
                    "cannot list the regions of the service at {}",
                    socket.display()
                )
            })?
            .regions;
        Ok(match index_of(&served, region) {
            Some(index) => Ok(Via {
                client,
                socket: socket.to_path_buf(),
                path: region.to_path_buf(),
                region: canonical(region),
                index,
            }),
            None => Err(served),
        })
    }

    /// The region file, read-only.
    pub fn read(&self) -> Result<Region> {
        open(&self.path, Access::Read)
    }

    /// The label of the namespace `ident` names (its name, or `namespaceX.N` with X this
    /// region's index) in `r`.
    pub fn find<'r>(&self, r: &'r Region, ident: &str) -> Result<&'r Label> {
        find(r, ident, self.index)
            .map_err(region_error)
            .with_context(|| format!("in region {}", self.path.display()))
    }

    /// What a verb on one namespace prints of it, with this region's index.
    pub fn detail(&self, out: OutputArgs) -> Detail {
        Detail {
            region: self.index,
            ..Detail::one(out)
        }
    }

    /// The object of `label` in `r` as `detail` asks, with `extra`'s fields and the service's
    /// socket after ndctl's and devmap's, in the in-process verb's order.
    pub fn object(
        &self,
        r: &Region,
        label: &Label,
        detail: Detail,
        extra: serde_json::Value,
    ) -> Result<Served<NamespaceObject>> {
        Ok(Served {
            object: NamespaceObject::new(r, label, detail)?,
            extra: match extra {
                serde_json::Value::Object(extra) => extra,
                _ => serde_json::Map::new(),
            },
            service: self.socket.display().to_string(),
        })
    }

    /// What to say first when the service refused to `what` (`create namespace "x"`).
    pub fn failed(&self, what: &str) -> String {
        format!(
            "cannot {what} in region {} through the service at {}",
            self.path.display(),
            self.socket.display()
        )
    }
}

/// What a verb prints through a service: the in-process verb's object, what the service did
/// (the verb's own fields) and its socket.
#[derive(Debug, Serialize)]
pub struct Served<T: Serialize> {
    /// The object the in-process verb prints.
    #[serde(flatten)]
    pub object: T,
    /// What the service did.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
    /// The service's socket.
    pub service: String,
}

/// `path` with every link resolved, as text; as given if it cannot be resolved.
fn canonical(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

/// The index of `region` among `served` (paths as the service was given them): the same path,
/// or the same file once links are resolved.
pub fn index_of(served: &[String], region: &Path) -> Option<u64> {
    let want = std::fs::canonicalize(region).ok();
    served
        .iter()
        .position(|s| {
            Path::new(s) == region || (want.is_some() && std::fs::canonicalize(s).ok() == want)
        })
        .map(|i| i as u64)
}

/// Runs `verb` (`enable`, `disable`) through the service at `socket` on namespace `ident` of
/// `region` with `call`, and prints the namespace's object (read from the region file once it
/// is done) with what `call` returned and the service's socket beside it.
pub fn through_service(
    socket: &Path,
    region: &Path,
    ident: &str,
    out: OutputArgs,
    verb: &str,
    call: impl FnOnce(&Client, &str, &str) -> Result<serde_json::Value>,
) -> Result<()> {
    let via = Via::connect(socket, region)?;
    let name = via.find(&via.read()?, ident)?.name.clone();
    let done = call(&via.client, &via.region, &name)
        .with_context(|| via.failed(&format!("{verb} namespace {name:?}")))?;
    let r = via.read()?;
    let label = via.find(&r, &name)?;
    output::object(&via.object(&r, label, via.detail(out), done)?)
}
