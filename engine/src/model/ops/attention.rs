//! The core of attention, `softmax(q kᵀ · scale) v` over heads, with memory bounded whatever the
//! number of tokens (SD 2.1 at 768x768 has 9216).
//!
//! On a GPU in half precision a fused kernel computes it without ever holding the score matrix
//! (one pass over the keys per tile of queries, the softmax kept online in float32). Elsewhere
//! the scores are computed a chunk of queries at a time: on the CPU chunks small enough to stay
//! in cache-friendly heap buffers, on a GPU chunks sized to its free memory, so there the whole
//! product usually runs as one batched call over all heads.
//!
//! [`attention_with_probs`] also hands out the probabilities, for attention maps: always on the
//! chunked path, the kept rows taken from each chunk as it passes.

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Largest score matrix (batch x heads x queries x keys) held at once on the CPU: 4 Mi floats,
/// 16 MiB. Below glibc's largest mmap threshold (32 MiB), so each chunk's buffers are reused from
/// the heap instead of being mapped and faulted in afresh.
pub const CPU_CHUNK_ELEMENTS: usize = 4 << 20;

/// `softmax(q kᵀ · scale) v` for `q` `[B, N, H*d]` and `k`, `v` `[B or 1, M, H*d]` (a context
/// shared by the whole batch may be given once); returns `[B, N, H*d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, scale: f64) -> Result<Tensor> {
    check_shapes(q, k, v, heads)?;
    #[cfg(feature = "cuda")]
    if let Some(out) = super::cuda::flash_attention(q, k, v, heads, scale)? {
        return Ok(out);
    }
    chunked_over_heads(q, k, v, heads, scale, &mut |_, _| Ok(()))
}

/// Which query rows of the attention probabilities [`attention_with_probs`] keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeptRows {
    /// Every query's row.
    All,
    /// The row of one query (a token index).
    One(usize),
}

/// [`attention`], and the probabilities `softmax(q kᵀ · scale)` of the kept query rows, summed
/// over the batch, as float32 `[H, rows, M]`. They are the very probabilities the output is
/// made of, taken chunk by chunk from the chunked path (the fused kernel never forms them), so
/// one kept row costs one row of memory.
pub fn attention_with_probs(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    rows: KeptRows,
) -> Result<(Tensor, Tensor)> {
    check_shapes(q, k, v, heads)?;
    let (b, n, _) = q.dims3()?;
    if let KeptRows::One(row) = rows {
        if row >= n {
            return Err(Error::invalid(format!(
                "attention: query {row} asked for, there are {n}"
            )));
        }
    }
    let mut kept = Vec::new();
    let out = chunked_over_heads(q, k, v, heads, scale, &mut |start, probs| {
        let len = probs.dim(1)?;
        let part = match rows {
            KeptRows::All => probs.clone(),
            KeptRows::One(row) if (start..start + len).contains(&row) => {
                probs.narrow(1, row - start, 1)?
            }
            KeptRows::One(_) => return Ok(()),
        };
        let (_, r, m) = part.dims3()?;
        kept.push(
            part.to_dtype(DType::F32)?
                .reshape((b, heads, r, m))?
                .sum(0)?,
        );
        Ok(())
    })?;
    let probs = if kept.len() == 1 {
        kept.remove(0)
    } else {
        Tensor::cat(&kept, 1)?
    };
    Ok((out, probs))
}

fn check_shapes(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize) -> Result<()> {
    let (b, _, c) = q.dims3()?;
    let (kb, m, kc) = k.dims3()?;
    if heads == 0 || c % heads != 0 || kc != c || v.dims3()? != (kb, m, kc) || (kb != b && kb != 1)
    {
        return Err(Error::invalid(format!(
            "attention: q {:?}, k {:?}, v {:?} do not fit {heads} heads",
            q.dims(),
            k.dims(),
            v.dims()
        )));
    }
    Ok(())
}

/// The chunked path on `[B, N, H*d]` inputs (checked), showing each chunk's probabilities to
/// `on_chunk`.
fn chunked_over_heads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    scale: f64,
    on_chunk: &mut ChunkObserver,
) -> Result<Tensor> {
    let (b, _, _) = q.dims3()?;
    let (kb, m, kc) = k.dims3()?;
    let (k, v) = if kb != b {
        (
            k.broadcast_as((b, m, kc))?.contiguous()?,
            v.broadcast_as((b, m, kc))?.contiguous()?,
        )
    } else {
        (k.clone(), v.clone())
    };
    let q = split_heads(q, heads)?;
    let k = split_heads(&k, heads)?;
    let v = split_heads(&v, heads)?;
    let max_elements = chunk_elements(q.device(), q.dtype());
    let out = chunked_attention_observed(&q, &k, &v, scale, max_elements, on_chunk)?;
    merge_heads(&out, heads)
}

/// How many score values the chunked path may hold at once on `device`.
fn chunk_elements(device: &Device, dtype: DType) -> usize {
    if device.is_cpu() {
        return CPU_CHUNK_ELEMENTS;
    }
    // The scores and their softmax live at once: a quarter of the work budget for both, and at
    // most 1 GiB (larger chunks gain nothing once a product fills the GPU, and would raise the
    // peak memory above diffusers' own).
    let bytes = (crate::device::work_budget(device) / 4).min(1 << 30);
    (bytes / (2 * dtype.size_in_bytes() as u64)).min(isize::MAX as u64) as usize
}

/// Sees the probabilities `[BH, len, M]` of each chunk of queries, starting at query `start`.
pub type ChunkObserver<'a> = dyn FnMut(usize, &Tensor) -> Result<()> + 'a;

/// softmax(q kᵀ · scale) v over `[BH, N, d]` inputs, a chunk of queries at a time so that at
/// most `max_elements` scores exist at once.
pub fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    max_elements: usize,
) -> Result<Tensor> {
    chunked_attention_observed(q, k, v, scale, max_elements, &mut |_, _| Ok(()))
}

/// [`chunked_attention`], showing each chunk's probabilities to `on_chunk` before they are used.
pub fn chunked_attention_observed(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    max_elements: usize,
    on_chunk: &mut ChunkObserver,
) -> Result<Tensor> {
    let (bh, n, _) = q.dims3()?;
    let m = k.dim(1)?;
    let kt = k.t()?.contiguous()?;
    // Scale the queries rather than the scores: N x d values instead of N x M.
    let q = (q * scale)?;
    let chunk = (max_elements / (bh * m).max(1)).clamp(1, n.max(1));
    let mut outs = Vec::with_capacity(n.div_ceil(chunk));
    let mut start = 0;
    while start < n {
        let len = chunk.min(n - start);
        let qc = q.narrow(1, start, len)?;
        let scores = qc.matmul(&kt)?;
        let probs = super::softmax::softmax_last_dim(&scores)?;
        on_chunk(start, &probs)?;
        outs.push(probs.matmul(v)?);
        start += len;
    }
    Ok(if outs.len() == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(&outs, 1)?
    })
}

/// `[B, N, H*d]` -> `[B*H, N, d]`.
pub fn split_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (b, n, c) = x.dims3()?;
    Ok(x.reshape((b, n, heads, c / heads))?
        .transpose(1, 2)?
        .reshape((b * heads, n, c / heads))?
        .contiguous()?)
}

/// `[B*H, N, d]` -> `[B, N, H*d]`.
pub fn merge_heads(x: &Tensor, heads: usize) -> Result<Tensor> {
    let (bh, n, d) = x.dims3()?;
    Ok(x.reshape((bh / heads, heads, n, d))?
        .transpose(1, 2)?
        .reshape((bh / heads, n, heads * d))?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::recipe::seeded_normal;
    use candle_core::Device;

    #[test]
    fn query_chunks_give_the_same_attention() {
        let dev = Device::Cpu;
        let (bh, n, m, d) = (3, 50, 40, 8);
        let q = seeded_normal(1, &[bh, n, d], &dev).unwrap();
        let k = seeded_normal(2, &[bh, m, d], &dev).unwrap();
        let v = seeded_normal(3, &[bh, m, d], &dev).unwrap();
        let whole = chunked_attention(&q, &k, &v, 0.3, usize::MAX).unwrap();
        // 7 queries per chunk: 8 chunks, the last one short.
        let chunked = chunked_attention(&q, &k, &v, 0.3, bh * m * 7).unwrap();
        let diff = crate::test_util::max_abs_diff(&whole, &chunked);
        assert!(diff < 1e-6, "{diff}");
    }

    /// A context given once for the whole batch gives what the batch of copies gives.
    #[test]
    fn a_shared_context_equals_its_copies() {
        let dev = Device::Cpu;
        let q = seeded_normal(4, &[3, 10, 8], &dev).unwrap();
        let k = seeded_normal(5, &[1, 6, 8], &dev).unwrap();
        let v = seeded_normal(6, &[1, 6, 8], &dev).unwrap();
        let shared = attention(&q, &k, &v, 2, 0.5).unwrap();
        let copies = |t: &Tensor| Tensor::cat(&[t, t, t], 0).unwrap();
        let batched = attention(&q, &copies(&k), &copies(&v), 2, 0.5).unwrap();
        assert_eq!(crate::test_util::max_abs_diff(&shared, &batched), 0.0);
        let e = attention(&q, &k, &v, 3, 0.5).unwrap_err().to_string();
        assert!(e.contains("3 heads"), "{e}");
    }
    /// The kept probabilities are softmax(q kᵀ · scale) itself, summed over the batch, whatever
    /// the chunking; one row is that row of all of them; the output is the plain attention's.
    #[test]
    fn probabilities_are_the_softmax_the_output_is_made_of() {
        let dev = Device::Cpu;
        let (b, n, m, heads, d) = (2, 9, 7, 3, 4);
        let q = seeded_normal(7, &[b, n, heads * d], &dev).unwrap();
        let k = seeded_normal(8, &[1, m, heads * d], &dev).unwrap();
        let v = seeded_normal(9, &[1, m, heads * d], &dev).unwrap();
        let scale = 0.4;
        let (out, all) = attention_with_probs(&q, &k, &v, heads, scale, KeptRows::All).unwrap();
        assert_eq!(all.dims(), &[heads, n, m]);
        let plain = attention(&q, &k, &v, heads, scale).unwrap();
        assert_eq!(crate::test_util::max_abs_diff(&out, &plain), 0.0);
        // Directly: [B*H, N, M] softmax of the scaled scores, then the batch summed.
        let qh = split_heads(&q, heads).unwrap();
        let kh = split_heads(&Tensor::cat(&[&k, &k], 0).unwrap(), heads).unwrap();
        let scores = (qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap();
        let direct = candle_nn::ops::softmax_last_dim(&scores)
            .unwrap()
            .reshape((b, heads, n, m))
            .unwrap()
            .sum(0)
            .unwrap();
        let diff = crate::test_util::max_abs_diff(&all, &direct);
        assert!(diff < 1e-6, "{diff}");
        let row_sums = all
            .sum(2)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert!(row_sums.iter().all(|s| (s - b as f32).abs() < 1e-5));
        // Small chunks: the same probabilities; one row equals that row.
        let qh_chunks = chunked_attention_observed(
            &qh,
            &kh,
            &split_heads(&Tensor::cat(&[&v, &v], 0).unwrap(), heads).unwrap(),
            scale,
            b * heads * m * 2,
            &mut |start, probs| {
                let len = probs.dim(1).unwrap();
                let whole = direct.narrow(1, start, len).unwrap();
                let part = probs.reshape((b, heads, len, m)).unwrap().sum(0).unwrap();
                assert!(crate::test_util::max_abs_diff(&part, &whole) < 1e-6);
                Ok(())
            },
        );
        assert!(qh_chunks.is_ok());
        let (_, one) = attention_with_probs(&q, &k, &v, heads, scale, KeptRows::One(5)).unwrap();
        assert_eq!(one.dims(), &[heads, 1, m]);
        let diff = crate::test_util::max_abs_diff(&one, &all.narrow(1, 5, 1).unwrap());
        assert_eq!(diff, 0.0);
        let e = attention_with_probs(&q, &k, &v, heads, scale, KeptRows::One(9)).unwrap_err();
        assert!(e.to_string().contains("query 9"), "{e}");
    }
}
