//! Eigenvectors of symmetric matrices, our own: cyclic Jacobi for small dense matrices, and block subspace
//! iteration with Rayleigh-Ritz (Jacobi on the small projected matrix) for the top few eigenpairs of a large
//! one. The large matrix is applied with candle matmul; everything else is float64.
//!
//! Subspace iteration keeps `count + oversample` vectors, so eigenvalues repeated up to that many times are
//! found, and it stops when every wanted Ritz pair has a residual `|A x - theta x|` below
//! `tolerance * max|theta|`. Its speed depends on the gap between the wanted eigenvalues and the first one
//! outside the block; PCA of real features and NCut affinities have large gaps.

use candle_core::{DType, Device, Tensor};

use crate::analysis::rng::SplitMix64;
use crate::error::{Error, Result};

/// Eigen-decomposition of a small dense symmetric matrix (row-major `n*n`) by cyclic Jacobi rotations.
/// Returns eigenvalues in descending order and the matching unit eigenvectors.
pub(crate) fn jacobi_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<Vec<f64>>) {
    let mut a = matrix.to_vec();
    a.resize(n * n, 0.0);
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|p| (p + 1..n).map(move |q| (p, q)))
            .map(|(p, q)| a[p * n + q].powi(2))
            .sum();
        if off <= total * 1e-32 || off == 0.0 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() <= f64::MIN_POSITIVE {
                    continue;
                }
                // The rotation angle that zeroes a[p][q]: t = tan(phi), the smaller root for stability.
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for r in 0..n {
                    let (arp, arq) = (a[r * n + p], a[r * n + q]);
                    a[r * n + p] = c * arp - s * arq;
                    a[r * n + q] = s * arp + c * arq;
                }
                for r in 0..n {
                    let (apr, aqr) = (a[p * n + r], a[q * n + r]);
                    a[p * n + r] = c * apr - s * aqr;
                    a[q * n + r] = s * apr + c * aqr;
                }
                for r in 0..n {
                    let (vrp, vrq) = (v[r * n + p], v[r * n + q]);
                    v[r * n + p] = c * vrp - s * vrq;
                    v[r * n + q] = s * vrp + c * vrq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&i, &j| a[j * n + j].total_cmp(&a[i * n + i]).then(i.cmp(&j)));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let vectors = order
        .iter()
        .map(|&i| (0..n).map(|r| v[r * n + i]).collect())
        .collect();
    (values, vectors)
}

/// Settings of [`top_eigenpairs`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct EigenSettings {
    /// How many eigenpairs are wanted.
    pub count: usize,
    /// Extra vectors in the block; more converge faster per iteration and cost more per iteration.
    pub oversample: usize,
    pub max_iterations: usize,
    /// Relative residual at which a Ritz pair counts as converged.
    pub tolerance: f64,
    /// Iterate on `A + shift*I` (to make the wanted end of the spectrum the largest in magnitude); the
    /// returned eigenvalues are those of `A`.
    pub shift: f64,
    pub seed: u64,
}

/// The largest eigenpairs found.
#[derive(Clone, Debug)]
pub(crate) struct TopEigen {
    /// Descending.
    pub values: Vec<f64>,
    /// Unit vectors, one per value.
    pub vectors: Vec<Vec<f64>>,
    pub iterations: usize,
    pub converged: bool,
    /// The largest residual norm relative to the largest |Ritz value| (of `A + shift*I`).
    pub relative_residual: f64,
}

/// The `count` largest eigenpairs of the symmetric `[n,n]` matrix (f32 or f64 tensor) on the orthogonal
/// complement of `deflate` (orthonormal vectors of length n, e.g. an eigenvector known in advance).
pub(crate) fn top_eigenpairs(
    matrix: &Tensor,
    deflate: &[Vec<f64>],
    settings: &EigenSettings,
) -> Result<TopEigen> {
    let (n, n2) = matrix.dims2()?;
    if n != n2 {
        return Err(Error::invalid(format!(
            "eigen-decomposition needs a square matrix, got {n}x{n2}"
        )));
    }
    let available = n.saturating_sub(deflate.len());
    if settings.count == 0 || settings.count > available {
        return Err(Error::invalid(format!(
            "cannot find {} eigenvectors of a {n}x{n} matrix with {} directions excluded",
            settings.count,
            deflate.len()
        )));
    }
    let block = (settings.count + settings.oversample).min(available);
    let mut rng = SplitMix64::new(settings.seed);
    let mut basis: Vec<Vec<f64>> = (0..block).map(|_| random_vector(n, &mut rng)).collect();
    orthonormalize(&mut basis, deflate, &mut rng)?;
    let mut iteration = 0;
    loop {
        iteration += 1;
        let image = apply(matrix, &basis, settings.shift)?;
        // Rayleigh-Ritz: the block's projection of the matrix, symmetrised against rounding.
        let mut projected = vec![0f64; block * block];
        for i in 0..block {
            for j in 0..block {
                projected[i * block + j] = dot(&basis[i], &image[j]);
            }
        }
        for i in 0..block {
            for j in 0..i {
                let mean = 0.5 * (projected[i * block + j] + projected[j * block + i]);
                projected[i * block + j] = mean;
                projected[j * block + i] = mean;
            }
        }
        let (ritz_values, rotations) = jacobi_eigen(&projected, block);
        let ritz_vectors = combine(&basis, &rotations);
        let ritz_images = combine(&image, &rotations);
        let scale = ritz_values
            .iter()
            .fold(0f64, |m, v| m.max(v.abs()))
            .max(f64::MIN_POSITIVE);
        let relative_residual = (0..settings.count)
            .map(|i| {
                let residual: f64 = ritz_images[i]
                    .iter()
                    .zip(&ritz_vectors[i])
                    .map(|(ax, x)| (ax - ritz_values[i] * x).powi(2))
                    .sum();
                residual.sqrt() / scale
            })
            .fold(0f64, f64::max);
        let converged = relative_residual <= settings.tolerance;
        if converged || iteration >= settings.max_iterations || block == available {
            // With the whole complement in the block, Rayleigh-Ritz is exact.
            let converged = converged || block == available;
            return Ok(TopEigen {
                values: ritz_values[..settings.count]
                    .iter()
                    .map(|v| v - settings.shift)
                    .collect(),
                vectors: ritz_vectors.into_iter().take(settings.count).collect(),
                iterations: iteration,
                converged,
                relative_residual,
            });
        }
        basis = ritz_images;
        orthonormalize(&mut basis, deflate, &mut rng)?;
    }
}

/// `(A + shift*I) * Q` for the columns of Q, through candle in the matrix's dtype.
fn apply(matrix: &Tensor, columns: &[Vec<f64>], shift: f64) -> Result<Vec<Vec<f64>>> {
    let n = matrix.dim(0)?;
    let p = columns.len();
    let mut row_major = vec![0f64; n * p];
    for (j, column) in columns.iter().enumerate() {
        for (i, &value) in column.iter().enumerate() {
            row_major[i * p + j] = value;
        }
    }
    let q = Tensor::from_vec(row_major, (n, p), &Device::Cpu)?.to_dtype(matrix.dtype())?;
    let product = matrix
        .matmul(&q)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()?;
    Ok((0..p)
        .map(|j| {
            (0..n)
                .map(|i| product[i * p + j] + shift * columns[j][i])
                .collect()
        })
        .collect())
}

/// Linear combinations of the columns: result k = sum_j columns[j] * coefficients[k][j].
fn combine(columns: &[Vec<f64>], coefficients: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let n = columns.first().map_or(0, Vec::len);
    coefficients
        .iter()
        .map(|coefficient| {
            let mut out = vec![0f64; n];
            for (column, &c) in columns.iter().zip(coefficient) {
                for (o, &x) in out.iter_mut().zip(column) {
                    *o += c * x;
                }
            }
            out
        })
        .collect()
}

/// Modified Gram-Schmidt, twice, against `fixed` and the earlier columns. A column that collapses (it lay
/// in the span of the others) is replaced by a fresh random one.
fn orthonormalize(
    columns: &mut [Vec<f64>],
    fixed: &[Vec<f64>],
    rng: &mut SplitMix64,
) -> Result<()> {
    for j in 0..columns.len() {
        let mut attempts = 0;
        loop {
            let before = norm(&columns[j]);
            for _pass in 0..2 {
                for f in fixed {
                    let c = dot(&columns[j], f);
                    columns[j].iter_mut().zip(f).for_each(|(x, y)| *x -= c * y);
                }
                let (done, rest) = columns.split_at_mut(j);
                let current = &mut rest[0];
                for earlier in done.iter() {
                    let c = dot(current, earlier);
                    current
                        .iter_mut()
                        .zip(earlier)
                        .for_each(|(x, y)| *x -= c * y);
                }
            }
            let after = norm(&columns[j]);
            if after > 1e-10 * before && after > f64::MIN_POSITIVE.sqrt() {
                columns[j].iter_mut().for_each(|x| *x /= after);
                break;
            }
            attempts += 1;
            if attempts > 8 {
                return Err(Error::invalid(
                    "eigen solver: cannot extend the basis (matrix too small for the block)",
                ));
            }
            let n = columns[j].len();
            columns[j] = random_vector(n, rng);
        }
    }
    Ok(())
}

fn random_vector(n: usize, rng: &mut SplitMix64) -> Vec<f64> {
    (0..n).map(|_| rng.next_f64() * 2.0 - 1.0).collect()
}

pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn norm(a: &[f64]) -> f64 {
    dot(a, a).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_pairs(matrix: &[f64], n: usize, values: &[f64], vectors: &[Vec<f64>], tol: f64) {
        for (value, vector) in values.iter().zip(vectors) {
            assert!((norm(vector) - 1.0).abs() < 1e-9);
            for i in 0..n {
                let av: f64 = (0..n).map(|j| matrix[i * n + j] * vector[j]).sum();
                assert!(
                    (av - value * vector[i]).abs() < tol,
                    "residual {} at row {i}",
                    av - value * vector[i]
                );
            }
        }
    }

    #[test]
    fn jacobi_on_a_hand_checked_matrix() {
        // [[2,1],[1,2]] has eigenvalues 3 and 1 with eigenvectors (1,1)/sqrt2 and (1,-1)/sqrt2.
        let (values, vectors) = jacobi_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        assert!((values[0] - 3.0).abs() < 1e-12 && (values[1] - 1.0).abs() < 1e-12);
        assert!((vectors[0][0].abs() - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((vectors[0][0] - vectors[0][1]).abs() < 1e-12);
        let m = [
            4.0, -2.0, 0.5, 1.0, -2.0, 3.0, 0.0, 2.0, 0.5, 0.0, 1.0, -1.0, 1.0, 2.0, -1.0, 5.0,
        ];
        let (values, vectors) = jacobi_eigen(&m, 4);
        check_pairs(&m, 4, &values, &vectors, 1e-10);
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
        // The trace is the sum of eigenvalues.
        assert!((values.iter().sum::<f64>() - 13.0).abs() < 1e-10);
    }

    #[test]
    fn subspace_iteration_finds_the_top_of_a_planted_spectrum() {
        // A = Q diag(lambda) Q^T with a random orthogonal Q from Jacobi of a random symmetric matrix.
        let n = 40;
        let mut rng = SplitMix64::new(7);
        let mut s = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..=i {
                let x = rng.next_f64() - 0.5;
                s[i * n + j] = x;
                s[j * n + i] = x;
            }
        }
        let (_, q) = jacobi_eigen(&s, n);
        let lambda: Vec<f64> = (0..n)
            .map(|i| {
                if i < 3 {
                    10.0 - 2.0 * i as f64
                } else {
                    1.0 / (1.0 + i as f64)
                }
            })
            .collect();
        let mut a = vec![0f64; n * n];
        for (l, v) in lambda.iter().zip(&q) {
            for i in 0..n {
                for j in 0..n {
                    a[i * n + j] += l * v[i] * v[j];
                }
            }
        }
        let tensor = Tensor::from_vec(a.clone(), (n, n), &Device::Cpu).unwrap();
        let settings = EigenSettings {
            count: 3,
            oversample: 4,
            max_iterations: 500,
            tolerance: 1e-12,
            shift: 0.0,
            seed: 1,
        };
        let top = top_eigenpairs(&tensor, &[], &settings).unwrap();
        assert!(top.converged);
        for (found, expected) in top.values.iter().zip([10.0, 8.0, 6.0]) {
            assert!((found - expected).abs() < 1e-9, "{:?}", top.values);
        }
        check_pairs(&a, n, &top.values, &top.vectors, 1e-9);
        // Deflating the first eigenvector moves the others up.
        let deflated = top_eigenpairs(
            &tensor,
            &[q[0].clone()],
            &EigenSettings {
                count: 2,
                ..settings
            },
        )
        .unwrap();
        assert!((deflated.values[0] - 8.0).abs() < 1e-9 && (deflated.values[1] - 6.0).abs() < 1e-9);
    }

    #[test]
    fn repeated_and_tiny_cases() {
        // diag(5, 5, 1): a repeated top eigenvalue is found twice; a 3x3 matrix fits in one block.
        let a = vec![5.0, 0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0, 1.0];
        let tensor = Tensor::from_vec(a, (3, 3), &Device::Cpu).unwrap();
        let settings = EigenSettings {
            count: 2,
            oversample: 4,
            max_iterations: 50,
            tolerance: 1e-12,
            shift: 0.0,
            seed: 3,
        };
        let top = top_eigenpairs(&tensor, &[], &settings).unwrap();
        assert!((top.values[0] - 5.0).abs() < 1e-12 && (top.values[1] - 5.0).abs() < 1e-12);
        assert!(top_eigenpairs(
            &tensor,
            &[],
            &EigenSettings {
                count: 4,
                ..settings
            }
        )
        .is_err());
    }
}
