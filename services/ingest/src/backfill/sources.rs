//! Finding the messages of a backfill: which paths are .eml files, mbox files or maildirs, and
//! the messages each holds, with a stable origin per message.
//!
//! `--format auto` decides per path: a directory with `cur/` or `new/` is a maildir (with its
//! Maildir++ `.Folder` subfolders); another directory is walked (hidden entries skipped); a
//! file that starts with a `From ` line is an mbox, any other file one .eml message.
//!
//! Origins (part of the deterministic ingest id): `<file>` for .eml, `<file>#<n>` for the n-th
//! message of an mbox, `<maildir>#<unique>` for a maildir message, where `<unique>` is the file
//! name before the `:2,` flags, so a message that moves from `new/` to `cur/` or gets flags keeps
//! its origin. Paths are canonical (absolute).

use std::path::{Path, PathBuf};
use std::str::FromStr;

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Auto,
    Eml,
    Mbox,
    Maildir,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "eml" => Ok(Self::Eml),
            "mbox" => Ok(Self::Mbox),
            "maildir" => Ok(Self::Maildir),
            other => Err(format!(
                "unknown format `{other}` (auto, eml, mbox, maildir)"
            )),
        }
    }
}

/// Where a message's bytes are.
#[derive(Debug, Clone)]
pub enum Item {
    /// A whole file is one message (.eml, maildir).
    File { origin: String, path: PathBuf },
    /// The whole mbox file, split when it is read.
    Mbox { path: PathBuf },
}

impl Item {
    pub fn path(&self) -> &Path {
        match self {
            Item::File { path, .. } | Item::Mbox { path } => path,
        }
    }
}

/// The items under `paths`, and the paths that were skipped with the reason.
pub fn discover(paths: &[PathBuf], format: Format) -> (Vec<Item>, Vec<(String, String)>) {
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for path in paths {
        match std::fs::canonicalize(path) {
            Ok(path) => visit(&path, format, &mut items, &mut skipped),
            Err(e) => skipped.push((path.display().to_string(), format!("cannot open: {e}"))),
        }
    }
    (items, skipped)
}

fn is_maildir(dir: &Path) -> bool {
    dir.join("cur").is_dir() || dir.join("new").is_dir()
}

fn hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<Vec<_>, _>>()?;
    entries.sort();
    Ok(entries)
}

fn visit(path: &Path, format: Format, items: &mut Vec<Item>, skipped: &mut Vec<(String, String)>) {
    let label = path.display().to_string();
    if path.is_dir() {
        if matches!(format, Format::Auto | Format::Maildir) && is_maildir(path) {
            return maildir(path, items, skipped);
        }
        if format == Format::Maildir {
            skipped.push((label, "not a maildir (no cur/ or new/)".into()));
            return;
        }
        match sorted_entries(path) {
            Ok(entries) => {
                for entry in entries.iter().filter(|e| !hidden(e)) {
                    visit(entry, format, items, skipped);
                }
            }
            Err(e) => skipped.push((label, format!("cannot list: {e}"))),
        }
        return;
    }
    let as_mbox = match format {
        Format::Mbox => true,
        Format::Eml => false,
        Format::Maildir => {
            skipped.push((label, "not a directory (--format maildir)".into()));
            return;
        }
        Format::Auto => starts_with_from_line(path),
    };
    if as_mbox {
        items.push(Item::Mbox {
            path: path.to_path_buf(),
        });
    } else {
        items.push(Item::File {
            origin: label,
            path: path.to_path_buf(),
        });
    }
}

fn starts_with_from_line(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 5];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"From ")
}

/// The messages of maildir `dir` (`new/` and `cur/`, not `tmp/`) and of its `.Folder`s.
fn maildir(dir: &Path, items: &mut Vec<Item>, skipped: &mut Vec<(String, String)>) {
    let root = dir.display().to_string();
    for sub in ["new", "cur"] {
        let folder = dir.join(sub);
        if !folder.is_dir() {
            continue;
        }
        match sorted_entries(&folder) {
            Ok(entries) => {
                for file in entries.into_iter().filter(|e| e.is_file() && !hidden(e)) {
                    let name = file
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let unique = name.split(':').next().unwrap_or(&name).to_string();
                    items.push(Item::File {
                        origin: format!("{root}#{unique}"),
                        path: file,
                    });
                }
            }
            Err(e) => skipped.push((folder.display().to_string(), format!("cannot list: {e}"))),
        }
    }
    if let Ok(entries) = sorted_entries(dir) {
        for sub in entries
            .iter()
            .filter(|e| hidden(e) && e.is_dir() && is_maildir(e))
        {
            maildir(sub, items, skipped);
        }
    }
}
