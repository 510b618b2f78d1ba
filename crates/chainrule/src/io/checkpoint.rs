//! A folder that holds one checkpoint, a set of files saved together, and replaces
//! it as a whole: a crash at any moment leaves the previous checkpoint or the new
//! one, never a mix of the two.
//!
//! # The design
//!
//! Each save is a fresh hidden folder `.checkpoint-NNNNNN` (numbered one past the
//! current one). Its files are written, then a `manifest.json` listing each file's
//! length and SHA-256; all of them are flushed to disk (`fsync`), then the folder
//! itself. (Written first and flushed together, the files cost the file system one
//! journal commit or two, not one each.) Only then does the save become the
//! checkpoint: a new symbolic link
//! `checkpoint → .checkpoint-NNNNNN` is made under a temporary name and renamed over
//! the old link, and the folder that holds them is flushed. `rename(2)` replaces a
//! name atomically, so at every instant `checkpoint` names a complete save: the old
//! one until the rename, the new one after. The previous save is removed last.
//!
//! That is why a folder per save and a link, rather than files renamed one by one:
//! each file can be replaced atomically, but not a set of them, and a folder cannot
//! be renamed over a folder that is not empty. One rename of a link is the single
//! atomic step. The manifest is what lets a reader check that a checkpoint is whole
//! and unchanged (a copy cut short, a file replaced by hand, a disk that lost data
//! it promised to keep) and name the file that is not.
//!
//! What a crash leaves behind is a save folder that no link names (half written,
//! or the previous one not yet removed). Readers never look at it, and the next
//! save removes it. One writer at a time: [`CheckpointDir::try_lock`] takes an
//! advisory lock on the folder (`flock`), which the system releases when the
//! process ends, however it ends.
//!
//! Flushing is what makes the checkpoint survive a power loss too, not only a
//! killed process: the link is made only after the save's data and names are on
//! disk, and the previous save is removed only after the new link is.
//!
//! With the `fault-injection` feature (test builds of the CLI), the environment
//! variable `CHAINRULE_TEST_ABORT_AT=k` aborts the process at the k-th file
//! operation of its saves (counted over the whole process), for tests that crash
//! a save at every point of it.

use super::io_error;
use crate::{Error, Result};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// The link that names the current save.
const LINK: &str = "checkpoint";
/// The new link's name until it is renamed over [`LINK`].
const LINK_TEMP: &str = ".checkpoint.link-tmp";
/// How every save folder's name starts.
const SAVE_PREFIX: &str = ".checkpoint-";
/// The list of a save's files, written last.
const MANIFEST: &str = "manifest.json";
/// The manifest's `format`, for readers of later versions.
const FORMAT: &str = "chainrule checkpoint 1";

/// A folder, locked for writing checkpoints into it.
///
/// ```
/// use chainrule::io::{CheckpointDir, SavedCheckpoint};
/// let root = std::env::temp_dir().join(format!("chainrule-doc-ckdir-{}", std::process::id()));
/// std::fs::create_dir_all(&root).unwrap();
/// let mut dir = CheckpointDir::try_lock(&root)?.expect("nobody else holds it");
/// assert!(CheckpointDir::try_lock(&root)?.is_none(), "one writer at a time");
/// let mut save = dir.save()?;
/// save.write("a.txt", b"one")?;
/// save.commit()?;
/// let saved = SavedCheckpoint::open(&root)?.expect("a complete checkpoint");
/// assert_eq!(std::fs::read(saved.file("a.txt")?).unwrap(), b"one");
/// std::fs::remove_dir_all(&root).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug)]
pub struct CheckpointDir {
    root: PathBuf,
    /// Holds the lock until dropped.
    _lock: File,
}

impl CheckpointDir {
    /// Takes the lock of folder `root` for writing checkpoints: `Ok(None)` when
    /// another process (or another handle of this one) holds it. The lock is
    /// released when the handle is dropped or the process ends, however it ends.
    ///
    /// # Errors
    /// [`Error::Io`] naming `root` when it cannot be opened or locked.
    ///
    /// ```
    /// use chainrule::io::CheckpointDir;
    /// assert!(CheckpointDir::try_lock(std::path::Path::new("/no/such/folder")).is_err());
    /// ```
    pub fn try_lock(root: &Path) -> Result<Option<CheckpointDir>> {
        let folder = File::open(root).map_err(|e| io_error(root, e))?;
        if !folder.metadata().map_err(|e| io_error(root, e))?.is_dir() {
            return Err(io_error(root, "not a folder"));
        }
        match folder.try_lock() {
            Ok(()) => Ok(Some(CheckpointDir {
                root: root.to_path_buf(),
                _lock: folder,
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(root, e)),
        }
    }

    /// The folder.
    ///
    /// ```
    /// use chainrule::io::CheckpointDir;
    /// let root = std::env::temp_dir();
    /// # let root = root.join(format!("chainrule-doc-root-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// assert_eq!(dir.root(), root);
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Starts a save: removes what earlier crashes left (save folders no link
    /// names) and creates the new save's folder. Nothing changes for readers until
    /// [`CheckpointSave::commit`].
    ///
    /// # Errors
    /// [`Error::Io`] when the folder cannot be written, [`Error::Format`] when its
    /// `checkpoint` is not a link to a save folder.
    ///
    /// ```
    /// use chainrule::io::CheckpointDir;
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-save-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// let save = dir.save()?;
    /// assert!(save.dir().is_dir());
    /// drop(save); // not committed: its folder goes, and the checkpoint is as it was
    /// assert!(chainrule::io::SavedCheckpoint::open(&root)?.is_none());
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn save(&mut self) -> Result<CheckpointSave<'_>> {
        let current = current_save(&self.root)?;
        let number = match &current {
            Some(name) => save_number(name).map_or(1, |n| n + 1),
            None => 1,
        };
        let entries = std::fs::read_dir(&self.root).map_err(|e| io_error(&self.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.root, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = (name.starts_with(SAVE_PREFIX) && current.as_deref() != Some(&name))
                || name == LINK_TEMP;
            if leftover {
                fault_point("remove a leftover save", &name);
                remove(&entry.path())?;
            }
        }
        let name = format!("{SAVE_PREFIX}{number:06}");
        let dir = self.root.join(&name);
        fault_point("create the save's folder", &name);
        std::fs::create_dir(&dir).map_err(|e| io_error(&dir, e))?;
        Ok(CheckpointSave {
            folder: self,
            name,
            dir,
            files: BTreeMap::new(),
            previous: current,
            committed: false,
        })
    }
}

/// A save in progress: files go into [`CheckpointSave::dir`], and
/// [`CheckpointSave::commit`] makes them the checkpoint. Dropped without a commit,
/// it removes its folder.
#[derive(Debug)]
pub struct CheckpointSave<'a> {
    folder: &'a mut CheckpointDir,
    name: String,
    dir: PathBuf,
    /// Each file's length and SHA-256 (hex), by name.
    files: BTreeMap<String, (u64, String)>,
    previous: Option<String>,
    committed: bool,
}

impl CheckpointSave<'_> {
    /// The save's folder, for writers that take a folder
    /// (`Sequential::save_checkpoint`); list what they write with
    /// [`CheckpointSave::add`].
    ///
    /// ```
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-dir-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = chainrule::io::CheckpointDir::try_lock(&root)?.unwrap();
    /// let save = dir.save()?;
    /// assert!(save.dir().starts_with(&root));
    /// # drop(save);
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes file `name` of the save (flushed to disk by
    /// [`CheckpointSave::commit`]).
    ///
    /// # Errors
    /// [`Error::Io`] when the write fails; [`Error::InvalidValue`] for a name that is
    /// not a plain file name, is `manifest.json`, or was saved already.
    ///
    /// ```
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-write-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = chainrule::io::CheckpointDir::try_lock(&root)?.unwrap();
    /// let mut save = dir.save()?;
    /// save.write("state.json", b"{}")?;
    /// assert!(save.write("../escape", b"x").is_err());
    /// assert!(save.write("state.json", b"again").is_err());
    /// # drop(save);
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn write(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.check_new_name(name)?;
        self.write_file(name, bytes)?;
        self.files
            .insert(name.to_string(), (bytes.len() as u64, sha256_hex(bytes)));
        Ok(())
    }

    /// Lists file `name`, which something else wrote into [`CheckpointSave::dir`],
    /// in the save: records its length and checksum (and
    /// [`CheckpointSave::commit`] flushes it to disk).
    ///
    /// # Errors
    /// [`Error::Io`] when the file is missing or unreadable; [`Error::InvalidValue`]
    /// as for [`CheckpointSave::write`].
    ///
    /// ```
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-add-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = chainrule::io::CheckpointDir::try_lock(&root)?.unwrap();
    /// let mut save = dir.save()?;
    /// chainrule::io::write_atomic(&save.dir().join("params.bin"), b"1234")?;
    /// save.add("params.bin")?;
    /// assert!(save.add("missing.bin").is_err());
    /// save.commit()?;
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn add(&mut self, name: &str) -> Result<()> {
        self.check_new_name(name)?;
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(|e| io_error(&path, e))?;
        let (bytes, sha) = hash_file(&path, file)?;
        fault_point("after listing", name);
        self.files.insert(name.to_string(), (bytes, sha));
        Ok(())
    }

    /// Makes the save the checkpoint: writes `manifest.json`, flushes the save's
    /// files and folder, points the `checkpoint` link at it (one atomic rename),
    /// flushes the folder that holds it, and removes the previous save.
    ///
    /// # Errors
    /// [`Error::Io`] when a write, flush, link or rename fails; the previous
    /// checkpoint is then still the checkpoint, unless the rename had happened.
    ///
    /// ```
    /// use chainrule::io::{CheckpointDir, SavedCheckpoint};
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-commit-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// for epoch in 1..=3 {
    ///     let mut save = dir.save()?;
    ///     save.write("epoch.txt", epoch.to_string().as_bytes())?;
    ///     save.commit()?;
    /// }
    /// let saved = SavedCheckpoint::open(&root)?.unwrap();
    /// assert_eq!(std::fs::read_to_string(saved.file("epoch.txt")?).unwrap(), "3");
    /// // The folder holds the link and the one save it names, nothing older.
    /// assert_eq!(std::fs::read_dir(&root).unwrap().count(), 2);
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn commit(mut self) -> Result<()> {
        let files: Vec<serde_json::Value> = self
            .files
            .iter()
            .map(|(name, (bytes, sha))| serde_json::json!({"name": name, "bytes": bytes, "sha256": sha}))
            .collect();
        let manifest = serde_json::json!({"format": FORMAT, "files": files});
        let text = serde_json::to_string_pretty(&manifest).map_err(|e| io_error(&self.dir, e))?;
        self.write_file(MANIFEST, text.as_bytes())?;

        fault_point("flush the save's files", &self.name);
        for name in self.files.keys().map(String::as_str).chain([MANIFEST]) {
            let path = self.dir.join(name);
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io_error(&path, e))?;
        }
        fault_point("flush the save's folder", &self.name);
        sync_folder(&self.dir)?;
        let root = self.folder.root.clone();
        let temp = root.join(LINK_TEMP);
        fault_point("make the new link", LINK_TEMP);
        symlink(&self.name, &temp).map_err(|e| io_error(&temp, e))?;
        let link = root.join(LINK);
        fault_point("rename the new link over the old", LINK);
        if let Err(e) = std::fs::rename(&temp, &link) {
            let _ = std::fs::remove_file(&temp);
            return Err(io_error(&link, e));
        }
        self.committed = true;
        fault_point("flush the folder", LINK);
        sync_folder(&root)?;
        if let Some(previous) = &self.previous {
            fault_point("remove the previous save", previous);
            remove(&root.join(previous))?;
        }
        Ok(())
    }

    fn check_new_name(&self, name: &str) -> Result<()> {
        if !is_plain_name(name) || name == MANIFEST {
            return Err(crate::error::invalid(
                name,
                "not a plain file name for a checkpoint (manifest.json is the save's own)",
            ));
        }
        if self.files.contains_key(name) {
            return Err(crate::error::invalid(name, "is in the save already"));
        }
        Ok(())
    }

    /// Creates file `name` in the save's folder with `bytes`. The fault point in the
    /// middle leaves a half-written file, as a crash there would.
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let path = self.dir.join(name);
        let (first, rest) = bytes.split_at(bytes.len() / 2);
        fault_point("create", name);
        let write = || -> std::io::Result<()> {
            let mut file = File::create_new(&path)?;
            file.write_all(first)?;
            fault_point("write the second half of", name);
            file.write_all(rest)
        };
        write().map_err(|e| io_error(&path, e))
    }
}

impl Drop for CheckpointSave<'_> {
    fn drop(&mut self) {
        // A save that failed part-way: its folder is useless, and the checkpoint
        // is still the previous one. (After a crash instead, the next save removes
        // it.)
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A complete checkpoint, checked against its manifest.
///
/// ```
/// use chainrule::io::SavedCheckpoint;
/// // A folder no save was ever completed in holds no checkpoint.
/// let empty = std::env::temp_dir();
/// # let empty = empty.join(format!("chainrule-doc-none-{}", std::process::id()));
/// # std::fs::create_dir_all(&empty).unwrap();
/// assert!(SavedCheckpoint::open(&empty)?.is_none());
/// # std::fs::remove_dir_all(&empty).unwrap();
/// # Ok::<(), chainrule::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SavedCheckpoint {
    dir: PathBuf,
    files: BTreeMap<String, u64>,
}

impl SavedCheckpoint {
    /// The checkpoint of folder `root`, after checking that every file its manifest
    /// lists is there, a regular file, of that length and that SHA-256; `Ok(None)`
    /// when `root` has no `checkpoint` (no save was ever completed in it). Files are
    /// read in pieces: nothing is sized by what a file declares.
    ///
    /// # Errors
    /// [`Error::Format`] naming the file that disagrees: a link that does not name a
    /// save folder in `root`, a missing or malformed manifest, a missing file, a
    /// length or checksum other than the manifest's; [`Error::Io`] when a file
    /// cannot be read.
    ///
    /// ```
    /// use chainrule::io::{CheckpointDir, SavedCheckpoint};
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-open-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// let mut save = dir.save()?;
    /// save.write("state.json", br#"{"epoch": 2}"#)?;
    /// save.commit()?;
    /// let saved = SavedCheckpoint::open(&root)?.unwrap();
    /// // A file changed after the save is named.
    /// std::fs::write(saved.file("state.json")?, br#"{"epoch": 4}"#).unwrap();
    /// let err = SavedCheckpoint::open(&root).unwrap_err().to_string();
    /// assert!(err.contains("state.json: its SHA-256 differs from manifest.json's"), "{err}");
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn open(root: &Path) -> Result<Option<SavedCheckpoint>> {
        let Some(name) = current_save(root)? else {
            return Ok(None);
        };
        let link = root.join(LINK);
        let dir = root.join(&name);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Err(format_error(&link, format!("names {name}, not a folder"))),
            Err(_) => {
                return Err(format_error(
                    &link,
                    format!("names {name}, which is missing"),
                ));
            }
        }
        let manifest_path = dir.join(MANIFEST);
        let text = super::read_text(&manifest_path)?;
        let files = parse_manifest(&manifest_path, &text)?;
        for (file, (bytes, sha)) in &files {
            let path = dir.join(file);
            let meta = std::fs::symlink_metadata(&path)
                .map_err(|_| format_error(&path, "missing, but manifest.json lists it"))?;
            if !meta.is_file() {
                return Err(format_error(&path, "not a regular file"));
            }
            if meta.len() != *bytes {
                return Err(format_error(
                    &path,
                    format!(
                        "{} bytes, but manifest.json says {bytes}: the checkpoint is torn or was changed",
                        meta.len()
                    ),
                ));
            }
            let file = File::open(&path).map_err(|e| io_error(&path, e))?;
            let (read, actual) = hash_file(&path, file)?;
            if read != *bytes || actual != *sha {
                return Err(format_error(
                    &path,
                    "its SHA-256 differs from manifest.json's: the file was changed or damaged after the save",
                ));
            }
        }
        Ok(Some(SavedCheckpoint {
            dir,
            files: files
                .into_iter()
                .map(|(k, (bytes, _))| (k, bytes))
                .collect(),
        }))
    }

    /// The save's folder (the one `checkpoint` names).
    ///
    /// ```
    /// use chainrule::io::{CheckpointDir, SavedCheckpoint};
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-sdir-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// dir.save()?.commit()?;
    /// assert!(SavedCheckpoint::open(&root)?.unwrap().dir().join("manifest.json").is_file());
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the checkpoint holds file `name`.
    ///
    /// ```
    /// use chainrule::io::{CheckpointDir, SavedCheckpoint};
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-has-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// let mut save = dir.save()?;
    /// save.write("a", b"")?;
    /// save.commit()?;
    /// let saved = SavedCheckpoint::open(&root)?.unwrap();
    /// assert!(saved.contains("a") && !saved.contains("b"));
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.files.contains_key(name)
    }

    /// The path of file `name` of the checkpoint.
    ///
    /// # Errors
    /// [`Error::Format`] when the manifest does not list `name`.
    ///
    /// ```
    /// use chainrule::io::{CheckpointDir, SavedCheckpoint};
    /// # let root = std::env::temp_dir().join(format!("chainrule-doc-file-{}", std::process::id()));
    /// # std::fs::create_dir_all(&root).unwrap();
    /// let mut dir = CheckpointDir::try_lock(&root)?.unwrap();
    /// dir.save()?.commit()?;
    /// let err = SavedCheckpoint::open(&root)?.unwrap().file("state.json").unwrap_err();
    /// assert!(err.to_string().ends_with("state.json: not in the checkpoint (manifest.json does not list it)"));
    /// # std::fs::remove_dir_all(&root).unwrap();
    /// # Ok::<(), chainrule::Error>(())
    /// ```
    pub fn file(&self, name: &str) -> Result<PathBuf> {
        let path = self.dir.join(name);
        if !self.contains(name) {
            return Err(format_error(
                &path,
                "not in the checkpoint (manifest.json does not list it)",
            ));
        }
        Ok(path)
    }
}

/// The save folder that `root/checkpoint` names, `None` when there is no link.
fn current_save(root: &Path) -> Result<Option<String>> {
    let link = root.join(LINK);
    match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&link, e)),
        Ok(meta) if !meta.file_type().is_symlink() => {
            return Err(format_error(
                &link,
                "not a link to a save folder (it is not what chainrule writes)",
            ));
        }
        Ok(_) => {}
    }
    let target = std::fs::read_link(&link).map_err(|e| io_error(&link, e))?;
    // Only a save folder beside the link: never follow a link out of the folder.
    let name = target
        .to_str()
        .filter(|t| is_plain_name(t) && t.starts_with(SAVE_PREFIX));
    match name {
        Some(name) => Ok(Some(name.to_string())),
        None => Err(format_error(
            &link,
            format!(
                "names {}, which is not a save folder beside it",
                target.display()
            ),
        )),
    }
}

/// The number in a save folder's name.
fn save_number(name: &str) -> Option<u64> {
    name.strip_prefix(SAVE_PREFIX)?.parse().ok()
}

/// A name that stays inside its folder: one normal path component.
fn is_plain_name(name: &str) -> bool {
    let mut parts = Path::new(name).components();
    matches!(parts.next(), Some(Component::Normal(_))) && parts.next().is_none()
}

/// Parses a manifest: the files by name, with their lengths and checksums.
fn parse_manifest(path: &Path, text: &str) -> Result<BTreeMap<String, (u64, String)>> {
    let bad = |message: &str| format_error(path, message);
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| format_error(path, e))?;
    if value.get("format").and_then(|f| f.as_str()) != Some(FORMAT) {
        return Err(bad(&format!("format: expected {FORMAT:?}")));
    }
    let entries = value
        .get("files")
        .and_then(|f| f.as_array())
        .ok_or_else(|| bad("files: expected a list"))?;
    let mut files = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let name = entry.get("name").and_then(|n| n.as_str());
        let bytes = entry.get("bytes").and_then(|b| b.as_u64());
        let sha = entry.get("sha256").and_then(|s| s.as_str());
        let (Some(name), Some(bytes), Some(sha)) = (name, bytes, sha) else {
            return Err(bad(&format!("files[{i}]: expected name, bytes and sha256")));
        };
        if !is_plain_name(name) || name == MANIFEST {
            return Err(bad(&format!(
                "files[{i}]: {name:?} is not a file of the save"
            )));
        }
        if files
            .insert(name.to_string(), (bytes, sha.to_string()))
            .is_some()
        {
            return Err(bad(&format!("files[{i}]: {name} is listed twice")));
        }
    }
    Ok(files)
}

/// The length and SHA-256 (hex) of what `file` holds, read in pieces.
fn hash_file(path: &Path, mut file: File) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 16];
    let mut total = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(|e| io_error(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        total += n as u64;
    }
    Ok((total, hex(&hasher.finalize())))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn format_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::Format {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Flushes a folder's entries (the names of the files in it) to disk.
fn sync_folder(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| io_error(dir, e))
}

/// Removes a file, link or folder (not what a link names).
fn remove(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(path, e)),
    };
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .map_err(|e| io_error(path, e))
}

#[cfg(unix)]
fn symlink(target: &str, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(not(unix))]
fn symlink(_target: &str, _link: &Path) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "checkpoints need symbolic links (a Unix file system)",
    ))
}

/// With the `fault-injection` feature: aborts the process at the k-th call, when
/// `CHAINRULE_TEST_ABORT_AT=k`, saying where on stderr (a crash test's kill point).
#[cfg(feature = "fault-injection")]
fn fault_point(step: &str, file: &str) {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static AT: OnceLock<Option<u64>> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let at = AT.get_or_init(|| {
        std::env::var("CHAINRULE_TEST_ABORT_AT")
            .ok()
            .and_then(|v| v.parse().ok())
    });
    let count = COUNT.fetch_add(1, Ordering::SeqCst) + 1;
    if *at == Some(count) {
        eprintln!("chainrule: CHAINRULE_TEST_ABORT_AT={count}: aborting before: {step} {file}");
        std::process::abort();
    }
}

#[cfg(not(feature = "fault-injection"))]
fn fault_point(_step: &str, _file: &str) {}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("chainrule-ckdir-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn save(dir: &mut CheckpointDir, files: &[(&str, &[u8])]) {
        let mut save = dir.save().unwrap();
        for (name, bytes) in files {
            save.write(name, bytes).unwrap();
        }
        save.commit().unwrap();
    }

    #[test]
    fn a_save_left_half_done_by_a_crash_is_ignored_then_removed() {
        let root = scratch("leftover");
        let mut dir = CheckpointDir::try_lock(&root).unwrap().unwrap();
        save(&mut dir, &[("a", b"1")]);
        // What a crash inside the next save leaves: its folder, and a new link not
        // yet renamed.
        std::fs::create_dir(root.join(".checkpoint-000002")).unwrap();
        std::fs::write(root.join(".checkpoint-000002/a"), b"2 but cut").unwrap();
        symlink(".checkpoint-000002", &root.join(LINK_TEMP)).unwrap();
        let saved = SavedCheckpoint::open(&root).unwrap().unwrap();
        assert_eq!(std::fs::read(saved.file("a").unwrap()).unwrap(), b"1");
        save(&mut dir, &[("a", b"3")]);
        let mut names: Vec<String> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, [".checkpoint-000002", "checkpoint"]);
        let saved = SavedCheckpoint::open(&root).unwrap().unwrap();
        assert_eq!(std::fs::read(saved.file("a").unwrap()).unwrap(), b"3");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_link_out_of_the_folder_is_refused_not_followed() {
        let root = scratch("escape");
        symlink("/etc", &root.join(LINK)).unwrap();
        let err = SavedCheckpoint::open(&root).unwrap_err().to_string();
        assert!(
            err.contains("names /etc, which is not a save folder"),
            "{err}"
        );
        std::fs::remove_file(root.join(LINK)).unwrap();
        symlink("../.checkpoint-000001", &root.join(LINK)).unwrap();
        assert!(SavedCheckpoint::open(&root).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_file_cut_short_or_missing_is_named() {
        let root = scratch("torn");
        let mut dir = CheckpointDir::try_lock(&root).unwrap().unwrap();
        save(&mut dir, &[("params", b"12345678"), ("state", b"{}")]);
        let saved = SavedCheckpoint::open(&root).unwrap().unwrap();
        let params = saved.file("params").unwrap();
        std::fs::write(&params, b"1234").unwrap();
        let err = SavedCheckpoint::open(&root).unwrap_err().to_string();
        assert!(
            err.ends_with(
                "params: 4 bytes, but manifest.json says 8: the checkpoint is torn or was changed"
            ),
            "{err}"
        );
        std::fs::remove_file(&params).unwrap();
        let err = SavedCheckpoint::open(&root).unwrap_err().to_string();
        assert!(
            err.ends_with("params: missing, but manifest.json lists it"),
            "{err}"
        );
        std::fs::remove_file(saved.dir().join(MANIFEST)).unwrap();
        let err = SavedCheckpoint::open(&root).unwrap_err().to_string();
        assert!(err.contains("manifest.json"), "{err}");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_save_numbers_on_from_the_current_one() {
        let root = scratch("numbers");
        let mut dir = CheckpointDir::try_lock(&root).unwrap().unwrap();
        save(&mut dir, &[]);
        save(&mut dir, &[]);
        assert_eq!(
            std::fs::read_link(root.join(LINK)).unwrap(),
            Path::new(".checkpoint-000002")
        );
        drop(dir);
        let mut again = CheckpointDir::try_lock(&root).unwrap().unwrap();
        save(&mut again, &[]);
        assert_eq!(current_save(&root).unwrap().unwrap(), ".checkpoint-000003");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
