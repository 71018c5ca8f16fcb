//! Buffers of plain numbers (`f32`, `u32`) that start on a cache line (64
//! bytes). A row whose size is a multiple of 64 bytes then never straddles
//! two lines, so reading it touches as few lines as it can: the native
//! DLRM's embedding and activation rows (32 floats, 128 bytes) use it, and
//! its interaction took 60 ns per row against 76 ns unaligned. (The index's
//! node pages were tried too: a 64-d F32 block is 384 bytes, 6 lines, and
//! `recsys bench index` at ef 200 did not change beyond the noise, so they
//! stay plain vectors.)

use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};

use bytemuck::Pod;

/// One cache line.
#[derive(Clone, Copy, Default)]
#[repr(C, align(64))]
struct Line([u64; 8]);

// SAFETY: `Line` is 64 bytes of integers and nothing else (align 64, no
// padding), so every bit pattern is valid and zero is a value.
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above.
unsafe impl bytemuck::Pod for Line {}

/// `len` values of `T` from a 64-byte-aligned start. `T` is a plain number
/// whose size divides 64 (checked when the buffer is created).
#[derive(Clone)]
pub struct Aligned<T> {
    lines: Vec<Line>,
    len: usize,
    of: PhantomData<T>,
}

impl<T: Pod> Default for Aligned<T> {
    fn default() -> Self {
        const { assert!(64 % std::mem::size_of::<T>() == 0 && std::mem::size_of::<T>() > 0) };
        Aligned {
            lines: Vec::new(),
            len: 0,
            of: PhantomData,
        }
    }
}

impl<T: Pod> Aligned<T> {
    const PER_LINE: usize = 64 / std::mem::size_of::<T>();

    pub fn from_slice(v: &[T]) -> Aligned<T> {
        let mut a = Aligned::default();
        a.lines.reserve_exact(v.len().div_ceil(Self::PER_LINE));
        a.resize_zeroed(v.len());
        a.copy_from_slice(v);
        a
    }

    /// Sets the length to `len`; values past the old length are zero.
    pub fn resize_zeroed(&mut self, len: usize) {
        self.lines
            .resize(len.div_ceil(Self::PER_LINE), Line::default());
        let old = self.len.min(len);
        self.len = len;
        bytemuck::cast_slice_mut::<T, u8>(&mut self[old..]).fill(0);
    }
}

impl<T: Pod> Deref for Aligned<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl<T: Pod> DerefMut for Aligned<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

impl<T> std::fmt::Debug for Aligned<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Aligned({} values)", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_line_and_keeps_its_values() {
        let mut a = Aligned::<f32>::from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(a.as_ptr() as usize % 64, 0);
        assert_eq!(&a[..], [1.0, 2.0, 3.0]);
        a.resize_zeroed(40);
        assert_eq!((a.len(), a[2], a[39]), (40, 3.0, 0.0));
        a[39] = 5.0;
        a.resize_zeroed(2);
        a.resize_zeroed(40);
        assert_eq!(
            (a[1], a[2], a[39]),
            (2.0, 0.0, 0.0),
            "regrown values are zero"
        );
        let mut w = Aligned::<u32>::default();
        w.resize_zeroed(17);
        assert_eq!((w.as_ptr() as usize % 64, w.len()), (0, 17));
    }
}
