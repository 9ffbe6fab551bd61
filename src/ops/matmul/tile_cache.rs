//! The matmul autotune's results on disk, so that a machine measures once
//! per adapter, driver and kernel version (`autotune.rs` makes the key).
//!
//! The file `matmul-tiles` lives in `WGRAD_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/wgrad`, else `~/.cache/wgrad`: a line per adapter,
//! `key<TAB>small<TAB>medium<TAB>large`, each tile as
//! `wx wy tm tn bk staging` (staging 0 none, 1 scalar, 2 vec4). A line that
//! does not parse, or names a tile that is not a candidate any more, is
//! ignored (that adapter measures again) and dropped at the next write. A
//! cache that cannot be read or written is never an error: the device
//! measures, and measures again next time.

use std::path::{Path, PathBuf};

use super::select::MatmulTiles;
use crate::ir::{Staging, WorkgroupTile};

/// Where the cache file is, from the environment (`None`: no home).
pub(super) fn path() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let dir = var("WGRAD_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("wgrad")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("wgrad")))?;
    Some(dir.join("matmul-tiles"))
}

fn parse(tile: &str) -> Option<WorkgroupTile> {
    let v: Vec<u32> = tile.split(' ').map(str::parse).collect::<Result<_, _>>().ok()?;
    let &[wx, wy, tm, tn, bk, staging] = v.as_slice() else { return None };
    let staging = [Staging::None, Staging::Scalar, Staging::Vec4].get(staging as usize).copied()?;
    let t = WorkgroupTile { wx, wy, tm, tn, bk, staging };
    WorkgroupTile::CANDIDATES.contains(&t).then_some(t)
}

fn format(t: WorkgroupTile) -> String {
    format!("{} {} {} {} {} {}", t.wx, t.wy, t.tm, t.tn, t.bk, t.staging as u32)
}

/// A line's key and tiles, if it is well formed.
fn parse_line(line: &str) -> Option<(&str, MatmulTiles)> {
    let f: Vec<&str> = line.split('\t').collect();
    let &[key, s, m, l] = f.as_slice() else { return None };
    Some((key, MatmulTiles { small: parse(s)?, medium: parse(m)?, large: parse(l)? }))
}

/// The tiles stored for `key` in the file at `path`.
pub(super) fn load(path: &Path, key: &str) -> Option<MatmulTiles> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().filter_map(parse_line).find(|(k, _)| *k == key).map(|(_, tiles)| tiles)
}

/// Stores `tiles` for `key` in the file at `path`, keeping the other
/// adapters' well-formed lines. Best effort: written whole to a temporary
/// file and renamed, so a reader never sees half a file; nothing is
/// reported if the directory cannot be made or written.
pub(super) fn store(path: &Path, key: &str, tiles: MatmulTiles) {
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut text: String =
        old.lines().filter(|l| parse_line(l).is_some_and(|(k, _)| k != key)).map(|l| format!("{l}\n")).collect();
    text += &format!("{key}\t{}\t{}\t{}\n", format(tiles.small), format(tiles.medium), format(tiles.large));
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let written = path.parent().is_some_and(|d| std::fs::create_dir_all(d).is_ok())
        && std::fs::write(&tmp, text).is_ok()
        && std::fs::rename(&tmp, path).is_ok();
    if !written {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::{MatmulTiles, load, store};
    use crate::ir::WorkgroupTile;

    /// A fresh directory for one test.
    fn dir(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("wgrad-tile-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    /// Three different tiles, one per size.
    fn tiles(i: usize) -> MatmulTiles {
        let c = WorkgroupTile::CANDIDATES;
        MatmulTiles { small: c[i % c.len()], medium: c[(i + 1) % c.len()], large: c[(i + 2) % c.len()] }
    }

    /// What is stored is what is loaded, for every candidate tile, and
    /// each key keeps its own tiles (another adapter, driver or kernel
    /// version — a different key — is not served this one's).
    #[test]
    fn stored_tiles_load_back_under_their_key_only() {
        let path = dir("round-trip").join("sub").join("matmul-tiles");
        assert_eq!(load(&path, "gpu A"), None, "no file yet");
        for i in 0..WorkgroupTile::CANDIDATES.len() {
            store(&path, &format!("gpu {i}"), tiles(i));
        }
        for i in 0..WorkgroupTile::CANDIDATES.len() {
            assert_eq!(load(&path, &format!("gpu {i}")), Some(tiles(i)), "key {i}");
        }
        assert_eq!(load(&path, "gpu 0 (another driver)"), None);
        // a key measured again replaces its line
        store(&path, "gpu 1", tiles(5));
        assert_eq!(load(&path, "gpu 1"), Some(tiles(5)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().filter(|l| l.starts_with("gpu 1\t")).count(), 1);
    }

    /// A corrupt file, or a line naming a tile that is no candidate (a
    /// cache from another version), is ignored, and the next store drops
    /// what does not parse while keeping the other well-formed lines.
    #[test]
    fn corrupt_or_stale_lines_are_ignored_and_rewritten() {
        let path = dir("corrupt").join("matmul-tiles");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let good = format!("other gpu\t{}", super::format(WorkgroupTile::DEFAULT));
        let good =
            format!("{good}\t{}\t{}", super::format(WorkgroupTile::DEFAULT), super::format(WorkgroupTile::DEFAULT));
        let garbage = [
            "gpu\t16 16 4 4 1 0\t8 8",                        // too few tiles
            "gpu\t16 16 4 4 1 0\t8 8 4 4 1 0\t16 16 4 4 1 9", // no staging 9
            "gpu\t7 7 7 7 7 0\t7 7 7 7 7 0\t7 7 7 7 7 0",     // no such candidate
            "\u{0}\u{ff}gpu",
        ];
        std::fs::write(&path, format!("{}\n{good}\n", garbage.join("\n"))).unwrap();
        assert_eq!(load(&path, "gpu"), None);
        assert_eq!(load(&path, "other gpu"), Some(MatmulTiles::uniform(WorkgroupTile::DEFAULT)));
        std::fs::write(&path, [0xffu8, 0xfe, 0x00, 0x80]).unwrap(); // not even text
        assert_eq!(load(&path, "gpu"), None);
        std::fs::write(&path, format!("{}\n{good}\n", garbage.join("\n"))).unwrap();
        store(&path, "gpu", tiles(3));
        assert_eq!(load(&path, "gpu"), Some(tiles(3)));
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().collect::<Vec<_>>().len(), 2, "garbage dropped, the other line kept:\n{text}");
        assert!(text.contains(&good));
    }

    /// A cache that cannot be written (its directory is a file) is no
    /// error: storing does nothing, loading finds nothing.
    #[test]
    fn an_unwritable_cache_is_not_an_error() {
        let d = dir("unwritable");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("file"), "not a directory").unwrap();
        let path = d.join("file").join("matmul-tiles");
        store(&path, "gpu", tiles(0));
        assert_eq!(load(&path, "gpu"), None);
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 1, "no temporary file left behind");
    }
}
