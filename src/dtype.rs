//! Element types. Every element is one 32-bit word on the GPU, so kernels bind
//! raw words and bitcast, and one kernel serves every dtype.

use std::fmt;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float: values, parameters, gradients.
    F32,
    /// 32-bit signed integer: indices.
    I32,
    /// 32-bit unsigned integer: labels, indices, masks (comparisons give 0/1).
    U32,
}

impl DType {
    /// Bytes per element (4 for every dtype).
    pub const fn size(self) -> usize {
        4
    }

    /// The code the shaders use for this dtype (`DT` override: 0 f32, 1 i32, 2 u32).
    pub(crate) const fn code(self) -> u32 {
        match self {
            DType::F32 => 0,
            DType::I32 => 1,
            DType::U32 => 2,
        }
    }

    /// The 32-bit pattern of `v` as an element of this dtype. Integer dtypes
    /// take the integral part (saturating), as a cast would.
    pub(crate) fn bits_of(self, v: f64) -> u32 {
        match self {
            DType::F32 => (v as f32).to_bits(),
            DType::I32 => (v as i32) as u32,
            DType::U32 => v as u32,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I32 => "i32",
            DType::U32 => "u32",
        })
    }
}

/// A Rust type that can be the element of a tensor: `f32`, `i32` or `u32`.
pub trait Element: bytemuck::Pod + Copy + Default + fmt::Debug + Send + Sync + 'static {
    /// The matching [`DType`].
    const DTYPE: DType;
    /// The value as f64 (exact for every element type).
    fn to_f64(self) -> f64;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for i32 {
    const DTYPE: DType = DType::I32;
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Element for u32 {
    const DTYPE: DType = DType::U32;
    fn to_f64(self) -> f64 {
        self as f64
    }
}
