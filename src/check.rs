//! A debug switch: check every op's f32 output for NaN and ±Inf on the GPU
//! and name the first op that produced one — its name, the caller's line,
//! and for gradients the forward op whose backward pass it belongs to.

use std::cell::Cell;
use std::panic::Location;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytemuck::{Pod, Zeroable};

use crate::device::{Device, DeviceInner};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::pool::{BufferClass, Storage};
use crate::shaders::{Kernel, Shader};
use crate::shape::{MAX_RANK, coalesce, pack, pack_divisors};
use crate::tensor::Tensor;

/// Where an op was recorded: its name and the caller's line.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Site {
    pub op: &'static str,
    pub location: &'static Location<'static>,
}

thread_local! {
    /// While the backward pass runs a VJP rule: the forward op it differentiates.
    static BACKWARD_OF: Cell<Option<Site>> = const { Cell::new(None) };
}

/// Runs `f` (a VJP rule) noting that its ops belong to `forward`'s backward pass.
pub(crate) fn in_backward_of<R>(forward: Site, f: impl FnOnce() -> R) -> R {
    let previous = BACKWARD_OF.with(|b| b.replace(Some(forward)));
    let r = f();
    BACKWARD_OF.with(|b| b.set(previous));
    r
}

/// The flag buffer and the sites its tags name.
#[derive(Default)]
pub(crate) struct Checks {
    flag: Option<Arc<Storage>>,
    sites: Vec<(Site, Option<Site>)>,
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

/// Records the check of `out` if debug checks are on.
pub(crate) fn after_op(out: &Tensor, site: Site) {
    let dev = &out.device().inner;
    if !dev.check_finite.load(Ordering::Relaxed) || out.dtype() != DType::F32 || out.numel() == 0 {
        return;
    }
    let (flag, tag) = {
        let mut c = dev.checks.lock().unwrap_or_else(|p| p.into_inner());
        let flag = c
            .flag
            .get_or_insert_with(|| {
                let f = dev.alloc(BufferClass::Storage, 4);
                dev.queue.write_buffer(f.buffer(), 0, bytemuck::bytes_of(&CLEAR));
                f
            })
            .clone();
        c.sites.push((site, BACKWARD_OF.with(Cell::get)));
        (flag, (c.sites.len() - 1) as u32)
    };
    let l = out.layout();
    let mut strides = vec![l.strides.clone()];
    let dims = coalesce(&l.shape, &mut strides);
    let (magic, shift) = pack_divisors(&dims);
    let params = CheckParams {
        numel: out.numel() as u32,
        rank: dims.len() as u32,
        offset: l.offset as u32,
        tag,
        shape: pack(&dims),
        strides: pack(&strides[0]),
        magic,
        shift,
    };
    let kernel = Kernel::new(Shader::Check, "check_finite");
    let groups = crate::graph::grid(out.numel().div_ceil(256) as u32);
    dev.record(&kernel, vec![(1, out.storage().clone()), (2, flag)], bytemuck::bytes_of(&params), groups);
}

impl DeviceInner {
    /// After the GPU finished: the first non-finite result flagged, if any.
    pub(crate) async fn take_check_error(self: &Arc<Self>) -> Result<()> {
        if !self.check_finite.load(Ordering::Relaxed) {
            return Ok(());
        }
        let flag = self.checks.lock().unwrap_or_else(|p| p.into_inner()).flag.clone();
        let Some(flag) = flag else { return Ok(()) };
        let bytes = self.read_raw(&flag, 0, 4).await?;
        let tag = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        if tag == CLEAR {
            return Ok(());
        }
        self.queue.write_buffer(flag.buffer(), 0, bytemuck::bytes_of(&CLEAR));
        let c = self.checks.lock().unwrap_or_else(|p| p.into_inner());
        let (site, backward_of) = c.sites[tag as usize];
        Err(Error::NonFinite {
            op: site.op,
            location: site.location,
            backward_of: backward_of.map(|b| (b.op, b.location)),
        })
    }
}
