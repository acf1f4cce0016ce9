//! The analyses as a user asks for them, each in one place: PCA to RGB ([`pca_rgb`]), segmentation
//! ([`segment`]), correspondence of points ([`correspondence`]) and DAAM-style attention maps
//! ([`attention`]). A recipe composes the kernels of
//! [`crate::analysis`] and returns its result with a description of exactly what was done, which the
//! workbench's captions, the CLI's figures and reports quote. The worker (with its caches), the CLI
//! (with its arguments and files) and `eval` call these; none repeats their steps. PCK is counted by
//! [`crate::eval::pck::PckAccumulator`] on predictions from [`correspondence::predict_keypoints`].

pub mod attention;
pub mod correspondence;
pub mod fusion;
pub mod pca_rgb;
pub mod segment;

/// A `[C,h,w]` map holding `value(channel, row, column)`, for the recipes' tests.
#[cfg(test)]
fn map_from_fn(
    channels: usize,
    height: usize,
    width: usize,
    value: impl Fn(usize, usize, usize) -> f32,
) -> crate::FeatureMap {
    let data = (0..channels)
        .flat_map(|c| (0..height).flat_map(move |y| (0..width).map(move |x| (c, y, x))))
        .map(|(c, y, x)| value(c, y, x))
        .collect();
    crate::FeatureMap::new(channels, height, width, data).expect("the shape holds its values")
}
