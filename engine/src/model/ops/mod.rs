//! One kernel per operation, for inference and training: convolution, group norm (with the SiLU
//! after it), softmax, the attention core, nearest upsampling, channel bias. Each picks its path
//! by device and dtype: hand-written CPU kernels in float32 (with backward passes where training
//! needs them), CUDA kernels where this build has them (`cuda` feature), candle's ops otherwise.

pub mod attention;
pub mod channel_bias;
pub mod conv;
mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod group_norm;
pub mod im2col;
pub mod softmax;
pub mod upsample;
pub mod vector_exp;

pub use attention::attention;
pub use channel_bias::add_channel_bias;
pub use conv::{conv2d, Conv2d};
pub use group_norm::{group_norm, GroupNorm};
pub use softmax::softmax_last_dim;
pub use upsample::upsample_nearest;
