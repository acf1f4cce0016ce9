//! Correspondence by cosine similarity of feature vectors, done at feature resolution.
//!
//! A click: the source map is sampled bilinearly at the clicked point (raw features, then L2-normalised,
//! which is the vector DIFT gets from its upsampled map at that pixel), and compared with every cell of each
//! target map (normalised once, see [`NormalizedMap`]). The best match is the argmax cell refined to sub-pixel
//! precision by a local soft-argmax. Nothing is upsampled: for display, upsample the similarity map
//! ([`SimilarityMap::upsample_bilinear`]), never the features. Coordinates follow [`crate::analysis::coords`].
//!
//! Dense mode: the best target cell for every source cell, with mutual-nearest-neighbour flags, for warps and
//! sparse mutual matches. It multiplies the two unit matrices in row chunks (candle matmul) so memory stays
//! bounded at `chunk_cells * target_cells` floats.

use candle_core::{Device, Tensor};

use crate::analysis::coords::{cell_of, ImagePoint, ImageSize};
use crate::analysis::coords::{
    check_inside, grid_to_image, image_to_grid, linear_taps, GridPoint, GridSize,
};
use crate::analysis::normalized::l2_normalize;
pub use crate::analysis::normalized::NormalizedMap;
use crate::error::{Error, Result};

/// Settings of a point query.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CorrespondOptions {
    /// Half-size of the soft-argmax window around the argmax cell: 1 gives 3x3, 2 gives 5x5.
    pub window_radius: usize,
    /// Softmax temperature on cosine similarities inside the window: weight = exp((s - s_max) / temperature).
    /// 0.05 lets a neighbour 0.05 below the peak pull with weight e^-1; near 0 it is the plain argmax.
    pub temperature: f32,
    /// The match is mutual when the best target cell matches back to a source cell within this many cells
    /// (Chebyshev distance) of the cell that holds the query point. 1 accepts neighbours, 0 asks for the same cell.
    pub mutual_tolerance: usize,
}

impl Default for CorrespondOptions {
    fn default() -> Self {
        Self {
            window_radius: 1,
            temperature: 0.05,
            mutual_tolerance: 1,
        }
    }
}

/// One target of a query: its normalised map and the size of its image.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub map: &'a NormalizedMap,
    pub image: ImageSize,
}

/// Cosine similarity per cell of a feature grid, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarityMap {
    pub grid: GridSize,
    pub values: Vec<f32>,
}

impl SimilarityMap {
    pub fn at(&self, row: usize, col: usize) -> Option<f32> {
        if row < self.grid.height && col < self.grid.width {
            self.values.get(row * self.grid.width + col).copied()
        } else {
            None
        }
    }

    /// The first cell (row-major) with the largest value, and that value.
    pub fn argmax(&self) -> (usize, f32) {
        argmax(&self.values)
    }

    /// Bilinear upsampling to an image size (`[H*W]` row-major) with the pixel-centre convention, for display.
    pub fn upsample_bilinear(&self, image: ImageSize) -> Vec<f32> {
        crate::analysis::resize::resize_plane_bilinear(
            &self.values,
            self.grid,
            GridSize::new(image.height, image.width),
        )
    }
}

/// The answer of a point query for one target.
#[derive(Clone, Debug, PartialEq)]
pub struct PointMatch {
    /// Cosine similarity of the query vector with every target cell.
    pub similarity: SimilarityMap,
    /// The argmax cell (row, column).
    pub best_cell: (usize, usize),
    /// The similarity at the argmax cell.
    pub best_similarity: f32,
    /// The soft-argmax refined match, in target image coordinates.
    pub point: ImagePoint,
    /// The same position in target grid coordinates (cells).
    pub grid_point: GridPoint,
    /// The source cell (row, column) whose vector is most similar to the best target cell.
    pub back_cell: (usize, usize),
    /// Whether `back_cell` lies within `mutual_tolerance` cells of the source cell holding the query point.
    pub mutual: bool,
}

/// The unit feature vector at an image point of the source: raw features sampled bilinearly (pixel-centre
/// convention), then L2-normalised. Errors when the point is outside the image.
pub fn source_vector(
    source: &NormalizedMap,
    image: ImageSize,
    point: ImagePoint,
) -> Result<Vec<f32>> {
    check_inside(point, image, "source point")?;
    let grid = source.grid();
    let g = image_to_grid(point, image, grid);
    let (x0, x1, wx) = linear_taps(g.x, grid.width);
    let (y0, y1, wy) = linear_taps(g.y, grid.height);
    let taps = [
        (y0 * grid.width + x0, (1.0 - wy) * (1.0 - wx)),
        (y0 * grid.width + x1, (1.0 - wy) * wx),
        (y1 * grid.width + x0, wy * (1.0 - wx)),
        (y1 * grid.width + x1, wy * wx),
    ];
    let cells = grid.cells();
    let mut vector: Vec<f32> = source
        .raw()
        .data
        .chunks_exact(cells)
        .map(|channel| {
            taps.iter()
                .map(|&(cell, weight)| weight * channel[cell])
                .sum()
        })
        .collect();
    l2_normalize(&mut vector);
    Ok(vector)
}

/// Cosine similarity of a unit vector with every cell of a target.
pub fn similarity_map(vector: &[f32], target: &NormalizedMap) -> Result<SimilarityMap> {
    if vector.len() != target.channels() {
        return Err(Error::invalid(format!(
            "query vector has {} channels, the target map {}",
            vector.len(),
            target.channels()
        )));
    }
    Ok(SimilarityMap {
        grid: target.grid(),
        values: target.dot_all(vector),
    })
}

/// Match one source point in every target. Errors on a point outside the source image, an empty image size,
/// or a target whose channel count differs from the source's.
pub fn correspond_point(
    source: &NormalizedMap,
    source_image: ImageSize,
    point: ImagePoint,
    targets: &[Target<'_>],
    options: &CorrespondOptions,
) -> Result<Vec<PointMatch>> {
    check_options(options)?;
    for (i, target) in targets.iter().enumerate() {
        check_channels(source, target.map, &format!("target {i}"))?;
        target.image.ensure_nonempty(&format!("target {i}"))?;
    }
    let vector = source_vector(source, source_image, point)?;
    let query_cell = cell_of(point, source_image, source.grid());
    targets
        .iter()
        .map(|target| {
            let similarity = similarity_map(&vector, target.map)?;
            let (best, best_similarity) = similarity.argmax();
            let grid = target.map.grid();
            let best_cell = grid.row_col(best);
            let grid_point = refine_soft_argmax(
                &similarity,
                best_cell,
                options.window_radius,
                options.temperature,
            );
            let back = source.dot_all(&target.map.cell_vector(best));
            let back_cell = source.grid().row_col(argmax(&back).0);
            let mutual = chebyshev(back_cell, query_cell) <= options.mutual_tolerance;
            Ok(PointMatch {
                point: grid_to_image(grid_point, target.image, grid),
                grid_point,
                similarity,
                best_cell,
                best_similarity,
                back_cell,
                mutual,
            })
        })
        .collect()
}

/// Soft-argmax in a (2r+1)^2 window around `cell` (clipped at the grid border): the softmax-weighted mean of
/// the cell centres, weights `exp((s - s_max)/temperature)`. Returns grid coordinates. At the border the
/// window is one-sided, so a flat peak there is pulled inward by up to half a cell.
pub fn refine_soft_argmax(
    similarity: &SimilarityMap,
    cell: (usize, usize),
    radius: usize,
    temperature: f32,
) -> GridPoint {
    let grid = similarity.grid;
    let (row, col) = cell;
    let rows = row.saturating_sub(radius)..=(row + radius).min(grid.height.saturating_sub(1));
    let cols = col.saturating_sub(radius)..=(col + radius).min(grid.width.saturating_sub(1));
    let peak = similarity.at(row, col).unwrap_or(0.0);
    let (mut total, mut sum_x, mut sum_y) = (0f64, 0f64, 0f64);
    for r in rows {
        for c in cols.clone() {
            let s = similarity.at(r, c).unwrap_or(f32::NEG_INFINITY);
            let weight = (f64::from(s - peak) / f64::from(temperature)).exp();
            total += weight;
            sum_x += weight * c as f64;
            sum_y += weight * r as f64;
        }
    }
    if total > 0.0 && total.is_finite() {
        GridPoint {
            x: (sum_x / total) as f32,
            y: (sum_y / total) as f32,
        }
    } else {
        GridPoint {
            x: col as f32,
            y: row as f32,
        }
    }
}

/// Settings of dense matching.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DenseOptions {
    /// A pair is mutual when the target cell's best source cell is within this many cells (Chebyshev) of the
    /// source cell. 0 is the classical mutual nearest neighbour.
    pub mutual_tolerance: usize,
    /// Source cells per matrix product; bounds memory to `chunk_cells * target cells` floats.
    pub chunk_cells: usize,
}

impl Default for DenseOptions {
    fn default() -> Self {
        Self {
            mutual_tolerance: 0,
            chunk_cells: 1024,
        }
    }
}

/// The best target cell for one source cell.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CellMatch {
    /// Row-major index of the best target cell.
    pub target_cell: usize,
    /// Its cosine similarity.
    pub similarity: f32,
    /// Whether the target cell matches back to this source cell (within the tolerance).
    pub mutual: bool,
}

/// Best matches between every source cell and the target grid, both ways.
#[derive(Clone, Debug, PartialEq)]
pub struct DenseMatches {
    pub source_grid: GridSize,
    pub target_grid: GridSize,
    /// One per source cell, row-major.
    pub matches: Vec<CellMatch>,
    /// For each target cell (row-major), its best source cell.
    pub back: Vec<usize>,
}

impl DenseMatches {
    /// The mutual pairs: (source cell, target cell, similarity), in source order.
    pub fn mutual_pairs(&self) -> Vec<(usize, usize, f32)> {
        self.matches
            .iter()
            .enumerate()
            .filter(|(_, m)| m.mutual)
            .map(|(source, m)| (source, m.target_cell, m.similarity))
            .collect()
    }

    /// A pair of cells as image points (cell centres) in the source and target images.
    pub fn cell_centres(
        &self,
        source_cell: usize,
        target_cell: usize,
        source_image: ImageSize,
        target_image: ImageSize,
    ) -> (ImagePoint, ImagePoint) {
        let centre = |cell: usize, grid: GridSize, image: ImageSize| {
            let (row, col) = grid.row_col(cell);
            grid_to_image(
                GridPoint {
                    x: col as f32,
                    y: row as f32,
                },
                image,
                grid,
            )
        };
        (
            centre(source_cell, self.source_grid, source_image),
            centre(target_cell, self.target_grid, target_image),
        )
    }
}

/// Best target cell for every source cell, and mutual flags. Errors on mismatched channel counts.
pub fn dense_matches(
    source: &NormalizedMap,
    target: &NormalizedMap,
    options: &DenseOptions,
) -> Result<DenseMatches> {
    check_channels(source, target, "target")?;
    if options.chunk_cells == 0 {
        return Err(Error::invalid(
            "dense matching: chunk_cells must be at least 1",
        ));
    }
    let (channels, n_source, n_target) = (source.channels(), source.cells(), target.cells());
    let device = Device::Cpu;
    let source_t = Tensor::from_slice(source.unit(), (channels, n_source), &device)?;
    let target_t = Tensor::from_slice(target.unit(), (channels, n_target), &device)?;
    let mut forward = Vec::with_capacity(n_source);
    let mut back_best = vec![f32::NEG_INFINITY; n_target];
    let mut back = vec![0usize; n_target];
    let mut start = 0;
    while start < n_source {
        let len = options.chunk_cells.min(n_source - start);
        // [len, C] x [C, n_target]: cosine of each chunk cell with every target cell.
        let block = source_t.narrow(1, start, len)?.t()?.matmul(&target_t)?;
        let values = block.flatten_all()?.to_vec1::<f32>()?;
        for (offset, row) in values.chunks_exact(n_target).enumerate() {
            let (best, similarity) = argmax(row);
            forward.push((best, similarity));
            for ((best_back, back_cell), &s) in back_best.iter_mut().zip(back.iter_mut()).zip(row) {
                if s > *best_back {
                    *best_back = s;
                    *back_cell = start + offset;
                }
            }
        }
        start += len;
    }
    let (source_grid, target_grid) = (source.grid(), target.grid());
    let matches = forward
        .into_iter()
        .enumerate()
        .map(|(cell, (target_cell, similarity))| {
            let returned = source_grid.row_col(back[target_cell]);
            let mutual = chebyshev(returned, source_grid.row_col(cell)) <= options.mutual_tolerance;
            CellMatch {
                target_cell,
                similarity,
                mutual,
            }
        })
        .collect();
    Ok(DenseMatches {
        source_grid,
        target_grid,
        matches,
        back,
    })
}

fn check_channels(source: &NormalizedMap, target: &NormalizedMap, name: &str) -> Result<()> {
    if source.channels() != target.channels() {
        return Err(Error::invalid(format!(
            "{name}: feature map has {} channels, the source map {}; compare maps of the same tap",
            target.channels(),
            source.channels()
        )));
    }
    Ok(())
}

fn check_options(options: &CorrespondOptions) -> Result<()> {
    if !(options.temperature > 0.0 && options.temperature.is_finite()) {
        return Err(Error::invalid(format!(
            "soft-argmax temperature must be a positive number, got {}",
            options.temperature
        )));
    }
    Ok(())
}

/// Index and value of the first maximum; (0, -inf) for an empty slice.
pub(crate) fn argmax(values: &[f32]) -> (usize, f32) {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, &v) in values.iter().enumerate() {
        if v > best.1 {
            best = (i, v);
        }
    }
    best
}

fn chebyshev(a: (usize, usize), b: (usize, usize)) -> usize {
    a.0.abs_diff(b.0).max(a.1.abs_diff(b.1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::map::FeatureMap;

    /// A map whose cell (row, col) holds a one-hot vector at channel `row*w + col` (orthogonal cells).
    fn one_hot(h: usize, w: usize) -> FeatureMap {
        let n = h * w;
        let mut data = vec![0.0; n * n];
        for cell in 0..n {
            data[cell * n + cell] = 1.0;
        }
        FeatureMap::new(n, h, w, data).unwrap()
    }

    #[test]
    fn one_hot_maps_match_cell_for_cell() {
        let map = NormalizedMap::new(&one_hot(3, 4), "m").unwrap();
        let image = ImageSize::new(40, 30);
        let target = [Target { map: &map, image }];
        // The centre of cell (1, 2) is at x = 2.5*10 - 0.5 = 24.5, y = 1.5*10 - 0.5 = 14.5.
        let found = correspond_point(
            &map,
            image,
            ImagePoint::new(24.5, 14.5),
            &target,
            &CorrespondOptions::default(),
        )
        .unwrap();
        let m = &found[0];
        assert_eq!(m.best_cell, (1, 2));
        assert!((m.best_similarity - 1.0).abs() < 1e-6);
        assert!(m.mutual);
        // Other cells have similarity 0, so the soft-argmax is pulled by e^-20 only.
        assert!(
            (m.point.x - 24.5).abs() < 1e-3 && (m.point.y - 14.5).abs() < 1e-3,
            "{:?}",
            m.point
        );
    }

    #[test]
    fn mutual_flag_on_a_constructed_case() {
        // Source: 1x3 cells a, b, c. Target: 1x2 cells. Target cell 0 = a, target cell 1 is close to b and
        // closer still to c. Querying b finds target 1, which matches back to c: one cell away.
        let source =
            FeatureMap::new(3, 1, 3, vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.6, 0.0, 0.0, 0.8]).unwrap();
        let target = FeatureMap::new(3, 1, 2, vec![1.0, 0.0, 0.0, 0.6, 0.0, 0.8]).unwrap();
        let (source, target) = (
            NormalizedMap::new(&source, "s").unwrap(),
            NormalizedMap::new(&target, "t").unwrap(),
        );
        let image = ImageSize::new(30, 10);
        let targets = [Target {
            map: &target,
            image: ImageSize::new(20, 10),
        }];
        let b = ImagePoint::new(14.5, 4.5);
        let strict = CorrespondOptions {
            mutual_tolerance: 0,
            ..Default::default()
        };
        let m = &correspond_point(&source, image, b, &targets, &strict).unwrap()[0];
        assert_eq!(
            (m.best_cell, m.back_cell, m.mutual),
            ((0, 1), (0, 2), false)
        );
        let m = &correspond_point(&source, image, b, &targets, &CorrespondOptions::default())
            .unwrap()[0];
        assert!(m.mutual);
        // Querying a finds target 0, which matches back to a.
        let m = &correspond_point(&source, image, ImagePoint::new(4.5, 4.5), &targets, &strict)
            .unwrap()[0];
        assert_eq!((m.best_cell, m.back_cell, m.mutual), ((0, 0), (0, 0), true));
        // Dense: a <-> 0 and c <-> 1 are mutual, b -> 1 is not.
        let dense = dense_matches(&source, &target, &DenseOptions::default()).unwrap();
        assert_eq!(
            dense
                .mutual_pairs()
                .iter()
                .map(|p| (p.0, p.1))
                .collect::<Vec<_>>(),
            vec![(0, 0), (2, 1)]
        );
        assert_eq!(dense.back, vec![0, 2]);
    }

    #[test]
    fn soft_argmax_moves_towards_the_stronger_neighbour() {
        let similarity = SimilarityMap {
            grid: GridSize::new(1, 3),
            values: vec![0.2, 0.8, 0.8],
        };
        let p = refine_soft_argmax(&similarity, (0, 1), 1, 0.05);
        assert!((p.x - 1.5).abs() < 1e-3 && p.y == 0.0, "{p:?}");
        let sharp = refine_soft_argmax(&similarity, (0, 1), 1, 1e-4);
        assert!((sharp.x - 1.5).abs() < 1e-3);
    }

    #[test]
    fn errors_not_panics() {
        let a = NormalizedMap::new(&one_hot(2, 2), "a").unwrap();
        let b = NormalizedMap::new(&one_hot(1, 3), "b").unwrap();
        let image = ImageSize::new(8, 8);
        let targets = [Target { map: &b, image }];
        let err = correspond_point(
            &a,
            image,
            ImagePoint::new(1.0, 1.0),
            &targets,
            &CorrespondOptions::default(),
        );
        assert!(err.unwrap_err().to_string().contains("channels"));
        assert!(dense_matches(&a, &b, &DenseOptions::default()).is_err());
        let own = [Target { map: &a, image }];
        let outside = correspond_point(
            &a,
            image,
            ImagePoint::new(8.0, 1.0),
            &own,
            &CorrespondOptions::default(),
        );
        assert!(outside.unwrap_err().to_string().contains("outside"));
        let bad = CorrespondOptions {
            temperature: 0.0,
            ..Default::default()
        };
        assert!(correspond_point(&a, image, ImagePoint::new(1.0, 1.0), &own, &bad).is_err());
    }
}
