//! `ioplex plugin keygen` and `ioplex plugin compile`: the build machine's side of precompiled plugins,
//! which nodes without a compiler (the edge build) serve.

use std::io::Write as _;
use std::path::Path;
use std::time::Instant;

use anyhow::Context as _;
use ioplex::plugin::{PRECOMPILED_EXTENSION, SigningKey, TrustedKeys};

use super::plugin_check::{checking_runtime, read_manifest};

/// `ioplex plugin keygen FILE`: a new signing key in FILE (never overwriting one), its public half
/// printed for the nodes' `--plugin-trusted-keys`.
pub fn keygen(file: &Path) -> anyhow::Result<bool> {
    let (key, text) = SigningKey::generate()?;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut out = options
        .open(file)
        .with_context(|| format!("cannot create {}", file.display()))?;
    writeln!(out, "{text}").with_context(|| format!("cannot write {}", file.display()))?;
    println!(
        "signing key written to {} (keep it on the build machine)",
        file.display()
    );
    println!(
        "public key (give it to nodes as --plugin-trusted-keys / IOPLEX_PLUGIN_TRUSTED_KEYS):"
    );
    println!("{}", key.public_key());
    Ok(true)
}

/// `ioplex plugin compile`: exit code 0 with the `.cwasm` written, 1 if the gateway would refuse the
/// component.
pub fn compile(
    file: &Path,
    manifest: Option<&Path>,
    signing_key: &Path,
    output: Option<&Path>,
) -> anyhow::Result<bool> {
    let key_text = std::fs::read_to_string(signing_key)
        .with_context(|| format!("cannot read the signing key {}", signing_key.display()))?;
    let key =
        SigningKey::from_text(&key_text).with_context(|| format!("{}", signing_key.display()))?;
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let manifest = read_manifest(file, manifest)?;
    let output = output.map_or_else(
        || file.with_extension(PRECOMPILED_EXTENSION),
        Path::to_path_buf,
    );
    let name = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let runtime = checking_runtime(TrustedKeys::default())?;
    let started = Instant::now();
    let (sealed, plugin) = match runtime.precompile(name, &bytes, manifest, &key) {
        Ok(done) => done,
        Err(err) => {
            println!("{}: refused: {err}", file.display());
            return Ok(false);
        }
    };
    write_atomically(&output, &sealed)?;
    let hooks: Vec<_> = plugin.hooks().iter().map(|h| h.name()).collect();
    println!("{}: ok", output.display());
    println!(
        "  from:     {} (sha256 {})",
        file.display(),
        plugin.sha256()
    );
    println!("  hooks:    {}", hooks.join(", "));
    println!("  signed:   {}", key.public_key());
    println!(
        "  size:     {} bytes, compiled and smoke-tested in {} ms",
        sealed.len(),
        started.elapsed().as_millis()
    );
    Ok(true)
}

/// Writes beside the target and renames over it, so a watching node never reads half a file.
fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("the output needs a file name")?;
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}
