//! The native DLRM: embedding tables for the sparse features, a bottom MLP
//! for the dense features, pairwise dot interaction, a top MLP, and a
//! sigmoid (rankers) or the raw top output (query towers). Weights come from
//! safetensors; the CPU forward pass runs batched matrix products (one
//! thread) on weights packed at load with AVX-512 ([`super::kernels`]), or
//! through `matrixmultiply` on CPUs without it.
//!
//! Tensor names (float32, PyTorch `nn.Linear` layout):
//!
//! ```text
//! emb.{i}            [rows_i, d]      one table per SPARSE feature, in order
//! bottom.{j}.weight  [out_j, in_j]    bottom MLP (ReLU after every layer); the
//! bottom.{j}.bias    [out_j]          first in = #DENSE, the last out = d
//! top.{j}.weight     [out_j, in_j]    top MLP (ReLU between layers); the first
//! top.{j}.bias       [out_j]          in = d + v(v-1)/2 with v = #SPARSE + 1
//! ```
//!
//! Interaction order follows the reference DLRM: the vectors are
//! `[bottom output, emb.0 .. emb.S-1]`, and the pairs `(i, j)` with `j < i`
//! in row-major order: (1,0), (2,0), (2,1), (3,0), ...
//! Without dense features there is no bottom MLP and `v = #SPARSE`.

mod forward;

pub(crate) use forward::dot;
use safetensors::{Dtype, SafeTensors};

use crate::aligned::Aligned;
use crate::rng::SplitMix;

/// A fully connected layer, row-major `weight[out][in]`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub input: usize,
    pub output: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

#[derive(Debug, Clone)]
pub struct Table {
    pub rows: usize,
    /// Row-major, from a cache-line boundary (rows of 16k floats are
    /// whole lines: see [`crate::aligned`]). Empty for an external table.
    pub data: Aligned<f32>,
    /// The rows live in Redis keys (SCHEMA ... ROWS): each batch brings
    /// the rows of its ids ([`crate::rank::rows::gather`]).
    pub external: bool,
}

impl Table {
    /// Row `id` of `d` floats, the id clamped into the table (negative ids
    /// read row 0, ids past the end the last row).
    fn row(&self, id: i64, d: usize) -> &[f32] {
        let id = (id.max(0) as usize).min(self.rows - 1);
        &self.data[id * d..(id + 1) * d]
    }
}

/// DLRM weights, checked for consistent shapes.
#[derive(Debug, Clone)]
pub struct Dlrm {
    pub dim: usize,
    pub dense_inputs: usize,
    pub tables: Vec<Table>,
    pub bottom: Vec<Linear>,
    pub top: Vec<Linear>,
    /// Sigmoid on the output (rankers); query towers return the raw output.
    pub sigmoid: bool,
    /// The layers packed for the AVX-512 kernels, when the CPU has them.
    packed: Option<Packed>,
    /// `dim` zeros: the row of an external table a batch did not bring.
    zero_row: Vec<f32>,
}

/// Which kernels the CPU forward pass uses on this machine.
pub fn cpu_kernels() -> &'static str {
    #[cfg(target_arch = "x86_64")]
    if super::kernels::available() {
        return "AVX-512 kernels, packed weights";
    }
    "matrixmultiply"
}

/// Both MLPs packed for [`super::kernels`].
#[derive(Debug, Clone)]
struct Packed {
    #[cfg(target_arch = "x86_64")]
    bottom: Vec<super::kernels::PackedLinear>,
    #[cfg(target_arch = "x86_64")]
    top: Vec<super::kernels::PackedLinear>,
}

impl Packed {
    /// The packed layers, or None where the kernels cannot run.
    fn new(bottom: &[Linear], top: &[Linear]) -> Option<Packed> {
        #[cfg(target_arch = "x86_64")]
        if super::kernels::available() {
            use super::kernels::PackedLinear;
            return Some(Packed {
                bottom: bottom.iter().map(PackedLinear::new).collect(),
                top: top.iter().map(PackedLinear::new).collect(),
            });
        }
        let _ = (bottom, top);
        None
    }
}

/// The shape of a generated DLRM (fixtures and benchmarks).
#[derive(Debug, Clone)]
pub struct DlrmShape {
    pub dense: usize,
    pub cardinalities: Vec<usize>,
    pub dim: usize,
    pub bottom: Vec<usize>,
    pub top: Vec<usize>,
}

impl DlrmShape {
    /// The issue's reference model: 8 categorical features (embedding 32),
    /// 8 dense, bottom MLP [64, 32], top MLP [128, 64, 1].
    pub fn reference(cardinality: usize) -> DlrmShape {
        DlrmShape {
            dense: 8,
            cardinalities: vec![cardinality; 8],
            dim: 32,
            bottom: vec![64, 32],
            top: vec![128, 64, 1],
        }
    }

    /// Multiply-adds one row costs: both MLPs and the pairwise dots.
    pub fn multiply_adds_per_row(&self) -> usize {
        let mlp = |input: usize, widths: &[usize]| {
            let mut i = input;
            widths.iter().fold(0, |sum, &o| {
                let cost = i * o;
                i = o;
                sum + cost
            })
        };
        let bottom = if self.dense > 0 {
            mlp(self.dense, &self.bottom)
        } else {
            0
        };
        let top_in = if self.dense > 0 { self.dim } else { 0 } + self.pairs();
        bottom + self.pairs() * self.dim + mlp(top_in, &self.top)
    }

    /// Number of interaction pairs for this shape.
    pub fn pairs(&self) -> usize {
        let v = self.cardinalities.len() + usize::from(self.dense > 0);
        v * v.saturating_sub(1) / 2
    }
}

/// The F32 tensor `name` of `model`'s weights (`model` names it in errors),
/// checked finite.
pub fn f32_tensor(
    st: &SafeTensors,
    model: &str,
    name: &str,
) -> Result<(Vec<usize>, Vec<f32>), String> {
    let t = st
        .tensor(name)
        .map_err(|_| format!("{model} weights lack tensor '{name}'"))?;
    if t.dtype() != Dtype::F32 {
        return Err(format!(
            "{model} tensor '{name}' is {:?}, expected F32",
            t.dtype()
        ));
    }
    let data = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect::<Vec<f32>>();
    if data.iter().any(|x| !x.is_finite()) {
        return Err(format!(
            "{model} tensor '{name}' holds NaN or infinite values"
        ));
    }
    Ok((t.shape().to_vec(), data))
}

fn load_mlp(st: &SafeTensors, prefix: &str) -> Result<Vec<Linear>, String> {
    let mut layers = Vec::new();
    for j in 0.. {
        let wname = format!("{prefix}.{j}.weight");
        if st.tensor(&wname).is_err() {
            break;
        }
        let (ws, weight) = f32_tensor(st, "DLRM", &wname)?;
        let (bs, bias) = f32_tensor(st, "DLRM", &format!("{prefix}.{j}.bias"))?;
        if ws.len() != 2 || bs != [ws[0]] {
            return Err(format!(
                "DLRM layer {prefix}.{j}: weight {ws:?} and bias {bs:?} do not form a layer ([out, in] and [out])"
            ));
        }
        if let Some(prev) = layers.last().map(|l: &Linear| l.output) {
            if prev != ws[1] {
                return Err(format!(
                    "DLRM layer {prefix}.{j} takes {} inputs but {prefix}.{} gives {prev}",
                    ws[1],
                    j - 1
                ));
            }
        }
        layers.push(Linear {
            input: ws[1],
            output: ws[0],
            weight,
            bias,
        });
    }
    Ok(layers)
}

impl Dlrm {
    /// Reads safetensors bytes; checks the network is consistent with itself
    /// and with `dense` dense inputs and the given sparse cardinalities, and
    /// that the output has `outputs` values. The tables marked in
    /// `external` (all others when it is shorter) are not in the file: their
    /// rows come with each batch.
    pub fn from_safetensors(
        bytes: &[u8],
        dense: usize,
        cardinalities: &[u64],
        external: &[bool],
        outputs: usize,
        sigmoid: bool,
    ) -> Result<Dlrm, String> {
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| format!("DLRM weights are not valid safetensors: {e}"))?;
        let mut tables = Vec::new();
        let mut dim = None;
        for i in 0.. {
            let name = format!("emb.{i}");
            if external.get(i).copied().unwrap_or(false) {
                if st.tensor(&name).is_ok() {
                    return Err(format!(
                        "SPARSE feature {i} keeps its table in Redis keys (ROWS) but the DLRM file has {name}: leave it out"
                    ));
                }
                tables.push(Table {
                    rows: cardinalities.get(i).map_or(1, |&c| c as usize),
                    data: Aligned::from_slice(&[]),
                    external: true,
                });
                continue;
            }
            if st.tensor(&name).is_err() {
                break;
            }
            let (shape, data) = f32_tensor(&st, "DLRM", &name)?;
            if shape.len() != 2 {
                return Err(format!(
                    "DLRM table {name} has shape {shape:?}, expected [rows, d]"
                ));
            }
            if *dim.get_or_insert(shape[1]) != shape[1] {
                return Err(format!(
                    "DLRM table {name} has width {}, the other tables {}",
                    shape[1],
                    dim.unwrap_or(0)
                ));
            }
            tables.push(Table {
                rows: shape[0],
                data: Aligned::from_slice(&data),
                external: false,
            });
        }
        if tables.len() != cardinalities.len() {
            return Err(format!(
                "the schema declares {} SPARSE features but the DLRM has {} embedding tables (emb.0 ..)",
                cardinalities.len(),
                tables.len()
            ));
        }
        for (i, (t, &c)) in tables.iter().zip(cardinalities).enumerate() {
            if !t.external && t.rows as u64 != c {
                return Err(format!(
                    "SPARSE feature {i} has cardinality {c} but embedding table emb.{i} has {} rows",
                    t.rows
                ));
            }
        }
        let bottom = load_mlp(&st, "bottom")?;
        let top = load_mlp(&st, "top")?;
        let bottom_out = bottom.last().map(|l| l.output);
        let dim = match (dim, bottom_out) {
            (Some(d), Some(b)) if d != b => {
                return Err(format!(
                    "the bottom MLP ends with {b} values but the embeddings have {d}"
                ))
            }
            (Some(d), _) => d,
            (None, Some(b)) => b,
            (None, None) => return Err("DLRM has neither embedding tables nor a bottom MLP".into()),
        };
        match bottom.first() {
            Some(l) if l.input != dense => {
                return Err(format!(
                    "the schema declares {dense} DENSE features but the bottom MLP takes {}",
                    l.input
                ))
            }
            None if dense > 0 => {
                return Err(format!(
                    "the schema declares {dense} DENSE features but the DLRM has no bottom MLP (bottom.0.weight)"
                ))
            }
            _ => {}
        }
        let v = tables.len() + usize::from(!bottom.is_empty());
        let top_in = if bottom.is_empty() { 0 } else { dim } + v * (v - 1) / 2;
        match (top.first(), top.last()) {
            (Some(first), Some(last)) => {
                if first.input != top_in {
                    return Err(format!(
                        "the top MLP takes {} inputs but the interaction gives {top_in} ({} + {} pairs)",
                        first.input,
                        if bottom.is_empty() { 0 } else { dim },
                        v * (v - 1) / 2
                    ));
                }
                if last.output != outputs {
                    return Err(format!(
                        "the top MLP ends with {} values, expected {outputs}",
                        last.output
                    ));
                }
            }
            _ => return Err("DLRM has no top MLP (top.0.weight)".into()),
        }
        let packed = Packed::new(&bottom, &top);
        Ok(Dlrm {
            dim,
            dense_inputs: dense,
            tables,
            bottom,
            top,
            sigmoid,
            packed,
            zero_row: vec![0.0; dim],
        })
    }

    /// Whether any table's rows come with the batch (SCHEMA ... ROWS).
    pub fn has_external_tables(&self) -> bool {
        self.tables.iter().any(|t| t.external)
    }

    /// Row `id` of table `t` for batch row `row`: from the table, or from
    /// the batch's `external` rows (zeros where it brought none).
    fn table_row<'a>(
        &'a self,
        t: usize,
        id: i64,
        row: usize,
        external: &'a [Vec<f32>],
    ) -> &'a [f32] {
        let (table, d) = (&self.tables[t], self.dim);
        if table.external {
            external
                .get(t)
                .and_then(|rows| rows.get(row * d..(row + 1) * d))
                .unwrap_or(&self.zero_row)
        } else {
            table.row(id, d)
        }
    }

    pub fn outputs(&self) -> usize {
        self.top.last().map_or(0, |l| l.output)
    }

    /// Width of the top MLP's input.
    pub fn interaction_width(&self) -> usize {
        self.top.first().map_or(0, |l| l.input)
    }

    /// Random weights of the given shape (Xavier-uniform layers, small
    /// embeddings), as safetensors bytes. Deterministic for a seed.
    pub fn generate(shape: &DlrmShape, seed: u64) -> Vec<u8> {
        let mut rng = SplitMix::new(seed);
        let mut uniform = |n: usize, a: f64| -> Vec<f32> {
            (0..n)
                .map(|_| ((rng.uniform() * 2.0 - 1.0) * a) as f32)
                .collect()
        };
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        for (i, &c) in shape.cardinalities.iter().enumerate() {
            tensors.push((
                format!("emb.{i}"),
                vec![c, shape.dim],
                uniform(c * shape.dim, 0.5),
            ));
        }
        let mut mlp = |prefix: &str, input: usize, widths: &[usize], tensors: &mut Vec<_>| {
            let mut i = input;
            for (j, &o) in widths.iter().enumerate() {
                let a = (6.0 / (i + o) as f64).sqrt();
                tensors.push((
                    format!("{prefix}.{j}.weight"),
                    vec![o, i],
                    uniform(o * i, a),
                ));
                tensors.push((format!("{prefix}.{j}.bias"), vec![o], uniform(o, 0.1)));
                i = o;
            }
        };
        if shape.dense > 0 {
            mlp("bottom", shape.dense, &shape.bottom, &mut tensors);
        }
        let top_in = if shape.dense > 0 { shape.dim } else { 0 } + shape.pairs();
        mlp("top", top_in, &shape.top, &mut tensors);
        write_safetensors(&tensors)
    }
}

/// Serializes named float32 tensors.
pub fn write_safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            (
                n.clone(),
                s.clone(),
                d.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(n, s, d)| {
        (
            n.clone(),
            safetensors::tensor::TensorView::new(Dtype::F32, s.clone(), d)
                .expect("shape matches data"),
        )
    });
    safetensors::serialize(views, None).expect("in-memory serialization")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The forward pass written out naively, one row at a time.
    fn reference_forward(m: &Dlrm, dense: &[f32], sparse: &[i64]) -> f32 {
        let mlp = |layers: &[Linear], x: Vec<f32>, last_relu: bool| -> Vec<f32> {
            let mut x = x;
            for (i, l) in layers.iter().enumerate() {
                let mut y = l.bias.clone();
                for (o, yo) in y.iter_mut().enumerate() {
                    let row = &l.weight[o * l.input..(o + 1) * l.input];
                    *yo += row.iter().zip(&x).map(|(w, v)| w * v).sum::<f32>();
                }
                if i + 1 < layers.len() || last_relu {
                    y.iter_mut().for_each(|v| *v = v.max(0.0));
                }
                x = y;
            }
            x
        };
        let b = mlp(&m.bottom, dense.to_vec(), true);
        let mut vs = vec![b.clone()];
        for (t, &id) in m.tables.iter().zip(sparse) {
            vs.push(t.data[id as usize * m.dim..(id as usize + 1) * m.dim].to_vec());
        }
        let mut z = b;
        for i in 1..vs.len() {
            for j in 0..i {
                z.push(vs[i].iter().zip(&vs[j]).map(|(a, b)| a * b).sum());
            }
        }
        let o = mlp(&m.top, z, false)[0];
        1.0 / (1.0 + (-o).exp())
    }

    #[test]
    fn batched_forward_matches_the_naive_one() {
        let shape = DlrmShape::reference(50);
        let bytes = Dlrm::generate(&shape, 3);
        let m = Dlrm::from_safetensors(&bytes, 8, &[50; 8], &[], 1, true).unwrap();
        assert_eq!(m.interaction_width(), 32 + 36);
        assert_eq!(
            shape.multiply_adds_per_row(),
            8 * 64 + 64 * 32 + 36 * 32 + 68 * 128 + 128 * 64 + 64
        );
        let mut rng = SplitMix::new(9);
        let rows = 2500; // crosses a chunk boundary
        let dense: Vec<f32> = (0..rows * 8).map(|_| rng.normal() as f32).collect();
        let sparse: Vec<i64> = (0..rows * 8).map(|_| rng.below(50) as i64).collect();
        let out = m.forward(rows, &dense, &sparse);
        // The AVX-512 kernels (where this CPU has them) and the portable
        // path agree.
        let portable = m.forward_portable(rows, &dense, &sparse);
        for (r, (a, b)) in out.iter().zip(&portable).enumerate() {
            assert!((a - b).abs() < 1e-5, "row {r}: {a} vs portable {b}");
        }
        let mut spread = (f32::MAX, f32::MIN);
        for r in (0..rows).step_by(97) {
            let want = reference_forward(&m, &dense[r * 8..r * 8 + 8], &sparse[r * 8..r * 8 + 8]);
            assert!(
                (out[r] - want).abs() < 1e-5,
                "row {r}: {} vs {want}",
                out[r]
            );
            spread = (spread.0.min(want), spread.1.max(want));
        }
        assert!(
            spread.1 - spread.0 > 0.1,
            "scores are not saturated: {spread:?}"
        );
    }

    #[test]
    fn mismatches_are_named() {
        let bytes = Dlrm::generate(&DlrmShape::reference(50), 3);
        let err = |d, c: &[u64], o| Dlrm::from_safetensors(&bytes, d, c, &[], o, true).unwrap_err();
        assert!(err(8, &[50; 7], 1).contains("7 SPARSE features but the DLRM has 8"));
        assert!(err(8, &[60; 8], 1).contains("cardinality 60 but embedding table emb.0 has 50"));
        assert!(err(5, &[50; 8], 1).contains("5 DENSE features but the bottom MLP takes 8"));
        assert!(err(8, &[50; 8], 16).contains("ends with 1 values, expected 16"));
        assert!(
            Dlrm::from_safetensors(b"garbage", 8, &[50; 8], &[], 1, true)
                .unwrap_err()
                .contains("not valid safetensors")
        );
    }
}
