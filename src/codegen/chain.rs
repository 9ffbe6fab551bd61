//! Fused elementwise chains laid out for code generation: what each member
//! computes and reads, which values stay in registers and which are
//! stored, and the WGSL that runs the chain per element — in a kernel of
//! its own, as a matmul's epilogue, or around a reduction.

use std::fmt::Write;

use crate::ir::{EwExpr, EwOperand};

/// Where a fused member's operand comes from.
pub(crate) enum FusedOperand {
    /// The value an earlier member computed, kept in a register.
    Member(usize),
    /// A load from a buffer.
    External(EwOperand),
    /// The element of the matmul result the chain is the epilogue of.
    Accumulator,
}

/// One node of a fused chain: what it computes, from where, and where its
/// result is stored (`None`: only later members use it).
pub(crate) struct FusedMember {
    pub expr: EwExpr,
    pub operands: Vec<FusedOperand>,
    pub out: Option<EwOperand>,
}

/// Where a member's operand is read from in generated code.
#[derive(Clone, Copy)]
enum Ref {
    Input(usize),
    Member(usize),
    Accumulator,
}

/// A fused chain laid out for code generation: its distinct external
/// operands (inputs), its stored outputs, and one iteration space in which
/// dimensions every operand walks contiguously are merged. The code runs
/// per element `i` (a linear index of the chain's shape): in a kernel of
/// its own, or as the epilogue of a matmul.
pub(crate) struct Chain<'a> {
    members: &'a [FusedMember],
    pub(super) inputs: Vec<&'a EwOperand>,
    refs: Vec<Vec<Ref>>,
    /// (member, where it is stored)
    pub(super) outputs: Vec<(usize, &'a EwOperand)>,
    /// WebGPU forbids binding a buffer both read-only and writable in one
    /// dispatch: an input that is also an output is read through the output.
    written_as: Vec<Option<usize>>,
    /// Inputs another chain of the same kernel writes, read through its
    /// array (named here) for the same reason.
    pub(super) elsewhere: Vec<Option<String>>,
    dims: Vec<usize>,
    /// Per operand (inputs, then outputs), over `dims`.
    pub(super) strides: Vec<Vec<usize>>,
    /// Prefix of its buffers' names (two chains in one module).
    pub(super) tag: &'static str,
}

impl<'a> Chain<'a> {
    /// `None` when the iteration space has too many dimensions.
    pub(crate) fn new(shape: &[usize], members: &'a [FusedMember]) -> Option<Chain<'a>> {
        let mut inputs: Vec<&EwOperand> = Vec::new();
        let mut refs = Vec::new();
        for m in members {
            let mut ids = Vec::new();
            for o in &m.operands {
                ids.push(match o {
                    FusedOperand::Member(k) => Ref::Member(*k),
                    FusedOperand::Accumulator => Ref::Accumulator,
                    FusedOperand::External(e) => {
                        let same =
                            |x: &&EwOperand| x.buffer == e.buffer && x.offset == e.offset && x.strides == e.strides;
                        Ref::Input(match inputs.iter().position(same) {
                            Some(j) => j,
                            None => {
                                inputs.push(e);
                                inputs.len() - 1
                            }
                        })
                    }
                });
            }
            refs.push(ids);
        }
        let outputs: Vec<(usize, &EwOperand)> =
            members.iter().enumerate().filter_map(|(k, m)| m.out.as_ref().map(|o| (k, o))).collect();
        let written_as = inputs.iter().map(|i| outputs.iter().position(|(_, o)| o.buffer == i.buffer)).collect();
        let elsewhere = vec![None; inputs.len()];
        let mut strides: Vec<Vec<usize>> =
            inputs.iter().copied().chain(outputs.iter().map(|o| o.1)).map(|o| o.strides.clone()).collect();
        let dims = crate::shape::coalesce(shape, &mut strides);
        (dims.len() <= crate::shape::MAX_RANK).then_some(Chain {
            members,
            inputs,
            refs,
            outputs,
            written_as,
            elsewhere,
            dims,
            strides,
            tag: "",
        })
    }

    fn operands(&self) -> impl Iterator<Item = &EwOperand> {
        self.inputs.iter().copied().chain(self.outputs.iter().map(|o| o.1))
    }

    /// The chain with its buffers' names prefixed by `tag` (two chains
    /// in one module).
    pub(super) fn tagged(self, tag: &'static str) -> Chain<'a> {
        Chain { tag, ..self }
    }

    pub(super) fn numel(&self) -> usize {
        self.dims.iter().product()
    }

    /// Its uniform's WGSL struct fields, names prefixed with `pre`.
    pub(super) fn fields(&self, pre: &str) -> String {
        let k = self.strides.len();
        format!(
            "    {pre}numel: u32, {pre}rank: u32, {pre}zero: u32, {pre}pad1: u32,
    {pre}shape: array<vec4<u32>, 2>,
    {pre}magic: array<vec4<u32>, 2>,
    {pre}shift: array<vec4<u32>, 2>,
    {pre}offs: array<vec4<u32>, {}>,
    {pre}strides: array<vec4<u32>, {}>,\n",
            k.div_ceil(4),
            2 * k
        )
    }

    /// The uniform's words, in the order of [`fields`](Self::fields).
    pub(super) fn words(&self) -> Vec<u32> {
        let (magic, shift) = crate::shape::pack_divisors(&self.dims);
        let mut words: Vec<u32> = vec![self.numel() as u32, self.dims.len() as u32, 0, 0];
        words.extend(crate::shape::pack(&self.dims));
        words.extend(magic);
        words.extend(shift);
        let mut offs = vec![0u32; 4 * self.strides.len().div_ceil(4)];
        for (j, o) in self.operands().enumerate() {
            offs[j] = o.offset as u32;
        }
        words.extend(offs);
        for st in &self.strides {
            words.extend(crate::shape::pack(st));
        }
        words
    }

    /// WGSL declarations of its buffers, bindings from `first`.
    pub(super) fn declarations(&self, first: u32) -> String {
        let mut s = String::new();
        for (j, w) in self.written_as.iter().enumerate() {
            if w.is_none() && self.elsewhere[j].is_none() {
                s += &format!(
                    "@group(0) @binding({}) var<storage, read> {t}x{j}: array<u32>;\n",
                    first + j as u32,
                    t = self.tag
                );
            }
        }
        for j in 0..self.outputs.len() {
            let b = first + (self.inputs.len() + j) as u32;
            s += &format!("@group(0) @binding({b}) var<storage, read_write> {t}y{j}: array<u32>;\n", t = self.tag);
        }
        s
    }

    /// Its buffers by the names [`declarations`](Self::declarations) gives them.
    pub(super) fn bindings(&self) -> Vec<(String, wgpu::Buffer)> {
        let n = self.inputs.len();
        self.operands()
            .enumerate()
            .filter(|(j, _)| *j >= n || self.written_as[*j].is_none() && self.elsewhere[*j].is_none())
            .map(|(j, o)| {
                let name = if j < n { format!("{}x{j}", self.tag) } else { format!("{}y{}", self.tag, j - n) };
                (name, o.buffer.clone())
            })
            .collect()
    }

    /// WGSL computing element `i` (a `u32` in scope; `acc`, an `f32`, too in
    /// an epilogue): loads, the members' arithmetic, stores. `u`: the
    /// uniform's field prefix (`p.` or `p.e_`).
    pub(super) fn body(&self, u: &str) -> String {
        let mut s = String::new();
        let w = &mut s;
        macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
        let k = self.strides.len();
        for j in 0..k {
            line!("    var o{j} = {u}offs[{}][{}];", j / 4, j % 4);
        }
        if self.dims.len() <= 1 {
            for j in 0..k {
                line!("    o{j} += i * {u}strides[{}][0];", 2 * j);
            }
        } else {
            line!("    var rem = i;");
            for d in (0..self.dims.len()).rev() {
                let (q, r) = (d / 4, d % 4);
                line!("    {{");
                line!("        let quot = fast_div(rem, {u}magic[{q}][{r}], {u}shift[{q}][{r}]);");
                line!("        let coord = rem - quot * {u}shape[{q}][{r}];");
                line!("        rem = quot;");
                for j in 0..k {
                    line!("        o{j} += coord * {u}strides[{}][{r}];", 2 * j + q);
                }
                line!("    }}");
            }
        }
        for (j, w) in self.written_as.iter().enumerate() {
            match (w, &self.elsewhere[j]) {
                (Some(y), _) => line!("    let x{j}v = {t}y{y}[o{j}];", t = self.tag),
                (None, Some(array)) => line!("    let x{j}v = {array}[o{j}];"),
                (None, None) => line!("    let x{j}v = {t}x{j}[o{j}];", t = self.tag),
            }
        }
        // A member's value passes to the next through `^ zero`, a uniform
        // word the compiler cannot know is 0, as it passes through memory
        // between eager kernels: else a driver may contract a product and
        // the sum that uses it into one fma (one rounding instead of two)
        // and the fused kernel's bits differ from eager mode's (seen on an
        // NVIDIA H200's Vulkan driver; SPIR-V allows it by default).
        let operand = |m: usize, slot: usize| match self.refs[m][slot] {
            Ref::Input(j) => format!("x{j}v"),
            Ref::Member(member) => format!("(t{member} ^ {u}zero)"),
            Ref::Accumulator => "bitcast<u32>(acc)".to_string(),
        };
        for (m, member) in self.members.iter().enumerate() {
            let operands: Vec<String> = (0..self.refs[m].len()).map(|slot| operand(m, slot)).collect();
            line!("    let t{m} = {};", member.expr.wgsl(&operands));
        }
        for (j, (m, _)) in self.outputs.iter().enumerate() {
            line!("    {t}y{j}[o{}] = t{m};", self.inputs.len() + j, t = self.tag);
        }
        s
    }
}
