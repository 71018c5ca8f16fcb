//! How per-slot arrays grow: by an eighth of their length at a time (at
//! least 64 entries), not by doubling, so a large catalog holds at most
//! 12.5% spare capacity in each instead of up to half. The copies cost a
//! little more over a catalog's life (each entry is moved about 8 times
//! instead of twice), once, while it grows.

/// Resizes `v` to `len` (if longer than now), new entries `fill`, reserving
/// an eighth more when the capacity runs out.
pub fn resize_by_eighths<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) {
    if len <= v.len() {
        return;
    }
    if len > v.capacity() {
        let spare = (len / 8).max(64);
        v.reserve_exact(len + spare - v.len());
    }
    v.resize(len, fill);
}

/// Appends `x` to `v`, growing as [`resize_by_eighths`] does.
pub fn push_by_eighths<T: Clone>(v: &mut Vec<T>, x: T) {
    let len = v.len() + 1;
    resize_by_eighths(v, len, x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spare_capacity_stays_within_an_eighth() {
        let mut v: Vec<u32> = Vec::new();
        for i in 0..100_000u32 {
            push_by_eighths(&mut v, i);
            assert_eq!(v[i as usize], i);
            assert!(v.capacity() <= v.len() + (v.len() / 8).max(64));
        }
        resize_by_eighths(&mut v, 200_000, 7);
        assert_eq!((v.len(), v[150_000]), (200_000, 7));
        assert!(v.capacity() <= 200_000 + 25_000);
    }
}
