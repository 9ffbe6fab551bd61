//! The matmul's tile, chosen per adapter by measuring.
//!
//! Adapters that run the workgroup-tiled matmul (`codegen/matmul_tiled.rs`:
//! GPUs, the browser) time each candidate tile on three products when the
//! device opens — small (an MLP layer at batch 128), medium and large — and
//! keep the fastest for each size. The result is cached per adapter (and
//! per kernel source) in the process and, natively, in a file, so it is
//! measured once per machine. Every tile gives the same bits (see
//! `codegen/matmul_tiled.rs`), so the choice never changes a result, only its speed.
//!
//! `WGRAD_AUTOTUNE=off` skips the measurement (the shader's default tile
//! everywhere); `WGRAD_CACHE_DIR` moves the cache file (default
//! `$XDG_CACHE_HOME/wgrad` or `~/.cache/wgrad`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::select::{MatmulTiles, set_tiles};
use crate::error::Result;
use crate::ir::{MatmulVariant, Staging, WorkgroupTile};
use crate::runtime::Device;
use crate::tensor::Tensor;

/// The products measured, [m, k, n] per size (each within its size's range
/// of outputs), on GPUs and on CPU adapters (where large products would
/// make opening a device take seconds).
const GPU_PRODUCTS: [[usize; 3]; 3] = [[128, 784, 256], [512, 512, 512], [1024, 1024, 1024]];
const CPU_PRODUCTS: [[usize; 3]; 3] = [[128, 784, 256], [256, 256, 512], [1024, 64, 1024]];
const SIZES: [&str; 3] = ["small", "medium", "large"];

/// Tiles measured in this process, by adapter key.
static TUNED: Mutex<Option<HashMap<String, MatmulTiles>>> = Mutex::new(None);

/// Chooses the matmul tiles of `dev` (whose adapter runs the workgroup-
/// tiled kernel): from the caches, or by measuring. Returns what it did,
/// for [`Device::matmul_autotune`].
pub(crate) async fn tune(dev: &Device) -> Result<String> {
    if std::env::var("WGRAD_AUTOTUNE").is_ok_and(|v| v == "off" || v == "0") {
        let tiles = MatmulTiles::default_for(&dev.inner.info);
        set_tiles(&dev.inner, Some(tiles));
        return Ok(format!("matmul tiles: {} everywhere (WGRAD_AUTOTUNE=off)", tiles.small));
    }
    let key = adapter_key(&dev.inner.info);
    let cached = TUNED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default().get(&key).copied();
    let file = disk::path();
    let (tiles, how) = match cached.or_else(|| file.as_deref().and_then(|f| disk::load(f, &key))) {
        Some(tiles) => (tiles, "from the cache".to_string()),
        None => {
            let (tiles, table) = measure(dev).await?;
            if let Some(f) = &file {
                disk::store(f, &key, tiles);
            }
            (tiles, table)
        }
    };
    TUNED.lock().unwrap_or_else(|p| p.into_inner()).get_or_insert_default().insert(key, tiles);
    set_tiles(&dev.inner, Some(tiles));
    Ok(format!("matmul tiles: small products {}, medium {}, large {} ({how})", tiles.small, tiles.medium, tiles.large))
}

/// Times every candidate tile that fits the adapter on each size's product
/// (the best of a few blocks of runs submitted together) and keeps the
/// fastest; CPU adapters only the unstaged tiles.
/// Returns the tiles and a table of the times.
async fn measure(dev: &Device) -> Result<(MatmulTiles, String)> {
    let gpu = !dev.inner.cpu_adapter();
    let products = if gpu { GPU_PRODUCTS } else { CPU_PRODUCTS };
    let candidates: Vec<WorkgroupTile> = WorkgroupTile::CANDIDATES
        .into_iter()
        .filter(|t| t.fits(&dev.inner.limits) && (gpu || t.staging == Staging::None))
        .collect();
    let mut best = MatmulTiles::default_for(&dev.inner.info);
    let mut table = String::from("measured, ms per product:");
    let start = now_ms();
    for (size, [m, k, n]) in products.into_iter().enumerate() {
        let a = Tensor::zeros(dev, &[m, k]);
        let b = Tensor::zeros(dev, &[k, n]);
        table += &format!("\n  {} {m}×{k}·{k}×{n}", SIZES[size]);
        let mut fastest = f64::INFINITY;
        for &tile in &candidates {
            set_tiles(&dev.inner, Some(MatmulTiles::uniform(tile)));
            drop(a.matmul(&b)); // builds the pipeline
            dev.sync_async().await?;
            let t = now_ms();
            drop(a.matmul(&b));
            dev.sync_async().await?;
            let mut ms = now_ms() - t;
            // runs per block: a block of ~2 ms where the products are fast;
            // one block more where they are slow (CPU adapters, where the
            // device opens meanwhile)
            let reps = (2.0 / ms).ceil().clamp(1.0, 8.0) as usize;
            let blocks = if ms > 10.0 { 1 } else { 3 };
            for _ in 0..blocks {
                let t = now_ms();
                for _ in 0..reps {
                    drop(a.matmul(&b));
                }
                dev.sync_async().await?;
                ms = ms.min((now_ms() - t) / reps as f64);
            }
            table += &format!("\n    {tile}: {ms:.3}");
            if ms < fastest {
                fastest = ms;
                *best.get(size) = tile;
            }
        }
    }
    table += &format!("\n  in {:.2} s", (now_ms() - start) / 1e3);
    dev.trim_pool();
    dev.inner.reset_counters();
    Ok((best, table))
}

/// Identifies an adapter, the kernel's source and the candidate tiles: a
/// new driver, a changed kernel or a new candidate measures again.
fn adapter_key(info: &wgpu::AdapterInfo) -> String {
    // FNV-1a: stable across builds, unlike std's hasher
    let mut source = crate::codegen::matmul_source(MatmulVariant::Workgroup(WorkgroupTile::DEFAULT), None, None);
    source += &format!("{:?}", WorkgroupTile::CANDIDATES);
    let hash = source.bytes().fold(0xcbf29ce484222325u64, |h, b| (h ^ b as u64).wrapping_mul(0x100000001b3));
    let key = format!(
        "{:?} {} ({} {}) {:04x}:{:04x} kernel {hash:016x}",
        info.backend, info.name, info.driver, info.driver_info, info.vendor, info.device
    );
    key.replace(['\t', '\n'], " ")
}

#[cfg(not(target_arch = "wasm32"))]
fn now_ms() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_secs_f64() * 1e3
}

#[cfg(target_arch = "wasm32")]
fn now_ms() -> f64 {
    use js_sys::Reflect;
    let performance = Reflect::get(&js_sys::global(), &"performance".into());
    let now =
        performance.and_then(|p| Reflect::get(&p, &"now".into()).and_then(|f| js_sys::Function::from(f).call0(&p)));
    now.ok().and_then(|v| v.as_f64()).unwrap_or_else(js_sys::Date::now)
}

/// In the browser the tiles are measured once per page.
#[cfg(target_arch = "wasm32")]
mod disk {
    use super::MatmulTiles;

    pub(super) fn path() -> Option<std::path::PathBuf> {
        None
    }

    pub(super) fn load(_path: &std::path::Path, _key: &str) -> Option<MatmulTiles> {
        None
    }

    pub(super) fn store(_path: &std::path::Path, _key: &str, _tiles: MatmulTiles) {}
}

#[cfg(not(target_arch = "wasm32"))]
use super::tile_cache as disk;

#[cfg(test)]
mod tests {
    use super::MatmulTiles;
    use super::set_tiles;
    use crate::ir::{Staging, WorkgroupTile};
    use crate::{Device, Tensor};

    /// A deterministic operand in [−1, 1).
    fn operand(seed: u64, shape: &[usize]) -> Vec<f32> {
        let n: usize = shape.iter().product();
        let mut s = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Candidate tiles to test on `dev`: all that fit, the staged ones too
    /// (on lavapipe's Vulkan: a GPU's tiles), but on GL, where llvmpipe
    /// takes 20–40 s to compile a kernel with a barrier (the autotune offers
    /// CPU adapters none).
    fn tiles_to_test(dev: &Device) -> impl Iterator<Item = WorkgroupTile> + '_ {
        let gl = dev.adapter_info().backend == wgpu::Backend::Gl;
        WorkgroupTile::CANDIDATES
            .into_iter()
            .filter(move |t| t.fits(&dev.inner.limits) && !(gl && t.staging != Staging::None))
    }

    /// A convolution's three products (forward, input and weight gradients;
    /// strides, padding, dilation and groups) give the same bits in every
    /// tile, within the rounding bound of their sums of what the device's
    /// default kernel gives (which `tests/nn.rs` checks against an f64
    /// reference).
    #[test]
    fn every_tile_convolves_to_the_same_bits() {
        let dev = Device::new().unwrap();
        let opts = crate::nn::ConvOptions { stride: (2, 1), padding: (1, 2), dilation: (1, 2), groups: 2 };
        let x = Tensor::from_slice(&dev, &operand(1, &[3, 4, 9, 8]), &[3, 4, 9, 8]);
        let w = Tensor::from_slice(&dev, &operand(2, &[6, 2, 3, 3]), &[6, 2, 3, 3]);
        let v = Tensor::from_slice(&dev, &operand(3, &[3, 6, 5, 8]), &[3, 6, 5, 8]);
        let run = |x: &Tensor, w: &Tensor, v: &Tensor| -> Vec<f32> {
            let f = |p: &Vec<Tensor>, v: &Tensor| (crate::nn::conv2d(&p[0], &p[1], None, opts) * v).sum_all();
            let (g, _, ()) = crate::grad(f)(&vec![x.clone(), w.clone()], v);
            let y = crate::nn::conv2d(x, w, None, opts);
            [y, g[0].clone(), g[1].clone()].iter().flat_map(|t| t.to_vec::<f32>().unwrap()).collect()
        };
        let want = run(&x, &w, &v);
        // each value is a sum of at most 3·5·8 products (the weight
        // gradient's): two roundings of that many FMAs apart at most
        let size = run(&x.abs(), &w.abs(), &v.abs());
        let mut first: Option<(WorkgroupTile, Vec<f32>)> = None;
        for tile in tiles_to_test(&dev) {
            set_tiles(&dev.inner, Some(MatmulTiles::uniform(tile)));
            let got = run(&x, &w, &v);
            for (o, ((g, w), s)) in got.iter().zip(&want).zip(&size).enumerate() {
                let bound = 2.0 * 121.0 * f32::EPSILON / 2.0 * s;
                assert!((g - w).abs() <= bound, "tile {tile}: value {o} = {g}, expected {w} ± {bound}");
            }
            match &first {
                None => first = Some((tile, got)),
                Some((t0, bits)) => {
                    let same = bits.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(same, "tile {tile}: not the bits of tile {t0}");
                }
            }
        }
    }

    /// Every candidate tile computes each product within the rounding bound
    /// of k sequential FMAs of an f64 reference, and all give the same bits:
    /// edge tiles, transposed views, broadcast batches, a k split into
    /// slices.
    #[test]
    fn every_tile_gives_the_same_bits() {
        let dev = Device::new().unwrap();
        // [batch, m, k, n], A stored transposed?, B stored transposed?
        #[rustfmt::skip]
        let cases: &[([usize; 4], bool, bool)] = &[
            ([1, 1, 1, 1], false, false), ([1, 37, 53, 71], false, false), ([1, 130, 300, 67], true, false),
            ([1, 70, 40, 129], false, true), ([3, 9, 20, 11], false, false), ([1, 5, 1100, 6], false, false),
        ];
        for &([nb, m, k, n], at, bt) in cases {
            let (av, bv) = (operand(m as u64, &[nb, m, k]), operand(n as u64, &[k, n]));
            // reference, and the rounding bound of k FMAs: (k + 1)·u·Σ|a||b|, u = 2⁻²⁴
            let mut want = vec![(0.0f64, 0.0f64); nb * m * n];
            for (o, w) in want.iter_mut().enumerate() {
                let (bi, i, j) = (o / (m * n), o / n % m, o % n);
                for q in 0..k {
                    let x = av[(bi * m + i) * k + q] as f64 * bv[q * n + j] as f64;
                    *w = (w.0 + x, w.1 + x.abs());
                }
            }
            let a = match at {
                // stored [k, m] per batch, read through a transposed view
                true => {
                    let mut t = vec![0.0; nb * m * k];
                    for (o, v) in av.iter().enumerate() {
                        let (bi, i, q) = (o / (m * k), o / k % m, o % k);
                        t[(bi * k + q) * m + i] = *v;
                    }
                    Tensor::from_slice(&dev, &t, &[nb, k, m]).transpose(1, 2)
                }
                false => Tensor::from_slice(&dev, &av, &[nb, m, k]),
            };
            let b = match bt {
                true => {
                    let t: Vec<f32> = (0..k * n).map(|o| bv[(o % k) * n + o / k]).collect();
                    Tensor::from_slice(&dev, &t, &[n, k]).t()
                }
                false => Tensor::from_slice(&dev, &bv, &[k, n]),
            };
            let mut first: Option<(WorkgroupTile, Vec<f32>)> = None;
            for tile in tiles_to_test(&dev) {
                set_tiles(&dev.inner, Some(MatmulTiles::uniform(tile)));
                let got: Vec<f32> = a.matmul(&b).to_vec().unwrap();
                let case = format!("{nb}×[{m}, {k}]·[{k}, {n}] (A transposed: {at}, B: {bt}), tile {tile}");
                for (o, (g, (w, s))) in got.iter().zip(&want).enumerate() {
                    let bound = (k as f64 + 1.0) * (f32::EPSILON as f64 / 2.0) * s;
                    assert!((*g as f64 - w).abs() <= bound, "{case}: element {o} = {g}, expected {w} ± {bound}");
                }
                match &first {
                    None => first = Some((tile, got)),
                    Some((t0, bits)) => {
                        let same = bits.iter().zip(&got).all(|(x, y)| x.to_bits() == y.to_bits());
                        assert!(same, "{case}: not the bits of tile {t0}");
                    }
                }
            }
        }
    }
}
