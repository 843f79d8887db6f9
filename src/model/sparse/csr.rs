//! Where a pruned weight matrix keeps its weights: the surviving positions of a `[rows, cols]`
//! mask, by row (for products with the weights) and by column (for products with their
//! transpose), each entry naming its position in the row-major matrix.

/// The surviving entries of one `[rows, cols]` weight matrix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparseWeights {
    rows: usize,
    cols: usize,
    /// Row r's entries are `row_start[r]..row_start[r + 1]` of `row_cols` / `row_pos`.
    row_start: Vec<u32>,
    /// Column of each entry, by row, columns ascending within a row.
    row_cols: Vec<u32>,
    /// Row-major position (`r * cols + c`) of each entry, by row.
    row_pos: Vec<u32>,
    /// Column c's entries are `col_start[c]..col_start[c + 1]` of `col_rows` / `col_pos`.
    col_start: Vec<u32>,
    /// Row of each entry, by column, rows ascending within a column.
    col_rows: Vec<u32>,
    /// Row-major position of each entry, by column.
    col_pos: Vec<u32>,
}

impl SparseWeights {
    /// The entries of `mask` (`rows * cols` values, row-major) that are not zero.
    pub fn from_mask(mask: &[f32], rows: usize, cols: usize) -> Self {
        assert_eq!(mask.len(), rows * cols, "mask of a [{rows}, {cols}] matrix");
        assert!(
            mask.len() <= u32::MAX as usize,
            "matrix too large for u32 positions"
        );
        let mut row_start = Vec::with_capacity(rows + 1);
        let (mut row_cols, mut row_pos) = (Vec::new(), Vec::new());
        let mut col_count = vec![0u32; cols];
        row_start.push(0);
        for r in 0..rows {
            for c in 0..cols {
                if mask[r * cols + c] != 0.0 {
                    row_cols.push(c as u32);
                    row_pos.push((r * cols + c) as u32);
                    col_count[c] += 1;
                }
            }
            row_start.push(row_cols.len() as u32);
        }
        let mut col_start = Vec::with_capacity(cols + 1);
        col_start.push(0u32);
        for c in 0..cols {
            col_start.push(col_start[c] + col_count[c]);
        }
        let nnz = row_cols.len();
        let (mut col_rows, mut col_pos) = (vec![0u32; nnz], vec![0u32; nnz]);
        let mut next: Vec<u32> = col_start[..cols].to_vec();
        for r in 0..rows {
            for k in row_start[r] as usize..row_start[r + 1] as usize {
                let c = row_cols[k] as usize;
                let slot = next[c] as usize;
                col_rows[slot] = r as u32;
                col_pos[slot] = row_pos[k];
                next[c] += 1;
            }
        }
        Self {
            rows,
            cols,
            row_start,
            row_cols,
            row_pos,
            col_start,
            col_rows,
            col_pos,
        }
    }

    /// Rows (outputs) of the matrix.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns (inputs) of the matrix.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Surviving entries.
    pub fn nnz(&self) -> usize {
        self.row_cols.len()
    }

    /// Row `r`'s entries: their columns and row-major positions.
    pub fn row(&self, r: usize) -> (&[u32], &[u32]) {
        let range = self.row_start[r] as usize..self.row_start[r + 1] as usize;
        (&self.row_cols[range.clone()], &self.row_pos[range])
    }

    /// Column `c`'s entries: their rows and row-major positions.
    pub fn col(&self, c: usize) -> (&[u32], &[u32]) {
        let range = self.col_start[c] as usize..self.col_start[c + 1] as usize;
        (&self.col_rows[range.clone()], &self.col_pos[range])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_and_columns_list_the_same_entries_in_order() {
        // [[1, 0, 1],
        //  [0, 1, 1]]
        let w = SparseWeights::from_mask(&[1.0, 0.0, 1.0, 0.0, 1.0, 1.0], 2, 3);
        assert_eq!(w.nnz(), 4);
        assert_eq!(w.row(0), (&[0u32, 2][..], &[0u32, 2][..]));
        assert_eq!(w.row(1), (&[1u32, 2][..], &[4u32, 5][..]));
        assert_eq!(w.col(0), (&[0u32][..], &[0u32][..]));
        assert_eq!(w.col(1), (&[1u32][..], &[4u32][..]));
        assert_eq!(w.col(2), (&[0u32, 1][..], &[2u32, 5][..]));
    }

    #[test]
    fn an_empty_row_or_mask_has_no_entries() {
        let w = SparseWeights::from_mask(&[0.0; 6], 2, 3);
        assert_eq!(w.nnz(), 0);
        assert!(w.row(1).0.is_empty() && w.col(2).0.is_empty());
    }
}
