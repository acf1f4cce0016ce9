//! Optimal assignment (the Hungarian method, in its shortest-augmenting-path form with row and column
//! potentials, O(rows^2 * cols)). Used to match clusters across separately clustered images.

use crate::error::{Error, Result};

/// An optimal assignment: for each row its column (None when there are more rows than columns and this row
/// is left out), and the total of the chosen entries.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    pub row_to_col: Vec<Option<usize>>,
    pub total: f64,
}

/// Assignment of rows to distinct columns minimising the total cost. `cost` is row-major `rows*cols`;
/// every row is assigned when rows <= cols, every column when cols < rows.
pub fn min_cost_assignment(cost: &[f64], rows: usize, cols: usize) -> Result<Assignment> {
    if cost.len() != rows * cols {
        return Err(Error::invalid(format!(
            "assignment: a {rows}x{cols} cost matrix needs {} entries, got {}",
            rows * cols,
            cost.len()
        )));
    }
    if let Some(i) = cost.iter().position(|c| !c.is_finite()) {
        return Err(Error::invalid(format!(
            "assignment: cost at row {}, column {} is not finite",
            i / cols.max(1),
            i % cols.max(1)
        )));
    }
    if rows == 0 || cols == 0 {
        return Ok(Assignment {
            row_to_col: vec![None; rows],
            total: 0.0,
        });
    }
    let row_to_col = if rows <= cols {
        solve(cost, rows, cols)
    } else {
        // Solve the transpose (columns as rows) and invert.
        let transposed: Vec<f64> = (0..cols)
            .flat_map(|c| (0..rows).map(move |r| cost[r * cols + c]))
            .collect();
        let col_to_row = solve(&transposed, cols, rows);
        let mut row_to_col = vec![None; rows];
        for (c, r) in col_to_row.into_iter().enumerate() {
            if let Some(r) = r {
                row_to_col[r] = Some(c);
            }
        }
        row_to_col
    };
    let total = row_to_col
        .iter()
        .enumerate()
        .filter_map(|(r, c)| c.map(|c| cost[r * cols + c]))
        .sum();
    Ok(Assignment { row_to_col, total })
}

/// Assignment maximising the total weight (e.g. similarity).
pub fn max_weight_assignment(weight: &[f64], rows: usize, cols: usize) -> Result<Assignment> {
    let negated: Vec<f64> = weight.iter().map(|w| -w).collect();
    let assignment = min_cost_assignment(&negated, rows, cols)?;
    Ok(Assignment {
        total: -assignment.total,
        ..assignment
    })
}

/// rows <= cols. Rows are added one by one; each addition grows a tree of tight edges (reduced cost 0 under
/// the potentials) by Dijkstra-like steps until it reaches a free column, then flips the path.
fn solve(cost: &[f64], rows: usize, cols: usize) -> Vec<Option<usize>> {
    // Index 0 of the column arrays is a virtual column holding the row being added; real columns are 1..=cols.
    let mut row_potential = vec![0f64; rows + 1];
    let mut col_potential = vec![0f64; cols + 1];
    let mut owner = vec![0usize; cols + 1]; // owner[j] = 1-based row assigned to column j, 0 = free
    let mut previous = vec![0usize; cols + 1];
    for row in 1..=rows {
        owner[0] = row;
        let mut current = 0usize;
        let mut distance = vec![f64::INFINITY; cols + 1];
        let mut visited = vec![false; cols + 1];
        loop {
            visited[current] = true;
            let r = owner[current];
            let mut step = f64::INFINITY;
            let mut next = 0usize;
            for j in 1..=cols {
                if visited[j] {
                    continue;
                }
                let reduced = cost[(r - 1) * cols + (j - 1)] - row_potential[r] - col_potential[j];
                if reduced < distance[j] {
                    distance[j] = reduced;
                    previous[j] = current;
                }
                if distance[j] < step {
                    step = distance[j];
                    next = j;
                }
            }
            for j in 0..=cols {
                if visited[j] {
                    row_potential[owner[j]] += step;
                    col_potential[j] -= step;
                } else {
                    distance[j] -= step;
                }
            }
            current = next;
            if owner[current] == 0 {
                break;
            }
        }
        // Flip the augmenting path back to the virtual column.
        while current != 0 {
            let before = previous[current];
            owner[current] = owner[before];
            current = before;
        }
    }
    let mut row_to_col = vec![None; rows];
    for j in 1..=cols {
        if owner[j] > 0 {
            row_to_col[owner[j] - 1] = Some(j - 1);
        }
    }
    row_to_col
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every permutation, for checking small cases by brute force.
    fn brute_force_min(cost: &[f64], n: usize) -> f64 {
        fn go(cost: &[f64], n: usize, row: usize, used: &mut Vec<bool>) -> f64 {
            if row == n {
                return 0.0;
            }
            let mut best = f64::INFINITY;
            for c in 0..n {
                if !used[c] {
                    used[c] = true;
                    best = best.min(cost[row * n + c] + go(cost, n, row + 1, used));
                    used[c] = false;
                }
            }
            best
        }
        go(cost, n, 0, &mut vec![false; n])
    }

    #[test]
    fn hand_checked_3x3() {
        // The classic example: the optimum picks 1 + 2 + 2 = 5 (rows 0,1,2 -> columns 1,0,2).
        let cost = [4.0, 1.0, 3.0, 2.0, 0.0, 5.0, 3.0, 2.0, 2.0];
        let a = min_cost_assignment(&cost, 3, 3).unwrap();
        assert_eq!(a.row_to_col, vec![Some(1), Some(0), Some(2)]);
        assert_eq!(a.total, 5.0);
    }

    #[test]
    fn maximising_similarity() {
        // Cluster similarities where greedy (row 0 takes its best, 0.9) loses: optimum is 0.8 + 0.85.
        let similarity = [0.9, 0.8, 0.85, 0.1];
        let a = max_weight_assignment(&similarity, 2, 2).unwrap();
        assert_eq!(a.row_to_col, vec![Some(1), Some(0)]);
        assert!((a.total - 1.65).abs() < 1e-12);
    }

    #[test]
    fn rectangular_both_ways() {
        // 2 rows, 3 columns: row 0 -> 2 (1), row 1 -> 0 (2).
        let cost = [5.0, 6.0, 1.0, 2.0, 7.0, 3.0];
        let a = min_cost_assignment(&cost, 2, 3).unwrap();
        assert_eq!(a.row_to_col, vec![Some(2), Some(0)]);
        assert_eq!(a.total, 3.0);
        // Its transpose: 3 rows, 2 columns; row 1 is left out.
        let t = [5.0, 2.0, 6.0, 7.0, 1.0, 3.0];
        let b = min_cost_assignment(&t, 3, 2).unwrap();
        assert_eq!(b.row_to_col, vec![Some(1), None, Some(0)]);
        assert_eq!(b.total, 3.0);
    }

    #[test]
    fn agrees_with_brute_force() {
        let mut rng = crate::analysis::rng::SplitMix64::new(11);
        for n in 1..=6 {
            for _ in 0..20 {
                let cost: Vec<f64> = (0..n * n)
                    .map(|_| (rng.next_f64() * 10.0).round())
                    .collect();
                let a = min_cost_assignment(&cost, n, n).unwrap();
                assert!(
                    (a.total - brute_force_min(&cost, n)).abs() < 1e-9,
                    "{cost:?}"
                );
                let mut cols: Vec<usize> = a.row_to_col.iter().map(|c| c.unwrap()).collect();
                cols.sort();
                assert_eq!(cols, (0..n).collect::<Vec<_>>());
            }
        }
    }

    #[test]
    fn errors() {
        assert!(min_cost_assignment(&[1.0, f64::NAN], 1, 2).is_err());
        assert!(min_cost_assignment(&[1.0, 2.0, 3.0], 2, 2).is_err());
        assert_eq!(
            min_cost_assignment(&[], 0, 3).unwrap().row_to_col,
            Vec::<Option<usize>>::new()
        );
    }
}
