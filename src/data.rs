//! Datasets: the IDX format of MNIST (optionally gzip-compressed) and the
//! MNIST digits, batched into tensors.

use crate::error::{Error, Result};
use crate::runtime::Device;
use crate::tensor::Tensor;

/// An IDX array of unsigned bytes (type code 0x08), the format of MNIST.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Idx {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, row-major.
    pub data: Vec<u8>,
}

/// Files larger than this are refused rather than allocated.
const MAX_IDX_BYTES: usize = 1 << 31;

fn malformed(name: &str, why: impl std::fmt::Display) -> Error {
    Error::Format(format!("{name}: not a valid IDX file: {why}"))
}

impl Idx {
    /// Parses IDX bytes, gzip-compressed or not. `name` is used in errors.
    /// The header is checked before anything is allocated, so a truncated or
    /// hostile file is an error, never a huge allocation.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Idx> {
        use std::io::Read;
        let gzipped = bytes.starts_with(&[0x1f, 0x8b]);
        let mut reader: Box<dyn Read + '_> =
            if gzipped { Box::new(flate2::read::GzDecoder::new(bytes)) } else { Box::new(bytes) };
        let mut header = [0u8; 4];
        reader.read_exact(&mut header).map_err(|e| malformed(name, format!("no header ({e})")))?;
        if header[0] != 0 || header[1] != 0 {
            return Err(malformed(name, format!("bad magic {header:02x?}")));
        }
        if header[2] != 0x08 {
            return Err(malformed(name, format!("element type 0x{:02x} is not unsigned bytes (0x08)", header[2])));
        }
        let ndims = header[3] as usize;
        if ndims == 0 {
            return Err(malformed(name, "zero dimensions"));
        }
        let mut dims = Vec::with_capacity(ndims);
        let mut total: usize = 1;
        for _ in 0..ndims {
            let mut d = [0u8; 4];
            reader.read_exact(&mut d).map_err(|e| malformed(name, format!("truncated header ({e})")))?;
            let d = u32::from_be_bytes(d) as usize;
            total = total
                .checked_mul(d)
                .filter(|&t| t <= MAX_IDX_BYTES)
                .ok_or_else(|| malformed(name, format!("dimensions {dims:?}×{d}… exceed {MAX_IDX_BYTES} bytes")))?;
            dims.push(d);
        }
        if !gzipped && bytes.len() - 4 - 4 * ndims != total {
            return Err(malformed(
                name,
                format!("dimensions {dims:?} need {total} bytes of data, the file has {}", bytes.len() - 4 - 4 * ndims),
            ));
        }
        let mut data = Vec::new();
        // one byte more than expected reveals trailing data
        reader
            .take(total as u64 + 1)
            .read_to_end(&mut data)
            .map_err(|e| malformed(name, format!("corrupt compressed data ({e})")))?;
        if data.len() != total {
            return Err(malformed(
                name,
                format!("dimensions {dims:?} need {total} bytes of data, found {}", data.len()),
            ));
        }
        Ok(Idx { dims, data })
    }

    /// Reads and parses an IDX file.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read(path: impl AsRef<std::path::Path>) -> Result<Idx> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::Io(format!("{}: {e}", path.display())))?;
        Idx::parse(&path.display().to_string(), &bytes)
    }
}

/// One split of MNIST: 28×28 grey images (0 = background, 255 = ink) and labels.
#[derive(Clone, Debug)]
pub struct Split {
    pub images: Vec<u8>,
    pub labels: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
}

impl Split {
    /// Pairs images with labels; `names` (of the two files) are used in errors.
    fn new(images: Idx, labels: Idx, names: [&str; 2]) -> Result<Split> {
        let [image_file, label_file] = names;
        let (n, rows, cols) = match images.dims[..] {
            [n, r, c] => (n, r, c),
            _ => {
                return Err(Error::Format(format!(
                    "{image_file}: MNIST images must be 3-d, got dimensions {:?}",
                    images.dims
                )));
            }
        };
        if labels.dims != [n] {
            return Err(Error::Format(format!(
                "{label_file}: {n} MNIST images but labels of dimensions {:?}",
                labels.dims
            )));
        }
        if let Some(bad) = labels.data.iter().find(|&&l| l > 9) {
            return Err(Error::Format(format!("{label_file}: MNIST label {bad} is not a digit")));
        }
        Ok(Split { images: images.data, labels: labels.data, rows, cols })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels per image.
    pub fn pixels(&self) -> usize {
        self.rows * self.cols
    }

    /// The examples `indices` as tensors: images [B, rows·cols] scaled to
    /// [0, 1] (f32) and labels `[B]` (u32). Two uploads. An index past the
    /// split is a mistake in the caller and panics, naming it.
    #[track_caller]
    pub fn batch(&self, device: &Device, indices: &[usize]) -> (Tensor, Tensor) {
        if let Some(&i) = indices.iter().find(|&&i| i >= self.len()) {
            panic!("wgrad: batch: example index {i} is out of range for a split of {} examples", self.len());
        }
        let px = self.pixels();
        let mut x = Vec::with_capacity(indices.len() * px);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            x.extend(self.images[i * px..(i + 1) * px].iter().map(|&v| v as f32 / 255.0));
            y.push(self.labels[i] as u32);
        }
        (Tensor::from_slice(device, &x, &[indices.len(), px]), Tensor::from_slice(device, &y, &[indices.len()]))
    }

    /// The example indices in batches of `size` (the last may be smaller),
    /// shuffled with `seed` (a fixed permutation per seed).
    pub fn batches(&self, size: usize, seed: u64) -> Vec<Vec<usize>> {
        let mut order: Vec<usize> = (0..self.len()).collect();
        let mut state = seed ^ 0x9E37_79B9_7F4A_7C15;
        for i in (1..order.len()).rev() {
            // SplitMix64, enough for shuffling
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            order.swap(i, (z % (i as u64 + 1)) as usize);
        }
        order.chunks(size.max(1)).map(<[usize]>::to_vec).collect()
    }
}

/// The MNIST digits: a training and a test split.
#[derive(Clone, Debug)]
pub struct Mnist {
    pub train: Split,
    pub test: Split,
}

/// The standard file names, without the optional `.gz`.
const FILES: [&str; 4] =
    ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"];

impl Mnist {
    /// Builds the dataset from the four IDX files' bytes (train images,
    /// train labels, test images, test labels), e.g. fetched by a web page.
    pub fn from_bytes(files: [&[u8]; 4]) -> Result<Mnist> {
        Mnist::parse(FILES.map(String::from), files)
    }

    /// Parses the four files, named `names` in errors.
    fn parse(names: [String; 4], files: [&[u8]; 4]) -> Result<Mnist> {
        let parse = |i: usize| Idx::parse(&names[i], files[i]);
        let split = |i: usize| Split::new(parse(i)?, parse(i + 1)?, [&names[i], &names[i + 1]]);
        Ok(Mnist { train: split(0)?, test: split(2)? })
    }

    /// Loads the four standard files from `dir` (each plain or `.gz`): the
    /// official 60k/10k files, or the 8k/2k digits shipped in `data/mnist`.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn load(dir: impl AsRef<std::path::Path>) -> Result<Mnist> {
        let dir = dir.as_ref();
        let mut bytes = Vec::with_capacity(4);
        for name in FILES {
            let plain = dir.join(name);
            let gz = dir.join(format!("{name}.gz"));
            let path = if plain.exists() { plain } else { gz };
            let data = std::fs::read(&path).map_err(|e| {
                Error::Io(format!("{}: {e} (expected the MNIST files {FILES:?}, optionally .gz)", path.display()))
            })?;
            bytes.push(data);
        }
        Mnist::parse(FILES.map(|f| dir.join(f).display().to_string()), [&bytes[0], &bytes[1], &bytes[2], &bytes[3]])
    }
}
