//! The byte codec of every persisted structure (index snapshots, catalogs,
//! popularity, models): little-endian integers, plain-old-data arrays and
//! length-prefixed blobs. Every read is bounds-checked, so a truncated or
//! corrupt payload is an error, never a panic.

/// Appends raw little-endian bytes.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes<T: bytemuck::Pod>(&mut self, v: &[T]) {
        self.0.extend_from_slice(bytemuck::cast_slice(v));
    }
    /// A length-prefixed byte string.
    pub fn blob(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Reader { data, pos: 0 }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| format!("truncated payload: need {n} bytes at offset {}", self.pos))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.fixed()?))
    }
    pub fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.fixed()?))
    }
    pub fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_le_bytes(self.fixed()?))
    }
    /// A count that must fit the bytes left, each item taking at least
    /// `min_item_bytes`: refuses absurd counts before anything is allocated.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize, String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "count overflows".to_string())?;
        if n.saturating_mul(min_item_bytes.max(1)) > self.remaining() {
            return Err(format!(
                "count {n} does not fit the {} bytes left",
                self.remaining()
            ));
        }
        Ok(n)
    }
    pub fn array<T: bytemuck::Pod>(&mut self, count: usize) -> Result<Vec<T>, String> {
        let bytes = count
            .checked_mul(std::mem::size_of::<T>())
            .ok_or("array length overflows")?;
        Ok(bytemuck::pod_collect_to_vec(self.take(bytes)?))
    }
    pub fn blob(&mut self) -> Result<&'a [u8], String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "blob length overflows".to_string())?;
        self.take(n)
    }
    /// A blob that must be UTF-8 text; `what` names it in the error.
    pub fn text(&mut self, what: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.blob()?).map_err(|_| format!("{what} is not UTF-8"))
    }
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
}

/// FNV-1a 64 of `bytes` (offset basis 0xcbf29ce484222325, prime
/// 0x100000001b3): a stable hash any language can compute, for hashed
/// feature values and the users' seen sets.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut out = Vec::new();
        let mut w = Writer(&mut out);
        w.u32(7);
        w.u64(1 << 40);
        w.f64(0.5);
        w.blob(b"abc");
        w.bytes(&[1u16, 2, 3]);
        let mut r = Reader::new(&out);
        assert_eq!(r.u32().unwrap(), 7);
        assert_eq!(r.u64().unwrap(), 1 << 40);
        assert_eq!(r.f64().unwrap(), 0.5);
        assert_eq!(r.text("name").unwrap(), "abc");
        assert_eq!(r.array::<u16>(3).unwrap(), vec![1, 2, 3]);
        assert_eq!(r.remaining(), 0);
        assert!(r.u32().is_err());
        let mut r = Reader::new(&out[..6]);
        r.u32().unwrap();
        assert!(r.u64().is_err());
        let huge = u64::MAX.to_le_bytes();
        assert!(Reader::new(&huge).count(1).is_err());
        assert!(Reader::new(&huge).blob().is_err());
    }
}
