//! Stage 1, the user vector: the request's VECTOR, else the user's `emb`,
//! else the catalog's QUERY model over the user's hash fields, else the mean
//! of the vectors of the user's recent items (the session), else none: cold
//! start from popular items.

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::pipeline::request::UserInput;

/// Where the user vector came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VectorSource {
    Argument,
    Embedding,
    /// The catalog's QUERY model over the user's features.
    QueryModel,
    /// Mean of this many recent items' vectors.
    Session(usize),
    /// No vector: cold start from popular items.
    Popular,
}

impl VectorSource {
    pub fn describe(&self) -> String {
        match self {
            VectorSource::Argument => "VECTOR argument".into(),
            VectorSource::Embedding => "user hash field emb".into(),
            VectorSource::QueryModel => "query model".into(),
            VectorSource::Session(n) => format!("mean of {n} recent items"),
            VectorSource::Popular => "cold start: popular items".into(),
        }
    }
}

/// The query vector, prepared for the catalog's index (normalized for
/// COSINE), and where it came from; `None` means cold start.
pub fn user_vector(
    catalog: &Catalog,
    user: &UserInput,
) -> Result<(Option<Vec<f32>>, VectorSource)> {
    let prepared = |v: &[f32], what: &str| -> Result<Option<Vec<f32>>> {
        catalog.check_vector(v).map_err(|e| e.context(what))?;
        Ok(Some(catalog.index().prepare(v)))
    };
    if let Some(v) = &user.vector_arg {
        return Ok((prepared(v, "VECTOR")?, VectorSource::Argument));
    }
    if let Some(v) = &user.embedding {
        return Ok((prepared(v, "user field emb")?, VectorSource::Embedding));
    }
    // The query model needs something to go on: a user with none of its
    // fields falls through to the session mean or cold start.
    let query_model = catalog.models().query_model().filter(|m| {
        m.user_fields()
            .iter()
            .any(|f| user.features.contains_key(f))
    });
    if let Some(model) = query_model {
        let v = model.query(&user.features).map_err(Error::invalid)?;
        let what = format!("query model '{}'", model.spec.name);
        return Ok((prepared(&v, &what)?, VectorSource::QueryModel));
    }
    let mut sum = vec![0f32; catalog.params().dim];
    let mut n = 0;
    for slot in user.recent.iter().filter_map(|id| catalog.slot_of(id)) {
        for (s, x) in sum.iter_mut().zip(catalog.index().vector(slot)) {
            *s += x;
        }
        n += 1;
    }
    if n > 0 && sum.iter().any(|&x| x != 0.0) {
        sum.iter_mut().for_each(|x| *x /= n as f32);
        return Ok((
            Some(catalog.index().prepare(&sum)),
            VectorSource::Session(n),
        ));
    }
    Ok((None, VectorSource::Popular))
}
