//! The static token table: `CVSE`, format, rows, dimensions, one f32 scale
//! per row, then the rows as int8 (little-endian throughout). Read in place:
//! nothing is copied but the scales.

/// A token table borrowed from the binary.
pub struct Table {
    rows: usize,
    dims: usize,
    scales: Vec<f32>,
    data: &'static [u8],
}

impl Table {
    pub fn parse(raw: &'static [u8]) -> Result<Self, String> {
        let header = |at: usize| -> Result<usize, String> {
            raw.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .ok_or_else(|| "the token table is truncated".to_string())
        };
        if raw.get(..4) != Some(b"CVSE".as_slice()) {
            return Err("the token table does not start with CVSE".into());
        }
        if header(4)? != 1 {
            return Err(format!("token table format {} is not 1", header(4)?));
        }
        let (rows, dims) = (header(8)?, header(12)?);
        let scales_end = 16 + 4 * rows;
        if dims == 0 || raw.len() != scales_end + rows * dims {
            return Err(format!(
                "the token table holds {} bytes, not the {} of {rows} rows of {dims}",
                raw.len(),
                scales_end + rows * dims
            ));
        }
        let scales = raw[16..scales_end]
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            rows,
            dims,
            scales,
            data: &raw[scales_end..],
        })
    }

    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The mean of the rows of `ids`, normalised to unit length (zero for
    /// no known id).
    pub fn mean(&self, ids: &[u32]) -> Vec<f32> {
        let mut acc = vec![0f32; self.dims];
        for &id in ids {
            let id = id as usize;
            if id >= self.rows {
                continue;
            }
            let scale = self.scales[id];
            let row = &self.data[id * self.dims..(id + 1) * self.dims];
            for (a, &q) in acc.iter_mut().zip(row) {
                *a += f32::from(q as i8) * scale;
            }
        }
        let norm = acc.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            acc.iter_mut().for_each(|x| *x /= norm);
        }
        acc
    }
}
