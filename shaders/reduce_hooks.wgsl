// The default hooks of the reductions (reduce.wgsl): the eager kernels read
// x and do nothing more. `Hooks` is the uniform's field for the hooks'
// parameters; these have none (WGSL structs need a member: one unused
// word, which the host fills with zeros).

struct Hooks {
    unused: u32,
}

fn element(i: u32) -> f32 { return x[i]; }
fn finished(i: u32, acc: f32) {}
fn revisit(base: u32, acc: f32) {}
