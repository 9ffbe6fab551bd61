//! The main job: trains the best of the examples, the seed's convolutional
//! network (`cnn`), on real MNIST digits on the GPU — lavapipe when the
//! machine has none — and reports its test accuracy.
//!
//! Run: `scripts/demo`, or `cargo run --release --example mnist`
//! (`-- --help` for options; `--data DIR` takes the official 60k/10k files).

#[path = "cnn.rs"]
mod cnn;

fn main() -> std::process::ExitCode {
    cnn::run("mnist", "Trains the convolutional network on MNIST (the main job).")
}
