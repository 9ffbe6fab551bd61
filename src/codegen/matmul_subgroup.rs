//! The register-blocked matmul of CPU adapters with subgroups (lavapipe).
//! There a workgroup of 8 invocations is one SIMD register and every load
//! is issued lane by lane, so what counts is loads per FMA and keeping the
//! accumulators in registers — which needs fully unrolled code (an
//! accumulator array indexed in loops stays in memory and runs ~10×
//! slower). Each workgroup computes a `rows`×(8·`cols`) tile of C: lane l
//! owns the columns c0 + l + 8j and loads, per k, `rows/8` values of A (one
//! row per lane) that `subgroupBroadcast` shares with all lanes, and `cols`
//! values of B. Each accumulator gets `unroll` FMAs in a row.

use std::fmt::Write;

use super::chain::Chain;
use super::matmul_header::{BATCH_OFFSETS, gather_a, gather_b, header};
use crate::ir::{ALoad, BLoad, ConvGemm, MatmulTile};

/// The matmul, with `epilogue` run on every element of its result.
pub(super) fn source(t: MatmulTile, conv: Option<ConvGemm>, epilogue: Option<&Chain>) -> String {
    assert!(t.rows % 8 == 0 && t.cols % 4 == 0 && t.unroll >= 1, "{t:?}");
    // the operands' gathers, if the product is a convolution's: read one
    // element at a time
    let gather_a = conv.and_then(gather_a);
    let gather_b = conv.map(gather_b);
    assert!(gather_a.is_none() || t.a == ALoad::Scalar, "{t:?} {conv:?}");
    assert!(gather_b.is_none() || t.b == BLoad::Scalar, "{t:?} {conv:?}");
    match t.a {
        ALoad::Scalar => {}
        ALoad::AlongK => assert_eq!(t.unroll, 4, "{t:?}"),
        ALoad::AlongM => assert_eq!(t.rows % 32, 0, "{t:?}"),
    }
    if t.b == BLoad::AlongK {
        assert_eq!(t.unroll, 4, "{t:?}");
    }
    // both operands' four-wide loads along k need k a multiple of 4 and
    // slices of k that start at multiples of 4
    let along_k = t.a == ALoad::AlongK || t.b == BLoad::AlongK;
    // vec4 accumulators (four columns each): measured 8× faster on lavapipe
    // than the same arithmetic on scalars.
    let (rq, nv) = (t.rows / 8, t.cols / 4);
    let ty = |v: bool| if v { "vec4<f32>" } else { "f32" };
    let vec_c = t.b == BLoad::AlongN;
    let mut s = header(conv, epilogue, ty(t.a != ALoad::Scalar), ty(t.b != BLoad::Scalar), ty(vec_c));
    let w = &mut s;
    // writeln! into a String cannot fail
    macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
    line!("@compute @workgroup_size(8)");
    line!("fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) l: u32) {{");
    *w += BATCH_OFFSETS;
    line!("    let r0 = (wg.y + p.wg_y0) * {}u;", t.rows);
    // the columns of vector v of this lane: c0 + 8j (j = 4v..4v+3), or
    // c0 + 32v + 0..3 when B loads along n
    if t.b == BLoad::AlongN {
        line!("    let c0 = (wg.x + p.wg_x0) * {}u + 4u * l;", t.tile_n());
    } else {
        line!("    let c0 = (wg.x + p.wg_x0) * {}u + l;", t.tile_n());
    }
    // row offsets of the A rows this lane loads, column offsets of its B columns
    // (clamped, so edge tiles read valid memory and skip their writes)
    match t.a {
        ALoad::Scalar => {
            for q in 0..rq {
                line!("    let ar{q} = ao + min(r0 + {}u + l, p.m - 1u) * p.a_rs;", 8 * q);
            }
        }
        ALoad::AlongK => {
            for q in 0..rq {
                line!("    let ar{q} = (ao + min(r0 + {}u + l, p.m - 1u) * p.a_rs) / 4u;", 8 * q);
            }
        }
        // lane l loads rows r0 + 32j + 4l .. + 3
        ALoad::AlongM => {
            for j in 0..t.rows / 32 {
                line!("    let ar{j} = (ao + min(r0 + {}u + 4u * l, p.m - 4u)) / 4u;", 32 * j);
            }
        }
    }
    match t.b {
        BLoad::AlongN => {
            for v in 0..nv {
                line!("    let bc{v} = (bo + min(c0 + {}u, p.n - 4u)) / 4u;", 32 * v);
            }
        }
        BLoad::Scalar => {
            for j in 0..t.cols {
                match gather_b {
                    Some(g) => line!("    let bc{j} = {}(min(c0 + {}u, p.n - 1u));", g.col, 8 * j),
                    None => line!("    let bc{j} = bo + min(c0 + {}u, p.n - 1u) * p.b_cs;", 8 * j),
                }
            }
        }
        BLoad::AlongK => {
            for j in 0..t.cols {
                line!("    let bc{j} = (bo + min(c0 + {}u, p.n - 1u) * p.b_cs) / 4u;", 8 * j);
            }
        }
    }
    for r in 0..t.rows {
        for v in 0..nv {
            line!("    var acc{r}_{v} = vec4<f32>();");
        }
    }
    let body = |w: &mut String, u: usize, step: &str| {
        macro_rules! line { ($($arg:tt)*) => { writeln!(w, $($arg)*).expect("write to String") }; }
        if t.b == BLoad::AlongK {
            // four k steps of each column in one load; component i is step i
            for j in 0..t.cols {
                line!("        let bk{j} = b[bc{j} + k / 4u];");
            }
        }
        for i in 0..u {
            match t.b {
                BLoad::AlongN => {
                    line!("        let kb{i} = (k + {i}u) * p.b_rs / 4u;");
                    for v in 0..nv {
                        line!("        let b{i}_{v} = b[bc{v} + kb{i}];");
                    }
                }
                BLoad::Scalar => {
                    match gather_b {
                        Some(g) => line!("        let kb{i} = {}(bo, kc);", g.kc),
                        None => line!("        let kb{i} = (k + {i}u) * p.b_rs;"),
                    }
                    for v in 0..nv {
                        let load = |j: usize| match gather_b {
                            Some(g) => format!("{}(kb{i} + bc{j})", g.at),
                            None => format!("b[bc{j} + kb{i}]"),
                        };
                        let cols: Vec<String> = (0..4).map(|e| load(4 * v + e)).collect();
                        line!("        let b{i}_{v} = vec4<f32>({});", cols.join(", "));
                    }
                }
                BLoad::AlongK => {
                    for v in 0..nv {
                        let cols: Vec<String> = (0..4).map(|e| format!("bk{}[{i}]", 4 * v + e)).collect();
                        line!("        let b{i}_{v} = vec4<f32>({});", cols.join(", "));
                    }
                }
            }
            match t.a {
                ALoad::Scalar => {
                    match gather_a {
                        Some((_, f)) => line!("        let ka{i} = {f}(kc);"),
                        None => line!("        let ka{i} = (k + {i}u) * p.a_cs;"),
                    }
                    for q in 0..rq {
                        line!("        let a{i}_{q} = a[ar{q} + ka{i}];");
                    }
                }
                ALoad::AlongM => {
                    line!("        let ka{i} = (k + {i}u) * p.a_cs / 4u;");
                    for j in 0..t.rows / 32 {
                        line!("        let a{i}_{j} = a[ar{j} + ka{i}];");
                    }
                }
                ALoad::AlongK => {} // below, once for all u steps
            }
            if let Some(g) = gather_b {
                line!("        kc = {}(kc);", g.next);
            }
        }
        if t.a == ALoad::AlongK {
            // four k steps of each row in one load; component i is step i
            for q in 0..rq {
                line!("        let a_{q} = a[ar{q} + k / 4u];");
            }
        }
        for r in 0..t.rows {
            for i in 0..u {
                // the lane that loaded row r, and where it holds it
                let (a, lane) = match t.a {
                    ALoad::Scalar => (format!("a{i}_{}", r / 8), r % 8),
                    ALoad::AlongK => (format!("a_{}[{i}]", r / 8), r % 8),
                    ALoad::AlongM => (format!("a{i}_{}[{}]", r / 32, r % 4), r % 32 / 4),
                };
                line!("        let x{i}_{r} = vec4<f32>(subgroupBroadcast({a}, {lane}u));");
            }
            for v in 0..nv {
                let mut e = format!("acc{r}_{v}");
                for i in 0..u {
                    e = format!("fma(x{i}_{r}, b{i}_{v}, {e})");
                }
                line!("        acc{r}_{v} = {e};");
            }
        }
        line!("        k += {step}u;");
    };
    if along_k {
        // slices of k start at multiples of 4, like the vector loads
        line!("    let chunk = ((p.k + p.k_split - 1u) / p.k_split + 3u) / 4u * 4u;");
    } else {
        line!("    let chunk = (p.k + p.k_split - 1u) / p.k_split;");
    }
    line!("    let k_end = min((slice + 1u) * chunk, p.k);");
    line!("    var k = slice * chunk;");
    if let Some(g) = gather_b {
        line!("    var kc = {}(k);", g.of);
    }
    if t.unroll > 1 {
        line!("    while k + {}u <= k_end {{", t.unroll);
        body(w, t.unroll, &t.unroll.to_string());
        line!("    }}");
    }
    if !along_k {
        line!("    while k < k_end {{");
        body(w, 1, "1");
        line!("    }}");
    }
    line!("    let base = wg.z * p.m * p.n;");
    for r in 0..t.rows {
        line!("    if r0 + {r}u < p.m {{");
        if vec_c {
            for v in 0..nv {
                line!(
                    "        if c0 + {}u < p.n {{ c[(base + (r0 + {r}u) * p.n + c0 + {}u) / 4u] = acc{r}_{v}; }}",
                    32 * v,
                    32 * v
                );
            }
        } else {
            for j in 0..t.cols {
                line!(
                    "        if c0 + {}u < p.n {{ c[base + (r0 + {r}u) * p.n + c0 + {}u] = acc{r}_{}[{}]; }}",
                    8 * j,
                    8 * j,
                    j / 4,
                    j % 4
                );
            }
        }
        line!("    }}");
    }
    if epilogue.is_some() {
        // The epilogue runs in a loop over the elements this lane just
        // stored, reading each back: its code appears once. (Calling it on
        // the accumulators, unrolled or through a local array, made the
        // module take seconds to compile.)
        line!("    for (var q = 0u; q < {}u; q++) {{", t.rows * nv);
        line!("        let row = r0 + q / {nv}u;");
        line!("        for (var e = 0u; e < 4u; e++) {{");
        // the column of component e of this lane's vector q % nv (see c0)
        if vec_c {
            line!("            let col = c0 + 32u * (q % {nv}u) + e;");
        } else {
            line!("            let col = c0 + 32u * (q % {nv}u) + 8u * e;");
        }
        line!("            if row < p.m && col < p.n {{");
        line!("                let i = base + row * p.n + col;");
        if vec_c {
            line!("                epilogue(i, c[i / 4u][i % 4u]);");
        } else {
            line!("                epilogue(i, c[i]);");
        }
        line!("            }}");
        line!("        }}");
        line!("    }}");
    }
    line!("}}");
    s
}
