//! Errors the GPU detects, reported at the next read-back or sync with the
//! op and the caller's line:
//! - always: out-of-range indices (gather, index_select, embedding,
//!   one_hot, scatter_add, class targets), flagged by the kernels;
//! - in debug mode: NaN and ±Inf in any op's f32 output, naming the first
//!   op that produced one and, for gradients, the forward op whose backward
//!   pass it belongs to.
//!
//! Kernels record a *tag* (an index into the sites below) with `atomicMin`
//! in a small flag buffer: word 0 for non-finite values, word 1 for indices.

use std::cell::Cell;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytemuck::{Pod, Zeroable};

use super::pool::{BufferClass, Storage};
use super::shaders::{Kernel, Shader};
use super::{Device, DeviceInner};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::shape::{Layout, MAX_RANK, coalesce, pack, pack_divisors};

/// Where an op was recorded: its name and the caller's line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    pub op: &'static str,
    pub location: &'static Location<'static>,
}

thread_local! {
    /// While a VJP or JVP rule runs: the pass ("backward pass", "tangent")
    /// and the op it differentiates.
    static DERIVATIVE_OF: Cell<Option<Derivative>> = const { Cell::new(None) };
    /// While a primitive's forward kernels are recorded: that primitive.
    static CURRENT: Cell<Option<Site>> = const { Cell::new(None) };
}

/// Runs `f` (a primitive's forward) with `site` as the op being recorded.
pub(crate) fn recording<R>(site: Site, f: impl FnOnce() -> R) -> R {
    let previous = CURRENT.with(|c| c.replace(Some(site)));
    let r = f();
    CURRENT.with(|c| c.set(previous));
    r
}

/// The op being recorded on this thread, if any.
pub(crate) fn current_site() -> Option<Site> {
    CURRENT.with(Cell::get)
}

/// Which derivative of which op a kernel computes, for messages.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Derivative {
    /// "backward pass" (a VJP rule) or "tangent" (a JVP rule).
    pub pass: &'static str,
    pub of: Site,
}

/// Runs `f` (a VJP or JVP rule) noting that its ops compute `pass` of `forward`.
pub(crate) fn in_derivative_of<R>(pass: &'static str, forward: Site, f: impl FnOnce() -> R) -> R {
    let previous = DERIVATIVE_OF.with(|b| b.replace(Some(Derivative { pass, of: forward })));
    let r = f();
    DERIVATIVE_OF.with(|b| b.set(previous));
    r
}

/// A site as a map key: its op, its location's address and, for the ops of
/// a derivative rule, the pass and the forward op's location.
type SiteKey = (&'static str, usize, Option<(&'static str, usize)>);

/// The flag buffer and the sites its tags name.
#[derive(Default)]
pub(crate) struct Checks {
    flag: Option<Arc<Storage>>,
    sites: Vec<(Site, Option<Derivative>)>,
    /// Tags of the sites already registered (by op and call site).
    known: std::collections::HashMap<SiteKey, u32>,
    /// A kernel that may set the index flag ran since the last check.
    pub indices_pending: bool,
}

impl Checks {
    fn flag(&mut self, dev: &Arc<DeviceInner>) -> Arc<Storage> {
        self.flag
            .get_or_insert_with(|| {
                let f = dev.alloc_new(BufferClass::Storage, 8);
                let _turn = dev.gl_turn();
                dev.queue.write_buffer(f.buffer(), 0, bytemuck::cast_slice(&[CLEAR, CLEAR]));
                f
            })
            .clone()
    }

    fn tag(&mut self, site: Site, derivative_of: Option<Derivative>) -> u32 {
        let key: SiteKey = (
            site.op,
            site.location as *const _ as usize,
            derivative_of.map(|d| (d.pass, d.of.location as *const _ as usize)),
        );
        let next = self.sites.len() as u32;
        let tag = *self.known.entry(key).or_insert(next);
        if tag == next {
            self.sites.push((site, derivative_of));
        }
        tag
    }
}

impl DeviceInner {
    /// The flag buffer and the tag of the op being recorded, for a kernel
    /// that validates its indices.
    pub(crate) fn index_check(self: &Arc<Self>) -> (Arc<Storage>, u32) {
        let site = CURRENT.with(Cell::get).unwrap_or(Site { op: "index op", location: Location::caller() });
        let mut c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let flag = c.flag(self);
        let tag = c.tag(site, DERIVATIVE_OF.with(Cell::get));
        c.indices_pending = true;
        (flag, tag)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct CheckParams {
    numel: u32,
    rank: u32,
    offset: u32,
    tag: u32,
    shape: [u32; MAX_RANK],
    strides: [u32; MAX_RANK],
    magic: [u32; MAX_RANK],
    shift: [u32; MAX_RANK],
}

const CLEAR: u32 = u32::MAX;

impl Device {
    /// Debug mode: after every op, check its f32 output for NaN and ±Inf on
    /// the GPU. The next read-back or sync then returns
    /// [`Error::NonFinite`] naming the first op (in recording order) that
    /// produced one, with the caller's line. Slows everything down; off by
    /// default.
    pub fn set_check_finite(&self, on: bool) {
        self.inner.check_finite.store(on, Ordering::Relaxed);
    }
}

impl DeviceInner {
    /// Records the check of an op's output (`storage` viewed as `layout`)
    /// if debug checks are on.
    pub(crate) fn check_finite_after(
        self: &Arc<Self>,
        storage: &Arc<Storage>,
        layout: &Layout,
        dtype: DType,
        site: Site,
    ) {
        let numel = layout.numel();
        if !self.check_finite.load(Ordering::Relaxed) || dtype != DType::F32 || numel == 0 {
            return;
        }
        let (flag, tag) = {
            let mut c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
            let flag = c.flag(self);
            (flag, c.tag(site, DERIVATIVE_OF.with(Cell::get)))
        };
        let mut strides = vec![layout.strides.clone()];
        let dims = coalesce(&layout.shape, &mut strides);
        if dims.len() > MAX_RANK {
            return; // a view, not a new value: its values were checked when they were made
        }
        let (magic, shift) = pack_divisors(&dims);
        let params = CheckParams {
            numel: numel as u32,
            rank: dims.len() as u32,
            offset: layout.offset as u32,
            tag,
            shape: pack(&dims),
            strides: pack(&strides[0]),
            magic,
            shift,
        };
        let kernel = Kernel::new(Shader::Check, "check_finite");
        let groups = super::grid(numel.div_ceil(256) as u32);
        self.record(&kernel, &[("x", storage), ("flag", &flag)], bytemuck::bytes_of(&params), groups);
    }
}

impl DeviceInner {
    /// After the GPU finished: the first error the kernels flagged, if any
    /// (an out-of-range index first, then non-finite values).
    pub(crate) async fn take_check_error(self: &Arc<Self>) -> Result<()> {
        let flag = {
            let mut c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
            let finite = self.check_finite.load(Ordering::Relaxed);
            if !(finite || std::mem::take(&mut c.indices_pending)) {
                return Ok(());
            }
            c.flag.clone()
        };
        let Some(flag) = flag else { return Ok(()) };
        let bytes = self.read_raw(&flag, 0, 8).await?;
        let words: [u32; 2] = bytemuck::pod_read_unaligned(&bytes);
        if words == [CLEAR, CLEAR] {
            return Ok(());
        }
        let turn = self.gl_turn();
        self.queue.write_buffer(flag.buffer(), 0, bytemuck::cast_slice(&[CLEAR, CLEAR]));
        drop(turn);
        let c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        if words[1] != CLEAR {
            let (site, derivative) = c.sites[words[1] as usize];
            return Err(Error::IndexOutOfRange {
                op: site.op,
                location: site.location,
                derivative_of: derivative.map(|d| (d.pass, d.of.op, d.of.location)),
            });
        }
        let (site, derivative) = c.sites[words[0] as usize];
        Err(Error::NonFinite {
            op: site.op,
            location: site.location,
            derivative_of: derivative.map(|d| (d.pass, d.of.op, d.of.location)),
        })
    }

    /// Marks that replayed kernels may have flagged indices.
    pub(crate) fn indices_ran(&self) {
        self.checks.lock().unwrap_or_else(|p| p.into_inner()).indices_pending = true;
    }
}
