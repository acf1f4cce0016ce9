//! Analysis of feature maps, done at feature resolution so it can run on every click and every frame of a
//! scrub: correspondence ([`correspond`]), PCA and PCA-to-RGB ([`pca`]), k-means with cross-image cluster
//! matching ([`kmeans`], [`hungarian`]), recursive normalized cut ([`ncut`]), label upsampling ([`labels`]),
//! multi-tap descriptors ([`aggregate`]). Coordinates follow one convention, described in [`coords`].
//! The analyses as a user asks for them, composed of these kernels and saying what they did, are in
//! [`recipes`].

pub mod aggregate;
pub mod coords;
pub mod correspond;
mod eigen;
pub mod hungarian;
pub mod kmeans;
pub mod labels;
pub mod ncut;
pub mod normalized;
pub mod pca;
pub mod recipes;
pub mod resize;
mod rng;
pub mod upsampled_cosine;

pub use coords::{GridPoint, GridSize, ImagePoint, ImageSize};
pub use normalized::NormalizedMap;
