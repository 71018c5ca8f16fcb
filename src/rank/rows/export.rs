//! Moving a DLRM's embedding tables out of its file into row keys, what
//! `recsys load --ranker-rows` writes: the file without the `emb.{t}`
//! tensors, the schema with `ROWS <prefix><t>:` on every SPARSE feature,
//! and each table's rows, ready for SET.

use safetensors::SafeTensors;

use super::{encode, row_key};
use crate::rank::dlrm::{f32_tensor, write_safetensors};
use crate::rank::schema::Schema;

/// One table moved out of the file.
#[derive(Debug)]
pub struct Table {
    /// Its key prefix: row `id` is the key `<prefix><id>`.
    pub prefix: String,
    pub dim: usize,
    /// `[rows, dim]`, row-major.
    pub data: Vec<f32>,
}

impl Table {
    pub fn rows(&self) -> usize {
        self.data.len() / self.dim.max(1)
    }

    /// (key, value) of every row, in id order.
    pub fn entries(&self) -> impl Iterator<Item = (Vec<u8>, Vec<u8>)> + '_ {
        self.data
            .chunks_exact(self.dim.max(1))
            .enumerate()
            .map(|(id, row)| (row_key(&self.prefix, id as i64), encode(row)))
    }
}

/// A model with every table moved out.
#[derive(Debug)]
pub struct Exported {
    /// The safetensors file without the tables.
    pub weights: Vec<u8>,
    /// The schema with a ROWS prefix on every SPARSE feature.
    pub schema: Vec<String>,
    /// Table `t` is SPARSE feature `t`'s.
    pub tables: Vec<Table>,
}

/// The arity of each option of a SPARSE declaration (docs/ranking.md).
fn option_arity(word: &str) -> Option<usize> {
    match word.to_ascii_uppercase().as_str() {
        "VOCAB" | "DEFAULT" | "ROWS" => Some(1),
        "HASH" => Some(0),
        _ => None,
    }
}

/// Moves every embedding table of a DLRM (`weights`, declared by `schema`)
/// out of its file; table `t`'s rows become the keys `<prefix><t>:<id>`.
pub fn export_tables(weights: &[u8], schema: &[String], prefix: &str) -> Result<Exported, String> {
    let parsed = Schema::parse(schema)?;
    if parsed.sparse.iter().any(|f| f.rows.is_some()) {
        return Err("SCHEMA already keeps a table in row keys (ROWS)".into());
    }
    let prefix_of = |t: usize| format!("{prefix}{t}:");
    // The schema: `ROWS <prefix><t>:` closes SPARSE declaration `t`.
    let mut out = Vec::with_capacity(schema.len() + 2 * parsed.sparse.len());
    let mut t = 0;
    let mut i = 0;
    while i < schema.len() {
        let word = schema[i].to_ascii_uppercase();
        if word != "SPARSE" {
            out.push(schema[i].clone());
            i += 1;
            continue;
        }
        // SPARSE <source> <cardinality>, then its options.
        let mut end = (i + 3).min(schema.len());
        while let Some(n) = schema.get(end).and_then(|w| option_arity(w)) {
            end = (end + 1 + n).min(schema.len());
        }
        out.extend_from_slice(&schema[i..end]);
        out.extend(["ROWS".to_string(), prefix_of(t)]);
        t += 1;
        i = end;
    }
    // Parsing checks each prefix (`check_prefix`), as MODEL.SET will.
    let reparsed = Schema::parse(&out)?;
    let moved = (0..parsed.sparse.len()).map(|t| Some(prefix_of(t)));
    if !reparsed.sparse.iter().map(|f| f.rows.clone()).eq(moved) {
        return Err("SCHEMA: cannot place ROWS on every SPARSE feature".into());
    }
    // The file: every tensor but the tables, which become rows.
    let st = SafeTensors::deserialize(weights).map_err(|e| format!("DLRM weights: {e}"))?;
    let mut kept = Vec::new();
    let mut tables: Vec<Option<Table>> = (0..parsed.sparse.len()).map(|_| None).collect();
    for (name, _) in st.tensors() {
        let (dims, data) = f32_tensor(&st, "DLRM", &name)?;
        let table = name
            .strip_prefix("emb.")
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|&t| t < tables.len());
        match table {
            Some(t) if dims.len() == 2 => {
                tables[t] = Some(Table {
                    prefix: prefix_of(t),
                    dim: dims[1],
                    data,
                })
            }
            Some(_) => return Err(format!("DLRM tensor '{name}' is not [rows, dim]")),
            None => kept.push((name, dims, data)),
        }
    }
    let tables = tables
        .into_iter()
        .enumerate()
        .map(|(t, table)| table.ok_or_else(|| format!("DLRM weights lack tensor 'emb.{t}'")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Exported {
        weights: write_safetensors(&kept),
        schema: out,
        tables,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rank::dlrm::{Dlrm, DlrmShape};

    fn toks(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn every_table_leaves_the_file_with_its_rows() {
        let shape = DlrmShape {
            dense: 1,
            cardinalities: vec![5, 3],
            dim: 4,
            bottom: vec![8, 4],
            top: vec![8, 1],
        };
        let full = Dlrm::generate(&shape, 1);
        let schema = toks("DENSE score SPARSE user.c 5 hash DEFAULT 1 SPARSE item.g 3 VOCAB a,b,c");
        let e = export_tables(&full, &schema, "m:rows:").unwrap();
        assert_eq!(
            e.schema,
            toks("DENSE score SPARSE user.c 5 hash DEFAULT 1 ROWS m:rows:0: SPARSE item.g 3 VOCAB a,b,c ROWS m:rows:1:")
        );
        let st = SafeTensors::deserialize(&full).unwrap();
        let slim = SafeTensors::deserialize(&e.weights).unwrap();
        assert!(slim.tensor("emb.0").is_err() && slim.tensor("emb.1").is_err());
        assert_eq!(slim.len() + 2, st.len());
        for (t, table) in e.tables.iter().enumerate() {
            let (dims, data) = f32_tensor(&st, "m", &format!("emb.{t}")).unwrap();
            assert_eq!((table.rows(), table.dim), (dims[0], dims[1]));
            let entries: Vec<_> = table.entries().collect();
            assert_eq!(entries.len(), dims[0]);
            let (key, value) = &entries[2];
            assert_eq!(key, format!("m:rows:{t}:2").as_bytes());
            assert_eq!(
                super::super::decode(value).unwrap(),
                data[2 * dims[1]..3 * dims[1]]
            );
        }
    }

    #[test]
    fn refusals() {
        let shape = DlrmShape {
            dense: 1,
            cardinalities: vec![5],
            dim: 4,
            bottom: vec![8, 4],
            top: vec![8, 1],
        };
        let full = Dlrm::generate(&shape, 1);
        let rows = toks("DENSE score SPARSE user.c 5 ROWS x:");
        assert!(export_tables(&full, &rows, "m:")
            .unwrap_err()
            .contains("already"));
        let two = toks("DENSE score SPARSE user.c 5 SPARSE user.d 5");
        assert!(export_tables(&full, &two, "m:")
            .unwrap_err()
            .contains("emb.1"));
        let one = toks("DENSE score SPARSE user.c 5");
        assert!(export_tables(&full, &one, "bad prefix").is_err());
        assert!(export_tables(b"not safetensors", &one, "m:").is_err());
    }
}
