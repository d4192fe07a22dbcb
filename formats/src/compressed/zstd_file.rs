//! zstd files: zstd's output is a function of its level, its frame flags and the pledged
//! size, so the level that reproduces the first blocks is tried on the whole file, and the
//! recompressed file's hash must equal the original's.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;

use super::{hash_file, stored, Analysis, Checked, Compression, Recipe};
use crate::error::{FormatError, Result};

/// Levels in the order they are tried: the CLI's default first, then the ones scripts
/// use (each costs a compression of the probe).
const LEVELS: [i32; 11] = [3, 1, 2, 4, 5, 6, 7, 8, 9, 12, 19];
/// Plain bytes compressed to compare a level's first output with the file's.
const PROBE: usize = 1 << 20;

/// Analyses the zstd file at `path`.
pub(super) fn analyse(path: &Path) -> Result<Analysis> {
    let name = path.display().to_string();
    let open = || File::open(path).map_err(|e| FormatError::io(&name, e));
    let mut head = [0u8; 5];
    open()?
        .read_exact(&mut head)
        .map_err(|e| FormatError::io(&name, e))?;
    let fhd = head[4];
    let checksum = fhd & 4 != 0;
    let content_size = fhd >> 6 != 0 || fhd & 0x20 != 0;
    if fhd & 3 != 0 {
        return stored(
            Compression::Zstd,
            path,
            "it was compressed with a dictionary".into(),
        );
    }
    let (size, blake3) = hash_file(path)?;
    let plain_size = {
        let mut d = Compression::Zstd.decoder(open()?)?;
        std::io::copy(&mut d, &mut std::io::sink()).map_err(|e| {
            FormatError::Invalid(format!(
                "{name}: not a readable zstd stream ({e}): is the file complete?"
            ))
        })?
    };
    let mut original = Vec::with_capacity(64 << 10);
    open()?
        .take(64 << 10)
        .read_to_end(&mut original)
        .map_err(|e| FormatError::io(&name, e))?;
    let mut probe = Vec::with_capacity(PROBE);
    Compression::Zstd
        .decoder(open()?)?
        .take(PROBE as u64)
        .read_to_end(&mut probe)
        .map_err(|e| FormatError::io(&name, e))?;
    for level in LEVELS {
        let mut recipe = Recipe {
            compression: Compression::Zstd,
            method: "zstd-level".into(),
            size,
            blake3: blake3.clone(),
            plain_size,
            header: String::new(),
            trailer: String::new(),
            level: Some(level),
            checksum,
            content_size,
        };
        // The first blocks, compared with the file's: cheap, and most levels differ there.
        // (A flush would end a block early: the blocks written so far are compared, or
        // the whole small file.)
        let mut first = Vec::new();
        {
            let mut e = rebuild(&recipe, &mut first)?;
            e.write_all(&probe)?;
            if probe.len() as u64 == plain_size {
                e.finish()?;
            }
        }
        // No output yet (a window larger than the probe) proves nothing: the level is
        // not tried on the whole file, which would cost a full compression each.
        let n = first.len().min(original.len());
        if n < 64 || first[..n] != original[..n] {
            continue;
        }
        // The whole file, hashed.
        let mut sink = std::io::sink();
        let mut h = Checked::new(&mut sink);
        {
            let mut e = rebuild(&recipe, &mut h)?;
            let mut d = Compression::Zstd.decoder(open()?)?;
            std::io::copy(&mut d, &mut e).map_err(|e| FormatError::io(&name, e))?;
            e.finish()?;
        }
        if h.done() == (size, blake3.clone()) {
            recipe.level = Some(level);
            return Ok(Analysis {
                recipe,
                record: Some(Vec::new()),
                why_stored: None,
            });
        }
    }
    stored(
        Compression::Zstd,
        path,
        "no zstd level recreates it (another zstd version, or several threads)".into(),
    )
}

/// A zstd encoder set as `recipe` says, writing to `out`.
pub(super) fn rebuild<W: Write>(
    recipe: &Recipe,
    out: W,
) -> Result<zstd::stream::write::Encoder<'static, W>> {
    let io = |e| FormatError::io("zstd encoder", e);
    let mut e = zstd::stream::write::Encoder::new(out, recipe.level.unwrap_or(3)).map_err(io)?;
    e.include_checksum(recipe.checksum).map_err(io)?;
    e.include_contentsize(recipe.content_size).map_err(io)?;
    if recipe.content_size {
        e.set_pledged_src_size(Some(recipe.plain_size))
            .map_err(io)?;
    }
    Ok(e)
}
