//! `imgadm`: manage the images of a skerry pool, with SmartOS's commands and flags.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use imgadm::{output, parse_checked_ref, ImageManifest, ImageStore, SourceClient};

#[derive(Parser)]
#[command(
    name = "imgadm",
    about = "Manage skerry images (SmartOS imgadm work-alike)"
)]
struct Cli {
    /// The pool holding images/ and config/.
    #[arg(long, global = true, env = "SKERRY_POOL", default_value = "/zones")]
    pool: PathBuf,
    /// More IMGAPI sources, comma separated, consulted after the configured ones.
    #[arg(long, global = true, env = "SKERRY_SOURCES", value_delimiter = ',')]
    sources: Vec<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

/// Output flags of `list` and `avail`.
#[derive(clap::Args)]
struct ListFlags {
    /// JSON output.
    #[arg(short = 'j', long)]
    json: bool,
    /// Columns, comma separated (uuid,name,version,os,type,pub,size,...).
    #[arg(short = 'o')]
    fields: Option<String>,
    /// No header line.
    #[arg(short = 'H')]
    no_header: bool,
}

#[derive(Subcommand)]
enum Cmd {
    /// List, add (-a), delete (-d) or edit (-e) image sources.
    Sources {
        /// Add a source URL.
        #[arg(short = 'a', conflicts_with_all = ["delete", "edit"])]
        add: Option<String>,
        /// The type of the source added: imgapi (default) or docker (an OCI registry;
        /// `http://` lets `oci:` references to its host use plain HTTP).
        #[arg(short = 't', requires = "add", default_value = "imgapi")]
        kind: String,
        /// Delete a source URL.
        #[arg(short = 'd', conflicts_with = "edit")]
        delete: Option<String>,
        /// Edit the source list in $EDITOR (one URL per line).
        #[arg(short = 'e')]
        edit: bool,
        /// JSON output.
        #[arg(short = 'j')]
        json: bool,
    },
    /// Images available from the sources.
    Avail(ListFlags),
    /// The manifest of an image in the sources.
    Show {
        /// UUID, name@version or name.
        image: String,
    },
    /// Import an image from the sources, or from an OCI registry.
    Import {
        /// UUID, name@version, name (newest version), or oci:REGISTRY/REPO:TAG
        /// (or @sha256:DIGEST).
        image: String,
        /// Print nothing but errors.
        #[arg(short = 'q')]
        quiet: bool,
        /// Print one JSON line: `{"uuid", "name", "version"}`, or `{"error"}` (and exit 1).
        #[arg(short = 'j')]
        json: bool,
    },
    /// Install an image from a local manifest and file.
    Install {
        /// The IMGAPI manifest (JSON).
        #[arg(short = 'm')]
        manifest: PathBuf,
        /// The image file.
        #[arg(short = 'f')]
        file: PathBuf,
        /// Print nothing but errors.
        #[arg(short = 'q')]
        quiet: bool,
    },
    /// Make an image of a stopped instance (zone: image plus writable layer; HVM: boot disk).
    Create {
        /// Manifest template (JSON): name, version, description, ...
        #[arg(short = 'm')]
        manifest: PathBuf,
        /// The instance's name or UUID.
        instance: String,
    },
    /// Installed images.
    List(ListFlags),
    /// Pull the new digest of every installed OCI image whose tag moved.
    Update,
    /// An installed image's manifest and location (JSON).
    Get {
        /// UUID, name@version or name.
        image: String,
    },
    /// Delete an installed image (refused while an instance uses it).
    Delete {
        /// UUID, name@version or name.
        image: String,
    },
    /// Delete images no instance uses.
    Vacuum {
        /// Dry run: only say what would be deleted.
        #[arg(short = 'n')]
        dry_run: bool,
        /// Accepted for SmartOS compatibility (vacuum never asks).
        #[arg(short = 'f')]
        force: bool,
    },
    /// Serve the pool's images over the IMGAPI HTTP protocol.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "0.0.0.0:8080")]
        listen: SocketAddr,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

fn main() {
    // Die quietly on a closed pipe (`imgadm list | head`) like other Unix tools.
    // SAFETY: setting a signal disposition to SIG_DFL installs no handler code.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
    // `imgadm: warning: ...` lines on stderr, for the library's warnings.
    host::log::Logger::new("imgadm")
        .warn_word("warning")
        .install();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("imgadm: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    // Neither needs the pool (a package build runs them with none).
    match cli.cmd {
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "imgadm", &mut std::io::stdout().lock());
            return Ok(());
        }
        Cmd::Man => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock())?;
            return Ok(());
        }
        _ => {}
    }
    let store = ImageStore::open_with_sources(&cli.pool, &cli.sources)
        .with_context(|| format!("opening the image store of pool {}", cli.pool.display()))?;
    match cli.cmd {
        Cmd::Sources {
            add,
            kind,
            delete,
            edit,
            json,
        } => sources(&store, add.map(|a| (a, kind)), delete, edit, json)?,
        Cmd::Avail(f) => {
            let urls = store.sources()?;
            let moved = report_moved_tags(&store)?;
            if urls.is_empty() {
                // Registries (docker sources) have no listing to show; what they can
                // say, a moved tag, is said above.
                if moved > 0 || !imgadm::sources::load_all(store.pool())?.is_empty() {
                    return Ok(());
                }
                bail!(imgadm::StoreError::NoSources);
            }
            // One source down does not hide the others' images (SmartOS does the same).
            let mut all = Vec::new();
            let mut failed = 0;
            for url in &urls {
                match SourceClient::new(url).and_then(|c| c.list()) {
                    Ok(ms) => all.extend(ms.into_iter().filter(|m| !m.disabled)),
                    Err(e) => {
                        failed += 1;
                        log::warn!("source {url}: {e}");
                    }
                }
            }
            if failed == urls.len() {
                bail!("no source answered ({} configured)", urls.len());
            }
            all.sort_by(imgadm::manifest::newer);
            all.dedup_by_key(|m| m.uuid);
            print_list(&all, &f)?;
        }
        Cmd::Show { image } => {
            let (_, m) = store.find_in_sources(&parse_checked_ref(&image)?)?;
            println!("{}", serde_json::to_string_pretty(&m)?);
        }
        Cmd::Import { image, quiet, json } => {
            let imported = import(&store, &image, quiet || json);
            if json {
                // One line a parent (init) reads, bounded, instead of our prose.
                let line = match &imported {
                    Ok(img) => serde_json::json!({
                        "uuid": img.uuid,
                        "name": img.name,
                        "version": img.version,
                    }),
                    Err(e) => serde_json::json!({ "error": format!("{e:#}") }),
                };
                println!("{line}");
                if imported.is_err() {
                    std::process::exit(1);
                }
            }
            imported?;
        }
        Cmd::Create { manifest, instance } => {
            let data = std::fs::read(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let t: serde_json::Value = serde_json::from_slice(&data)
                .with_context(|| format!("parsing {}", manifest.display()))?;
            let img =
                imgadm::create::create(&store, &instance, &t, &manifest.display().to_string())?;
            println!(
                "Created image {} ({}) from {instance}",
                img.uuid,
                img.manifest.name_version()
            );
        }
        Cmd::Install {
            manifest,
            file,
            quiet,
        } => {
            let data = std::fs::read(&manifest)
                .with_context(|| format!("reading {}", manifest.display()))?;
            let m = ImageManifest::from_json(&data, &manifest.display().to_string())?;
            let img = store.install_file(&m, &file)?;
            if !quiet {
                println!(
                    "Installed image {} ({})",
                    img.uuid,
                    img.manifest.name_version()
                );
            }
        }
        Cmd::List(mut f) => {
            let all: Vec<ImageManifest> = store.list()?.into_iter().map(|i| i.manifest).collect();
            // Images from registries: their reference and digest are what names them.
            if f.fields.is_none() && all.iter().any(|m| m.oci().is_some()) {
                f.fields = Some(output::DEFAULT_FIELDS.join(",") + ",ref,digest");
            }
            print_list(&all, &f)?;
        }
        Cmd::Update => {
            for img in store.list()? {
                let Some(mv) = imgadm::oci::tag_moved(&store, &img)? else {
                    continue;
                };
                let new = store.import_ref(&spec::ImageRef::Oci(mv.reference.clone()))?;
                println!(
                    "Updated {}: {} -> {} (image {})",
                    mv.reference, mv.installed, mv.now, new.uuid
                );
            }
        }
        Cmd::Get { image } => {
            let img = store
                .resolve(&parse_checked_ref(&image)?)?
                .with_context(|| format!("image {image} is not installed"))?;
            let out = serde_json::json!({
                "manifest": img.manifest,
                "zpool": cli.pool,
                "path": img.path,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        Cmd::Delete { image } => {
            let img = store
                .resolve(&parse_checked_ref(&image)?)?
                .with_context(|| format!("image {image} is not installed"))?;
            let used = imgadm::instances_using(store.pool())?;
            let by = used.get(&img.uuid).cloned().unwrap_or_default();
            store.delete(&img.uuid, &by)?;
            println!(
                "Deleted image {} ({})",
                img.uuid,
                img.manifest.name_version()
            );
        }
        Cmd::Vacuum { dry_run, force: _ } => {
            let gone = store.vacuum(dry_run)?;
            let verb = if dry_run { "Would delete" } else { "Deleted" };
            for img in &gone {
                println!(
                    "{verb} image {} ({})",
                    img.uuid,
                    img.manifest.name_version()
                );
            }
            if gone.is_empty() {
                println!("No unused images");
            }
        }
        Cmd::Serve { listen } => {
            let server = imgadm::serve::Server::bind(store, listen)?;
            eprintln!(
                "imgadm: serving the images of {} on http://{}",
                cli.pool.display(),
                server.local_addr()
            );
            server.run()?;
        }
        // Printed above, before the store was opened.
        Cmd::Completions { .. } | Cmd::Man => {}
    }
    Ok(())
}

/// `imgadm import`: the installed image `image` names, imported when missing.
fn import(store: &ImageStore, image: &str, quiet: bool) -> Result<imgadm::Image> {
    let r = parse_checked_ref(image)?;
    if let Some(img) = store.resolve(&r)? {
        if !quiet {
            println!(
                "Image {} ({}) is already installed",
                img.uuid,
                img.manifest.name_version()
            );
        }
        return Ok(img);
    }
    let img = store.import_ref(&r)?;
    if !quiet {
        println!(
            "Imported image {} ({})",
            img.uuid,
            img.manifest.name_version()
        );
    }
    Ok(img)
}

fn print_list(all: &[ImageManifest], f: &ListFlags) -> Result<()> {
    if f.json {
        print!("{}", output::json(all));
        return Ok(());
    }
    let fields = match output::parse_fields(f.fields.as_deref()) {
        Ok(fs) => fs,
        Err(e) => bail!("-o: {e}"),
    };
    print!("{}", output::table(all, &fields, f.no_header));
    Ok(())
}

/// Says which installed OCI images' tags moved in their registry (SmartOS's `avail`
/// shows what an update would fetch); returns how many did. A registry that cannot
/// be asked is a warning, not an error: the IMGAPI listing still follows.
fn report_moved_tags(store: &ImageStore) -> Result<usize> {
    let mut moved = 0;
    for img in store.list()? {
        match imgadm::oci::tag_moved(store, &img) {
            Ok(Some(mv)) => {
                moved += 1;
                println!(
                    "{} moved: installed {}, the registry has {} (`imgadm update` pulls it)",
                    mv.reference, mv.installed, mv.now
                );
            }
            Ok(None) => {}
            Err(e) => log::warn!("{e}"),
        }
    }
    Ok(moved)
}

fn sources(
    store: &ImageStore,
    add: Option<(String, String)>,
    delete: Option<String>,
    edit: bool,
    json: bool,
) -> Result<()> {
    if let Some((url, kind)) = add {
        if kind == "docker" {
            imgadm::sources::add_kind(store.pool(), &url, imgadm::sources::SourceKind::Docker)?;
            println!("Added \"docker\" image source \"{url}\"");
            return Ok(());
        }
        if kind != "imgapi" {
            bail!("-t {kind}: source types are imgapi and docker");
        }
        SourceClient::new(&url)?
            .ping()
            .with_context(|| format!("{url} does not answer like an IMGAPI server; not added"))?;
        store.add_source(&url)?;
        println!("Added image source \"{url}\"");
    } else if let Some(url) = delete {
        store.remove_source(&url)?;
        println!("Deleted image source \"{url}\"");
    } else if edit {
        let configured = imgadm::sources::load(store.pool())?;
        let tmp = std::env::temp_dir().join(format!("imgadm-sources-{}.txt", std::process::id()));
        std::fs::write(&tmp, configured.join("\n") + "\n")?;
        let editor = std::env::var("EDITOR").unwrap_or_else(|_| "vi".into());
        let status = std::process::Command::new(&editor)
            .arg(&tmp)
            .status()
            .with_context(|| format!("running {editor}"))?;
        let text = std::fs::read_to_string(&tmp);
        let _ = std::fs::remove_file(&tmp);
        if !status.success() {
            bail!("{editor} failed; sources unchanged");
        }
        let urls: Vec<String> = text?
            .lines()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(imgadm::sources::normalize_url)
            .collect::<Result<_, _>>()?;
        imgadm::sources::save(store.pool(), &urls)?;
        println!("Saved {} image source(s)", urls.len());
    } else {
        let all = store.sources()?;
        let docker: Vec<String> = imgadm::sources::load_all(store.pool())?
            .into_iter()
            .filter(|s| s.kind == imgadm::sources::SourceKind::Docker)
            .map(|s| s.url)
            .collect();
        if json {
            let mut rows: Vec<serde_json::Value> = all.iter().map(|u| u.as_str().into()).collect();
            rows.extend(
                docker
                    .iter()
                    .map(|u| serde_json::json!({"url": u, "type": "docker"})),
            );
            println!("{}", serde_json::to_string_pretty(&rows)?);
        } else {
            for s in all {
                println!("{s}");
            }
            for s in docker {
                println!("{s} docker");
            }
        }
    }
    Ok(())
}
