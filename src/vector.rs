//! Decoding and checking query/item vectors given as FP32 blobs or as text.

/// Decodes a little-endian FP32 blob of exactly `dim` components.
pub fn from_fp32_blob(blob: &[u8], dim: usize) -> Result<Vec<f32>, String> {
    if blob.len() != dim * 4 {
        return Err(format!(
            "FP32 blob must be {} bytes (4 x DIM {dim}), got {}",
            dim * 4,
            blob.len()
        ));
    }
    let v: Vec<f32> = blob
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    check_finite(&v)?;
    Ok(v)
}

/// Encodes a vector as a little-endian FP32 blob.
pub fn to_fp32_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Parses one vector component written as text.
pub fn parse_component(s: &str) -> Result<f32, String> {
    let x: f32 = s
        .trim()
        .parse()
        .map_err(|_| format!("vector component '{s}' is not a number"))?;
    if !x.is_finite() {
        return Err(format!(
            "vector component '{s}' is not finite (NaN/Inf are rejected)"
        ));
    }
    Ok(x)
}

/// Rejects NaN and infinite components.
pub fn check_finite(v: &[f32]) -> Result<(), String> {
    match v.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(format!(
            "vector component {i} is not finite (NaN/Inf are rejected)"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_round_trip_and_errors() {
        let v = vec![1.0f32, -2.5, 3.25];
        assert_eq!(from_fp32_blob(&to_fp32_blob(&v), 3).unwrap(), v);
        assert!(from_fp32_blob(&to_fp32_blob(&v), 4)
            .unwrap_err()
            .contains("16 bytes"));
        assert!(from_fp32_blob(&to_fp32_blob(&[f32::NAN, 0.0, 0.0]), 3)
            .unwrap_err()
            .contains("not finite"));
        assert!(parse_component("inf").is_err());
        assert!(parse_component("abc").is_err());
        assert_eq!(parse_component(" 0.5").unwrap(), 0.5);
    }
}
