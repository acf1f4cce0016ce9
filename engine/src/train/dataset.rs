//! The training images: every PNG/JPEG under a folder, decoded once into memory as `[-1,1]` CHW
//! floats, and the order the trainer reads them in (a fresh seeded shuffle each epoch).

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::error::{Error, Result};
use crate::io::image::{find_images, load_rgb};

pub struct ImageDataset {
    pub files: Vec<PathBuf>,
    pub width: usize,
    pub height: usize,
    /// All images, `[N,3,H,W]` in row-major order, values `u8/127.5 - 1`.
    pixels: Vec<f32>,
}

impl ImageDataset {
    /// Decode every image under `dir`; all must have the same size.
    pub fn load(dir: &Path) -> Result<Self> {
        let files = find_images(dir, "training images")?;
        let mut pixels = vec![];
        let mut size: Option<(u32, u32)> = None;
        for file in &files {
            let img = load_rgb(file)?;
            let dims = img.dimensions();
            match size {
                None => size = Some(dims),
                Some(first) if first != dims => {
                    return Err(Error::file(
                        file,
                        format!(
                            "this image is {}x{} but {} is {}x{}: all training images must have the same size",
                            dims.0,
                            dims.1,
                            files[0].display(),
                            first.0,
                            first.1
                        ),
                    ));
                }
                Some(_) => {}
            }
            push_chw(&img, &mut pixels);
        }
        let (width, height) = size.unwrap_or((0, 0));
        Ok(Self {
            files,
            width: width as usize,
            height: height as usize,
            pixels,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    fn image_len(&self) -> usize {
        3 * self.width * self.height
    }

    /// The images at `indices` as one `[B,3,H,W]` tensor.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let n = self.image_len();
        let mut data = Vec::with_capacity(n * indices.len());
        for &i in indices {
            let image = self.pixels.get(i * n..(i + 1) * n).ok_or_else(|| {
                Error::invalid(format!(
                    "image {i} is outside the dataset of {}",
                    self.len()
                ))
            })?;
            data.extend_from_slice(image);
        }
        Ok(Tensor::from_vec(
            data,
            (indices.len(), 3, self.height, self.width),
            device,
        )?)
    }
}

fn push_chw(img: &image::RgbImage, out: &mut Vec<f32>) {
    let plane = (img.width() * img.height()) as usize;
    let start = out.len();
    out.resize(start + 3 * plane, 0.0);
    for (i, px) in img.as_raw().chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            out[start + c * plane + i] = v as f32 / 127.5 - 1.0;
        }
    }
}

/// Which images each step reads: the stream of every epoch's own seeded permutation, cut into
/// batches. A function of (seed, step) alone, so a resumed run reads what an uninterrupted one would.
pub struct BatchOrder {
    seed: u64,
    len: usize,
    epoch: Option<(usize, Vec<usize>)>,
}

impl BatchOrder {
    pub fn new(seed: u64, len: usize) -> Self {
        Self {
            seed,
            len,
            epoch: None,
        }
    }

    /// The dataset indices of the batch of `batch_size` images at training step `step`.
    pub fn indices(&mut self, step: usize, batch_size: usize) -> Vec<usize> {
        (0..batch_size)
            .map(|i| self.at(step * batch_size + i))
            .collect()
    }

    fn at(&mut self, position: usize) -> usize {
        let epoch = position / self.len;
        let needs_shuffle = self.epoch.as_ref().is_none_or(|(e, _)| *e != epoch);
        if needs_shuffle {
            let mut order: Vec<usize> = (0..self.len).collect();
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                self.seed ^ 0x005E_ED0F_E90C ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            order.shuffle(&mut rng);
            self.epoch = Some((epoch, order));
        }
        let order = self
            .epoch
            .as_ref()
            .map(|(_, o)| o.as_slice())
            .unwrap_or(&[]);
        order.get(position % self.len).copied().unwrap_or(0)
    }
}
