//! The workgroup-tiled matmul: the kernel of every adapter but CPU ones
//! with subgroups (GPUs, the browser).

use std::fmt::Write;

use super::chain::Chain;
use super::matmul_header::{BATCH_OFFSETS, gather_a, gather_b, header};
use crate::ir::{ConvGemm, Staging, WorkgroupTile};

/// The workgroup-tiled matmul with tile `t`, and `epilogue` run on each
/// element as it is stored: the kernel of every adapter but CPU ones with
/// subgroups (GPUs, the browser).
///
/// A `wx`×`wy` workgroup computes a (`wy`·`tm`)×(`wx`·`tn`) tile of C,
/// each invocation `tm`×`tn` outputs whose rows and columns are interleaved
/// with those of its neighbours (one by one, or in runs of four), so that
/// neighbouring invocations store neighbouring columns. Staged: per `bk`
/// steps of k the workgroup copies the slices of A and B it needs into
/// workgroup memory, each element loaded once and walking each operand
/// along its contiguous axis; then a k step costs `tm` + `tn` (or a quarter
/// as many vector) workgroup-memory loads for `tm`·`tn` FMAs. Unstaged:
/// each invocation loads its rows and columns itself. The code is
/// straight-line, an accumulator per output: accumulators in an array
/// indexed in loops stay in memory (7× slower on an NVIDIA H200).
///
/// Each output is one fma chain over its slice of k in order, whatever the
/// tile, so every tile gives the same bits. Rows and columns past the edge
/// are staged as zeros (or read at a clamped, valid address) and not
/// written; k past the slice is staged as −0 in A, and fma(−0, 0, x) = x
/// for every x, ±0 included.
pub(super) fn source(t: WorkgroupTile, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
    let WorkgroupTile { wx, wy, tm, tn, bk, staging } = t;
    let (bm, bn, threads) = (wy * tm, wx * tn, wx * wy);
    let vec4 = staging == Staging::Vec4;
    // accumulators: per row, tn / vw vectors of vw columns
    let vw = tn.min(4);
    let staged = staging != Staging::None;
    assert!(tn % vw == 0 && (!staged || (bm * bk % threads == 0 && bn * bk % threads == 0)), "{t:?}");
    assert!(!vec4 || (tm % 4 == 0 && tn % 4 == 0), "{t:?}");
    let vt = if vw == 1 { "f32".to_string() } else { format!("vec{vw}<f32>") };
    let nv = tn / vw;
    // the tile's row of the invocation's row i, and its column j (`l`: its
    // local id; constant parts folded)
    let row = |i: u32| match vec4 {
        true => format!("4u * l.y + {}u", i / 4 * 4 * wy + i % 4),
        false => format!("l.y + {}u", i * wy),
    };
    let col = |j: u32| match vec4 {
        true => format!("4u * l.x + {}u", j / 4 * 4 * wx + j % 4),
        false => format!("l.x + {}u", j * wx),
    };
    let mut s = header(conv, epilogue, "f32", "f32", "f32");
    let w = &mut s;
    // the operands' gathers, if the product is a convolution's
    let gather_a = conv.and_then(gather_a);
    let gather_b = conv.map(gather_b);
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    let (sa, sb) = t.strides();
    let (elem, sa_v, sb_v) = if vec4 { ("vec4<f32>", sa / 4, sb / 4) } else { ("f32", sa, sb) };
    if staged {
        line!("var<workgroup> ta: array<{elem}, {}>;", bk * sa_v);
        line!("var<workgroup> tb: array<{elem}, {}>;", bk * sb_v);
    }
    line!("@compute @workgroup_size({wx}, {wy})");
    line!("fn matmul(");
    line!("    @builtin(workgroup_id) wg: vec3<u32>,");
    line!("    @builtin(local_invocation_id) l: vec3<u32>,");
    line!("    @builtin(local_invocation_index) li: u32,");
    line!(") {{");
    *w += BATCH_OFFSETS;
    line!("    let r_0 = (wg.y + p.wg_y0) * {bm}u;");
    line!("    let c_0 = (wg.x + p.wg_x0) * {bn}u;");
    line!("    let chunk = (p.k + p.k_split - 1u) / p.k_split;");
    line!("    let k_begin = slice * chunk;");
    line!("    let k_end = min(k_begin + chunk, p.k);");
    for i in 0..tm {
        for v in 0..nv {
            line!("    var acc{i}_{v} = {vt}();");
        }
    }
    let fmas = |w: &mut String, indent: &str, a: &dyn Fn(u32) -> String| {
        for i in 0..tm {
            for v in 0..nv {
                writeln!(w, "{indent}acc{i}_{v} = fma({vt}({}), b{v}, acc{i}_{v});", a(i)).expect("write to String");
            }
        }
    };
    // element (kk, x) of a staged slice, x its row (A) or column (B)
    let slot = |array: &str, stride: u32, x: &str| match vec4 {
        true => format!("{array}[kk * {}u + {x} / 4u][{x} % 4u]", stride / 4),
        false => format!("{array}[kk * {stride}u + {x}]"),
    };
    if staged {
        // Each operand's slice [bk, extent] is walked along its contiguous
        // axis (x, A's rows or B's columns, when `x_fast`; else k), `pad`
        // where past the edge. A: rows contiguous along k, else along m; B:
        // along n, else along k.
        // (a gathered A is dense along k; a gathered B along n, but for
        // the weight gradient's along k)
        let a_along_m = if gather_a.is_some() { "false" } else { "p.a_cs != 1u" };
        let b_along_n = match conv {
            Some(c) => {
                if c == ConvGemm::WeightGrad {
                    "false"
                } else {
                    "true"
                }
            }
            None => "p.b_cs == 1u",
        };
        line!("    let a_along_m = {a_along_m};");
        line!("    let b_along_n = {b_along_n};");
        line!("    for (var k0 = k_begin; k0 < k_end; k0 += {bk}u) {{");
        let load_a = match gather_a {
            Some((f, _)) => format!("a[ao + (r_0 + x) * p.a_rs + {f}(k0 + kk)]"),
            None => "a[ao + (r_0 + x) * p.a_rs + (k0 + kk) * p.a_cs]".to_string(),
        };
        let load_b = match gather_b {
            Some(g) => format!("{}({}(bo, {}(k0 + kk)) + {}(c_0 + x))", g.at, g.kc, g.of, g.col),
            None => "b[bo + (k0 + kk) * p.b_rs + (c_0 + x) * p.b_cs]".to_string(),
        };
        let operands = [
            ("ta", sa, bm, "a_along_m", "r_0", "p.m", "bitcast<f32>(0x80000000u)", load_a),
            ("tb", sb, bn, "b_along_n", "c_0", "p.n", "0.0", load_b),
        ];
        for (array, stride, extent, x_fast, origin, limit, pad, load) in operands {
            for q in 0..extent * bk / threads {
                line!("        {{");
                line!("            let e = li + {}u;", q * threads);
                line!("            let x = select(e / {bk}u, e % {extent}u, {x_fast});");
                line!("            let kk = select(e % {bk}u, e / {extent}u, {x_fast});");
                line!("            var v = {pad};");
                line!("            if {origin} + x < {limit} && k0 + kk < k_end {{");
                line!("                v = {load};");
                line!("            }}");
                line!("            {} = v;", slot(array, stride, "x"));
                line!("        }}");
            }
        }
        line!("        workgroupBarrier();");
        line!("        for (var kk = 0u; kk < {bk}u; kk++) {{");
        if vec4 {
            // rows 4q..4q+3 of this invocation in one load, columns likewise
            for q in 0..tm / 4 {
                line!("            let a{q} = ta[kk * {}u + l.y + {}u];", sa_v, q * wy);
            }
            for v in 0..nv {
                line!("            let b{v} = tb[kk * {}u + l.x + {}u];", sb_v, v * wx);
            }
            fmas(w, "            ", &|i| format!("a{}[{}]", i / 4, i % 4));
        } else {
            for i in 0..tm {
                line!("            let a{i} = ta[kk * {sa}u + {}];", row(i));
            }
            for v in 0..nv {
                let cols: Vec<String> = (0..vw).map(|e| format!("tb[kk * {sb}u + {}]", col(v * vw + e))).collect();
                line!("            let b{v} = {vt}({});", cols.join(", "));
            }
            fmas(w, "            ", &|i| format!("a{i}"));
        }
        line!("        }}");
        line!("        workgroupBarrier();");
        line!("    }}");
    } else {
        // (clamped rows and columns: edge tiles read valid memory and skip
        // their writes; gathers take the row or column itself)
        for i in 0..tm {
            line!("    let ar{i} = ao + min(r_0 + {}, p.m - 1u) * p.a_rs;", row(i));
        }
        for j in 0..tn {
            match gather_b {
                Some(g) => line!("    let bc{j} = {}(min(c_0 + {}, p.n - 1u));", g.col, col(j)),
                None => line!("    let bc{j} = bo + min(c_0 + {}, p.n - 1u) * p.b_cs;", col(j)),
            }
        }
        if let Some(g) = gather_b {
            line!("    var kc = {}(k_begin);", g.of);
        }
        line!("    for (var k = k_begin; k < k_end; k++) {{");
        match gather_a {
            Some((_, f)) => line!("        let ka = {f}(kc);"),
            None => line!("        let ka = k * p.a_cs;"),
        }
        match gather_b {
            Some(g) => {
                line!("        let kb = {}(bo, kc);", g.kc);
                line!("        kc = {}(kc);", g.next);
            }
            None => line!("        let kb = k * p.b_rs;"),
        }
        for i in 0..tm {
            line!("        let a{i} = a[ar{i} + ka];");
        }
        let load_b = |j: u32| match gather_b {
            Some(g) => format!("{}(kb + bc{j})", g.at),
            None => format!("b[bc{j} + kb]"),
        };
        for v in 0..nv {
            let cols: Vec<String> = (0..vw).map(|e| load_b(v * vw + e)).collect();
            line!("        let b{v} = {vt}({});", cols.join(", "));
        }
        fmas(w, "        ", &|i| format!("a{i}"));
        line!("    }}");
    }
    line!("    let base = wg.z * p.m * p.n;");
    for i in 0..tm {
        line!("    let r{i} = r_0 + {};", row(i));
    }
    for j in 0..tn {
        line!("    let c{j} = c_0 + {};", col(j));
    }
    for i in 0..tm {
        for j in 0..tn {
            let e = if vw == 1 { String::new() } else { format!("[{}]", j % vw) };
            line!("    if r{i} < p.m && c{j} < p.n {{ c[base + r{i} * p.n + c{j}] = acc{i}_{}{e}; }}", j / vw);
        }
    }
    if epilogue.is_some() {
        // a loop over the elements this invocation just stored, reading
        // each back: the epilogue's code appears once
        line!("    for (var q = 0u; q < {}u; q++) {{", tm * tn);
        line!("        let i = q / {tn}u;");
        line!("        let j = q % {tn}u;");
        if vec4 {
            line!("        let row = r_0 + 4u * l.y + i / 4u * {}u + i % 4u;", 4 * wy);
            line!("        let col = c_0 + 4u * l.x + j / 4u * {}u + j % 4u;", 4 * wx);
        } else {
            line!("        let row = r_0 + l.y + i * {wy}u;");
            line!("        let col = c_0 + l.x + j * {wx}u;");
        }
        line!("        if row < p.m && col < p.n {{");
        line!("            epilogue(base + row * p.n + col, c[base + row * p.n + col]);");
        line!("        }}");
        line!("    }}");
    }
    line!("}}");
    s
}
